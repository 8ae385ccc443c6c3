//! `on = "HOST"` on a step or handler (Ansible's `delegate_to`): its gather and commands run on
//! another host of the inventory for each of its hosts. Its form is checked here; the host it
//! names (a template is rendered per target host) is checked against the inventory when the
//! playbook is compiled, where the inventory is known.

use toml::de::DeTable;

use crate::diagnostic::Reporter;

/// `on` as written, and where: the compiler renders it per host and points at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct On {
    /// A host name, or a template rendering to one (`{{ vars.backup_host }}`).
    pub host: String,
    /// Line and column of the value.
    pub at: (usize, usize),
}

pub const ON_EXAMPLE: &str =
    "on = \"lb-1\" (a host of the inventory; the step runs there for each of its hosts)";

/// The step's `on`: None inside when it has none; None when it is wrong (reported).
pub(super) fn check_on(r: &mut Reporter<'_>, t: &DeTable<'_>, label: &str) -> Option<Option<On>> {
    let Some(v) = t.get("on") else {
        return Some(None);
    };
    let host = r.nonempty_string(v, &format!("`on` in {label}"), ON_EXAMPLE)?;
    Some(Some(On {
        host: host.to_string(),
        at: r.pos(&v.span()),
    }))
}

#[cfg(test)]
mod tests {
    use super::On;
    use crate::playbook_file::PlaybookFile;
    use std::path::Path;

    fn parse(keys: &str) -> Result<PlaybookFile, String> {
        let text = format!("[[steps]]\nname = \"s\"\nuse = \"command\"\n{keys}\n");
        PlaybookFile::parse(&text, Path::new("p.toml"), &["command"]).map_err(|e| e.to_string())
    }

    #[test]
    fn on_is_kept_as_written_with_its_position() {
        let pb = parse("on = \"lb-1\"").unwrap();
        assert_eq!(
            pb.steps[0].on,
            Some(On {
                host: "lb-1".into(),
                at: (4, 6)
            })
        );
        let pb = parse("on = \"{{ vars.backup_host }}\"").unwrap();
        assert_eq!(
            pb.steps[0].on.as_ref().map(|o| o.host.as_str()),
            Some("{{ vars.backup_host }}"),
            "a template is rendered per host when the playbook is compiled"
        );
        assert_eq!(parse("").unwrap().steps[0].on, None);
        let text = "[[steps]]\nuse = \"command\"\n\n[[handlers]]\nname = \"h\"\nuse = \"command\"\non = \"lb-1\"\n";
        let pb = PlaybookFile::parse(text, Path::new("p.toml"), &["command"]).unwrap();
        assert_eq!(
            pb.handlers[0].on.as_ref().map(|o| o.at),
            Some((7, 6)),
            "a handler runs on another host too"
        );
    }

    #[test]
    fn a_bad_on_is_an_error_at_its_value() {
        assert_eq!(
            parse("on = 3").unwrap_err(),
            "p.toml:4:6: error: `on` in step `s` must be a string, not an integer\n  help: write on = \"lb-1\" (a host of the inventory; the step runs there for each of its hosts)\n\n1 error"
        );
        assert_eq!(
            parse("on = \"\"").unwrap_err(),
            "p.toml:4:6: error: `on` in step `s` must not be empty\n  help: write on = \"lb-1\" (a host of the inventory; the step runs there for each of its hosts)\n\n1 error"
        );
        assert!(
            parse("on = [\"lb-1\"]")
                .unwrap_err()
                .starts_with("p.toml:4:6: error: `on` in step `s` must be a string, not an array"),
        );
        assert_eq!(
            parse("no = \"lb-1\"").unwrap_err(),
            "p.toml:4:1: error: unknown key `no` in step `s`\n  help: did you mean `on`?\n\n1 error"
        );
        let include = "[[steps]]\ninclude = \"x.toml\"\non = \"lb-1\"\n";
        let e = PlaybookFile::parse(include, Path::new("p.toml"), &["command"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("p.toml:3:1: error: unknown key `on` in include `x.toml`"),
            "an include runs nothing itself: {e}"
        );
    }
}
