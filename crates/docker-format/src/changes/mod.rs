//! `changes`: Dockerfile instructions applied to a committed image's config
//! (`docker commit -c …`), as Docker's `BuildFromConfig` applies them.
//!
//! The changes are joined with newlines and read as a Dockerfile (line
//! continuations, comments, JSON and shell forms, quotes), each instruction
//! must be one Docker accepts for commit, and each is applied in order with
//! the semantics of Docker's builder: variable expansion against the
//! config's `Env` where the builder expands, ENTRYPOINT clearing CMD unless
//! CMD was set earlier in the same changes, relative WORKDIRs, EXPOSE port
//! ranges, and Docker's error texts.
//!
//! One stage per file, in the order the text goes through them:
//! - `lines`: logical lines (continuations, comments), the instruction
//!   word and its `--flags`;
//! - `instruction`: one line parsed into an `Instruction`
//!   (JSON or shell form, `name=value` pairs, HEALTHCHECK's flags);
//! - [`words`]: shell-word splitting and `$VAR` expansion (buildkit's lexer);
//! - `dispatch`: the instructions applied to a [`RunConfig`].

mod dispatch;
mod instruction;
mod lines;
pub mod words;

use crate::duration::DurationError;
use crate::image::RunConfig;
use crate::ports::PortError;
use crate::signal::SignalError;

pub use self::words::WordError;

