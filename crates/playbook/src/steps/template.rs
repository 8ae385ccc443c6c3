//! `template`: renders a minijinja template kept next to the playbook with the
//! host's context and puts the result at `dest`, with its mode and owner.

use super::file::{self, FileParams};
use super::util;
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::step::HostStep;
use zeroize::Zeroizing;

pub const KNOWN_KEYS: &[&str] = &["src", "dest", "mode", "owner", "group"];

pub fn build(with: &toml::Table, ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    let p: FileParams<String> = util::params(with, KNOWN_KEYS)?;
    p.step(ctx, |src, _| {
        let body = String::from_utf8(file::read_src(ctx, &src)?).map_err(|_| {
            util::bad(
                "src",
                format!("template {src} is not UTF-8 text"),
                "use the `copy` step for binary files",
            )
        })?;
        // Zeroizing: the rendered text may hold secrets.
        let rendered = (ctx.render)(&src, &body).map_err(|e| {
            util::bad(
                "src",
                format!("cannot render template: {e}"),
                "define it in [vars], in the host's vars, or in the secrets file",
            )
        })?;
        Ok(Zeroizing::new(rendered.into_bytes()))
    })
}

inventory::submit! { crate::ctx::BuiltIn::host("template", build) }

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{build_err, table, with_ctx};
    use crate::steps::util::Mode;
    use provision_engine::step::{Action, Check, Facts};

    fn fixture_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/steps")
    }

    fn step(with: &str) -> Result<Box<dyn HostStep>, ParamError> {
        with_ctx(&fixture_dir(), |ctx| build(&table(with), ctx))
    }

    #[test]
    fn fresh_host_gets_rendered_file() {
        let s = step("src = \"app.conf.j2\"\ndest = \"/etc/app/app.conf\"").unwrap();
        assert_eq!(
            s.gather().unwrap(),
            file::gather_command("/etc/app/app.conf", Some(65536))
        );
        let Check::Change(c) = s.check(&Facts::new("kind=absent\n")).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "create /etc/app/app.conf (29 bytes, mode 0644)"
        );
        let Action::Upload { content, mode, .. } = &c[0].actions[0] else {
            panic!()
        };
        assert_eq!(
            std::str::from_utf8(content).unwrap(),
            "# web-1\nlisten = 10.0.0.5:80\n"
        );
        assert_eq!(*mode, Some(0o644));
        assert_eq!(
            c[0].diff.as_ref().unwrap().after,
            "# web-1\nlisten = 10.0.0.5:80\n"
        );
    }

    #[test]
    fn already_rendered_is_ok() {
        let s =
            step("src = \"app.conf.j2\"\ndest = \"/etc/app/app.conf\"\nowner = \"app\"").unwrap();
        let sha = util::sha256_hex(b"# web-1\nlisten = 10.0.0.5:80\n");
        let facts = Facts::new(format!(
            "kind=file\nattrs=644 app app 999 999 29\nsha256={sha}\ncontent=\n"
        ));
        assert_eq!(
            s.check(&facts).unwrap(),
            Check::Ok("/etc/app/app.conf up to date".into())
        );
    }

    #[test]
    fn drifted_file_is_replaced_with_diff() {
        let s = step("src = \"app.conf.j2\"\ndest = \"/etc/app/app.conf\"").unwrap();
        let old = b"# web-1\nlisten = 0.0.0.0:80\n";
        let facts = Facts::new(format!(
            "kind=file\nattrs=644 root root 0 0 28\nsha256={}\ncontent={}\n",
            util::sha256_hex(old),
            util::base64_encode(old)
        ));
        let Check::Change(c) = s.check(&facts).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "update /etc/app/app.conf: content");
        let d = c[0].diff.as_ref().unwrap();
        assert_eq!(d.before.as_deref(), Some("# web-1\nlisten = 0.0.0.0:80\n"));
    }

    #[test]
    fn a_file_holding_a_secret_is_private_unless_a_mode_is_set() {
        let s = step("src = \"secret.conf.j2\"\ndest = \"/etc/app/db.conf\"").unwrap();
        let Check::Change(c) = s.check(&Facts::new("kind=absent\n")).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "create /etc/app/db.conf (32 bytes, mode 0600)"
        );
        // The pure decision: explicit modes are kept; one others can read is warned about.
        let d = "/etc/app/db.conf";
        assert_eq!(file::secret_file_mode(d, true, None), (Some(0o600), None));
        assert_eq!(file::secret_file_mode(d, false, None), (None, None));
        assert_eq!(
            file::secret_file_mode(d, true, Some(Mode(0o640))),
            (Some(0o640), None)
        );
        assert_eq!(
            file::secret_file_mode(d, true, Some(Mode(0o644))),
            (
                Some(0o644),
                Some("/etc/app/db.conf holds a secret, and mode 0644 lets every user of the host read it; remove `mode` (files holding secrets get 0600) or set mode = \"0600\"".into())
            )
        );
        assert_eq!(
            file::secret_file_mode(d, false, Some(Mode(0o644))),
            (Some(0o644), None)
        );
    }

    #[test]
    fn param_errors() {
        let e = build_err(step("src = \"app.conf.j2\"\ndset = \"/x\""));
        assert_eq!(e.key.as_deref(), Some("dset"));
        assert_eq!(e.message, "unknown parameter `dset`");
        assert!(e.help.unwrap().starts_with("did you mean `dest`?"));
        let e = build_err(step("src = \"app.conf.j2\"\ndest = \"/x\"\nmode = 644"));
        assert_eq!(e.key.as_deref(), Some("mode"));
        assert_eq!(
            e.message,
            "`mode` must be a string: write mode = \"0644\" (a bare number is not read as octal)"
        );
        let e = build_err(step("src = \"app.conf.j2\"\ndest = \"/x\"\nowner = 0"));
        assert_eq!(e.key.as_deref(), Some("owner"));
        assert_eq!(
            e.message,
            "`owner`: invalid type: integer `0`, expected a string"
        );
        let e = build_err(step("src = \"app.conf.j2\"\ndest = \"etc/x\""));
        assert_eq!(e.help.as_deref(), Some("write dest = \"/etc/x\""));
        let e = build_err(step("src = \"missing.j2\"\ndest = \"/x\""));
        assert_eq!(e.key.as_deref(), Some("src"));
        assert!(e.message.starts_with("cannot read `src` "), "{}", e.message);
        let e = build_err(step("src = \"broken.j2\"\ndest = \"/x\""));
        assert_eq!(e.key.as_deref(), Some("src"));
        assert!(
            e.message
                .starts_with("cannot render template: broken.j2:2: undefined value"),
            "{}",
            e.message
        );
        let e = build_err(step("dest = \"/x\""));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (Some("src"), "missing field `src`")
        );
    }
}
