//! `swap`: a swap file of a given size, active now and at boot (/etc/fstab),
//! and optionally the kernel's swappiness, persisted in /etc/sysctl.d. A wrong
//! size is fixed by recreating the file; a file without a swap signature is
//! never overwritten (a mistyped `path` must not destroy data).

use super::file::{self, Kind, PathFacts};
use super::line::{self, Edit};
use super::system_files::{Built, system_files};
use super::util::{self, Num, Sections};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::step::{Action, Change, Check, Facts, StepError};
use provision_transport::shell::quote;
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &["size", "path", "swappiness"];

pub const DEFAULT_PATH: &str = "/swapfile";

const MIB: u64 = 1 << 20;

system_files! {
    fstab: "/etc/fstab",
    sysctl_conf: "/etc/sysctl.d/99-provision-swap.conf",
    proc_swappiness: "/proc/sys/vm/swappiness",
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    size: Option<String>,
    path: Option<String>,
    swappiness: Option<Num>,
}

#[derive(Debug)]
pub struct Swap {
    path: String,
    bytes: u64,
    swappiness: Option<u8>,
    files: Files,
}

pub fn build(with: &toml::Table, ctx: &BuildCtx<'_>) -> Built {
    build_with(with, ctx, Files::default())
}

inventory::submit! { crate::ctx::BuiltIn::host("swap", build) }

