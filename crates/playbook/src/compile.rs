//! The playbook compiler: inventory + playbook file (+ secrets) to the ordered steps
//! the engine runs. Everything is checked here, before any host is contacted.

use crate::ctx::{BuildCtx, Claim, ClusterCtx, ClusterStepCtor};
use crate::registry::{cluster_step, host_step, known_steps};
use provision_engine::diagnostic::{ConfigError, Diagnostic};
use provision_engine::handlers::{self, Handlers};
use provision_engine::host_facts::{self, HostFacts};
use provision_engine::inventory::{Host, Inventory};
use provision_engine::playbook_file::{FLUSH_HANDLERS, PlaybookFile, StepSpec};
use provision_engine::registered::{AtRun, LoopItem as AtRunItem};
use provision_engine::rollout::Rollout;
use provision_engine::step::{
    Check, Configured, Facts, FlushHandlers, HostStep, PerHost, Step, StepError,
};
use provision_engine::template::{self, TemplateError};
use provision_transport::{Become, Target};
use std::sync::Arc;
use zeroize::Zeroizing;

pub(crate) mod context;
mod delegate;
mod looping;
pub use context::{
    Shared, cluster_context, cluster_context_scoped, host_context, host_context_scoped,
    host_context_shared,
};

/// A playbook ready to run.
pub struct Compiled {
    pub steps: Vec<Box<dyn Step>>,
    pub warnings: Vec<Diagnostic>,
    /// Where each step of `steps` comes from (same order): for choosing steps by tag or name,
    /// and for listing them.
    pub origins: Vec<Origin>,
    /// `[[handlers]]`, compiled like steps, and where each host keeps pending notifications.
    pub handlers: Handlers,
    /// The hosts whose templates or conditions read `facts.*` (a run gathers facts on those).
    pub reads_facts: std::collections::BTreeSet<String>,
}

/// What `facts.*` holds while compiling: placeholders (check-config, and a run before it knows
/// which hosts read facts), or the facts gathered on each host (others get placeholders).
#[derive(Clone, Copy)]
pub enum FactsSource<'a> {
    Placeholders,
    Gathered(&'a std::collections::BTreeMap<String, HostFacts>),
}

/// Each host's `facts` value and the record of which hosts' templates read it.
struct FactValues {
    reads: Arc<host_facts::Reads>,
    values: std::collections::BTreeMap<String, minijinja::Value>,
}

impl FactValues {
    fn new(inv: &Inventory, source: FactsSource<'_>) -> Self {
        let reads = Arc::new(host_facts::Reads::default());
        let values = inv
            .hosts
            .iter()
            .map(|h| {
                let facts = match source {
                    FactsSource::Gathered(m) => m.get(&h.name).cloned(),
                    FactsSource::Placeholders => None,
                }
                .unwrap_or_else(HostFacts::placeholder);
                (
                    h.name.clone(),
                    host_facts::value(facts, &h.name, reads.clone()),
                )
            })
            .collect();
        FactValues { reads, values }
    }

    /// A host's context with its `facts`.
    fn add(&self, host: &str, ctx: minijinja::Value) -> minijinja::Value {
        let facts: std::collections::BTreeMap<&str, minijinja::Value> =
            [("facts", self.values[host].clone())].into_iter().collect();
        minijinja::value::merge_maps([minijinja::Value::from(facts), ctx])
    }
}

impl Compiled {
    /// How the runner orders these steps: the playbook's `strategy`, and for each step the
    /// earlier steps its entry's `after` names (every item of a looped entry; none of the
    /// entries a selection dropped).
    pub fn schedule(&self, pb: &PlaybookFile) -> provision_engine::pipeline::Schedule {
        let after = self
            .origins
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let entries = pb.after_entries(o.spec);
                (0..i)
                    .filter(|&j| entries.contains(&self.origins[j].spec))
                    .collect()
            })
            .collect();
        provision_engine::pipeline::Schedule {
            strategy: pb.strategy,
            after,
        }
    }
}

/// The playbook entry a compiled step comes from, and where it would run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Index of the entry in `PlaybookFile::steps` (a looped entry gives one step per item).
    pub spec: usize,
    /// The hosts it runs on, in inventory order: its selected hosts, without those for which
    /// its `when` is false.
    pub runs_on: Vec<String>,
}

/// Secret values as templates see them (`secrets.NAME`), and a test for "does
/// this text contain a secret" (for file modes and diffs).
pub struct SecretsView<'a> {
    pub table: &'a toml::Table,
    pub contains_secret: &'a (dyn Fn(&str) -> bool + Sync),
}

/// Compiles every step for every host it selects. All problems are collected and
/// reported together, each at its line in the playbook.
pub fn compile(
    inv: &Inventory,
    pb: &PlaybookFile,
    secrets: &SecretsView<'_>,
) -> Result<Compiled, ConfigError> {
    compile_with_facts(inv, pb, secrets, FactsSource::Placeholders)
}

