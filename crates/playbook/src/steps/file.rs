//! What is at a path on a host (kind, mode, owner, hash, small content), and the
//! plan that puts a file with given content and attributes there: shared by
//! `template`, `copy` and `line`.

use super::util::{self, Attrs, STAT_FORMAT};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Typed, unexpected};
use provision_engine::step::{Action, Change, Check, Facts, FileDiff, HostStep, StepError};
use provision_transport::shell::quote;
use zeroize::Zeroizing;

/// The mode of a file created without `mode`.
pub const NEW_FILE_MODE: u32 = 0o644;

/// The mode of a file holding a secret when the step sets none.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Current content is gathered (for `--diff`) only below this size.
pub const DIFF_LIMIT: u64 = 64 * 1024;

/// What the gather command found at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFacts {
    pub kind: Kind,
    /// The resolved target when the path is a symbolic link.
    pub link: Option<String>,
    /// Of the file or directory (links followed).
    pub attrs: Option<Attrs>,
    /// Of a regular file, when asked for; None when it could not be read.
    pub sha256: Option<String>,
    /// Of a regular file smaller than the limit asked for.
    pub content: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Absent,
    File,
    Directory,
    /// Anything else (socket, device...), as stat names it.
    Other(String),
}

/// The fact a path step needs: what is at `path`. Its command prints `key=value` lines:
/// `link=TARGET` for a symbolic link, then `kind=file|directory|other|absent`, `attrs=MODE
/// OWNER GROUP UID GID SIZE` (links followed). With `content_below`, regular files also get
/// `sha256=HEX` and, when smaller than that many bytes, `content=BASE64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFact {
    pub path: String,
    pub content_below: Option<u64>,
}

impl PathFact {
    pub fn new(path: &str, content_below: Option<u64>) -> PathFact {
        PathFact {
            path: path.to_string(),
            content_below,
        }
    }
}

impl Fact for PathFact {
    type Value = PathFacts;

    fn command(&self) -> String {
        let mut s = format!(
            "p={}; if [ -L \"$p\" ]; then printf 'link=%s\\n' \"$(readlink -f -- \"$p\")\"; fi; \
             if [ -f \"$p\" ]; then echo kind=file; stat -L -c 'attrs={STAT_FORMAT}' -- \"$p\"; ",
            quote(&self.path)
        );
        if let Some(limit) = self.content_below {
            // An unreadable file prints an empty hash (the redirection fails first).
            s.push_str(&format!(
                "echo \"sha256=$(sha256sum < \"$p\" | cut -d' ' -f1)\"; \
                 if [ \"$(stat -L -c %s -- \"$p\")\" -lt {limit} ]; then printf content=; base64 -w0 < \"$p\"; echo; fi; "
            ));
        }
        s.push_str(&format!(
            "elif [ -d \"$p\" ]; then echo kind=directory; stat -L -c 'attrs={STAT_FORMAT}' -- \"$p\"; \
             elif [ -e \"$p\" ]; then echo kind=other; stat -L -c 'type=%F' -- \"$p\"; else echo kind=absent; fi"
        ));
        s
    }

    fn parse(&self, facts: &Facts) -> Result<PathFacts, StepError> {
        let kv = facts.kv();
        let bad = || unexpected("file fact", &facts.stdout);
        let attrs = match kv.get("attrs") {
            Some(a) => Some(util::parse_attrs(a).ok_or_else(bad)?),
            None => None,
        };
        let kind = match kv.get("kind").copied() {
            Some("absent") => Kind::Absent,
            Some("file") => Kind::File,
            Some("directory") => Kind::Directory,
            Some("other") => Kind::Other(kv.get("type").unwrap_or(&"special file").to_string()),
            _ => return Err(bad()),
        };
        if matches!(kind, Kind::File | Kind::Directory) && attrs.is_none() {
            return Err(bad());
        }
        let content = match kv.get("content") {
            Some(b) => Some(util::base64_decode(b).ok_or_else(bad)?),
            None => None,
        };
        Ok(PathFacts {
            kind,
            link: kv.get("link").map(|s| s.to_string()),
            attrs,
            sha256: kv
                .get("sha256")
                .filter(|s| !s.is_empty())
                .map(|s| s.to_string()),
            content,
        })
    }
}

/// The command of [`PathFact`], for steps that gather it within [`util::sections`].
pub fn gather_command(path: &str, content_below: Option<u64>) -> String {
    PathFact::new(path, content_below).command()
}

