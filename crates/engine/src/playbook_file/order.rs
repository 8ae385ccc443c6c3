//! `strategy` (top of a playbook: `linear`, Ansible's default, or `pipelined`) and a step's
//! `after` (names of earlier steps it waits for, on whatever hosts they run): checked where
//! they are written. `after` names only earlier steps, so the steps' waits form no cycle.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{PlaybookFile, StepSpec};
use crate::diagnostic::{Diagnostic, Reporter, did_you_mean};
use crate::pipeline::Strategy;

/// One name in a step's `after`, where it is written (in the step's file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    pub name: String,
    pub at: (usize, usize),
}

const AFTER_EXAMPLE: &str = "after = [\"nfs server\"] (names of earlier steps)";

/// The playbook's `strategy`; Some(None) when it sets none, None when it is wrong (reported).
pub(super) fn check_strategy(r: &mut Reporter<'_>, doc: &DeTable<'_>) -> Option<Option<Strategy>> {
    let Some(v) = doc.get("strategy") else {
        return Some(None);
    };
    let example = "strategy = \"pipelined\"";
    let s = r.string(v, "`strategy`", example)?;
    if let Some(strategy) = Strategy::parse(s) {
        return Some(Some(strategy));
    }
    let help = match (s, did_you_mean(s, Strategy::NAMES)) {
        ("free", _) => "Ansible's `free` ignores what a step needs from other hosts: write strategy = \"pipelined\" (a step waits for the earlier steps on its hosts) and name other hosts' steps it needs in `after`".to_string(),
        (_, Some(m)) => format!("did you mean `{m}`?"),
        (_, None) => "write strategy = \"linear\" (each step after the previous one on all its hosts, the default) or strategy = \"pipelined\" (a step waits only for the earlier steps on its hosts and those it names in `after`)".to_string(),
    };
    r.error(&v.span(), format!("unknown strategy `{s}`"), Some(help));
    None
}

/// A step's `after`: a list of step names; None when it is wrong (reported).
pub(super) fn check_after(
    r: &mut Reporter<'_>,
    t: &DeTable<'_>,
    label: &str,
) -> Option<Vec<After>> {
    let Some(v) = t.get("after") else {
        return Some(Vec::new());
    };
    let what = format!("`after` in {label}");
    let DeValue::Array(items) = v.get_ref() else {
        r.wrong_type(v, &what, "a list of step names", AFTER_EXAMPLE);
        return None;
    };
    let before = r.diagnostics.len();
    let names: Vec<After> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item): (usize, &Spanned<DeValue<'_>>)| {
            let name =
                r.nonempty_string(item, &format!("item #{} of {what}", i + 1), AFTER_EXAMPLE)?;
            Some(After {
                name: name.to_string(),
                at: r.pos(&item.span()),
            })
        })
        .collect();
    (r.diagnostics.len() == before).then_some(names)
}

/// Every name in a step's `after` must be an earlier step's (of the whole playbook, includes
/// spliced in). Errors are in the step's file, at the name.
pub(super) fn check_after_names(steps: &[StepSpec]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let earlier: Vec<&str> = steps[..i].iter().map(|e| e.name.as_str()).collect();
        for a in &s.after {
            if earlier.contains(&a.name.as_str()) {
                continue;
            }
            let (message, help) = if a.name == s.name {
                (
                    format!("`after` in step `{}` names the step itself", s.name),
                    "after must name an earlier step: a step cannot wait for itself".to_string(),
                )
            } else if steps[i..].iter().any(|l| l.name == a.name) {
                (
                    format!(
                        "`after` in step `{}` names `{}`, which comes later",
                        s.name, a.name
                    ),
                    "after must name an earlier step: move this step below the one it waits for"
                        .to_string(),
                )
            } else {
                let help = match did_you_mean(&a.name, &earlier) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None if earlier.is_empty() => {
                        "after must name an earlier step, and this is the first".to_string()
                    }
                    None => format!("the earlier steps: {}", list(&earlier)),
                };
                (
                    format!("`after` in step `{}` names no step: `{}`", s.name, a.name),
                    help,
                )
            };
            out.push(Diagnostic::error(&s.file, a.at, message).with_help(help));
        }
    }
    out
}

