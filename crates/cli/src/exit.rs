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
