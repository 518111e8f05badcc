//! Signal names and numbers, as Docker reads them (STOPSIGNAL).

/// A signal Docker would refuse, with Docker's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid signal: {0}")]
pub struct SignalError(pub String);

/// moby/sys/signal `ParseSignal` (Linux): a number 1–255 or a name, with
/// or without `SIG`.
pub fn parse_signal(raw: &str) -> Result<(), SignalError> {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU",
        "XFSZ", "RTMIN", "RTMAX",
    ];
    if let Ok(n) = raw.parse::<u64>() {
        return if (1..=255).contains(&n) {
            Ok(())
        } else {
            Err(SignalError(raw.to_string()))
        };
    }
    let name = raw.to_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let rt = |base: &str| {
        name.strip_prefix(base)
            .and_then(|r| r.strip_prefix(['+', '-']))
            .is_some_and(|n| n.parse::<u8>().is_ok_and(|n| (1..=15).contains(&n)))
    };
    if NAMES.contains(&name) || rt("RTMIN") || rt("RTMAX") {
        Ok(())
    } else {
        Err(SignalError(raw.to_string()))
    }
}
