//! Failure injection for tests: with the `failpoints` feature, a test can
//! make one step of one container's commit fail, to check what the engine
//! leaves behind (nothing) and that the container is resumed. Without the
//! feature every check is a no-op the compiler removes.

use crate::error::Result;

/// Steps a test can make fail.
pub mod step {
    /// Inside the pause, right after the capture.
    pub const WHILE_PAUSED: &str = "while-paused";
    /// After the layer is written, before the image's snapshot is filled.
    pub const BEFORE_FILL: &str = "before-fill";
    /// After config and manifest are written, before the image is named.
    pub const BEFORE_NAME: &str = "before-name";
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::sync::Mutex;

    pub(super) static POINTS: Mutex<Option<HashMap<String, &'static str>>> = Mutex::new(None);
}

#[cfg(feature = "failpoints")]
mod delays {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    pub(super) static DELAYS: Mutex<Option<HashMap<String, (&'static str, Duration)>>> =
        Mutex::new(None);
}

/// Makes the next commit of `container_id` wait `by` at `step` (a slow
/// commit, e.g. one that outlives its lease's expiry).
#[cfg(feature = "failpoints")]
pub fn arm_delay(container_id: &str, step: &'static str, by: std::time::Duration) {
    let mut d = delays::DELAYS.lock().unwrap_or_else(|p| p.into_inner());
    d.get_or_insert_with(Default::default)
        .insert(container_id.to_string(), (step, by));
}

#[cfg(feature = "failpoints")]
pub(crate) async fn delay(container_id: &str, step: &'static str) {
    let hit = {
        let mut d = delays::DELAYS.lock().unwrap_or_else(|p| p.into_inner());
        d.as_mut().and_then(|m| match m.get(container_id) {
            Some((s, by)) if *s == step => {
                let by = *by;
                m.remove(container_id);
                Some(by)
            }
            _ => None,
        })
    };
    if let Some(by) = hit {
        tokio::time::sleep(by).await;
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) async fn delay(_container_id: &str, _step: &'static str) {}

/// Makes the next commit of `container_id` fail at `step`.
#[cfg(feature = "failpoints")]
pub fn arm(container_id: &str, step: &'static str) {
    let mut points = armed::POINTS.lock().unwrap_or_else(|p| p.into_inner());
    points
        .get_or_insert_with(Default::default)
        .insert(container_id.to_string(), step);
}

#[cfg(feature = "failpoints")]
pub(crate) fn check(container_id: &str, step: &'static str) -> Result<()> {
    let mut points = armed::POINTS.lock().unwrap_or_else(|p| p.into_inner());
    let hit = points.as_mut().and_then(|p| {
        if p.get(container_id) == Some(&step) {
            p.remove(container_id)
        } else {
            None
        }
    });
    match hit {
        Some(step) => Err(crate::Error::Malformed(format!("failpoint {step} hit"))),
        None => Ok(()),
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn check(_container_id: &str, _step: &'static str) -> Result<()> {
    Ok(())
}
