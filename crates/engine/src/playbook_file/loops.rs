//! `loop`, `loop_var` and `loop_label` on a step: the step repeated once per item (Ansible's
//! `loop` and `loop_control`), checked where they are written. The items of a `loop` over vars
//! are only known when the playbook is compiled against an inventory; everything else is
//! checked here, including a template reading `item` in a step that has no loop.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{Reporter, a_type, to_value};

/// The name each item has in a step's templates unless `loop_var` says otherwise.
pub const DEFAULT_LOOP_VAR: &str = "item";

/// Names every template context has already: a loop var must not hide one.
const CONTEXT_NAMES: &[&str] = &["vars", "host", "hosts", "cluster", "secrets", "facts"];
/// Words an expression reads as constants, never as a variable.
const CONSTANTS: &[&str] = &["true", "false", "none", "True", "False", "None"];

/// A step's `loop`: what it is repeated over, under which name, labelled how.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLoop {
    pub items: LoopItems,
    /// `loop_var`: the name of the item in the step's templates (`item` by default).
    pub var: String,
    /// `loop_label`: a template of each repetition's label; None: the item itself (a table's
    /// `name`, else a short rendering of it).
    pub label: Option<String>,
    /// Where `loop` and `loop_label` are written, for errors found when they are evaluated.
    pub at: (usize, usize),
    pub label_at: Option<(usize, usize)>,
}

/// What a loop goes over.
#[derive(Debug, Clone, PartialEq)]
pub enum LoopItems {
    /// `loop = ["alice", "bob"]`: the items as written.
    List(Vec<toml::Value>),
    /// `loop = "{{ vars.users }}"`: this expression (without its braces), evaluated over the
    /// cluster's vars when the playbook is compiled; it must give a list.
    Expression(String),
}

/// The step's `loop`, `loop_var` and `loop_label`: None when the step has no loop (and may
/// then have neither of the others). The outer None: an error was reported.
pub(super) fn check_loop(
    r: &mut Reporter<'_>,
    t: &DeTable<'_>,
    label: &str,
) -> Option<Option<StepLoop>> {
    let Some(v) = t.get("loop") else {
        let fix = |key: &str| {
            format!(
                "add loop = [\"a\", \"b\"] (or loop = \"{{{{ vars.list }}}}\") to repeat the step, or remove `{key}`"
            )
        };
        return super::keys_need(r, t, &["loop_var", "loop_label"], label, "a `loop`", &fix)
            .then_some(None);
    };
    let items = check_items(r, v, label);
    let var = match t.get("loop_var") {
        Some(v) => check_loop_var(r, v, label),
        None => Some(DEFAULT_LOOP_VAR.to_string()),
    };
    let (loop_label, label_at) = match t.get("loop_label") {
        Some(v) => {
            let s = r.nonempty_string(
                v,
                &format!("`loop_label` in {label}"),
                "loop_label = \"{{ item.name }}\"",
            );
            (s.map(|s| Some(s.to_string())), Some(r.pos(&v.span())))
        }
        None => (Some(None), None),
    };
    Some(Some(StepLoop {
        items: items?,
        var: var?,
        label: loop_label?,
        at: r.pos(&v.span()),
        label_at,
    }))
}

fn check_items(r: &mut Reporter<'_>, v: &Spanned<DeValue<'_>>, label: &str) -> Option<LoopItems> {
    let what = format!("`loop` in {label}");
    let example = "loop = [\"alice\", \"bob\"], or loop = \"{{ vars.users }}\" (a list in [vars])";
    match v.get_ref() {
        DeValue::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.get_ref() {
                    DeValue::Datetime(_) | DeValue::Array(_) => r.error(
                        &item.span(),
                        format!(
                            "item {} of {what} is {}: items are strings, numbers, booleans or tables",
                            i + 1,
                            a_type(item.get_ref())
                        ),
                        Some(
                            "write the item as a string, or as a table of its parts: { name = \"a\", groups = [\"b\"] }"
                                .into(),
                        ),
                    ),
                    other => out.push(to_value(other)),
                }
            }
            (out.len() == items.len()).then_some(LoopItems::List(out))
        }
        DeValue::String(s) => {
            let Some(expr) = lone_expression(s) else {
                r.error(
                    &v.span(),
                    format!("{what} is a string, not a list: `{s}`"),
                    Some(format!(
                        "write {example}; a string loops only as one {{{{ expression }}}} that gives a list"
                    )),
                );
                return None;
            };
            if let Err(e) = crate::template::environment().compile_expression(expr) {
                r.error(
                    &v.span(),
                    format!(
                        "{what}: `{expr}` is not a valid expression: {}",
                        e.detail().unwrap_or("syntax error")
                    ),
                    Some(format!("write {example}")),
                );
                return None;
            }
            Some(LoopItems::Expression(expr.to_string()))
        }
        _ => {
            r.wrong_type(v, &what, "a list", example);
            None
        }
    }
}

