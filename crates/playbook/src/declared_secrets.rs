//! The `[[secrets]]` a playbook declares: which of them this inventory needs (their `when`
//! over the cluster's vars), which are missing from the secrets file, and the diagnostics that
//! name each missing one with the command that creates it.

use std::path::Path;

use provision_engine::diagnostic::Diagnostic;
use provision_engine::inventory::Inventory;
use provision_engine::playbook_file::{PlaybookFile, SecretSpec};
use provision_engine::template;

use crate::compile::context::cluster_context;

/// A declared secret this inventory needs, and its state in the secrets file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Present,
    Missing,
    /// The key holds a table or a non-string value.
    NotAString,
}

/// The declared secrets whose `when` is true for this inventory (evaluated cluster-wide, like a
/// cluster step's), each with its state in `secrets`. A `when` that cannot be evaluated is an
/// error at its declaration.
pub fn needed<'p>(
    inv: &Inventory,
    pb: &'p PlaybookFile,
    secrets: &toml::Table,
) -> Result<Vec<(&'p SecretSpec, State)>, Vec<Diagnostic>> {
    let env = template::environment();
    // `when` sees vars only: whether a secret is needed must not depend on the secrets.
    let ctx = cluster_context(inv, &toml::Table::new());
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for spec in &pb.secrets {
        if let Some(expr) = &spec.when {
            match template::truthy(&env, expr, &ctx) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    errors.push(
                        Diagnostic::error(
                            &spec.file,
                            (spec.line, spec.column),
                            format!("secret `{}`: cannot evaluate `when`: {}", spec.name, e.message),
                        )
                        .with_help("`when` of a secret is a minijinja expression over vars, e.g. when = \"vars.stack == 'appwrite'\""),
                    );
                    continue;
                }
            }
        }
        out.push((spec, state(secrets, &spec.name)));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The state of dotted `name` in a secrets table.
pub fn state(secrets: &toml::Table, name: &str) -> State {
    let mut parts = name.split('.').peekable();
    let mut table = secrets;
    while let Some(part) = parts.next() {
        match (table.get(part), parts.peek()) {
            (None, _) => return State::Missing,
            (Some(toml::Value::String(_)), None) => return State::Present,
            (Some(_), None) => return State::NotAString,
            (Some(toml::Value::Table(t)), Some(_)) => table = t,
            (Some(_), Some(_)) => return State::NotAString,
        }
    }
    State::Missing
}

/// An error at each needed secret that is required and missing (or not a string), saying how
/// to create it: `provision secrets generate` for generated ones, `secrets set` otherwise.
/// Optional ones are not errors: the templates give them a default.
pub fn problems(inv: &Inventory, needed: &[(&SecretSpec, State)]) -> Vec<Diagnostic> {
    let cluster = shown(&inv.path);
    let mut out = Vec::new();
    for (spec, state) in needed {
        let at = (spec.line, spec.column);
        let about = spec
            .description
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        let d = match (&inv.secrets, state) {
            (_, State::Present) => continue,
            (_, State::Missing) if !spec.required => continue,
            (None, _) => Diagnostic::error(
                &spec.file,
                at,
                format!(
                    "the playbook needs secret `{}`{about}, and {cluster} names no secrets file",
                    spec.name
                ),
            )
            .with_help(format!(
                "add secrets = \"secrets.age\" to {cluster}, run `provision secrets init secrets.age`, then `provision secrets generate {cluster}`"
            )),
            (Some(file), State::NotAString) => Diagnostic::error(
                &spec.file,
                at,
                format!("secret `{}` in {} must be a string", spec.name, shown(file)),
            )
            .with_help(format!(
                "fix it with `provision secrets edit {}`",
                shown(file)
            )),
            (Some(file), _) => {
                let help = match spec.generate {
                    Some(_) => format!(
                        "create every missing generated secret with `provision secrets generate {cluster}` (random values, never printed)"
                    ),
                    None => format!(
                        "set it with `provision secrets set {} {}` (the value is read from stdin)",
                        shown(file),
                        spec.name
                    ),
                };
                Diagnostic::error(
                    &spec.file,
                    at,
                    format!(
                        "required secret `{}`{about} is not in {}",
                        spec.name,
                        shown(file)
                    ),
                )
                .with_help(help)
            }
        };
        out.push(d);
    }
    out
}