/// Parses the output of [`gather_command`] (the parser does not depend on the path).
pub fn parse(facts: &Facts) -> Result<PathFacts, StepError> {
    PathFact::new("", None).parse(facts)
}

/// The file a step wants at `path`.
pub struct Desired<'a> {
    pub path: &'a str,
    /// What the key is called in the step (`dest`, `path`), for messages.
    pub key: &'a str,
    pub content: &'a [u8],
    /// None: keep the current mode (0644 for a new file): a file made private
    /// by hand must not become world-readable because a step forgot `mode`.
    pub mode: Option<u32>,
    /// None: keep the current owner (root for a new file).
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
}

/// Refuses what a file step must not write through or over.
pub fn require_file_or_absent(f: &PathFacts, path: &str, key: &str) -> Result<(), StepError> {
    if let Some(target) = &f.link {
        return Err(StepError::new(format!(
            "{path} is a symbolic link to {target}: writing would replace the link with a file"
        ))
        .hint(format!(
            "set {key} = \"{target}\" to change the file it points to"
        )));
    }
    match &f.kind {
        Kind::Directory => Err(
            StepError::new(format!("{path} is a directory")).hint(format!(
                "{key} must name the file itself, e.g. \"{path}/NAME\""
            )),
        ),
        Kind::Other(t) => Err(
            StepError::new(format!("{path} is a {t}, not a regular file"))
                .hint(format!("choose another {key}")),
        ),
        Kind::File if f.sha256.is_none() => Err(StepError::new(format!("cannot read {path}"))
            .hint("set `become = true` for this host (or [ssh]) so steps run as root")),
        _ => Ok(()),
    }
}

/// The plan to have `want` at its path, given what is there now.
pub fn plan(want: &Desired<'_>, now: &PathFacts) -> Result<Check, StepError> {
    require_file_or_absent(now, want.path, want.key)?;
    let after = std::str::from_utf8(want.content).ok();
    let Some(attrs) = now.attrs.as_ref().filter(|_| now.kind == Kind::File) else {
        let mode = want.mode.unwrap_or(NEW_FILE_MODE);
        let summary = format!(
            "create {} ({} bytes, mode {mode:04o})",
            want.path,
            want.content.len(),
        );
        let change = Change::new(
            summary,
            vec![upload(
                want,
                mode,
                want.owner.map(str::to_string),
                want.group.map(str::to_string),
            )],
        );
        return Ok(Check::Change(vec![match after {
            Some(a) => change.with_diff(FileDiff {
                path: want.path.to_string(),
                before: None,
                after: a.to_string(),
            }),
            None => change,
        }]));
    };
    let mut what = Vec::new();
    let same_content = now.sha256.as_deref() == Some(util::sha256_hex(want.content).as_str());
    if !same_content {
        what.push("content".to_string());
    }
    let mode = want.mode.unwrap_or(attrs.mode);
    if attrs.mode != mode {
        what.push(format!("mode {mode:04o} (was {:04o})", attrs.mode));
    }
    if let Some(o) = want.owner.filter(|o| !attrs.owner_is(o)) {
        what.push(format!("owner {o} (was {})", attrs.owner));
    }
    if let Some(g) = want.group.filter(|g| !attrs.group_is(g)) {
        what.push(format!("group {g} (was {})", attrs.group));
    }
    if what.is_empty() {
        return Ok(Check::Ok(format!("{} up to date", want.path)));
    }
    // Replacing the file must not hand it to root: keep its owner unless told otherwise.
    let owner = want
        .owner
        .map(str::to_string)
        .unwrap_or_else(|| attrs.owner_spec());
    let group = want
        .group
        .map(str::to_string)
        .unwrap_or_else(|| attrs.group_spec());
    let mut change = Change::new(
        format!("update {}: {}", want.path, what.join(", ")),
        vec![upload(want, mode, Some(owner), Some(group))],
    );
    if !same_content {
        let before = now
            .content
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok());
        match (before, after) {
            (Some(b), Some(a)) => {
                change = change.with_diff(FileDiff {
                    path: want.path.to_string(),
                    before: Some(b.to_string()),
                    after: a.to_string(),
                })
            }
            _ => change
                .summary
                .push_str(" (no diff: binary or larger than 64 KiB)"),
        }
    }
    Ok(Check::Change(vec![change]))
}

