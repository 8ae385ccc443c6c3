//! An Ansible inventory (INI or YAML) to provision's `cluster.toml`: hosts with their connection
//! vars (`ansible_host`, `ansible_port`, `ansible_user`), groups with `children` and `vars`,
//! `all` vars as `[vars]`. Every host gets `roles = ["worker"]`: a provision host needs a role
//! (roles are the swarm's), and a plain playbook does not read it.

use super::convert::Problem;
use super::yaml::{self, Node, V};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct HostDef {
    pub name: String,
    pub address: Option<String>,
    pub port: Option<i64>,
    pub user: Option<String>,
    pub vars: toml::Table,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct GroupDef {
    pub hosts: Vec<String>,
    pub children: Vec<String>,
    pub vars: toml::Table,
}

#[derive(Debug, Default)]
pub struct Inventory {
    /// In first-seen order.
    pub hosts: Vec<HostDef>,
    pub groups: BTreeMap<String, GroupDef>,
    pub all_vars: toml::Table,
    /// `ansible_user` of `all`: the `[ssh]` user.
    pub user: Option<String>,
    /// `ansible_become` of `all`.
    pub become_: bool,
    pub problems: Vec<Problem>,
    pub notes: Vec<Problem>,
}

/// Names provision reserves for its own selectors (roles, `all`, `swarm`).
const RESERVED: &[&str] = &["all", "swarm", "storage", "manager", "worker", "lb"];

impl Inventory {
    pub fn var_names(&self) -> impl Iterator<Item = String> + '_ {
        self.all_vars
            .keys()
            .chain(self.groups.values().flat_map(|g| g.vars.keys()))
            .chain(self.hosts.iter().flat_map(|h| h.vars.keys()))
            .cloned()
    }

    fn host(&mut self, name: &str) -> &mut HostDef {
        if let Some(i) = self.hosts.iter().position(|h| h.name == name) {
            return &mut self.hosts[i];
        }
        self.hosts.push(HostDef {
            name: name.to_string(),
            ..HostDef::default()
        });
        self.hosts.last_mut().expect("just pushed")
    }

    fn problem(&mut self, file: &Path, line: usize, what: impl Into<String>) {
        self.problems.push(Problem {
            file: file.to_path_buf(),
            line,
            what: what.into(),
        });
    }

    /// A var of a host, a group or `all`: connection vars are taken out.
    fn var(&mut self, file: &Path, line: usize, owner: Owner<'_>, k: &str, v: toml::Value) {
        let text = || match &v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match (k, owner) {
            ("ansible_host", Owner::Host(h)) => self.host(h).address = Some(text()),
            ("ansible_port", Owner::Host(h)) => self.host(h).port = text().parse().ok(),
            ("ansible_user", Owner::Host(h)) => self.host(h).user = Some(text()),
            ("ansible_user", Owner::All) => self.user = Some(text()),
            ("ansible_become", Owner::All) => {
                self.become_ = matches!(text().as_str(), "true" | "True" | "yes")
            }
            ("ansible_python_interpreter", _) => self.notes.push(Problem {
                file: file.to_path_buf(),
                line,
                what: "ansible_python_interpreter dropped: provision needs only POSIX sh on hosts"
                    .into(),
            }),
            (k, _) if k.starts_with("ansible_") => self.problem(
                file,
                line,
                format!("`{k}`: not converted (set connection options in [ssh] or on the host)"),
            ),
            (k, Owner::Host(h)) => {
                self.host(h).vars.insert(k.to_string(), v);
            }
            (k, Owner::Group(g)) => {
                self.groups
                    .entry(g.to_string())
                    .or_default()
                    .vars
                    .insert(k.to_string(), v);
            }
            (k, Owner::All) => {
                self.all_vars.insert(k.to_string(), v);
            }
        }
    }

    fn check_names(&mut self, file: &Path) {
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for g in names {
            if RESERVED.contains(&g.as_str()) {
                self.problem(file, 1, format!("group `{g}`: the name is provision's (a role or a selector); rename the group"));
                self.groups.remove(&g);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Owner<'a> {
    Host(&'a str),
    Group(&'a str),
    All,
}

/// A value of an INI inventory as Ansible reads it: numbers and booleans are typed.
fn ini_value(s: &str) -> toml::Value {
    let unquoted = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
    if let Some(u) = unquoted {
        return toml::Value::String(u.to_string());
    }
    if let Ok(i) = s.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match s {
        "true" | "True" | "yes" => toml::Value::Boolean(true),
        "false" | "False" | "no" => toml::Value::Boolean(false),
        _ => toml::Value::String(s.to_string()),
    }
}

/// The words of an INI host line; quotes keep spaces (and stay, for [`ini_value`]).
fn words(l: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut w = String::new();
    let mut quote: Option<char> = None;
    for c in l.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c.is_whitespace() => {
                if !w.is_empty() {
                    out.push(std::mem::take(&mut w));
                }
                continue;
            }
            _ => {}
        }
        w.push(c);
    }
    if !w.is_empty() {
        out.push(w);
    }
    out
}

/// Reads an INI or a YAML inventory (YAML when it parses as a mapping).
pub fn read(path: &Path, text: &str) -> Inventory {
    let yaml_doc = yaml::load(text)
        .ok()
        .and_then(|mut d| (d.len() == 1).then(|| d.remove(0)));
    match yaml_doc {
        Some(doc) if doc.map().is_some() => from_yaml(path, &doc),
        _ => from_ini(path, text),
    }
}

pub fn from_ini(path: &Path, text: &str) -> Inventory {
    let mut inv = Inventory::default();
    // (group, kind) of the current section; None before any: ungrouped hosts.
    let mut section: Option<(String, &str)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            let (name, kind) = match s.split_once(':') {
                Some((n, "vars")) => (n, "vars"),
                Some((n, "children")) => (n, "children"),
                Some((n, k)) => {
                    inv.problem(
                        path,
                        line,
                        format!("section kind `{k}` of `{n}`: not converted"),
                    );
                    (n, "skip")
                }
                None => (s, "hosts"),
            };
            if name != "all" && name != "ungrouped" && kind != "skip" {
                inv.groups.entry(name.to_string()).or_default();
            }
            section = Some((name.to_string(), kind));
            continue;
        }
        let words = words(l);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match section.as_ref().map(|(n, k)| (n.as_str(), *k)) {
            Some((_, "skip")) => {}
            Some((g, "vars")) => match l.split_once('=') {
                Some((k, v)) => {
                    let owner = if g == "all" {
                        Owner::All
                    } else {
                        Owner::Group(g)
                    };
                    inv.var(path, line, owner, k.trim(), ini_value(v.trim()));
                }
                None => inv.problem(path, line, "not `key=value`"),
            },
            Some((g, "children")) => {
                let g = g.to_string();
                inv.groups
                    .entry(g)
                    .or_default()
                    .children
                    .push(words[0].to_string());
            }
            section => {
                let name = words[0];
                if name.contains('[') {
                    inv.problem(
                        path,
                        line,
                        format!("host range `{name}`: not converted (list the hosts)"),
                    );
                    continue;
                }
                inv.host(name);
                if let Some((g, _)) = section.filter(|(g, _)| *g != "all" && *g != "ungrouped") {
                    let grp = inv.groups.entry(g.to_string()).or_default();
                    if !grp.hosts.iter().any(|h| h == name) {
                        grp.hosts.push(name.to_string());
                    }
                }
                for w in &words[1..] {
                    match w.split_once('=') {
                        Some((k, v)) => inv.var(path, line, Owner::Host(name), k, ini_value(v)),
                        None => inv.problem(path, line, format!("`{w}`: not `key=value`")),
                    }
                }
            }
        }
    }
    inv.check_names(path);
    inv
}

fn yaml_value(inv: &mut Inventory, path: &Path, n: &Node) -> Option<toml::Value> {
    Some(match &n.v {
        V::Str(s) => toml::Value::String(s.clone()),
        V::Int(i) => toml::Value::Integer(*i),
        V::Float(f) => toml::Value::Float(*f),
        V::Bool(b) => toml::Value::Boolean(*b),
        V::Seq(items) => toml::Value::Array(
            items
                .iter()
                .map(|i| yaml_value(inv, path, i))
                .collect::<Option<_>>()?,
        ),
        V::Map(m) => {
            let mut t = toml::Table::new();
            for (k, v) in m {
                t.insert(k.clone(), yaml_value(inv, path, v)?);
            }
            toml::Value::Table(t)
        }
        V::Null | V::Unsupported(_) => {
            inv.problem(
                path,
                n.line,
                "a value TOML cannot hold (null, alias or tag): not converted",
            );
            return None;
        }
    })
}

pub fn from_yaml(path: &Path, doc: &Node) -> Inventory {
    let mut inv = Inventory::default();
    fn group(inv: &mut Inventory, path: &Path, name: &str, n: &Node) {
        let owner_name = name.to_string();
        if name != "all" && name != "ungrouped" {
            inv.groups.entry(owner_name.clone()).or_default();
        }
        for (k, v) in n.map().unwrap_or(&[]) {
            match k.as_str() {
                "hosts" => {
                    for (h, hv) in v.map().unwrap_or(&[]) {
                        inv.host(h);
                        if name != "all" && name != "ungrouped" {
                            let g = inv.groups.entry(owner_name.clone()).or_default();
                            if !g.hosts.contains(h) {
                                g.hosts.push(h.clone());
                            }
                        }
                        for (vk, vv) in hv.map().unwrap_or(&[]) {
                            if let Some(val) = yaml_value(inv, path, vv) {
                                inv.var(path, vv.line, Owner::Host(h), vk, val);
                            }
                        }
                    }
                }
                "vars" => {
                    for (vk, vv) in v.map().unwrap_or(&[]) {
                        if let Some(val) = yaml_value(inv, path, vv) {
                            let owner = if name == "all" {
                                Owner::All
                            } else {
                                Owner::Group(&owner_name)
                            };
                            inv.var(path, vv.line, owner, vk, val);
                        }
                    }
                }
                "children" => {
                    for (c, cv) in v.map().unwrap_or(&[]) {
                        if name != "all" {
                            inv.groups
                                .entry(owner_name.clone())
                                .or_default()
                                .children
                                .push(c.clone());
                        }
                        group(inv, path, c, cv);
                    }
                }
                other => inv.problem(
                    path,
                    v.line,
                    format!("inventory key `{other}`: not converted"),
                ),
            }
        }
    }
    for (name, n) in doc.map().unwrap_or(&[]) {
        group(&mut inv, path, name, n);
    }
    inv.check_names(path);
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = "# web servers\n[web]\nweb-1 ansible_host=192.0.2.10 ansible_port=2222 http_port=8080\nweb-2 ansible_host=192.0.2.11\n\n[db]\ndb-1 ansible_host=192.0.2.20 ansible_ssh_common_args='-o X'\n\n[prod:children]\nweb\ndb\n\n[web:vars]\nworkers=4\n\n[all:vars]\nansible_user=deploy\nsite=\"example.org\"\n\n[worker]\nw-1\n";

    #[test]
    fn ini_hosts_groups_children_and_vars() {
        let inv = from_ini(Path::new("hosts.ini"), INI);
        let names: Vec<_> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["web-1", "web-2", "db-1", "w-1"]);
        assert_eq!(inv.hosts[0].address.as_deref(), Some("192.0.2.10"));
        assert_eq!(inv.hosts[0].port, Some(2222));
        assert_eq!(
            inv.hosts[0].vars.get("http_port"),
            Some(&toml::Value::Integer(8080))
        );
        assert_eq!(inv.groups["web"].hosts, ["web-1", "web-2"]);
        assert_eq!(inv.groups["prod"].children, ["web", "db"]);
        assert_eq!(
            inv.groups["web"].vars.get("workers"),
            Some(&toml::Value::Integer(4))
        );
        assert_eq!(inv.user.as_deref(), Some("deploy"));
        assert_eq!(
            inv.all_vars.get("site"),
            Some(&toml::Value::String("example.org".into()))
        );
        let p: Vec<_> = inv
            .problems
            .iter()
            .map(|p| (p.line, p.what.as_str()))
            .collect();
        assert_eq!(
            p,
            [
                (
                    7,
                    "`ansible_ssh_common_args`: not converted (set connection options in [ssh] or on the host)"
                ),
                (
                    1,
                    "group `worker`: the name is provision's (a role or a selector); rename the group"
                ),
            ]
        );
    }

    #[test]
    fn yaml_inventory_reads_the_same() {
        let y = "all:\n  vars:\n    ansible_user: deploy\n    site: example.org\n  children:\n    web:\n      hosts:\n        web-1:\n          ansible_host: 192.0.2.10\n          http_port: 8080\n        web-2:\n      vars:\n        workers: 4\n    prod:\n      children:\n        web:\n";
        let inv = read(Path::new("hosts.yml"), y);
        assert_eq!(inv.problems, []);
        assert_eq!(inv.hosts.len(), 2);
        assert_eq!(
            inv.hosts[0].vars.get("http_port"),
            Some(&toml::Value::Integer(8080))
        );
        assert_eq!(inv.groups["web"].hosts, ["web-1", "web-2"]);
        assert_eq!(inv.groups["prod"].children, ["web"]);
        assert_eq!(
            inv.groups["web"].vars.get("workers"),
            Some(&toml::Value::Integer(4))
        );
        assert_eq!(inv.user.as_deref(), Some("deploy"));
    }
}
