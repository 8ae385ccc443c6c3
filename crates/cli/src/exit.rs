//! Exit codes, and the one mapping of outcomes and errors to them: every command returns
//! `Ok(code)` or an error, and only this module decides which number a failure is.

use provision_engine::diagnostic::ConfigError;
use provision_ops::OpsError;
use provision_secrets::SecretsError;
use std::process::ExitCode;

/// Some host or check failed, or an error that is not the input's.
pub const EXIT_FAILED: u8 = 1;
/// Bad input (inventory, playbook, secrets, arguments): nothing ran anywhere.
pub const EXIT_CONFIG: u8 = 2;
/// `lab status`: a VM is not running or its sshd does not answer.
pub const EXIT_DEGRADED: u8 = 3;
/// `import-ansible`: the TOML was written, but something was left unconverted (the report names
/// each at its YAML file and line).
pub const EXIT_UNCONVERTED: u8 = 3;
/// `run --check --detect-drift`: every host answered and some step would change something
/// (Terraform's `plan -detailed-exitcode` uses 2, which is our bad input).
pub const EXIT_DRIFT: u8 = 4;
/// Another operator holds the cluster lock (EX_TEMPFAIL: try again later).
pub const EXIT_LOCKED: u8 = 75;
/// Stopped by Ctrl-C or SIGTERM.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Bad input, already worded for people: printed as it is and exits with [`EXIT_CONFIG`].
#[derive(Debug)]
pub struct ConfigFailure(pub String);

impl std::fmt::Display for ConfigFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigFailure {}

/// Bad input with this message (exit code 2).
pub fn config_failure(message: String) -> anyhow::Error {
    anyhow::Error::new(ConfigFailure(message))
}

/// Configuration diagnostics as bad input (exit code 2).
pub fn config_error(e: ConfigError) -> anyhow::Error {
    config_failure(e.to_string())
}

/// The exit code of a failed day-2 operation (or of taking the cluster lock).
fn ops_code(e: &OpsError) -> u8 {
    match e {
        OpsError::Locked { .. } | OpsError::NoLockMajority { .. } => EXIT_LOCKED,
        OpsError::Interrupted { .. } => EXIT_INTERRUPTED,
        _ => EXIT_FAILED,
    }
}

/// Prints an operation error for people and picks the exit code.
pub fn report(e: OpsError) -> u8 {
    say!("error: {e}");
    ops_code(&e)
}

/// A `secrets` command's error: an interrupted edit is not a failure to explain at length (what
/// happened is said, the exit is the shell's 128+signal code); every other one is an error.
pub fn secrets(e: SecretsError) -> anyhow::Result<u8> {
    match e {
        SecretsError::Interrupted { .. } => {
            say!("{e}");
            Ok(e.exit_code())
        }
        // The library's messages are complete sentences; no error chain is appended.
        e => Err(anyhow::anyhow!("{e}")),
    }
}

/// How a `run` ended: a lost lock first (others may act now), then an interrupt, then the hosts.
pub fn run_outcome(lock_lost: bool, interrupted: bool, success: bool) -> u8 {
    if lock_lost {
        EXIT_LOCKED
    } else if interrupted {
        EXIT_INTERRUPTED
    } else if success {
        0
    } else {
        EXIT_FAILED
    }
}

/// `run --detect-drift`'s code: drift only replaces a success (0); a failed host, an interrupt
/// or a lost lock keep their own code, so 4 always means "all hosts answered, something would
/// change".
pub fn with_drift(code: u8, drifted: bool) -> u8 {
    if code == 0 && drifted {
        EXIT_DRIFT
    } else {
        code
    }
}

/// Every exit code of `provision run`, for its `--help`.
pub const RUN_EXIT_CODES: &str = "Exit codes:
  0    done; with --check, nothing failed (with --detect-drift: and nothing would change)
  1    a host failed or was unreachable (the recap names host, step, command and stderr)
  2    bad input (inventory, playbook, secrets, arguments): nothing ran on any host
  4    --check --detect-drift: all hosts answered and something would change
  75   the cluster is locked by another run, or the lock lost its majority of managers
  130  interrupted (Ctrl-C or SIGTERM): running commands were let finish";

/// A remote command's own exit status as ours (`exec`, like ssh and docker exec): 255 at most.
pub fn passed_on(status: u32) -> u8 {
    u8::try_from(status).unwrap_or(u8::MAX)
}

/// 0 when `ok`, else [`EXIT_FAILED`].
pub fn ok_or_failed(ok: bool) -> u8 {
    if ok { 0 } else { EXIT_FAILED }
}

/// What the process exits with: the command's code, or its error printed.
pub fn finish(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if let Some(cfg) = err.downcast_ref::<ConfigFailure>() {
                // Bad input: nothing ran anywhere.
                say!("{cfg}");
                return ExitCode::from(EXIT_CONFIG);
            }
            say!("error: {err:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_replaces_only_a_success() {
        assert_eq!(with_drift(0, false), 0);
        assert_eq!(with_drift(0, true), EXIT_DRIFT);
        // A failure, an interrupt or a lost lock says more than "would change".
        for code in [EXIT_FAILED, EXIT_LOCKED, EXIT_INTERRUPTED] {
            assert_eq!(with_drift(code, true), code);
            assert_eq!(with_drift(code, false), code);
        }
        // Drift must not be mistaken for bad input, a failure or lab degradation.
        assert!(
            ![0, EXIT_FAILED, EXIT_CONFIG, EXIT_LOCKED, EXIT_INTERRUPTED].contains(&EXIT_DRIFT)
        );
    }

    #[test]
    fn run_help_lists_every_code_run_returns() {
        for code in [
            0,
            EXIT_FAILED,
            EXIT_CONFIG,
            EXIT_DRIFT,
            EXIT_LOCKED,
            EXIT_INTERRUPTED,
        ] {
            assert!(
                RUN_EXIT_CODES.contains(&format!("\n  {code:<4} ")),
                "{code}"
            );
        }
    }
}
