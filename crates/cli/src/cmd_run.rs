//! `provision run`, `provision check-config` and `provision shell`: load and validate
//! everything offline, then hand the steps to the engine.

use crate::render::{JsonSink, LogSink, PlainSink, ProgressSink, recap_text};
use anyhow::{Context, Result, anyhow};
use provision_engine::diagnostic::ConfigError;
use provision_engine::event::{EventSink, Fanout};
use provision_engine::inventory::{Inventory, InventoryRules};
use provision_engine::playbook_file::PlaybookFile;
use provision_engine::selector::Selector;
use provision_engine::{RunOptions, Runner};
use provision_playbook::compile::{SecretsView, targets};
use provision_secrets::{IdentitySources, Redactor, Secrets, SecretsFile};
use provision_transport::ssh_config::SshConfig;
use provision_transport::{Command, ConnectOptions, Connector, SshPool, Target};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Exit codes: 0 all good, 1 some host failed, 2 bad input (nothing ran), 130 interrupted.
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The cluster file (inventory).
    pub cluster: PathBuf,
    /// Dry run: gather facts and show what would change; change nothing.
    #[arg(long)]
    pub check: bool,
    /// Show unified diffs of file contents (secrets redacted).
    #[arg(long)]
    pub diff: bool,
    /// Only change these hosts (selector: names, roles, `swarm`, `!name`, comma-separated).
    #[arg(long)]
    pub limit: Option<String>,
    /// Hosts worked on at once.
    #[arg(long, default_value_t = 64)]
    pub forks: usize,
    /// Give up on a command of a step after this many seconds (the host fails), unless the
    /// step sets its own `timeout`. Default: 3600.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// `text` (default) or `json` (one event per line on stdout).
    #[arg(long, default_value = "text")]
    pub output: Output,
    /// Show ok and skipped results too.
    #[arg(short, long)]
    pub verbose: bool,
    /// Identity for the secrets file (age key file or SSH private key).
    #[arg(long, env = "PROVISION_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// Use this playbook instead of the one the cluster file names.
    #[arg(long)]
    pub playbook: Option<PathBuf>,
    /// Remove another operator's cluster lock first (only when you know that run is gone).
    #[arg(long)]
    pub force_unlock: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Everything a run needs, loaded and checked before any connection.
pub struct Loaded {
    pub inv: Inventory,
    pub secrets: Secrets,
    pub redactor: Redactor,
}

/// Prints configuration diagnostics and turns them into exit code 2.
pub fn config_error(e: ConfigError) -> anyhow::Error {
    anyhow::Error::new(ConfigFailure(e.to_string()))
}

#[derive(Debug)]
pub struct ConfigFailure(pub String);

impl std::fmt::Display for ConfigFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigFailure {}

