//! The day-2 subcommands (`status`, `ps`, `logs`, `exec`, `drain`, `activate`,
//! `remove-node`, `backup`, `restore`, `recover`, `rollback`): argument parsing, the cluster
//! lock around every mutating one, and output for people or JSON.

use crate::cluster::{Opened, on_interrupt, open, runtime, take_lock, watch_lock};
use crate::exit::{EXIT_FAILED, config_failure, ok_or_failed, passed_on, report};
use crate::render::{Output, table};
use anyhow::{Context, Result, anyhow};
use provision_ops::lock;
use provision_ops::{Cluster, OpsError, backup, nodes, recover, services, stacks, status};
use provision_secrets::{EncryptionMode, IdentitySources, SecretsFile};
use provision_transport::Chunk;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Common {
    /// The cluster file (inventory).
    pub cluster: PathBuf,
    /// Identity for the secrets file (age key file or SSH private key).
    #[arg(long, env = "PROVISION_IDENTITY")]
    pub identity: Option<PathBuf>,
}

impl Common {
    fn open(&self) -> Result<Opened> {
        open(&self.cluster, self.identity.clone())
    }
}

#[derive(clap::Args, Debug)]
pub struct LockArgs {
    /// Remove another operator's cluster lock first (only when you know that run is gone).
    #[arg(long)]
    pub force_unlock: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum OpsCommand {
    /// Nodes, managers' quorum and services of the swarm, with warnings (exit 1 when quorum is lost or there is no swarm).
    Status {
        #[command(flatten)]
        common: Common,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        output: Output,
    },
    /// Where a service's tasks run (SERVICE may omit the stack prefix: `web` for `demo_web`).
    Ps {
        #[command(flatten)]
        common: Common,
        service: String,
        /// Include finished and failed tasks.
        #[arg(long)]
        all: bool,
    },
    /// A service's logs, through a reachable manager.
    Logs {
        #[command(flatten)]
        common: Common,
        service: String,
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines of each task.
        #[arg(long)]
        tail: Option<u32>,
    },
    /// Run a command in a running container of a service (e.g. a migration); exits with its status.
    Exec {
        #[command(flatten)]
        common: Common,
        service: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Move every task off a node (availability drain) and wait until they moved.
    Drain {
        #[command(flatten)]
        common: Common,
        host: String,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Let a drained or paused node take tasks again.
    Activate {
        #[command(flatten)]
        common: Common,
        host: String,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Take a node out of the swarm: drain, demote (managers), leave, node rm. Refused if it would break quorum.
    RemoveNode {
        #[command(flatten)]
        common: Common,
        host: String,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Back up the swarm state (raft) of a manager into an age-encrypted file.
    Backup {
        #[command(flatten)]
        common: Common,
        /// Where to write the encrypted backup.
        #[arg(short, long)]
        output: PathBuf,
        /// Accept that the control plane pauses (1 or 2 managers).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Restore a backup onto a manager as a new swarm; the other nodes re-join it.
    Restore {
        #[command(flatten)]
        common: Common,
        /// A file written by `provision backup`.
        file: PathBuf,
        /// The manager to restore onto; it must have the address the backup was
        /// taken at (Docker's limit). Default: the inventory manager with that address.
        #[arg(long)]
        to: Option<String>,
        /// Restore even over a healthy swarm or another swarm (what it replaces is named), or a
        /// backup that cannot be authenticated. Never a backup whose code does not match.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Put a versioned stack back on the compose file and .env deployed before its last change
    /// (a second rollback returns); the database is not restored.
    Rollback {
        #[command(flatten)]
        common: Common,
        /// The stack (default: the built-in playbook's, `stack` in [vars], else appwrite).
        #[arg(long)]
        stack: Option<String>,
        /// Its directory on the managers (default: /opt/provision/stacks/STACK).
        #[arg(long)]
        dir: Option<String>,
        /// How long to wait for the services to converge, in seconds.
        #[arg(long, default_value_t = 600)]
        wait_timeout: u64,
        /// Go ahead: without it, rollback says which versions it would swap, and stops.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Recover from a lost quorum: a surviving manager forms a new swarm, the others re-join.
    Recover {
        #[command(flatten)]
        common: Common,
        /// The surviving manager to recover through (default: the one with the newest raft state).
        #[arg(long)]
        from: Option<String>,
        /// Go ahead: without it, recover says which manager it recovers through and which
        /// managers it drops as dead, and stops.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
}

/// Runs a mutating operation under the cluster lock, held as `policy` says: `recover` and
/// `restore` take it on the managers that answer, every other command needs a majority.
fn locked<T>(
    o: &Opened,
    what: &str,
    force: bool,
    policy: lock::LockQuorum,
    op: impl AsyncFnOnce(&Cluster) -> Result<T, OpsError>,
) -> Result<Result<T, u8>> {
    let rt = runtime()?;
    Ok(rt.block_on(async {
        // Ctrl-C and SIGTERM as for `provision run`: a backup's Docker restart included, the
        // running remote commands finish, then the lock is released and the exit is 130.
        let cluster = o.cluster.clone();
        let signals = on_interrupt(move || cluster.interrupt());
        let guard = match take_lock(o.cluster.clone(), what, force, policy).await {
            Ok(g) => g,
            Err(e) => return Err(report(e)),
        };
        // A day-2 command finishes what it started; the notes say what happened to the lock.
        let watcher = tokio::spawn(watch_lock(guard.health()));
        let res = op(&o.cluster).await;
        watcher.abort();
        guard.release().await;
        signals.abort();
        res.map_err(report)
    }))
}

pub fn run(cmd: OpsCommand) -> Result<u8> {
    match cmd {
        OpsCommand::Status { common, output } => {
            let o = common.open()?;
            let st = match runtime()?.block_on(status::status(&o.cluster)) {
                Ok(s) => s,
                Err(e) => return Ok(report(e)),
            };
            let unhealthy = st.quorum.as_ref().is_none_or(|q| !q.ok);
            match output {
                Output::Json => {
                    show!("{}", serde_json::to_string_pretty(&st)?)
                }
                Output::Text => crate::term::out(&status_text(&st)),
            }
            Ok(ok_or_failed(!unhealthy))
        }
        OpsCommand::Ps {
            common,
            service,
            all,
        } => {
            let o = common.open()?;
            let (name, tasks) = match runtime()?.block_on(services::ps(&o.cluster, &service, all)) {
                Ok(x) => x,
                Err(e) => return Ok(report(e)),
            };
            let mut rows = vec![vec![
                "TASK".to_string(),
                "HOST".into(),
                "NODE".into(),
                "DESIRED".into(),
                "CURRENT".into(),
                "IMAGE".into(),
                "ERROR".into(),
            ]];
            for p in &tasks {
                rows.push(vec![
                    p.task.name.clone(),
                    p.host.clone().unwrap_or_else(|| "-".into()),
                    p.task.node.clone(),
                    p.task.desired_state.clone(),
                    p.task.current_state.clone(),
                    p.task.image.clone(),
                    p.task.error.clone(),
                ]);
            }
            show!("{name}: {} task(s)", tasks.len());
            crate::term::out(&table(&rows));
            Ok(0)
        }
        OpsCommand::Logs {
            common,
            service,
            follow,
            tail,
        } => {
            let o = common.open()?;
            let rt = runtime()?;
            let code = rt.block_on(async {
                let (tx, printer) = printer();
                let r = services::logs(&o.cluster, &service, follow, tail, tx).await;
                let _ = printer.await;
                r
            });
            Ok(match code {
                Ok(c) => ok_or_failed(c == 0),
                Err(e) => report(e),
            })
        }
        OpsCommand::Exec {
            common,
            service,
            command,
        } => {
            let o = common.open()?;
            let rt = runtime()?;
            let code = rt.block_on(async {
                let (name, placed) = services::exec_target(&o.cluster, &service).await?;
                say!(
                    "exec in {} ({}) on {}: {}",
                    placed.task.name,
                    name,
                    placed.host.as_deref().unwrap_or("?"),
                    command.join(" ")
                );
                let (tx, printer) = printer();
                let r = services::exec(&o.cluster, &placed, &command, tx).await;
                let _ = printer.await;
                r
            });
            Ok(match code {
                Ok(c) => passed_on(c),
                Err(e) => report(e),
            })
        }
        OpsCommand::Drain { common, host, lock } => {
            availability(common, host, lock, Availability::Drain)
        }
        OpsCommand::Activate { common, host, lock } => {
            availability(common, host, lock, Availability::Active)
        }
        OpsCommand::RemoveNode { common, host, lock } => {
            let o = common.open()?;
            match locked(
                &o,
                &format!("provision remove-node {host}"),
                lock.force_unlock,
                lock::LockQuorum::Majority,
                async |c| {
                    let r = nodes::remove_node(c, &host).await?;
                    crate::cluster::remember(c).await;
                    Ok(r)
                },
            )? {
                Ok(r) => {
                    for s in r.steps {
                        say!("{s}");
                    }
                    Ok(0)
                }
                Err(code) => Ok(code),
            }
        }
        OpsCommand::Backup {
            common,
            output,
            yes,
            lock,
        } => backup_cmd(common, output, yes, lock),
        OpsCommand::Restore {
            common,
            file,
            to,
            force,
            lock,
        } => restore_cmd(common, file, to, force, lock),
        OpsCommand::Rollback {
            common,
            stack,
            dir,
            wait_timeout,
            yes,
            lock,
        } => {
            let o = common.open()?;
            let stack = stack.unwrap_or_else(|| {
                o.cluster
                    .inv
                    .vars
                    .get("stack")
                    .and_then(|v| v.as_str())
                    .unwrap_or("appwrite")
                    .to_string()
            });
            let dir = dir.unwrap_or_else(|| format!("/opt/provision/stacks/{stack}"));
            match locked(
                &o,
                &format!("provision rollback {stack}"),
                lock.force_unlock,
                lock::LockQuorum::Majority,
                async |c| stacks::rollback(c, &stack, &dir, wait_timeout, yes).await,
            )? {
                Ok(r) => {
                    say!(
                        "stack {stack} rolled back through {} from version {} to version {}; its services converged. The database was not restored. `provision rollback --yes` again returns to {}.",
                        r.via,
                        r.from,
                        r.to,
                        r.from
                    );
                    Ok(0)
                }
                Err(code) => Ok(code),
            }
        }
        OpsCommand::Recover {
            common,
            from,
            yes,
            lock,
        } => {
            let o = common.open()?;
            match locked(
                &o,
                "provision recover",
                lock.force_unlock,
                lock::LockQuorum::Reachable,
                async |c| {
                    let r = recover::recover(c, from.as_deref(), yes).await?;
                    crate::cluster::remember(c).await;
                    Ok(r)
                },
            )? {
                Ok(r) => {
                    say!("recovered through {}:", r.survivor);
                    for s in r.steps {
                        say!("  {s}");
                    }
                    say!("check with `provision status {}`", common.cluster.display());
                    Ok(0)
                }
                Err(code) => Ok(code),
            }
        }
    }
}

/// The availability `drain` and `activate` set: a closed set, Docker's words.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Availability {
    Drain,
    Active,
}

impl Availability {
    /// Docker's word, as `docker node update --availability` takes it.
    fn as_str(self) -> &'static str {
        match self {
            Availability::Drain => "drain",
            Availability::Active => "active",
        }
    }

    /// The command that sets it.
    fn command(self) -> &'static str {
        match self {
            Availability::Drain => "drain",
            Availability::Active => "activate",
        }
    }
}

fn availability(common: Common, host: String, lock: LockArgs, to: Availability) -> Result<u8> {
    let o = common.open()?;
    let what = format!("provision {} {host}", to.command());
    match locked(
        &o,
        &what,
        lock.force_unlock,
        lock::LockQuorum::Majority,
        async |c| nodes::set_availability(c, &host, to.as_str()).await,
    )? {
        Ok(m) => {
            if to == Availability::Drain && !m.remaining.is_empty() {
                say!("{host} drained, but these tasks have not moved yet:");
                for t in &m.remaining {
                    say!("  {t}");
                }
                return Ok(EXIT_FAILED);
            }
            say!(
                "{host}: availability {}{}",
                to.as_str(),
                if to == Availability::Drain {
                    " (no task left on it)"
                } else {
                    ""
                }
            );
            Ok(0)
        }
        Err(code) => Ok(code),
    }
}

fn secrets_file(o: &Opened) -> Result<SecretsFile> {
    let Some(p) = &o.secrets_path else {
        return Err(config_failure(format!(
            "{}: backups are encrypted to the secrets' recipients, and this cluster has no `secrets` file\n  hint: create one with `provision secrets init secrets.age` and add `secrets = \"secrets.age\"` to the cluster file",
            o.cluster.inv.path.display()
        )));
    };
    Ok(SecretsFile::new(p))
}

fn backup_cmd(common: Common, output: PathBuf, yes: bool, lock: LockArgs) -> Result<u8> {
    let o = common.open()?;
    let sf = secrets_file(&o)?;
    // Fail before stopping anything when the backup could not be encrypted.
    sf.check_encryptable(&EncryptionMode::Recipients).map_err(|e| {
        config_failure(format!(
            "{e}\n  hint: backups are encrypted to the recipients file {} (`provision secrets recipients add`)",
            sf.recipients_path().display()
        ))
    })?;
    if output.exists() {
        return Err(config_failure(format!(
            "{} exists; backups never overwrite a file: choose another name",
            output.display()
        )));
    }
    // The key that authenticates backups: made by the first one, kept in the secrets file.
    let mac_key = match &o.backup_key {
        Some(k) => k.clone(),
        None => {
            let value = provision_secrets::generate_value(32).map_err(|e| anyhow!("{e}"))?;
            provision_secrets::set(
                sf.path(),
                &IdentitySources::from_env(o.identity.clone()),
                backup::BACKUP_KEY,
                &value,
                false,
            )
            .map_err(|e| {
                anyhow!(
                    "cannot add `{}` to {}: {e}",
                    backup::BACKUP_KEY,
                    sf.path().display()
                )
            })?;
            let k = zeroize::Zeroizing::new(
                provision_secrets::ExposeSecret::expose_secret(&value).to_string(),
            );
            o.cluster.learn_secret(&k);
            say!(
                "added `{}` to {}: it authenticates this cluster's backups (restore refuses one it did not make); keep it with the secrets",
                backup::BACKUP_KEY,
                sf.path().display()
            );
            k
        }
    };
    let done = match locked(
        &o,
        "provision backup",
        lock.force_unlock,
        lock::LockQuorum::Majority,
        async |c| backup::backup(c, yes, mac_key.as_bytes()).await,
    )? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let encrypted = sf
        .encrypt(&done.plaintext, &EncryptionMode::Recipients)
        .map_err(|e| anyhow!("{e}"))?;
    write_new(&output, &encrypted).with_context(|| format!("cannot write {}", output.display()))?;
    say!(
        "backup of swarm {} taken on {} ({} KiB of swarm state{}{}), encrypted to the recipients of {} -> {}",
        done.meta.swarm_id.get(..12).unwrap_or(&done.meta.swarm_id),
        done.meta.host,
        done.archive_bytes.div_ceil(1024),
        if done.meta.unlock_key.is_some() {
            ", with the unlock key"
        } else {
            ""
        },
        if done.paused_control_plane {
            "; the control plane paused meanwhile"
        } else {
            ""
        },
        sf.path().display(),
        output.display()
    );
    Ok(0)
}

/// Writes a new file (never replacing one), mode 0600, fsynced.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn restore_cmd(
    common: Common,
    file: PathBuf,
    to: Option<String>,
    force: bool,
    lock: LockArgs,
) -> Result<u8> {
    let o = common.open()?;
    let sf = secrets_file(&o)?;
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let plain = sf
        .decrypt_binary(&bytes, &IdentitySources::from_env(o.identity.clone()))
        .map_err(|e| config_failure(format!("{}: {e}", file.display())))?;
    let unpacked =
        backup::unpack(&plain).map_err(|e| config_failure(format!("{}: {e}", file.display())))?;
    // Who made it, and is it whole: checked here, before any host is touched.
    let key = o.backup_key.as_ref().map(|k| k.as_bytes());
    let checked = match backup::check_backup(&file.display().to_string(), &unpacked, key, force) {
        Ok(c) => c,
        Err(e) => return Ok(report(e)),
    };
    if let Some(w) = &checked.unverified {
        say!("--force: {w}");
    }
    let (meta, tar) = (unpacked.meta, unpacked.tar);
    // Checked before the lock is taken: a wrong target changes nothing anywhere.
    let to = match backup::restore_target(&o.cluster.inv, &meta, to.as_deref()) {
        Ok(t) => t,
        Err(e) => return Ok(report(e)),
    };
    say!(
        "restoring swarm {} (taken on {} of cluster {}; {} files, {} KiB, {}) onto {to}",
        meta.swarm_id.get(..12).unwrap_or(&meta.swarm_id),
        meta.host,
        meta.cluster,
        checked.summary.files,
        checked.summary.bytes.div_ceil(1024),
        if checked.unverified.is_none() {
            "authenticated"
        } else {
            "NOT authenticated"
        }
    );
    match locked(
        &o,
        "provision restore",
        lock.force_unlock,
        lock::LockQuorum::Reachable,
        async |c| {
            let r = backup::restore(c, &meta, tar, &to, force).await?;
            crate::cluster::remember(c).await;
            Ok(r)
        },
    )? {
        Ok(r) => {
            for s in r.steps {
                say!("  {s}");
            }
            say!("check with `provision status {}`", common.cluster.display());
            Ok(0)
        }
        Err(code) => Ok(code),
    }
}

/// A task that prints streamed output; the terminal writers clean it line by line.
fn printer() -> (provision_transport::OutputSink, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Chunk>();
    let h = tokio::spawn(async move {
        let (mut out, mut err) = (crate::term::stdout(), crate::term::stderr());
        while let Some(c) = rx.recv().await {
            let _ = match c {
                Chunk::Stdout(b) => out.write_all(&b),
                Chunk::Stderr(b) => err.write_all(&b),
            };
        }
    });
    (tx, h)
}

pub fn status_text(st: &status::Status) -> String {
    let mut s = format!("cluster {}", st.cluster);
    let leaderless = st.quorum.as_ref().is_some_and(|q| q.leader.is_none());
    match (&st.swarm_id, &st.via) {
        (Some(id), Some(via)) => s.push_str(&format!(" (swarm {id}, read through {via})\n")),
        // Managers are in a swarm that has no leader: not "no swarm" (Docker cannot name it
        // then, so its id may be unknown).
        (id, None) if leaderless => s.push_str(&format!(
            " (swarm {}{}, no leader)\n",
            id.as_deref().unwrap_or("of unknown id"),
            if st.swarm_id_recorded {
                " as of the last good run"
            } else {
                ""
            }
        )),
        (Some(id), None) => s.push_str(&format!(" (swarm {id}, no manager can answer)\n")),
        _ => s.push_str(" (no swarm)\n"),
    }
    if let Some(q) = &st.quorum {
        s.push_str(&format!(
            "managers: {} of {} reachable, {} needed for quorum: {}{}\n",
            q.reachable,
            q.managers,
            q.needed,
            if q.ok { "ok" } else { "LOST" },
            q.leader
                .as_ref()
                .map(|l| format!(", leader {l}"))
                .unwrap_or_default()
        ));
    }
    let mut rows = vec![vec![
        "HOST".to_string(),
        "HOSTNAME".into(),
        "ROLE".into(),
        "AVAILABILITY".into(),
        "SSH".into(),
        "STATE".into(),
        "MANAGER".into(),
        "ENGINE".into(),
    ]];
    for n in &st.nodes {
        rows.push(vec![
            n.host.clone().unwrap_or_else(|| "-".into()),
            n.hostname.clone(),
            n.role.clone(),
            n.availability.clone(),
            n.ssh.clone(),
            n.state.clone(),
            n.manager.clone(),
            n.engine.clone(),
        ]);
    }
    s.push('\n');
    s.push_str(&table(&rows));
    if !st.services.is_empty() {
        let mut rows = vec![vec![
            "SERVICE".to_string(),
            "MODE".into(),
            "REPLICAS".into(),
            "IMAGE".into(),
            "PORTS".into(),
        ]];
        for v in &st.services {
            rows.push(vec![
                v.name.clone(),
                v.mode.clone(),
                format!("{}/{}", v.running, v.desired),
                v.image.clone(),
                v.ports.clone(),
            ]);
        }
        s.push('\n');
        s.push_str(&table(&rows));
        for v in st.services.iter().filter(|v| !v.failing.is_empty()) {
            for t in &v.failing {
                s.push_str(&format!(
                    "  {} on {}: {} ({})\n",
                    t.name, t.node, t.error, t.current_state
                ));
            }
        }
    }
    if !st.storage.is_empty() {
        let mut rows = vec![vec!["STORAGE".to_string(), "NFS SERVER".into()]];
        for r in &st.storage {
            rows.push(vec![r.host.clone(), r.nfs_server.clone()]);
        }
        s.push('\n');
        s.push_str(&table(&rows));
    }
    if !st.warnings.is_empty() {
        s.push_str("\nwarnings:\n");
        for w in &st.warnings {
            s.push_str(&format!("  ! {w}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two of three managers down: the swarm still exists, without a leader (Docker cannot
    /// name it then); the header says so instead of "no swarm".
    #[test]
    fn a_leaderless_swarm_is_named_as_such() {
        let mut st = status::Status {
            cluster: "day2".into(),
            swarm_id: None,
            swarm_id_recorded: false,
            via: None,
            quorum: Some(provision_ops::Quorum {
                managers: 3,
                reachable: 1,
                needed: 2,
                ok: false,
                leader: None,
            }),
            nodes: vec![],
            services: vec![],
            storage: vec![],
            warnings: vec![],
        };
        let head = |st: &status::Status| {
            status_text(st)
                .lines()
                .take(2)
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            head(&st),
            "cluster day2 (swarm of unknown id, no leader)\nmanagers: 1 of 3 reachable, 2 needed for quorum: LOST"
        );
        st.swarm_id = Some("pgrthigctdiq".into());
        assert!(head(&st).starts_with("cluster day2 (swarm pgrthigctdiq, no leader)"));
        // Named by the last good run's record when no manager can.
        st.swarm_id_recorded = true;
        assert!(
            head(&st).starts_with(
                "cluster day2 (swarm pgrthigctdiq as of the last good run, no leader)"
            )
        );
        st.swarm_id_recorded = false;
        st.quorum = None;
        assert_eq!(
            head(&st).lines().next(),
            Some("cluster day2 (swarm pgrthigctdiq, no manager can answer)")
        );
    }
}
