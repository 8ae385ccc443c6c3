//! What steps and handlers read of `facts` (a host's system facts, `crate::host_facts`): a
//! name that is no fact is an error at its place in the file, with the nearest fact; a `loop`
//! or `loop_label` reading facts is refused (a loop's items are the same on every host).

use toml::de::{DeTable, DeValue};

use crate::diagnostic::Reporter;
use crate::host_facts;

/// Checks the `when`, `until`, `loop`, `loop_label` and `with` of every step and handler.
pub(super) fn check(r: &mut Reporter<'_>, doc: &DeTable<'_>) {
    for kind in ["steps", "handlers"] {
        let Some(DeValue::Array(items)) = doc.get(kind).map(|v| v.get_ref()) else {
            continue;
        };
        for item in items {
            if let DeValue::Table(t) = item.get_ref() {
                check_one(r, t);
            }
        }
    }
}

fn check_one(r: &mut Reporter<'_>, t: &DeTable<'_>) {
    for (key, expression) in [("when", true), ("until", true), ("loop", false)] {
        if let Some(v) = t.get(key) {
            strings(r, v, expression);
        }
    }
    if let Some(v) = t.get("loop_label") {
        strings(r, v, false);
    }
    if let Some(v) = t.get("with") {
        strings(r, v, false);
    }
    for key in ["loop", "loop_label"] {
        let Some(v) = t.get(key) else { continue };
        let Some(s) = v.get_ref().as_str() else {
            continue;
        };
        if crate::template::names_read(s).is_some_and(|n| n.contains("facts")) {
            r.error(
                &v.span(),
                format!("`{key}` reads `facts`: a loop's items and labels are the same on every host, and facts are each host's own"),
                Some("loop over vars, and read facts in the step's `when` or `with` (each repetition is rendered per host)".into()),
            );
        }
    }
}

/// Every string in `v` (tables and arrays too): an unknown fact it reads is an error at the
/// read itself when the string is written plainly, else at the string.
fn strings(r: &mut Reporter<'_>, v: &toml::Spanned<DeValue<'_>>, expression: bool) {
    match v.get_ref() {
        DeValue::String(s) => {
            let span = v.span();
            // The read's own column when the file holds the string as it reads (no escapes).
            let raw = r.source(&span);
            let plain = raw.len() == s.len() + 2 && &raw[1..raw.len() - 1] == s.as_ref();
            for u in host_facts::unknown_reads(s, !expression) {
                let at = if plain {
                    span.start + 1 + u.at.start..span.start + 1 + u.at.end
                } else {
                    span.clone()
                };
                let (message, help) = u.message();
                r.error(&at, message, Some(help));
            }
        }
        DeValue::Array(a) => {
            for x in a {
                strings(r, x, expression);
            }
        }
        DeValue::Table(t) => {
            for (_, x) in t.iter() {
                strings(r, x, expression);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::playbook_file::PlaybookFile;
    use std::path::Path;

    fn error(text: &str) -> String {
        match PlaybookFile::parse(text, Path::new("p.toml"), &["command", "template"]) {
            Ok(_) => panic!("parsed: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn known_facts_are_read_anywhere_a_host_template_is() {
        PlaybookFile::parse(
            "[[steps]]\nuse = \"command\"\nwhen = \"facts.os == 'debian' and facts['cpus'] > 1\"\nwith = { run = \"echo {{ facts.memory_mb }} {{ facts.arch }}\", stdin = [\"{{ facts.ipv4 }}\"] }\n\n[[handlers]]\nname = \"h\"\nuse = \"command\"\nwhen = \"facts.ipv6 != ''\"\nwith = { run = \"true\" }\n",
            Path::new("p.toml"),
            &["command"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn an_unknown_fact_is_an_error_at_its_place_with_the_nearest_fact() {
        assert_eq!(
            error(
                "[[steps]]\nuse = \"command\"\nwhen = \"vars.x and facts.memory > 512\"\nwith = { run = \"echo {{ facts.os_versoin }}\" }\n"
            ),
            "p.toml:3:20: error: `facts.memory` is not a fact\n  help: did you mean `facts.memory_mb`?\n\n\
             p.toml:4:25: error: `facts.os_versoin` is not a fact\n  help: did you mean `facts.os_version`?\n\n2 errors"
        );
        // Escapes in the string: the error is at the string.
        assert!(
            error("[[steps]]\nuse = \"command\"\nwhen = \"\\\"x\\\" or facts.zzzzzzz\"\n")
                .starts_with("p.toml:3:8: error: `facts.zzzzzzz` is not a fact\n  help: the facts are facts.os, facts.os_version,"),
        );
        // In handlers and `until` too.
        assert!(
            error("[[steps]]\nuse = \"command\"\nwith = { run = \"true\" }\n\n[[handlers]]\nname = \"h\"\nuse = \"command\"\nretries = 2\nuntil = \"facts.cpu > 1\"\nwith = { run = \"true\" }\n")
                .starts_with("p.toml:9:10: error: `facts.cpu` is not a fact\n  help: did you mean `facts.cpus`?"),
        );
    }

    #[test]
    fn a_loop_cannot_read_facts() {
        let e = error(
            "[[steps]]\nuse = \"command\"\nloop = \"{{ range(facts.cpus) }}\"\nwith = { run = \"echo {{ item }}\" }\n",
        );
        assert!(
            e.starts_with("p.toml:3:8: error: `loop` reads `facts`: a loop's items and labels are the same on every host"),
            "{e}"
        );
    }
}