/// [`build`] with the system files somewhere else (tests).
pub fn build_with(with: &toml::Table, ctx: &BuildCtx<'_>, files: Files) -> Built {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    // Without `size`, the host's (or the inventory's) vars.swap_size.
    let from_vars = || match ctx.inventory.host_vars(ctx.host).get("swap_size") {
        Some(toml::Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let Some(size) = util::non_empty(p.size).or_else(from_vars) else {
        return Err(ParamError::new(Some("size"), "`size` is required")
            .help("e.g. size = \"2G\", or set swap_size = \"2G\" in the inventory's [vars] or the host's vars"));
    };
    let bytes = parse_size(&size).ok_or_else(|| {
        util::bad(
            "size",
            format!("`size` \"{size}\" is not a size"),
            "write a whole number with K, M, G or T (powers of 1024), e.g. size = \"2G\" or \"512M\"",
        )
    })?;
    if bytes < MIB || !bytes.is_multiple_of(MIB) {
        return Err(util::bad(
            "size",
            format!("`size` \"{size}\" is not a whole number of MiB (at least 1M)"),
            "e.g. size = \"512M\" or \"2G\"",
        ));
    }
    let path = util::abs_path("path", p.path.as_deref().unwrap_or(DEFAULT_PATH))?;
    if path == "/" || path.contains(|c: char| c.is_whitespace() || c == '\\') {
        return Err(util::bad(
            "path",
            format!("`path` \"{path}\" cannot be a swap file in /etc/fstab"),
            "use a file path without spaces or backslashes, e.g. path = \"/swapfile\"",
        ));
    }
    let swappiness = match p.swappiness.and_then(|n| n.0) {
        None => None,
        Some(n @ 0..=100) => Some(n as u8),
        Some(n) => {
            return Err(util::bad(
                "swappiness",
                format!("`swappiness` {n} is out of range"),
                "use 0 to 100 (the kernel's default is 60; 10 suits servers that should swap only under pressure)",
            ));
        }
    };
    Ok(Box::new(Typed(Swap {
        path,
        bytes,
        swappiness,
        files,
    })))
}

/// Parses "2G", "512M", "512MiB", "1048576" (bytes): powers of 1024, as
/// fallocate reads them. "MB" and "GB" are refused: fallocate reads them as
/// powers of 1000, and a size must mean one thing.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(end);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        "T" | "TIB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// "2G", "1536M": the largest unit that divides the size.
pub fn human_size(bytes: u64) -> String {
    for (unit, m) in [
        ("T", 1u64 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ] {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{unit}", bytes / m);
        }
    }
    format!("{bytes} bytes")
}

/// The fact a swap step needs: [`SwapFacts`]. Sections: `swap` (every active
/// swap area as `active=NAME BYTES`, the page size, the current swappiness),
/// `file` (the swap file's facts and the swap signature mkswap writes at the
/// end of the first page), `fstab`, and with a swappiness, `sysctl` (the
/// persisted setting).
pub struct SwapFact {
    pub path: String,
    pub files: Files,
    /// Whether the step sets a swappiness: only then is its file gathered.
    pub swappiness: bool,
}

/// What the gather command found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapFacts {
    /// Active swap areas: name and usable size (the file's size less its header page).
    pub active: Vec<(String, u64)>,
    pub swappiness: Option<u8>,
    pub file: PathFacts,
    /// "SWAPSPACE2" for a file mkswap has prepared.
    pub signature: Option<String>,
    pub fstab: PathFacts,
    pub sysctl: Option<PathFacts>,
}

impl Fact for SwapFact {
    type Value = SwapFacts;

    fn command(&self) -> String {
        let mut parts = vec![
            (
                "swap",
                format!(
                    "swapon --show=NAME,SIZE --bytes --noheadings --raw 2>/dev/null | sed 's/^/active=/'; \
                     echo \"pagesize=$(getconf PAGESIZE)\"; echo \"swappiness=$(cat {} 2>/dev/null)\"",
                    quote(&self.files.proc_swappiness)
                ),
            ),
            (
                "file",
                format!(
                    "{}; if [ -f \"$p\" ]; then printf 'signature=%s\\n' \"$(dd if=\"$p\" bs=1 skip=$(($(getconf PAGESIZE) - 10)) count=10 2>/dev/null | tr -dc 'A-Z0-9-')\"; fi",
                    file::gather_command(&self.path, None)
                ),
            ),
            (
                "fstab",
                file::gather_command(&self.files.fstab, Some(line::SIZE_LIMIT)),
            ),
        ];
        if self.swappiness {
            parts.push((
                "sysctl",
                file::gather_command(&self.files.sysctl_conf, Some(file::DIFF_LIMIT)),
            ));
        }
        util::sections(&parts)
    }

    fn parse(&self, facts: &Facts) -> Result<SwapFacts, StepError> {
        let s = Sections::parse(facts);
        let swap = s.get("swap")?;
        let mut active = Vec::new();
        for line in swap.stdout.lines() {
            if let Some(v) = line.strip_prefix("active=") {
                let (name, size) = v
                    .rsplit_once(' ')
                    .ok_or_else(|| util::bad_facts("swapon --show", &swap.stdout))?;
                let size = size
                    .parse()
                    .map_err(|_| util::bad_facts("swapon --show", &swap.stdout))?;
                active.push((name.to_string(), size));
            }
        }
        let kv = swap.kv();
        let file_facts = s.get("file")?;
        Ok(SwapFacts {
            active,
            swappiness: kv.get("swappiness").and_then(|v| v.trim().parse().ok()),
            file: file::parse(file_facts)?,
            signature: file_facts
                .kv()
                .get("signature")
                .filter(|v| !v.is_empty())
                .map(|v| v.to_string()),
            fstab: file::parse(s.get("fstab")?)?,
            sysctl: if self.swappiness {
                Some(file::parse(s.get("sysctl")?)?)
            } else {
                None
            },
        })
    }
}

/// Creates the swap file under a temporary name (an interrupted run leaves no
/// half-made swap file behind), prepares and activates it. fallocate is fast,
/// but some filesystems refuse it or give files swapon rejects (holes): then
/// the file is written with dd. With `replace`, the active file is turned off
/// and removed first (resizing), freeing its space before the new one is made.
pub fn create_command(path: &str, bytes: u64, replace: bool) -> String {
    let mib = bytes / MIB;
    let dd = |target: &str| format!("dd if=/dev/zero of={target} bs=1M count={mib} status=none");
    let mut s = format!("set -e; f={}; t=\"$f.provision-new\"; ", quote(path));
    if replace {
        s.push_str("if swapon --show=NAME --noheadings --raw | grep -qxF -- \"$f\"; then swapoff \"$f\"; fi; rm -f \"$f\"; ");
    }
    // chattr +C: btrfs needs swap files without copy-on-write (elsewhere it fails, harmlessly).
    s.push_str(&format!(
        "rm -f \"$t\"; umask 077; : > \"$t\"; chattr +C \"$t\" 2>/dev/null || true; \
         fallocate -l {bytes} \"$t\" 2>/dev/null || {}; chmod 600 \"$t\"; mkswap \"$t\"; mv -f \"$t\" \"$f\"; \
         if ! swapon \"$f\" 2>/dev/null; then {}; mkswap \"$f\"; swapon \"$f\"; fi",
        dd("\"$t\""),
        dd("\"$f\"")
    ));
    s
}

/// The fstab line of a swap file.
pub fn fstab_line(path: &str) -> String {
    format!("{path} none swap sw 0 0")
}

/// The persisted swappiness.
pub fn sysctl_content(swappiness: u8) -> String {
    format!(
        "# Written by provision (swap step): how willingly the kernel swaps (0-100).\nvm.swappiness = {swappiness}\n"
    )
}

impl Swap {
    fn file_changes(&self, f: &SwapFacts, ok: &mut Vec<String>) -> Result<Vec<Change>, StepError> {
        let path = &self.path;
        let size = human_size(self.bytes);
        if let Some(target) = &f.file.link {
            return Err(
                StepError::new(format!("{path} is a symbolic link to {target}")).hint(format!(
                    "set path = \"{target}\" (swap files must not be links)"
                )),
            );
        }
        let active = f.active.iter().any(|(n, _)| n == path);
        let attrs = match (&f.file.kind, &f.file.attrs) {
            (Kind::Absent, _) => {
                return Ok(vec![Change::new(
                    format!("create swap file {path} ({size}) and activate it"),
                    vec![Action::run(create_command(path, self.bytes, false))],
                )]);
            }
            (Kind::Directory, _) => {
                return Err(
                    StepError::new(format!("{path} is a directory")).hint(format!(
                        "set `path` to a file, e.g. path = \"{path}/swapfile\""
                    )),
                );
            }
            (Kind::Other(t), _) => {
                return Err(StepError::new(format!("{path} is a {t}, not a swap file"))
                    .hint("choose another `path`"));
            }
            (Kind::File, Some(a)) => a,
            (Kind::File, None) => {
                return Err(StepError::new(format!("no attributes gathered for {path}")));
            }
        };
        let is_swap = active
            || f.signature
                .as_deref()
                .is_some_and(|s| s.starts_with("SWAP"));
        if !is_swap {
            return Err(StepError::new(format!(
                "{path} exists but is not a swap file (no swap signature)"
            ))
            .hint(
                "remove it, or choose another `path`: the swap step never overwrites other files",
            ));
        }
        if attrs.size != self.bytes {
            let summary = if active {
                format!(
                    "resize swap file {path} from {} to {size} (swapoff, recreate, swapon)",
                    human_size(attrs.size)
                )
            } else {
                format!(
                    "recreate swap file {path} at {size} (was {}) and activate it",
                    human_size(attrs.size)
                )
            };
            return Ok(vec![Change::new(
                summary,
                vec![Action::run(create_command(path, self.bytes, true))],
            )]);
        }
        let mut changes = Vec::new();
        // swapon warns about (and others could read memory through) a readable swap file.
        if attrs.mode != 0o600 || attrs.uid != 0 {
            changes.push(Change::new(
                format!(
                    "make {path} private: mode 0600, owner root (was {:04o}, {})",
                    attrs.mode, attrs.owner
                ),
                vec![Action::run(format!(
                    "chmod 600 {p} && chown 0:0 {p}",
                    p = quote(path)
                ))],
            ));
        }
        if active {
            ok.push(format!("swap {path} {size} active"));
        } else {
            changes.push(Change::new(
                format!("activate swap file {path} ({size})"),
                vec![Action::run(format!("swapon {}", quote(path)))],
            ));
        }
        Ok(changes)
    }

    fn fstab_change(
        &self,
        f: &SwapFacts,
        ok: &mut Vec<String>,
    ) -> Result<Option<Change>, StepError> {
        let fstab = &self.files.fstab;
        let content = file::text(&f.fstab, fstab)?;
        let want = fstab_line(&self.path);
        let is_ours = |l: &str| l.split_whitespace().next() == Some(self.path.as_str());
        match line::set_unique_line(&content, is_ours, &want, |_| false) {
            Edit::Unchanged(_) => {
                ok.push(format!("in {fstab}"));
                Ok(None)
            }
            Edit::Changed { content, summary } => {
                Ok(
                    file::change(fstab, "path", content.as_bytes(), &f.fstab)?.map(|mut c| {
                        c.summary = format!("{fstab}: {summary} ({want})");
                        c
                    }),
                )
            }
        }
    }

    fn swappiness_change(
        &self,
        f: &SwapFacts,
        want: u8,
        ok: &mut Vec<String>,
    ) -> Result<Option<Change>, StepError> {
        let conf = &self.files.sysctl_conf;
        let content = sysctl_content(want);
        let now = f
            .sysctl
            .as_ref()
            .ok_or_else(|| StepError::new("the sysctl facts are missing"))?;
        let persisted = file::change(conf, "path", content.as_bytes(), now)?;
        let runtime = f.swappiness != Some(want);
        if persisted.is_none() && !runtime {
            ok.push(format!("swappiness {want}"));
            return Ok(None);
        }
        let mut actions = Vec::new();
        let mut diff = None;
        if let Some(c) = persisted {
            if let Some(dir) = conf
                .rsplit_once('/')
                .map(|(d, _)| d)
                .filter(|d| !d.is_empty())
            {
                actions.push(Action::run(format!("mkdir -p {}", quote(dir))));
            }
            actions.extend(c.actions);
            diff = c.diff;
        }
        if runtime {
            // Written to /proc directly: `sysctl` (procps) is missing on minimal systems.
            actions.push(Action::run(format!(
                "echo {want} > {}",
                quote(&self.files.proc_swappiness)
            )));
        }
        let was = f
            .swappiness
            .map_or("unknown".to_string(), |s| s.to_string());
        let summary = match (diff.is_some(), runtime) {
            (true, true) => {
                format!("set vm.swappiness to {want} (was {was}) and persist it in {conf}")
            }
            (true, false) => format!("persist vm.swappiness = {want} in {conf}"),
            _ => format!("set vm.swappiness to {want} (was {was})"),
        };
        let mut change = Change::new(summary, actions);
        change.diff = diff;
        Ok(Some(change))
    }
}

impl Decide for Swap {
    type Fact = SwapFact;

    fn fact(&self) -> SwapFact {
        SwapFact {
            path: self.path.clone(),
            files: self.files.clone(),
            swappiness: self.swappiness.is_some(),
        }
    }

    fn decide(&self, f: SwapFacts) -> Result<Check, StepError> {
        let mut ok = Vec::new();
        let mut changes = self.file_changes(&f, &mut ok)?;
        changes.extend(self.fstab_change(&f, &mut ok)?);
        if let Some(want) = self.swappiness {
            changes.extend(self.swappiness_change(&f, want, &mut ok)?);
        }
        if changes.is_empty() {
            Ok(Check::Ok(ok.join(", ")))
        } else {
            Ok(Check::Change(changes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::fixtures::{build_in, file_facts};
    use crate::steps::testing::{build as build_with_ctx, build_err};
    use provision_engine::step::{FileDiff, HostStep};

    const GIB2: u64 = 2 << 30;
    const FSTAB: &str = "# /etc/fstab: static file system information.\n#\n# <file system> <mount point>   <type>  <options>       <dump>  <pass>\n/dev/vda1 / ext4 rw,discard,errors=remount-ro 0 1\n";

    fn gather_command(path: &str, files: &Files, swappiness: bool) -> String {
        SwapFact {
            path: path.into(),
            files: files.clone(),
            swappiness,
        }
        .command()
    }

    fn parse(facts: &Facts, swappiness: bool) -> Result<SwapFacts, StepError> {
        SwapFact {
            path: DEFAULT_PATH.into(),
            files: Files::default(),
            swappiness,
        }
        .parse(facts)
    }

    fn step(with: &str) -> Box<dyn HostStep> {
        build_with_ctx(build, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// What the gather command prints on Debian 12 (captured shape).
    fn facts(active: &str, file: &str, fstab: &str, swappiness: u8, sysctl: Option<&str>) -> Facts {
        let mut s = format!(
            "--- swap\n{active}pagesize=4096\nswappiness={swappiness}\n--- file\n{file}--- fstab\n{}",
            file_facts(Some(fstab))
        );
        if let Some(c) = sysctl {
            s.push_str("--- sysctl\n");
            s.push_str(&if c.is_empty() {
                "kind=absent\n".to_string()
            } else {
                file_facts(Some(c))
            });
        }
        Facts::new(s)
    }

    const DONE_FILE: &str = "kind=file\nattrs=600 root root 0 0 2147483648\nsignature=SWAPSPACE2\n";
    const ACTIVE: &str = "active=/swapfile 2147479552\n";

    fn fstab_done() -> String {
        format!("{FSTAB}/swapfile none swap sw 0 0\n")
    }

    #[test]
    fn commands_are_exact() {
        let files = Files::default();
        assert_eq!(
            gather_command("/swapfile", &files, true),
            "echo '--- swap'; swapon --show=NAME,SIZE --bytes --noheadings --raw 2>/dev/null | sed 's/^/active=/'; \
             echo \"pagesize=$(getconf PAGESIZE)\"; echo \"swappiness=$(cat /proc/sys/vm/swappiness 2>/dev/null)\"; \
             echo '--- file'; ".to_string()
                + &file::gather_command("/swapfile", None)
                + "; if [ -f \"$p\" ]; then printf 'signature=%s\\n' \"$(dd if=\"$p\" bs=1 skip=$(($(getconf PAGESIZE) - 10)) count=10 2>/dev/null | tr -dc 'A-Z0-9-')\"; fi; \
             echo '--- fstab'; " + &file::gather_command("/etc/fstab", Some(1024 * 1024))
                + "; echo '--- sysctl'; " + &file::gather_command("/etc/sysctl.d/99-provision-swap.conf", Some(65536))
        );
        assert_eq!(
            create_command("/swapfile", GIB2, false),
            "set -e; f=/swapfile; t=\"$f.provision-new\"; rm -f \"$t\"; umask 077; : > \"$t\"; chattr +C \"$t\" 2>/dev/null || true; \
             fallocate -l 2147483648 \"$t\" 2>/dev/null || dd if=/dev/zero of=\"$t\" bs=1M count=2048 status=none; chmod 600 \"$t\"; mkswap \"$t\"; mv -f \"$t\" \"$f\"; \
             if ! swapon \"$f\" 2>/dev/null; then dd if=/dev/zero of=\"$f\" bs=1M count=2048 status=none; mkswap \"$f\"; swapon \"$f\"; fi"
        );
        assert_eq!(
            create_command("/var/swap file", 512 << 20, true),
            "set -e; f='/var/swap file'; t=\"$f.provision-new\"; \
             if swapon --show=NAME --noheadings --raw | grep -qxF -- \"$f\"; then swapoff \"$f\"; fi; rm -f \"$f\"; \
             rm -f \"$t\"; umask 077; : > \"$t\"; chattr +C \"$t\" 2>/dev/null || true; \
             fallocate -l 536870912 \"$t\" 2>/dev/null || dd if=/dev/zero of=\"$t\" bs=1M count=512 status=none; chmod 600 \"$t\"; mkswap \"$t\"; mv -f \"$t\" \"$f\"; \
             if ! swapon \"$f\" 2>/dev/null; then dd if=/dev/zero of=\"$f\" bs=1M count=512 status=none; mkswap \"$f\"; swapon \"$f\"; fi"
        );
    }

    #[test]
    fn parses_captured_output() {
        let f = parse(
            &facts(
                "active=/dev/vda3 1023406080\nactive=/swapfile 2147479552\n",
                DONE_FILE,
                FSTAB,
                60,
                None,
            ),
            false,
        )
        .unwrap();
        assert_eq!(
            f.active,
            vec![
                ("/dev/vda3".into(), 1023406080),
                ("/swapfile".into(), 2147479552)
            ]
        );
        assert_eq!(f.swappiness, Some(60));
        assert_eq!(f.signature.as_deref(), Some("SWAPSPACE2"));
        assert_eq!(f.file.attrs.unwrap().size, GIB2);
        assert_eq!(f.sysctl, None);
        assert!(parse(&Facts::new("--- swap\nactive=/swapfile\n"), false).is_err());
        assert!(parse(&Facts::new(""), false).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G"), Some(GIB2));
        assert_eq!(parse_size("2g"), Some(GIB2));
        assert_eq!(parse_size("2GiB"), Some(GIB2));
        assert_eq!(parse_size(" 512M "), Some(512 << 20));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        for bad in ["2GB", "2 MB", "G", "-1G", "1.5G", "", "99999999999T"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(human_size(GIB2), "2G");
        assert_eq!(human_size(1536 << 20), "1536M");
        assert_eq!(human_size(5), "5 bytes");
    }

    #[test]
    fn fresh_host() {
        let s = step("size = \"2G\"\nswappiness = \"10\"");
        let Check::Change(c) = s
            .check(&facts("", "kind=absent\n", FSTAB, 60, Some("")))
            .unwrap()
        else {
            panic!()
        };
        let summaries: Vec<&str> = c.iter().map(|c| c.summary.as_str()).collect();
        assert_eq!(
            summaries,
            vec![
                "create swap file /swapfile (2G) and activate it",
                "/etc/fstab: append line 5 (/swapfile none swap sw 0 0)",
                "set vm.swappiness to 10 (was 60) and persist it in /etc/sysctl.d/99-provision-swap.conf",
            ]
        );
        assert_eq!(
            c[0].actions,
            vec![Action::run(create_command("/swapfile", GIB2, false))]
        );
        // fstab keeps its mode and owner; the diff shows the added line.
        let Action::Upload {
            dest,
            content,
            mode,
            owner,
            ..
        } = &c[1].actions[0]
        else {
            panic!()
        };
        assert_eq!(
            (dest.as_str(), *mode, owner.as_deref()),
            ("/etc/fstab", Some(0o644), Some("root"))
        );
        assert_eq!(String::from_utf8(content.to_vec()).unwrap(), fstab_done());
        assert_eq!(c[1].diff.as_ref().unwrap().before.as_deref(), Some(FSTAB));
        assert_eq!(c[2].actions[0], Action::run("mkdir -p /etc/sysctl.d"));
        assert!(
            matches!(&c[2].actions[1], Action::Upload { dest, .. } if dest == "/etc/sysctl.d/99-provision-swap.conf")
        );
        assert_eq!(
            c[2].actions[2],
            Action::run("echo 10 > /proc/sys/vm/swappiness")
        );
        assert_eq!(
            c[2].diff,
            Some(FileDiff {
                path: "/etc/sysctl.d/99-provision-swap.conf".into(),
                before: None,
                after: sysctl_content(10)
            })
        );
    }

    #[test]
    fn already_done() {
        let s = step("size = \"2G\"\nswappiness = 10");
        assert_eq!(
            s.check(&facts(
                ACTIVE,
                DONE_FILE,
                &fstab_done(),
                10,
                Some(&sysctl_content(10))
            ))
            .unwrap(),
            Check::Ok("swap /swapfile 2G active, in /etc/fstab, swappiness 10".into())
        );
        // Without swappiness, nothing about it is gathered or changed.
        let s = step("size = \"2G\"");
        assert!(!s.gather().unwrap().contains("sysctl"));
        assert_eq!(
            s.check(&facts(ACTIVE, DONE_FILE, &fstab_done(), 60, None))
                .unwrap(),
            Check::Ok("swap /swapfile 2G active, in /etc/fstab".into())
        );
    }

    #[test]
    fn drifted() {
        // Resized in the inventory: recreated (swapoff first, as it is active).
        let s = step("size = \"4G\"");
        let Check::Change(c) = s
            .check(&facts(ACTIVE, DONE_FILE, &fstab_done(), 60, None))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].summary,
            "resize swap file /swapfile from 2G to 4G (swapoff, recreate, swapon)"
        );
        assert_eq!(
            c[0].actions,
            vec![Action::run(create_command("/swapfile", 4 << 30, true))]
        );
        // Inactive (after a reboot without the fstab line), readable by others,
        // and an old fstab entry of another form: all three repaired.
        let s = step("size = \"2G\"");
        let old = format!("{FSTAB}/swapfile swap swap defaults 0 0\n");
        let Check::Change(c) = s
            .check(&facts(
                "",
                &DONE_FILE.replace("attrs=600", "attrs=644"),
                &old,
                60,
                None,
            ))
            .unwrap()
        else {
            panic!()
        };
        let summaries: Vec<&str> = c.iter().map(|c| c.summary.as_str()).collect();
        assert_eq!(
            summaries,
            vec![
                "make /swapfile private: mode 0600, owner root (was 0644, root)",
                "activate swap file /swapfile (2G)",
                "/etc/fstab: replace line 5 (/swapfile none swap sw 0 0)",
            ]
        );
        assert_eq!(
            c[0].actions,
            vec![Action::run("chmod 600 /swapfile && chown 0:0 /swapfile")]
        );
        assert_eq!(c[1].actions, vec![Action::run("swapon /swapfile")]);
        // Swappiness changed at runtime only (someone ran sysctl): no upload.
        let s = step("size = \"2G\"\nswappiness = 10");
        let Check::Change(c) = s
            .check(&facts(
                ACTIVE,
                DONE_FILE,
                &fstab_done(),
                60,
                Some(&sysctl_content(10)),
            ))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(c[0].summary, "set vm.swappiness to 10 (was 60)");
        assert_eq!(
            c[0].actions,
            vec![Action::run("echo 10 > /proc/sys/vm/swappiness")]
        );
    }

    #[test]
    fn refuses_to_overwrite_other_files() {
        let s = step("size = \"2G\"\npath = \"/var/lib/data.img\"");
        let e = s
            .check(&facts(
                "",
                "kind=file\nattrs=644 root root 0 0 4096\nsignature=\n",
                FSTAB,
                60,
                None,
            ))
            .unwrap_err();
        assert_eq!(
            e.message,
            "/var/lib/data.img exists but is not a swap file (no swap signature)"
        );
        let e = s
            .check(&facts(
                "",
                "kind=directory\nattrs=755 root root 0 0 4096\n",
                FSTAB,
                60,
                None,
            ))
            .unwrap_err();
        assert_eq!(
            e.hint.as_deref(),
            Some("set `path` to a file, e.g. path = \"/var/lib/data.img/swapfile\"")
        );
        let e = s
            .check(&facts(
                "",
                "link=/data/swap\nkind=file\nattrs=600 root root 0 0 1\nsignature=SWAPSPACE2\n",
                FSTAB,
                60,
                None,
            ))
            .unwrap_err();
        assert_eq!(
            e.message,
            "/var/lib/data.img is a symbolic link to /data/swap"
        );
    }

    #[test]
    fn size_from_vars_and_param_errors() {
        let e = build_err(build_with_ctx(build, ""));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (Some("size"), "`size` is required")
        );
        // An empty rendered value (`| default('')`) counts as unset.
        let e = build_err(build_with_ctx(build, "size = \"\""));
        assert_eq!(e.message, "`size` is required");
        let e = build_err(build_with_ctx(build, "size = \"2GB\""));
        assert_eq!(e.message, "`size` \"2GB\" is not a size");
        let e = build_err(build_with_ctx(build, "size = \"1000K\""));
        assert_eq!(
            e.message,
            "`size` \"1000K\" is not a whole number of MiB (at least 1M)"
        );
        let e = build_err(build_with_ctx(build, "size = \"1G\"\nswappiness = 101"));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (Some("swappiness"), "`swappiness` 101 is out of range")
        );
        let e = build_err(build_with_ctx(
            build,
            "size = \"1G\"\nswappiness = \"high\"",
        ));
        assert_eq!(e.key.as_deref(), Some("swappiness"));
        let e = build_err(build_with_ctx(build, "size = \"1G\"\npath = \"swapfile\""));
        assert_eq!(e.help.as_deref(), Some("write path = \"/swapfile\""));
        let e = build_err(build_with_ctx(
            build,
            "size = \"1G\"\npath = \"/swap file\"",
        ));
        assert_eq!(
            e.message,
            "`path` \"/swap file\" cannot be a swap file in /etc/fstab"
        );
        let e = build_err(build_with_ctx(build, "size = \"1G\"\nswapiness = 3"));
        assert!(e.help.unwrap().starts_with("did you mean `swappiness`?"));
        // An empty swappiness is unset.
        assert!(
            !step("size = \"1G\"\nswappiness = \"\"")
                .gather()
                .unwrap()
                .contains("sysctl")
        );
    }

    #[test]
    fn size_defaults_to_the_swap_size_var() {
        let cluster = "name = \"t\"\n[vars]\nswap_size = \"1G\"\n[[hosts]]\nname = \"web-1\"\naddress = \"10.0.0.5\"\nroles = [\"worker\"]\nvars = { swap_size = \"3G\" }\n";
        let s = build_in(build, cluster, "web-1", "").unwrap();
        let Check::Change(c) = s
            .check(&facts("", "kind=absent\n", FSTAB, 60, None))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "create swap file /swapfile (3G) and activate it"
        );
    }
}
