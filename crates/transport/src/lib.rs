//! SSH transport for provision: one pooled russh connection per host, commands as
//! channels on it, host keys checked against OpenSSH known_hosts files.
//!
//! The engine only sees the [`Transport`] and [`Connector`] traits; `russh` stays
//! inside this crate. [`fake::FakeTransport`] records commands for unit tests.

pub mod addr;
pub mod command;
pub mod error;
pub mod fake;
pub mod known_hosts;
mod resident;
pub mod shell;
pub mod ssh;
pub mod ssh_config;
pub mod upload;

pub use command::{Chunk, Command, Output, OutputSink, Stdin, Tail};
pub use error::TransportError;
pub use ssh::{Become, ConnectOptions, HostKeyPolicy, SshPool, SshSession, Target, TrustedKey};
pub use upload::{Upload, UploadOutcome, UploadSource};

use async_trait::async_trait;
use std::sync::Arc;

/// A connection to one host that can run commands and upload files.
#[async_trait]
pub trait Transport: Send + Sync {
    /// The inventory name of the host, for messages.
    fn host(&self) -> &str;

    /// Runs one command; several may run at once on the same connection.
    async fn run(&self, cmd: Command) -> Result<Output, TransportError>;

    /// Writes a file atomically (temp file next to it, then rename), skipping
    /// the transfer when the remote content and attributes already match.
    async fn upload(&self, up: Upload) -> Result<UploadOutcome, TransportError> {
        upload::upload_via_commands(self, up).await
    }
}

/// Opens (or reuses) the connection to a host.
#[async_trait]
pub trait Connector: Send + Sync {
    async fn connect(&self, target: &Target) -> Result<Arc<dyn Transport>, TransportError>;
}
