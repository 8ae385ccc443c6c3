//! `on = "HOST"` when the playbook is compiled: the host a step runs on for each of its hosts,
//! rendered with that host's context and checked against the inventory, and the steps where it
//! means nothing (the cluster steps, which decide over several hosts and run their commands
//! where the swarm needs them).

use provision_engine::diagnostic::{Diagnostic, did_you_mean};
use provision_engine::inventory::{Host, Inventory};
use provision_engine::playbook_file::{On, StepSpec};
use provision_engine::template;

/// The host `spec` runs on for `host`: None when it has no `on` or names `host` itself (the
/// step runs there anyway); an error at `on` when it names no host of the inventory.
pub(super) fn delegate_of(
    env: &minijinja::Environment<'static>,
    inv: &Inventory,
    spec: &StepSpec,
    host: &Host,
    ctx: &minijinja::Value,
) -> Result<Option<String>, Diagnostic> {
    let Some(on) = &spec.on else {
        return Ok(None);
    };
    let templated = on.host.contains("{{") || on.host.contains("{%");
    let name = if templated {
        template::render(env, "on", &on.host, ctx).map_err(|e| {
            error(
                spec,
                on,
                format!(
                    "step `{}`, host {}: `on`: {}",
                    spec.name, host.name, e.message
                ),
                "define it in [vars], in the host's vars, or write the host's name".into(),
            )
        })?
    } else {
        on.host.clone()
    };
    let name = name.trim();
    if inv.host(name).is_some() {
        return Ok((name != host.name).then(|| name.to_string()));
    }
    let what = if templated {
        format!(
            "step `{}`, host {}: `on = \"{}\"` is `{name}`",
            spec.name, host.name, on.host
        )
    } else {
        format!("step `{}`: `on` names `{name}`", spec.name)
    };
    let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    let help = if name.is_empty() {
        "`on` must name one host of the inventory".to_string()
    } else if let Some(m) = did_you_mean(name, &names) {
        format!("did you mean `{m}`?")
    } else if inv.group(name).is_some() {
        format!(
            "`{name}` is a group: `on` takes one host, e.g. on = \"{}\"",
            inv.group(name)
                .and_then(|g| g.hosts.first())
                .map_or(names[0], String::as_str)
        )
    } else {
        format!("hosts of the inventory: {}", names.join(", "))
    };
    let message = if name.is_empty() {
        format!("{what}: an empty host name")
    } else {
        format!("{what}, which is no host of the inventory")
    };
    Err(error(spec, on, message, help))
}

/// `on` on a cluster step (`uses`): an error at `on`.
pub(super) fn refuse_on_cluster_step(spec: &StepSpec) -> Option<Diagnostic> {
    let on = spec.on.as_ref()?;
    Some(error(
        spec,
        on,
        format!(
            "step `{}`: `on` cannot be used with `{}`, which decides over several hosts at once and runs each command where the swarm needs it",
            spec.name, spec.uses
        ),
        "remove `on`; `on` is for steps that work on one host at a time (command, copy, template, ...)".into(),
    ))
}

fn error(spec: &StepSpec, on: &On, message: String, help: String) -> Diagnostic {
    Diagnostic::error(&spec.file, on.at, message).with_help(help)
}
