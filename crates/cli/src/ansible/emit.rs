//! The converted playbook and inventory as TOML text, written the way the README writes them
//! (one `[[steps]]` block per step, `with` as an inline table), so the output reads like a
//! hand-written playbook. Values are printed by the `toml` crate: quoting is never ours.

use super::convert::{OutFile, RoleDefaults, Step};
use super::inventory::Inventory;

fn v(x: impl Into<toml::Value>) -> String {
    x.into().to_string()
}

/// A condition: the constants as TOML booleans (`changed_when = false`), else the expression.
fn cond(e: &str) -> String {
    match e {
        "true" | "false" => e.to_string(),
        _ => v(e),
    }
}

fn step_lines(kind: &str, s: &Step) -> Vec<String> {
    let mut l = vec![format!("[[{kind}]]")];
    if let Some(inc) = &s.include {
        l.push(format!("include = {}", v(inc.as_str())));
        if let Some(h) = &s.hosts {
            l.push(format!("hosts = {}", v(h.as_str())));
        }
        if let Some(w) = &s.when {
            l.push(format!("when = {}", v(w.as_str())));
        }
        if !s.tags.is_empty() {
            l.push(format!("tags = {}", v(s.tags.clone())));
        }
        if !s.vars.is_empty() {
            l.push(format!("vars = {}", toml::Value::Table(s.vars.clone())));
        }
        return l;
    }
    if let Some(n) = &s.name {
        l.push(format!("name = {}", v(n.as_str())));
    }
    l.push(format!("use = {}", v(s.use_.as_str())));
    if let Some(h) = &s.hosts {
        l.push(format!("hosts = {}", v(h.as_str())));
    }
    if let Some(w) = &s.when {
        l.push(format!("when = {}", v(w.as_str())));
    }
    if let Some(t) = s.timeout {
        l.push(format!("timeout = {t}"));
    }
    if !s.tags.is_empty() {
        l.push(format!("tags = {}", v(s.tags.clone())));
    }
    if let Some(lp) = &s.loop_ {
        l.push(format!("loop = {lp}"));
    }
    if let Some(lv) = &s.loop_var {
        l.push(format!("loop_var = {}", v(lv.as_str())));
    }
    if let Some(ll) = &s.loop_label {
        l.push(format!("loop_label = {}", v(ll.as_str())));
    }
    match s.notify.as_slice() {
        [] => {}
        [one] => l.push(format!("notify = {}", v(one.as_str()))),
        many => l.push(format!("notify = {}", v(many.to_vec()))),
    }
    if let Some(r) = &s.register {
        l.push(format!("register = {}", v(r.as_str())));
    }
    if let Some(r) = s.retries {
        l.push(format!("retries = {r}"));
    }
    if let Some(d) = s.delay {
        l.push(format!("delay = {d}"));
    }
    if let Some(u) = &s.until {
        l.push(format!("until = {}", v(u.as_str())));
    }
    if s.run_once {
        l.push("run_once = true".into());
    }
    if let Some(on) = &s.on {
        l.push(format!("on = {}", v(on.as_str())));
    }
    if s.ignore_errors {
        l.push("ignore_errors = true".into());
    }
    if let Some(f) = &s.failed_when {
        l.push(format!("failed_when = {}", cond(f)));
    }
    if let Some(c) = &s.changed_when {
        l.push(format!("changed_when = {}", cond(c)));
    }
    if !s.with.is_empty() {
        l.push(format!("with = {}", toml::Value::Table(s.with.clone())));
    }
    l
}

fn push_step(out: &mut String, kind: &str, s: &Step) {
    out.push('\n');
    for c in &s.comments {
        out.push_str(&format!("# {c}\n"));
    }
    for line in step_lines(kind, s) {
        if s.disabled {
            out.push_str("# ");
        }
        out.push_str(&line);
        out.push('\n');
    }
}

