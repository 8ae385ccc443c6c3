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

    /// A multi-line script shows its first line (the one that failed, mostly).
    #[error(
        "{host}: {what} failed ({status}): {stderr}\n  command: {}\n  hint: {hint}",
        first_line(command)
    )]
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

    /// Too few managers granted the cluster lock for it to exclude another operator.
    #[error(
        "the cluster lock needs a majority of the managers ({needed} of {managers}), and {} granted it{}\n  hint: bring the managers back or check the network to them; when the swarm lost its quorum, `provision recover` and `provision restore` work with the managers that answer",
        if granted.is_empty() { "none".to_string() } else { format!("only {}", granted.join(", ")) },
        if unreachable.is_empty() { String::new() } else { format!(" (no answer from {})", unreachable.join(", ")) }
    )]
    NoLockMajority {
        granted: Vec<String>,
        unreachable: Vec<String>,
        needed: usize,
        managers: usize,
    },

    /// Ctrl-C or SIGTERM: the commands that were running finished, nothing new started.
    #[error(
        "interrupted: the commands that were running finished, and the next one ({next}) was not started\n  hint: `provision status` shows where the swarm is; run the command again to finish"
    )]
    Interrupted { next: String },

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

fn first_line(script: &str) -> String {
    match script.split_once('\n') {
        Some((first, _)) => format!("{first} …"),
        None => script.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_errors_show_the_first_line_of_a_script() {
        let e = OpsError::Command {
            host: "m1".into(),
            what: "joining as manager".into(),
            command: "out=$(curl x) && exit 0\nrc=$?".into(),
            status: "exit status 1".into(),
            stderr: "the join did not finish: error".into(),
            hint: "check port 2377".into(),
        };
        assert_eq!(
            e.to_string(),
            "m1: joining as manager failed (exit status 1): the join did not finish: error\n  command: out=$(curl x) && exit 0 …\n  hint: check port 2377"
        );
    }
}
