//! Stage four: the instructions applied, in order, to a [`RunConfig`] as
//! moby's builder dispatches them for a commit: each instruction's words
//! expanded against the `Env` as it was before that instruction (so
//! `ENV A=1 B=$A` leaves B empty unless A was set earlier), then applied.

use std::collections::BTreeMap;

use crate::image::{Empty, RunConfig};
use crate::ports::parse_port_spec;
use crate::signal::parse_signal;

use super::ChangeError;
use super::instruction::{Command, Kv};
use super::words::{Env, Lex};

/// The builder's state while dispatching changes.
pub(super) struct State {
    config: RunConfig,
    lex: Lex,
    /// CMD was set by these changes (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl State {
    pub(super) fn new(config: RunConfig, escape: char) -> Self {
        Self {
            config,
            lex: Lex::new(escape),
            cmd_set: false,
        }
    }

    pub(super) fn into_config(self) -> RunConfig {
        self.config
    }

    pub(super) fn dispatch(&mut self, c: Command) -> Result<(), ChangeError> {
        let env = Env::from_slice(self.config.env.as_deref().unwrap_or_default());
        let word = |w: &str| -> Result<String, ChangeError> { Ok(self.lex.process_word(w, &env)?) };
        let pairs = |kvs: Vec<Kv>| -> Result<Vec<(String, String)>, ChangeError> {
            kvs.into_iter()
                .map(|kv| Ok((word(&kv.key)?, word(&kv.value)?)))
                .collect()
        };
        match c {
            Command::Env(kvs) => {
                for (k, v) in pairs(kvs)? {
                    let entry = format!("{k}={v}");
                    let list = self.config.env.get_or_insert_with(Vec::new);
                    match list
                        .iter_mut()
                        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == k)
                    {
                        Some(e) => *e = entry,
                        None => list.push(entry),
                    }
                }
            }
            Command::Label(kvs) => {
                let pairs = pairs(kvs)?;
                let labels = self.config.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in pairs {
                    labels.insert(k, v);
                }
            }
            Command::Workdir(p) => {
                let p = word(&p)?;
                if p.is_empty() {
                    return Err(ChangeError::EmptyWorkdir);
                }
                let current = self.config.working_dir.clone().unwrap_or_default();
                self.config.working_dir = Some(normalize_workdir(&current, &p));
            }
            Command::User(u) => self.config.user = Some(word(&u)?),
            Command::Volume(vols) => {
                let vols = vols
                    .iter()
                    .map(|v| word(v))
                    .collect::<Result<Vec<_>, _>>()?;
                let set = self.config.volumes.get_or_insert_with(BTreeMap::new);
                for v in vols {
                    if v.is_empty() {
                        return Err(ChangeError::EmptyVolume);
                    }
                    set.insert(v, Empty {});
                }
            }
            Command::StopSignal(s) => {
                let s = word(&s)?;
                parse_signal(&s)?;
                self.config.stop_signal = Some(s);
            }
            Command::Expose(ports) => {
                let mut expanded = Vec::new();
                for p in ports {
                    expanded.extend(self.lex.process_words(&p, &env)?);
                }
                let mut specs = Vec::new();
                for p in &expanded {
                    specs.extend(parse_port_spec(p)?);
                }
                let set = self.config.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in specs {
                    set.insert(p, Empty {});
                }
            }
            Command::Cmd { line, shell } => {
                let set = !line.is_empty();
                self.config.cmd = Some(self.with_shell(line, shell));
                self.config.args_escaped = None;
                if set {
                    self.cmd_set = true;
                }
            }
            Command::Entrypoint { line, shell } => {
                self.config.entrypoint = line.map(|l| self.with_shell(l, shell));
                self.config.args_escaped = None;
                if !self.cmd_set {
                    self.config.cmd = None;
                }
            }
            Command::Healthcheck(h) => self.config.healthcheck = Some(h),
            Command::Onbuild(expr) => self.config.on_build.get_or_insert_with(Vec::new).push(expr),
        }
        Ok(())
    }

    /// Shell form runs under the config's `Shell`, or `/bin/sh -c`.
    fn with_shell(&self, line: Vec<String>, shell: bool) -> Vec<String> {
        if !shell {
            return line;
        }
        let mut out = match &self.config.shell {
            Some(s) if !s.is_empty() => s.clone(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        };
        out.extend(line);
        out
    }
}

/// moby's `normalizeWorkdir`: `filepath.Join("/", current, requested)` for
/// a relative path, `filepath.Clean` for an absolute one.
fn normalize_workdir(current: &str, requested: &str) -> String {
    let joined = if requested.starts_with('/') {
        requested.to_string()
    } else {
        format!("/{current}/{requested}")
    };
    clean_path(&joined)
}

/// Go's `path.Clean` for absolute paths.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}
