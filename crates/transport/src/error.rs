//! Typed transport errors: each names the host and says what to do next.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong between us and a host. A command that runs
/// and exits non-zero is not an error here: it comes back as an `Output`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error(
        "{host}: cannot connect to {addr}: {reason} (is the host up, and the address and port right?)"
    )]
    Unreachable {
        host: String,
        addr: String,
        reason: String,
    },

    /// This machine, not the host, is out of a resource (open files): the host
    /// is not marked unreachable, and the message names the local limit.
    #[error(
        "{host}: cannot connect to {addr}: {reason}: this machine ran out of file descriptors, the host is not at fault; \
         raise the open-files limit (`ulimit -n`, now {limit}) or lower --forks"
    )]
    LocalLimit {
        host: String,
        addr: String,
        reason: String,
        limit: String,
    },

    #[error(
        "{host}: no SSH answer from {addr} within {after:?} (is the host up? raise connect_timeout for slow networks)"
    )]
    ConnectTimeout {
        host: String,
        addr: String,
        after: Duration,
    },

    #[error(
        "{host}: unknown host key {key_type} {fingerprint}, and the host key policy is strict; \
         verify the fingerprint, then add it to {known_hosts} (or run once with host_key_policy = \"accept-new\")"
    )]
    HostKeyUnknown {
        host: String,
        key_type: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },

    #[error(
        "{host}: HOST KEY CHANGED: {file}:{line} pins {known_fingerprint}, but the host presented {presented_fingerprint}; \
         nothing was run on this host. If the server was really reinstalled, delete line {line} of {file} and connect again; \
         otherwise someone may be intercepting the connection"
    )]
    HostKeyChanged {
        host: String,
        file: PathBuf,
        line: usize,
        known_fingerprint: String,
        presented_fingerprint: String,
    },

    #[error(
        "{host}: host key {fingerprint} is marked @revoked at {file}:{line}; nothing was run on this host"
    )]
    HostKeyRevoked {
        host: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
    },

    #[error("cannot read known_hosts file {path}: {reason}")]
    KnownHosts { path: PathBuf, reason: String },

    #[error(
        "{host}: authentication as {user} failed; tried: {}. Add one of these keys to ~{user}/.ssh/authorized_keys on the host, \
         or set [ssh] identity in the cluster file",
        if tried.is_empty() { "no key (no identity file found and no ssh-agent)".to_string() } else { tried.join(", ") }
    )]
    AuthFailed {
        host: String,
        user: String,
        tried: Vec<String>,
    },

    #[error(
        "private key {path} is encrypted: set PROVISION_SSH_PASSPHRASE, load it into ssh-agent, or run from a terminal to be asked"
    )]
    KeyEncrypted { path: PathBuf },

    #[error("cannot load private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },

    #[error(
        "{host}: connection lost while {during} (host rebooted, network down, or sshd killed): its outcome is unknown; \
         the host is now treated as unreachable (the next run reads its state again)"
    )]
    ConnectionLost { host: String, during: String },

    #[error(
        "{host}: command did not finish within {after:?}{}: {command}",
        if *stopped { " and was stopped on the host" } else { "" }
    )]
    CommandTimeout {
        host: String,
        command: String,
        after: Duration,
        /// The host's `timeout` stopped it (its whole process group); false when the host did
        /// not answer, so the command may still run there.
        stopped: bool,
    },

    #[error(
        "{host}: sudo needs a password for {user} and none is configured: add `sudo_password` to the secrets file \
         (or a NOPASSWD sudoers entry on the host)"
    )]
    SudoPasswordRequired { host: String, user: String },

    #[error(
        "{host}: sudo rejected the configured password for {user}: fix `sudo_password` in the secrets file"
    )]
    SudoPasswordRejected { host: String, user: String },

    #[error("{host}: upload to {path} failed: {reason}")]
    Upload {
        host: String,
        path: String,
        reason: String,
    },

    #[error("{host}: SSH protocol error: {reason}")]
    Protocol { host: String, reason: String },

    #[error("{path}:{line}: {reason}")]
    SshConfig {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("cannot read {path}: {source}")]
    LocalIo {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The error for an I/O failure while connecting: EMFILE/ENFILE are this
/// machine's limit, anything else means the host is unreachable.
pub fn connect_io_error(host: &str, addr: &str, e: &std::io::Error) -> TransportError {
    // EMFILE (24) and ENFILE (23) have these numbers on Linux and the BSDs.
    if matches!(e.raw_os_error(), Some(23 | 24)) {
        return TransportError::LocalLimit {
            host: host.into(),
            addr: addr.into(),
            reason: e.to_string(),
            limit: open_files_limit().unwrap_or_else(|| "unknown".into()),
        };
    }
    TransportError::Unreachable {
        host: host.into(),
        addr: addr.into(),
        reason: e.to_string(),
    }
}

/// The soft open-files limit, from /proc (Linux); None elsewhere.
fn open_files_limit() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3).map(str::to_string)
}

impl TransportError {
    /// True when the host could not be reached or dropped off: the engine marks
    /// such hosts "unreachable" rather than "failed".
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable { .. }
                | TransportError::ConnectTimeout { .. }
                | TransportError::ConnectionLost { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_file_descriptors_is_not_the_hosts_fault() {
        let e = connect_io_error(
            "web-1",
            "10.0.0.1:22",
            &std::io::Error::from_raw_os_error(24),
        );
        assert!(!e.is_unreachable());
        let msg = e.to_string();
        assert!(
            msg.starts_with("web-1: cannot connect to 10.0.0.1:22: Too many open files (os error 24): this machine ran out of file descriptors, the host is not at fault; raise the open-files limit (`ulimit -n`, now "),
            "{msg}"
        );
        assert!(msg.ends_with(") or lower --forks"), "{msg}");
        assert!(
            !msg.contains("now unknown"),
            "the limit is read from /proc: {msg}"
        );
        let refused = connect_io_error(
            "web-1",
            "10.0.0.1:22",
            &std::io::Error::from_raw_os_error(111),
        );
        assert!(refused.is_unreachable());
        assert!(refused.to_string().contains("is the host up"));
    }
}
