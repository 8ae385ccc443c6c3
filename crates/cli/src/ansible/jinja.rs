//! Ansible's Jinja to provision's minijinja: the same language, but provision's templates read
//! variables as `vars.NAME` and the host as `host` (Ansible: bare `NAME`, `inventory_hostname`).
//! Only identifiers are rewritten (strings, attributes after `.`, filters after `|`, tests after
//! `is`, keyword arguments are left alone); a bare name that is neither a known var, a loop or
//! template local, a keyword nor a magic variable with a provision form is returned as unknown,
//! so the caller can name it instead of guessing (facts, registered results, extra vars).

use std::collections::BTreeSet;

/// The names an expression may read.
pub struct Scope<'a> {
    /// Vars the converted inventory and playbook define: become `vars.NAME`.
    pub vars: &'a BTreeSet<String>,
    /// Loop variables: stay bare.
    pub locals: &'a [String],
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None",
];
/// minijinja globals and template-local names that stay as written.
const BUILTINS: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "loop",
    "cycler",
    "joiner",
    "lipsum",
];

/// Ansible's magic variables that have a provision form.
fn magic(name: &str) -> Option<&'static str> {
    Some(match name {
        "inventory_hostname" | "inventory_hostname_short" | "ansible_hostname" => "host.name",
        "ansible_host" => "host.address",
        "group_names" => "host.groups",
        _ => return None,
    })
}

/// Ansible's facts that have a provision form (`facts.*`, gathered on the hosts that read
/// them), in both spellings (`ansible_distribution`, `ansible_facts['distribution']` or
/// `ansible_facts.distribution`). Ansible's distribution is capitalised (`Debian`) where
/// `facts.os` is os-release's ID (`debian`); its major version is the version's first part.
fn fact(name: &str) -> Option<&'static str> {
    Some(match name {
        "distribution" => "(facts.os | capitalize)",
        "distribution_major_version" => "(facts.os_version | split('.') | first)",
        "distribution_version" => "facts.os_version",
        "distribution_release" => "facts.os_codename",
        "architecture" | "machine" => "facts.arch",
        "memtotal_mb" => "facts.memory_mb",
        "processor_vcpus" | "processor_nproc" => "facts.cpus",
        _ => return None,
    })
}

/// The fact read at `word` (which ends at `end`), and where its reading ends: a fact name
/// after `ansible_` or under `ansible_facts`; the default routes' addresses only with their
/// `address` (`ansible_default_ipv4.address`).
fn ansible_fact(chars: &[char], end: usize, word: &str) -> Option<(String, usize)> {
    let (name, end) = if word == "ansible_facts" {
        accessor(chars, end)?
    } else {
        (word.strip_prefix("ansible_")?.to_string(), end)
    };
    if let Some(family) = name.strip_prefix("default_") {
        if family != "ipv4" && family != "ipv6" {
            return None;
        }
        let (field, end) = accessor(chars, end)?;
        return (field == "address").then(|| (format!("facts.{family}"), end));
    }
    Some((fact(&name)?.to_string(), end))
}

/// An attribute or string subscript at `i` (`.name`, `['name']`, `["name"]`): the name and
/// where it ends.
fn accessor(chars: &[char], i: usize) -> Option<(String, usize)> {
    let ident = |c: &char| c.is_ascii_alphanumeric() || *c == '_';
    match chars.get(i)? {
        '.' => {
            let name: String = chars[i + 1..].iter().take_while(|c| ident(c)).collect();
            (!name.is_empty()).then(|| (name.clone(), i + 1 + name.len()))
        }
        '[' => {
            let quote = *chars.get(i + 1).filter(|c| **c == '\'' || **c == '"')?;
            let name: String = chars[i + 2..].iter().take_while(|c| ident(c)).collect();
            let close = i + 2 + name.len();
            (chars.get(close) == Some(&quote) && chars.get(close + 1) == Some(&']'))
                .then(|| (name, close + 2))
        }
        _ => None,
    }
}