/// A path as a command line should repeat it: relative to the working directory when under it.
fn shown(path: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    cwd.as_deref()
        .and_then(|c| path.strip_prefix(c).ok())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::test_inventory;

    fn playbook(text: &str) -> PlaybookFile {
        PlaybookFile::parse(text, Path::new("/pb/site.toml"), &crate::known_steps()).unwrap()
    }

    const PB: &str = r#"
[[steps]]
use = "command"
with = { run = "true" }

[[secrets]]
name = "app.db_pass"
description = "the database password"
length = 32

[[secrets]]
name = "app.smtp_password"
required = false

[[secrets]]
name = "app.registry_token"

[[secrets]]
name = "demo.key"
when = "vars.stack | default('') == 'demo'"
length = 16
alphabet = "hex"
"#;

    fn messages(diagnostics: Vec<Diagnostic>) -> Vec<String> {
        diagnostics.iter().map(|d| d.to_string()).collect()
    }

    /// The problems when the secrets file holds nothing.
    fn problems_without_secrets(inv: &Inventory, pb: &PlaybookFile) -> Vec<String> {
        messages(problems(
            inv,
            &needed(inv, pb, &toml::Table::new()).unwrap(),
        ))
    }

    /// Each of `parts` is in `msg` (shown whole when one is not).
    #[track_caller]
    fn assert_mentions(msg: &str, parts: &[&str]) {
        for part in parts {
            assert!(msg.contains(part), "{msg}");
        }
    }

    #[test]
    fn state_follows_dotted_keys() {
        let t: toml::Table = toml::from_str("a = \"x\"\n[app]\ndb_pass = \"v\"\nn = 3\n").unwrap();
        assert_eq!(state(&t, "app.db_pass"), State::Present);
        assert_eq!(state(&t, "app.other"), State::Missing);
        assert_eq!(state(&t, "app"), State::NotAString);
        assert_eq!(state(&t, "app.n"), State::NotAString);
        assert_eq!(state(&t, "a.b"), State::NotAString);
        assert_eq!(state(&t, "b.c"), State::Missing);
    }

    /// `when` is evaluated over vars: demo.key is needed only with stack = "demo"; each missing
    /// required secret is an error at its declaration naming the command that makes it.
    #[test]
    fn missing_required_secrets_are_named_with_the_command_that_creates_them() {
        let mut inv = test_inventory();
        inv.path = "/c/cluster.toml".into();
        inv.secrets = Some("/c/secrets.age".into());
        let pb = playbook(PB);
        let t: toml::Table = toml::from_str("[app]\nregistry_token = \"0123456789\"\n").unwrap();
        let needed_now = needed(&inv, &pb, &t).unwrap();
        let names: Vec<_> = needed_now
            .iter()
            .map(|(s, st)| (s.name.as_str(), *st))
            .collect();
        assert_eq!(
            names,
            [
                ("app.db_pass", State::Missing),
                ("app.smtp_password", State::Missing),
                ("app.registry_token", State::Present)
            ]
        );
        let msgs = messages(problems(&inv, &needed_now));
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_mentions(
            &msgs[0],
            &[
                "/pb/site.toml:6:1",
                "required secret `app.db_pass` (the database password) is not in /c/secrets.age",
                "provision secrets generate /c/cluster.toml",
            ],
        );

        inv.vars.insert("stack".into(), "demo".into());
        let msgs = problems_without_secrets(&inv, &pb);
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[1].contains("provision secrets set /c/secrets.age app.registry_token"));
        assert!(msgs[2].contains("`demo.key`"));
    }

    #[test]
    fn no_secrets_file_is_named_with_the_steps_to_make_one() {
        let mut inv = test_inventory();
        inv.path = "/c/cluster.toml".into();
        inv.secrets = None;
        let pb = playbook(PB);
        let msgs = problems_without_secrets(&inv, &pb);
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert_mentions(
            &msgs[0],
            &[
                "/c/cluster.toml names no secrets file",
                "provision secrets init secrets.age",
            ],
        );
    }

    #[test]
    fn a_when_that_cannot_be_evaluated_is_an_error_at_the_declaration() {
        let inv = test_inventory();
        let pb = playbook(
            "[[steps]]\nuse = \"command\"\nwith = { run = \"true\" }\n[[secrets]]\nname = \"a.b\"\nwhen = \"vars.x ==\"\n",
        );
        let errs = needed(&inv, &pb, &toml::Table::new()).unwrap_err();
        assert_eq!(errs.len(), 1);
        let msg = errs[0].to_string();
        assert!(
            msg.contains("/pb/site.toml:4:1") && msg.contains("cannot evaluate `when`"),
            "{msg}"
        );
    }
}
