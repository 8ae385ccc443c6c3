//! Host patterns: which hosts a step (or `--limit`) targets, as Ansible writes them:
//! `web:&prod,!web-3`, `web-*`, `swarm,!manager-1`.

use std::fmt;
use std::str::FromStr;

use crate::diagnostic::did_you_mean;
use crate::inventory::{Host, Inventory, Role, is_group_name};

/// One term of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    All,
    Role(Role),
    /// Managers and workers.
    Swarm,
    /// A group of the inventory (`[groups.NAME]`) or a host: which one is known only with the
    /// inventory (the inventory refuses a group named like a host).
    Name(String),
    /// `*` and `?` wildcards, matched against host names and the names of the groups and roles
    /// a host is in (Ansible matches globs against both).
    Glob(String),
}

impl Term {
    fn matches(&self, inv: &Inventory, host: &Host) -> bool {
        match self {
            Term::All => true,
            Term::Role(r) => host.has_role(*r),
            Term::Swarm => host.is_swarm_node(),
            Term::Name(name) => match inv.group(name) {
                Some(g) => g.members.contains(&host.name),
                None => host.name == *name,
            },
            Term::Glob(p) => {
                glob(p, &host.name)
                    || host.roles.iter().any(|r| glob(p, r.as_str()))
                    || inv.groups_of(host).any(|g| glob(p, &g.name))
            }
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::All => f.write_str("all"),
            Term::Role(r) => f.write_str(r.as_str()),
            Term::Swarm => f.write_str("swarm"),
            Term::Name(n) | Term::Glob(n) => f.write_str(n),
        }
    }
}

/// Terms separated by `,` or `:`: `all`, a role, `swarm`, a group, a host name or a glob
/// (`web-*`); `&term` intersects, `!term` excludes. Evaluated as Ansible does: the union of the
/// plain terms first (all hosts when there is none, as in `!manager-1`), then each
/// intersection, then each exclusion, whatever order they are written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    include: Vec<Term>,
    intersect: Vec<Term>,
    exclude: Vec<Term>,
}

/// A name in a pattern that is no group, role or host of the inventory, and the nearest one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub name: String,
    pub suggestion: Option<String>,
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.name)?;
        if let Some(s) = &self.suggestion {
            write!(f, " (did you mean `{s}`?)")?;
        }
        Ok(())
    }
}

impl Selector {
    /// Every host.
    pub fn all() -> Selector {
        Selector {
            include: vec![Term::All],
            intersect: Vec::new(),
            exclude: Vec::new(),
        }
    }

    /// Parses the pattern syntax; the error says what is wrong with which term. Names are
    /// checked against an inventory later ([`Selector::unknown`]).
    pub fn parse(s: &str) -> Result<Selector, String> {
        if s.trim().is_empty() {
            return Err("the selector is empty".into());
        }
        let mut sel = Selector {
            include: Vec::new(),
            intersect: Vec::new(),
            exclude: Vec::new(),
        };
        for raw in s.split([',', ':']) {
            let raw = raw.trim();
            let (op, word) = match raw.chars().next() {
                Some(c @ ('!' | '&')) => (Some(c), raw[1..].trim()),
                _ => (None, raw),
            };
            if word.is_empty() {
                return Err(match op {
                    Some(c) => format!("`{c}` must be followed by a role, group or host name"),
                    None => "empty term between separators (`,` or `:`)".into(),
                });
            }
            let term = match word {
                "all" => Term::All,
                "swarm" => Term::Swarm,
                w if w.contains(['*', '?']) => {
                    let bare: String = w.chars().filter(|c| !matches!(c, '*' | '?')).collect();
                    if !bare.is_empty() && !is_group_name(&bare) {
                        return Err(not_a_name(w));
                    }
                    Term::Glob(w.to_string())
                }
                w => match w.parse::<Role>() {
                    Ok(r) => Term::Role(r),
                    Err(_) if is_group_name(w) => Term::Name(w.to_string()),
                    Err(_) => return Err(not_a_name(w)),
                },
            };
            match op {
                Some('!') => sel.exclude.push(term),
                Some(_) => sel.intersect.push(term),
                None => sel.include.push(term),
            }
        }
        Ok(sel)
    }