/// [`compile`] with `facts.*` from `facts`.
pub fn compile_with_facts(
    inv: &Inventory,
    pb: &PlaybookFile,
    secrets: &SecretsView<'_>,
    facts: FactsSource<'_>,
) -> Result<Compiled, ConfigError> {
    // Every missing secret is named at its declaration, before templates that read it fail
    // one by one with "undefined".
    let needed = crate::declared_secrets::needed(inv, pb, secrets.table)
        .map_err(|diagnostics| ConfigError { diagnostics })?;
    let missing = crate::declared_secrets::problems(inv, &needed);
    if !missing.is_empty() {
        return Err(ConfigError {
            diagnostics: missing,
        });
    }
    let env = template::environment();
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    // Step constructors report warnings through a shared closure.
    let warnings = std::cell::RefCell::new(inv.warnings.clone());
    let mut steps: Vec<Box<dyn Step>> = Vec::new();
    let claims = std::cell::RefCell::new(Vec::new());
    let base_dir = pb
        .path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let shared = Shared::new(inv, secrets.table);
    let facts = FactValues::new(inv, facts);
    let contexts: Vec<(String, minijinja::Value)> = inv
        .hosts
        .iter()
        .map(|h| {
            let ctx = host_context_shared(inv, h, &shared);
            (h.name.clone(), facts.add(&h.name, ctx))
        })
        .collect();

    let mut origins: Vec<Origin> = Vec::new();
    // Loops over vars read the cluster's context: a looped step is the same steps on every host.
    // (A step an include brought in reads its own: its vars are layered with the include's.)
    let cluster_ctx = pb
        .steps
        .iter()
        .chain(&pb.handlers)
        .any(|s| s.loop_over.is_some())
        .then(|| cluster_context(inv, secrets.table));
    // Handlers compile like steps, after them, into their own list; `origins` are the play's
    // steps' only (tags and --start-at-step choose among those).
    let mut handler_steps: Vec<Box<dyn Step>> = Vec::new();
    let play = pb.steps.iter().enumerate().map(|(i, s)| (i, s, false));
    let handler_specs = pb.handlers.iter().enumerate().map(|(i, s)| (i, s, true));
    for (index, spec, is_handler) in play.chain(handler_specs) {
        let out = if is_handler {
            &mut handler_steps
        } else {
            &mut steps
        };
        let mut origin = |runs_on: Vec<String>| {
            if !is_handler {
                origins.push(Origin {
                    spec: index,
                    runs_on,
                });
            }
        };
        if spec.uses == FLUSH_HANDLERS {
            out.push(Box::new(FlushHandlers {
                title: spec.name.clone(),
            }));
            origin(Vec::new());
            continue;
        }
        if let Some(d) = pattern_problems(inv, spec, &mut warnings.borrow_mut()) {
            diagnostics.push(d);
            continue;
        }
        let repetitions = match &cluster_ctx {
            Some(_) if !spec.scope.defaults.is_empty() || !spec.scope.vars.is_empty() => {
                let ctx = cluster_context_scoped(inv, secrets.table, &spec.scope);
                looping::repetitions(&env, &ctx, spec)
            }
            Some(ctx) => looping::repetitions(&env, ctx, spec),
            None => looping::repetitions(&env, &minijinja::Value::UNDEFINED, spec),
        };
        let repetitions = match repetitions {
            Ok(r) => r,
            Err(d) => {
                push_unique(&mut diagnostics, d);
                continue;
            }
        };
        for (rep_index, rep) in repetitions.iter().enumerate() {
            // A looped step that registers: each repetition's result is one of `results`.
            let looped = rep
                .item
                .as_ref()
                .filter(|_| spec.register.is_some())
                .map(|(_, item)| AtRunItem {
                    index: rep_index,
                    item: serde_json::to_value(item).unwrap_or_default(),
                });
            // A repetition is the step under its own title: its messages and results name it.
            let named;
            let spec = match &rep.item {
                None => spec,
                Some(_) => {
                    named = StepSpec {
                        name: rep.title.clone(),
                        ..spec.clone()
                    };
                    &named
                }
            };
            if let Some(cctor) = cluster_step(&spec.uses) {
                if let Some(d) = delegate::refuse_on_cluster_step(spec) {
                    push_unique(&mut diagnostics, d);
                    continue;
                }
                if let Some(step) = compile_cluster_step(
                    inv,
                    spec,
                    rep,
                    secrets,
                    &env,
                    &base_dir,
                    cctor,
                    &claims,
                    &mut diagnostics,
                ) {
                    origin(step.targets());
                    let mut contexts = std::collections::BTreeMap::new();
                    if spec.register.is_some() || spec.retry.is_some() || !spec.rules.is_default() {
                        let ctx = rep.context(&cluster_context(inv, secrets.table));
                        contexts = step
                            .targets()
                            .into_iter()
                            .map(|h| (h, ctx.clone()))
                            .collect();
                    }
                    out.push(configured(
                        pb,
                        spec,
                        step,
                        contexts,
                        Default::default(),
                        looped,
                    ));
                }
                continue;
            }
            let Some(ctor) = host_step(&spec.uses) else {
                diagnostics.push(
                    Diagnostic::error(
                        &spec.file,
                        (spec.line, spec.column),
                        format!("unknown step `{}`", spec.uses),
                    )
                    .with_help(format!("built-in steps: {}", known_steps().join(", "))),
                );
                continue;
            };
            let (step, runs_on, contexts_at_run, on) = compile_host_step(
                inv,
                spec,
                rep,
                secrets,
                &env,
                &base_dir,
                (&contexts, &shared, &facts),
                ctor,
                &warnings,
                &mut diagnostics,
            );
            origin(runs_on);
            out.push(configured(pb, spec, step, contexts_at_run, on, looped));
        }
    }
    let pending_files = pending_files(inv, &mut diagnostics);
    for d in conflicts(&claims.into_inner()) {
        push_unique(&mut diagnostics, d);
    }
    if diagnostics.is_empty() {
        Ok(Compiled {
            steps,
            warnings: warnings.into_inner(),
            origins,
            handlers: Handlers {
                steps: handler_steps,
                pending_files,
            },
            reads_facts: facts.reads.hosts(),
        })
    } else {
        Err(ConfigError { diagnostics })
    }
}

