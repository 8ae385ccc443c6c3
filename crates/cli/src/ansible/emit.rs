//! The converted playbook and inventory as TOML text, written the way the README writes them
//! (one `[[steps]]` block per step, `with` as an inline table), so the output reads like a
//! hand-written playbook. Values are printed by the `toml` crate: quoting is never ours.

use super::convert::{Converted, Step};
use super::inventory::Inventory;

fn v(x: impl Into<toml::Value>) -> String {
    x.into().to_string()
}

fn step_lines(kind: &str, s: &Step) -> Vec<String> {
    let mut l = vec![format!("[[{kind}]]")];
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

/// The playbook file.
pub fn playbook(c: &Converted, source: &str) -> String {
    let mut out = format!(
        "# Converted from {source} by `provision import-ansible` (docs/porting-from-ansible.md).\n# Steps written commented out could not be converted whole: the comment above each says why.\n"
    );
    for s in &c.steps {
        push_step(&mut out, "steps", s);
    }
    for h in &c.handlers {
        push_step(&mut out, "handlers", h);
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
