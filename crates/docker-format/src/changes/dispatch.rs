//! Stage four: the parsed instructions applied, in order, to a
//! [`RunConfig`] with the semantics of Docker's builder.

use std::collections::BTreeMap;

use crate::image::{Empty, RunConfig};
use crate::ports::parse_port_spec;
use crate::signal::parse_signal;

use super::ChangeError;
use super::instruction::Instruction;
use super::words::{process_word, process_words};

/// The builder's state while dispatching changes.
pub(super) struct State {
    config: RunConfig,
    /// CMD was set by these changes (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl State {
    pub(super) fn new(config: RunConfig) -> Self {
        Self {
            config,
            cmd_set: false,
        }
    }

    pub(super) fn into_config(self) -> RunConfig {
        self.config
    }

    fn env(&self) -> Vec<String> {
        self.config.env.clone().unwrap_or_default()
    }

    fn expand(&self, word: &str) -> Result<String, ChangeError> {
        Ok(process_word(word, &self.env())?)
    }

    pub(super) fn dispatch(&mut self, i: Instruction) -> Result<(), ChangeError> {
        match i {
            Instruction::Env(pairs) => {
                for (k, v) in pairs {
                    let (k, v) = (self.expand(&k)?, self.expand(&v)?);
                    let entry = format!("{k}={v}");
                    let env = self.config.env.get_or_insert_with(Vec::new);
                    match env
                        .iter_mut()
                        .find(|e| e.split('=').next() == Some(k.as_str()))
                    {
                        Some(e) => *e = entry,
                        None => env.push(entry),
                    }
                }
            }
            Instruction::Label(pairs) => {
                for (k, v) in pairs {
                    let (k, v) = (self.expand(&k)?, self.expand(&v)?);
                    self.config
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k, v);
                }
            }
            Instruction::Expose(ports) => {
                let mut expanded = Vec::new();
                for p in ports {
                    expanded.extend(process_words(&p, &self.env())?);
                }
                let set = self.config.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in expanded {
                    for port in parse_port_spec(&p)? {
                        set.insert(port, Empty {});
                    }
                }
            }
            Instruction::User(u) => self.config.user = Some(self.expand(&u)?),
            Instruction::Volume(vols) => {
                let mut out = Vec::new();
                for v in vols {
                    let v = self.expand(&v)?;
                    if v.is_empty() {
                        return Err(ChangeError::EmptyVolume);
                    }
                    out.push(v);
                }
                let set = self.config.volumes.get_or_insert_with(BTreeMap::new);
                for v in out {
                    set.insert(v, Empty {});
                }
            }
            Instruction::StopSignal(s) => {
                let s = self.expand(&s)?;
                parse_signal(&s)?;
                self.config.stop_signal = Some(s);
            }
            Instruction::Workdir(p) => {
                let p = self.expand(&p)?;
                if p.is_empty() {
                    return Err(ChangeError::EmptyWorkdir);
                }
                let current = self.config.working_dir.clone().unwrap_or_default();
                self.config.working_dir = Some(normalize_workdir(&current, &p));
            }
            Instruction::Cmd { args, shell } => {
                let set = !args.is_empty();
                self.config.cmd = Some(self.with_shell(args, shell));
                self.config.args_escaped = None;
                if set {
                    self.cmd_set = true;
                }
            }
            Instruction::Entrypoint { args, shell } => {
                self.config.entrypoint = args.map(|a| self.with_shell(a, shell));
                self.config.args_escaped = None;
                if !self.cmd_set {
                    self.config.cmd = None;
                }
            }
            Instruction::Healthcheck(h) => self.config.healthcheck = Some(h),
            Instruction::Onbuild(expr) => {
                self.config.on_build.get_or_insert_with(Vec::new).push(expr)
            }
        }
        Ok(())
    }

    /// Shell form runs under the config's `Shell`, or `/bin/sh -c`.
    fn with_shell(&self, args: Vec<String>, shell: bool) -> Vec<String> {
        if !shell {
            return args;
        }
        let mut out = match &self.config.shell {
            Some(s) if !s.is_empty() => s.clone(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        };
        out.extend(args);
        out
    }
}

/// `filepath.Join("/", current, requested)` for a relative path, `Clean`
/// for an absolute one.
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