/// The step's hosts pattern against the inventory: names that are no group, role or host are
/// an error at the `hosts` value; a glob that matches no host is a warning there.
fn pattern_problems(
    inv: &Inventory,
    spec: &StepSpec,
    warnings: &mut Vec<Diagnostic>,
) -> Option<Diagnostic> {
    // `hosts` may come from the include entry that brought the step in.
    let file = spec.scope.hosts_file.as_ref().unwrap_or(&spec.file);
    for glob in spec.hosts.globs_matching_nothing(inv) {
        push_unique(
            warnings,
            Diagnostic::warning(
                file,
                spec.hosts_at,
                format!("step `{}`: `{glob}` in `hosts` matches no host", spec.name),
            )
            .with_help("the step runs on what the rest of the pattern selects; check the glob"),
        );
    }
    let unknown = spec.hosts.unknown(inv);
    if unknown.is_empty() {
        return None;
    }
    let names: Vec<String> = unknown.iter().map(ToString::to_string).collect();
    let what = if unknown.len() == 1 {
        "an unknown group or host"
    } else {
        "unknown groups or hosts"
    };
    Some(
        Diagnostic::error(
            file,
            spec.hosts_at,
            format!(
                "step `{}`: `hosts` names {what}: {}",
                spec.name,
                names.join(", ")
            ),
        )
        .with_help(provision_engine::selector::names_help(inv)),
    )
}