/// Rewrites a bare expression (`when`, `that`, the inside of `{{ }}`); Err names the unknown
/// identifiers, in order, once each.
pub fn expr(e: &str, scope: &Scope<'_>) -> Result<String, Vec<String>> {
    let mut unknown = Vec::new();
    let out = rewrite(e, scope, &[], &mut unknown);
    if unknown.is_empty() {
        Ok(out)
    } else {
        Err(unknown)
    }
}

fn rewrite(e: &str, scope: &Scope<'_>, extra: &[String], unknown: &mut Vec<String>) -> String {
    let chars: Vec<char> = e.chars().collect();
    let mut out = String::with_capacity(e.len() + 16);
    let mut i = 0;
    // The last significant token: a punctuation char, or an identifier.
    let mut prev_punct: Option<char> = None;
    let mut prev_words: Vec<String> = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(chars.len());
            out.extend(&chars[start..i]);
            prev_punct = Some('"');
            prev_words.clear();
            continue;
        }
        if c.is_ascii_digit() {
            // A number (and an exponent or suffix letters that follow it).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                out.push(chars[i]);
                i += 1;
            }
            prev_punct = Some('0');
            prev_words.clear();
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let kwarg = j < chars.len() && chars[j] == '=' && chars.get(j + 1) != Some(&'=');
            let after_is = prev_punct.is_none()
                && (prev_words.last().map(String::as_str) == Some("is")
                    || prev_words.ends_with(&["is".to_string(), "not".to_string()]));
            let keep = matches!(prev_punct, Some('.') | Some('|'))
                || after_is
                || kwarg
                || KEYWORDS.contains(&word.as_str())
                || BUILTINS.contains(&word.as_str())
                || scope.locals.contains(&word)
                || extra.contains(&word);
            if keep {
                out.push_str(&word);
            } else if let Some((fact, end)) = ansible_fact(&chars, i, &word) {
                out.push_str(&fact);
                i = end;
            } else if let Some(m) = magic(&word) {
                out.push_str(m);
            } else if scope.vars.contains(&word) {
                out.push_str("vars.");
                out.push_str(&word);
            } else {
                if !unknown.contains(&word) {
                    unknown.push(word.clone());
                }
                out.push_str(&word);
            }
            prev_punct = None;
            prev_words.push(word);
            continue;
        }
        out.push(c);
        if !c.is_whitespace() {
            prev_punct = Some(c);
            prev_words.clear();
        }
        i += 1;
    }
    out
}

/// Rewrites the expressions of a template text (`{{ }}` and `{% %}`; comments and text are left
/// as they are). Names bound by `{% for NAME in %}` and `{% set NAME = %}` are locals from there on.
pub fn template(text: &str, scope: &Scope<'_>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len() + 32);
    let mut unknown = Vec::new();
    let mut locals: Vec<String> = Vec::new();
    let mut rest = text;
    loop {
        let next = ["{{", "{%", "{#"]
            .iter()
            .filter_map(|o| rest.find(o).map(|p| (p, *o)))
            .min();
        let Some((p, open)) = next else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..p]);
        let close = match open {
            "{{" => "}}",
            "{%" => "%}",
            _ => "#}",
        };
        let body_start = p + 2;
        let Some(end) = rest[body_start..].find(close) else {
            out.push_str(&rest[p..]);
            break;
        };
        let body = &rest[body_start..body_start + end];
        out.push_str(open);
        if open == "{#" {
            out.push_str(body);
        } else {
            if open == "{%" {
                let words: Vec<&str> = body
                    .trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace())
                    .split_whitespace()
                    .collect();
                match words.first() {
                    Some(&"for") => {
                        for w in words[1..].iter().take_while(|w| **w != "in") {
                            locals.push(w.trim_matches(',').to_string());
                        }
                    }
                    Some(&"set") if words.len() > 1 => {
                        locals.push(words[1].trim_end_matches('=').to_string())
                    }
                    _ => {}
                }
            }
            let mut extra = locals.clone();
            // Statement words are not variables.
            extra.extend(
                [
                    "for",
                    "endfor",
                    "endif",
                    "elif",
                    "set",
                    "endset",
                    "raw",
                    "endraw",
                    "with",
                    "endwith",
                    "filter",
                    "endfilter",
                    "macro",
                    "endmacro",
                    "call",
                    "endcall",
                    "recursive",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            out.push_str(&rewrite(body, scope, &extra, &mut unknown));
        }
        out.push_str(close);
        rest = &rest[body_start + end + 2..];
    }
    if unknown.is_empty() {
        Ok(out)
    } else {
        Err(unknown)
    }
}

