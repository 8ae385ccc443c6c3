//! The local machine as a host: a [`Transport`] that runs each command in a real `sh -c`, and the
//! engine's check-apply-check loop over one step, so a step's test runs its real fact commands
//! and actions against a temporary directory (more faithful than a recording where the
//! commands' effect on files is the subject; `apt` and `service` change the machine itself and
//! are proven on lab hosts instead).

use async_trait::async_trait;
use provision_engine::facts;
use provision_engine::step::{Action, Check, Facts, HostStep, StepError};
use provision_transport::{Command, Output, Stdin, Transport, TransportError};
use std::io::Write;
use std::process::Stdio;

/// Runs commands in the test's own process environment, plus extra variables (a `PATH` with stub
/// programs, say). Uploads go through the transport's own upload commands.
#[derive(Default)]
pub struct LocalShell {
    env: Vec<(String, String)>,
}

impl LocalShell {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an environment variable for every command from now on.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `sh -c SCRIPT` with `stdin`: what a host's login would run.
    pub fn sh(&self, script: &str, stdin: &[u8]) -> Output {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        // A script that exits before reading its stdin closes the pipe: not an error here.
        let _ = child.stdin.take().expect("piped").write_all(stdin);
        let out = child.wait_with_output().expect("sh finishes");
        Output {
            exit_status: out.status.code().map(|c| c as u32),
            exit_signal: None,
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }

    /// Gathers a step's facts as the engine does: inside its batch script, in a subshell, stdin
    /// from /dev/null. Panics when the fact command breaks the batch's markers.
    pub fn gather(&self, step: &dyn HostStep) -> Facts {
        let Some(cmd) = step.gather() else {
            return Facts::default();
        };
        let out = self.sh(&facts::batch_script("t", &[(0, cmd.clone())]), b"");
        let mut parsed = facts::parse_batch("t", &String::from_utf8_lossy(&out.stdout));
        assert_eq!(
            parsed.len(),
            1,
            "fact command broke the batch: {cmd}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parsed.remove(0).1
    }

    /// The step's decision over freshly gathered facts.
    pub fn check(&self, step: &dyn HostStep) -> Result<Check, StepError> {
        step.check(&self.gather(step))
    }

    /// Applies a plan as the engine does (every action here: one local host stands for the host
    /// an action runs on); returns the changes' summaries. Panics on a failed action.
    pub fn apply(&self, plan: Check) -> Vec<String> {
        let Check::Change(changes) = plan else {
            panic!("expected changes, got {plan:?}")
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for uploads");
        for c in &changes {
            for a in &c.actions {
                match a {
                    Action::Run { script, stdin } | Action::RunOn { script, stdin, .. } => {
                        let out = self.sh(
                            script,
                            stdin.as_deref().map(|s| s.as_slice()).unwrap_or_default(),
                        );
                        assert!(out.success(), "`{script}` failed: {}", out.stderr_str());
                    }
                    Action::Upload { dest, .. } => {
                        let up = a.upload().expect("an upload action");
                        rt.block_on(self.upload(up))
                            .unwrap_or_else(|e| panic!("upload to {dest}: {e}"));
                    }
                }
            }
        }
        changes.into_iter().map(|c| c.summary).collect()
    }

    /// Check, apply, and check again: the second check must find nothing to do (idempotence).
    /// Returns the first apply's change summaries.
    pub fn converge(&self, step: &dyn HostStep) -> Vec<String> {
        let summaries = self.apply(self.check(step).expect("the step decides"));
        match self.check(step).expect("the step decides again") {
            Check::Ok(_) => summaries,
            other => panic!("not converged after {summaries:?}: {other:?}"),
        }
    }
}

#[async_trait]
impl Transport for LocalShell {
    fn host(&self) -> &str {
        "local"
    }

    async fn run(&self, cmd: Command) -> Result<Output, TransportError> {
        let stdin = match cmd.stdin {
            Stdin::Empty => Vec::new(),
            Stdin::Bytes(b) => b.to_vec(),
            Stdin::Stream(mut s) => {
                use tokio::io::AsyncReadExt;
                let mut v = Vec::new();
                s.read_to_end(&mut v).await.expect("stdin stream reads");
                v
            }
        };
        Ok(self.sh(&cmd.script, &stdin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provision_engine::step::Change;

    /// A step that keeps one file's content: the smallest real fact command and action.
    struct Keep {
        path: String,
    }

    impl HostStep for Keep {
        fn gather(&self) -> Option<String> {
            Some(format!("cat {} 2>/dev/null || true", self.path))
        }
        fn check(&self, facts: &Facts) -> Result<Check, StepError> {
            Ok(if facts.stdout.trim() == "kept" {
                Check::Ok("kept".into())
            } else {
                Check::Change(vec![Change::new(
                    format!("write {}", self.path),
                    vec![Action::run(format!("echo kept > {}", self.path))],
                )])
            })
        }
    }

    #[test]
    fn a_step_converges_against_a_temporary_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f").to_str().unwrap().to_string();
        let keep = Keep { path: path.clone() };
        let local = LocalShell::new();
        assert_eq!(local.converge(&keep), vec![format!("write {path}")]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept\n");
        assert!(matches!(local.check(&keep).unwrap(), Check::Ok(_)));
    }

    #[test]
    fn commands_see_stdin_and_the_extra_environment() {
        let local = LocalShell::new().env("GREETING", "hello");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt
            .block_on(
                local.run(
                    Command::new("printf '%s ' \"$GREETING\"; cat").stdin(Stdin::bytes("world")),
                ),
            )
            .unwrap();
        assert_eq!(out.stdout, b"hello world");
        assert_eq!(out.exit_status, Some(0));
    }
}
