//! `line`: one line present in (or absent from) a text file, optionally
//! replacing the lines that match a POSIX extended regular expression. The new
//! content is built here from the gathered content and uploaded atomically with
//! the file's mode and owner kept: no in-place `sed -i`.

use super::file::{self, Kind, PathFacts};
pub use super::util::Presence as State;
use super::util::{self, Mode};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::step::{Action, Change, Check, Facts, FileDiff, HostStep, StepError};
use provision_transport::shell::quote;
use serde::Deserialize;
use std::collections::BTreeSet;
use zeroize::Zeroizing;

pub const KNOWN_KEYS: &[&str] = &["path", "line", "regexp", "state", "create", "mode"];

/// Files are read whole into the facts: larger ones belong to `template`/`copy`.
pub const SIZE_LIMIT: u64 = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    path: String,
    line: Option<String>,
    regexp: Option<String>,
    #[serde(default)]
    state: State,
    #[serde(default)]
    create: bool,
    mode: Option<Mode>,
}

pub struct Line {
    path: String,
    line: Option<String>,
    regexp: Option<String>,
    state: State,
    create: bool,
    mode: u32,
    /// The line holds a secret: the file must not be readable by others.
    secret: bool,
}

pub fn build(with: &toml::Table, ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let path = util::abs_path("path", &p.path)?;
    if p.line.as_deref().is_some_and(|l| l.contains(['\n', '\r'])) {
        return Err(util::bad(
            "line",
            "`line` must be a single line",
            "use one `line` step per line, or a `template` for blocks",
        ));
    }
    if p.regexp
        .as_deref()
        .is_some_and(|r| r.is_empty() || r.contains('\n'))
    {
        return Err(util::bad(
            "regexp",
            "`regexp` must be a non-empty single line",
            "e.g. regexp = \"^#?PermitRootLogin\"",
        ));
    }
    match (p.state, &p.line, &p.regexp) {
        (State::Present, None, _) => {
            return Err(ParamError::new(
                Some("line"),
                "`line` is required with state = \"present\"",
            )
            .help("e.g. line = \"PermitRootLogin no\""));
        }
        (State::Absent, None, None) => {
            return Err(ParamError::new(
                Some("line"),
                "state = \"absent\" needs `line` (exact line) or `regexp` (lines to remove)",
            )
            .help("e.g. regexp = \"^PasswordAuthentication\""));
        }
        _ => {}
    }
    if p.mode.is_some() && !(p.create && p.state == State::Present) {
        return Err(util::bad(
            "mode",
            "`mode` applies only to a file this step creates",
            "add create = true, or remove `mode` (an existing file keeps its mode)",
        ));
    }
    let secret = p.line.as_deref().is_some_and(|l| (ctx.has_secret)(l));
    // A file this step creates: 0600 when it holds a secret and `mode` is not set.
    let (mode, warning) = file::secret_file_mode(&path, secret, p.mode);
    if let Some(w) = warning.filter(|_| p.create) {
        (ctx.warn)("mode", w);
    }
    let mode = Mode(mode.unwrap_or(0o644));
    Ok(Box::new(Typed(Line {
        path,
        line: p.line,
        regexp: p.regexp,
        state: p.state,
        create: p.create,
        mode: mode.0,
        secret,
    })))
}

inventory::submit! { crate::ctx::BuiltIn::host("line", build).stdin_params(&["line"]) }

/// The fact a line step needs: the file facts (content included below 1 MiB) and, with a regexp,
/// the numbers of the matching lines as `matches=3 7`, plus `regexp=invalid` when grep rejects
/// the expression (exit status 2 on empty input).
pub struct LineFact {
    pub path: String,
    pub regexp: Option<String>,
}

/// What [`LineFact`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFacts {
    pub file: PathFacts,
    /// The matching lines (None without a regexp). An error only matters once the file is known
    /// to be there and readable: kept for the decision rather than failing the parse.
    pub matches: Result<Option<BTreeSet<usize>>, StepError>,
}

impl Fact for LineFact {
    type Value = LineFacts;

