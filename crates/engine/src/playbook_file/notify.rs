//! The handler parts of a playbook file: `[[handlers]]` (each named, names unique), a step's
//! `notify` (names of declared handlers) and `use = "flush_handlers"` (no parameters).

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{StepSpec, check_step};
use crate::diagnostic::{Diagnostic, Reporter, did_you_mean};

/// The `use` of a step that runs the handlers notified so far, there (Ansible's
/// `meta: flush_handlers`).
pub const FLUSH_HANDLERS: &str = "flush_handlers";

/// A handler a step notifies, where the step names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub handler: String,
    pub line: usize,
    pub column: usize,
}

const NOTIFY_EXAMPLE: &str = "notify = [\"restart nginx\"]";

/// A step's `notify`: one handler name or a list of them.
pub(super) fn notify_list(
    r: &mut Reporter<'_>,
    v: &Spanned<DeValue<'_>>,
    label: &str,
) -> Option<Vec<Notify>> {
    let what = format!("`notify` in {label}");
    let one = |r: &mut Reporter<'_>, item: &Spanned<DeValue<'_>>, what: &str| {
        let name = r.nonempty_string(item, what, NOTIFY_EXAMPLE)?;
        let (line, column) = r.pos(&item.span());
        Some(Notify {
            handler: name.to_string(),
            line,
            column,
        })
    };
    match v.get_ref() {
        DeValue::String(_) => one(r, v, &what).map(|n| vec![n]),
        DeValue::Array(items) => {
            let before = r.diagnostics.len();
            let names: Vec<Notify> = items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| one(r, item, &format!("item #{} of {what}", i + 1)))
                .collect();
            (r.diagnostics.len() == before).then_some(names)
        }
        _ => {
            r.wrong_type(v, &what, "a list of handler names", NOTIFY_EXAMPLE);
            None
        }
    }
}

/// `use = "flush_handlers"` takes nothing but a `name`.
pub(super) fn check_flush(r: &mut Reporter<'_>, t: &DeTable<'_>, label: &str) {
    for key in t.keys() {
        let k = key.get_ref().as_ref();
        if matches!(k, "name" | "use") {
            continue;
        }
        r.error(
            &key.span(),
            format!("`{FLUSH_HANDLERS}` takes no `{k}` ({label})"),
            Some(format!(
                "remove `{k}`: {FLUSH_HANDLERS} runs the handlers notified so far, on the hosts where they were notified"
            )),
        );
    }
}

/// The `[[handlers]]` blocks: step definitions that must be named, uniquely, by one line, and
/// can neither notify nor flush.
pub(super) fn check_handlers(
    r: &mut Reporter<'_>,
    value: &Spanned<DeValue<'_>>,
    known: &[&str],
) -> Vec<StepSpec> {
    let example = "one [[handlers]] block per handler, with name = \"restart nginx\"";
    let DeValue::Array(items) = value.get_ref() else {
        r.wrong_type(value, "`handlers`", "an array of tables", example);
        return Vec::new();
    };
    let mut out: Vec<StepSpec> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let DeValue::Table(t) = item.get_ref() else {
            r.wrong_type(item, &format!("handler #{}", i + 1), "a table", example);
            continue;
        };
        let errors_before = r.diagnostics.len();
        let name = t.get("name");
        match name {
            None => r.error(
                &item.span(),
                format!("handler #{} has no `name`", i + 1),
                Some(
                    "add name = \"restart nginx\": steps notify a handler by its name (notify = [\"restart nginx\"])"
                        .into(),
                ),
            ),
            Some(v) => {
                if let Some(s) = v.get_ref().as_str()
                    && s.chars().any(char::is_control)
                {
                    r.error(
                        &v.span(),
                        format!("handler name {s:?} must be one line of text"),
                        Some("write name = \"restart nginx\"".into()),
                    );
                }
            }
        }
        for (key, what, help) in [
            (
                "notify",
                "a handler cannot notify other handlers",
                "notify them from the step that changes something, in the order they must run (handlers run in the order of [[handlers]])",
            ),
            (
                "use",
                "a handler cannot be `flush_handlers`",
                "put use = \"flush_handlers\" in a [[steps]] block",
            ),
            (
                "after",
                "a handler cannot wait `after` steps",
                "remove `after`: handlers run after the play's steps (and at each flush_handlers), in the order of [[handlers]]",
            ),
        ] {
            if let Some(v) = t.get(key)
                && (key != "use" || v.get_ref().as_str() == Some(FLUSH_HANDLERS))
            {
                r.error(&v.span(), what, Some(help.into()));
            }
        }
        if r.diagnostics.len() != errors_before {
            continue;
        }
        let Some(spec) = check_step(r, t, item.span(), i, known, "handler") else {
            continue;
        };
        if let Some(first) = out.iter().find(|h| h.name == spec.name) {
            let at = name.map(|v| v.span()).unwrap_or(item.span());
            r.error(
                &at,
                format!(
                    "handler `{}` is declared twice (first at line {})",
                    spec.name, first.line
                ),
                Some("give each handler a name of its own; steps notify handlers by name".into()),
            );
            continue;
        }
        out.push(spec);
    }
    out
}

