//! What can go wrong in a day-2 operation: every error names the host and, for
//! commands, the command, its exit status and stderr, and says what to do next.

use provision_transport::TransportError;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{source}")]
    Transport {
        host: String,
        #[source]
        source: Box<TransportError>,
    },

    #[error("{host}: {what} failed ({status}): {stderr}\n  command: {command}\n  hint: {hint}")]
    Command {
        host: String,
        what: String,
        command: String,
        status: String,
        stderr: String,
        hint: String,
    },

    /// The operation would be unsafe (or pointless) now; nothing was changed.
    #[error("{reason}\n  hint: {hint}")]
    Refused { reason: String, hint: String },

    #[error(
        "the cluster is locked by {owner} (since {age_secs} s ago, lock on {host})\n  hint: wait for it to finish; if that process is gone, the lock goes stale after {stale_secs} s, or pass --force-unlock"
    )]
    Locked {
        host: String,
        owner: String,
        age_secs: u64,
        stale_secs: u64,
    },

    #[error("{what}: {reason}\n  hint: {hint}")]
    Unexpected {
        what: String,
        reason: String,
        hint: String,
    },

    #[error("timed out after {secs} s waiting for {what}\n  hint: {hint}")]
    Timeout {
        what: String,
        secs: u64,
        hint: String,
    },
}

impl OpsError {
    pub fn transport(host: &str, e: TransportError) -> Self {
        OpsError::Transport {
            host: host.to_string(),
            source: Box::new(e),
        }
    }

    pub fn refused(reason: impl Into<String>, hint: impl Into<String>) -> Self {
        OpsError::Refused {
            reason: reason.into(),
            hint: hint.into(),
        }
    }

    pub fn unexpected(what: impl Into<String>, reason: impl Into<String>) -> Self {
        OpsError::Unexpected {
            what: what.into(),
            reason: reason.into(),
            hint: "this is unexpected output from Docker; run the command by hand on the host to see more".into(),
        }
    }
}