/// A change Docker would refuse; each variant displays Docker's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("file with no instructions")]
    NoInstructions,
    #[error("{0} is not a valid change command")]
    NotAChangeCommand(String),
    #[error("Unknown flag: {0}")]
    UnknownFlag(String),
    #[error("Missing a value on flag: {0}")]
    FlagWithoutValue(String),
    #[error("{0} requires at least one argument")]
    NoArgument(&'static str),
    #[error("{0} requires exactly one argument")]
    NotOneArgument(&'static str),
    #[error("{0} must have two arguments")]
    NotTwoArguments(&'static str),
    #[error("{0} names can not be blank")]
    BlankName(&'static str),
    #[error("Syntax error - can't find = in {0:?}. Must be of the form: name=value")]
    NoEquals(String),
    #[error("only string arrays are supported")]
    NotStringArray,
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChained,
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger(String),
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    #[error("Unknown type {0:?} in HEALTHCHECK (try CMD)")]
    HealthcheckType(String),
    #[error("Missing command after HEALTHCHECK CMD")]
    HealthcheckCommand,
    #[error("Interval {0:?} cannot be less than 1ms")]
    IntervalTooShort(String),
    #[error("strconv.ParseInt: parsing {0:?}: invalid syntax")]
    Retries(String),
    #[error("--retries cannot be negative ({0})")]
    NegativeRetries(i64),
    #[error("cannot normalize nothing")]
    EmptyWorkdir,
    #[error(transparent)]
    Duration(#[from] DurationError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error(transparent)]
    Word(#[from] WordError),
}

/// A commit's `changes`: the lines as the client sent them (one per
/// `changes` query value), read and applied by [`Changes::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes(Vec<String>);

impl Changes {
    pub fn new(lines: Vec<String>) -> Self {
        Self(lines)
    }

    /// How many lines the client sent.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Applies the changes to `config`. No changes: the config as it is.
    /// Docker checks and parses every instruction before applying any.
    pub fn apply(&self, config: RunConfig) -> Result<RunConfig, ChangeError> {
        if self.0.is_empty() {
            return Ok(config);
        }
        let lines = lines::logical_lines(&self.0.join("\n"));
        if lines.is_empty() {
            return Err(ChangeError::NoInstructions);
        }
        let parsed = lines
            .iter()
            .map(|line| instruction::parse_line(line))
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = dispatch::State::new(config);
        for i in parsed {
            state.dispatch(i)?;
        }
        Ok(state.into_config())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RunConfig {
        RunConfig {
            env: Some(vec!["PATH=/usr/bin:/bin".into(), "HOME=/root".into()]),
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        }
    }

    fn changes(lines: &[&str]) -> Changes {
        Changes::new(lines.iter().map(|s| s.to_string()).collect())
    }

    fn apply(lines: &[&str]) -> Result<RunConfig, String> {
        changes(lines).apply(base()).map_err(|e| e.to_string())
    }

    fn strs(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn no_changes_keep_the_config() {
        assert_eq!(Changes::default().apply(base()).unwrap(), base());
        assert_eq!(
            apply(&["", "# only a comment"]).unwrap_err(),
            "file with no instructions"
        );
    }

    #[test]
    fn only_commit_instructions_are_accepted() {
        assert_eq!(
            apply(&["RUN echo hi"]).unwrap_err(),
            "RUN is not a valid change command"
        );
        assert_eq!(
            apply(&["run echo hi"]).unwrap_err(),
            "run is not a valid change command"
        );
        assert_eq!(
            apply(&["FROM x"]).unwrap_err(),
            "FROM is not a valid change command"
        );
        assert_eq!(
            apply(&["BOGUS"]).unwrap_err(),
            "BOGUS is not a valid change command"
        );
        assert_eq!(
            apply(&["ENV A=1", "COPY a b"]).unwrap_err(),
            "COPY is not a valid change command"
        );
    }

    #[test]
    fn env_pairs_quotes_and_expansion() {
        let c =
            apply(&[r#"ENV A=1 B="two words" C='$HOME' D=$HOME/x E=${HOME}y F=\$HOME"#]).unwrap();
        let env = c.env.unwrap();
        assert_eq!(
            &env[2..],
            [
                "A=1",
                "B=two words",
                "C=$HOME",
                "D=/root/x",
                "E=/rooty",
                "F=$HOME"
            ]
        );
        let c = apply(&["ENV PATH=$PATH:/opt/bin", "env NAME value with spaces"]).unwrap();
        assert_eq!(
            c.env.unwrap(),
            [
                "PATH=/usr/bin:/bin:/opt/bin",
                "HOME=/root",
                "NAME=value with spaces"
            ]
        );
        let c = apply(&["ENV X=${UNSET:-dflt} Y=${HOME:+set} Z=${UNSET:+no}"]).unwrap();
        assert_eq!(&c.env.unwrap()[2..], ["X=dflt", "Y=set", "Z="]);
        assert_eq!(
            apply(&["ENV ONLYKEY"]).unwrap_err(),
            "ENV must have two arguments"
        );
        assert_eq!(
            apply(&["ENV"]).unwrap_err(),
            "ENV requires at least one argument"
        );
        assert_eq!(
            apply(&["ENV A=1 B"]).unwrap_err(),
            "Syntax error - can't find = in \"B\". Must be of the form: name=value"
        );
        assert_eq!(
            apply(&["ENV X=${UNSET:?required}"]).unwrap_err(),
            "UNSET: required"
        );
    }

    #[test]
    fn labels() {
        let c = apply(&[r#"LABEL a=b "c d"="e f" version=1.0"#, "LABEL a=z"]).unwrap();
        let l = c.labels.unwrap();
        assert_eq!(l["a"], "z");
        assert_eq!(l["c d"], "e f");
        assert_eq!(l["version"], "1.0");
    }

    #[test]
    fn cmd_and_entrypoint_forms() {
        let c = apply(&[r#"CMD ["echo", "hi"]"#]).unwrap();
        assert_eq!(c.cmd, strs(&["echo", "hi"]));
        let c = apply(&["CMD echo $HOME"]).unwrap();
        assert_eq!(
            c.cmd,
            strs(&["/bin/sh", "-c", "echo $HOME"]),
            "no expansion in CMD"
        );
        let c = apply(&[r#"ENTRYPOINT ["/app"]"#]).unwrap();
        assert_eq!(
            (c.entrypoint, c.cmd),
            (strs(&["/app"]), None),
            "ENTRYPOINT clears an inherited CMD"
        );
        let c = apply(&[r#"CMD ["--flag"]"#, r#"ENTRYPOINT ["/app"]"#]).unwrap();
        assert_eq!(
            (c.entrypoint, c.cmd),
            (strs(&["/app"]), strs(&["--flag"])),
            "but not one set by the changes"
        );
        let c = apply(&["ENTRYPOINT /app --x"]).unwrap();
        assert_eq!(c.entrypoint, strs(&["/bin/sh", "-c", "/app --x"]));
        let mut with_shell = base();
        with_shell.shell = strs(&["/bin/bash", "-lc"]);
        let c = changes(&["CMD make"]).apply(with_shell).unwrap();
        assert_eq!(c.cmd, strs(&["/bin/bash", "-lc", "make"]));
        assert_eq!(
            apply(&["CMD [1, 2]"]).unwrap_err(),
            "only string arrays are supported"
        );
        let c = apply(&["CMD [not json"]).unwrap();
        assert_eq!(c.cmd, strs(&["/bin/sh", "-c", "[not json"]));
    }

    #[test]
    fn expose_ports() {
        let c = apply(&[
            "EXPOSE 80 443/tcp 53/udp 8000-8002",
            "ENV P=9090",
            "EXPOSE $P",
        ])
        .unwrap();
        let ports: Vec<String> = c.exposed_ports.unwrap().into_keys().collect();
        assert_eq!(
            ports,
            [
                "443/tcp", "53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp", "9090/tcp"
            ]
        );
        assert_eq!(apply(&["EXPOSE 80/xyz"]).unwrap_err(), "invalid proto: xyz");
        assert_eq!(
            apply(&["EXPOSE abc"]).unwrap_err(),
            "invalid containerPort: abc"
        );
        assert_eq!(
            apply(&["EXPOSE"]).unwrap_err(),
            "EXPOSE requires at least one argument"
        );
    }

    #[test]
    fn user_workdir_volume_stopsignal() {
        let c = apply(&[
            "USER app:app",
            "WORKDIR /srv",
            "WORKDIR data/../web",
            "VOLUME /data /logs",
            r#"VOLUME ["/cache"]"#,
            "STOPSIGNAL SIGINT",
        ])
        .unwrap();
        assert_eq!(c.user.as_deref(), Some("app:app"));
        assert_eq!(c.working_dir.as_deref(), Some("/srv/web"));
        assert_eq!(
            c.volumes.unwrap().into_keys().collect::<Vec<_>>(),
            ["/cache", "/data", "/logs"]
        );
        assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
        let c = apply(&["ENV D=/opt", "WORKDIR $D/app", "USER ${NOBODY:-65534}"]).unwrap();
        assert_eq!(
            (c.working_dir.as_deref(), c.user.as_deref()),
            (Some("/opt/app"), Some("65534"))
        );
        for ok in ["9", "TERM", "sigkill", "SIGRTMIN+3"] {
            apply(&[&format!("STOPSIGNAL {ok}")]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(
            apply(&["STOPSIGNAL SIGNOPE"]).unwrap_err(),
            "Invalid signal: SIGNOPE"
        );
        assert_eq!(apply(&["STOPSIGNAL 0"]).unwrap_err(), "Invalid signal: 0");
        assert_eq!(
            apply(&["USER"]).unwrap_err(),
            "USER requires exactly one argument"
        );
        assert_eq!(
            apply(&[r#"VOLUME [""]"#]).unwrap_err(),
            "VOLUME specified can not be an empty string"
        );
    }

    #[test]
    fn healthchecks() {
        let c = apply(&["HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --retries=3 CMD curl -f http://localhost/"]).unwrap();
        let h = c.healthcheck.unwrap();
        assert_eq!(h.test, strs(&["CMD-SHELL", "curl -f http://localhost/"]));
        assert_eq!(
            (h.interval, h.timeout, h.start_period, h.retries),
            (30_000_000_000, 5_000_000_000, 60_000_000_000, 3)
        );
        let c = apply(&[r#"HEALTHCHECK CMD ["/bin/check", "-q"]"#]).unwrap();
        assert_eq!(
            c.healthcheck.unwrap().test,
            strs(&["CMD", "/bin/check", "-q"])
        );
        let c = apply(&["HEALTHCHECK NONE"]).unwrap();
        assert_eq!(c.healthcheck.unwrap().test, strs(&["NONE"]));
        assert_eq!(
            apply(&["HEALTHCHECK NONE x"]).unwrap_err(),
            "HEALTHCHECK NONE takes no arguments"
        );
        assert_eq!(
            apply(&["HEALTHCHECK --bogus=1 CMD x"]).unwrap_err(),
            "Unknown flag: bogus"
        );
        assert_eq!(
            apply(&["HEALTHCHECK --retries=-1 CMD x"]).unwrap_err(),
            "--retries cannot be negative (-1)"
        );
        assert_eq!(
            apply(&["HEALTHCHECK --interval=1us CMD x"]).unwrap_err(),
            "Interval \"interval\" cannot be less than 1ms"
        );
        assert_eq!(
            apply(&["HEALTHCHECK --interval=soon CMD x"]).unwrap_err(),
            "time: invalid duration \"soon\""
        );
        assert_eq!(
            apply(&["HEALTHCHECK CMD"]).unwrap_err(),
            "Missing command after HEALTHCHECK CMD"
        );
        assert_eq!(
            apply(&["HEALTHCHECK RUN x"]).unwrap_err(),
            "Unknown type \"RUN\" in HEALTHCHECK (try CMD)"
        );
    }

    #[test]
    fn onbuild_triggers() {
        let c = apply(&["ONBUILD RUN echo  hi", "onbuild COPY . /src"]).unwrap();
        assert_eq!(c.on_build, strs(&["RUN echo  hi", "COPY . /src"]));
        assert_eq!(
            apply(&["ONBUILD ONBUILD RUN x"]).unwrap_err(),
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        assert_eq!(
            apply(&["ONBUILD FROM x"]).unwrap_err(),
            "FROM isn't allowed as an ONBUILD trigger"
        );
    }

    #[test]
    fn dockerfile_syntax() {
        // One change may hold several lines, continuations and comments.
        let c = apply(&[
            "ENV A=1 \\\n    B=2\n# a comment\nLABEL x=y",
            "CMD [\"a\",\\\n \"b\"]",
        ])
        .unwrap();
        assert_eq!(&c.env.unwrap()[2..], ["A=1", "B=2"]);
        assert_eq!(c.labels.unwrap()["x"], "y");
        assert_eq!(c.cmd, strs(&["a", "b"]));
        assert_eq!(apply(&["USER --bad app"]).unwrap_err(), "Unknown flag: bad");
    }
}
