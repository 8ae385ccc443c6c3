//! The russh-based transport: connecting (retries, timeouts, host keys, keys and
//! agent, ProxyJump), one pooled connection per host, commands as channels, sudo.

use crate::command::{
    Chunk, Command, KILL_AFTER, Lines, Output, OutputSink, Stdin, Tail, sh_c, stopped_by_deadline,
};
use crate::error::TransportError;
use crate::known_hosts::{self, KnownHosts, Verdict};
use crate::resident::{Resident, ResidentError};
use crate::shell::quote;
use crate::ssh_config::{self, SshConfig};
use crate::{Connector, Transport};
use async_trait::async_trait;
use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::PublicKeyOrCertificate;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OnceCell, Semaphore};
use zeroize::Zeroizing;

/// What to do with a host key that no known_hosts file mentions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Refuse to connect.
    Strict,
    /// Record it in the cluster's known_hosts and connect (first contact only;
    /// a key that differs from a recorded one is always refused).
    #[default]
    AcceptNew,
}

/// How commands get root on a host.
#[derive(Clone, Default)]
pub enum Become {
    /// Run as the SSH user.
    #[default]
    No,
    /// `sudo`, non-interactively; the password (from the secrets file) is fed
    /// through stdin only when sudo asks for one.
    Sudo {
        password: Option<Arc<Zeroizing<String>>>,
    },
}

impl std::fmt::Debug for Become {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Become::No => f.write_str("No"),
            Become::Sudo { password } => write!(
                f,
                "Sudo {{ password: {} }}",
                if password.is_some() {
                    "<redacted>"
                } else {
                    "none"
                }
            ),
        }
    }
}

/// One host to reach. Unset fields fall back to `~/.ssh/config`, then defaults.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Inventory name, used in every message and as the ssh_config alias when
    /// `address` is empty.
    pub name: String,
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity: Option<PathBuf>,
    pub proxy_jump: Option<String>,
    pub become_: Become,
}

/// Asks for the passphrase of an encrypted key file (None: give up on that key).
pub type PassphrasePrompt = Arc<dyn Fn(&Path) -> Option<Zeroizing<String>> + Send + Sync>;

/// Settings shared by every connection of a run.
#[derive(Clone)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    /// Keep retrying refused or timed-out connects for this long (hosts still booting).
    pub retry_for: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_max: usize,
    /// Channels open at once per connection; OpenSSH's MaxSessions defaults to 10.
    pub max_channels: usize,
    /// Connection handshakes in flight at once across all hosts (sshd's MaxStartups
    /// and our own CPU both suffer from storms).
    pub max_connecting: usize,
    pub policy: HostKeyPolicy,
    /// The cluster's own known_hosts: read, and appended to under accept-new.
    pub known_hosts: PathBuf,
    /// Read-only extra files (the user's ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts).
    pub extra_known_hosts: Vec<PathBuf>,
    pub ssh_config: Arc<SshConfig>,
    /// Default SSH user when neither the target nor ssh_config says.
    pub default_user: String,
    /// ssh-agent socket; defaults to $SSH_AUTH_SOCK. None disables the agent.
    pub agent_socket: Option<PathBuf>,
    /// Send commands without stdin to a resident `sh` per channel instead of a new
    /// exec channel each (saves the login shell's start-up on every command).
    pub resident_shell: bool,
    /// Asked for the passphrase of an encrypted key (after $PROVISION_SSH_PASSPHRASE).
    pub passphrase_prompt: Option<PassphrasePrompt>,
}

impl ConnectOptions {
    /// Defaults that suit a run: strict on changed keys, accept-new on unknown ones.
    pub fn new(known_hosts: PathBuf) -> Self {
        let home = ssh_config::home_dir();
        let mut extra = Vec::new();
        if let Some(h) = &home {
            extra.push(h.join(".ssh/known_hosts"));
        }
        extra.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
        ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            retry_for: Duration::ZERO,
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            max_channels: 8,
            max_connecting: 32,
            policy: HostKeyPolicy::AcceptNew,
            known_hosts,
            extra_known_hosts: extra,
            ssh_config: Arc::new(SshConfig::default()),
            default_user: std::env::var("USER").unwrap_or_else(|_| "root".into()),
            agent_socket: std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            passphrase_prompt: None,
            resident_shell: true,
        }
    }
}

