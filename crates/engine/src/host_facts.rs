//! A host's system facts as templates read them (`facts.os`, `facts.memory_mb`, ...): their
//! names and types, the `facts` value of a host's template context (which records that the
//! host's templates read it, so a run gathers facts only for hosts that need them), and the
//! check of the names a template or expression reads.
//!
//! The command that gathers them and its parser are `provision_playbook::steps::host_facts`.

use minijinja::Value;
use minijinja::value::{Enumerator, Object};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Every fact, as templates name it after `facts.`.
pub const NAMES: &[&str] = &[
    "os",
    "os_version",
    "os_codename",
    "arch",
    "memory_mb",
    "cpus",
    "ipv4",
    "ipv6",
];

/// A host's facts, typed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostFacts {
    /// `/etc/os-release`'s `ID`: `debian`, `ubuntu`.
    pub os: String,
    /// Its `VERSION_ID`: `12` (Debian testing has none: empty).
    pub os_version: String,
    /// Its `VERSION_CODENAME` (Ubuntu's `UBUNTU_CODENAME` if absent): `bookworm`.
    pub os_codename: String,
    /// The kernel's machine, as `uname -m`: `x86_64`, `aarch64`.
    pub arch: String,
    /// `MemTotal` in MiB (rounded down, as Ansible's `ansible_memtotal_mb`).
    pub memory_mb: u64,
    /// CPUs online.
    pub cpus: u64,
    /// The source address of the default IPv4 route; empty when the host has none.
    pub ipv4: String,
    /// The same for IPv6; empty when the host has none.
    pub ipv6: String,
}

impl HostFacts {
    /// What check-config and the hosts a run does not gather on read: a Debian 12 amd64 host
    /// with 1 CPU and 1024 MiB, on documentation addresses. Typed as real facts are, so a
    /// template doing arithmetic on them compiles.
    pub fn placeholder() -> HostFacts {
        HostFacts {
            os: "debian".into(),
            os_version: "12".into(),
            os_codename: "bookworm".into(),
            arch: "x86_64".into(),
            memory_mb: 1024,
            cpus: 1,
            ipv4: "192.0.2.10".into(),
            ipv6: "2001:db8::10".into(),
        }
    }

    /// One fact by name (one of [`NAMES`]).
    pub fn get(&self, name: &str) -> Option<Value> {
        Some(match name {
            "os" => Value::from(self.os.as_str()),
            "os_version" => Value::from(self.os_version.as_str()),
            "os_codename" => Value::from(self.os_codename.as_str()),
            "arch" => Value::from(self.arch.as_str()),
            "memory_mb" => Value::from(self.memory_mb),
            "cpus" => Value::from(self.cpus),
            "ipv4" => Value::from(self.ipv4.as_str()),
            "ipv6" => Value::from(self.ipv6.as_str()),
            _ => return None,
        })
    }

    /// One line for people: `debian 12 (bookworm) x86_64, 2 CPUs, 1987 MB, ipv4 10.0.0.5`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {} ({}) {}, {} CPUs, {} MB",
            self.os, self.os_version, self.os_codename, self.arch, self.cpus, self.memory_mb
        );
        for (family, addr) in [("ipv4", &self.ipv4), ("ipv6", &self.ipv6)] {
            if !addr.is_empty() {
                s.push_str(&format!(", {family} {addr}"));
            }
        }
        s
    }
}

/// The hosts whose templates read `facts` while a playbook compiled.
#[derive(Debug, Default)]
pub struct Reads(Mutex<BTreeSet<String>>);

impl Reads {
    pub fn mark(&self, host: &str) {
        self.0.lock().unwrap().insert(host.to_string());
    }

    pub fn hosts(&self) -> BTreeSet<String> {
        self.0.lock().unwrap().clone()
    }
}

/// `facts` in a host's template context: `facts` of the host, each read recorded in `reads`.
pub fn value(facts: HostFacts, host: &str, reads: Arc<Reads>) -> Value {
    Value::from_object(FactsObject {
        facts,
        host: host.to_string(),
        reads,
    })
}

/// A template context of `facts` alone (to evaluate an expression over a host's facts only).
pub fn context(facts: HostFacts) -> Value {
    let facts = value(facts, "", Arc::new(Reads::default()));
    Value::from(std::collections::BTreeMap::from([("facts", facts)]))
}

#[derive(Debug)]
struct FactsObject {
    facts: HostFacts,
    host: String,
    reads: Arc<Reads>,
}

impl Object for FactsObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let v = self.facts.get(key.as_str()?)?;
        self.reads.mark(&self.host);
        Some(v)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(NAMES)
    }
}

/// A read of a fact that does not exist, in a template or expression: where (a byte range of
/// the source), which name, and the nearest fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFact {
    pub at: std::ops::Range<usize>,
    pub name: String,
    pub nearest: Option<&'static str>,
}

impl UnknownFact {
    /// The message and the help of its diagnostic.
    pub fn message(&self) -> (String, String) {
        let help = match self.nearest {
            Some(m) => format!("did you mean `facts.{m}`?"),
            None => format!("the facts are {}", list()),
        };
        (format!("`facts.{}` is not a fact", self.name), help)
    }
}