/// A file of steps and handlers: the playbook, a role's steps.toml or handlers.toml, a task file.
pub fn file(f: &OutFile) -> String {
    let mut out = format!(
        "# Converted from {} by `provision import-ansible` (docs/porting-from-ansible.md).\n# Steps written commented out could not be converted whole: the comment above each says why.\n",
        f.source
    );
    if !f.top.is_empty() {
        out.push('\n');
    }
    for (k, val) in &f.top {
        if k == "strategy" {
            // Ansible's `free` ignores what a task needs of other hosts; provision waits for it
            // only where the playbook says so.
            out.push_str("# From Ansible's `strategy: free`: each step waits only for the earlier steps on its\n# hosts. A step that needs another host's earlier step (a join needs the init) must say\n# so: after = [\"step name\"].\n");
        }
        out.push_str(&format!("{k} = {val}\n"));
    }
    for s in &f.steps {
        push_step(&mut out, "steps", s);
    }
    for h in &f.handlers {
        push_step(&mut out, "handlers", h);
    }
    out
}

/// A role's defaults.toml: plain TOML, the weakest vars of the role's steps.
pub fn role_defaults(d: &RoleDefaults) -> String {
    let mut out = format!(
        "# Converted from {} by `provision import-ansible`.\n# The role's defaults: the inventory's vars and the include's `vars` win over them.\n",
        d.source
    );
    for (k, val) in &d.vars {
        out.push_str(&format!("{} = {val}\n", toml_key(k)));
    }
    out
}

/// A `[vars]` table (the playbook's vars and role defaults over the inventory's `all` vars).
fn vars_table(vars: &toml::Table) -> String {
    let mut out = String::from("[vars]\n");
    for (k, val) in vars {
        out.push_str(&format!("{} = {val}\n", toml_key(k)));
    }
    out
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        v(k)
    }
}

/// Vars alone, when no inventory was given: to paste into a cluster file.
pub fn vars_only(vars: &toml::Table) -> String {
    format!(
        "# The playbook's vars and its roles' defaults: add them to your cluster.toml.\n{}",
        vars_table(vars)
    )
}

/// The cluster file: `name`, `playbook`, `[ssh]`, `[vars]`, groups, hosts.
pub fn cluster(
    inv: &Inventory,
    vars: &toml::Table,
    name: &str,
    become_: bool,
    source: &str,
) -> String {
    let mut out = format!(
        "# Converted from {source} by `provision import-ansible`.\nname = {}\nplaybook = \"playbook.toml\"\n\n[ssh]\n",
        v(name)
    );
    if let Some(u) = &inv.user {
        out.push_str(&format!("user = {}\n", v(u.as_str())));
    }
    if (become_ || inv.become_) && inv.user.as_deref() != Some("root") {
        out.push_str("become = \"sudo\"    # the playbook used `become`\n");
    }
    if !vars.is_empty() {
        out.push('\n');
        out.push_str(&vars_table(vars));
    }
    for (g, def) in &inv.groups {
        out.push_str(&format!("\n[groups.{}]\n", toml_key(g)));
        out.push_str(&format!("hosts = {}\n", v(def.hosts.clone())));
        if !def.children.is_empty() {
            out.push_str(&format!("children = {}\n", v(def.children.clone())));
        }
        if !def.vars.is_empty() {
            out.push_str(&format!(
                "vars = {}\n",
                toml::Value::Table(def.vars.clone())
            ));
        }
    }
    for h in &inv.hosts {
        out.push_str(&format!("\n[[hosts]]\nname = {}\n", v(h.name.as_str())));
        out.push_str(&format!(
            "address = {}\n",
            v(h.address.clone().unwrap_or_else(|| h.name.clone()))
        ));
        if let Some(p) = h.port {
            out.push_str(&format!("port = {p}\n"));
        }
        if let Some(u) = &h.user {
            out.push_str(&format!("user = {}\n", v(u.as_str())));
        }
        out.push_str("roles = [\"worker\"]\n");
        if !h.vars.is_empty() {
            out.push_str(&format!("vars = {}\n", toml::Value::Table(h.vars.clone())));
        }
    }
    out
}