/// russh callback object: verifies the server key and remembers why it refused.
struct ClientHandler {
    label: String,
    host: String,
    port: u16,
    /// The run's known keys: the files loaded at start plus every key accepted since.
    known: Arc<RwLock<KnownHosts>>,
    trusted: Arc<Mutex<Vec<TrustedKey>>>,
    policy: HostKeyPolicy,
    record_to: PathBuf,
    refusal: Arc<Mutex<Option<TransportError>>>,
}

impl ClientHandler {
    fn refuse(&self, e: TransportError) -> Result<bool, russh::Error> {
        *self.refusal.lock().unwrap() = Some(e);
        Ok(false)
    }
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: &PublicKey = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                return self.refuse(TransportError::Protocol {
                    host: self.label.clone(),
                    reason: "the server presented a host certificate; provision pins plain host keys only".into(),
                });
            }
        };
        let fp = known_hosts::fingerprint(key);
        let verdict = self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .check(&self.host, self.port, key);
        match verdict {
            Verdict::Known => Ok(true),
            Verdict::Unknown => match self.policy {
                HostKeyPolicy::Strict => self.refuse(TransportError::HostKeyUnknown {
                    host: self.label.clone(),
                    key_type: key.algorithm().to_string(),
                    fingerprint: fp,
                    known_hosts: self.record_to.clone(),
                }),
                HostKeyPolicy::AcceptNew => {
                    match known_hosts::append(
                        &self.record_to,
                        &self.label,
                        &self.host,
                        self.port,
                        key,
                    ) {
                        Ok(line) => {
                            if let Some(line) = line {
                                // Every later path to this host:port in the run sees it.
                                self.known
                                    .write()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .add_text(&self.record_to, &line);
                                self.trusted.lock().unwrap().push(TrustedKey {
                                    host: self.label.clone(),
                                    fingerprint: fp.clone(),
                                    file: self.record_to.clone(),
                                });
                            }
                            tracing::info!(host = %self.label, fingerprint = %fp, file = %self.record_to.display(), "recorded new host key");
                            Ok(true)
                        }
                        Err(e) => self.refuse(e),
                    }
                }
            },
            refused => {
                let e = refused
                    .refusal(&self.label, key)
                    .expect("changed or revoked");
                self.refuse(e)
            }
        }
    }
}

/// How this session obtains root, decided once by probing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SudoMode {
    AlreadyRoot,
    NoPassword,
    Password,
}

/// One authenticated connection to a host. Cheap to share: commands open
/// channels on it concurrently, up to `max_channels` at a time.
pub struct SshSession {
    label: String,
    user: String,
    handle: Handle<ClientHandler>,
    channels: Semaphore,
    become_: Become,
    sudo_mode: OnceCell<SudoMode>,
    resident: bool,
    /// Idle resident shells, reused one command at a time each.
    idle: Mutex<Vec<Resident>>,
    nonce: String,
    // Keeps the bastion connection alive as long as this one.
    _jump: Option<Arc<SshSession>>,
}

/// Shared state of a run's connections: loaded keys and known_hosts, one
/// session per host, and the cap on simultaneous handshakes.
/// A host key trusted for the first time in this run (accept-new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub host: String,
    pub fingerprint: String,
    /// Where it was recorded.
    pub file: PathBuf,
}

pub struct SshPool {
    opts: ConnectOptions,
    known: Arc<RwLock<KnownHosts>>,
    trusted: Arc<Mutex<Vec<TrustedKey>>>,
    keys: Mutex<HashMap<PathBuf, Arc<PrivateKey>>>,
    sessions: Mutex<HashMap<String, Arc<OnceCell<Arc<SshSession>>>>>,
    connecting: Semaphore,
}

impl SshPool {
    pub fn new(opts: ConnectOptions) -> Result<Self, TransportError> {
        let mut files = vec![opts.known_hosts.clone()];
        files.extend(opts.extra_known_hosts.iter().cloned());
        let known = Arc::new(RwLock::new(KnownHosts::load(&files)?));
        let connecting = Semaphore::new(opts.max_connecting.max(1));
        Ok(SshPool {
            opts,
            known,
            trusted: Arc::default(),
            keys: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            connecting,
        })
    }

    pub fn options(&self) -> &ConnectOptions {
        &self.opts
    }

    /// Host keys trusted for the first time by this pool (accept-new), in order: the recap
    /// names them, so a person can compare the fingerprints.
    pub fn newly_trusted(&self) -> Vec<TrustedKey> {
        self.trusted.lock().unwrap().clone()
    }