/// One host step on every host it selects: `when` and `with` evaluated per host (with the
/// repetition's item); the hosts for which `when` is false are skipped. Returns the step, the
/// hosts it runs on, each host's context (for what is decided when it is reached) and the host
/// it runs on instead for each host (`on`).
#[allow(clippy::too_many_arguments)]
fn compile_host_step(
    inv: &Inventory,
    spec: &StepSpec,
    rep: &looping::Repetition,
    secrets: &SecretsView<'_>,
    env: &minijinja::Environment<'static>,
    base_dir: &std::path::Path,
    (contexts, shared, facts): (&[(String, minijinja::Value)], &Shared, &FactValues),
    ctor: crate::ctx::HostStepCtor,
    warnings: &std::cell::RefCell<Vec<Diagnostic>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> (
    Box<dyn Step>,
    Vec<String>,
    std::collections::BTreeMap<String, minijinja::Value>,
    Delegates,
) {
    let mut runs_on = Vec::new();
    let mut on = std::collections::BTreeMap::new();
    let mut per_host: Vec<(String, Box<dyn HostStep>)> = Vec::new();
    // Only a step with include vars or role defaults needs contexts of its own.
    let scoped = !spec.scope.defaults.is_empty() || !spec.scope.vars.is_empty();
    // Each host's context, for what is decided when the step is reached.
    let mut kept = std::collections::BTreeMap::new();
    // What is decided when the step is reached reads the facts then: the host needs them.
    let reads_facts_at_run = [
        spec.when.as_ref().filter(|_| spec.when_at_run),
        spec.retry.as_ref().and_then(|r| r.until.as_ref()),
    ]
    .into_iter()
    .flatten()
    .any(|e| template::names_read_by_expression(e).is_some_and(|n| n.contains("facts")));
    for host in spec.hosts.select(inv) {
        if reads_facts_at_run {
            facts.reads.mark(&host.name);
        }
        let ctx = &if scoped {
            let ctx = host_context_scoped(inv, host, shared, &spec.scope);
            rep.context(&facts.add(&host.name, ctx))
        } else {
            let base = &contexts
                .iter()
                .find(|(n, _)| *n == host.name)
                .expect("every host has a context")
                .1;
            rep.context(base)
        };
        kept.insert(host.name.clone(), ctx.clone());
        // A `when` over registered results is decided per host when the step is reached.
        if let Some(expr) = spec.when.as_ref().filter(|_| !spec.when_at_run) {
            match template::truthy(env, expr, ctx) {
                Ok(true) => {}
                // A run-once step runs on the first host whose `when` is true: the others are
                // not its hosts at all (and not reported).
                Ok(false) if spec.rollout.run_once => continue,
                Ok(false) => {
                    per_host.push((
                        host.name.clone(),
                        Box::new(Skipped(format!("`when = {expr}` is false"))),
                    ));
                    continue;
                }
                Err(e) => {
                    push_unique(diagnostics, when_error(spec, &e));
                    continue;
                }
            }
        }
        let rendered =
            match template::render_toml(env, "with", &toml::Value::Table(spec.with.clone()), ctx) {
                Ok(toml::Value::Table(t)) => t,
                Ok(_) => unreachable!("a table renders to a table"),
                Err(e) => {
                    push_unique(diagnostics, with_error(spec, &e, host));
                    continue;
                }
            };
        if let Some(d) = secret_in_argv(spec, &rendered, secrets) {
            push_unique(diagnostics, d);
            continue;
        }
        match delegate::delegate_of(env, inv, spec, host, ctx) {
            Ok(Some(d)) => {
                on.insert(host.name.clone(), d);
            }
            Ok(None) => {}
            Err(d) => {
                push_unique(diagnostics, d);
                continue;
            }
        }
        let base_dir = &src_dir(spec, &rendered, base_dir);
        let render = |name: &str, body: &str| {
            unknown_fact(name, body)?;
            template::render(env, name, body, ctx)
        };
        let has_secret = |text: &str| (secrets.contains_secret)(text);
        let warn = |key: &str, message: String| {
            let mut d = spec.param_error(
                &spec.file,
                key,
                format!("step `{}`: {message}", spec.name),
                None,
            );
            d.severity = provision_engine::diagnostic::Severity::Warning;
            push_unique(&mut warnings.borrow_mut(), d);
        };
        let bctx = BuildCtx {
            host,
            inventory: inv,
            base_dir,
            render: &render,
            has_secret: &has_secret,
            warn: &warn,
        };
        match ctor(&rendered, &bctx) {
            Ok(step) => {
                runs_on.push(host.name.clone());
                per_host.push((host.name.clone(), step));
            }
            Err(e) => {
                let key = e.key.clone().unwrap_or_default();
                push_unique(
                    diagnostics,
                    spec.param_error(&spec.file, &key, e.message, e.help),
                );
            }
        }
    }
    let step: Box<dyn Step> = Box::new(PerHost {
        title: spec.name.clone(),
        hosts: per_host,
    });
    (step, runs_on, kept, on)
}

/// Target host to the host a step runs on for it (`on`).
type Delegates = std::collections::BTreeMap<String, String>;

/// The step with what its playbook entry adds around it (see [`Configured`]): its `timeout`,
/// the handlers its `notify` names (each once), what is decided when it is reached (with each
/// host's template context), and its rollout: its own `serial` and `max_fail_percentage`, else
/// the play's, and its `run_once`; and the host it runs on for each host (`on`).
fn configured(
    pb: &PlaybookFile,
    spec: &StepSpec,
    step: Box<dyn Step>,
    contexts: std::collections::BTreeMap<String, minijinja::Value>,
    on: Delegates,
    looped: Option<AtRunItem>,
) -> Box<dyn Step> {
    let mut c = Configured::new(step);
    c.timeout = spec.timeout;
    c.on = on;
    for n in &spec.notify {
        if !c.notifies.contains(&n.handler) {
            c.notifies.push(n.handler.clone());
        }
    }
    if spec.register.is_some()
        || spec.retry.is_some()
        || spec.when_at_run
        || !spec.rules.is_default()
    {
        c.at = Some(AtRun {
            register: spec.register.clone(),
            rules: spec.rules.clone(),
            looped,
            when: spec.when.clone().filter(|_| spec.when_at_run),
            retry: spec.retry.clone(),
            contexts,
        });
    }
    let own = &spec.rollout;
    let rollout = Rollout {
        serial: own.serial.clone().or_else(|| pb.rollout.serial.clone()),
        max_fail_percentage: own.max_fail_percentage.or(pb.rollout.max_fail_percentage),
        run_once: own.run_once,
    };
    if !rollout.is_default() {
        c.rollout = Some(rollout);
    }
    if c.adds_nothing() {
        return c.step;
    }
    Box::new(c)
}

/// Each host's pending-notifications file: the var `pending_handlers_file` (host or cluster
/// vars), an absolute path, else the default under /var/lib/provision.
fn pending_files(
    inv: &Inventory,
    diagnostics: &mut Vec<Diagnostic>,
) -> std::collections::BTreeMap<String, String> {
    let mut files = std::collections::BTreeMap::new();
    for host in &inv.hosts {
        let file = match inv.host_vars(host).get(handlers::PENDING_FILE_VAR) {
            None => handlers::DEFAULT_PENDING_FILE.to_string(),
            Some(toml::Value::String(s)) if s.starts_with('/') && !s.ends_with('/') => s.clone(),
            Some(other) => {
                push_unique(
                    diagnostics,
                    Diagnostic::error(
                        &inv.path,
                        (host.line, 1),
                        format!(
                            "host {}: var `{}` must be the absolute path of a file, not {other}",
                            host.name,
                            handlers::PENDING_FILE_VAR
                        ),
                    )
                    .with_help(format!(
                        "write {} = \"{}\" (where the host keeps handlers still to run), or leave it out",
                        handlers::PENDING_FILE_VAR,
                        handlers::DEFAULT_PENDING_FILE
                    )),
                );
                continue;
            }
        };
        files.insert(host.name.clone(), file);
    }
    files
}

/// One cluster step: `when` and `with` are evaluated once, cluster-wide (with the
/// repetition's item); a false `when` leaves the step out.
#[allow(clippy::too_many_arguments)]
fn compile_cluster_step(
    inv: &Inventory,
    spec: &StepSpec,
    rep: &looping::Repetition,
    secrets: &SecretsView<'_>,
    env: &minijinja::Environment<'static>,
    base_dir: &std::path::Path,
    ctor: ClusterStepCtor,
    claims: &std::cell::RefCell<Vec<Claimed>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Box<dyn Step>> {
    let ctx = rep.context(&cluster_context_scoped(inv, secrets.table, &spec.scope));
    if spec.when_at_run {
        // A cluster step plans over all its hosts at once: it cannot run on some of them.
        push_unique(
            diagnostics,
            Diagnostic::error(
                &spec.file,
                (spec.line, spec.column),
                format!(
                    "step `{}`: `when` reads a registered result, but `{}` decides over all its hosts at once",
                    spec.name, spec.uses
                ),
            )
            .with_help("decide with vars here (when = \"vars.x\"), or put the registered check on a host step before it (use = \"fail\" with when = \"probe.rc != 0\")"),
        );
        return None;
    }
    if let Some(expr) = &spec.when {
        match template::truthy(env, expr, &ctx) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                push_unique(diagnostics, when_error(spec, &e));
                return None;
            }
        }
    }
    let rendered =
        match template::render_toml(env, "with", &toml::Value::Table(spec.with.clone()), &ctx) {
            Ok(toml::Value::Table(t)) => t,
            Ok(_) => unreachable!("a table renders to a table"),
            Err(e) => {
                let key = e
                    .name
                    .strip_prefix("with.")
                    .map(|k| k.split('.').next().unwrap_or(k))
                    .unwrap_or("");
                push_unique(
                    diagnostics,
                    spec.param_error(
                        &spec.file,
                        key,
                        format!("step `{}`: {}", spec.name, e.message),
                        Some("define it in [vars] or in the secrets file".into()),
                    ),
                );
                return None;
            }
        };
    if let Some(d) = secret_in_argv(spec, &rendered, secrets) {
        push_unique(diagnostics, d);
        return None;
    }
    let base_dir = &src_dir(spec, &rendered, base_dir);
    let render = |name: &str, body: &str| template::render(env, name, body, &ctx);
    let has_secret = |text: &str| (secrets.contains_secret)(text);
    let claim = |key: &str, claim: Claim| {
        let at = spec
            .param_positions
            .get(key)
            .copied()
            .unwrap_or((spec.line, spec.column));
        claims.borrow_mut().push(Claimed {
            step: spec.name.clone(),
            file: spec.file.clone(),
            at,
            claim,
        });
    };
    let cctx = ClusterCtx {
        title: &spec.name,
        inventory: inv,
        hosts: spec.hosts.select(inv),
        base_dir,
        render: &render,
        has_secret: &has_secret,
        claim: &claim,
    };
    match ctor(&rendered, &cctx) {
        Ok(step) => Some(step),
        Err(e) => {
            let key = e.key.clone().unwrap_or_default();
            push_unique(
                diagnostics,
                spec.param_error(&spec.file, &key, e.message, e.help),
            );
            None
        }
    }
}

