//! `nfs_mount`: the storage host's NFS export mounted on a swarm node, now and
//! at boot (exactly one /etc/fstab line for the mount point), and proven
//! usable by writing and reading back a probe file after mounting.
//!
//! Facts never touch the mount point while something is mounted there: a hard
//! NFS mount whose server is gone would hang any stat of it, and the gather
//! command with it. A non-empty directory is never mounted over (whatever was
//! written there, by containers started before the share, would vanish).
//! Without a storage host in the inventory and without `server`, the step is
//! skipped: a single-node cluster has no share.

use super::apt;
use super::file::{self, Kind, PathFacts};
use super::line::{self, Edit};
use super::system_files::{Built, system_files};
use super::systemd;
use super::util::{self, Sections};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::inventory::Role;
use provision_engine::step::{Action, Change, Check, Facts, HostStep, StepError};
use provision_transport::shell::quote;
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &["server", "export", "mount_point", "options"];

pub const DEFAULT_EXPORT: &str = "/srv/share";
pub const DEFAULT_MOUNT_POINT: &str = "/mnt/share";

/// Client defaults for Debian 12 and Ubuntu 22.04/24.04 talking to a Debian
/// server: `nfsvers=4.2` (one TCP port, 2049, no rpcbind or statd; fails
/// clearly instead of falling back to v3 and its locking daemons), `hard`
/// (I/O waits for a rebooting server instead of returning errors that corrupt
/// database files), `noatime` (no write per read), `_netdev` (mounted after the
/// network at boot).
pub const DEFAULT_OPTIONS: &str = "rw,hard,noatime,nfsvers=4.2,_netdev";

system_files! {
    fstab: "/etc/fstab",
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    server: Option<String>,
    export: Option<String>,
    mount_point: Option<String>,
    options: Option<String>,
}

pub struct NfsMount {
    server: String,
    /// The inventory host serving the share, for messages.
    server_host: Option<String>,
    export: String,
    mount_point: String,
    options: String,
    host: String,
    apt: Box<dyn HostStep>,
    files: Files,
}

pub fn build(with: &toml::Table, ctx: &BuildCtx<'_>) -> Built {
    build_with(with, ctx, Files::default())
}

inventory::submit! { crate::ctx::BuiltIn::host("nfs_mount", build) }

/// [`build`] with the system files somewhere else (tests).
pub fn build_with(with: &toml::Table, ctx: &BuildCtx<'_>, files: Files) -> Built {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let (server, server_host) = match util::non_empty(p.server) {
        Some(s) => {
            let ok = s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-'));
            if !ok {
                return Err(util::bad(
                    "server",
                    format!("`server` \"{s}\" is not an address or host name"),
                    "e.g. server = \"10.0.0.10\"",
                ));
            }
            let host = ctx
                .inventory
                .hosts
                .iter()
                .find(|h| {
                    h.name == s
                        || h.address == s
                        || h.private_ip.is_some_and(|ip| ip.to_string() == s)
                })
                .map(|h| h.name.clone());
            (s, host)
        }
        None => match storage_server(ctx)? {
            Some(s) => s,
            // A cluster without shared storage (a single node): nothing to mount.
            None => return Ok(Box::new(NoStorage)),
        },
    };
    let plain = |key: &str, v: String| -> Result<String, ParamError> {
        let v = util::abs_path(key, &v)?;
        if (v == "/" && key == "mount_point")
            || v.contains(|c: char| c.is_whitespace() || c == '\\' || c == '#')
        {
            return Err(util::bad(
                key,
                format!("`{key}` \"{v}\" cannot go into /etc/fstab"),
                format!(
                    "use a directory without spaces, `#` or backslashes, e.g. {key} = \"/mnt/share\""
                ),
            ));
        }
        Ok(v)
    };
    let export = plain(
        "export",
        util::non_empty(p.export).unwrap_or_else(|| DEFAULT_EXPORT.into()),
    )?;
    let mount_point = plain(
        "mount_point",
        util::non_empty(p.mount_point).unwrap_or_else(|| DEFAULT_MOUNT_POINT.into()),
    )?;
    let options = util::non_empty(p.options).unwrap_or_else(|| DEFAULT_OPTIONS.into());
    if !options.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b',' | b'=' | b':' | b'/' | b'.' | b'-')
    }) {
        return Err(util::bad(
            "options",
            format!("`options` \"{options}\" is not a comma-separated list of mount options"),
            format!("e.g. options = \"{DEFAULT_OPTIONS}\""),
        ));
    }
    let mut t = toml::Table::new();
    t.insert(
        "packages".into(),
        toml::Value::Array(vec!["nfs-common".into()]),
    );
    Ok(Box::new(Typed(NfsMount {
        server,
        server_host,
        export,
        mount_point,
        options,
        host: ctx.host.name.clone(),
        apt: apt::build(&t, ctx)?,
        files,
    })))
}

