//! `ignore_errors`, `failed_when` and `changed_when` on a step (Ansible's keywords of those
//! names): how a step's own result decides whether a host failed or changed, and whether a
//! failure stops the host. What the expressions read is checked with `when`'s (`register.rs`).

use toml::de::{DeTable, DeValue};

use crate::diagnostic::Reporter;
use crate::registered::ResultRules;

/// The steps whose result is a command's `rc`, `stdout` and `stderr`: the only ones the
/// expressions can read something of. Every other step decides failure and change from the
/// host's state.
pub const JUDGED_STEPS: &[&str] = &["command"];

/// The step's `ignore_errors`, `failed_when` and `changed_when`; `uses` is its `use`.
pub(super) fn check_rules(
    r: &mut Reporter<'_>,
    t: &DeTable<'_>,
    label: &str,
    uses: Option<&str>,
) -> Option<ResultRules> {
    let ignore_errors = match t.get("ignore_errors") {
        None => Some(false),
        Some(v) => match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                r.wrong_type(
                    v,
                    &format!("`ignore_errors` in {label}"),
                    "a boolean",
                    "ignore_errors = true (a host failing this step goes on with the next ones)",
                );
                None
            }
        },
    };
    let mut expr = |key: &str, example: &str| -> Option<Option<String>> {
        let Some(v) = t.get(key) else {
            return Some(None);
        };
        if let Some(u) = uses.filter(|u| !JUDGED_STEPS.contains(u)) {
            r.error(
                &v.span(),
                format!(
                    "`{key}` in {label}: `{u}` has no result of its own to read (rc, stdout, stderr); only {} steps have",
                    JUDGED_STEPS.join(", ")
                ),
                Some(format!(
                    "remove `{key}`: `{u}` decides from the host's state whether it failed or changed; to fail on a condition, add a step use = \"fail\" with a `when`"
                )),
            );
            return None;
        }
        expression(r, v, &format!("`{key}` in {label}"), example).map(Some)
    };
    let failed_when = expr("failed_when", "failed_when = \"rc not in [0, 1]\"");
    let changed_when = expr("changed_when", "changed_when = \"'updated' in stdout\"");
    Some(ResultRules {
        ignore_errors: ignore_errors?,
        failed_when: failed_when?,
        changed_when: changed_when?,
    })
}

/// A condition as written: an expression, a boolean (`changed_when = false`), or a list of
/// expressions that must all hold (Ansible's list form), as one expression.
fn expression(
    r: &mut Reporter<'_>,
    v: &toml::Spanned<DeValue<'_>>,
    what: &str,
    example: &str,
) -> Option<String> {
    match v.get_ref() {
        DeValue::Boolean(b) => Some(b.to_string()),
        DeValue::String(_) => r.nonempty_string(v, what, example).map(str::to_string),
        DeValue::Array(items) if !items.is_empty() => {
            let mut all = Vec::new();
            for item in items {
                all.push(r.nonempty_string(item, what, example)?.to_string());
            }
            Some(match all.as_slice() {
                [one] => one.clone(),
                _ => all
                    .iter()
                    .map(|e| format!("({e})"))
                    .collect::<Vec<_>>()
                    .join(" and "),
            })
        }
        _ => {
            r.wrong_type(
                v,
                what,
                "an expression, a boolean or a list of expressions",
                example,
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::playbook_file::PlaybookFile;
    use crate::registered::ResultRules;
    use std::path::Path;

    fn parse(text: &str) -> Result<PlaybookFile, String> {
        PlaybookFile::parse(text, Path::new("p.toml"), &["command", "copy"])
            .map_err(|e| e.to_string())
    }

    #[test]
    fn rules_in_their_three_forms() {
        let pb = parse(
            r#"
[[steps]]
use = "command"
ignore_errors = true
failed_when = "rc not in [0, 1]"
changed_when = false

[[steps]]
use = "command"
failed_when = ["rc != 0", "'ok' not in stdout"]
changed_when = ["'updated' in stdout"]

[[steps]]
use = "copy"
ignore_errors = false
"#,
        )
        .unwrap();
        assert_eq!(
            pb.steps[0].rules,
            ResultRules {
                ignore_errors: true,
                failed_when: Some("rc not in [0, 1]".into()),
                changed_when: Some("false".into()),
            }
        );
        assert!(pb.steps[0].rules.never_changes());
        assert_eq!(
            pb.steps[1].rules,
            ResultRules {
                ignore_errors: false,
                failed_when: Some("(rc != 0) and ('ok' not in stdout)".into()),
                changed_when: Some("'updated' in stdout".into()),
            }
        );
        assert!(!pb.steps[1].rules.never_changes());
        assert!(pb.steps[2].rules.is_default());
    }

    #[test]
    fn bad_rules_are_refused_at_their_position() {
        let e = parse(
            r#"
[[steps]]
use = "copy"
failed_when = "rc != 0"

[[steps]]
use = "command"
ignore_errors = "yes"
changed_when = 3

[[steps]]
use = "command"
failed_when = "rc =="

[[steps]]
use = "command"
changed_when = "rc == 0 and nope"

[[steps]]
use = "command"
changed_when = ["rc == 0", ""]
"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "p.toml:4:15: error: `failed_when` in step `copy`: `copy` has no result of its own to read (rc, stdout, stderr); only command steps have\n  \
             help: remove `failed_when`: `copy` decides from the host's state whether it failed or changed; to fail on a condition, add a step use = \"fail\" with a `when`\n\n\
             p.toml:8:17: error: `ignore_errors` in step `command` must be a boolean, not a string\n  \
             help: write ignore_errors = true (a host failing this step goes on with the next ones)\n\n\
             p.toml:9:16: error: `changed_when` in step `command` must be an expression, a boolean or a list of expressions, not an integer\n  \
             help: write changed_when = \"'updated' in stdout\"\n\n\
             p.toml:13:15: error: `failed_when` in step `command`: `rc ==` is not a valid expression\n  \
             help: write a minijinja expression without {{ }}, e.g. failed_when = \"probe.rc == 0\"\n\n\
             p.toml:17:16: error: `changed_when` in step `command` reads `nope`, which no earlier step registers\n  \
             help: register a result on an earlier step with register = \"nope\", or read a var as vars.nope\n\n\
             p.toml:21:28: error: `changed_when` in step `command` must not be empty\n  \
             help: write changed_when = \"'updated' in stdout\"\n\n6 errors"
        );
    }
}