    /// The session for `target`, connecting on first use. Concurrent callers for
    /// the same host share one connection attempt.
    pub fn session<'a>(
        &'a self,
        target: &'a Target,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Arc<SshSession>, TransportError>> + Send + 'a>,
    > {
        // Boxed because ProxyJump recurses into this function for the bastion.
        Box::pin(async move {
            let key = format!(
                "{}|{}|{:?}|{:?}",
                target.name, target.address, target.port, target.user
            );
            let cell = self
                .sessions
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .clone();
            let session = cell.get_or_try_init(|| self.open(target)).await?.clone();
            if session.handle.is_closed() {
                // A dead connection is not reused: the next call reconnects.
                self.sessions.lock().unwrap().remove(&key);
                return Err(TransportError::ConnectionLost {
                    host: target.name.clone(),
                    during: "reusing the connection".into(),
                });
            }
            Ok(session)
        })
    }

    async fn open(&self, target: &Target) -> Result<Arc<SshSession>, TransportError> {
        let alias = if target.address.is_empty() {
            target.name.as_str()
        } else {
            target.address.as_str()
        };
        let cfg = self.opts.ssh_config.resolve(alias);
        let host = cfg.host_name.clone().unwrap_or_else(|| alias.to_string());
        let port = target.port.or(cfg.port).unwrap_or(22);
        let user = target
            .user
            .clone()
            .or(cfg.user.clone())
            .unwrap_or_else(|| self.opts.default_user.clone());
        let label = target.name.clone();
        let jump_spec = target.proxy_jump.clone().or(cfg.proxy_jump.clone());

        let mut jump_session = None;
        let handle = if let Some(spec) = jump_spec.filter(|s| !s.eq_ignore_ascii_case("none")) {
            let hops =
                ssh_config::parse_proxy_jump(&spec).map_err(|reason| TransportError::Protocol {
                    host: label.clone(),
                    reason: format!("ProxyJump: {reason}"),
                })?;
            // The last hop is the one that opens the TCP forward to the target;
            // earlier hops chain through each other.
            let mut prev: Option<String> = None;
            let mut bastion = None;
            for hop in hops {
                let jt = Target {
                    name: hop.host.clone(),
                    address: hop.host.clone(),
                    port: hop.port,
                    user: hop.user.clone(),
                    identity: target.identity.clone(),
                    proxy_jump: Some(prev.clone().unwrap_or_else(|| "none".into())),
                    become_: Become::No,
                };
                prev = Some(format!(
                    "{}{}{}",
                    hop.user.map(|u| format!("{u}@")).unwrap_or_default(),
                    crate::addr::bracketed(&hop.host),
                    hop.port.map(|p| format!(":{p}")).unwrap_or_default()
                ));
                bastion = Some(self.session(&jt).await?);
            }
            let bastion = bastion.expect("at least one hop");
            let _permit = self
                .connecting
                .acquire()
                .await
                .expect("semaphore never closed");
            let ch = bastion
                .handle
                .channel_open_direct_tcpip(host.clone(), port as u32, "127.0.0.1", 0)
                .await
                .map_err(|e| TransportError::Unreachable {
                    host: label.clone(),
                    addr: format!(
                        "{} via {}",
                        crate::addr::with_port(&host, port),
                        bastion.label
                    ),
                    reason: e.to_string(),
                })?;
            let h = self
                .handshake(&label, &host, port, ch.into_stream())
                .await?;
            jump_session = Some(bastion);
            h
        } else {
            self.connect_tcp(&label, &host, port).await?
        };
        let mut handle = handle;
        self.authenticate(&mut handle, &label, &user, target, &cfg.identity_files)
            .await?;
        Ok(Arc::new(SshSession {
            label,
            user,
            handle,
            channels: Semaphore::new(self.opts.max_channels.max(1)),
            become_: target.become_.clone(),
            sudo_mode: OnceCell::new(),
            resident: self.opts.resident_shell,
            idle: Mutex::new(Vec::new()),
            nonce: session_nonce(),
            _jump: jump_session,
        }))
    }

