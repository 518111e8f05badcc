//! Times as Docker writes and reads them: Go's `RFC3339Nano`, the zero
//! time, and the `since`/`until` values of `docker events`.

use chrono::{DateTime, Utc};

use crate::duration::parse_duration;

/// Go's zero `time.Time` as Docker formats it.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A timestamp Docker would refuse; the message is Docker's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
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

/// Docker's `seconds[.nanoseconds]` (moby's `timestamp.parseTimestamp`):
/// nanoseconds right-padded to 9 digits or cut to 9, at most 20 digits.
fn unix_nanos(value: &str) -> Result<i64, String> {
    let (s, n) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = s.parse().map_err(|e: std::num::ParseIntError| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        format!("invalid seconds {s:?}: {why}")
    })?;
    if n.len() > 20 {
        return Err(format!(
            "invalid nanoseconds: length {} exceeds maximum 20",
            n.len()
        ));
    }
    if let Some((i, c)) = n.bytes().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
        return Err(format!(
            "invalid nanoseconds: invalid character '{}' at position {i}",
            c as char
        ));
    }
    let mut digits: String = n.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: i64 = digits.parse().unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// `since`/`until` of `GET /events` as Docker reads them (moby's
/// `timestamp.ParseUnixTimestamp`: the CLI sends unix seconds, with an
/// optional fraction), in nanoseconds; empty is none. The error reads
/// `invalid timestamp "x": invalid seconds "x": invalid syntax`.
pub fn parse_unix_timestamp(value: &str) -> Result<Option<i64>, TimestampError> {
    if value.is_empty() {
        return Ok(None);
    }
    unix_nanos(value)
        .map(Some)
        .map_err(|e| TimestampError(format!("invalid timestamp {value:?}: {e}")))
}

/// Docker's time-or-duration filter values (moby's `timestamp.Parse`, as
/// the image list's `until` reads them): a Go duration before `now`, an
/// RFC 3339 time or date (with or without zone; a time without one is
/// taken as UTC, the daemon's zone here), or unix seconds. In nanoseconds.
pub fn parse_time_or_duration(value: &str, now_nanos: i64) -> Result<i64, TimestampError> {
    if value.trim().is_empty() {
        return Err(TimestampError(
            "failed to parse value as time or duration: value is empty".into(),
        ));
    }
    if value != "0" {
        if let Ok(d) = parse_duration(value) {
            return Ok(now_nanos - d);
        }
    }
    let zoned = value.contains(['z', 'Z', '+']) || value.matches('-').count() == 3;
    let candidates: Vec<String> = if zoned {
        vec![value.to_string(), value.replace('z', "Z")]
    } else if value.contains('T') {
        // No zone: UTC.
        let colons = value.matches(':').count();
        let pad = match colons {
            0 => ":00:00",
            1 => ":00",
            _ => "",
        };
        vec![format!("{value}{pad}Z")]
    } else {
        vec![format!("{value}T00:00:00Z")]
    };
    for c in &candidates {
        if let Ok(t) = DateTime::parse_from_rfc3339(c) {
            return Ok(t.timestamp_nanos_opt().unwrap_or(0));
        }
        // A date with a zone (`2006-01-02Z07:00`).
        if let Some((date, zone)) = c.split_at_checked(10) {
            if !date.contains('T') && !zone.is_empty() {
                if let Ok(t) = DateTime::parse_from_rfc3339(&format!("{date}T00:00:00{zone}")) {
                    return Ok(t.timestamp_nanos_opt().unwrap_or(0));
                }
            }
        }
        // `2006-01-02T15Z07:00`, `2006-01-02T15:04Z07:00`.
        if let Some(t) = hour_minute_zoned(c) {
            return Ok(t);
        }
    }
    if value.contains('-') {
        return Err(TimestampError(format!(
            "parsing time {value:?}: cannot parse as a time"
        )));
    }
    unix_nanos(value)
        .map_err(|e| TimestampError(format!("failed to parse value as time or duration: {e}")))
}

/// `2006-01-02T15[:04]` followed by a zone, padded to RFC 3339.
fn hour_minute_zoned(v: &str) -> Option<i64> {
    let (date, time) = v.split_once('T')?;
    let zone_at = time.find(['Z', '+', '-'])?;
    let (hm, zone) = time.split_at(zone_at);
    let hm = match hm.matches(':').count() {
        0 => format!("{hm}:00:00"),
        1 => format!("{hm}:00"),
        _ => return None,
    };
    DateTime::parse_from_rfc3339(&format!("{date}T{hm}{zone}"))
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
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
    fn unix_timestamps_as_docker_reads_them() {
        assert_eq!(
            parse_unix_timestamp("1700000000").unwrap(),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_unix_timestamp("1700000000.5").unwrap(),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_unix_timestamp("1.1234567891").unwrap(),
            Some(1_123_456_789)
        );
        assert_eq!(parse_unix_timestamp("").unwrap(), None);
        assert_eq!(
            parse_unix_timestamp("yesterday").unwrap_err().to_string(),
            "invalid timestamp \"yesterday\": invalid seconds \"yesterday\": invalid syntax"
        );
        assert_eq!(
            parse_unix_timestamp("2023-11-14T22:13:20Z")
                .unwrap_err()
                .to_string(),
            "invalid timestamp \"2023-11-14T22:13:20Z\": invalid seconds \"2023-11-14T22:13:20Z\": invalid syntax"
        );
        assert_eq!(
            parse_unix_timestamp("1.x").unwrap_err().to_string(),
            "invalid timestamp \"1.x\": invalid nanoseconds: invalid character 'x' at position 0"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("-1.5h"), Ok(-5_400_000_000_000));
        assert_eq!(parse_duration("300ms"), Ok(300_000_000));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn times_or_durations_as_the_until_filter_reads_them() {
        let now = 1_700_000_000_000_000_000;
        let at = |s: &str| parse_time_or_duration(s, now).unwrap();
        assert_eq!(at("1h"), now - 3_600_000_000_000);
        assert_eq!(at("1700000000"), now);
        assert_eq!(at("2023-11-14T22:13:20Z"), now);
        assert_eq!(at("2023-11-14T22:13:20"), now);
        assert_eq!(at("2023-11-14T22:13:20.5Z"), now + 500_000_000);
        assert_eq!(at("2023-11-14T23:13:20+01:00"), now);
        assert_eq!(at("2023-11-14"), 1_699_920_000_000_000_000);
        assert_eq!(at("2023-11-14T22"), 1_699_999_200_000_000_000);
        assert_eq!(at("2023-11-14T22:13Z"), 1_699_999_980_000_000_000);
        assert_eq!(
            parse_time_or_duration("soon", now).unwrap_err().to_string(),
            "failed to parse value as time or duration: invalid seconds \"soon\": invalid syntax"
        );
        assert!(parse_time_or_duration("", now).is_err());
    }
}