/// The expression of a string that is exactly one `{{ expression }}`.
fn lone_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let nested = inner.contains("{{") || inner.contains("}}") || inner.contains("{%");
    (!nested && !inner.trim().is_empty()).then(|| inner.trim())
}

fn check_loop_var(r: &mut Reporter<'_>, v: &Spanned<DeValue<'_>>, label: &str) -> Option<String> {
    let what = format!("`loop_var` in {label}");
    let s = r.nonempty_string(v, &what, "loop_var = \"user\"")?;
    let mut chars = s.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    let problem = if !identifier {
        Some(format!(
            "{what} must be a name of letters, digits and `_` (not starting with a digit), not `{s}`"
        ))
    } else if CONTEXT_NAMES.contains(&s) {
        Some(format!(
            "{what} must not be `{s}`: templates already read `{s}` ({})",
            CONTEXT_NAMES.join(", ")
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
                Some("write loop_var = \"user\" and read {{ user }} in the step".into()),
            );
            None
        }
        None => Some(s.to_string()),
    }
}

/// A template in the step's `when` or `with` that reads `item` where no item exists (the step
/// has no loop, or calls its item something else): an error at the key, since at run time it
/// could only be "undefined".
pub(super) fn check_item_use(
    r: &mut Reporter<'_>,
    t: &DeTable<'_>,
    label: &str,
    looped: Option<&StepLoop>,
) {
    if looped.is_some_and(|l| l.var == DEFAULT_LOOP_VAR) {
        return;
    }
    let (message, help) = match looped {
        None => (
            format!("{label} reads `{DEFAULT_LOOP_VAR}`, but it has no `loop`"),
            format!(
                "add loop = [\"a\", \"b\"] (or loop = \"{{{{ vars.list }}}}\") to repeat the step once per item; `{DEFAULT_LOOP_VAR}` exists only in a looped step"
            ),
        ),
        Some(l) => (
            format!(
                "{label} reads `{DEFAULT_LOOP_VAR}`, but its loop calls each item `{}` (loop_var)",
                l.var
            ),
            format!(
                "write {{{{ {} }}}}, or remove loop_var = \"{}\"",
                l.var, l.var
            ),
        ),
    };
    if let Some(v) = t.get("when")
        && let DeValue::String(expr) = v.get_ref()
        && crate::template::names_read_by_expression(expr)
            .is_some_and(|n| n.contains(DEFAULT_LOOP_VAR))
    {
        r.error(&v.span(), format!("`when`: {message}"), Some(help.clone()));
    }
    if let Some(w) = t.get("with")
        && let DeValue::Table(w) = w.get_ref()
    {
        for (key, value) in w.iter() {
            if reads_item(value.get_ref()) {
                r.error(
                    &key.span(),
                    format!("`with.{}`: {message}", key.get_ref()),
                    Some(help.clone()),
                );
            }
        }
    }
}