    fn command(&self) -> String {
        let mut s = file::gather_command(&self.path, Some(SIZE_LIMIT));
        if let Some(r) = &self.regexp {
            let r = quote(r);
            s.push_str(&format!(
                "; if [ -f \"$p\" ]; then printf 'matches=%s\\n' \"$(grep -n -E -e {r} -- \"$p\" 2>/dev/null | cut -d: -f1 | tr '\\n' ' ')\"; fi; \
                 grep -E -q -e {r} </dev/null 2>/dev/null; [ $? -ne 2 ] || echo regexp=invalid"
            ));
        }
        s
    }

    fn parse(&self, facts: &Facts) -> Result<LineFacts, StepError> {
        Ok(LineFacts {
            file: file::parse(facts)?,
            matches: parse_matches(facts, self.regexp.as_deref()),
        })
    }
}

/// The command of [`LineFact`].
pub fn gather_command(path: &str, regexp: Option<&str>) -> String {
    LineFact {
        path: path.to_string(),
        regexp: regexp.map(str::to_string),
    }
    .command()
}

/// The result of editing the content: the new text and what was done, or why
/// nothing needs doing.
#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    Unchanged(String),
    Changed { content: String, summary: String },
}

/// Pure: applies the step to `content`. `matches` are 1-based numbers of the
/// lines matching the regexp, as grep -n counts them. Every matching line is
/// replaced (not only the last, as Ansible does): with duplicates of a setting
/// left behind, which one wins depends on the program reading the file.
pub fn edit(
    content: &str,
    line: Option<&str>,
    matches: Option<&BTreeSet<usize>>,
    state: State,
) -> Edit {
    let lines: Vec<&str> = content.split_inclusive('\n').collect();
    let body = |l: &str| l.strip_suffix('\n').unwrap_or(l).to_string();
    let numbers = |v: &[usize]| {
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match state {
        State::Present => {
            let line = line.unwrap_or_default();
            if let Some(m) = matches.filter(|m| !m.is_empty()) {
                let mut out = String::with_capacity(content.len() + line.len());
                let mut replaced = Vec::new();
                for (i, l) in lines.iter().enumerate() {
                    if m.contains(&(i + 1)) && body(l) != line {
                        out.push_str(line);
                        if l.ends_with('\n') {
                            out.push('\n');
                        }
                        replaced.push(i + 1);
                    } else {
                        out.push_str(l);
                    }
                }
                if replaced.is_empty() {
                    return Edit::Unchanged(format!(
                        "line present (line {})",
                        numbers(&m.iter().copied().collect::<Vec<_>>())
                    ));
                }
                let plural = if replaced.len() > 1 { "s" } else { "" };
                return Edit::Changed {
                    content: out,
                    summary: format!("replace line{plural} {}", numbers(&replaced)),
                };
            }
            if let Some(i) = lines.iter().position(|l| body(l) == line) {
                return Edit::Unchanged(format!("line present (line {})", i + 1));
            }
            let mut out = content.to_string();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
            Edit::Changed {
                content: out,
                summary: format!("append line {}", lines.len() + 1),
            }
        }
        State::Absent => {
            let mut out = String::with_capacity(content.len());
            let mut removed = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                let hit = match matches {
                    Some(m) => m.contains(&(i + 1)),
                    None => line.is_some_and(|x| body(l) == x),
                };
                if hit {
                    removed.push(i + 1);
                } else {
                    out.push_str(l);
                }
            }
            if removed.is_empty() {
                return Edit::Unchanged("line absent".into());
            }
            let plural = if removed.len() > 1 { "s" } else { "" };
            Edit::Changed {
                content: out,
                summary: format!("remove line{plural} {}", numbers(&removed)),
            }
        }
    }
}