/// The private address of the inventory's one storage host; None without one.
fn storage_server(ctx: &BuildCtx<'_>) -> Result<Option<(String, Option<String>)>, ParamError> {
    let storage: Vec<_> = ctx
        .inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Storage))
        .collect();
    match storage.as_slice() {
        [] => Ok(None),
        [h] => match h.private_ip {
            Some(ip) => Ok(Some((ip.to_string(), Some(h.name.clone())))),
            None => Err(util::bad(
                "server",
                format!("the storage host {} has no private_ip", h.name),
                format!(
                    "set private_ip for {} in the inventory (the share is served on the private network), or set `server`",
                    h.name
                ),
            )),
        },
        several => {
            let names: Vec<&str> = several.iter().map(|h| h.name.as_str()).collect();
            Err(util::bad(
                "server",
                format!(
                    "the inventory has {} storage hosts ({})",
                    names.len(),
                    names.join(", ")
                ),
                "set `server` to the address of the one serving this share",
            ))
        }
    }
}

/// The step where the inventory has no storage host and `server` is not set.
struct NoStorage;

impl HostStep for NoStorage {
    fn gather(&self) -> Option<String> {
        None
    }

    fn check(&self, _: &Facts) -> Result<Check, StepError> {
        Ok(Check::Skip(
            "the inventory has no storage host: no NFS share to mount (set `server` to mount another server's)".into(),
        ))
    }
}

/// `SERVER:EXPORT`, as mount and findmnt write it (IPv6 in brackets).
pub fn source(server: &str, export: &str) -> String {
    format!("{}:{export}", provision_transport::addr::bracketed(server))
}

/// The fstab line.
pub fn fstab_line(source: &str, mount_point: &str, options: &str) -> String {
    format!("{source} {mount_point} nfs {options} 0 0")
}

/// The fact an NFS mount needs: [`NfsMountFacts`]. Sections: `apt` (nfs-common, the apt
/// step's own command), `mount` (`mounted=SOURCE FSTYPE OPTIONS` from the mount table, read
/// without touching the mount point; only when nothing is mounted, the mount point's facts and
/// its first entries), `fstab`.
pub struct MountFact {
    pub apt_gather: String,
    pub mount_point: String,
    pub files: Files,
}

/// The apt step's output (it decides over it itself) and the mount's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsMountFacts {
    pub apt: Facts,
    pub mount: MountFacts,
}

impl Fact for MountFact {
    type Value = NfsMountFacts;

    fn command(&self) -> String {
        let mp = quote(&self.mount_point);
        util::sections(&[
            ("apt", self.apt_gather.clone()),
            (
                "mount",
                format!(
                    "m=$(findmnt -rn -o TARGET,SOURCE,FSTYPE,OPTIONS | awk -v m={mp} '$1 == m {{ print $2, $3, $4 }}' | tail -n 1); \
                     if [ -n \"$m\" ]; then echo \"mounted=$m\"; else {}; if [ -d \"$p\" ]; then echo \"entries=$(ls -A \"$p\" | head -n 3 | tr '\\n' ' ')\"; fi; fi",
                    file::gather_command(&self.mount_point, None)
                ),
            ),
            (
                "fstab",
                file::gather_command(&self.files.fstab, Some(line::SIZE_LIMIT)),
            ),
        ])
    }