/// The mode of a file step (None: keep the current one, 0644 for a new file). A file holding a
/// secret gets 0600 when `mode` is not set; an explicit mode that lets others read it is
/// reported as a warning (the user may mean it, e.g. a world-readable CA bundle).
pub fn mode_for(
    ctx: &BuildCtx<'_>,
    dest: &str,
    content: &[u8],
    mode: Option<util::Mode>,
) -> Result<Option<u32>, ParamError> {
    let secret = std::str::from_utf8(content).is_ok_and(|t| (ctx.has_secret)(t));
    let (mode, warning) = secret_file_mode(dest, secret, mode);
    if let Some(w) = warning {
        (ctx.warn)("mode", w);
    }
    Ok(mode)
}

/// The pure decision of [`mode_for`]: the mode to use, and a warning.
pub fn secret_file_mode(
    dest: &str,
    secret: bool,
    mode: Option<util::Mode>,
) -> (Option<u32>, Option<String>) {
    match mode {
        _ if !secret => (mode.map(|m| m.0), None),
        None => (Some(PRIVATE_FILE_MODE), None),
        Some(m) if m.0 & 0o007 != 0 => (
            Some(m.0),
            Some(format!(
                "{dest} holds a secret, and mode {m} lets every user of the host read it; remove `mode` (files holding secrets get 0600) or set mode = \"0600\""
            )),
        ),
        Some(m) => (Some(m.0), None),
    }
}

/// Reads a `src` file, relative to the playbook's directory.
pub fn read_src(ctx: &BuildCtx<'_>, src: &str) -> Result<Vec<u8>, ParamError> {
    let path = ctx.base_dir.join(src);
    if path.is_dir() {
        return Err(util::bad(
            "src",
            format!("`src` {} is a directory", path.display()),
            "name one file",
        ));
    }
    std::fs::read(&path).map_err(|e| {
        util::bad(
            "src",
            format!("cannot read `src` {}: {e}", path.display()),
            format!(
                "`src` is relative to the playbook's directory ({})",
                ctx.base_dir.display()
            ),
        )
    })
}

/// A step that puts a whole file in place (`template`, `copy`).
pub struct FileStep {
    pub path: String,
    pub key: &'static str,
    pub content: Zeroizing<Vec<u8>>,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// The parameters of `copy` (`src` optional, or `content`) and `template` (`src` required;
/// `content` is not among its known keys, so it stays None).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileParams<Src> {
    pub src: Src,
    pub content: Option<String>,
    pub dest: String,
    pub mode: Option<util::Mode>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

impl<Src> FileParams<Src> {
    /// The step putting what `content` makes of `src` and `content` at `dest`: `dest`, `owner`
    /// and `group` are checked before the content is made (their errors come first), the mode
    /// is chosen after (a secret in the content makes the file private).
    pub fn step(
        self,
        ctx: &BuildCtx<'_>,
        content: impl FnOnce(Src, Option<String>) -> Result<Zeroizing<Vec<u8>>, ParamError>,
    ) -> Result<Box<dyn HostStep>, ParamError> {
        let dest = util::abs_path("dest", &self.dest)?;
        let owner = util::account("owner", self.owner)?;
        let group = util::account("group", self.group)?;
        let content = content(self.src, self.content)?;
        let mode = mode_for(ctx, &dest, &content, self.mode)?;
        Ok(Box::new(Typed(FileStep {
            path: dest,
            key: "dest",
            content,
            mode,
            owner,
            group,
        })))
    }
}

impl Decide for FileStep {
    type Fact = PathFact;

    fn fact(&self) -> PathFact {
        PathFact::new(&self.path, Some(DIFF_LIMIT))
    }

