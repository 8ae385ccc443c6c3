//! `register`, `retries`, `delay` and `until` on a step (Ansible's keywords of those names), and
//! what `when`, `until`, `failed_when`, `changed_when` and `with` may read of registered
//! results: a name an earlier step registers (its `results` only if that step loops). A `when`
//! that reads one is decided per host when the step is reached.

use toml::de::{DeTable, DeValue};

use super::StepSpec;
use crate::diagnostic::{Reporter, did_you_mean};
use crate::registered::{DEFAULT_DELAY, RESULT_FIELDS, Retry};

/// Names every template context has already (and `item`, a loop's default name).
const TAKEN: &[&str] = &[
    "vars", "host", "hosts", "cluster", "secrets", "facts", "item",
];
/// Words an expression reads as constants, never as a variable.
const CONSTANTS: &[&str] = &["true", "false", "none", "True", "False", "None"];

const REGISTER_EXAMPLE: &str = "register = \"probe\"";

/// The step's `register`: a name later steps read the result by (`probe.rc`).
pub(super) fn check_register(
    r: &mut Reporter<'_>,
    t: &DeTable<'_>,
    label: &str,
) -> Option<Option<String>> {
    let Some(v) = t.get("register") else {
        return Some(None);
    };
    let what = format!("`register` in {label}");
    let s = r.nonempty_string(v, &what, REGISTER_EXAMPLE)?;
    let mut chars = s.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    let globals = globals();
    let problem = if !identifier {
        Some(format!(
            "{what} must be a name of letters, digits and `_` (not starting with a digit), not `{s}`"
        ))
    } else if TAKEN.contains(&s) || globals.iter().any(|g| g == s) {
        Some(format!(
            "{what} must not be `{s}`: templates already read `{s}`"
        ))
    } else if RESULT_FIELDS.contains(&s) {
        Some(format!(
            "{what} must not be `{s}`: `until` reads the step's own `{s}` by that name"
        ))
    } else if CONSTANTS.contains(&s) {
        Some(format!(
            "{what} must not be `{s}`: templates read it as a constant"
        ))
    } else {
        None
    };
    match problem {
        Some(message) => {
            r.error(
                &v.span(),
                message,
                Some(format!(
                    "write {REGISTER_EXAMPLE} and read it later as probe.rc, probe.stdout, probe.changed"
                )),
            );
            None
        }
        None => Some(Some(s.to_string())),
    }
}

/// The step's `retries`, `delay` and `until`.
pub(super) fn check_retry(
    r: &mut Reporter<'_>,
    t: &DeTable<'_>,
    label: &str,
) -> Option<Option<Retry>> {
    let Some(v) = t.get("retries") else {
        let fix = |key: &str| {
            format!(
                "add retries = 5 (how many times the step may run again on a host), or remove `{key}`"
            )
        };
        return super::keys_need(r, t, &["until", "delay"], label, "`retries`", &fix)
            .then_some(None);
    };
    let what = format!("`retries` in {label}");
    let retries = match r.integer(v, &what, "retries = 5") {
        Some(n) if n > 0 && n <= i64::from(u32::MAX) => Some(n as u32),
        Some(n) => {
            r.error(
                &v.span(),
                format!("{what} must be a positive integer, not {n}"),
                Some("write retries = 5: how many times the step may run again on a host".into()),
            );
            None
        }
        None => None,
    };
    let delay = match t.get("delay") {
        None => Some(DEFAULT_DELAY),
        Some(v) => {
            let what = format!("`delay` in {label}");
            match r.integer(v, &what, "delay = 10 (seconds)") {
                Some(n) if n >= 0 => Some(std::time::Duration::from_secs(n as u64)),
                Some(n) => {
                    r.error(
                        &v.span(),
                        format!("{what} must not be negative ({n})"),
                        Some("write delay = 10: seconds between attempts (0: none)".into()),
                    );
                    None
                }
                None => None,
            }
        }
    };
    let until = match t.get("until") {
        None => Some(None),
        Some(v) => r
            .nonempty_string(v, &format!("`until` in {label}"), "until = \"rc == 0\"")
            .map(|s| Some(s.to_string())),
    };
    Some(Some(Retry {
        retries: retries?,
        delay: delay?,
        until: until?,
    }))
}