    fn parse(&self, facts: &Facts) -> Result<NfsMountFacts, StepError> {
        let s = Sections::parse(facts);
        Ok(NfsMountFacts {
            mount: parse_mount(s.get("mount")?, s.get("fstab")?)?,
            apt: s.get("apt")?.clone(),
        })
    }
}

/// What is mounted at the mount point now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub source: String,
    pub fstype: String,
    pub options: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountFacts {
    pub mounted: Option<Mounted>,
    /// The mount point's facts when nothing is mounted there.
    pub dir: Option<PathFacts>,
    /// Up to three names in the unmounted mount point.
    pub entries: Vec<String>,
    pub fstab: PathFacts,
}

pub fn parse_mount(facts: &Facts, fstab: &Facts) -> Result<MountFacts, StepError> {
    let kv = facts.kv();
    let mounted = match kv.get("mounted") {
        Some(m) => {
            let mut w = m.split(' ');
            match (w.next(), w.next(), w.next()) {
                (Some(source), Some(fstype), options) => Some(Mounted {
                    source: source.into(),
                    fstype: fstype.into(),
                    options: options.unwrap_or("").into(),
                }),
                _ => return Err(util::bad_facts("findmnt", &facts.stdout)),
            }
        }
        None => None,
    };
    Ok(MountFacts {
        dir: if mounted.is_none() {
            Some(file::parse(facts)?)
        } else {
            None
        },
        mounted,
        entries: kv
            .get("entries")
            .map(|e| e.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        fstab: file::parse(fstab)?,
    })
}

impl NfsMount {
    fn source(&self) -> String {
        source(&self.server, &self.export)
    }

    /// Mounts from the fstab entry and proves the share is writable: a mount
    /// that works but maps root to nobody would only fail later, in a database.
    pub fn mount_command(&self, remount: bool) -> String {
        let src = self.source();
        let mp = &self.mount_point;
        let question = match &self.server_host {
            Some(h) => format!(
                "is nfs_server applied on {h} and is {} reachable from this host (TCP 2049)?",
                self.server
            ),
            None => format!(
                "does {} export {} to this host, and is it reachable (TCP 2049)?",
                self.server, self.export
            ),
        };
        let on = self.server_host.as_deref().unwrap_or(&self.server);
        let probe = format!("{mp}/.provision-probe-{}", self.host);
        let mut s = String::new();
        if remount {
            s.push_str(&format!(
                "umount {} || {{ echo {} >&2; exit 1; }}; ",
                quote(mp),
                quote(&format!("cannot unmount {mp}: stop what uses it (docker services with volumes there), then run again"))
            ));
        }
        s.push_str(&format!(
            "mount {} || {{ echo {} >&2; exit 1; }}; p={}; echo {} > \"$p\" && [ \"$(cat \"$p\")\" = {} ] && rm -f \"$p\" || {{ echo {} >&2; exit 1; }}",
            quote(mp),
            quote(&format!("cannot mount {src} on {mp}: {question}")),
            quote(&probe),
            quote(&self.host),
            quote(&self.host),
            quote(&format!(
                "{src} is mounted on {mp}, but a file cannot be written and read back there: check the export's options (rw, no_root_squash) and its directory's mode on {on}"
            )),
        ));
        s
    }
}

impl Decide for NfsMount {
    type Fact = MountFact;

    /// The server's steps (the export) come first, when it is an inventory host.
    fn waits_for_hosts(&self) -> Vec<String> {
        self.server_host.iter().cloned().collect()
    }

    fn fact(&self) -> MountFact {
        MountFact {
            apt_gather: self.apt.gather().unwrap_or_default(),
            mount_point: self.mount_point.clone(),
            files: self.files.clone(),
        }
    }

    fn decide(&self, now: NfsMountFacts) -> Result<Check, StepError> {
        let f = now.mount;
        let mp = &self.mount_point;
        let src = self.source();
        let mut changes = Vec::new();
        if let Check::Change(c) = self.apt.check(&now.apt)? {
            changes.extend(c);
        }
        if let Some(dir) = &f.dir {
            match &dir.kind {
                Kind::Absent => changes.push(Change::new(
                    format!("create mount point {mp}"),
                    vec![Action::run(format!("mkdir -p {}", quote(mp)))],
                )),
                Kind::Directory if !f.entries.is_empty() => {
                    return Err(StepError::new(format!(
                        "{}: {mp} is not empty ({}): mounting the share there would hide its files",
                        self.host,
                        f.entries.join(", ")
                    ))
                    .hint(format!(
                        "move them onto the share (or away) and empty {mp}, then run again"
                    )));
                }
                Kind::Directory => {}
                Kind::File => {
                    return Err(StepError::new(format!(
                        "{}: {mp} is a regular file, not a directory",
                        self.host
                    ))
                    .hint("remove it, or choose another `mount_point`"));
                }
                Kind::Other(t) => {
                    return Err(StepError::new(format!(
                        "{}: {mp} is a {t}, not a directory",
                        self.host
                    ))
                    .hint("choose another `mount_point`"));
                }
            }
        }
        let fstab = &self.files.fstab;
        let want = fstab_line(&src, mp, &self.options);
        let is_ours = |l: &str| {
            !l.trim_start().starts_with('#') && l.split_whitespace().nth(1) == Some(mp.as_str())
        };
        let right_source = f
            .mounted
            .as_ref()
            .is_some_and(|m| m.source == src && matches!(m.fstype.as_str(), "nfs" | "nfs4"));
        if let Edit::Changed { content, summary } =
            line::set_unique_line(&file::text(&f.fstab, fstab)?, is_ours, &want, |_| false)
            && let Some(mut c) = file::change(fstab, "path", content.as_bytes(), &f.fstab)?
        {
            c.summary = format!("{fstab}: {summary} ({want})");
            if right_source {
                c.summary.push_str(": new options apply at the next mount");
            }
            // systemd generates mount units from fstab: keep them current.
            c.actions.push(Action::run(systemd::DAEMON_RELOAD));
            changes.push(c);
        }
        match &f.mounted {
            Some(_) if right_source => {}
            Some(m) => changes.push(Change::new(
                format!("remount {mp} from {src} (was {} {})", m.source, m.fstype),
                vec![Action::run(self.mount_command(true))],
            )),
            None => changes.push(Change::new(
                format!("mount {src} on {mp} and check it is writable"),
                vec![Action::run(self.mount_command(false))],
            )),
        }
        if changes.is_empty() {
            Ok(Check::Ok(format!("{src} mounted on {mp}")))
        } else {
            Ok(Check::Change(changes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::fixtures::{CLUSTER, LISTS, build_in, summaries};
    use crate::steps::testing::{build as build_with_ctx, build_err};

    fn cluster_step_in(cluster: &str, with: &str) -> Built {
        build_in(build, cluster, "worker-1", with)
    }

    fn step(with: &str) -> Box<dyn HostStep> {
        cluster_step_in(CLUSTER, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    const FSTAB: &str = "# /etc/fstab: static file system information.\n/dev/vda1 / ext4 rw,discard,errors=remount-ro 0 1\n";
    const LINE: &str =
        "10.0.0.10:/srv/share /mnt/share nfs rw,hard,noatime,nfsvers=4.2,_netdev 0 0";
    const INSTALLED: &str = "pkg=ii  nfs-common amd64 1:2.6.2-4+deb12u1\n";
    /// findmnt on Debian 12 with the share mounted (via the gather's awk).
    const MOUNTED: &str = "mounted=10.0.0.10:/srv/share nfs4 rw,noatime,vers=4.2,rsize=524288,wsize=524288,namlen=255,hard,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=10.0.0.21,local_lock=none,addr=10.0.0.10\n";

    fn gather_command(apt_gather: &str, mount_point: &str, files: &Files) -> String {
        MountFact {
            apt_gather: apt_gather.into(),
            mount_point: mount_point.into(),
            files: files.clone(),
        }
        .command()
    }

    fn facts(apt: &str, mount: &str, fstab: &str) -> Facts {
        Facts::new(format!(
            "--- apt\n{apt}{LISTS}--- mount\n{mount}--- fstab\nkind=file\nattrs=644 root root 0 0 {}\nsha256={}\ncontent={}\n",
            fstab.len(),
            util::sha256_hex(fstab.as_bytes()),
            util::base64_encode(fstab.as_bytes())
        ))
    }

    #[test]
    fn commands_are_exact() {
        assert_eq!(
            gather_command("APT", "/mnt/share", &Files::default()),
            format!(
                "echo '--- apt'; APT; echo '--- mount'; m=$(findmnt -rn -o TARGET,SOURCE,FSTYPE,OPTIONS | awk -v m=/mnt/share '$1 == m {{ print $2, $3, $4 }}' | tail -n 1); \
                 if [ -n \"$m\" ]; then echo \"mounted=$m\"; else {}; if [ -d \"$p\" ]; then echo \"entries=$(ls -A \"$p\" | head -n 3 | tr '\\n' ' ')\"; fi; fi; \
                 echo '--- fstab'; {}",
                file::gather_command("/mnt/share", None),
                file::gather_command("/etc/fstab", Some(1024 * 1024))
            )
        );
        let s = NfsMount {
            server: "10.0.0.10".into(),
            server_host: Some("storage-1".into()),
            export: "/srv/share".into(),
            mount_point: "/mnt/share".into(),
            options: DEFAULT_OPTIONS.into(),
            host: "worker-1".into(),
            apt: build_with_ctx(apt::build, "packages = \"nfs-common\"").unwrap(),
            files: Files::default(),
        };
        assert_eq!(
            s.mount_command(false),
            "mount /mnt/share || { echo 'cannot mount 10.0.0.10:/srv/share on /mnt/share: is nfs_server applied on storage-1 and is 10.0.0.10 reachable from this host (TCP 2049)?' >&2; exit 1; }; \
             p=/mnt/share/.provision-probe-worker-1; echo worker-1 > \"$p\" && [ \"$(cat \"$p\")\" = worker-1 ] && rm -f \"$p\" || \
             { echo '10.0.0.10:/srv/share is mounted on /mnt/share, but a file cannot be written and read back there: check the export'\\''s options (rw, no_root_squash) and its directory'\\''s mode on storage-1' >&2; exit 1; }"
        );
        assert!(s.mount_command(true).starts_with(
            "umount /mnt/share || { echo 'cannot unmount /mnt/share: stop what uses it (docker services with volumes there), then run again' >&2; exit 1; }; mount /mnt/share || "
        ));
        assert_eq!(source("fd00::10", "/srv/share"), "[fd00::10]:/srv/share");
    }

    #[test]
    fn parses_captured_output() {
        let f = parse_mount(&Facts::new(MOUNTED), &Facts::new("kind=absent\n")).unwrap();
        let m = f.mounted.unwrap();
        assert_eq!(
            (m.source.as_str(), m.fstype.as_str()),
            ("10.0.0.10:/srv/share", "nfs4")
        );
        assert!(m.options.starts_with("rw,noatime,vers=4.2"));
        assert_eq!(f.dir, None);
        let f = parse_mount(
            &Facts::new(
                "kind=directory\nattrs=755 root root 0 0 4096\nentries=lost+found mysql \n",
            ),
            &Facts::new("kind=absent\n"),
        )
        .unwrap();
        assert_eq!(f.entries, vec!["lost+found", "mysql"]);
        assert!(parse_mount(&Facts::new("mounted=x\n"), &Facts::new("kind=absent\n")).is_err());
    }

    #[test]
    fn fresh_host() {
        let s = step("");
        let c = s
            .check(&facts(
                "candidate=nfs-common 1:2.6.2-4+deb12u1\n",
                "kind=absent\n",
                FSTAB,
            ))
            .unwrap();
        assert_eq!(
            summaries(&c),
            vec![
                "install nfs-common",
                "create mount point /mnt/share",
                &format!("/etc/fstab: append line 3 ({LINE})"),
                "mount 10.0.0.10:/srv/share on /mnt/share and check it is writable",
            ]
        );
        let Check::Change(c) = c else { panic!() };
        assert_eq!(c[1].actions, vec![Action::run("mkdir -p /mnt/share")]);
        let Action::Upload { content, .. } = &c[2].actions[0] else {
            panic!()
        };
        assert_eq!(
            String::from_utf8(content.to_vec()).unwrap(),
            format!("{FSTAB}{LINE}\n")
        );
        assert_eq!(
            c[2].actions[1],
            Action::run("if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi")
        );
        assert!(
            c[3].actions[0]
                .describe()
                .starts_with("mount /mnt/share || ")
        );
    }

    /// The swarm's package steps share the run's memory: a host whose lists the docker step
    /// refreshed does not refresh them again for nfs-common.
    #[test]
    fn lists_refreshed_earlier_in_the_run_are_not_refreshed_again() {
        let s = step("");
        let f = facts("", MOUNTED, &format!("{FSTAB}{LINE}\n"));
        let Check::Change(c) = s.check(&f).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].summary,
            "install nfs-common (after apt-get update: nfs-common is not in the package lists)"
        );
        let f = Facts {
            marks: [apt::LISTS_UPDATED.to_string()].into(),
            ..f
        };
        let Check::Change(c) = s.check(&f).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "install nfs-common");
        assert!(c[0].marks.is_empty());
    }

    #[test]
    fn already_done() {
        let s = step("");
        assert_eq!(
            s.check(&facts(INSTALLED, MOUNTED, &format!("{FSTAB}{LINE}\n")))
                .unwrap(),
            Check::Ok("10.0.0.10:/srv/share mounted on /mnt/share".into())
        );
    }

    #[test]
    fn drifted() {
        // Unmounted (the server was down at boot): mounted again.
        let s = step("");
        let c = s
            .check(&facts(
                INSTALLED,
                "kind=directory\nattrs=755 root root 0 0 4096\n",
                &format!("{FSTAB}{LINE}\n"),
            ))
            .unwrap();
        assert_eq!(
            summaries(&c),
            vec!["mount 10.0.0.10:/srv/share on /mnt/share and check it is writable"]
        );
        // The storage server moved: fstab line replaced, duplicate dropped, remounted.
        let old = format!(
            "{FSTAB}10.0.0.99:/srv/share /mnt/share nfs4 defaults 0 0\n10.0.0.99:/srv/share /mnt/share nfs defaults 0 0\n"
        );
        let c = s
            .check(&facts(
                INSTALLED,
                &MOUNTED.replace("10.0.0.10:", "10.0.0.99:"),
                &old,
            ))
            .unwrap();
        assert_eq!(
            summaries(&c),
            vec![
                &format!("/etc/fstab: replace line 3, remove duplicate line 4 ({LINE})"),
                "remount /mnt/share from 10.0.0.10:/srv/share (was 10.0.0.99:/srv/share nfs4)",
            ]
        );
        // Only the options changed: they apply at the next mount.
        let s = step("options = \"rw,hard,noatime,nfsvers=4.1,_netdev\"");
        let c = s
            .check(&facts(INSTALLED, MOUNTED, &format!("{FSTAB}{LINE}\n")))
            .unwrap();
        assert_eq!(
            summaries(&c),
            vec![&*format!(
                "/etc/fstab: replace line 3 ({}): new options apply at the next mount",
                LINE.replace("4.2", "4.1")
            )]
        );
    }

    #[test]
    fn refuses_to_hide_files() {
        let s = step("");
        let e = s
            .check(&facts(
                INSTALLED,
                "kind=directory\nattrs=755 root root 0 0 4096\nentries=appwrite-uploads \n",
                FSTAB,
            ))
            .unwrap_err();
        assert_eq!(
            e.message,
            "worker-1: /mnt/share is not empty (appwrite-uploads): mounting the share there would hide its files"
        );
        let e = s
            .check(&facts(
                INSTALLED,
                "kind=file\nattrs=644 root root 0 0 1\n",
                FSTAB,
            ))
            .unwrap_err();
        assert_eq!(
            e.message,
            "worker-1: /mnt/share is a regular file, not a directory"
        );
    }

    #[test]
    fn server_from_the_inventory_and_param_errors() {
        // No storage host (a single-node cluster): skipped, not an error.
        let s = build_with_ctx(build, "").unwrap();
        assert_eq!(s.gather(), None);
        assert_eq!(
            s.check(&Facts::default()).unwrap(),
            Check::Skip("the inventory has no storage host: no NFS share to mount (set `server` to mount another server's)".into())
        );
        let two = format!(
            "{CLUSTER}[[hosts]]\nname = \"storage-2\"\naddress = \"203.0.113.12\"\nprivate_ip = \"10.0.0.12\"\nroles = [\"storage\"]\n"
        );
        let e = build_err(cluster_step_in(&two, ""));
        assert_eq!(
            e.message,
            "the inventory has 2 storage hosts (storage-1, storage-2)"
        );
        // Naming the server picks it, and messages name its host.
        let s = cluster_step_in(&two, "server = \"10.0.0.12\"").unwrap();
        let Check::Change(c) = s
            .check(&facts(
                INSTALLED,
                "kind=directory\nattrs=755 root root 0 0 4096\n",
                FSTAB,
            ))
            .unwrap()
        else {
            panic!()
        };
        assert!(
            c[1].actions[0]
                .describe()
                .contains("is nfs_server applied on storage-2 and is 10.0.0.12 reachable")
        );
        let no_ip = CLUSTER.replace("private_ip = \"10.0.0.10\"\n", "");
        let e = build_err(cluster_step_in(&no_ip, ""));
        assert_eq!(e.message, "the storage host storage-1 has no private_ip");
        let e = build_err(build_with_ctx(build, "server = \"nfs.example.com:/x\""));
        assert_eq!(e.key.as_deref(), Some("server"));
        let e = build_err(build_with_ctx(
            build,
            "server = \"10.0.0.10\"\nmount_point = \"/\"",
        ));
        assert_eq!(e.message, "`mount_point` \"/\" cannot go into /etc/fstab");
        let e = build_err(build_with_ctx(
            build,
            "server = \"10.0.0.10\"\nmount_point = \"mnt\"",
        ));
        assert_eq!(e.help.as_deref(), Some("write mount_point = \"/mnt\""));
        let e = build_err(build_with_ctx(
            build,
            "server = \"10.0.0.10\"\noptions = \"rw hard\"",
        ));
        assert_eq!(e.key.as_deref(), Some("options"));
        let e = build_err(build_with_ctx(
            build,
            "server = \"10.0.0.10\"\nmountpoint = \"/x\"",
        ));
        assert!(e.help.unwrap().starts_with("did you mean `mount_point`?"));
        // An explicit server outside the inventory: messages name the address.
        let s = build_with_ctx(build, "server = \"192.0.2.7\"\nexport = \"/export/\"").unwrap();
        let Check::Change(c) = s
            .check(&facts(
                INSTALLED,
                "kind=directory\nattrs=755 root root 0 0 4096\n",
                FSTAB,
            ))
            .unwrap()
        else {
            panic!()
        };
        assert!(c[1].actions[0].describe().contains("cannot mount 192.0.2.7:/export on /mnt/share: does 192.0.2.7 export /export to this host"));
        // A pipelined run mounts only after the serving inventory host's earlier steps (its
        // export); a server outside the inventory is waited for by no step.
        assert!(s.waits_for_hosts().is_empty());
        assert_eq!(step("").waits_for_hosts(), ["storage-1"]);
        let s = cluster_step_in(&two, "server = \"10.0.0.12\"").unwrap();
        assert_eq!(s.waits_for_hosts(), ["storage-2"]);
    }
}
