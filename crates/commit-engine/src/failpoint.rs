//! Failure injection for tests: with the `failpoints` feature, a test can
//! make one step of one container's commit fail, to check what the engine
//! leaves behind (nothing) and that the container is resumed. Without the
//! feature every check is a no-op the compiler removes.
//!
//! A daemon built with the feature also reads [`ENV`] once, for tests that
//! drive it as a process: `CONTAINER:STEP:fail` or `CONTAINER:STEP:delay=MS`,
//! separated by `;`. Those points hold for every commit of the container.

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

/// The environment variable a daemon with the `failpoints` feature reads.
pub const ENV: &str = "COMMITD_FAILPOINTS";

#[cfg(feature = "failpoints")]
mod from_env {
    use std::sync::OnceLock;
    use std::time::Duration;

    /// (container, step, `None` to fail or `Some(delay)`).
    pub(super) type Point = (String, &'static str, Option<Duration>);

    pub(super) fn points() -> &'static [Point] {
        static POINTS: OnceLock<Vec<Point>> = OnceLock::new();
        POINTS.get_or_init(|| {
            let text = std::env::var(super::ENV).unwrap_or_default();
            text.split(';')
                .filter(|p| !p.trim().is_empty())
                .map(|p| {
                    parse(p.trim()).unwrap_or_else(|| panic!("{}: cannot read {p:?}", super::ENV))
                })
                .collect()
        })
    }

    fn parse(p: &str) -> Option<Point> {
        let mut parts = p.splitn(3, ':');
        let (container, step, what) = (parts.next()?, parts.next()?, parts.next()?);
        let step = [
            super::step::WHILE_PAUSED,
            super::step::BEFORE_FILL,
            super::step::BEFORE_NAME,
        ]
        .into_iter()
        .find(|s| *s == step)?;
        let action = match what {
            "fail" => None,
            d => Some(Duration::from_millis(
                d.strip_prefix("delay=")?.parse().ok()?,
            )),
        };
        Some((container.to_string(), step, action))
    }
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
    let from_env = from_env::points()
        .iter()
        .find(|(c, s, d)| c == container_id && *s == step && d.is_some())
        .and_then(|p| p.2);
    if let Some(by) = hit.or(from_env) {
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
    let from_env = from_env::points()
        .iter()
        .any(|(c, s, d)| c == container_id && *s == step && d.is_none());
    match hit.or(from_env.then_some(step)) {
        Some(step) => Err(crate::Error::Failpoint(step)),
        None => Ok(()),
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn check(_container_id: &str, _step: &'static str) -> Result<()> {
    Ok(())
}