/// Every name a step notifies must be a declared handler (of any file the playbook includes,
/// or that includes it). `declared` are the names of every `[[handlers]]` block, also those
/// with other errors (no "unknown" on top of those). Errors are in the step's file.
pub(super) fn check_notified(steps: &[StepSpec], declared: &[&str]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for step in steps {
        for n in &step.notify {
            if declared.contains(&n.handler.as_str()) {
                continue;
            }
            let help = match (did_you_mean(&n.handler, declared), declared.is_empty()) {
                (Some(m), _) => format!("did you mean `{m}`?"),
                (None, true) => format!(
                    "declare it: [[handlers]] with name = \"{}\" and the step it runs",
                    n.handler
                ),
                (None, false) => format!("handlers: {}", declared.join(", ")),
            };
            out.push(
                Diagnostic::error(
                    &step.file,
                    (n.line, n.column),
                    format!(
                        "step `{}` notifies unknown handler `{}`",
                        step.name, n.handler
                    ),
                )
                .with_help(help),
            );
        }
    }
    out
}

/// The names of the `[[handlers]]` blocks that have one.
pub(super) fn declared<'a>(doc: &'a DeTable<'_>) -> Vec<&'a str> {
    let Some(DeValue::Array(items)) = doc.get("handlers").map(|v| v.get_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<&str> = Vec::new();
    for item in items {
        if let DeValue::Table(t) = item.get_ref()
            && let Some(name) = t.get("name").and_then(|v| v.get_ref().as_str())
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use crate::playbook_file::{Notify, PlaybookFile};
    use std::path::Path;

    const KNOWN: &[&str] = &["command", "line", "service"];

    fn parse(text: &str) -> Result<PlaybookFile, String> {
        PlaybookFile::parse(text, Path::new("site.toml"), KNOWN).map_err(|e| e.to_string())
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("parsed: {text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn steps_notify_handlers_by_name_and_flush_them() {
        let pb = parse(
            r#"
[[steps]]
name = "journald size"
use = "line"
with = { path = "/etc/systemd/journald.conf", line = "SystemMaxUse=200M" }
notify = "restart journald"

[[steps]]
use = "flush_handlers"

[[steps]]
use = "command"
with = { run = "true" }
notify = ["reload nginx", "restart journald"]

[[handlers]]
name = "restart journald"
use = "command"
hosts = "all"
when = "true"
timeout = 30
with = { run = "systemctl restart systemd-journald" }

[[handlers]]
name = "reload nginx"
use = "service"
with = { name = "nginx", state = "started" }
"#,
        )
        .unwrap();
        let notified: Vec<Vec<Notify>> = pb.steps.iter().map(|s| s.notify.clone()).collect();
        let at = |handler: &str, line, column| Notify {
            handler: handler.into(),
            line,
            column,
        };
        assert_eq!(
            notified,
            vec![
                vec![at("restart journald", 6, 10)],
                vec![],
                vec![at("reload nginx", 14, 11), at("restart journald", 14, 27)],
            ]
        );
        assert_eq!(pb.steps[1].uses, "flush_handlers");
        assert_eq!(pb.steps[1].name, "flush_handlers");
        let handlers: Vec<(&str, &str)> = pb
            .handlers
            .iter()
            .map(|h| (h.name.as_str(), h.uses.as_str()))
            .collect();
        assert_eq!(
            handlers,
            [("restart journald", "command"), ("reload nginx", "service")]
        );
        assert_eq!(
            pb.handlers[0].timeout,
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(pb.handlers[0].when.as_deref(), Some("true"));
        assert_eq!(pb.handlers[0].line, 16);
    }

    #[test]
    fn an_unknown_handler_is_named_at_the_notify_with_did_you_mean() {
        let text = r#"
[[steps]]
use = "command"
with = { run = "true" }
notify = ["restart journal", "reboot"]

[[handlers]]
name = "restart journald"
use = "command"
with = { run = "systemctl restart systemd-journald" }
"#;
        assert_eq!(
            error(text),
            "site.toml:5:11: error: step `command` notifies unknown handler `restart journal`\n  \
             help: did you mean `restart journald`?\n\n\
             site.toml:5:30: error: step `command` notifies unknown handler `reboot`\n  \
             help: handlers: restart journald\n\n2 errors"
        );
        assert_eq!(
            error("[[steps]]\nuse = \"command\"\nnotify = \"restart app\"\n"),
            "site.toml:3:10: error: step `command` notifies unknown handler `restart app`\n  \
             help: declare it: [[handlers]] with name = \"restart app\" and the step it runs\n\n1 error"
        );
        // A name declared twice is listed once.
        let twice = "[[steps]]\nuse = \"command\"\nnotify = \"zz\"\n\
                     [[handlers]]\nname = \"a\"\nuse = \"command\"\n\
                     [[handlers]]\nname = \"a\"\nuse = \"command\"\n";
        assert!(
            error(twice).contains("  help: handlers: a\n"),
            "{}",
            error(twice)
        );
    }

    #[test]
    fn handlers_need_a_unique_one_line_name() {
        let text = r#"
[[steps]]
use = "command"

[[handlers]]
use = "command"
with = { run = "true" }

[[handlers]]
name = "restart"
use = "command"

[[handlers]]
name = "restart"
use = "command"

[[handlers]]
name = "two\nlines"
use = "command"
"#;
        assert_eq!(
            error(text),
            "site.toml:5:1: error: handler #1 has no `name`\n  \
             help: add name = \"restart nginx\": steps notify a handler by its name (notify = [\"restart nginx\"])\n\n\
             site.toml:14:8: error: handler `restart` is declared twice (first at line 9)\n  \
             help: give each handler a name of its own; steps notify handlers by name\n\n\
             site.toml:18:8: error: handler name \"two\\nlines\" must be one line of text\n  \
             help: write name = \"restart nginx\"\n\n3 errors"
        );
    }

    #[test]
    fn notify_must_be_handler_names() {
        let text = r#"
[[steps]]
use = "command"
notify = 3

[[steps]]
use = "command"
notify = ["restart", 4, ""]

[[steps]]
use = "command"
notify = { name = "restart" }

[[handlers]]
name = "restart"
use = "command"
"#;
        assert_eq!(
            error(text),
            "site.toml:4:10: error: `notify` in step `command` must be a list of handler names, not an integer\n  \
             help: write notify = [\"restart nginx\"]\n\n\
             site.toml:8:22: error: item #2 of `notify` in step `command` must be a string, not an integer\n  \
             help: write notify = [\"restart nginx\"]\n\n\
             site.toml:8:25: error: item #3 of `notify` in step `command` must not be empty\n  \
             help: write notify = [\"restart nginx\"]\n\n\
             site.toml:12:10: error: `notify` in step `command` must be a list of handler names, not a table\n  \
             help: write notify = [\"restart nginx\"]\n\n4 errors"
        );
    }

    #[test]
    fn flush_handlers_takes_no_parameters() {
        let text = r#"
[[steps]]
name = "flush now"
use = "flush_handlers"
hosts = "web"
with = { now = true }

[[steps]]
use = "flush_handler"
"#;
        assert_eq!(
            error(text),
            "site.toml:5:1: error: `flush_handlers` takes no `hosts` (step `flush now`)\n  \
             help: remove `hosts`: flush_handlers runs the handlers notified so far, on the hosts where they were notified\n\n\
             site.toml:6:1: error: `flush_handlers` takes no `with` (step `flush now`)\n  \
             help: remove `with`: flush_handlers runs the handlers notified so far, on the hosts where they were notified\n\n\
             site.toml:9:7: error: unknown step `flush_handler`\n  \
             help: did you mean `flush_handlers`?\n\n3 errors"
        );
    }

    #[test]
    fn handlers_neither_notify_nor_flush() {
        let text = r#"
[[steps]]
use = "command"
notify = "a"

[[handlers]]
name = "a"
use = "command"
notify = "b"

[[handlers]]
name = "b"
use = "flush_handlers"

[[handlers]]
name = "c"
use = "comand"
"#;
        assert_eq!(
            error(text),
            "site.toml:9:10: error: a handler cannot notify other handlers\n  \
             help: notify them from the step that changes something, in the order they must run (handlers run in the order of [[handlers]])\n\n\
             site.toml:13:7: error: a handler cannot be `flush_handlers`\n  \
             help: put use = \"flush_handlers\" in a [[steps]] block\n\n\
             site.toml:17:7: error: unknown step `comand`\n  \
             help: did you mean `command`?\n\n3 errors"
        );
        assert!(
            error("[[steps]]\nuse = \"command\"\n[handlers]\nname = \"x\"\n").starts_with(
                "site.toml:3:1: error: `handlers` must be an array of tables, not a table"
            ),
        );
    }
}
