//! `provision run`, `provision check-config` and `provision shell`: load and validate
//! everything offline, then hand the steps to the engine.

use crate::cluster::{load, on_interrupt, runtime, take_lock, watch_lock};
use crate::exit::{config_failure, ok_or_failed, report, run_outcome, with_drift};
use crate::playbook::{Builtin, compile, compile_chosen, compile_chosen_with_facts};
use crate::render::{
    JsonSink, LogSink, Output, PROFILE_TOP, PlainSink, ProgressSink, profile_text, recap_text,
    table,
};
use anyhow::{Context, Result};
use provision_engine::event::{Event, EventSink, Fanout, Redactor};
use provision_engine::fact::Fact;
use provision_engine::host_facts::HostFacts;
use provision_engine::inventory::Inventory;
use provision_engine::selector::Selector;
use provision_engine::step::{Facts, Step, StepError};
use provision_engine::{RunOptions, Runner};
use provision_playbook::compile::FactsSource;
use provision_playbook::select::Selection;
use provision_playbook::steps::host_facts::{self, HostFactsFact};
use provision_transport::{Command, Connector, Target};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
#[command(after_help = crate::exit::RUN_EXIT_CODES)]
pub struct RunArgs {
    /// The cluster file (inventory).
    pub cluster: PathBuf,
    /// Dry run: gather facts and show what would change; change nothing.
    #[arg(long)]
    pub check: bool,
    /// With --check: exit 4 when some step would change something (drift), 0 when nothing
    /// would; failures still exit 1 (Terraform's `plan -detailed-exitcode`, whose 2 is our bad
    /// input).
    #[arg(long, requires = "check")]
    pub detect_drift: bool,
    /// Show unified diffs of file contents (secrets redacted).
    #[arg(long)]
    pub diff: bool,
    /// Only change these hosts: a hosts pattern (groups, roles, `swarm`, host names, globs
    /// `web-*`; `,` or `:` joins, `&` intersects, `!` excludes), e.g. 'web:&prod'.
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
    /// Run only the steps with one of these tags (comma-separated), and those tagged `always`.
    #[arg(long, value_delimiter = ',', value_name = "TAGS")]
    pub tags: Vec<String>,
    /// Skip the steps with one of these tags (comma-separated); `always` steps only for
    /// `--skip-tags always`.
    #[arg(long, value_delimiter = ',', value_name = "TAGS")]
    pub skip_tags: Vec<String>,
    /// Skip every step before the first one with this name.
    #[arg(long, value_name = "NAME")]
    pub start_at_step: Option<String>,
    /// Print the steps that would run, with their hosts and tags; change nothing, connect to
    /// no host.
    #[arg(long)]
    pub list_steps: bool,
    /// End the recap with the 10 slowest steps and each one's slowest host (Ansible's
    /// `profile_tasks` callback). JSON output always has them: `timings` in `run_finished`.
    #[arg(long)]
    pub profile: bool,
}

impl RunArgs {
    /// The steps asked for on the command line (tags trimmed, as written between commas).
    fn selection(&self) -> Selection {
        let clean = |tags: &[String]| tags.iter().map(|t| t.trim().to_string()).collect();
        Selection {
            tags: clean(&self.tags),
            skip_tags: clean(&self.skip_tags),
            start_at: self.start_at_step.clone(),
        }
    }
}