/// A step's claim, where it was made.
struct Claimed {
    step: String,
    file: std::path::PathBuf,
    at: (usize, usize),
    claim: Claim,
}

/// Claims of different steps that cannot both hold: a service that can run only on managers
/// while another step drains every manager (swarm would leave it pending forever).
fn conflicts(claims: &[Claimed]) -> Vec<Diagnostic> {
    let Some(drain) = claims.iter().find(|c| c.claim == Claim::DrainsManagers) else {
        return Vec::new();
    };
    claims
        .iter()
        .filter_map(|c| match &c.claim {
            Claim::ManagerOnly { stack, service, constraint } => Some(
                Diagnostic::error(
                    &c.file,
                    c.at,
                    format!(
                        "step `{}`: service `{service}` of stack `{stack}` can run only on a manager (`{constraint}`), and step `{}` drains every manager (drain_managers = true, line {}): it would never start",
                        c.step, drain.step, drain.at.0
                    ),
                )
                .with_help("place the service on a worker (the built-in Appwrite stack: appwrite_functions_node = \"<a worker's name>\" in [vars]), or set drain_managers = false"),
            ),
            Claim::DrainsManagers => None,
        })
        .collect()
}

/// A secret in a parameter that may become part of a command line (after rendering: a
/// `secrets.*` reference, or a var holding a secret's value), as an error at that parameter.
fn secret_in_argv(
    spec: &StepSpec,
    rendered: &toml::Table,
    secrets: &SecretsView<'_>,
) -> Option<Diagnostic> {
    let safe = crate::registry::stdin_params(&spec.uses);
    let (key, _) = rendered
        .iter()
        .filter(|(k, _)| !safe.contains(&k.as_str()))
        .find(|(_, v)| holds_secret(v, secrets))?;
    let help = match spec.uses.as_str() {
        "command" => format!(
            "pass it on stdin: stdin = \"{{{{ secrets.NAME }}}}\" and read it in `{key}` (e.g. `docker login --password-stdin`, `read -r pw`); or write it to a file with a `template` step (mode 0600) and point the command at the file"
        ),
        _ => "put it in a file with a `template` or `copy` step (mode 0600) and refer to the file, or pass it on stdin with a `command` step's `stdin`".to_string(),
    };
    Some(
        spec.param_error(
            &spec.file,
            key,
            format!(
                "step `{}`: `{key}` holds a secret, and `{key}` becomes part of a command line, which every user of the host can read (ps, /proc)",
                spec.name
            ),
            Some(help),
        ),
    )
}

fn holds_secret(v: &toml::Value, secrets: &SecretsView<'_>) -> bool {
    match v {
        toml::Value::String(s) => (secrets.contains_secret)(s),
        toml::Value::Array(a) => a.iter().any(|v| holds_secret(v, secrets)),
        toml::Value::Table(t) => t.values().any(|v| holds_secret(v, secrets)),
        other => (secrets.contains_secret)(&other.to_string()),
    }
}

fn push_unique(all: &mut Vec<Diagnostic>, d: Diagnostic) {
    if !all.contains(&d) {
        all.push(d);
    }
}

fn when_error(spec: &StepSpec, e: &TemplateError) -> Diagnostic {
    Diagnostic::error(&spec.file, (spec.line, spec.column), format!("step `{}`: cannot evaluate `when`: {}", spec.name, e.message))
        .with_help("`when` is a minijinja expression over vars, host, hosts and secrets, e.g. when = \"vars.use_lb\"")
}

fn with_error(spec: &StepSpec, e: &TemplateError, host: &Host) -> Diagnostic {
    // render_toml names nested values "with.KEY[.SUB]"; point at KEY's line.
    let key = e
        .name
        .strip_prefix("with.")
        .map(|k| k.split('.').next().unwrap_or(k))
        .unwrap_or("");
    spec.param_error(
        &spec.file,
        key,
        format!("step `{}`, host {}: {}", spec.name, host.name, e.message),
        Some("define it in [vars], in the host's vars, or in the secrets file".into()),
    )
}

/// The directory a step's relative paths resolve in: the playbook's for its own steps; for a
/// step an include brought in, where its rendered `src` exists first (its role's directory,
/// then each including file's), else its own file's directory.
fn src_dir(
    spec: &StepSpec,
    rendered: &toml::Table,
    playbook_dir: &std::path::Path,
) -> std::path::PathBuf {
    let src = rendered.get("src").and_then(toml::Value::as_str);
    spec.scope.base_dir(src, playbook_dir)
}

/// A template file reading a fact that does not exist: at its line, with the nearest fact.
fn unknown_fact(name: &str, body: &str) -> Result<(), TemplateError> {
    match host_facts::unknown_reads(body, true).first() {
        None => Ok(()),
        Some(u) => {
            let (message, help) = u.message();
            Err(TemplateError {
                name: name.to_string(),
                line: Some(provision_engine::diagnostic::line_col(body, u.at.start).0),
                message: format!("{message} ({help})"),
            })
        }
    }
}

