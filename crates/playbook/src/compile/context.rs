//! The template contexts (`vars`, `host`, `hosts`, `cluster`, `secrets`) that steps and the
//! playbook's `when`/`with` are rendered in: apart from the compiler, so that what reads them
//! (the declared secrets' `when`) does not depend on the compiler that depends on it.

use provision_engine::inventory::{Host, Inventory};
use provision_engine::playbook_file::Scope;

/// The template context of one host: `vars`, `host`, `hosts`, `cluster`, `secrets`.
pub fn host_context(inv: &Inventory, host: &Host, secrets: &toml::Table) -> minijinja::Value {
    host_context_shared(inv, host, &Shared::new(inv, secrets))
}

/// The parts of a template context every host sees: built once per run and
/// shared (minijinja values are reference-counted), so that 1000 hosts do not
/// each copy the 1000-host list.
pub struct Shared {
    hosts: minijinja::Value,
    cluster: minijinja::Value,
    secrets: minijinja::Value,
}

impl Shared {
    pub fn new(inv: &Inventory, secrets: &toml::Table) -> Self {
        Shared {
            hosts: minijinja::Value::from(minijinja::value::Serde(hosts(inv))),
            cluster: minijinja::Value::from(minijinja::value::Serde(cluster(inv))),
            secrets: minijinja::Value::from(minijinja::value::Serde(secrets)),
        }
    }
}

pub fn host_context_shared(inv: &Inventory, host: &Host, shared: &Shared) -> minijinja::Value {
    host_context_scoped(inv, host, shared, &Scope::default())
}

/// A host's context for a step an include brought in: its roles' defaults under the
/// inventory's vars, its includes' vars over them.
pub fn host_context_scoped(
    inv: &Inventory,
    host: &Host,
    shared: &Shared,
    scope: &Scope,
) -> minijinja::Value {
    let mut vars = scope.defaults.clone();
    vars.extend(inv.host_vars(host));
    vars.extend(scope.vars.clone());
    let host_table = vars
        .remove("host")
        .unwrap_or_else(|| toml::Value::Table(Default::default()));
    let map: std::collections::BTreeMap<&str, minijinja::Value> = [
        (
            "vars",
            minijinja::Value::from(minijinja::value::Serde(vars)),
        ),
        (
            "host",
            minijinja::Value::from(minijinja::value::Serde(host_table)),
        ),
        ("hosts", shared.hosts.clone()),
        ("cluster", shared.cluster.clone()),
        ("secrets", shared.secrets.clone()),
    ]
    .into_iter()
    .collect();
    minijinja::Value::from(map)
}

/// The context of cluster steps: like a host's, without `host`.
pub fn cluster_context(inv: &Inventory, secrets: &toml::Table) -> minijinja::Value {
    cluster_context_scoped(inv, secrets, &Scope::default())
}

/// The cluster context for a step an include brought in, its vars layered as a host's.
pub fn cluster_context_scoped(
    inv: &Inventory,
    secrets: &toml::Table,
    scope: &Scope,
) -> minijinja::Value {
    let mut vars = scope.defaults.clone();
    vars.extend(inv.vars.clone());
    vars.extend(scope.vars.clone());
    let mut ctx = toml::Table::new();
    ctx.insert("vars".into(), toml::Value::Table(vars));
    ctx.insert("hosts".into(), toml::Value::Array(hosts(inv)));
    ctx.insert("cluster".into(), toml::Value::Table(cluster(inv)));
    ctx.insert("secrets".into(), toml::Value::Table(secrets.clone()));
    minijinja::Value::from(minijinja::value::Serde(ctx))
}

/// `hosts`: every host's `host` table, in inventory order.
fn hosts(inv: &Inventory) -> Vec<toml::Value> {
    inv.hosts
        .iter()
        .filter_map(|h| inv.host_vars(h).remove("host"))
        .collect()
}

/// `cluster`: the cluster's name.
fn cluster(inv: &Inventory) -> toml::Table {
    let mut cluster = toml::Table::new();
    cluster.insert("name".into(), inv.name.clone().into());
    cluster
}