/// `--limit`'s hosts pattern as the set of host names it selects: a name that is no group,
/// role or host is bad input (with the nearest name); a glob matching nothing is a warning.
fn limit_set(inv: &Inventory, limit: Option<&str>) -> Result<Option<BTreeSet<String>>> {
    let Some(l) = limit else { return Ok(None) };
    let sel = Selector::parse(l).map_err(|e| config_failure(format!("--limit {l}: {e}")))?;
    let unknown: Vec<String> = sel.unknown(inv).iter().map(ToString::to_string).collect();
    if !unknown.is_empty() {
        return Err(config_failure(format!(
            "--limit {l}: unknown group or host {}\n  help: {}",
            unknown.join(", "),
            provision_engine::selector::names_help(inv)
        )));
    }
    for glob in sel.globs_matching_nothing(inv) {
        say!("warning: --limit {l}: `{glob}` matches no host");
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

pub fn run(args: RunArgs) -> Result<u8> {
    if args.list_steps {
        return list_steps(&args);
    }
    let loaded = load(
        &args.cluster,
        args.identity.clone(),
        args.playbook.as_deref(),
    )?;
    let (pb, mut compiled) = compile_chosen(&loaded, Builtin::NextToCluster, &args.selection())?;
    let limit = limit_set(&loaded.inv, args.limit.as_deref())?;
    let opts = RunOptions {
        check: args.check,
        diff: args.diff,
        limit: limit.clone(),
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
    let (ssh, targets) = loaded.connect()?;
    let pool: Arc<dyn Connector> = ssh.clone();
    let rt = runtime()?;
    // Facts, only on the hosts (within --limit) whose templates or conditions read them: one
    // command each, then the playbook compiled again with them (it compiled with placeholders).
    let need: Vec<Target> = targets
        .iter()
        .filter(|t| compiled.reads_facts.contains(&t.name))
        .filter(|t| limit.as_ref().is_none_or(|l| l.contains(&t.name)))
        .cloned()
        .collect();
    let mut facts_step: Option<Box<dyn Step>> = None;
    if !need.is_empty() {
        let gathered = rt.block_on(gather_facts(
            &pool,
            &need,
            args.forks.max(1),
            sink.as_ref(),
            &loaded.redactor,
        ));
        let known: std::collections::BTreeMap<String, HostFacts> = gathered
            .iter()
            .filter_map(|(h, r)| Some((h.clone(), r.as_ref().ok()?.clone())))
            .collect();
        compiled = compile_chosen_with_facts(
            &loaded,
            Builtin::NextToCluster,
            &args.selection(),
            FactsSource::Gathered(&known),
        )?
        .1;
        facts_step = Some(host_facts::report(gathered));
    }
    let handlers = std::mem::take(&mut compiled.handlers);
    let mut schedule = compiled.schedule(&pb);
    if facts_step.is_some() {
        schedule = schedule.behind_a_first_step();
    }
    let steps: Vec<Box<dyn Step>> = facts_step.into_iter().chain(compiled.steps).collect();
    // The cluster lock (not for --check, which changes nothing): on the managers.
    let lock_cluster = (!args.check).then(|| {
        Arc::new(provision_ops::Cluster::new(
            loaded.inv.clone(),
            pool.clone(),
            targets.clone(),
            loaded.redactor.clone(),
        ))
    });

    let locked = rt.block_on(async {
        match &lock_cluster {
            Some(c) => take_lock(
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
            // Taking the lock is never interrupted (the handler comes after): locked or failed.
            return Ok(report(e));
        }
    };
    let lock_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (recap, interrupted, timings) = rt.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let tx = Arc::new(tx);
        let runner = Runner::new(pool, targets, opts, sink)
            .with_handlers(handlers)
            .with_schedule(schedule)
            .with_redaction(loaded.redactor.clone())
            .with_cancel(rx);
        let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = interrupted.clone();
        // A lock that lost its majority of managers excludes no one any more: no new step
        // starts (the running commands finish, as on Ctrl-C).
        let watcher = guard.as_ref().map(|g| {
            let (tx, lock_lost, health) = (tx.clone(), lock_lost.clone(), g.health());
            tokio::spawn(async move {
                watch_lock(health).await;
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
        let recap = runner.run(&steps).await;
        if let Some(w) = watcher {
            w.abort();
        }
        // The swarm as this good run left it: named and counted later if no leader answers.
        // A run that changed nothing left the recorded swarm as it was: no survey then (a
        // no-change run stays one round trip per host).
        if let Some(c) = &lock_cluster
            && recap.is_success()
            && !interrupted.load(std::sync::atomic::Ordering::SeqCst)
            && c.inv.managers().next().is_some()
            && (recap.changed() > 0 || !provision_ops::record::path(&c.inv).exists())
        {
            crate::cluster::remember(c).await;
        }
        if let Some(g) = guard {
            g.release().await;
        }
        (
            recap,
            interrupted.load(std::sync::atomic::Ordering::SeqCst),
            runner.timings(),
        )
    });
    if args.output == Output::Text {
        crate::term::err(&recap_text(&recap, args.check));
        if args.profile {
            crate::term::err(&profile_text(&timings, PROFILE_TOP));
        }
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
    let code = run_outcome(
        lock_lost.load(std::sync::atomic::Ordering::SeqCst),
        interrupted,
        recap.is_success(),
    );
    Ok(if args.detect_drift {
        with_drift(code, recap.changed() > 0)
    } else {
        code
    })
}

/// How long the facts command may take on a host.
const FACTS_TIMEOUT: Duration = Duration::from_secs(120);

/// The host facts of `hosts`, one read-only command each, in parallel (`forks` at once); each
/// command is logged as the runner logs its fact commands (the size of the output only). A host
/// that cannot be reached or whose output does not parse gets the error, reported as its
/// result of the run's first step.
async fn gather_facts(
    pool: &Arc<dyn Connector>,
    hosts: &[Target],
    forks: usize,
    sink: &dyn EventSink,
    redactor: &Redactor,
) -> Vec<(String, std::result::Result<HostFacts, StepError>)> {
    let command = HostFactsFact.command();
    let sem = tokio::sync::Semaphore::new(forks);
    let (command, sem) = (&command, &sem);
    futures::future::join_all(hosts.iter().map(|t| async move {
        let _p = sem.acquire().await.expect("semaphore");
        let started = std::time::Instant::now();
        let res = match pool.connect(t).await {
            Ok(s) => {
                provision_transport::Transport::run(
                    &*s,
                    Command::new(command.clone()).timeout(FACTS_TIMEOUT),
                )
                .await
            }
            Err(e) => Err(e),
        };
        let facts = match res {
            Ok(out) => {
                sink.emit(&Event::Command {
                    host: redactor.clean(&t.name),
                    step: redactor.clean(host_facts::STEP_TITLE),
                    command: redactor.clean(command),
                    exit_status: out.exit_status,
                    duration: started.elapsed(),
                    stdout: redactor.clean(&format!(
                        "({} bytes of facts, not logged)",
                        out.stdout.len()
                    )),
                    stderr: redactor.clean(&out.stderr_str()),
                });
                if out.success() {
                    HostFactsFact.parse(&Facts {
                        stdout: out.stdout_str(),
                        exit_status: out.exit_status,
                        ..Default::default()
                    })
                } else {
                    Err(StepError::new(format!(
                        "the facts command failed ({}): {}",
                        out.describe_exit(),
                        out.stderr_str().trim()
                    )))
                }
            }
            Err(e) => Err(StepError::new(format!("cannot gather facts: {e}"))),
        };
        (t.name.clone(), facts)
    }))
    .await
}

/// `run --list-steps`: the steps the run would go through, in order, each on the hosts it would
/// run on (within --limit) with its tags. Offline, like check-config: nothing is written next to
/// the cluster file and no host is contacted.
fn list_steps(args: &RunArgs) -> Result<u8> {
    let loaded = load(
        &args.cluster,
        args.identity.clone(),
        args.playbook.as_deref(),
    )?;
    let scratch = tempfile::Builder::new()
        .prefix("provision-list-")
        .tempdir()
        .context("cannot create a scratch directory for the built-in playbook")?;
    let (pb, compiled) =
        compile_chosen(&loaded, Builtin::Scratch(scratch.path()), &args.selection())?;
    let limit = limit_set(&loaded.inv, args.limit.as_deref())?;
    let rows = step_rows(&pb, &compiled, limit.as_ref());
    if rows.len() > 1 {
        crate::term::out(&table(&rows));
    }
    say!(
        "{} step(s) would run; nothing was changed and no host contacted",
        rows.len() - 1
    );
    Ok(0)
}

/// The listing's table: a header, then each step that runs on at least one host (within
/// `limit`): its title, its tags, its hosts.
fn step_rows(
    pb: &provision_engine::playbook_file::PlaybookFile,
    compiled: &provision_playbook::Compiled,
    limit: Option<&BTreeSet<String>>,
) -> Vec<Vec<String>> {
    let mut rows = vec![vec!["STEP".into(), "TAGS".into(), "HOSTS".into()]];
    for (step, origin) in compiled.steps.iter().zip(&compiled.origins) {
        let hosts: Vec<String> = origin
            .runs_on
            .iter()
            .filter(|h| limit.is_none_or(|l| l.contains(*h)))
            // A run-once step runs on the first of them only.
            .take(if step.rollout().run_once {
                1
            } else {
                usize::MAX
            })
            // A step that runs on another host for one of them (`on`) says where.
            .map(|h| match step.delegate(h) {
                Some(d) => format!("{h} (on {d})"),
                None => h.clone(),
            })
            .collect();
        if hosts.is_empty() {
            continue;
        }
        let tags = &pb.steps[origin.spec].tags;
        rows.push(vec![
            step.title().to_string(),
            if tags.is_empty() {
                "-".into()
            } else {
                tags.join(",")
            },
            hosts.join(","),
        ]);
    }
    rows
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
    let handlers = match compiled.handlers.steps.len() {
        0 => String::new(),
        n => format!(", {n} handler(s)"),
    };
    // Offline: the facts templates read are not gathered; they were checked with placeholders.
    if !compiled.reads_facts.is_empty() {
        say!(
            "facts.* are read on {} host(s) ({}): checked with placeholders ({}); a run gathers them there",
            compiled.reads_facts.len(),
            compiled
                .reads_facts
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            HostFacts::placeholder().summary()
        );
    }
    show!(
        "{}: ok: {} hosts, {} steps ({} host-steps){handlers}, {} warning(s)",
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
    /// Hosts to run on (a hosts pattern, as `run --limit`); default all.
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
    let (pool, all) = loaded.connect()?;
    let chosen: Vec<Target> = all
        .into_iter()
        .filter(|t| limit.as_ref().is_none_or(|l| l.contains(&t.name)))
        .collect();
    let script = args.command.join(" ");
    let redactor = loaded.redactor.clone();
    let rt = runtime()?;
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
                let res = match pool.connect(t).await {
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
    Ok(ok_or_failed(failed == 0))
}