fn reads_item(v: &DeValue<'_>) -> bool {
    match v {
        DeValue::String(s) if s.contains("{{") || s.contains("{%") => {
            crate::template::names_read(s).is_some_and(|n| n.contains(DEFAULT_LOOP_VAR))
        }
        DeValue::Array(a) => a.iter().any(|x| reads_item(x.get_ref())),
        DeValue::Table(t) => t.values().any(|x| reads_item(x.get_ref())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook_file::PlaybookFile;
    use std::path::Path;

    fn parse(step: &str) -> Result<Option<StepLoop>, String> {
        let text = format!("[[steps]]\nname = \"s\"\nuse = \"copy\"\n{step}\n");
        PlaybookFile::parse(&text, Path::new("p.toml"), &["copy"])
            .map(|pb| pb.steps[0].loop_over.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_literal_loop_keeps_its_items_in_order() {
        let l = parse("loop = [\"a\", 2, { name = \"c\", uid = 3 }, true]\nwith = { dest = \"/x/{{ item }}\" }")
            .unwrap()
            .unwrap();
        let expected: toml::Table =
            toml::from_str("l = [\"a\", 2, { name = \"c\", uid = 3 }, true]").unwrap();
        assert_eq!(
            l.items,
            LoopItems::List(expected["l"].as_array().unwrap().clone())
        );
        assert_eq!(l.var, "item");
        assert_eq!(l.label, None);
        assert_eq!(l.at, (4, 8));
        assert_eq!(parse("").unwrap(), None, "no loop");
    }

    #[test]
    fn a_loop_over_vars_keeps_its_expression_and_names() {
        let l = parse(
            "loop = \"{{ vars.users }}\"\nloop_var = \"user\"\nloop_label = \"{{ user.name }}\"\nwith = { dest = \"/x/{{ user.name }}\" }",
        )
        .unwrap()
        .unwrap();
        assert_eq!(l.items, LoopItems::Expression("vars.users".into()));
        assert_eq!(l.var, "user");
        assert_eq!(l.label.as_deref(), Some("{{ user.name }}"));
        assert_eq!(l.label_at, Some((6, 14)));
    }

    #[test]
    fn what_is_not_a_list_is_refused_where_it_is_written() {
        let e = parse("loop = 3").unwrap_err();
        assert!(
            e.starts_with("p.toml:4:8: error: `loop` in step `s` must be a list, not an integer\n  help: write loop = [\"alice\", \"bob\"]"),
            "{e}"
        );
        let e = parse("loop = \"alice\"").unwrap_err();
        assert!(
            e.starts_with(
                "p.toml:4:8: error: `loop` in step `s` is a string, not a list: `alice`\n"
            ),
            "{e}"
        );
        let e = parse("loop = \"{{ vars.users }} and more\"").unwrap_err();
        assert!(e.contains("is a string, not a list"), "{e}");
        let e = parse("loop = \"{{ vars.users | }}\"").unwrap_err();
        assert!(
            e.starts_with(
                "p.toml:4:8: error: `loop` in step `s`: `vars.users |` is not a valid expression"
            ),
            "{e}"
        );
        let e = parse("loop = [\"a\", [1, 2]]").unwrap_err();
        assert!(
            e.starts_with("p.toml:4:14: error: item 2 of `loop` in step `s` is an array: items are strings, numbers, booleans or tables"),
            "{e}"
        );
    }

    #[test]
    fn bad_loop_vars_and_labels() {
        let e = parse("loop = [1]\nloop_var = \"\"").unwrap_err();
        assert!(
            e.starts_with("p.toml:5:12: error: `loop_var` in step `s` must not be empty"),
            "{e}"
        );
        let e = parse("loop = [1]\nloop_var = \"my-user\"").unwrap_err();
        assert!(
            e.contains("p.toml:5:12: error: `loop_var` in step `s` must be a name of letters, digits and `_` (not starting with a digit), not `my-user`"),
            "{e}"
        );
        let e = parse("loop = [1]\nloop_var = \"vars\"").unwrap_err();
        assert!(
            e.contains("`loop_var` in step `s` must not be `vars`: templates already read `vars`"),
            "{e}"
        );
        let e = parse("loop = [1]\nloop_var = \"none\"").unwrap_err();
        assert!(e.contains("templates read it as a constant"), "{e}");
        let e = parse("loop = [1]\nloop_label = \"\"").unwrap_err();
        assert!(
            e.starts_with("p.toml:5:14: error: `loop_label` in step `s` must not be empty"),
            "{e}"
        );
        let e = parse("loop_var = \"user\"").unwrap_err();
        assert!(
            e.starts_with("p.toml:4:12: error: `loop_var` in step `s` without a `loop`"),
            "{e}"
        );
        let e = parse("loop_label = \"x\"").unwrap_err();
        assert!(
            e.contains("`loop_label` in step `s` without a `loop`"),
            "{e}"
        );
    }

    #[test]
    fn reading_item_without_a_loop_is_an_error_at_the_key() {
        let e = parse("with = { dest = \"/x\", content = \"{{ item.name }}\" }").unwrap_err();
        assert_eq!(
            e,
            "p.toml:4:23: error: `with.content`: step `s` reads `item`, but it has no `loop`\n  help: add loop = [\"a\", \"b\"] (or loop = \"{{ vars.list }}\") to repeat the step once per item; `item` exists only in a looped step\n\n1 error"
        );
        let e = parse("when = \"item\"").unwrap_err();
        assert!(
            e.starts_with("p.toml:4:8: error: `when`: step `s` reads `item`, but it has no `loop`"),
            "{e}"
        );
        // Nested in a list, and with another loop_var.
        let e =
            parse("loop = [1]\nloop_var = \"n\"\nwith = { lines = [\"{{ item }}\"] }").unwrap_err();
        assert!(
            e.contains("p.toml:6:10: error: `with.lines`: step `s` reads `item`, but its loop calls each item `n` (loop_var)\n  help: write {{ n }}, or remove loop_var = \"n\""),
            "{e}"
        );
        // A template's own `item` is its business; other names are left to rendering.
        parse("with = { content = \"{% for item in vars.xs %}{{ item }}{% endfor %}\" }").unwrap();
        parse("with = { content = \"{{ vars.item }}\" }").unwrap();
    }
}