    async fn connect_tcp(
        &self,
        label: &str,
        host: &str,
        port: u16,
    ) -> Result<Handle<ClientHandler>, TransportError> {
        let addr = crate::addr::with_port(host, port);
        let deadline = Instant::now() + self.opts.retry_for;
        let mut backoff = Duration::from_millis(250);
        loop {
            let attempt = async {
                let _permit = self
                    .connecting
                    .acquire()
                    .await
                    .expect("semaphore never closed");
                let tcp = match tokio::time::timeout(
                    self.opts.connect_timeout,
                    tokio::net::TcpStream::connect((host, port)),
                )
                .await
                {
                    Err(_) => {
                        return Err(TransportError::ConnectTimeout {
                            host: label.into(),
                            addr: addr.clone(),
                            after: self.opts.connect_timeout,
                        });
                    }
                    Ok(Err(e)) => return Err(crate::error::connect_io_error(label, &addr, &e)),
                    Ok(Ok(s)) => s,
                };
                let _ = tcp.set_nodelay(true);
                self.handshake(label, host, port, tcp).await
            };
            match attempt.await {
                Ok(h) => return Ok(h),
                Err(e) if e.is_unreachable() && Instant::now() + backoff < deadline => {
                    tracing::debug!(host = label, error = %e, "connect failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn handshake<S>(
        &self,
        label: &str,
        host: &str,
        port: u16,
        stream: S,
    ) -> Result<Handle<ClientHandler>, TransportError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let refusal = Arc::new(Mutex::new(None));
        let handler = ClientHandler {
            label: label.to_string(),
            host: host.to_string(),
            port,
            known: self.known.clone(),
            trusted: self.trusted.clone(),
            policy: self.opts.policy,
            record_to: self.opts.known_hosts.clone(),
            refusal: refusal.clone(),
        };
        let config = Arc::new(self.client_config(host, port));
        let addr = crate::addr::with_port(host, port);
        let res = tokio::time::timeout(
            self.opts.connect_timeout,
            client::connect_stream(config, stream, handler),
        )
        .await;
        let refused = refusal.lock().unwrap().take();
        match res {
            Err(_) => Err(TransportError::ConnectTimeout {
                host: label.into(),
                addr,
                after: self.opts.connect_timeout,
            }),
            Ok(Ok(h)) => Ok(h),
            Ok(Err(e)) => Err(refused.unwrap_or_else(|| classify_connect_error(label, &addr, e))),
        }
    }

    fn client_config(&self, host: &str, port: u16) -> client::Config {
        let mut preferred = russh::Preferred::default();
        // Ask for a host key type we have pinned first, as OpenSSH does, so a host
        // known by its RSA key is not mistaken for one with a changed key.
        let known = self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .known_algorithms(host, port);
        if !known.is_empty() {
            let mut order: Vec<Algorithm> = Vec::new();
            for k in &known {
                if k.clone().is_rsa() {
                    order.extend([
                        Algorithm::Rsa {
                            hash: Some(HashAlg::Sha512),
                        },
                        Algorithm::Rsa {
                            hash: Some(HashAlg::Sha256),
                        },
                    ]);
                } else {
                    order.push(k.clone());
                }
            }
            for a in preferred.key.iter() {
                if !order.contains(a) {
                    order.push(a.clone());
                }
            }
            preferred.key = Cow::Owned(order);
        }
        client::Config {
            preferred,
            keepalive_interval: Some(self.opts.keepalive_interval),
            keepalive_max: self.opts.keepalive_max,
            // No inactivity timeout: a silent apt-get install may run for minutes.
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        }
    }

    fn load_key(&self, path: &Path) -> Result<Arc<PrivateKey>, TransportError> {
        if let Some(k) = self.keys.lock().unwrap().get(path) {
            return Ok(k.clone());
        }
        let key = match russh::keys::load_secret_key(path, None) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                let pass = std::env::var("PROVISION_SSH_PASSPHRASE")
                    .ok()
                    .filter(|p| !p.is_empty())
                    .map(Zeroizing::new)
                    .or_else(|| self.opts.passphrase_prompt.as_ref().and_then(|p| p(path)))
                    .ok_or_else(|| TransportError::KeyEncrypted {
                        path: path.to_path_buf(),
                    })?;
                russh::keys::load_secret_key(path, Some(pass.as_str())).map_err(|e| {
                    TransportError::Key {
                        path: path.to_path_buf(),
                        reason: format!("{e} (wrong passphrase?)"),
                    }
                })?
            }
            Err(e) => {
                return Err(TransportError::Key {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        };
        let key = Arc::new(key);
        self.keys
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), key.clone());
        Ok(key)
    }

    async fn authenticate(
        &self,
        handle: &mut Handle<ClientHandler>,
        label: &str,
        user: &str,
        target: &Target,
        config_identities: &[PathBuf],
    ) -> Result<(), TransportError> {
        let lost = |e: russh::Error| TransportError::ConnectionLost {
            host: label.into(),
            during: format!("authenticating: {e}"),
        };
        let mut tried: Vec<String> = Vec::new();
        let mut encrypted_error = None;

        // An identity named in the inventory is the user's explicit choice: use it
        // alone (like IdentitiesOnly), so a wrong key is reported, not masked.
        let explicit = target.identity.is_some();
        let mut files: Vec<PathBuf> = Vec::new();
        if let Some(p) = &target.identity {
            files.push(PathBuf::from(ssh_config::expand_tilde(
                &p.to_string_lossy(),
            )));
        } else {
            files.extend(config_identities.iter().cloned());
            if let Some(home) = ssh_config::home_dir() {
                for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                    files.push(home.join(".ssh").join(name));
                }
            }
        }

        if let (false, Some(sock)) = (explicit, &self.opts.agent_socket)
            && let Ok(mut agent) = AgentClient::connect_uds(sock).await
        {
            {
                let ids = agent.request_identities().await.unwrap_or_default();
                for id in ids {
                    let russh::keys::agent::AgentIdentity::PublicKey { key, comment } = id else {
                        continue;
                    };
                    let hash = if key.algorithm().is_rsa() {
                        Some(rsa_hash(handle).await)
                    } else {
                        None
                    };
                    let res = handle
                        .authenticate_publickey_with(user, key.clone(), hash, &mut agent)
                        .await;
                    tried.push(format!(
                        "agent key {} ({})",
                        known_hosts::fingerprint(&key),
                        comment
                    ));
                    if matches!(res, Ok(client::AuthResult::Success)) {
                        return Ok(());
                    }
                    if handle.is_closed() {
                        return Err(lost(russh::Error::Disconnect));
                    }
                }
            }
        }

        for path in files {
            if !explicit && !path.exists() {
                continue;
            }
            let key = match self.load_key(&path) {
                Ok(k) => k,
                Err(e @ TransportError::KeyEncrypted { .. }) => {
                    tried.push(format!("{} (encrypted, no passphrase)", path.display()));
                    encrypted_error = Some(e);
                    continue;
                }
                Err(e) if explicit => return Err(e),
                Err(e) => {
                    tried.push(format!("{} (unreadable: {e})", path.display()));
                    continue;
                }
            };
            // RSA: the server's preferred SHA-2 variant first, then the other one
            // (server-sig-algs does not always reflect PubkeyAcceptedAlgorithms).
            let hashes = if key.algorithm().is_rsa() {
                let best = rsa_hash(handle).await;
                let other = if best == HashAlg::Sha512 {
                    HashAlg::Sha256
                } else {
                    HashAlg::Sha512
                };
                vec![Some(best), Some(other)]
            } else {
                vec![None]
            };
            tried.push(path.display().to_string());
            for hash in hashes {
                let res = handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
                    .await
                    .map_err(lost)?;
                if res.success() {
                    return Ok(());
                }
            }
        }
        Err(encrypted_error.unwrap_or(TransportError::AuthFailed {
            host: label.into(),
            user: user.into(),
            tried,
        }))
    }
}

/// RSA signatures use SHA-2 (rsa-sha2-512/256), never SHA-1: OpenSSH >= 8.8
/// refuses ssh-rsa, and a server that does not advertise gets SHA-512.
async fn rsa_hash(handle: &Handle<ClientHandler>) -> HashAlg {
    match handle.best_supported_rsa_hash().await {
        Ok(Some(Some(h))) => h,
        _ => HashAlg::Sha512,
    }
}

fn classify_connect_error(label: &str, addr: &str, e: russh::Error) -> TransportError {
    match e {
        russh::Error::IO(io) => crate::error::connect_io_error(label, addr, &io),
        russh::Error::Disconnect | russh::Error::HUP => TransportError::Unreachable {
            host: label.into(),
            addr: addr.into(),
            reason: "the server closed the connection during the handshake".into(),
        },
        other => TransportError::Protocol {
            host: label.into(),
            reason: other.to_string(),
        },
    }
}

#[async_trait]
impl Connector for SshPool {
    async fn connect(&self, target: &Target) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(self.session(target).await? as Arc<dyn Transport>)
    }
}