/// A host for which the step's `when` is false.
struct Skipped(String);

impl HostStep for Skipped {
    fn gather(&self) -> Option<String> {
        None
    }

    fn check(&self, _: &Facts) -> Result<Check, StepError> {
        Ok(Check::Skip(self.0.clone()))
    }
}

/// How the transport reaches each inventory host.
pub fn targets(inv: &Inventory, sudo_password: Option<Arc<Zeroizing<String>>>) -> Vec<Target> {
    inv.hosts
        .iter()
        .map(|h| Target {
            name: h.name.clone(),
            address: h.address.clone(),
            port: Some(inv.ssh_port(h)),
            user: h.user.clone().or(inv.ssh.user.clone()),
            identity: inv.ssh.identity.clone(),
            proxy_jump: inv.ssh.proxy_jump.clone(),
            become_: if h.become_sudo || inv.ssh.become_sudo {
                Become::Sudo {
                    password: sudo_password.clone(),
                }
            } else {
                Become::No
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const INVENTORY: &str = "name = \"t\"\n\
        [[hosts]]\nname = \"web-1\"\naddress = \"10.0.0.1\"\nroles = [\"worker\"]\n\
        [[hosts]]\nname = \"db-1\"\naddress = \"10.0.0.2\"\nroles = [\"worker\"]\n\
        [groups.web]\nhosts = [\"web-1\"]\n[groups.prod]\nhosts = [\"web-1\", \"db-1\"]\n";

    fn compile_playbook(playbook: &str) -> Result<Compiled, ConfigError> {
        let inv = Inventory::parse(INVENTORY, Path::new("c.toml"), &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let pb = PlaybookFile::parse(playbook, Path::new("p.toml"), &known_steps())
            .unwrap_or_else(|e| panic!("{e}"));
        let secrets = toml::Table::new();
        compile(
            &inv,
            &pb,
            &SecretsView {
                table: &secrets,
                contains_secret: &|_| false,
            },
        )
    }

    /// Vars of an included step, weakest first: the role's defaults, the inventory's (cluster,
    /// then host), the include's. Each step runs only where its `when` sees the expected value.
    #[test]
    fn included_steps_see_role_defaults_under_inventory_vars_under_include_vars() {
        let dir = tempfile::tempdir().unwrap();
        let role = dir.path().join("roles/web");
        std::fs::create_dir_all(&role).unwrap();
        std::fs::write(
            role.join("defaults.toml"),
            "a = \"default\"\nb = \"default\"\nc = \"default\"\n",
        )
        .unwrap();
        let step = |name: &str, when: &str| {
            format!(
                "[[steps]]\nname = \"{name}\"\nuse = \"command\"\nwhen = \"{when}\"\nwith = {{ run = \"true\" }}\n"
            )
        };
        std::fs::write(
            role.join("steps.toml"),
            [
                step("c from the role", "vars.c == 'default'"),
                step("a from the inventory", "vars.a == 'cluster'"),
                step("b from the host", "vars.b == 'host'"),
                step("b from the include", "vars.b == 'include'"),
            ]
            .concat(),
        )
        .unwrap();
        let pb_path = dir.path().join("site.toml");
        std::fs::write(
            &pb_path,
            "[[steps]]\ninclude = \"roles/web\"\n\n\
             [[steps]]\ninclude = \"roles/web\"\nvars = { b = \"include\" }\nhosts = \"web\"\n",
        )
        .unwrap();
        // web-1 gets a host var `b`; the cluster a var `a`.
        let inventory = format!("{INVENTORY}[vars]\na = \"cluster\"\n").replacen(
            "roles = [\"worker\"]\n",
            "roles = [\"worker\"]\nvars = { b = \"host\" }\n",
            1,
        );
        let inv = Inventory::parse(&inventory, &dir.path().join("c.toml"), &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let pb = PlaybookFile::load(&pb_path, &known_steps()).unwrap_or_else(|e| panic!("{e}"));
        let secrets = toml::Table::new();
        let compiled = compile(
            &inv,
            &pb,
            &SecretsView {
                table: &secrets,
                contains_secret: &|_| false,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let runs: Vec<(String, Vec<String>)> = compiled
            .steps
            .iter()
            .zip(&compiled.origins)
            .map(|(s, o)| (s.title().to_string(), o.runs_on.clone()))
            .collect();
        let row = |t: &str, hosts: &[&str]| {
            (
                t.to_string(),
                hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            runs,
            [
                row("c from the role", &["web-1", "db-1"]),
                row("a from the inventory", &["web-1", "db-1"]),
                row("b from the host", &["web-1"]),
                row("b from the include", &[]),
                row("c from the role", &["web-1"]),
                row("a from the inventory", &["web-1"]),
                row("b from the host", &[]),
                row("b from the include", &["web-1"]),
            ]
        );
    }

    #[test]
    fn unknown_names_in_a_pattern_are_errors_at_the_hosts_value() {
        let err = compile_playbook(
            "[[steps]]\nuse = \"fail\"\nhosts = \"web:&prdo,!db-2\"\n\n\
             [[steps]]\nname = \"fine\"\nuse = \"fail\"\nhosts = \"web:&prod\"\n",
        )
        .err()
        .expect("refused");
        assert_eq!(
            err.to_string(),
            "p.toml:3:9: error: step `fail`: `hosts` names unknown groups or hosts: `prdo` (did you mean `prod`?), `db-2` (did you mean `db-1`?)\n  \
             help: a pattern names groups (prod, web), roles (storage, manager, worker, lb), `all`, `swarm` or host names of the inventory; `,` or `:` joins, `&` intersects, `!` excludes, `*` matches any text\n\n\
             1 error"
        );
    }

    #[test]
    fn a_glob_matching_nothing_is_a_warning_and_the_step_still_compiles() {
        let compiled =
            compile_playbook("[[steps]]\nuse = \"fail\"\nhosts = \"cache-*,web\"\n").unwrap();
        assert_eq!(compiled.steps[0].targets(), ["web-1"]);
        let warnings: Vec<String> = compiled.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            [
                "p.toml:3:9: warning: step `fail`: `cache-*` in `hosts` matches no host\n  \
              help: the step runs on what the rest of the pattern selects; check the glob"
            ]
        );
    }

    #[test]
    fn an_assert_that_cannot_be_evaluated_is_refused_at_its_parameter() {
        let err = compile_playbook(
            "[[steps]]\nuse = \"assert\"\nhosts = \"prod\"\nwith = { that = [\"vars.replicas >\"] }\n",
        )
        .err()
        .expect("refused");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "p.toml:4:10: error: cannot evaluate `vars.replicas >` for host web-1: syntax error"
            ),
            "{text}"
        );
    }

    /// A `when` over a registered result is not decided when compiling: the step is built for
    /// every selected host (listed on all of them) and decides per host when reached; a `when`
    /// over vars alone still is.
    #[test]
    fn a_when_over_a_registered_result_waits_for_the_run() {
        let compiled = compile_playbook(
            "[[steps]]\nuse = \"command\"\nregister = \"probe\"\nwith = { run = \"true\" }\n\
             [[steps]]\nuse = \"command\"\nwhen = \"probe.rc != 0 and 'web' in host.groups\"\nwith = { run = \"true\" }\n\
             [[steps]]\nuse = \"command\"\nwhen = \"'web' in host.groups\"\nwith = { run = \"true\" }\n\
             [[steps]]\nuse = \"command\"\nretries = 2\nwith = { run = \"true\" }\n",
        )
        .unwrap();
        let runs_on: Vec<&[String]> = compiled
            .origins
            .iter()
            .map(|o| o.runs_on.as_slice())
            .collect();
        assert_eq!(
            runs_on,
            [
                &["web-1".to_string(), "db-1".to_string()][..],
                &["web-1".to_string(), "db-1".to_string()][..],
                &["web-1".to_string()][..],
                &["web-1".to_string(), "db-1".to_string()][..],
            ]
        );
        let probe = compiled.steps[0].at_run().expect("registers");
        assert_eq!(probe.register.as_deref(), Some("probe"));
        assert_eq!(probe.when, None);
        let later = compiled.steps[1].at_run().expect("decided at run time");
        assert_eq!(
            later.when.as_deref(),
            Some("probe.rc != 0 and 'web' in host.groups")
        );
        let reg =
            |rc| -> std::collections::BTreeMap<String, provision_engine::registered::Registered> {
                [(
                    "probe".to_string(),
                    provision_engine::registered::Registered {
                        rc,
                        ..Default::default()
                    },
                )]
                .into()
            };
        // The host's own context (its groups) is read along with the result.
        assert!(later.when_holds("web-1", &reg(1)).unwrap());
        assert!(!later.when_holds("web-1", &reg(0)).unwrap());
        assert!(!later.when_holds("db-1", &reg(1)).unwrap());
        assert!(
            compiled.steps[2].at_run().is_none(),
            "decided when compiled"
        );
        let retried = compiled.steps[3].at_run().expect("retries");
        assert_eq!(retried.retry.as_ref().unwrap().retries, 2);
    }

    #[test]
    fn a_cluster_step_cannot_wait_for_a_registered_result() {
        let err = compile_playbook(
            "[[steps]]\nuse = \"command\"\nregister = \"probe\"\nwith = { run = \"true\" }\n\
             [[steps]]\nuse = \"swarm_init\"\nwhen = \"probe.rc == 0\"\n",
        )
        .err()
        .expect("refused");
        assert!(
            err.to_string().starts_with(
                "p.toml:5:1: error: step `swarm_init`: `when` reads a registered result, but `swarm_init` decides over all its hosts at once"
            ),
            "{err}"
        );
    }

    fn compile_facts(playbook: &str, facts: FactsSource<'_>) -> Result<Compiled, ConfigError> {
        let inv = Inventory::parse(INVENTORY, Path::new("c.toml"), &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let pb = PlaybookFile::parse(playbook, Path::new("p.toml"), &known_steps())
            .unwrap_or_else(|e| panic!("{e}"));
        let secrets = toml::Table::new();
        compile_with_facts(
            &inv,
            &pb,
            &SecretsView {
                table: &secrets,
                contains_secret: &|_| false,
            },
            facts,
        )
    }

    fn hosts(names: &[&str]) -> std::collections::BTreeSet<String> {
        names.iter().map(|h| h.to_string()).collect()
    }

    /// The hosts a run gathers facts on are exactly those whose templates or conditions read
    /// them: in `when`, in `with`, in a `when` or `until` decided when the step is reached.
    #[test]
    fn which_hosts_read_facts() {
        let none = compile_playbook(
            "[[steps]]\nuse = \"command\"\nwith = { run = \"echo {{ host.name }}\" }\n",
        )
        .unwrap();
        assert_eq!(none.reads_facts, hosts(&[]));
        let with = compile_playbook(
            "[[steps]]\nuse = \"command\"\nhosts = \"web\"\nwith = { run = \"echo {{ facts.cpus }}\" }\n",
        )
        .unwrap();
        assert_eq!(with.reads_facts, hosts(&["web-1"]));
        // A `when` reading facts reads them on every host it is evaluated for, true or not.
        let when = compile_playbook(
            "[[steps]]\nuse = \"command\"\nwhen = \"facts.os == 'ubuntu'\"\nwith = { run = \"true\" }\n",
        )
        .unwrap();
        assert_eq!(when.reads_facts, hosts(&["db-1", "web-1"]));
        assert_eq!(
            when.origins[0].runs_on,
            Vec::<String>::new(),
            "placeholders are Debian"
        );
        // Short-circuited: facts are not read where `when` is decided before them.
        let guarded = compile_playbook(
            "[[steps]]\nuse = \"command\"\nwhen = \"'web' in host.groups and facts.cpus > 0\"\nwith = { run = \"true\" }\n",
        )
        .unwrap();
        assert_eq!(guarded.reads_facts, hosts(&["web-1"]));
        let at_run = compile_playbook(
            "[[steps]]\nuse = \"command\"\nhosts = \"db-1\"\nregister = \"p\"\nwith = { run = \"true\" }\n\
             [[steps]]\nuse = \"command\"\nhosts = \"db-1\"\nwhen = \"p.rc == 0 and facts.cpus > 1\"\nwith = { run = \"true\" }\n",
        )
        .unwrap();
        assert_eq!(at_run.reads_facts, hosts(&["db-1"]));
    }

    /// Gathered facts are each host's own, typed; a host without gathered facts reads the
    /// placeholders.
    #[test]
    fn gathered_facts_decide_and_render_per_host() {
        let mut ubuntu = HostFacts::placeholder();
        ubuntu.os = "ubuntu".into();
        ubuntu.cpus = 8;
        let gathered = std::collections::BTreeMap::from([("db-1".to_string(), ubuntu)]);
        let compiled = compile_facts(
            "[[steps]]\nuse = \"assert\"\nwhen = \"facts.os == 'ubuntu'\"\nwith = { that = [\"facts.cpus * 2 == 16\", \"facts.memory_mb == 1024\"] }\n\
             [[steps]]\nuse = \"assert\"\nwith = { that = [\"facts.cpus in [1, 8]\"] }\n",
            FactsSource::Gathered(&gathered),
        )
        .unwrap();
        assert_eq!(compiled.origins[0].runs_on, ["db-1"]);
        assert_eq!(compiled.origins[1].runs_on, ["web-1", "db-1"]);
        assert_eq!(compiled.reads_facts, hosts(&["db-1", "web-1"]));
        // Each host's assert decided over its own facts: db-1 has 8 CPUs, web-1 the placeholder's 1.
        let compiled = compile_facts(
            "[[steps]]\nuse = \"assert\"\nwith = { that = [\"facts.cpus == 8\"] }\n",
            FactsSource::Gathered(&gathered),
        )
        .unwrap();
        let plan = compiled.steps[0].plan(&Default::default());
        assert!(
            matches!(plan.hosts["db-1"], Ok(Check::Ok(_))),
            "{:?}",
            plan.hosts
        );
        assert!(plan.hosts["web-1"].is_err(), "{:?}", plan.hosts);
    }

    /// A template file reading a fact that does not exist is refused at the step's `src`,
    /// naming the template's line and the nearest fact.
    #[test]
    fn a_template_file_reading_an_unknown_fact_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("motd.j2"),
            "os {{ facts.os }}\nram {{ facts.memory }}\n",
        )
        .unwrap();
        let pb_path = dir.path().join("p.toml");
        std::fs::write(
            &pb_path,
            "[[steps]]\nuse = \"template\"\nhosts = \"web\"\nwith = { src = \"motd.j2\", dest = \"/etc/motd\" }\n",
        )
        .unwrap();
        let inv = Inventory::parse(INVENTORY, Path::new("c.toml"), &Default::default()).unwrap();
        let pb = PlaybookFile::load(&pb_path, &known_steps()).unwrap_or_else(|e| panic!("{e}"));
        let secrets = toml::Table::new();
        let view = SecretsView {
            table: &secrets,
            contains_secret: &|_| false,
        };
        let err = compile(&inv, &pb, &view)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains(":4:10: error: cannot render template: motd.j2:2: `facts.memory` is not a fact (did you mean `facts.memory_mb`?)"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("motd.j2"),
            "os {{ facts.os }} {{ facts.os_version }}\n",
        )
        .unwrap();
        let ok = compile(&inv, &pb, &view).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.reads_facts, hosts(&["web-1"]));
    }

    /// The schedule names compiled steps: every item of a looped entry `after` names, none of
    /// the steps a selection dropped, and the playbook's strategy.
    #[test]
    fn the_schedule_maps_after_onto_compiled_steps() {
        let text = "strategy = \"pipelined\"\n\
            [[steps]]\nname = \"dirs\"\nuse = \"command\"\nhosts = \"web-1\"\nloop = [\"a\", \"b\"]\nwith = { run = \"mkdir {{ item }}\" }\n\
            [[steps]]\nname = \"skipped\"\nuse = \"command\"\nhosts = \"db-1\"\ntags = [\"x\"]\nwith = { run = \"true\" }\n\
            [[steps]]\nname = \"use\"\nuse = \"command\"\nhosts = \"db-1\"\nafter = [\"dirs\", \"skipped\"]\nwith = { run = \"true\" }\n";
        let pb = PlaybookFile::parse(text, Path::new("p.toml"), &known_steps()).unwrap();
        let mut compiled = compile_playbook(text).unwrap();
        let s = compiled.schedule(&pb);
        assert_eq!(s.strategy, provision_engine::pipeline::Strategy::Pipelined);
        assert_eq!(s.after, vec![vec![], vec![], vec![], vec![0, 1, 2]]);
        compiled.retain_chosen(&[true, false, true]);
        assert_eq!(
            compiled.schedule(&pb).after,
            vec![vec![], vec![], vec![0, 1]]
        );
    }
}
