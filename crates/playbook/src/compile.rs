//! The playbook compiler: inventory + playbook file (+ secrets) to the ordered steps
//! the engine runs. Everything is checked here, before any host is contacted.

use crate::ctx::{BuildCtx, Claim, ClusterCtx, ClusterStepCtor};
use crate::registry::{cluster_step, host_step, known_steps};
use provision_engine::diagnostic::{ConfigError, Diagnostic};
use provision_engine::handlers::{self, Handlers};
use provision_engine::inventory::{Host, Inventory};
use provision_engine::playbook_file::{FLUSH_HANDLERS, PlaybookFile, StepSpec};
use provision_engine::step::{
    Check, Facts, FlushHandlers, HostStep, Notifying, PerHost, Step, StepError, Timed,
};
use provision_engine::template::{self, TemplateError};
use provision_transport::{Become, Target};
use std::sync::Arc;
use zeroize::Zeroizing;

pub(crate) mod context;
pub use context::{Shared, cluster_context, host_context, host_context_shared};

/// A playbook ready to run.
pub struct Compiled {
    pub steps: Vec<Box<dyn Step>>,
    pub warnings: Vec<Diagnostic>,
    /// `[[handlers]]`, compiled like steps, and where each host keeps pending notifications.
    pub handlers: Handlers,
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
    // Every missing secret is named at its declaration, before templates that read it fail
    // one by one with "undefined".
    let needed = crate::declared_secrets::needed(inv, pb, secrets.table)
        .map_err(|diagnostics| ConfigError { diagnostics })?;
    let missing = crate::declared_secrets::problems(inv, pb, &needed);
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
    let contexts: Vec<(String, minijinja::Value)> = inv
        .hosts
        .iter()
        .map(|h| (h.name.clone(), host_context_shared(inv, h, &shared)))
        .collect();