/// Ansible's tests over a registered result (`probe is changed`, `probe is not succeeded`) as
/// provision reads a result: its fields (`probe.changed`, `probe.failed`), since provision's
/// templates have no such tests. Only names in `registered` are rewritten; strings are skipped.
pub fn result_tests(e: &str, registered: &[String]) -> String {
    let chars: Vec<char> = e.chars().collect();
    let mut out = String::with_capacity(e.len());
    let mut i = 0;
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    // The word at `j` (after spaces) and where it ends.
    let word_at = |mut j: usize| {
        while j < chars.len() && chars[j] == ' ' {
            j += 1;
        }
        let start = j;
        while j < chars.len() && ident(chars[j]) {
            j += 1;
        }
        (chars[start..j].iter().collect::<String>(), j)
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(chars.len());
            out.extend(&chars[start..i]);
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let (name, end) = word_at(i);
            // An attribute (`a.probe`) is not the registered name.
            let after_dot = i > 0 && chars[i - 1] == '.';
            if !after_dot && registered.contains(&name) {
                let (is, after_is) = word_at(end);
                let (mut test, mut after) = word_at(after_is);
                let negated = test == "not";
                if negated {
                    (test, after) = word_at(after);
                }
                let field = match test.as_str() {
                    "changed" => Some(("changed", false)),
                    "succeeded" | "success" => Some(("failed", true)),
                    "failed" | "failure" => Some(("failed", false)),
                    "skipped" => Some(("skipped", false)),
                    _ => None,
                };
                if is == "is"
                    && let Some((field, inverse)) = field
                {
                    if inverse != negated {
                        out.push_str("not ");
                    }
                    out.push_str(&format!("{name}.{field}"));
                    i = after;
                    continue;
                }
            }
            out.push_str(&name);
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope_vars() -> BTreeSet<String> {
        ["http_port", "users", "enabled", "site"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn bare_vars_get_the_vars_prefix_and_the_rest_is_left_alone() {
        let vars = scope_vars();
        let locals = vec!["item".to_string()];
        let s = Scope {
            vars: &vars,
            locals: &locals,
        };
        assert_eq!(
            expr("http_port | int > 1024 and users is defined", &s).unwrap(),
            "vars.http_port | int > 1024 and vars.users is defined"
        );
        assert_eq!(
            expr(
                "item.name != 'http_port' and enabled | default(false, boolean=true)",
                &s
            )
            .unwrap(),
            "item.name != 'http_port' and vars.enabled | default(false, boolean=true)"
        );
        assert_eq!(
            expr("inventory_hostname in groups_x is not defined", &s),
            Err(vec!["groups_x".to_string()])
        );
        assert_eq!(
            expr("'web' in group_names and inventory_hostname == site", &s).unwrap(),
            "'web' in host.groups and host.name == vars.site"
        );
        assert_eq!(
            expr(
                "ansible_os_family == \"Debian\" or result.rc == 0 or result.changed",
                &s
            ),
            Err(vec!["ansible_os_family".to_string(), "result".to_string()])
        );
        assert_eq!(
            expr("users[0].name ~ 'x'", &s).unwrap(),
            "vars.users[0].name ~ 'x'"
        );
    }

    #[test]
    fn templates_rewrite_only_expressions_and_know_their_own_locals() {
        let vars = scope_vars();
        let s = Scope {
            vars: &vars,
            locals: &[],
        };
        assert_eq!(
            template(
                "# {{ inventory_hostname }} {# users #}\nlisten {{ http_port }};\n{% for u in users %}{{ u.name }} {{ loop.index }}{% endfor %}\n{% if site is defined %}{{ site }}{% endif %}\n",
                &s
            )
            .unwrap(),
            "# {{ host.name }} {# users #}\nlisten {{ vars.http_port }};\n{% for u in users %}{{ u.name }} {{ loop.index }}{% endfor %}\n{% if vars.site is defined %}{{ vars.site }}{% endif %}\n"
                .replace("for u in users", "for u in vars.users")
        );
        assert_eq!(
            template("{{ ansible_default_ipv4.gateway }}", &s),
            Err(vec!["ansible_default_ipv4".to_string()])
        );
    }

    #[test]
    fn ansible_facts_become_provision_facts_in_both_spellings() {
        let vars = scope_vars();
        let s = Scope {
            vars: &vars,
            locals: &[],
        };
        assert_eq!(
            expr(
                "ansible_distribution == 'Debian' and ansible_distribution_major_version | int >= 12",
                &s
            )
            .unwrap(),
            "(facts.os | capitalize) == 'Debian' and (facts.os_version | split('.') | first) | int >= 12"
        );
        assert_eq!(
            template(
                "{{ ansible_facts['distribution_release'] }} {{ ansible_facts.architecture }} {{ ansible_memtotal_mb // 2 }} {{ ansible_facts[\"processor_vcpus\"] }}\n\
                 {{ ansible_default_ipv4.address }} {{ ansible_facts['default_ipv6']['address'] }} {{ ansible_facts.default_ipv4.address }}",
                &s
            )
            .unwrap(),
            "{{ facts.os_codename }} {{ facts.arch }} {{ facts.memory_mb // 2 }} {{ facts.cpus }}\n\
             {{ facts.ipv4 }} {{ facts.ipv6 }} {{ facts.ipv4 }}"
        );
        // Facts without a provision form are still named.
        assert_eq!(
            expr(
                "ansible_os_family == 'Debian' or ansible_facts['mounts']",
                &s
            ),
            Err(vec![
                "ansible_os_family".to_string(),
                "ansible_facts".to_string()
            ])
        );
        // A string or an attribute is not a fact.
        assert_eq!(
            expr("'ansible_distribution' == x.ansible_distribution", &s),
            Err(vec!["x".to_string()])
        );
    }

    /// The converted expressions mean in provision what they meant in Ansible, on the facts of
    /// a Debian 12 host.
    #[test]
    fn converted_fact_expressions_evaluate_as_ansible_would() {
        let vars = scope_vars();
        let s = Scope {
            vars: &vars,
            locals: &[],
        };
        let env = provision_engine::template::environment();
        let ctx = provision_engine::host_facts::context(
            provision_engine::host_facts::HostFacts::placeholder(),
        );
        for e in [
            "ansible_distribution == 'Debian'",
            "ansible_distribution_major_version == '12'",
            "ansible_facts['distribution_release'] == 'bookworm'",
            "ansible_architecture == 'x86_64'",
            "ansible_memtotal_mb > 512 and ansible_processor_vcpus >= 1",
            "ansible_default_ipv4.address == '192.0.2.10'",
        ] {
            let converted = expr(e, &s).unwrap();
            assert!(
                provision_engine::template::truthy(&env, &converted, &ctx).unwrap(),
                "{e} -> {converted}"
            );
        }
    }

    #[test]
    fn ansible_result_tests_become_the_fields_provision_reads() {
        let reg = vec!["probe".to_string(), "conf".to_string()];
        assert_eq!(
            result_tests("probe is changed and conf is not changed", &reg),
            "probe.changed and not conf.changed"
        );
        assert_eq!(
            result_tests("probe is succeeded or conf is not success", &reg),
            "not probe.failed or conf.failed"
        );
        assert_eq!(
            result_tests("probe is failed or probe is skipped or probe.rc == 0", &reg),
            "probe.failed or probe.skipped or probe.rc == 0"
        );
        // Not registered, a string, an attribute, another test: left as written.
        assert_eq!(
            result_tests(
                "x is changed or 'probe is changed' or a.conf is changed or probe is defined",
                &reg
            ),
            "x is changed or 'probe is changed' or a.conf is changed or probe is defined"
        );
    }
}