// sudo prints this prompt to stderr when it reads the password; "-p ''" would
// hide whether it asked at all.
const SUDO_PROMPT: &str = "[provision-sudo-password]";

impl SshSession {
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Decides once per connection how to become root: not at all (already
    /// root), `sudo -n`, or `sudo -S` with the configured password.
    async fn sudo_mode(&self) -> Result<SudoMode, TransportError> {
        let Become::Sudo { password } = &self.become_ else {
            return Ok(SudoMode::AlreadyRoot);
        };
        self.sudo_mode
            .get_or_try_init(|| async {
                let probe = self.exec_raw("[ \"$(id -u)\" = 0 ] && echo root || { sudo -n true 2>/dev/null && echo nopasswd || echo password; }".into(), Stdin::Empty, None, None, None).await?;
                match probe.stdout_str().trim() {
                    "root" => Ok(SudoMode::AlreadyRoot),
                    "nopasswd" => Ok(SudoMode::NoPassword),
                    _ => {
                        let Some(pw) = password else {
                            return Err(TransportError::SudoPasswordRequired { host: self.label.clone(), user: self.user.clone() });
                        };
                        let check = self
                            .exec_raw(
                                format!("sudo -k -S -p {} true", quote(SUDO_PROMPT)),
                                Stdin::bytes(format!("{}\n", pw.as_str())),
                                Some(Duration::from_secs(30)),
                                None,
                                None,
                            )
                            .await?;
                        if check.success() {
                            Ok(SudoMode::Password)
                        } else {
                            Err(TransportError::SudoPasswordRejected { host: self.label.clone(), user: self.user.clone() })
                        }
                    }
                }
            })
            .await
            .copied()
    }

    /// The exact command line sent to sshd for `script`, and the stdin prefix.
    fn wire(
        &self,
        script: &str,
        mode: SudoMode,
        deadline: Option<Duration>,
    ) -> (String, Option<Vec<u8>>) {
        let inner = sh_c(script, deadline);
        match (mode, &self.become_) {
            (SudoMode::AlreadyRoot, _) => (inner, None),
            (SudoMode::NoPassword, _) => (format!("sudo -n -- {inner}"), None),
            (SudoMode::Password, Become::Sudo { password: Some(pw) }) => {
                // -k: always ask, so the password line is always consumed by sudo
                // and never reaches the command's own stdin.
                (
                    format!("sudo -k -S -p {} -- {inner}", quote(SUDO_PROMPT)),
                    Some(format!("{}\n", pw.as_str()).into_bytes()),
                )
            }
            (SudoMode::Password, _) => (format!("sudo -n -- {inner}"), None),
        }
    }

    async fn exec_raw(
        &self,
        wire: String,
        stdin: Stdin,
        timeout: Option<Duration>,
        sink: Option<OutputSink>,
        tail: Option<Tail>,
    ) -> Result<Output, TransportError> {
        let _permit = self
            .channels
            .acquire()
            .await
            .expect("semaphore never closed");
        let short = summarize(&wire);
        let lost = |e: russh::Error| {
            if self.handle.is_closed() {
                TransportError::ConnectionLost {
                    host: self.label.clone(),
                    during: format!("running `{short}`"),
                }
            } else {
                TransportError::Protocol {
                    host: self.label.clone(),
                    reason: format!("{e} while running `{short}`"),
                }
            }
        };
        let channel = self.handle.channel_open_session().await.map_err(lost)?;
        channel.exec(true, wire.into_bytes()).await.map_err(lost)?;
        let (mut rx, tx) = channel.split();
        // Stdin is written by its own task so that output is drained at the same
        // time: an unread channel stalls the whole connection.
        let writer = tokio::spawn(async move {
            let res = match stdin {
                Stdin::Empty => Ok(()),
                Stdin::Bytes(b) => tx.data(&b[..]).await,
                Stdin::Stream(s) => tx.data(s).await,
            };
            let _ = tx.eof().await;
            (res, tx)
        });
        let read = async {
            let mut out = Output::default();
            let (mut out_lines, mut err_lines) = (Lines::default(), Lines::default());
            while let Some(msg) = rx.wait().await {
                match msg {
                    ChannelMsg::Data { data } => match &sink {
                        // A closed sink means nobody reads any more: drop the output.
                        Some(s) => drop(s.send(Chunk::Stdout(data.to_vec()))),
                        None => {
                            out.stdout.extend_from_slice(&data);
                            out_lines.feed(&out.stdout, tail.as_ref());
                        }
                    },
                    ChannelMsg::ExtendedData { data, ext: 1 } => match &sink {
                        Some(s) => drop(s.send(Chunk::Stderr(data.to_vec()))),
                        None => {
                            out.stderr.extend_from_slice(&data);
                            err_lines.feed(&out.stderr, tail.as_ref());
                        }
                    },
                    ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
                    ChannelMsg::ExitSignal {
                        signal_name,
                        error_message,
                        ..
                    } => {
                        out.exit_signal = Some(format!("{signal_name:?}"));
                        if !error_message.is_empty() {
                            out.stderr.extend_from_slice(error_message.as_bytes());
                        }
                    }
                    _ => {}
                }
            }
            out
        };
        let started = Instant::now();
        let out = match timeout {
            None => read.await,
            // The host's own `timeout` stops the command at `t`; this one is for a host that
            // does not answer at all by then.
            Some(t) => match tokio::time::timeout(t + UNANSWERED, read).await {
                Ok(o) => o,
                Err(_) => {
                    writer.abort();
                    return Err(TransportError::CommandTimeout {
                        host: self.label.clone(),
                        command: short,
                        after: t,
                        stopped: false,
                    });
                }
            },
        };
        if let Some(t) = timeout
            && stopped_by_deadline(out.exit_status, t, started.elapsed())
        {
            writer.abort();
            return Err(TransportError::CommandTimeout {
                host: self.label.clone(),
                command: short,
                after: t,
                stopped: true,
            });
        }
        let _ = writer.await;
        if out.exit_status.is_none() && out.exit_signal.is_none() {
            return Err(if self.handle.is_closed() {
                TransportError::ConnectionLost {
                    host: self.label.clone(),
                    during: format!("running `{short}`"),
                }
            } else {
                TransportError::Protocol {
                    host: self.label.clone(),
                    reason: format!(
                        "channel closed without an exit status while running `{short}`"
                    ),
                }
            });
        }
        Ok(out)
    }
}

impl SshSession {
    /// Runs a stdin-less command on an idle resident shell, starting one if none is idle.
    async fn run_resident(
        &self,
        script: &str,
        mode: SudoMode,
        timeout: Option<Duration>,
        tail: Option<&Tail>,
    ) -> Result<Output, TransportError> {
        let _permit = self
            .channels
            .acquire()
            .await
            .expect("semaphore never closed");
        let short = summarize(script);
        let lost = |detail: String| {
            if self.handle.is_closed() {
                TransportError::ConnectionLost {
                    host: self.label.clone(),
                    during: format!("running `{short}`"),
                }
            } else {
                TransportError::Protocol {
                    host: self.label.clone(),
                    reason: format!("resident shell: {detail} while running `{short}`"),
                }
            }
        };
        let idle = self.idle.lock().unwrap().pop();
        let mut resident = match idle {
            Some(r) => r,
            None => {
                // The resident is itself `sh`, started the way any command is (sudo included).
                let (wire, prefix) = self.wire_shell(mode);
                let channel = self
                    .handle
                    .channel_open_session()
                    .await
                    .map_err(|e| lost(e.to_string()))?;
                channel
                    .exec(true, wire.into_bytes())
                    .await
                    .map_err(|e| lost(e.to_string()))?;
                let (rx, tx) = channel.split();
                if let Some(p) = prefix {
                    tx.data_bytes(p).await.map_err(|e| lost(e.to_string()))?;
                }
                Resident::new(tx, rx, self.nonce.clone())
            }
        };
        let started = Instant::now();
        let res = match timeout {
            None => resident.run(script, None, tail).await,
            Some(t) => {
                match tokio::time::timeout(t + UNANSWERED, resident.run(script, timeout, tail))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => {
                        // The shell is busy with the stuck command: discard it.
                        resident.close().await;
                        return Err(TransportError::CommandTimeout {
                            host: self.label.clone(),
                            command: short,
                            after: t,
                            stopped: false,
                        });
                    }
                }
            }
        };
        match res {
            Ok(out) => {
                // The shell itself is free again, also after its command was stopped.
                self.idle.lock().unwrap().push(resident);
                match timeout {
                    Some(t) if stopped_by_deadline(out.exit_status, t, started.elapsed()) => {
                        Err(TransportError::CommandTimeout {
                            host: self.label.clone(),
                            command: short,
                            after: t,
                            stopped: true,
                        })
                    }
                    _ => Ok(out),
                }
            }
            Err(ResidentError::Closed) => Err(lost("the shell ended".into())),
            Err(ResidentError::Send(e)) => Err(lost(e)),
        }
    }