/// Every fact, as a list for messages: `facts.os, facts.os_version, ...`.
pub fn list() -> String {
    NAMES
        .iter()
        .map(|n| format!("facts.{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reads of unknown facts in `source` (`facts.NAME`, `facts['NAME']`, `facts["NAME"]`). A
/// template's text outside `{{ }}` and `{% %}` is not read (`template`); an expression
/// (`when`) is all code.
pub fn unknown_reads(source: &str, template: bool) -> Vec<UnknownFact> {
    let mut found = Vec::new();
    for (start, end) in code_regions(source, template) {
        let code = &source[start..end];
        let mut from = 0;
        while let Some(i) = code[from..].find("facts") {
            let at = from + i;
            from = at + "facts".len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            if let Some((range, name)) = fact_name(&code[from..]) {
                if NAMES.contains(&name) {
                    continue;
                }
                found.push(UnknownFact {
                    at: start + at..start + from + range.end,
                    name: name.to_string(),
                    nearest: crate::diagnostic::did_you_mean(name, NAMES),
                });
            }
        }
    }
    found
}

/// The name read right after `facts` (`.name` or `['name']`) and where it ends.
fn fact_name(rest: &str) -> Option<(std::ops::Range<usize>, &str)> {
    let ident_end = |s: &str| {
        s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    if let Some(after) = rest.strip_prefix('.') {
        let end = ident_end(after);
        return (end > 0).then(|| (0..1 + end, &after[..end]));
    }
    let after = rest.strip_prefix('[')?.trim_start();
    let quote = after.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = &after[1..];
    let end = body.find(quote)?;
    let close = body[end + 1..].trim_start().strip_prefix(']')?;
    Some((0..rest.len() - close.len(), &body[..end]))
}

/// The code of a source: all of it for an expression, the insides of `{{ }}` and `{% %}` for a
/// template.
fn code_regions(source: &str, template: bool) -> Vec<(usize, usize)> {
    if !template {
        return vec![(0, source.len())];
    }
    let mut regions = Vec::new();
    let mut from = 0;
    while let Some(i) = source[from..].find('{') {
        let open = from + i;
        let close = match source[open + 1..].chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            _ => {
                from = open + 1;
                continue;
            }
        };
        let start = open + 2;
        let end = source[start..]
            .find(close)
            .map(|j| start + j)
            .unwrap_or(source.len());
        regions.push((start, end));
        from = (end + 2).min(source.len());
    }
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> minijinja::Environment<'static> {
        crate::template::environment()
    }

    #[test]
    fn facts_read_in_a_template_keep_their_types_and_are_recorded() {
        let reads = Arc::new(Reads::default());
        let facts = value(HostFacts::placeholder(), "web-1", reads.clone());
        let ctx = Value::from(std::collections::BTreeMap::from([("facts", facts)]));
        let out = crate::template::render(
            &env(),
            "t",
            "{{ facts.os }} {{ facts['os_codename'] }} {{ facts.memory_mb // 2 }} {{ facts.cpus + 1 }}",
            &ctx,
        )
        .unwrap();
        assert_eq!(out, "debian bookworm 512 2");
        assert_eq!(reads.hosts(), BTreeSet::from(["web-1".to_string()]));
        // Unknown names are undefined: strict rendering refuses them.
        let reads = Arc::new(Reads::default());
        let ctx = Value::from(std::collections::BTreeMap::from([(
            "facts",
            value(HostFacts::placeholder(), "web-1", reads.clone()),
        )]));
        assert!(crate::template::render(&env(), "t", "{{ facts.memory }}", &ctx).is_err());
        assert!(reads.hosts().is_empty(), "nothing was read");
        // A template that does not read facts records nothing.
        crate::template::render(&env(), "t", "{{ 1 }}", &ctx).unwrap();
        assert!(reads.hosts().is_empty());
    }

    #[test]
    fn unknown_fact_names_are_found_with_their_place_and_nearest_name() {
        let src = "a {{ facts.memory }} facts.nope {% if facts['os'] == 'x' and facts[\"cpu\"] %}{% endif %}{{ x.facts.y }}{{ facts.os_version }}";
        let found = unknown_reads(src, true);
        assert_eq!(
            found
                .iter()
                .map(|u| (&src[u.at.clone()], u.name.as_str(), u.nearest))
                .collect::<Vec<_>>(),
            [
                ("facts.memory", "memory", Some("memory_mb")),
                ("facts[\"cpu\"]", "cpu", Some("cpus")),
            ]
        );
        // Outside {{ }} a template's text is text; an expression is all code.
        assert_eq!(unknown_reads("facts.nope", true), []);
        let e = unknown_reads("facts.ipv5 == '' or facts.zzzzzzzz", false);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].at, 0..10);
        assert_eq!(
            e[0].message(),
            (
                "`facts.ipv5` is not a fact".to_string(),
                "did you mean `facts.ipv4`?".to_string()
            )
        );
        assert_eq!(
            e[1].message().1,
            "the facts are facts.os, facts.os_version, facts.os_codename, facts.arch, facts.memory_mb, facts.cpus, facts.ipv4, facts.ipv6"
        );
        assert_eq!(
            unknown_reads("{{ facts }}{{ myfacts.x }}{{ facts.", true),
            []
        );
    }

    #[test]
    fn the_summary_names_what_is_known() {
        let mut f = HostFacts::placeholder();
        assert_eq!(
            f.summary(),
            "debian 12 (bookworm) x86_64, 1 CPUs, 1024 MB, ipv4 192.0.2.10, ipv6 2001:db8::10"
        );
        f.ipv6.clear();
        assert_eq!(
            f.summary(),
            "debian 12 (bookworm) x86_64, 1 CPUs, 1024 MB, ipv4 192.0.2.10"
        );
        for n in NAMES {
            assert!(f.get(n).is_some(), "{n}");
        }
        assert_eq!(f.get("memory"), None);
    }
}
