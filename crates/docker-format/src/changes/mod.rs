//! `changes`: Dockerfile instructions applied to a committed image's config
//! (`docker commit -c …`), as current Docker's `BuildFromConfig` applies
//! them (moby master's `builder/dockerfile` with buildkit's parser).
//!
//! The changes are joined with newlines and read as a Dockerfile, then
//! every instruction is checked and parsed, then each is applied in order:
//! - `parser`: parser directives (`# escape=`), continuations, comments,
//!   heredocs, each line's instruction word, `--flags` and arguments (JSON
//!   and shell forms, `name=value` pairs); errors here come first;
//! - `instruction`: each instruction checked (`X is not a valid change
//!   command`, argument counts, flags, HEALTHCHECK's options);
//! - [`words`]: buildkit's shell lexer (quotes, escapes, `$VAR`
//!   expansion);
//! - `dispatch`: the instructions applied to a [`RunConfig`], each
//!   expanded against the `Env` as it was before it.
//!
//! Where Docker Engine 20.10 says it otherwise, current Docker's words
//! are used (the instruction keeps its case in "not a valid change
//! command", flags are `unknown flag: --x`, signals `invalid signal: X`).

mod dispatch;
mod instruction;
mod parser;
pub mod words;

use crate::duration::DurationError;
use crate::image::RunConfig;
use crate::ports::PortError;
use crate::signal::SignalError;

pub use self::words::{ProcessError, WordError};

/// A change Docker would refuse; each variant displays Docker's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("file with no instructions")]
    NoInstructions,
    #[error("dockerfile line greater than max allowed size of {0}")]
    LineTooLong(usize),
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscape(String),
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    #[error("unterminated heredoc")]
    UnterminatedHeredoc,
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    #[error("{0} must have two arguments")]
    NotTwoArguments(&'static str),
    /// The word as Go's `%q` prints it.
    #[error("Syntax error - can't find = in {}. Must be of the form: name=value", crate::go::quote(.0))]
    NoEquals(String),
    #[error("{0} is not a valid change command")]
    NotAChangeCommand(String),
    #[error("unknown flag: {flag}{}", .suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownFlag {
        flag: String,
        suggestion: Option<String>,
    },
    #[error("arg should start with -- : {0}")]
    FlagNotAFlag(String),
    #[error("duplicate flag specified: {0}")]
    DuplicateFlag(String),
    #[error("missing a value on flag: {0}")]
    FlagWithoutValue(String),
    #[error("{0} requires at least one argument")]
    NoArgument(&'static str),
    #[error("{0} requires exactly one argument")]
    NotOneArgument(&'static str),
    #[error("Bad input to {0}, too many arguments")]
    TooManyArguments(&'static str),
    #[error("{0} names can not be blank")]
    BlankName(&'static str),
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChained,
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger(String),
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    /// The type as Go's `%#v` prints it.
    #[error("Unknown type {0} in HEALTHCHECK (try CMD)")]
    HealthcheckType(String),
    #[error("Missing command after HEALTHCHECK CMD")]
    HealthcheckCommand,
    /// The flag's name as Go's `%#v` prints it.
    #[error("Interval {0} cannot be less than 1ms")]
    IntervalTooShort(String),
    /// Go's `strconv.ParseInt` error text.
    #[error("{0}")]
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
    Word(#[from] ProcessError),
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
    /// Docker parses the whole text, then checks every instruction, before
    /// applying any.
    pub fn apply(&self, config: RunConfig) -> Result<RunConfig, ChangeError> {
        if self.0.is_empty() {
            return Ok(config);
        }
        let parsed = parser::parse(&self.0.join("\n"))?;
        let commands = parsed
            .nodes
            .iter()
            .map(instruction::parse_command)
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = dispatch::State::new(config, parsed.escape);
        for c in commands {
            state.dispatch(c)?;
        }
        Ok(state.into_config())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::HealthConfig;

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
            "failed to process \"${UNSET:?required}\": UNSET: required"
        );
    }

    #[test]
    fn env_expands_against_the_env_before_the_instruction() {
        let c = apply(&["ENV A=1 B=$A"]).unwrap();
        assert_eq!(&c.env.unwrap()[2..], ["A=1", "B="]);
        let c = apply(&["ENV A=1", "ENV B=$A HOME=/home C=$HOME"]).unwrap();
        assert_eq!(
            c.env.unwrap(),
            ["PATH=/usr/bin:/bin", "HOME=/home", "A=1", "B=1", "C=/root"]
        );
        let c = apply(&["LABEL a=$HOME", "ENV X=y", "LABEL b=$X"]).unwrap();
        let l = c.labels.unwrap();
        assert_eq!((l["a"].as_str(), l["b"].as_str()), ("/root", "y"));
    }

    #[test]
    fn escape_directive_on_the_first_line() {
        let c = apply(&["# escape=`", "ENV A=x`", "y B=c:\\dir"]).unwrap();
        assert_eq!(&c.env.unwrap()[2..], ["A=xy", "B=c:\\dir"]);
        assert_eq!(
            apply(&["# escape=x", "ENV A=1"]).unwrap_err(),
            "invalid escape token 'x' does not match ` or \\"
        );
        // Not a directive after the first instruction: a comment.
        let c = apply(&["ENV A=1", "# escape=`", "ENV B=2"]).unwrap();
        assert_eq!(&c.env.unwrap()[2..], ["A=1", "B=2"]);
    }

    #[test]
    fn parse_errors_come_before_instruction_errors() {
        assert_eq!(
            apply(&["RUN x", "CMD [1]"]).unwrap_err(),
            "when using JSON array syntax, arrays must be comprised of strings only"
        );
        assert_eq!(
            apply(&["USER", "RUN x"]).unwrap_err(),
            "USER requires exactly one argument"
        );
        assert_eq!(
            apply(&["ENV A=${", "RUN x"]).unwrap_err(),
            "RUN is not a valid change command"
        );
        assert_eq!(
            apply(&["ENV A=${"]).unwrap_err(),
            "failed to process \"${\": syntax error: missing '}'"
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
            "when using JSON array syntax, arrays must be comprised of strings only"
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
            "invalid signal: SIGNOPE"
        );
        assert_eq!(apply(&["STOPSIGNAL 0"]).unwrap_err(), "invalid signal: 0");
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
        // NONE's flags are not looked at.
        let c = apply(&["HEALTHCHECK --interval=5s NONE"]).unwrap();
        assert_eq!(
            c.healthcheck.unwrap(),
            HealthConfig {
                test: strs(&["NONE"]),
                ..Default::default()
            }
        );
        assert_eq!(
            apply(&["HEALTHCHECK NONE x"]).unwrap_err(),
            "HEALTHCHECK NONE takes no arguments"
        );
        assert_eq!(
            apply(&["HEALTHCHECK --bogus=1 CMD x"]).unwrap_err(),
            "unknown flag: --bogus"
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
        assert_eq!(
            apply(&["USER --bad app"]).unwrap_err(),
            "unknown flag: --bad"
        );
    }
}