    fn decide(&self, now: PathFacts) -> Result<Check, StepError> {
        let want = Desired {
            path: &self.path,
            key: self.key,
            content: &self.content,
            mode: self.mode,
            owner: self.owner.as_deref(),
            group: self.group.as_deref(),
        };
        plan(&want, &now)
    }
}

/// The change putting `content` at `path` (a file the step manages as a whole
/// or edits: an existing file keeps its mode and owner, a new one is 0644),
/// None when it is there already. `key` names the path in error hints.
pub fn change(
    path: &str,
    key: &str,
    content: &[u8],
    now: &PathFacts,
) -> Result<Option<Change>, StepError> {
    change_with_mode(path, key, content, None, now)
}

/// [`change`] with a mode to enforce (a file holding credentials: 0600).
pub fn change_with_mode(
    path: &str,
    key: &str,
    content: &[u8],
    mode: Option<u32>,
    now: &PathFacts,
) -> Result<Option<Change>, StepError> {
    let want = Desired {
        path,
        key,
        content,
        mode,
        owner: None,
        group: None,
    };
    Ok(match plan(&want, now)? {
        Check::Change(mut c) => c.pop(),
        _ => None,
    })
}

/// The gathered content of a text file ("" when it does not exist): for steps
/// that edit system files (/etc/fstab, /etc/hosts, /etc/exports).
pub fn text(now: &PathFacts, path: &str) -> Result<String, StepError> {
    if now.kind == Kind::Absent {
        return Ok(String::new());
    }
    require_file_or_absent(now, path, "path")?;
    let Some(bytes) = &now.content else {
        return Err(StepError::new(format!("{path} is too large to edit"))
            .hint("it was not gathered whole: check the file by hand"));
    };
    String::from_utf8(bytes.clone()).map_err(|_| {
        StepError::new(format!("{path} is not a UTF-8 text file")).hint("check the file by hand")
    })
}

fn upload(want: &Desired<'_>, mode: u32, owner: Option<String>, group: Option<String>) -> Action {
    Action::Upload {
        dest: want.path.to_string(),
        content: Zeroizing::new(want.content.to_vec()),
        mode: Some(mode),
        owner,
        group,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(s: &str) -> PathFacts {
        parse(&Facts::new(s)).unwrap()
    }

    #[test]
    fn gather_command_is_exact() {
        assert_eq!(
            gather_command("/etc/my app.conf", Some(65536)),
            "p='/etc/my app.conf'; if [ -L \"$p\" ]; then printf 'link=%s\\n' \"$(readlink -f -- \"$p\")\"; fi; \
             if [ -f \"$p\" ]; then echo kind=file; stat -L -c 'attrs=%a %U %G %u %g %s' -- \"$p\"; \
             echo \"sha256=$(sha256sum < \"$p\" | cut -d' ' -f1)\"; \
             if [ \"$(stat -L -c %s -- \"$p\")\" -lt 65536 ]; then printf content=; base64 -w0 < \"$p\"; echo; fi; \
             elif [ -d \"$p\" ]; then echo kind=directory; stat -L -c 'attrs=%a %U %G %u %g %s' -- \"$p\"; \
             elif [ -e \"$p\" ]; then echo kind=other; stat -L -c 'type=%F' -- \"$p\"; else echo kind=absent; fi"
        );
        assert_eq!(
            gather_command("/opt/app", None),
            "p=/opt/app; if [ -L \"$p\" ]; then printf 'link=%s\\n' \"$(readlink -f -- \"$p\")\"; fi; \
             if [ -f \"$p\" ]; then echo kind=file; stat -L -c 'attrs=%a %U %G %u %g %s' -- \"$p\"; \
             elif [ -d \"$p\" ]; then echo kind=directory; stat -L -c 'attrs=%a %U %G %u %g %s' -- \"$p\"; \
             elif [ -e \"$p\" ]; then echo kind=other; stat -L -c 'type=%F' -- \"$p\"; else echo kind=absent; fi"
        );
    }

    #[test]
    fn parses_captured_output() {
        // Debian 12: /etc/hosts
        let f = facts(
            "kind=file\nattrs=644 root root 0 0 186\nsha256=0d7b4e9d2b0c4d0e1c0b6a3f1d0f5c7e9a2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d\ncontent=MTI3LjAuMC4xCWxvY2FsaG9zdAo=\n",
        );
        assert_eq!(f.kind, Kind::File);
        assert_eq!(f.attrs.as_ref().unwrap().size, 186);
        assert_eq!(f.content.as_deref(), Some(&b"127.0.0.1\tlocalhost\n"[..]));
        assert_eq!(facts("kind=absent\n").kind, Kind::Absent);
        assert_eq!(
            facts("kind=other\ntype=socket\n").kind,
            Kind::Other("socket".into())
        );
        let l = facts(
            "link=/run/systemd/resolve/stub-resolv.conf\nkind=file\nattrs=644 systemd-resolve systemd-resolve 990 990 920\nsha256=ab\n",
        );
        assert_eq!(
            l.link.as_deref(),
            Some("/run/systemd/resolve/stub-resolv.conf")
        );
        assert_eq!(l.content, None);
        // Unreadable (no become): empty hash.
        assert_eq!(
            facts("kind=file\nattrs=640 root shadow 0 42 1024\nsha256=\n").sha256,
            None
        );
        assert!(parse(&Facts::new("")).is_err());
        assert!(parse(&Facts::new("kind=file\n")).is_err());
        assert!(
            parse(&Facts::new(
                "kind=file\nattrs=644 root root 0 0 3\ncontent=!!\n"
            ))
            .is_err()
        );
    }

    fn want(content: &[u8]) -> Desired<'_> {
        Desired {
            path: "/etc/app.conf",
            key: "dest",
            content,
            mode: Some(0o644),
            owner: None,
            group: None,
        }
    }

    #[test]
    fn new_file() {
        let Check::Change(c) = plan(&want(b"a=1\n"), &facts("kind=absent\n")).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "create /etc/app.conf (4 bytes, mode 0644)");
        assert_eq!(
            c[0].actions,
            vec![Action::Upload {
                dest: "/etc/app.conf".into(),
                content: Zeroizing::new(b"a=1\n".to_vec()),
                mode: Some(0o644),
                owner: None,
                group: None
            }]
        );
        assert_eq!(
            c[0].diff,
            Some(FileDiff {
                path: "/etc/app.conf".into(),
                before: None,
                after: "a=1\n".into()
            })
        );
    }

