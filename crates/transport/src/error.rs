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
        "{host}: connection lost while {during} (host rebooted, network down, or sshd killed); the host is now treated as unreachable"
    )]
    ConnectionLost { host: String, during: String },

    #[error("{host}: command did not finish within {after:?}: {command}")]
    CommandTimeout {
        host: String,
        command: String,
        after: Duration,
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