    // Handlers compile like steps, after them, into their own list.
    let mut handler_steps: Vec<Box<dyn Step>> = Vec::new();
    let all_specs = pb.steps.iter().map(|s| (s, false));
    for (spec, is_handler) in all_specs.chain(pb.handlers.iter().map(|s| (s, true))) {
        let steps = if is_handler {
            &mut handler_steps
        } else {
            &mut steps
        };
        if spec.uses == FLUSH_HANDLERS {
            steps.push(Box::new(FlushHandlers {
                title: spec.name.clone(),
            }));
            continue;
        }
        let unknown = spec.hosts.unknown_names(inv);
        if !unknown.is_empty() {
            diagnostics.push(
                Diagnostic::error(&pb.path, (spec.line, spec.column), format!("step `{}` selects unknown hosts: {}", spec.name, unknown.join(", ")))
                    .with_help("use `all`, a role (storage, manager, worker, lb), `swarm`, or host names from the inventory"),
            );
            continue;
        }
        if let Some(cctor) = cluster_step(&spec.uses) {
            if let Some(step) = compile_cluster_step(
                inv,
                pb,
                spec,
                secrets,
                &env,
                &base_dir,
                cctor,
                &claims,
                &mut diagnostics,
            ) {
                steps.push(notifying(spec, timed(spec, step)));
            }
            continue;
        }
        let Some(ctor) = host_step(&spec.uses) else {
            diagnostics.push(
                Diagnostic::error(
                    &pb.path,
                    (spec.line, spec.column),
                    format!("unknown step `{}`", spec.uses),
                )
                .with_help(format!("built-in steps: {}", known_steps().join(", "))),
            );
            continue;
        };
        let mut per_host: Vec<(String, Box<dyn HostStep>)> = Vec::new();
        for host in spec.hosts.select(inv) {
            let ctx = &contexts
                .iter()
                .find(|(n, _)| *n == host.name)
                .expect("every host has a context")
                .1;
            if let Some(expr) = &spec.when {
                match template::truthy(&env, expr, ctx) {
                    Ok(true) => {}
                    Ok(false) => {
                        per_host.push((
                            host.name.clone(),
                            Box::new(Skipped(format!("`when = {expr}` is false"))),
                        ));
                        continue;
                    }
                    Err(e) => {
                        push_unique(&mut diagnostics, when_error(pb, spec, &e));
                        continue;
                    }
                }
            }
            let rendered = match template::render_toml(
                &env,
                "with",
                &toml::Value::Table(spec.with.clone()),
                ctx,
            ) {
                Ok(toml::Value::Table(t)) => t,
                Ok(_) => unreachable!("a table renders to a table"),
                Err(e) => {
                    push_unique(&mut diagnostics, with_error(pb, spec, &e, host));
                    continue;
                }
            };
            if let Some(d) = secret_in_argv(pb, spec, &rendered, secrets) {
                push_unique(&mut diagnostics, d);
                continue;
            }
            let render = |name: &str, body: &str| template::render(&env, name, body, ctx);
            let has_secret = |text: &str| (secrets.contains_secret)(text);
            let warn = |key: &str, message: String| {
                let mut d = spec.param_error(
                    &pb.path,
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
                base_dir: &base_dir,
                render: &render,
                has_secret: &has_secret,
                warn: &warn,
            };
            match ctor(&rendered, &bctx) {
                Ok(step) => per_host.push((host.name.clone(), step)),
                Err(e) => {
                    let key = e.key.clone().unwrap_or_default();
                    push_unique(
                        &mut diagnostics,
                        spec.param_error(&pb.path, &key, e.message, e.help),
                    );
                }
            }
        }
        steps.push(notifying(
            spec,
            timed(
                spec,
                Box::new(PerHost {
                    title: spec.name.clone(),
                    hosts: per_host,
                }),
            ),
        ));
    }
    let pending_files = pending_files(inv, &mut diagnostics);
    for d in conflicts(pb, &claims.into_inner()) {
        push_unique(&mut diagnostics, d);
    }
    if diagnostics.is_empty() {
        Ok(Compiled {
            steps,
            warnings: warnings.into_inner(),
            handlers: Handlers {
                steps: handler_steps,
                pending_files,
            },
        })
    } else {
        Err(ConfigError { diagnostics })
    }
}

/// One cluster step: `when` and `with` are evaluated once, cluster-wide; a false
/// `when` leaves the step out.
/// The step with the playbook's `timeout`, when it sets one.
fn timed(spec: &StepSpec, step: Box<dyn Step>) -> Box<dyn Step> {
    match spec.timeout {
        Some(timeout) => Box::new(Timed { step, timeout }),
        None => step,
    }
}

/// The step with the handlers its `notify` names, when it names any.
fn notifying(spec: &StepSpec, step: Box<dyn Step>) -> Box<dyn Step> {
    if spec.notify.is_empty() {
        return step;
    }
    let mut handlers: Vec<String> = Vec::new();
    for n in &spec.notify {
        if !handlers.contains(&n.handler) {
            handlers.push(n.handler.clone());
        }
    }
    Box::new(Notifying { step, handlers })
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

#[allow(clippy::too_many_arguments)]
fn compile_cluster_step(
    inv: &Inventory,
    pb: &PlaybookFile,
    spec: &StepSpec,
    secrets: &SecretsView<'_>,
    env: &minijinja::Environment<'static>,
    base_dir: &std::path::Path,
    ctor: ClusterStepCtor,
    claims: &std::cell::RefCell<Vec<Claimed>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Box<dyn Step>> {
    let ctx = cluster_context(inv, secrets.table);
    if let Some(expr) = &spec.when {
        match template::truthy(env, expr, &ctx) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                push_unique(diagnostics, when_error(pb, spec, &e));
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
                        &pb.path,
                        key,
                        format!("step `{}`: {}", spec.name, e.message),
                        Some("define it in [vars] or in the secrets file".into()),
                    ),
                );
                return None;
            }
        };
    if let Some(d) = secret_in_argv(pb, spec, &rendered, secrets) {
        push_unique(diagnostics, d);
        return None;
    }
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
                spec.param_error(&pb.path, &key, e.message, e.help),
            );
            None
        }
    }
}

/// A step's claim, where it was made.
struct Claimed {
    step: String,
    at: (usize, usize),
    claim: Claim,
}

/// Claims of different steps that cannot both hold: a service that can run only on managers
/// while another step drains every manager (swarm would leave it pending forever).
fn conflicts(pb: &PlaybookFile, claims: &[Claimed]) -> Vec<Diagnostic> {
    let Some(drain) = claims.iter().find(|c| c.claim == Claim::DrainsManagers) else {
        return Vec::new();
    };
    claims
        .iter()
        .filter_map(|c| match &c.claim {
            Claim::ManagerOnly { stack, service, constraint } => Some(
                Diagnostic::error(
                    &pb.path,
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
    pb: &PlaybookFile,
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
            &pb.path,
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

fn when_error(pb: &PlaybookFile, spec: &StepSpec, e: &TemplateError) -> Diagnostic {
    Diagnostic::error(&pb.path, (spec.line, spec.column), format!("step `{}`: cannot evaluate `when`: {}", spec.name, e.message))
        .with_help("`when` is a minijinja expression over vars, host, hosts and secrets, e.g. when = \"vars.use_lb\"")
}

fn with_error(pb: &PlaybookFile, spec: &StepSpec, e: &TemplateError, host: &Host) -> Diagnostic {
    // render_toml names nested values "with.KEY[.SUB]"; point at KEY's line.
    let key = e
        .name
        .strip_prefix("with.")
        .map(|k| k.split('.').next().unwrap_or(k))
        .unwrap_or("");
    spec.param_error(
        &pb.path,
        key,
        format!("step `{}`, host {}: {}", spec.name, host.name, e.message),
        Some("define it in [vars], in the host's vars, or in the secrets file".into()),
    )
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