fn list(names: &[&str]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for n in names {
        if !seen.contains(n) {
            seen.push(n);
        }
    }
    seen.iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl PlaybookFile {
    /// The entries (indices in `steps`) that entry `index` waits for through its `after`: every
    /// earlier entry of each name it gives (a looped entry's name covers all its items).
    pub fn after_entries(&self, index: usize) -> Vec<usize> {
        let Some(s) = self.steps.get(index) else {
            return Vec::new();
        };
        (0..index)
            .filter(|&j| s.after.iter().any(|a| a.name == self.steps[j].name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::pipeline::Strategy;
    use crate::playbook_file::PlaybookFile;
    use std::path::Path;

    const KNOWN: &[&str] = &["command", "apt"];

    fn parse(text: &str) -> Result<PlaybookFile, String> {
        PlaybookFile::parse(text, Path::new("pb.toml"), KNOWN).map_err(|e| {
            e.diagnostics
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    const STEPS: &str = "[[steps]]\nname = \"init\"\nuse = \"command\"\nwith = { run = \"true\" }\n\n\
        [[steps]]\nname = \"join\"\nuse = \"command\"\nafter = [\"init\"]\nwith = { run = \"true\" }\n";

    #[test]
    fn strategy_defaults_to_linear_and_reads_pipelined() {
        assert_eq!(parse(STEPS).unwrap().strategy, Strategy::Linear);
        let pb = parse(&format!("strategy = \"pipelined\"\n\n{STEPS}")).unwrap();
        assert_eq!(pb.strategy, Strategy::Pipelined);
        assert_eq!(pb.after_entries(1), vec![0]);
        assert_eq!(pb.after_entries(0), Vec::<usize>::new());
    }

    #[test]
    fn a_bad_strategy_is_an_error_at_its_value_with_a_suggestion() {
        let e = parse(&format!("strategy = \"pipelind\"\n{STEPS}")).unwrap_err();
        assert!(
            e.contains("pb.toml:1:12: error: unknown strategy `pipelind`")
                && e.contains("did you mean `pipelined`?"),
            "{e}"
        );
        let e = parse(&format!("strategy = \"free\"\n{STEPS}")).unwrap_err();
        assert!(
            e.contains("unknown strategy `free`") && e.contains("write strategy = \"pipelined\""),
            "{e}"
        );
        let e = parse(&format!("strategy = 1\n{STEPS}")).unwrap_err();
        assert!(e.contains("pb.toml:1:12: error: `strategy`"), "{e}");
        let e = parse(&format!("stratgy = \"linear\"\n{STEPS}")).unwrap_err();
        assert!(e.contains("did you mean `strategy`?"), "{e}");
    }

    /// A name every earlier entry of which is waited for (two entries of one name: both).
    #[test]
    fn after_names_every_earlier_entry_of_that_name() {
        let pb = parse(
            "[[steps]]\nname = \"deploy\"\nuse = \"command\"\nwith = { run = \"a\" }\n\
             [[steps]]\nname = \"other\"\nuse = \"command\"\nwith = { run = \"b\" }\n\
             [[steps]]\nname = \"deploy\"\nuse = \"command\"\nwith = { run = \"c\" }\n\
             [[steps]]\nname = \"check\"\nuse = \"command\"\nafter = [\"deploy\"]\nwith = { run = \"d\" }\n",
        )
        .unwrap();
        assert_eq!(pb.after_entries(3), vec![0, 2]);
    }

    #[test]
    fn after_must_name_an_earlier_step() {
        // Misspelt: the nearest earlier name.
        let e = parse(&STEPS.replace("[\"init\"]", "[\"inti\"]")).unwrap_err();
        assert_eq!(
            e,
            "pb.toml:9:10: error: `after` in step `join` names no step: `inti`\n  help: did you mean `init`?"
        );
        // Itself, and a later step: a cycle cannot be written.
        let e = parse(&STEPS.replace("[\"init\"]", "[\"join\"]")).unwrap_err();
        assert!(
            e.starts_with("pb.toml:9:10: error: `after` in step `join` names the step itself"),
            "{e}"
        );
        let text = "[[steps]]\nname = \"init\"\nuse = \"command\"\nafter = [\"join\"]\nwith = { run = \"true\" }\n\n\
            [[steps]]\nname = \"join\"\nuse = \"command\"\nwith = { run = \"true\" }\n";
        let e = parse(text).unwrap_err();
        assert_eq!(
            e,
            "pb.toml:4:10: error: `after` in step `init` names `join`, which comes later\n  help: after must name an earlier step: move this step below the one it waits for"
        );
        // Not a list, an empty name.
        let e = parse(&STEPS.replace("[\"init\"]", "\"init\"")).unwrap_err();
        assert!(
            e.contains("pb.toml:9:9: error: `after` in step `join`"),
            "{e}"
        );
        let e = parse(&STEPS.replace("[\"init\"]", "[\"\"]")).unwrap_err();
        assert!(e.contains("pb.toml:9:10: error: item #1 of `after`"), "{e}");
    }

    #[test]
    fn a_handler_cannot_wait_after_steps() {
        let text = format!(
            "{STEPS}\n[[handlers]]\nname = \"h\"\nuse = \"command\"\nafter = [\"init\"]\nwith = {{ run = \"true\" }}\n"
        );
        let e = parse(&text).unwrap_err();
        assert!(
            e.contains("pb.toml:15:9: error: a handler cannot wait `after` steps"),
            "{e}"
        );
    }

    /// An included file's steps run under the including playbook's strategy (its own applies
    /// when it is the playbook), and `after` may name a step an include brought in.
    #[test]
    fn includes_take_the_playbooks_strategy_and_after_sees_their_steps() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.toml"),
            "strategy = \"pipelined\"\n[[steps]]\nname = \"server\"\nuse = \"command\"\nwith = { run = \"true\" }\n",
        )
        .unwrap();
        let top = dir.path().join("pb.toml");
        std::fs::write(
            &top,
            "[[steps]]\ninclude = \"base.toml\"\n\n[[steps]]\nname = \"client\"\nuse = \"command\"\nafter = [\"server\"]\nwith = { run = \"true\" }\n",
        )
        .unwrap();
        let pb = PlaybookFile::load(&top, KNOWN).unwrap();
        assert_eq!(pb.strategy, Strategy::Linear);
        assert_eq!(pb.after_entries(1), vec![0]);
        let pb = PlaybookFile::load(&dir.path().join("base.toml"), KNOWN).unwrap();
        assert_eq!(pb.strategy, Strategy::Pipelined);
    }
}