    /// How to start a resident shell: like [`SshSession::wire`] without `-c SCRIPT`.
    fn wire_shell(&self, mode: SudoMode) -> (String, Option<Vec<u8>>) {
        match (mode, &self.become_) {
            (SudoMode::AlreadyRoot, _) => ("sh".into(), None),
            (SudoMode::Password, Become::Sudo { password: Some(pw) }) => (
                format!("sudo -k -S -p {} -- sh", quote(SUDO_PROMPT)),
                Some(format!("{}\n", pw.as_str()).into_bytes()),
            ),
            (SudoMode::NoPassword | SudoMode::Password, _) => ("sudo -n -- sh".into(), None),
        }
    }
}

/// How long past a command's deadline provision waits for the host's answer (the host's
/// `timeout` has stopped it by then, KILL included) before it treats the host as not answering.
const UNANSWERED: Duration = Duration::from_secs(KILL_AFTER.as_secs() + 5);

/// Marker nonce of a session's resident shells: unpredictable to command output.
fn session_nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// First line of a command, for error messages. Not shortened here: a cut could split a
/// secret (a learnt token) so that redaction no longer finds it; the output layer shortens
/// after redacting (`Redacted::shortened`).
fn summarize(wire: &str) -> String {
    wire.lines().next().unwrap_or("").to_string()
}

