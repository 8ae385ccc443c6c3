//! Host selectors: which hosts a step (or `--limit`) targets, e.g. `swarm,!manager-1`.

use std::fmt;
use std::str::FromStr;

use crate::inventory::{Host, Inventory, Role, is_hostname};

/// One term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    All,
    Role(Role),
    /// Managers and workers.
    Swarm,
    Host(String),
}

impl Term {
    fn matches(&self, host: &Host) -> bool {
        match self {
            Term::All => true,
            Term::Role(r) => host.has_role(*r),
            Term::Swarm => host.is_swarm_node(),
            Term::Host(name) => host.name == *name,
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::All => f.write_str("all"),
            Term::Role(r) => f.write_str(r.as_str()),
            Term::Swarm => f.write_str("swarm"),
            Term::Host(h) => f.write_str(h),
        }
    }
}

/// Comma-separated terms: `all`, a role, `swarm` (manager or worker) or a host name; `!term`
/// excludes. A host is selected when it matches any included term (or there are none, as in
/// `!manager-1`) and no excluded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    include: Vec<Term>,
    exclude: Vec<Term>,
}

impl Selector {
    /// Every host.
    pub fn all() -> Selector {
        Selector {
            include: vec![Term::All],
            exclude: Vec::new(),
        }
    }

    /// Parses the selector syntax; the error says what is wrong with which term.
    pub fn parse(s: &str) -> Result<Selector, String> {
        if s.trim().is_empty() {
            return Err("the selector is empty".into());
        }
        let mut sel = Selector {
            include: Vec::new(),
            exclude: Vec::new(),
        };
        for raw in s.split(',') {
            let raw = raw.trim();
            let (negated, word) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, raw),
            };
            if word.is_empty() {
                return Err(if negated {
                    "`!` must be followed by a role, group or host name".into()
                } else {
                    "empty term between commas".into()
                });
            }
            let term = match word {
                "all" => Term::All,
                "swarm" => Term::Swarm,
                w => match w.parse::<Role>() {
                    Ok(r) => Term::Role(r),
                    Err(_) if is_hostname(w) => Term::Host(w.to_string()),
                    Err(_) => return Err(format!("`{w}` is not a role, group or valid host name")),
                },
            };
            if negated {
                sel.exclude.push(term);
            } else {
                sel.include.push(term);
            }
        }
        Ok(sel)
    }

    pub fn matches(&self, host: &Host) -> bool {
        (self.include.is_empty() || self.include.iter().any(|t| t.matches(host)))
            && !self.exclude.iter().any(|t| t.matches(host))
    }

    /// The selected hosts, in inventory order.
    pub fn select<'a>(&self, inv: &'a Inventory) -> Vec<&'a Host> {
        inv.hosts.iter().filter(|h| self.matches(h)).collect()
    }

    /// Host names the selector mentions (included or excluded) that the inventory lacks.
    pub fn unknown_names(&self, inv: &Inventory) -> Vec<String> {
        let mut out = Vec::new();
        for t in self.include.iter().chain(&self.exclude) {
            if let Term::Host(name) = t
                && inv.host(name).is_none()
                && !out.contains(name)
            {
                out.push(name.clone());
            }
        }
        out
    }
}

impl Default for Selector {
    fn default() -> Self {
        Selector::all()
    }
}

impl FromStr for Selector {
    type Err = String;
    fn from_str(s: &str) -> Result<Selector, String> {
        Selector::parse(s)
    }
}

/// Canonical text: included terms, then excluded ones.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .include
            .iter()
            .map(Term::to_string)
            .chain(self.exclude.iter().map(|t| format!("!{t}")))
            .collect();
        f.write_str(&terms.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors() {
        assert_eq!(Selector::parse("").unwrap_err(), "the selector is empty");
        assert_eq!(Selector::parse(" ").unwrap_err(), "the selector is empty");
        assert_eq!(
            Selector::parse("manager,,worker").unwrap_err(),
            "empty term between commas"
        );
        assert_eq!(
            Selector::parse("worker,").unwrap_err(),
            "empty term between commas"
        );
        assert_eq!(
            Selector::parse("swarm,!").unwrap_err(),
            "`!` must be followed by a role, group or host name"
        );
        assert_eq!(
            Selector::parse("web_1").unwrap_err(),
            "`web_1` is not a role, group or valid host name"
        );
        assert_eq!(
            Selector::parse("manager worker").unwrap_err(),
            "`manager worker` is not a role, group or valid host name"
        );
    }

    #[test]
    fn display_is_canonical() {
        let s = Selector::parse(" !manager-1 , swarm ").unwrap();
        assert_eq!(s.to_string(), "swarm,!manager-1");
        assert_eq!(Selector::default(), Selector::parse("all").unwrap());
        assert_eq!("lb".parse::<Selector>().unwrap().to_string(), "lb");
    }
}