    #[test]
    fn up_to_date() {
        let now = facts(&format!(
            "kind=file\nattrs=644 root root 0 0 4\nsha256={}\n",
            util::sha256_hex(b"a=1\n")
        ));
        assert_eq!(
            plan(&want(b"a=1\n"), &now).unwrap(),
            Check::Ok("/etc/app.conf up to date".into())
        );
    }

    #[test]
    fn drifted_content_keeps_owner_and_diffs() {
        let now = facts(&format!(
            "kind=file\nattrs=644 www-data adm 33 4 4\nsha256={}\ncontent={}\n",
            util::sha256_hex(b"a=0\n"),
            util::base64_encode(b"a=0\n")
        ));
        let Check::Change(c) = plan(&want(b"a=1\n"), &now).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "update /etc/app.conf: content");
        let Action::Upload { owner, group, .. } = &c[0].actions[0] else {
            panic!()
        };
        assert_eq!(
            (owner.as_deref(), group.as_deref()),
            (Some("www-data"), Some("adm"))
        );
        assert_eq!(c[0].diff.as_ref().unwrap().before.as_deref(), Some("a=0\n"));
    }

    #[test]
    fn drifted_attributes_only() {
        let now = facts(&format!(
            "kind=file\nattrs=664 root root 0 0 4\nsha256={}\n",
            util::sha256_hex(b"a=1\n")
        ));
        let w = Desired {
            owner: Some("app"),
            ..want(b"a=1\n")
        };
        let Check::Change(c) = plan(&w, &now).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "update /etc/app.conf: mode 0644 (was 0664), owner app (was root)"
        );
        assert_eq!(c[0].diff, None);
    }

    #[test]
    fn large_file_has_no_diff() {
        let now = facts("kind=file\nattrs=644 root root 0 0 100000\nsha256=00\n");
        let Check::Change(c) = plan(&want(b"x"), &now).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "update /etc/app.conf: content (no diff: binary or larger than 64 KiB)"
        );
    }

    #[test]
    fn refuses_links_directories_and_unreadable_files() {
        let e = plan(
            &want(b"x"),
            &facts("link=/run/x.conf\nkind=file\nattrs=644 root root 0 0 1\nsha256=00\n"),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "/etc/app.conf is a symbolic link to /run/x.conf: writing would replace the link with a file"
        );
        assert_eq!(
            e.hint.as_deref(),
            Some("set dest = \"/run/x.conf\" to change the file it points to")
        );
        let e = plan(
            &want(b"x"),
            &facts("kind=directory\nattrs=755 root root 0 0 4096\n"),
        )
        .unwrap_err();
        assert_eq!(e.message, "/etc/app.conf is a directory");
        let e = plan(
            &want(b"x"),
            &facts("kind=file\nattrs=600 root root 0 0 1\nsha256=\n"),
        )
        .unwrap_err();
        assert_eq!(e.message, "cannot read /etc/app.conf");
    }
}
