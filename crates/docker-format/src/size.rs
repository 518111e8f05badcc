//! Sizes as Docker prints them.

/// Docker's `units.HumanSize`: decimal units, four significant digits.
pub fn human_size(n: i64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n.max(0) as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    // Digits before the point (v < 1000 here, short of exabytes).
    let int_digits = if v < 1.0 {
        1
    } else {
        v.log10().floor() as usize + 1
    };
    let prec = 4usize.saturating_sub(int_digits);
    let mut s = format!("{v:.prec$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1024), "1.024kB");
        assert_eq!(human_size(3_400_000), "3.4MB");
        assert_eq!(human_size(12_345_678), "12.35MB");
    }
}
