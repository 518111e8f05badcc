//! Signal names and numbers, as Docker reads them (STOPSIGNAL).

/// A signal Docker would refuse, with current Docker's message (Docker
/// 20.10 said `Invalid signal: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signal: {0}")]
pub struct SignalError(pub String);

/// moby/sys/signal's `SignalMap` for Linux, without the `SIG` prefix.
const NAMES: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
];

/// moby/sys/signal's `ParseSignal` (Linux): any non-zero integer Go's
/// `strconv.Atoi` reads, or a name of `SignalMap` (with or without `SIG`,
/// any case; `RTMIN+1`…`RTMIN+15`, `RTMAX-14`…`RTMAX-1`).
pub(crate) fn parse_signal(raw: &str) -> Result<(), SignalError> {
    let bad = || SignalError(raw.to_string());
    if let Ok(n) = crate::go::parse_int(raw, 64) {
        return if n == 0 { Err(bad()) } else { Ok(()) };
    }
    let upper = raw.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let offset = |base: &str, sign: char| {
        name.strip_prefix(base)
            .and_then(|r| r.strip_prefix(sign))
            .and_then(|n| n.strip_prefix(|c: char| c != '0').map(|_| n))
            .is_some_and(|n| n.parse::<u8>().is_ok_and(|n| (1..=15).contains(&n)))
    };
    let rt_max_minus = name.strip_prefix("RTMAX-").is_some_and(|n| {
        !n.starts_with('0') && n.parse::<u8>().is_ok_and(|n| (1..=14).contains(&n))
    });
    if NAMES.contains(&name) || offset("RTMIN", '+') || rt_max_minus {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_as_moby_reads_them() {
        for ok in [
            "9",
            "+9",
            "-1",
            "300",
            "TERM",
            "sigkill",
            "SIGRTMIN+3",
            "RTMAX-14",
            "rtmax",
        ] {
            assert!(parse_signal(ok).is_ok(), "{ok}");
        }
        for bad in [
            "0",
            "NOPE",
            "SIGRTMIN+16",
            "RTMAX-15",
            "RTMIN-1",
            "RTMIN+01",
            "UNUSED",
            "",
        ] {
            assert_eq!(
                parse_signal(bad).unwrap_err().to_string(),
                format!("invalid signal: {bad}")
            );
        }
    }
}
