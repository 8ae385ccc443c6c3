//! `copy`: puts a file kept next to the playbook (`src`, copied byte for byte)
//! or an inline string (`content`) at `dest`, with its mode and owner.

use super::file::{self, FileParams};
use super::util;
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::step::HostStep;
use zeroize::Zeroizing;

pub const KNOWN_KEYS: &[&str] = &["src", "content", "dest", "mode", "owner", "group"];

pub fn build(with: &toml::Table, ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    let p: FileParams<Option<String>> = util::params(with, KNOWN_KEYS)?;
    p.step(ctx, |src, content| {
        Ok(Zeroizing::new(match (src, content) {
            (Some(src), None) => file::read_src(ctx, &src)?,
            (None, Some(text)) => text.into_bytes(),
            (Some(_), Some(_)) => {
                return Err(util::bad(
                    "content",
                    "set either `src` or `content`, not both",
                    "`src` copies a file next to the playbook; `content` is inline text",
                ));
            }
            (None, None) => {
                return Err(ParamError::new(
                    None,
                    "`copy` needs `src` (a file next to the playbook) or `content` (inline text)",
                )
                .help("e.g. src = \"files/motd\" or content = \"hello\\n\""));
            }
        }))
    })
}

inventory::submit! { crate::ctx::BuiltIn::host("copy", build).stdin_params(&["content"]) }

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{SECRET, build_err, table, with_ctx};
    use provision_engine::step::{Action, Check, Facts};

    fn step(with: &str) -> Result<Box<dyn HostStep>, ParamError> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/steps");
        with_ctx(&dir, |ctx| build(&table(with), ctx))
    }

    #[test]
    fn fresh_host_gets_src_file_with_attributes() {
        let s = step("src = \"motd\"\ndest = \"/etc/motd\"\nmode = \"0640\"\nowner = \"root\"\ngroup = \"adm\"").unwrap();
        assert_eq!(
            s.gather().unwrap(),
            file::gather_command("/etc/motd", Some(65536))
        );
        let Check::Change(c) = s.check(&Facts::new("kind=absent\n")).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].actions,
            vec![Action::Upload {
                dest: "/etc/motd".into(),
                content: Zeroizing::new(b"plain file\n".to_vec()),
                mode: Some(0o640),
                owner: Some("root".into()),
                group: Some("adm".into())
            }]
        );
    }

    #[test]
    fn inline_content_already_there() {
        let s = step("content = \"hello\\n\"\ndest = \"/etc/motd\"").unwrap();
        let facts = Facts::new(format!(
            "kind=file\nattrs=644 root root 0 0 6\nsha256={}\ncontent=aGVsbG8K\n",
            util::sha256_hex(b"hello\n")
        ));
        assert_eq!(
            s.check(&facts).unwrap(),
            Check::Ok("/etc/motd up to date".into())
        );
    }

    #[test]
    fn drifted_mode_is_fixed() {
        let facts = Facts::new(format!(
            "kind=file\nattrs=666 root root 0 0 6\nsha256={}\ncontent=aGVsbG8K\n",
            util::sha256_hex(b"hello\n")
        ));
        let s = step("content = \"hello\\n\"\ndest = \"/etc/motd\"\nmode = \"0644\"").unwrap();
        let Check::Change(c) = s.check(&facts).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "update /etc/motd: mode 0644 (was 0666)");
        // Without `mode`, the current mode is kept (and 0644 is only for new files).
        let s = step("content = \"hello\\n\"\ndest = \"/etc/motd\"").unwrap();
        assert_eq!(
            s.check(&facts).unwrap(),
            Check::Ok("/etc/motd up to date".into())
        );
        let facts = Facts::new(format!(
            "kind=file\nattrs=600 root root 0 0 3\nsha256={}\n",
            util::sha256_hex(b"old")
        ));
        let Check::Change(c) = s.check(&facts).unwrap() else {
            panic!()
        };
        let Action::Upload { mode, .. } = &c[0].actions[0] else {
            panic!()
        };
        assert_eq!(*mode, Some(0o600));
    }

    #[test]
    fn param_errors() {
        let e = build_err(step("dest = \"/etc/motd\""));
        assert_eq!(
            e.message,
            "`copy` needs `src` (a file next to the playbook) or `content` (inline text)"
        );
        let e = build_err(step(
            "src = \"motd\"\ncontent = \"x\"\ndest = \"/etc/motd\"",
        ));
        assert_eq!(e.key.as_deref(), Some("content"));
        let e = build_err(step("contents = \"x\"\ndest = \"/etc/motd\""));
        assert!(e.help.unwrap().starts_with("did you mean `content`?"));
        // Content holding a secret, no `mode`: created private.
        let s = step(&format!(
            "content = \"pw={SECRET}\"\ndest = \"/etc/app.env\""
        ))
        .unwrap();
        let Check::Change(c) = s.check(&Facts::new("kind=absent\n")).unwrap() else {
            panic!()
        };
        assert!(c[0].summary.ends_with("mode 0600)"), "{}", c[0].summary);
        let e = build_err(step(
            "content = \"x\"\ndest = \"/etc/motd\"\nowner = \"Bad User\"",
        ));
        assert_eq!(e.key.as_deref(), Some("owner"));
        let e = build_err(step(
            "content = \"x\"\ndest = \"/etc/motd\"\nmode = \"u=rw\"",
        ));
        assert_eq!(
            e.message,
            "invalid `mode` \"u=rw\": write it as an octal string such as \"0644\""
        );
        let e = build_err(step("src = \".\"\ndest = \"/etc/motd\""));
        assert!(e.message.ends_with("is a directory"), "{}", e.message);
    }
}
