//! Times as Docker writes and reads them: Go's `RFC3339Nano`, the zero
//! time, and the `since`/`until` values of `docker events`.

use chrono::{DateTime, Utc};

/// Go's zero `time.Time` as Docker formats it.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A timestamp Docker would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp: {0}")]
pub struct TimestampError(pub String);

/// Go's `time.RFC3339Nano` in UTC: the fraction without trailing zeros.
pub fn rfc3339_nano(secs: i64, nanos: i32) -> String {
    let Some(t) = DateTime::<Utc>::from_timestamp(secs, u32::try_from(nanos).unwrap_or(0)) else {
        return ZERO_TIME.into();
    };
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let frac = format!("{:09}", t.timestamp_subsec_nanos());
    let frac = frac.trim_end_matches('0');
    if !frac.is_empty() {
        s.push('.');
        s.push_str(frac);
    }
    s.push('Z');
    s
}

/// Unix seconds of an RFC 3339 time (an image config's `created`); 0 when
/// absent or unreadable, as Docker shows such images.
pub fn unix_seconds(rfc3339: Option<&str>) -> i64 {
    rfc3339
        .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

/// Docker's `since`/`until`: unix seconds (fractions allowed) or RFC 3339,
/// in nanoseconds; empty is none.
pub fn parse_timestamp(s: &str) -> Result<Option<i64>, TimestampError> {
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Ok(Some((secs * 1e9) as i64));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_nanos_opt())
        .map_err(|_| TimestampError(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_go_rfc3339_nano() {
        assert_eq!(rfc3339_nano(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(1_700_000_000, 120_000_000),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(
            rfc3339_nano(1_700_000_000, 123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
    }

    #[test]
    fn timestamps_as_docker() {
        assert_eq!(
            parse_timestamp("1700000000").unwrap(),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_timestamp("1700000000.5").unwrap(),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(parse_timestamp("").unwrap(), None);
        assert!(parse_timestamp("yesterday").is_err());
    }
}