    pub fn matches(&self, inv: &Inventory, host: &Host) -> bool {
        (self.include.is_empty() || self.include.iter().any(|t| t.matches(inv, host)))
            && self.intersect.iter().all(|t| t.matches(inv, host))
            && !self.exclude.iter().any(|t| t.matches(inv, host))
    }

    /// The selected hosts, in inventory order.
    pub fn select<'a>(&self, inv: &'a Inventory) -> Vec<&'a Host> {
        inv.hosts.iter().filter(|h| self.matches(inv, h)).collect()
    }

    fn terms(&self) -> impl Iterator<Item = &Term> {
        self.include
            .iter()
            .chain(&self.intersect)
            .chain(&self.exclude)
    }

    /// Names the pattern mentions (in any position) that are no group or host of the inventory.
    pub fn unknown_names(&self, inv: &Inventory) -> Vec<String> {
        let mut out = Vec::new();
        for t in self.terms() {
            if let Term::Name(name) = t
                && inv.group(name).is_none()
                && inv.host(name).is_none()
                && !out.contains(name)
            {
                out.push(name.clone());
            }
        }
        out
    }

    /// [`Selector::unknown_names`] with the nearest group, role or host name of each.
    pub fn unknown(&self, inv: &Inventory) -> Vec<Unknown> {
        self.unknown_names(inv)
            .into_iter()
            .map(|name| Unknown {
                suggestion: suggest(inv, &name),
                name,
            })
            .collect()
    }

    /// Globs that match no host: a warning, not an error (Ansible's "could not match").
    pub fn globs_matching_nothing(&self, inv: &Inventory) -> Vec<String> {
        self.terms()
            .filter_map(|t| match t {
                Term::Glob(p) if !inv.hosts.iter().any(|h| t.matches(inv, h)) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }
}

fn not_a_name(w: &str) -> String {
    format!(
        "`{w}` is not a role, group, host name or glob (letters, digits, `-`, `_`, and `*` or `?`)"
    )
}

/// The nearest name a pattern could have meant: a group, a role, `all`, `swarm` or a host.
pub fn suggest(inv: &Inventory, word: &str) -> Option<String> {
    let mut names: Vec<&str> = vec!["all", "swarm"];
    names.extend(Role::NAMES);
    names.extend(inv.groups.iter().map(|g| g.name.as_str()));
    names.extend(inv.hosts.iter().map(|h| h.name.as_str()));
    did_you_mean(word, &names).map(str::to_string)
}

/// What a pattern may name, for the help of an unknown name.
pub fn names_help(inv: &Inventory) -> String {
    let mut groups: Vec<&str> = inv.groups.iter().map(|g| g.name.as_str()).collect();
    groups.sort_unstable();
    let groups = if groups.is_empty() {
        "none defined ([groups.NAME] in the inventory)".to_string()
    } else {
        groups.join(", ")
    };
    format!(
        "a pattern names groups ({groups}), roles ({}), `all`, `swarm` or host names of the \
         inventory; `,` or `:` joins, `&` intersects, `!` excludes, `*` matches any text",
        Role::NAMES.join(", ")
    )
}

/// Shell-style wildcard match: `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for: backtrack there.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
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

/// Canonical text: plain terms, then intersections, then exclusions (the order they apply in).
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .include
            .iter()
            .map(Term::to_string)
            .chain(self.intersect.iter().map(|t| format!("&{t}")))
            .chain(self.exclude.iter().map(|t| format!("!{t}")))
            .collect();
        f.write_str(&terms.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn parse_errors() {
        assert_eq!(Selector::parse("").unwrap_err(), "the selector is empty");
        assert_eq!(Selector::parse(" ").unwrap_err(), "the selector is empty");
        assert_eq!(
            Selector::parse("manager,,worker").unwrap_err(),
            "empty term between separators (`,` or `:`)"
        );
        assert_eq!(
            Selector::parse("worker:").unwrap_err(),
            "empty term between separators (`,` or `:`)"
        );
        assert_eq!(
            Selector::parse("swarm,!").unwrap_err(),
            "`!` must be followed by a role, group or host name"
        );
        assert_eq!(
            Selector::parse("web:&").unwrap_err(),
            "`&` must be followed by a role, group or host name"
        );
        assert_eq!(
            Selector::parse("web.1").unwrap_err(),
            "`web.1` is not a role, group, host name or glob (letters, digits, `-`, `_`, and `*` or `?`)"
        );
        assert_eq!(
            Selector::parse("manager worker").unwrap_err(),
            "`manager worker` is not a role, group, host name or glob (letters, digits, `-`, `_`, and `*` or `?`)"
        );
        assert!(
            Selector::parse("web:&!db").is_err(),
            "one operator per term"
        );
        assert!(Selector::parse("web[1]*").is_err());
    }

    #[test]
    fn display_is_canonical() {
        let s = Selector::parse(" !manager-1 , swarm ").unwrap();
        assert_eq!(s.to_string(), "swarm,!manager-1");
        assert_eq!(Selector::default(), Selector::parse("all").unwrap());
        assert_eq!("lb".parse::<Selector>().unwrap().to_string(), "lb");
        // `:` and `,` are the same separator; terms are shown in the order they apply.
        assert_eq!(
            Selector::parse("!db-1:&prod:web_servers,web-*").unwrap(),
            Selector::parse("web_servers,web-*,&prod,!db-1").unwrap()
        );
        assert_eq!(
            Selector::parse("!db-1:&prod:web").unwrap().to_string(),
            "web,&prod,!db-1"
        );
    }

    #[test]
    fn globs() {
        assert!(glob("*", "web-1"));
        assert!(glob("*", ""));
        assert!(glob("web-*", "web-1"));
        assert!(glob("web-*", "web-"));
        assert!(!glob("web-*", "web"));
        assert!(glob("*-1", "web-1"));
        assert!(glob("w*b*1", "web-db-1"));
        assert!(!glob("w*b*1", "web-db-2"));
        assert!(glob("web-?", "web-1"));
        assert!(!glob("web-?", "web-10"));
        assert!(glob("*a*a*", "banana"));
        assert!(!glob("db-*", "web-1"));
    }

    /// web-1 web-2 (group web, child group canary: web-2), db-1 (group db); prod = web-1, db-1.
    fn inventory() -> Inventory {
        let text = r#"
name = "t"
[[hosts]]
name = "web-1"
address = "10.0.0.1"
roles = ["worker"]
[[hosts]]
name = "web-2"
address = "10.0.0.2"
roles = ["worker"]
[[hosts]]
name = "db-1"
address = "10.0.0.3"
roles = ["manager"]
[[hosts]]
name = "lb-1"
address = "10.0.0.4"
roles = ["lb"]
[groups.web]
hosts = ["web-1"]
children = ["canary"]
[groups.canary]
hosts = ["web-2"]
[groups.db]
hosts = ["db-1"]
[groups.prod]
hosts = ["web-1", "db-1"]
"#;
        Inventory::parse(text, Path::new("c.toml"), &Default::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn select(inv: &Inventory, s: &str) -> Vec<String> {
        Selector::parse(s)
            .unwrap()
            .select(inv)
            .into_iter()
            .map(|h| h.name.clone())
            .collect()
    }

    #[test]
    fn every_operator() {
        let inv = inventory();
        // Groups include their children's hosts.
        assert_eq!(select(&inv, "web"), ["web-1", "web-2"]);
        assert_eq!(select(&inv, "canary"), ["web-2"]);
        // Union, with either separator.
        assert_eq!(select(&inv, "canary,db"), ["web-2", "db-1"]);
        assert_eq!(select(&inv, "canary:db"), ["web-2", "db-1"]);
        // Intersection.
        assert_eq!(select(&inv, "web:&prod"), ["web-1"]);
        assert_eq!(select(&inv, "web,db:&prod"), ["web-1", "db-1"]);
        assert!(select(&inv, "canary:&prod").is_empty());
        // Exclusion.
        assert_eq!(select(&inv, "web:!canary"), ["web-1"]);
        assert_eq!(select(&inv, "all,!web,!db"), ["lb-1"]);
        // Roles are groups too; hosts by name.
        assert_eq!(select(&inv, "worker:&prod"), ["web-1"]);
        assert_eq!(select(&inv, "swarm:!worker"), ["db-1"]);
        assert_eq!(select(&inv, "lb-1,db-1"), ["db-1", "lb-1"]);
        // Globs over host names, and over group and role names.
        assert_eq!(select(&inv, "web-*"), ["web-1", "web-2"]);
        assert_eq!(select(&inv, "*"), ["web-1", "web-2", "db-1", "lb-1"]);
        assert_eq!(select(&inv, "*:!web-?"), ["db-1", "lb-1"]);
        assert_eq!(select(&inv, "can*"), ["web-2"]);
        assert_eq!(select(&inv, "man*"), ["db-1"]);
        assert_eq!(select(&inv, "*:&pr?d"), ["web-1", "db-1"]);
    }

    #[test]
    fn unions_then_intersections_then_exclusions() {
        let inv = inventory();
        // Written first, applied last: an exclusion is not undone by a later union.
        assert_eq!(select(&inv, "!web-1,web"), ["web-2"]);
        assert_eq!(select(&inv, "!web-1:web:db"), ["web-2", "db-1"]);
        // An intersection applies to the whole union, wherever it is written.
        assert_eq!(select(&inv, "&prod,web,db"), ["web-1", "db-1"]);
        assert_eq!(select(&inv, "web,&prod,db,!db"), ["web-1"]);
        // Only exclusions or intersections: they start from every host.
        assert_eq!(select(&inv, "!web"), ["db-1", "lb-1"]);
        assert_eq!(select(&inv, "&prod"), ["web-1", "db-1"]);
        assert_eq!(select(&inv, "&prod:!db"), ["web-1"]);
        assert!(select(&inv, "!all").is_empty());
    }

    #[test]
    fn unknown_names_are_named_with_the_nearest() {
        let inv = inventory();
        let s = Selector::parse("web:&prdo,!web-3,db,web_servers,web-*").unwrap();
        // In the order the terms apply: plain, then `&`, then `!`.
        assert_eq!(s.unknown_names(&inv), ["web_servers", "prdo", "web-3"]);
        let unknown: Vec<String> = s.unknown(&inv).iter().map(|u| u.to_string()).collect();
        assert_eq!(
            unknown,
            [
                "`web_servers`",
                "`prdo` (did you mean `prod`?)",
                "`web-3` (did you mean `web-1`?)"
            ]
        );
        assert!(
            Selector::parse("all,swarm,lb,canary,lb-1")
                .unwrap()
                .unknown(&inv)
                .is_empty()
        );
        // A role misspelt reads as a name, and is suggested back as the role.
        assert_eq!(
            Selector::parse("mangaer").unwrap().unknown(&inv)[0].to_string(),
            "`mangaer` (did you mean `manager`?)"
        );
        assert!(names_help(&inv).contains("groups (canary, db, prod, web)"));
    }

    #[test]
    fn a_glob_matching_nothing_is_named() {
        let inv = inventory();
        let s = Selector::parse("web-*,cache-*,!x?").unwrap();
        assert_eq!(s.globs_matching_nothing(&inv), ["cache-*", "x?"]);
        assert_eq!(select(&inv, "web-*,cache-*,!x?"), ["web-1", "web-2"]);
        assert!(s.unknown(&inv).is_empty(), "a glob is never unknown");
        assert!(
            Selector::parse("*")
                .unwrap()
                .globs_matching_nothing(&inv)
                .is_empty()
        );
    }
}
