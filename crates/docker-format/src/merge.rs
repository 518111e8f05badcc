//! How Docker completes a commit's config: `CreateImageFromContainer`
//! takes the request body's config (or, without one, the container's),
//! applies `changes`, then fills what is still missing from the
//! container's config (moby's `daemon/commit.go` `merge`).
//!
//! The container's config is what [`crate::container::container_config`]
//! rebuilds from a containerd container (Docker's behaviour), or the
//! parent image's config as it is (nerdctl's); the caller chooses.

use crate::image::RunConfig;

use crate::changes::{ChangeError, Changes};

/// The committed image's run config, from the container's config
/// (`None` for a container without one).
pub fn commit_config(
    container: Option<&RunConfig>,
    body: Option<RunConfig>,
    changes: &Changes,
) -> Result<RunConfig, ChangeError> {
    let empty = RunConfig::default();
    let container = container.unwrap_or(&empty);
    let user = body.unwrap_or_else(|| container.clone());
    let changed = changes.apply(user)?;
    Ok(merge(changed, container))
}

/// moby's `merge(userConf, imageConf)`: `user` completed from `image`
/// (never its `OnBuild`, `Shell` or `ArgsEscaped`).
pub fn merge(mut user: RunConfig, image: &RunConfig) -> RunConfig {
    if user.user.as_deref().unwrap_or("").is_empty() {
        user.user = image.user.clone();
    }
    match (&mut user.exposed_ports, &image.exposed_ports) {
        (Some(mine), Some(theirs)) if !mine.is_empty() => {
            for p in theirs.keys() {
                mine.entry(p.clone()).or_default();
            }
        }
        (mine, theirs) if mine.as_ref().is_none_or(|m| m.is_empty()) => *mine = theirs.clone(),
        _ => {}
    }
    if user.env.as_ref().is_none_or(|e| e.is_empty()) {
        user.env = image.env.clone();
    } else if let (Some(mine), Some(theirs)) = (&mut user.env, &image.env) {
        for e in theirs {
            let key = e.split('=').next().unwrap_or("");
            if !mine
                .iter()
                .any(|m| m.split('=').next().unwrap_or("") == key)
            {
                mine.push(e.clone());
            }
        }
    }
    if let Some(theirs) = &image.labels {
        let mine = user.labels.get_or_insert_with(Default::default);
        for (k, v) in theirs {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if user.entrypoint.as_ref().is_none_or(|e| e.is_empty()) {
        if user.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            user.cmd = image.cmd.clone();
        }
        if user.entrypoint.is_none() {
            user.entrypoint = image.entrypoint.clone();
        }
    }
    if let Some(theirs) = &image.healthcheck {
        match &mut user.healthcheck {
            None => user.healthcheck = Some(theirs.clone()),
            Some(mine) => {
                if mine.test.as_ref().is_none_or(|t| t.is_empty()) {
                    mine.test = theirs.test.clone();
                }
                if mine.interval == 0 {
                    mine.interval = theirs.interval;
                }
                if mine.timeout == 0 {
                    mine.timeout = theirs.timeout;
                }
                if mine.start_period == 0 {
                    mine.start_period = theirs.start_period;
                }
                if mine.start_interval == 0 {
                    mine.start_interval = theirs.start_interval;
                }
                if mine.retries == 0 {
                    mine.retries = theirs.retries;
                }
            }
        }
    }
    if user.working_dir.as_deref().unwrap_or("").is_empty() {
        user.working_dir = image.working_dir.clone();
    }
    match (&mut user.volumes, &image.volumes) {
        (mine, theirs) if mine.as_ref().is_none_or(|m| m.is_empty()) => *mine = theirs.clone(),
        (Some(mine), Some(theirs)) => {
            for (k, v) in theirs {
                mine.insert(k.clone(), *v);
            }
        }
        _ => {}
    }
    if user.stop_signal.as_deref().unwrap_or("").is_empty() {
        user.stop_signal = image.stop_signal.clone();
    }
    user
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Empty, HealthConfig};

    fn s(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|x| x.to_string()).collect())
    }

    fn parent() -> RunConfig {
        RunConfig {
            user: Some("app".into()),
            env: s(&["PATH=/bin", "A=parent"]),
            cmd: s(&["serve"]),
            entrypoint: s(&["/entry"]),
            working_dir: Some("/srv".into()),
            labels: Some([("team".to_string(), "infra".to_string())].into()),
            exposed_ports: Some([("80/tcp".to_string(), Empty {})].into()),
            volumes: Some([("/data".to_string(), Empty {})].into()),
            stop_signal: Some("SIGTERM".into()),
            healthcheck: Some(HealthConfig {
                test: s(&["CMD", "check"]),
                interval: 5,
                retries: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn no_body_no_changes_is_the_parent() {
        assert_eq!(
            commit_config(Some(&parent()), None, &Changes::default()).unwrap(),
            parent()
        );
        assert_eq!(
            commit_config(None, None, &Changes::default()).unwrap(),
            RunConfig::default()
        );
    }

    #[test]
    fn body_fields_win_and_the_rest_comes_from_the_parent() {
        let body = RunConfig {
            env: s(&["A=body", "B=2"]),
            exposed_ports: Some([("443/tcp".to_string(), Empty {})].into()),
            labels: Some([("team".to_string(), "web".to_string())].into()),
            healthcheck: Some(HealthConfig {
                timeout: 9,
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = commit_config(Some(&parent()), Some(body), &Changes::default()).unwrap();
        assert_eq!(c.env, s(&["A=body", "B=2", "PATH=/bin"]));
        assert_eq!(c.exposed_ports.unwrap().len(), 2);
        assert_eq!(c.labels.unwrap()["team"], "web");
        assert_eq!(
            (c.user.as_deref(), c.working_dir.as_deref()),
            (Some("app"), Some("/srv"))
        );
        assert_eq!((c.cmd, c.entrypoint), (s(&["serve"]), s(&["/entry"])));
        let h = c.healthcheck.unwrap();
        assert_eq!(
            (h.test, h.interval, h.timeout, h.retries),
            (s(&["CMD", "check"]), 5, 9, 2)
        );
    }

    #[test]
    fn an_entrypoint_in_the_body_keeps_its_own_cmd() {
        let body = RunConfig {
            entrypoint: s(&["/other"]),
            ..Default::default()
        };
        let c = commit_config(Some(&parent()), Some(body), &Changes::default()).unwrap();
        assert_eq!((c.entrypoint, c.cmd), (s(&["/other"]), None));
        // An empty, non-null entrypoint resets it and takes the parent's CMD.
        let body = RunConfig {
            entrypoint: Some(vec![]),
            ..Default::default()
        };
        let c = commit_config(Some(&parent()), Some(body), &Changes::default()).unwrap();
        assert_eq!((c.entrypoint, c.cmd), (Some(vec![]), s(&["serve"])));
    }

    #[test]
    fn changes_apply_before_the_merge() {
        let c = commit_config(
            Some(&parent()),
            None,
            &Changes::new(vec!["ENTRYPOINT [\"/new\"]".into()]),
        )
        .unwrap();
        assert_eq!((c.entrypoint, c.cmd), (s(&["/new"]), None));
        let c = commit_config(
            Some(&parent()),
            None,
            &Changes::new(vec!["ENV A=changed".into()]),
        )
        .unwrap();
        assert_eq!(c.env, s(&["PATH=/bin", "A=changed"]));
        assert!(commit_config(Some(&parent()), None, &Changes::new(vec!["RUN x".into()])).is_err());
    }
}