/// Parses `matches=3 7` (None without a regexp).
fn parse_matches(
    facts: &Facts,
    regexp: Option<&str>,
) -> Result<Option<BTreeSet<usize>>, StepError> {
    let Some(r) = regexp else { return Ok(None) };
    let kv = facts.kv();
    if kv.get("regexp") == Some(&"invalid") {
        return Err(StepError::new(format!(
            "`regexp` {r:?} is not a valid POSIX extended regular expression (grep -E rejects it)"
        ))
        .hint(
            "e.g. \"^#?PermitRootLogin\"; escape literal characters such as . ( [ with a backslash",
        ));
    }
    let m = kv
        .get("matches")
        .ok_or_else(|| util::bad_facts("line", &facts.stdout))?;
    m.split_whitespace()
        .map(|n| {
            n.parse()
                .map_err(|_| util::bad_facts("line", &facts.stdout))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

impl Decide for Line {
    type Fact = LineFact;

    fn fact(&self) -> LineFact {
        LineFact {
            path: self.path.clone(),
            regexp: self.regexp.clone(),
        }
    }

    fn decide(&self, facts: LineFacts) -> Result<Check, StepError> {
        let path = &self.path;
        let now = facts.file;
        file::require_file_or_absent(&now, path, "path")?;
        if now.kind == Kind::Absent {
            return match (self.state, self.create) {
                (State::Absent, _) => Ok(Check::Ok(format!("{path} does not exist: line absent"))),
                (State::Present, false) => Err(StepError::new(format!("{path} does not exist"))
                    .hint("set create = true to create it with this line")),
                (State::Present, true) => {
                    let content = format!("{}\n", self.line.as_deref().unwrap_or_default());
                    let action = Action::Upload {
                        dest: path.clone(),
                        content: Zeroizing::new(content.clone().into_bytes()),
                        mode: Some(self.mode),
                        owner: None,
                        group: None,
                    };
                    let diff = FileDiff {
                        path: path.clone(),
                        before: None,
                        after: content,
                    };
                    Ok(Check::Change(vec![
                        Change::new(
                            format!("create {path} with the line (mode {:04o})", self.mode),
                            vec![action],
                        )
                        .with_diff(diff),
                    ]))
                }
            };
        }
        // The file fact's parser refuses a file without attributes: this does not happen.
        let attrs = now
            .attrs
            .as_ref()
            .ok_or_else(|| StepError::new(format!("no attributes gathered for {path}")))?;
        let Some(bytes) = &now.content else {
            return Err(StepError::new(format!(
                "{path} is larger than 1 MiB ({} bytes)",
                attrs.size
            ))
            .hint("manage large files whole with `template` or `copy`"));
        };
        let content = std::str::from_utf8(bytes).map_err(|_| {
            StepError::new(format!("{path} is not a UTF-8 text file"))
                .hint("`line` edits text files only")
        })?;
        let matches = facts.matches?;
        match edit(content, self.line.as_deref(), matches.as_ref(), self.state) {
            Edit::Unchanged(reason) => Ok(Check::Ok(format!("{path}: {reason}"))),
            Edit::Changed {
                content: new,
                summary,
            } => {
                if self.secret && attrs.mode & 0o077 != 0 {
                    return Err(StepError::new(format!("{path} is mode {:04o}, readable by other users, and the line holds a secret", attrs.mode))
                        .hint(format!("make it private first (a `command` step: chmod 600 {path}), or write the file with `template` and mode = \"0600\"")));
                }
                // Keep the file's mode and owner: the upload replaces it with a new file.
                let action = Action::Upload {
                    dest: path.clone(),
                    content: Zeroizing::new(new.clone().into_bytes()),
                    mode: Some(attrs.mode),
                    owner: Some(attrs.owner_spec()),
                    group: Some(attrs.group_spec()),
                };
                let diff = FileDiff {
                    path: path.clone(),
                    before: Some(content.to_string()),
                    after: new,
                };
                Ok(Check::Change(vec![
                    Change::new(format!("{summary} in {path}"), vec![action]).with_diff(diff),
                ]))
            }
        }
    }
}

/// Pure: exactly one line of `content` for which `is_match` holds, and it is
/// `line`. The first match is replaced when different and later matches are
/// removed (a duplicate fstab or hosts entry would be ambiguous); without a
/// match, `line` goes after the last line for which `after` holds, or at the end.
pub fn set_unique_line(
    content: &str,
    is_match: impl Fn(&str) -> bool,
    line: &str,
    after: impl Fn(&str) -> bool,
) -> Edit {
    let lines: Vec<&str> = content.split_inclusive('\n').collect();
    let body = |l: &str| l.strip_suffix('\n').unwrap_or(l).to_string();
    let hits: Vec<usize> = (0..lines.len())
        .filter(|&i| is_match(&body(lines[i])))
        .collect();
    let mut out = String::with_capacity(content.len() + line.len() + 1);
    let Some(&first) = hits.first() else {
        let at = (0..lines.len()).rev().find(|&i| after(&body(lines[i])));
        for (i, l) in lines.iter().enumerate() {
            out.push_str(l);
            if Some(i) == at {
                if !l.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(line);
                out.push('\n');
            }
        }
        let summary = match at {
            Some(i) => format!("insert line {}", i + 2),
            None => {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(line);
                out.push('\n');
                format!("append line {}", lines.len() + 1)
            }
        };
        return Edit::Changed {
            content: out,
            summary,
        };
    };
    let replace = body(lines[first]) != line;
    if !replace && hits.len() == 1 {
        return Edit::Unchanged(format!("line present (line {})", first + 1));
    }
    for (i, l) in lines.iter().enumerate() {
        if i == first {
            out.push_str(line);
            out.push('\n');
        } else if !hits.contains(&i) {
            out.push_str(l);
        }
    }
    let mut what = Vec::new();
    if replace {
        what.push(format!("replace line {}", first + 1));
    }
    if hits.len() > 1 {
        let rest: Vec<String> = hits[1..].iter().map(|i| (i + 1).to_string()).collect();
        let plural = if rest.len() > 1 { "s" } else { "" };
        what.push(format!("remove duplicate line{plural} {}", rest.join(", ")));
    }
    Edit::Changed {
        content: out,
        summary: what.join(", "),
    }
}

/// Pure: the lines between the marker lines `begin` and `end` become `body`
/// (each line ending in a newline); `None` removes the block with its markers.
/// A missing block is appended. An error when a `begin` has no `end`: the
/// block's extent is unknown and guessing could delete the file's other lines.
pub fn set_block(
    content: &str,
    begin: &str,
    end: &str,
    body: Option<&str>,
) -> Result<Edit, String> {
    let lines: Vec<&str> = content.split_inclusive('\n').collect();
    let is = |l: &str, m: &str| l.trim_end() == m;
    let mut blocks: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if is(lines[i], begin) {
            let Some(j) = (i + 1..lines.len()).find(|&j| is(lines[j], end)) else {
                return Err(format!(
                    "line {}: `{begin}` without a following `{end}`",
                    i + 1
                ));
            };
            blocks.push((i, j));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    let block = body.map(|b| format!("{begin}\n{b}{end}\n"));
    let mut out = String::with_capacity(content.len() + block.as_deref().map_or(0, str::len));
    match (blocks.first(), &block) {
        (None, None) => Ok(Edit::Unchanged("block absent".into())),
        (None, Some(b)) => {
            out.push_str(content);
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(b);
            Ok(Edit::Changed {
                content: out,
                summary: format!("append block at line {}", lines.len() + 1),
            })
        }
        (Some(&(b0, e0)), _) => {
            let now: String = lines[b0..=e0].concat();
            if blocks.len() == 1 && block.as_deref() == Some(now.as_str()) {
                return Ok(Edit::Unchanged(format!(
                    "block up to date (lines {}-{})",
                    b0 + 1,
                    e0 + 1
                )));
            }
            let mut i = 0;
            while i < lines.len() {
                if let Some(&(b, e)) = blocks.iter().find(|(b, _)| *b == i) {
                    if b == b0
                        && let Some(new) = &block
                    {
                        out.push_str(new);
                    }
                    i = e + 1;
                } else {
                    out.push_str(lines[i]);
                    i += 1;
                }
            }
            let verb = if block.is_some() { "update" } else { "remove" };
            Ok(Edit::Changed {
                content: out,
                summary: format!("{verb} block at lines {}-{}", b0 + 1, e0 + 1),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{SECRET, build as build_with, build_err};

    fn step(with: &str) -> Box<dyn HostStep> {
        build_with(build, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    const SSHD: &str = "Include /etc/ssh/sshd_config.d/*.conf\n#PermitRootLogin prohibit-password\nPasswordAuthentication yes\nPermitRootLogin yes\n";

    fn facts_for(content: &str, extra: &str) -> Facts {
        Facts::new(format!(
            "kind=file\nattrs=644 root root 0 0 {}\nsha256={}\ncontent={}\n{extra}",
            content.len(),
            util::sha256_hex(content.as_bytes()),
            util::base64_encode(content.as_bytes())
        ))
    }

    #[test]
    fn gather_command_is_exact() {
        assert_eq!(
            gather_command("/etc/x", None),
            file::gather_command("/etc/x", Some(1048576))
        );
        assert_eq!(
            gather_command("/etc/ssh/sshd_config", Some("^#?PermitRootLogin ")),
            format!(
                "{}; if [ -f \"$p\" ]; then printf 'matches=%s\\n' \"$(grep -n -E -e '^#?PermitRootLogin ' -- \"$p\" 2>/dev/null | cut -d: -f1 | tr '\\n' ' ')\"; fi; \
                 grep -E -q -e '^#?PermitRootLogin ' </dev/null 2>/dev/null; [ $? -ne 2 ] || echo regexp=invalid",
                file::gather_command("/etc/ssh/sshd_config", Some(1048576))
            )
        );
    }

    #[test]
    fn edits() {
        let m = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
        assert_eq!(
            edit("a\nb\n", Some("c"), None, State::Present),
            Edit::Changed {
                content: "a\nb\nc\n".into(),
                summary: "append line 3".into()
            }
        );
        assert_eq!(
            edit("a\nb", Some("c"), None, State::Present),
            Edit::Changed {
                content: "a\nb\nc\n".into(),
                summary: "append line 3".into()
            }
        );
        assert_eq!(
            edit("", Some("c"), None, State::Present),
            Edit::Changed {
                content: "c\n".into(),
                summary: "append line 1".into()
            }
        );
        assert_eq!(
            edit("a\nc\n", Some("c"), None, State::Present),
            Edit::Unchanged("line present (line 2)".into())
        );
        assert_eq!(
            edit(
                SSHD,
                Some("PermitRootLogin no"),
                Some(&m(&[2, 4])),
                State::Present
            ),
            Edit::Changed {
                content: SSHD
                    .replace("#PermitRootLogin prohibit-password", "PermitRootLogin no")
                    .replace("PermitRootLogin yes", "PermitRootLogin no"),
                summary: "replace lines 2, 4".into()
            }
        );
        assert_eq!(
            edit("x=1", Some("x=2"), Some(&m(&[1])), State::Present),
            Edit::Changed {
                content: "x=2".into(),
                summary: "replace line 1".into()
            }
        );
        assert_eq!(
            edit("a\nx=2\n", Some("x=2"), Some(&m(&[2])), State::Present),
            Edit::Unchanged("line present (line 2)".into())
        );
        // No line matches the regexp: appended, as Ansible does.
        assert_eq!(
            edit("a\n", Some("x=2"), Some(&m(&[])), State::Present),
            Edit::Changed {
                content: "a\nx=2\n".into(),
                summary: "append line 2".into()
            }
        );
        assert_eq!(
            edit("a\nb\na\n", Some("a"), None, State::Absent),
            Edit::Changed {
                content: "b\n".into(),
                summary: "remove lines 1, 3".into()
            }
        );
        assert_eq!(
            edit("a\nb", None, Some(&m(&[2])), State::Absent),
            Edit::Changed {
                content: "a\n".into(),
                summary: "remove line 2".into()
            }
        );
        assert_eq!(
            edit("a\n", Some("b"), None, State::Absent),
            Edit::Unchanged("line absent".into())
        );
    }

    #[test]
    fn drifted_file_is_uploaded_with_its_attributes() {
        let s = step(
            "path = \"/etc/ssh/sshd_config\"\nline = \"PermitRootLogin no\"\nregexp = \"^#?PermitRootLogin\"",
        );
        let f = facts_for(SSHD, "matches=2 4 \n")
            .stdout
            .replace("attrs=644 root root 0 0", "attrs=600 root ssh 0 105");
        let Check::Change(c) = s.check(&Facts::new(f)).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "replace lines 2, 4 in /etc/ssh/sshd_config");
        let Action::Upload {
            mode,
            owner,
            group,
            content,
            ..
        } = &c[0].actions[0]
        else {
            panic!()
        };
        assert_eq!(
            (*mode, owner.as_deref(), group.as_deref()),
            (Some(0o600), Some("root"), Some("ssh"))
        );
        assert!(
            std::str::from_utf8(content)
                .unwrap()
                .ends_with("PasswordAuthentication yes\nPermitRootLogin no\n")
        );
        assert_eq!(c[0].diff.as_ref().unwrap().before.as_deref(), Some(SSHD));
    }

    #[test]
    fn already_done() {
        let s = step(
            "path = \"/etc/ssh/sshd_config\"\nline = \"PermitRootLogin no\"\nregexp = \"^#?PermitRootLogin\"",
        );
        let done = "PasswordAuthentication no\nPermitRootLogin no\n";
        assert_eq!(
            s.check(&facts_for(done, "matches=2\n")).unwrap(),
            Check::Ok("/etc/ssh/sshd_config: line present (line 2)".into())
        );
    }

    #[test]
    fn fresh_host_missing_file() {
        let s = step("path = \"/etc/app.env\"\nline = \"A=1\"");
        let e = s.check(&Facts::new("kind=absent\n")).unwrap_err();
        assert_eq!(e.message, "/etc/app.env does not exist");
        assert_eq!(
            e.hint.as_deref(),
            Some("set create = true to create it with this line")
        );
        let s = step("path = \"/etc/app.env\"\nline = \"A=1\"\ncreate = true\nmode = \"0640\"");
        let Check::Change(c) = s.check(&Facts::new("kind=absent\n")).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "create /etc/app.env with the line (mode 0640)"
        );
        assert_eq!(
            c[0].actions,
            vec![Action::Upload {
                dest: "/etc/app.env".into(),
                content: Zeroizing::new(b"A=1\n".to_vec()),
                mode: Some(0o640),
                owner: None,
                group: None
            }]
        );
        let s = step("path = \"/etc/app.env\"\nregexp = \"^A=\"\nstate = \"absent\"");
        assert_eq!(
            s.check(&Facts::new("kind=absent\nmatches=\n")).unwrap(),
            Check::Ok("/etc/app.env does not exist: line absent".into())
        );
    }

    #[test]
    fn host_side_problems() {
        let s = step("path = \"/etc/app.env\"\nline = \"A=1\"\nregexp = \"(\"");
        let e = s
            .check(&facts_for("x\n", "matches=\nregexp=invalid\n"))
            .unwrap_err();
        assert!(
            e.message
                .contains("not a valid POSIX extended regular expression"),
            "{}",
            e.message
        );
        let e = s
            .check(&Facts::new(
                "kind=file\nattrs=644 root root 0 0 2000000\nsha256=00\n",
            ))
            .unwrap_err();
        assert_eq!(
            e.message,
            "/etc/app.env is larger than 1 MiB (2000000 bytes)"
        );
        let e = s
            .check(&Facts::new(format!(
                "kind=file\nattrs=644 root root 0 0 2\nsha256=00\ncontent={}\nmatches=\n",
                util::base64_encode(b"\xff\n")
            )))
            .unwrap_err();
        assert_eq!(e.message, "/etc/app.env is not a UTF-8 text file");
        let secret = step(&format!("path = \"/etc/app.env\"\nline = \"PW={SECRET}\""));
        let e = secret.check(&facts_for("A=1\n", "")).unwrap_err();
        assert!(
            e.message.contains("the line holds a secret"),
            "{}",
            e.message
        );
    }

    #[test]
    fn param_errors() {
        let e = build_err(build_with(build, "path = \"/etc/x\""));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (Some("line"), "`line` is required with state = \"present\"")
        );
        let e = build_err(build_with(build, "path = \"/etc/x\"\nstate = \"absent\""));
        assert_eq!(e.key.as_deref(), Some("line"));
        let e = build_err(build_with(
            build,
            "path = \"/etc/x\"\nline = \"a\"\nregex = \"^a\"",
        ));
        assert!(e.help.unwrap().starts_with("did you mean `regexp`?"));
        for (with, message) in [
            (
                "path = \"/etc/x\"\nline = \"a\\nb\"",
                "`line` must be a single line",
            ),
            (
                "path = \"/etc/x\"\nline = \"a\"\nmode = \"0600\"",
                "`mode` applies only to a file this step creates",
            ),
            (
                "path = \"/etc/x\"\nline = \"a\"\ncreate = \"yes\"",
                "`create`: invalid type: string \"yes\", expected a boolean",
            ),
        ] {
            assert_eq!(
                build_err(build_with(build, with)).message,
                message,
                "{with}"
            );
        }
        // A file created with a secret line and no `mode` is private.
        let s = step(&format!(
            "path = \"/etc/x\"\nline = \"PW={SECRET}\"\ncreate = true"
        ));
        let Check::Change(c) = s.check(&Facts::new("kind=absent\n")).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "create /etc/x with the line (mode 0600)");
    }

    #[test]
    fn unique_lines() {
        let is_swap = |l: &str| l.split_whitespace().next() == Some("/swapfile");
        let fstab = "UUID=1 / ext4 errors=remount-ro 0 1\n";
        assert_eq!(
            set_unique_line(fstab, is_swap, "/swapfile none swap sw 0 0", |_| false),
            Edit::Changed {
                content: format!("{fstab}/swapfile none swap sw 0 0\n"),
                summary: "append line 2".into()
            }
        );
        let two = "a\n/swapfile swap swap defaults 0 0\nb\n/swapfile none swap sw 0 0";
        assert_eq!(
            set_unique_line(two, is_swap, "/swapfile none swap sw 0 0", |_| false),
            Edit::Changed {
                content: "a\n/swapfile none swap sw 0 0\nb\n".into(),
                summary: "replace line 2, remove duplicate line 4".into()
            }
        );
        assert_eq!(
            set_unique_line(
                "a\n/swapfile none swap sw 0 0\n",
                is_swap,
                "/swapfile none swap sw 0 0",
                |_| false
            ),
            Edit::Unchanged("line present (line 2)".into())
        );
        // Inserted after the last line matching `after`; a missing newline is added.
        assert_eq!(
            set_unique_line(
                "127.0.0.1\tlocalhost\n::1 ip6-localhost",
                |l| l.starts_with("127.0.1.1"),
                "127.0.1.1\tweb-1",
                |l| l.starts_with("127.0.0.1")
            ),
            Edit::Changed {
                content: "127.0.0.1\tlocalhost\n127.0.1.1\tweb-1\n::1 ip6-localhost".into(),
                summary: "insert line 2".into()
            }
        );
        assert_eq!(
            set_unique_line("x", |_| false, "y", |l| l == "x"),
            Edit::Changed {
                content: "x\ny\n".into(),
                summary: "insert line 2".into()
            }
        );
    }

    #[test]
    fn blocks() {
        let (b, e) = ("# BEGIN provision", "# END provision");
        assert_eq!(
            set_block("a\n", b, e, Some("1\n2\n")).unwrap(),
            Edit::Changed {
                content: "a\n# BEGIN provision\n1\n2\n# END provision\n".into(),
                summary: "append block at line 2".into()
            }
        );
        let now = "a\n# BEGIN provision\n1\n# END provision\nz\n";
        assert_eq!(
            set_block(now, b, e, Some("1\n")).unwrap(),
            Edit::Unchanged("block up to date (lines 2-4)".into())
        );
        assert_eq!(
            set_block(now, b, e, Some("2\n")).unwrap(),
            Edit::Changed {
                content: "a\n# BEGIN provision\n2\n# END provision\nz\n".into(),
                summary: "update block at lines 2-4".into()
            }
        );
        assert_eq!(
            set_block(now, b, e, None).unwrap(),
            Edit::Changed {
                content: "a\nz\n".into(),
                summary: "remove block at lines 2-4".into()
            }
        );
        assert_eq!(
            set_block("a", b, e, None).unwrap(),
            Edit::Unchanged("block absent".into())
        );
        // A second block (a hand-made copy) goes; the first is kept in place.
        assert_eq!(
            set_block(&format!("{now}{b}\n1\n{e}\n"), b, e, Some("1\n")).unwrap(),
            Edit::Changed {
                content: now.into(),
                summary: "update block at lines 2-4".into()
            }
        );
        assert_eq!(
            set_block("a\n# BEGIN provision\nb\n", b, e, Some("x\n")).unwrap_err(),
            "line 2: `# BEGIN provision` without a following `# END provision`"
        );
        assert_eq!(
            set_block("", b, e, Some("x\n")).unwrap(),
            Edit::Changed {
                content: format!("{b}\nx\n{e}\n"),
                summary: "append block at line 1".into()
            }
        );
    }
}
