//! Opening a cluster, the one way every command does it: the inventory (with `--playbook`), the
//! secrets and what they redact, the SSH pool and targets, the cluster lock and the interrupt
//! that lets a locked command stop cleanly.

use crate::exit::{EXIT_INTERRUPTED, config_error, config_failure};
use anyhow::{Result, anyhow};
use provision_engine::inventory::{Inventory, InventoryRules};
use provision_ops::lock::{self, LockGuard};
use provision_ops::{Cluster, OpsError};
use provision_playbook::compile::targets;
use provision_secrets::{IdentitySources, Redactor, Secrets, SecretsFile};
use provision_transport::ssh_config::SshConfig;
use provision_transport::{ConnectOptions, SshPool, Target};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Everything a command needs, loaded and checked before any connection.
pub struct Loaded {
    pub inv: Inventory,
    pub secrets: Secrets,
    pub redactor: Redactor,
}

/// The inventory, its playbook replaced by `playbook` when one is given.
pub fn inventory(cluster: &Path, playbook: Option<&Path>) -> Result<Inventory> {
    let mut inv = Inventory::load(cluster, &InventoryRules::default()).map_err(config_error)?;
    if let Some(p) = playbook {
        inv.playbook = Some(std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    }
    Ok(inv)
}

/// The inventory and its secrets, decrypted; their values are redacted from every output from
/// here on.
pub fn load(cluster: &Path, identity: Option<PathBuf>, playbook: Option<&Path>) -> Result<Loaded> {
    let inv = inventory(cluster, playbook)?;
    for w in &inv.warnings {
        say!("{w}");
    }
    let secrets = match &inv.secrets {
        None => Secrets::empty(),
        Some(path) => SecretsFile::load(path, &IdentitySources::from_env(identity))
            .map_err(|e| config_failure(format!("{}: {e}", path.display())))?,
    };
    if let (Some(path), Some(drift)) = (&inv.secrets, secrets.recipients_drift()) {
        say!(
            "warning: {}: the recipients file changed since the secrets were last written ({drift}); the next write asks for confirmation: check the keys, then `provision secrets rotate --yes {}`",
            path.display(),
            path.display()
        );
    }
    let redactor = secrets.redactor();
    crate::term::learn(&redactor);
    Ok(Loaded {
        inv,
        secrets,
        redactor,
    })
}

fn connect_options(inv: &Inventory) -> Result<ConnectOptions> {
    let mut o = ConnectOptions::new(inv.ssh.known_hosts.clone());
    o.policy = inv.ssh.host_key_policy;
    if let Some(t) = inv.ssh.connect_timeout {
        o.connect_timeout = t;
    }
    o.ssh_config = Arc::new(SshConfig::load_default().map_err(|e| anyhow!("{e}"))?);
    o.passphrase_prompt = Some(Arc::new(|path: &Path| {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        rpassword::prompt_password(format!("passphrase for {}: ", path.display()))
            .ok()
            .map(Zeroizing::new)
    }));
    Ok(o)
}

fn sudo_password(secrets: &Secrets) -> Option<Arc<Zeroizing<String>>> {
    secrets
        .get("sudo_password")
        .and_then(|v| v.as_str())
        .map(|s| Arc::new(Zeroizing::new(s.to_string())))
}

impl Loaded {
    /// The SSH pool (nothing connects yet) and every host as a target, with the secrets'
    /// `sudo_password`.
    pub fn connect(&self) -> Result<(Arc<SshPool>, Vec<Target>)> {
        let pool = SshPool::new(connect_options(&self.inv)?).map_err(|e| anyhow!("{e}"))?;
        Ok((
            Arc::new(pool),
            targets(&self.inv, sudo_password(&self.secrets)),
        ))
    }
}

/// A cluster opened for a day-2 command.
pub struct Opened {
    pub cluster: Arc<Cluster>,
    pub secrets_path: Option<PathBuf>,
    pub identity: Option<PathBuf>,
    /// The secrets' `backup_key`: authenticates backups.
    pub backup_key: Option<Zeroizing<String>>,
}

/// Loads and connects the cluster for a day-2 command; what it prints is redacted with
/// everything the command learns later (a new backup key) too.
pub fn open(cluster: &Path, identity: Option<PathBuf>) -> Result<Opened> {
    let loaded = load(cluster, identity.clone(), None)?;
    let (pool, t) = loaded.connect()?;
    let backup_key = loaded
        .secrets
        .get(provision_ops::backup::BACKUP_KEY)
        .and_then(|v| v.as_str())
        .map(|k| Zeroizing::new(k.to_string()));
    Ok(Opened {
        backup_key,
        secrets_path: loaded.inv.secrets.clone(),
        cluster: Arc::new(
            Cluster::new(loaded.inv, pool, t, loaded.redactor.clone())
                .sharing(crate::term::known()),
        ),
        identity,
    })
}

/// A runtime for one command's async work.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Takes the cluster lock for a mutating command, telling what it had to override.
pub async fn take_lock(
    cluster: Arc<Cluster>,
    what: &str,
    force: bool,
    policy: lock::LockQuorum,
) -> Result<LockGuard, OpsError> {
    let (guard, rep) = lock::acquire(cluster, what, force, policy).await?;
    if policy == lock::LockQuorum::Reachable && !rep.skipped.is_empty() {
        say!(
            "warning: the cluster lock is held on {} only ({} did not answer): an operator who reaches only those could act at the same time",
            if rep.hosts.is_empty() {
                "no manager".to_string()
            } else {
                rep.hosts.join(", ")
            },
            rep.skipped
                .iter()
                .map(|(h, _)| h.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (h, o) in &rep.forced {
        say!("warning: removed the cluster lock of {o} on {h} (--force-unlock)");
    }
    for (h, o, age) in &rep.took_over {
        say!("warning: took over a stale cluster lock on {h} ({o}, not refreshed for {age} s)");
    }
    Ok(guard)
}

/// Shows each new note of the lock's refresh rounds; returns when the lock lost the managers
/// its policy needs (never, while it holds).
pub async fn watch_lock(mut health: tokio::sync::watch::Receiver<lock::LockHealth>) {
    let mut shown = std::collections::HashSet::new();
    loop {
        {
            let h = health.borrow_and_update();
            for n in &h.notes {
                if shown.insert(n.clone()) {
                    say!("warning: {n}");
                }
            }
            if h.lost {
                return;
            }
        }
        if health.changed().await.is_err() {
            // The refresher is gone (the lock is being released): nothing more to see.
            std::future::pending::<()>().await;
        }
    }
}

/// On the first Ctrl-C or SIGTERM (systemd, CI, kill): says so and calls `stop`, which makes
/// the command start nothing new (the running remote commands finish and the cluster lock is
/// released rather than left to go stale); a second Ctrl-C exits at once with 130. Shared by
/// `run` and the day-2 commands. Must be called inside the tokio runtime.
pub fn on_interrupt(stop: impl FnOnce() + Send + 'static) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler can always be installed");
        let got = tokio::select! {
            r = tokio::signal::ctrl_c() => r.is_ok(),
            r = term.recv() => r.is_some(),
        };
        if got {
            say!(
                "\ninterrupt: finishing the commands already running, then stopping (Ctrl-C again to abort now)"
            );
            stop();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        }
    })
}

/// Records the swarm's last good state (`.provision/last-good.json`, ignored by git) when a
/// leader lists it: after a successful run and after a day-2 command that changed the swarm's
/// members. Status and the quorum refusals count its managers when no leader answers. A failure
/// to record is said, never fatal.
pub async fn remember(cluster: &provision_ops::Cluster) {
    use provision_ops::record;
    let Some(r) = cluster.last_good_now().await else {
        return;
    };
    let path = match crate::state_dir::ensure(&cluster.inv.dir, "") {
        Ok(dir) => dir.join(record::FILE),
        Err(e) => {
            say!("cannot record the swarm's last good state next to the cluster file: {e}");
            return;
        }
    };
    if let Err(e) = record::save(&path, &r) {
        say!(
            "cannot record the swarm's last good state in {}: {e}",
            path.display()
        );
    }
}