#[async_trait]
impl Transport for SshSession {
    fn host(&self) -> &str {
        &self.label
    }

    async fn run(&self, cmd: Command) -> Result<Output, TransportError> {
        // The timeout covers everything, waiting for a channel included: a host so
        // starved that it cannot even open one must not stall the run forever.
        match cmd.timeout {
            None => self.run_inner(cmd).await,
            Some(t) => {
                let short = summarize(&cmd.script);
                // The inner timeouts fire first and clean up; this one is the backstop.
                match tokio::time::timeout(
                    t + UNANSWERED + Duration::from_secs(5),
                    self.run_inner(cmd),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(TransportError::CommandTimeout {
                        host: self.label.clone(),
                        command: short,
                        after: t,
                        stopped: false,
                    }),
                }
            }
        }
    }
}

impl SshSession {
    async fn run_inner(&self, cmd: Command) -> Result<Output, TransportError> {
        let mode = self.sudo_mode().await?;
        if self.resident && matches!(cmd.stdin, Stdin::Empty) && cmd.output_to.is_none() {
            return self
                .run_resident(&cmd.script, mode, cmd.timeout, cmd.tail.as_ref())
                .await;
        }
        let (wire, prefix) = self.wire(&cmd.script, mode, cmd.timeout);
        let stdin = match prefix {
            None => cmd.stdin,
            Some(mut p) => match cmd.stdin {
                Stdin::Empty => Stdin::bytes(p),
                Stdin::Bytes(b) => {
                    p.extend_from_slice(&b);
                    Stdin::bytes(p)
                }
                Stdin::Stream(s) => {
                    use tokio::io::AsyncReadExt;
                    Stdin::Stream(Box::pin(std::io::Cursor::new(Zeroizing::new(p)).chain(s)))
                }
            },
        };
        let out = self
            .exec_raw(wire, stdin, cmd.timeout, cmd.output_to, cmd.tail)
            .await?;
        if mode == SudoMode::Password
            && out.exit_status == Some(1)
            && String::from_utf8_lossy(&out.stderr).contains("incorrect password")
        {
            return Err(TransportError::SudoPasswordRejected {
                host: self.label.clone(),
                user: self.user.clone(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn become_debug_never_shows_password() {
        let b = Become::Sudo {
            password: Some(Arc::new(Zeroizing::new("hunter2".into()))),
        };
        assert_eq!(format!("{b:?}"), "Sudo { password: <redacted> }");
    }

    #[test]
    fn summarize_keeps_the_whole_first_line() {
        assert_eq!(summarize("a\nb"), "a");
        assert_eq!(summarize(&"x".repeat(200)).len(), 200);
    }
}