pub fn load(cluster: &Path, identity: Option<PathBuf>, playbook: Option<&Path>) -> Result<Loaded> {
    let mut inv = Inventory::load(cluster, &InventoryRules::default()).map_err(config_error)?;
    if let Some(p) = playbook {
        inv.playbook = Some(std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    }
    for w in &inv.warnings {
        say!("{w}");
    }
    let secrets = match &inv.secrets {
        None => Secrets::empty(),
        Some(path) => SecretsFile::load(path, &IdentitySources::from_env(identity))
            .map_err(|e| anyhow::Error::new(ConfigFailure(format!("{}: {e}", path.display()))))?,
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

/// Where the built-in playbook's files are read from when the inventory names no playbook.
pub enum Builtin<'a> {
    /// `.provision/builtin/` next to the cluster file, where users can read them (`run`).
    NextToCluster,
    /// A private scratch directory (`check-config`, which writes nothing next to the cluster).
    Scratch(&'a Path),
}

/// The inventory's playbook, or the built-in swarm playbook.
pub fn playbook_path(inv: &Inventory, builtin: Builtin<'_>) -> Result<PathBuf> {
    match (&inv.playbook, builtin) {
        (Some(p), _) => Ok(p.clone()),
        (None, Builtin::NextToCluster) => {
            crate::builtin::materialize(&inv.dir).with_context(|| {
                format!(
                    "cannot write the built-in playbook under {}",
                    inv.dir.display()
                )
            })
        }
        (None, Builtin::Scratch(dir)) => crate::builtin::write_into(dir)
            .with_context(|| format!("cannot write the built-in playbook under {}", dir.display())),
    }
}

pub fn compile(loaded: &Loaded, builtin: Builtin<'_>) -> Result<provision_playbook::Compiled> {
    let scratch = match builtin {
        Builtin::Scratch(dir) => Some(dir),
        Builtin::NextToCluster => None,
    };
    // Diagnostics in a scratch copy of the built-in files name them as built-in.
    let config_error = |e: ConfigError| match scratch {
        Some(dir) => config_error(crate::builtin::name_builtin_files(e, dir)),
        None => config_error(e),
    };
    let pb_path = playbook_path(&loaded.inv, builtin)?;
    let known = provision_playbook::known_steps();
    let pb = PlaybookFile::load(&pb_path, &known).map_err(config_error)?;
    let redactor = loaded.redactor.clone();
    let contains = move |t: &str| redactor.contains_secret(t.as_bytes());
    let view = SecretsView {
        table: loaded.secrets.table(),
        contains_secret: &contains,
    };
    if pb
        .steps
        .iter()
        .any(|s| provision_playbook::registry::cluster_step(&s.uses).is_some())
    {
        // A swarm needs managers and private addresses: check the inventory for that too.
        let rules = InventoryRules {
            require_manager: true,
            require_private_ip: true,
        };
        Inventory::load(&loaded.inv.path, &rules).map_err(config_error)?;
    }
    let compiled = provision_playbook::compile(&loaded.inv, &pb, &view).map_err(config_error)?;
    // The inventory's warnings were shown by `load`; the steps' follow them.
    for w in compiled.warnings.iter().skip(loaded.inv.warnings.len()) {
        say!("{w}");
    }
    Ok(compiled)
}

pub fn connect_options(inv: &Inventory) -> Result<ConnectOptions> {
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

pub fn sudo_password(secrets: &Secrets) -> Option<Arc<Zeroizing<String>>> {
    secrets
        .get("sudo_password")
        .and_then(|v| v.as_str())
        .map(|s| Arc::new(Zeroizing::new(s.to_string())))
}

fn limit_set(inv: &Inventory, limit: Option<&str>) -> Result<Option<BTreeSet<String>>> {
    let Some(l) = limit else { return Ok(None) };
    let sel = Selector::parse(l)
        .map_err(|e| anyhow::Error::new(ConfigFailure(format!("--limit {l}: {e}"))))?;
    let unknown = sel.unknown_names(inv);
    if !unknown.is_empty() {
        return Err(anyhow::Error::new(ConfigFailure(format!(
            "--limit {l}: unknown hosts {}",
            unknown.join(", ")
        ))));
    }
    Ok(Some(
        sel.select(inv)
            .into_iter()
            .map(|h| h.name.clone())
            .collect(),
    ))
}

fn log_path(inv: &Inventory) -> std::io::Result<PathBuf> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(crate::state_dir::ensure(&inv.dir, "logs")?
        .join(format!("run-{ts}-{}.log", std::process::id())))
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

pub fn run(args: RunArgs) -> Result<u8> {
    let loaded = load(
        &args.cluster,
        args.identity.clone(),
        args.playbook.as_deref(),
    )?;
    let compiled = compile(&loaded, Builtin::NextToCluster)?;
    let limit = limit_set(&loaded.inv, args.limit.as_deref())?;
    let opts = RunOptions {
        check: args.check,
        diff: args.diff,
        limit,
        forks: args.forks.max(1),
        command_timeout: args
            .timeout
            .map(std::time::Duration::from_secs)
            .unwrap_or(provision_engine::runner::DEFAULT_COMMAND_TIMEOUT),
        ..Default::default()
    };
    let log = log_path(&loaded.inv).with_context(|| {
        format!(
            "cannot create {}/logs",
            loaded.inv.dir.join(crate::state_dir::NAME).display()
        )
    })?;
    let mut sinks: Vec<Arc<dyn EventSink>> =
        vec![Arc::new(LogSink::create(&log).with_context(|| {
            format!("cannot create the run log {}", log.display())
        })?)];
    match args.output {
        Output::Json => sinks.push(Arc::new(JsonSink)),
        Output::Text if crate::term::stderr_is_terminal() => {
            sinks.push(Arc::new(ProgressSink::new(args.verbose)))
        }
        Output::Text => sinks.push(Arc::new(PlainSink::stderr(args.verbose))),
    }
    let sink = Arc::new(Fanout(sinks));
    let targets = targets(&loaded.inv, sudo_password(&loaded.secrets));
    let ssh = Arc::new(SshPool::new(connect_options(&loaded.inv)?).map_err(|e| anyhow!("{e}"))?);
    let pool: Arc<dyn Connector> = ssh.clone();
    // The cluster lock (not for --check, which changes nothing): on the managers.
    let lock_cluster = (!args.check).then(|| {
        Arc::new(provision_ops::Cluster::new(
            loaded.inv.clone(),
            pool.clone(),
            targets.clone(),
            loaded.redactor.clone(),
        ))
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let locked = rt.block_on(async {
        match &lock_cluster {
            Some(c) => crate::ops_cmd::take_lock(
                c.clone(),
                "provision run",
                args.force_unlock,
                provision_ops::lock::LockQuorum::Majority,
            )
            .await
            .map(Some),
            None => Ok(None),
        }
    });
    let guard = match locked {
        Ok(g) => g,
        Err(e) => {
            say!("error: {e}");
            return Ok(match e {
                provision_ops::OpsError::Locked { .. }
                | provision_ops::OpsError::NoLockMajority { .. } => crate::ops_cmd::EXIT_LOCKED,
                _ => EXIT_FAILED,
            });
        }
    };
    let lock_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (recap, interrupted) = rt.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let tx = Arc::new(tx);
        let runner = Runner::new(pool, targets, opts, sink)
            .with_redaction(loaded.redactor.clone())
            .with_cancel(rx);
        let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = interrupted.clone();
        // A lock that lost its majority of managers excludes no one any more: no new step
        // starts (the running commands finish, as on Ctrl-C).
        let watcher = guard.as_ref().map(|g| {
            let (tx, lock_lost, health) = (tx.clone(), lock_lost.clone(), g.health());
            tokio::spawn(async move {
                crate::ops_cmd::watch_lock(health).await;
                lock_lost.store(true, std::sync::atomic::Ordering::SeqCst);
                say!(
                    "stopping: the cluster lock lost its majority of managers; no new step starts"
                );
                let _ = tx.send(true);
            })
        });
        on_interrupt(move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = tx.send(true);
        });
        let recap = runner.run(&compiled.steps).await;
        if let Some(w) = watcher {
            w.abort();
        }
        if let Some(g) = guard {
            g.release().await;
        }
        (recap, interrupted.load(std::sync::atomic::Ordering::SeqCst))
    });
    if args.output == Output::Text {
        crate::term::err(&recap_text(&recap, args.check));
    }
    // Keys trusted on first use: a person can compare them with the servers' own.
    for k in ssh.newly_trusted() {
        say!(
            "trusted a new host key for {}: {} (recorded in {})",
            k.host,
            k.fingerprint,
            k.file.display()
        );
    }
    if args.output == Output::Text {
        say!("log: {}", log.display());
    }
    Ok(if lock_lost.load(std::sync::atomic::Ordering::SeqCst) {
        crate::ops_cmd::EXIT_LOCKED
    } else if interrupted {
        EXIT_INTERRUPTED
    } else if recap.is_success() {
        0
    } else {
        EXIT_FAILED
    })
}

#[derive(clap::Args, Debug)]
pub struct CheckConfigArgs {
    pub cluster: PathBuf,
    /// Check this playbook instead of the one the cluster file names.
    #[arg(long)]
    pub playbook: Option<PathBuf>,
    #[arg(long, env = "PROVISION_IDENTITY")]
    pub identity: Option<PathBuf>,
}

pub fn check_config(args: CheckConfigArgs) -> Result<u8> {
    let loaded = load(&args.cluster, args.identity, args.playbook.as_deref())?;
    // Reads and validates only: the built-in files come from a scratch directory removed on
    // return, nothing is written next to the cluster file.
    let scratch = tempfile::Builder::new()
        .prefix("provision-check-")
        .tempdir()
        .context("cannot create a scratch directory for the built-in playbook")?;
    let compiled = compile(&loaded, Builtin::Scratch(scratch.path()))?;
    let per_host: usize = compiled.steps.iter().map(|s| s.targets().len()).sum();
    show!(
        "{}: ok: {} hosts, {} steps ({} host-steps), {} warning(s)",
        args.cluster.display(),
        loaded.inv.hosts.len(),
        compiled.steps.len(),
        per_host,
        compiled.warnings.len()
    );
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct ShellArgs {
    pub cluster: PathBuf,
    /// Hosts to run on (selector); default all.
    #[arg(long)]
    pub limit: Option<String>,
    #[arg(long, default_value_t = 64)]
    pub forks: usize,
    /// Give up on a host's command after this many seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    #[arg(long, env = "PROVISION_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// The command, run by POSIX sh on each host.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn shell(args: ShellArgs) -> Result<u8> {
    let loaded = load(&args.cluster, args.identity.clone(), None)?;
    let limit = limit_set(&loaded.inv, args.limit.as_deref())?;
    let all = targets(&loaded.inv, sudo_password(&loaded.secrets));
    let chosen: Vec<Target> = all
        .into_iter()
        .filter(|t| limit.as_ref().is_none_or(|l| l.contains(&t.name)))
        .collect();
    let pool = SshPool::new(connect_options(&loaded.inv)?).map_err(|e| anyhow!("{e}"))?;
    let script = args.command.join(" ");
    let redactor = loaded.redactor.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(args.forks.max(1)));
        let futs = chosen.iter().map(|t| {
            let (pool, sem, script) = (&pool, sem.clone(), script.clone());
            async move {
                let _p = sem.acquire().await.expect("semaphore");
                let mut cmd = Command::new(script);
                if let Some(s) = args.timeout {
                    cmd = cmd.timeout(Duration::from_secs(s));
                }
                let res = match pool.session(t).await {
                    Ok(s) => provision_transport::Transport::run(&*s, cmd).await,
                    Err(e) => Err(e),
                };
                (t.name.clone(), res)
            }
        });
        futures::future::join_all(futs).await
    });
    let mut failed = 0;
    for (host, res) in results {
        match res {
            Ok(out) => {
                let status = out.describe_exit();
                if !out.success() {
                    failed += 1;
                }
                show!("== {host} ({status})");
                crate::term::out(&out.stdout_str());
                let err = out.stderr_str();
                if !err.is_empty() {
                    for l in redactor.redact(&err).lines() {
                        show!("stderr: {l}");
                    }
                }
            }
            Err(e) => {
                failed += 1;
                show!("== {host} (error)\n{e}");
            }
        }
    }
    say!("{} host(s), {} failed", chosen.len(), failed);
    Ok(if failed == 0 { 0 } else { EXIT_FAILED })
}