/// The names of minijinja's globals (`range`, `dict`, ...) and ours (`fail`, ...).
fn globals() -> Vec<String> {
    crate::template::environment()
        .globals()
        .map(|(n, _)| n.to_string())
        .collect()
}

/// What each step's and handler's `when`, `until` and `with` read of registered results,
/// checked against what earlier steps register (handlers: every step, and earlier handlers).
/// Returns, for steps then handlers in file order, whether the `when` reads one (decided
/// per host when the step is reached).
pub(super) fn check_reads(r: &mut Reporter<'_>, doc: &DeTable<'_>) -> (Vec<bool>, Vec<bool>) {
    let tables = |key: &str| -> Vec<&DeTable<'_>> {
        match doc.get(key).map(|v| v.get_ref()) {
            Some(DeValue::Array(items)) => items
                .iter()
                .filter_map(|i| match i.get_ref() {
                    DeValue::Table(t) => Some(t),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let steps = tables("steps");
    let handlers = tables("handlers");
    // Names a looped step registers: only those have `results`.
    let looped: Vec<String> = steps
        .iter()
        .chain(&handlers)
        .filter(|t| t.contains_key("loop"))
        .filter_map(|t| Some(t.get("register")?.get_ref().as_str()?.to_string()))
        .collect();
    // Every name registered anywhere, with the line of its first `register`.
    let everywhere: Vec<(String, usize)> = steps
        .iter()
        .chain(&handlers)
        .filter_map(|t| {
            let v = t.get("register")?;
            Some((v.get_ref().as_str()?.to_string(), r.pos(&v.span()).0))
        })
        .collect();
    let globals = globals();
    let mut seen: Vec<String> = Vec::new();
    let mut flags = (Vec::new(), Vec::new());
    for (kind, list) in [("step", &steps), ("handler", &handlers)] {
        for t in list.iter() {
            let at_run = check_one(r, t, kind, (&seen, &looped), &everywhere, &globals);
            if kind == "step" {
                flags.0.push(at_run);
            } else {
                flags.1.push(at_run);
            }
            if let Some(name) = t.get("register").and_then(|v| v.get_ref().as_str())
                && !seen.iter().any(|s| s == name)
            {
                seen.push(name.to_string());
            }
        }
    }
    flags
}

/// One step's reads; true when its `when` reads a registered result.
fn check_one(
    r: &mut Reporter<'_>,
    t: &DeTable<'_>,
    kind: &str,
    (seen, looped): (&[String], &[String]),
    everywhere: &[(String, usize)],
    globals: &[String],
) -> bool {
    let str_of = |key: &str| t.get(key).and_then(|v| v.get_ref().as_str());
    let label = match str_of("name").or_else(|| str_of("use")) {
        Some(s) => format!("{kind} `{s}`"),
        None => kind.to_string(),
    };
    let loop_var = t
        .get("loop")
        .map(|_| str_of("loop_var").unwrap_or(super::DEFAULT_LOOP_VAR));
    let own = str_of("register");
    let known = |n: &str| {
        TAKEN.contains(&n)
            || CONSTANTS.contains(&n)
            || globals.iter().any(|g| g == n)
            || loop_var == Some(n)
    };
    let mut at_run = false;
    // `failed_when` and `changed_when` may be lists of expressions; booleans read nothing.
    let mut exprs = Vec::new();
    for key in ["when", "until", "failed_when", "changed_when"] {
        let Some(v) = t.get(key) else { continue };
        match v.get_ref() {
            DeValue::Array(items) => exprs.extend(items.iter().map(|i| (key, i))),
            _ => exprs.push((key, v)),
        }
    }
    for (key, v) in exprs {
        // Not a string, or empty: reported where the key is checked.
        let Some(expr) = v.get_ref().as_str().filter(|e| !e.trim().is_empty()) else {
            continue;
        };
        let Some(names) = crate::template::names_read_by_expression(expr) else {
            r.error(
                &v.span(),
                format!("`{key}` in {label}: `{expr}` is not a valid expression"),
                Some(format!(
                    "write a minijinja expression without {{{{ }}}}, e.g. {key} = \"probe.rc == 0\""
                )),
            );
            continue;
        };
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        for n in names {
            // `until`, `failed_when` and `changed_when` read the step's own result.
            let own_result =
                key != "when" && (RESULT_FIELDS.contains(&n.as_str()) || own == Some(&n));
            if own_result && reads_results(expr, &n) {
                let why =
                    "it is this step's own result (in a loop: one item's), which has no `results`";
                results_error(r, &v.span(), key, &label, &n, why);
            }
            if known(&n) || own_result {
                continue;
            }
            if seen.contains(&n) {
                if reads_results(expr, &n) && !looped.contains(&n) {
                    let why = "the step that registers it has no `loop`: only a looped step registers `results`";
                    results_error(r, &v.span(), key, &label, &n, why);
                }
                at_run |= key == "when";
                continue;
            }
            let candidates: Vec<&str> = seen.iter().map(String::as_str).collect();
            let help = match (
                did_you_mean(&n, &candidates),
                everywhere.iter().find(|(e, _)| *e == n),
            ) {
                (Some(m), _) => format!("did you mean `{m}`?"),
                (None, Some((_, line))) => format!(
                    "`{n}` is registered at line {line}, which is not before this {kind}: a step reads only what earlier steps registered"
                ),
                (None, None) if seen.is_empty() => format!(
                    "register a result on an earlier step with register = \"{n}\", or read a var as vars.{n}"
                ),
                (None, None) => format!(
                    "registered so far: {}; or read a var as vars.{n}",
                    candidates.join(", ")
                ),
            };
            r.error(
                &v.span(),
                format!("`{key}` in {label} reads `{n}`, which no earlier step registers"),
                Some(help),
            );
        }
    }
    if let Some(w) = t.get("with")
        && let DeValue::Table(w) = w.get_ref()
    {
        for (key, value) in w.iter() {
            if let Some(n) = reads_registered(value.get_ref(), seen) {
                r.error(
                    &key.span(),
                    format!(
                        "`with.{}` in {label} reads `{n}`, a registered result: only `when` and `until` read those",
                        key.get_ref()
                    ),
                    Some(format!(
                        "`with` is rendered before any step runs; decide with when = \"{n}.rc == 0\" (or `until`), and have the command read what it needs itself"
                    )),
                );
            }
        }
    }
    at_run
}

/// Whether `expr` reads `NAME.results` (or `NAME['results']`). Textual: a name followed by
/// an attribute is what an expression reads of it.
fn reads_results(expr: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    expr.match_indices(name).any(|(at, _)| {
        if expr[..at]
            .chars()
            .next_back()
            .is_some_and(|c| word(c) || c == '.')
        {
            return false;
        }
        let rest: String = expr[at + name.len()..]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        rest.strip_prefix(".results")
            .is_some_and(|r| !r.starts_with(word))
            || rest.starts_with("['results']")
            || rest.starts_with("[\"results\"]")
    })
}

fn results_error(
    r: &mut Reporter<'_>,
    at: &std::ops::Range<usize>,
    key: &str,
    label: &str,
    name: &str,
    why: &str,
) {
    r.error(
        at,
        format!("`{key}` in {label} reads `{name}.results`, but {why}"),
        Some(format!(
            "read the result itself: {name}.rc, {name}.stdout, {name}.changed, {name}.failed"
        )),
    );
}

fn reads_registered(v: &DeValue<'_>, seen: &[String]) -> Option<String> {
    match v {
        DeValue::String(s) if s.contains("{{") || s.contains("{%") => {
            let names = crate::template::names_read(s)?;
            seen.iter().find(|n| names.contains(n.as_str())).cloned()
        }
        DeValue::Array(a) => a.iter().find_map(|x| reads_registered(x.get_ref(), seen)),
        DeValue::Table(t) => t.values().find_map(|x| reads_registered(x.get_ref(), seen)),
        _ => None,
    }
}

/// Sets each spec's `when_at_run` from [`check_reads`] (specs and flags match one to one when
/// the file had no errors, the only case in which specs are used).
/// [`mark`] over a file's entries: flags are per `[[steps]]` table, includes among them.
pub(super) fn mark_entries(entries: &mut [super::Entry], flags: &[bool]) {
    if entries.len() == flags.len() {
        for (e, f) in entries.iter_mut().zip(flags) {
            if let super::Entry::Step(s, _) = e {
                s.when_at_run = *f;
            }
        }
    }
}

pub(super) fn mark(specs: &mut [StepSpec], flags: &[bool]) {
    if specs.len() == flags.len() {
        for (s, f) in specs.iter_mut().zip(flags) {
            s.when_at_run = *f;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::playbook_file::PlaybookFile;
    use crate::registered::Retry;
    use std::path::Path;
    use std::time::Duration;

    fn parse(text: &str) -> Result<PlaybookFile, String> {
        PlaybookFile::parse(text, Path::new("p.toml"), &["command"]).map_err(|e| e.to_string())
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("parsed: {text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn register_retries_and_a_when_over_a_registered_result() {
        let pb = parse(
            r#"
[[steps]]
name = "probe"
use = "command"
register = "probe"
with = { run = "cat /etc/x" }

[[steps]]
use = "command"
when = "probe.rc != 0 and vars.fix"
retries = 5
delay = 0
until = "'ready' in stdout and me.rc == 0"
register = "me"

[[steps]]
use = "command"
when = "vars.fix"
retries = 2

[[handlers]]
name = "h"
use = "command"
when = "me.changed"
"#,
        )
        .unwrap();
        let s = &pb.steps;
        assert_eq!(s[0].register.as_deref(), Some("probe"));
        assert!(!s[0].when_at_run && s[0].retry.is_none());
        assert!(s[1].when_at_run, "reads probe");
        assert_eq!(
            s[1].retry,
            Some(Retry {
                retries: 5,
                delay: Duration::ZERO,
                until: Some("'ready' in stdout and me.rc == 0".into()),
            })
        );
        assert!(!s[2].when_at_run, "vars only: decided when compiled");
        assert_eq!(s[2].retry.as_ref().unwrap().delay, Duration::from_secs(5));
        assert_eq!(s[2].retry.as_ref().unwrap().until, None);
        assert!(
            pb.handlers[0].when_at_run,
            "handlers read what steps registered"
        );
    }

    #[test]
    fn a_name_no_earlier_step_registers_is_refused_with_did_you_mean() {
        let text = r#"
[[steps]]
use = "command"
register = "probe"

[[steps]]
use = "command"
when = "prob.rc == 0"

[[steps]]
use = "command"
when = "later.changed"

[[steps]]
use = "command"
register = "later"
retries = 1
until = "stdout == probe.stdout and nope"
"#;
        assert_eq!(
            error(text),
            "p.toml:8:8: error: `when` in step `command` reads `prob`, which no earlier step registers\n  \
             help: did you mean `probe`?\n\n\
             p.toml:12:8: error: `when` in step `command` reads `later`, which no earlier step registers\n  \
             help: `later` is registered at line 16, which is not before this step: a step reads only what earlier steps registered\n\n\
             p.toml:18:9: error: `until` in step `command` reads `nope`, which no earlier step registers\n  \
             help: registered so far: probe; or read a var as vars.nope\n\n3 errors"
        );
        assert_eq!(
            error("[[steps]]\nuse = \"command\"\nwhen = \"ready\"\n"),
            "p.toml:3:8: error: `when` in step `command` reads `ready`, which no earlier step registers\n  \
             help: register a result on an earlier step with register = \"ready\", or read a var as vars.ready\n\n1 error"
        );
    }

    #[test]
    fn bad_register_names() {
        for (name, message) in [
            (
                "my-probe",
                "must be a name of letters, digits and `_` (not starting with a digit), not `my-probe`",
            ),
            ("vars", "must not be `vars`: templates already read `vars`"),
            ("item", "must not be `item`: templates already read `item`"),
            (
                "range",
                "must not be `range`: templates already read `range`",
            ),
            (
                "rc",
                "must not be `rc`: `until` reads the step's own `rc` by that name",
            ),
            (
                "true",
                "must not be `true`: templates read it as a constant",
            ),
        ] {
            let e = error(&format!(
                "[[steps]]\nuse = \"command\"\nregister = \"{name}\"\n"
            ));
            assert!(
                e.starts_with(&format!("p.toml:3:12: error: `register` in step `command` {message}\n  help: write register = \"probe\"")),
                "{name}: {e}"
            );
        }
        let e = error("[[steps]]\nuse = \"command\"\nregister = 3\n");
        assert!(
            e.starts_with(
                "p.toml:3:12: error: `register` in step `command` must be a string, not an integer"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_name_registered_twice_is_the_later_result() {
        // Allowed (as in Ansible): a later step reads whichever ran last.
        let pb = parse(
            "[[steps]]\nuse = \"command\"\nregister = \"r\"\n\
             [[steps]]\nuse = \"command\"\nregister = \"r\"\n\
             [[steps]]\nuse = \"command\"\nwhen = \"r.changed\"\n",
        )
        .unwrap();
        assert!(pb.steps[2].when_at_run);
    }

    #[test]
    fn bad_retries_delays_and_untils() {
        let text = r#"
[[steps]]
use = "command"
until = "rc == 0"

[[steps]]
use = "command"
delay = 3

[[steps]]
use = "command"
retries = 0

[[steps]]
use = "command"
retries = "5"

[[steps]]
use = "command"
retries = 3
delay = -1

[[steps]]
use = "command"
retries = 3
until = "rc =="
"#;
        assert_eq!(
            error(text),
            "p.toml:4:9: error: `until` in step `command` without `retries`\n  \
             help: add retries = 5 (how many times the step may run again on a host), or remove `until`\n\n\
             p.toml:8:9: error: `delay` in step `command` without `retries`\n  \
             help: add retries = 5 (how many times the step may run again on a host), or remove `delay`\n\n\
             p.toml:12:11: error: `retries` in step `command` must be a positive integer, not 0\n  \
             help: write retries = 5: how many times the step may run again on a host\n\n\
             p.toml:16:11: error: `retries` in step `command` must be an integer, not a string\n  \
             help: write retries = 5\n\n\
             p.toml:21:9: error: `delay` in step `command` must not be negative (-1)\n  \
             help: write delay = 10: seconds between attempts (0: none)\n\n\
             p.toml:26:9: error: `until` in step `command`: `rc ==` is not a valid expression\n  \
             help: write a minijinja expression without {{ }}, e.g. until = \"probe.rc == 0\"\n\n6 errors"
        );
    }

    #[test]
    fn with_cannot_read_a_registered_result() {
        let e = error(
            "[[steps]]\nuse = \"command\"\nregister = \"probe\"\n\
             [[steps]]\nuse = \"command\"\nwith = { run = \"echo {{ probe.stdout }}\" }\n",
        );
        assert_eq!(
            e,
            "p.toml:6:10: error: `with.run` in step `command` reads `probe`, a registered result: only `when` and `until` read those\n  \
             help: `with` is rendered before any step runs; decide with when = \"probe.rc == 0\" (or `until`), and have the command read what it needs itself\n\n1 error"
        );
    }

    #[test]
    fn results_are_read_only_of_a_looped_register() {
        let pb = parse(
            r#"
[[steps]]
use = "command"
loop = ["a", "b"]
register = "each"

[[steps]]
use = "command"
when = "each.results[0].rc == 0 and each.changed and (each.results | selectattr('failed') | list | length) == 0"
"#,
        )
        .unwrap();
        assert!(pb.steps[1].when_at_run);
        let e = error(
            r#"
[[steps]]
use = "command"
register = "one"

[[steps]]
use = "command"
when = "one.results[0].rc == 0"

[[steps]]
use = "command"
when = "one['results'] and one.results_x"
register = "two"
retries = 2
until = "two.results | length > 0"
"#,
        );
        assert_eq!(
            e,
            "p.toml:8:8: error: `when` in step `command` reads `one.results`, but the step that registers it has no `loop`: only a looped step registers `results`\n  \
             help: read the result itself: one.rc, one.stdout, one.changed, one.failed\n\n\
             p.toml:12:8: error: `when` in step `command` reads `one.results`, but the step that registers it has no `loop`: only a looped step registers `results`\n  \
             help: read the result itself: one.rc, one.stdout, one.changed, one.failed\n\n\
             p.toml:15:9: error: `until` in step `command` reads `two.results`, but it is this step's own result (in a loop: one item's), which has no `results`\n  \
             help: read the result itself: two.rc, two.stdout, two.changed, two.failed\n\n3 errors"
        );
    }

    #[test]
    fn results_reads_are_found_by_name_and_attribute() {
        use super::reads_results;
        assert!(reads_results("x.results[0].rc == 0", "x"));
        assert!(reads_results("x . results | length", "x"));
        assert!(reads_results("x['results']", "x"));
        assert!(!reads_results("x.results_y", "x"));
        assert!(!reads_results("yx.results", "x"));
        assert!(!reads_results("v.x.results", "x"));
        assert!(!reads_results("x.rc == 0", "x"));
    }
}
