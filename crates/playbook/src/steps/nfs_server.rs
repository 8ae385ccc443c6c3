//! `nfs_server`: the NFS server of the `storage` host: nfs-kernel-server
//! installed and running, the exported directories with their owner and mode,
//! and a marked block of /etc/exports (lines outside it are left alone) naming
//! every swarm node as a client. Exports are reloaded (`exportfs -ra`) only when
//! the file changed or the kernel's table (/var/lib/nfs/etab) lacks an entry.

use super::apt;
use super::directory::{self, NEW_DIR_MODE};
use super::file::{self, Kind, PathFacts};
use super::line::{self, Edit};
use super::system_files::{Built, system_files};
use super::systemd;
use super::util::{self, List, Mode, Sections};
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::fact::{Decide, Fact, Typed};
use provision_engine::inventory::Role;
use provision_engine::step::{Action, Change, Check, Facts, HostStep, StepError};
use provision_transport::shell::quote;
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &["exports", "options", "clients"];
const EXPORT_KEYS: &[&str] = &["path", "owner", "group", "mode", "options", "clients"];

pub const DEFAULT_EXPORT: &str = "/srv/share";

/// Databases in the swarm write their volumes as root: without no_root_squash
/// the server would map them to nobody. sync: a write is on disk before it is
/// acknowledged. no_subtree_check: the default since nfs-utils 1.1, stated to
/// silence exportfs' warning.
pub const DEFAULT_OPTIONS: &str = "rw,sync,no_subtree_check,no_root_squash";

pub const BEGIN: &str = "# BEGIN provision";
pub const END: &str = "# END provision";

const SERVICE: &str = "nfs-server.service";

system_files! {
    exports: "/etc/exports",
    /// What the kernel exports now, as exportfs last wrote it.
    etab: "/var/lib/nfs/etab",
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    exports: Option<Vec<toml::Table>>,
    options: Option<String>,
    clients: Option<List>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    path: String,
    owner: Option<String>,
    group: Option<String>,
    mode: Option<Mode>,
    options: Option<String>,
    clients: Option<List>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub path: String,
    pub owner: String,
    pub group: String,
    /// None: 0755 when created, an existing directory keeps its mode.
    pub mode: Option<u32>,
    pub options: String,
    pub clients: Vec<String>,
}

impl Export {
    /// The /etc/exports line.
    pub fn line(&self) -> String {
        let mut s = self.path.clone();
        for c in &self.clients {
            s.push_str(&format!(" {c}({})", self.options));
        }
        s
    }
}

pub struct NfsServer {
    exports: Vec<Export>,
    apt: Box<dyn HostStep>,
    files: Files,
}

pub fn build(with: &toml::Table, ctx: &BuildCtx<'_>) -> Built {
    build_with(with, ctx, Files::default())
}

inventory::submit! { crate::ctx::BuiltIn::host("nfs_server", build) }

/// [`build`] with the system files somewhere else (tests).
pub fn build_with(with: &toml::Table, ctx: &BuildCtx<'_>, files: Files) -> Built {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let options = match util::non_empty(p.options) {
        Some(o) => check_options("options", o)?,
        None => DEFAULT_OPTIONS.to_string(),
    };
    let clients = match p.clients {
        Some(List(c)) if !c.is_empty() => check_clients("clients", c)?,
        Some(_) => {
            return Err(util::bad(
                "clients",
                "`clients` is empty",
                "list the addresses allowed to mount, e.g. clients = [\"10.0.0.0/24\"], or remove it to allow every swarm node",
            ));
        }
        None => swarm_clients(ctx)?,
    };
    let tables = p.exports.unwrap_or_else(|| {
        let mut t = toml::Table::new();
        t.insert("path".into(), DEFAULT_EXPORT.into());
        vec![t]
    });
    if tables.is_empty() {
        return Err(util::bad(
            "exports",
            "`exports` is empty",
            "e.g. exports = [{ path = \"/srv/share\" }], or remove it for that default",
        ));
    }
    let mut exports: Vec<Export> = Vec::new();
    // Errors inside an export name the key within it, and point at `exports`.
    let within = |mut e: ParamError| {
        e.message = format!("`exports`: {}", e.message);
        e.key = Some("exports".into());
        e
    };
    for t in &tables {
        let e: ExportParams = util::params(t, EXPORT_KEYS).map_err(within)?;
        let path = util::abs_path("path", &e.path).map_err(within)?;
        if path == "/" || path.contains(|c: char| c.is_whitespace() || c == '\\' || c == '#') {
            return Err(util::bad(
                "exports",
                format!("export path \"{path}\" cannot be exported as is"),
                "use a directory below / without spaces, `#` or backslashes, e.g. \"/srv/share\"",
            ));
        }
        if exports.iter().any(|x| x.path == path) {
            return Err(util::bad(
                "exports",
                format!("{path} is exported twice"),
                "list each path once",
            ));
        }
        exports.push(Export {
            owner: util::account_name("owner", e.owner.as_deref().unwrap_or("root"), true)
                .map_err(within)?,
            group: util::account_name("group", e.group.as_deref().unwrap_or("root"), true)
                .map_err(within)?,
            mode: e.mode.map(|m| m.0),
            options: match util::non_empty(e.options) {
                Some(o) => check_options("options", o).map_err(within)?,
                None => options.clone(),
            },
            clients: match e.clients {
                Some(List(c)) if !c.is_empty() => check_clients("clients", c).map_err(within)?,
                _ => clients.clone(),
            },
            path,
        });
    }
    let mut t = toml::Table::new();
    t.insert(
        "packages".into(),
        toml::Value::Array(vec!["nfs-kernel-server".into()]),
    );
    Ok(Box::new(Typed(NfsServer {
        exports,
        apt: apt::build(&t, ctx)?,
        files,
    })))
}

/// The private address of every manager and worker: the hosts that mount the share.
fn swarm_clients(ctx: &BuildCtx<'_>) -> Result<Vec<String>, ParamError> {
    let mut out = Vec::new();
    for h in ctx.inventory.hosts.iter().filter(|h| h.is_swarm_node()) {
        let Some(ip) = h.private_ip else {
            let role = if h.has_role(Role::Manager) {
                "manager"
            } else {
                "worker"
            };
            return Err(util::bad(
                "clients",
                format!(
                    "{} ({role}) has no private_ip, so the NFS export cannot name it",
                    h.name
                ),
                format!(
                    "set private_ip for {} in the inventory, or list `clients` explicitly",
                    h.name
                ),
            ));
        };
        let ip = ip.to_string();
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    if out.is_empty() {
        return Err(util::bad(
            "clients",
            "the inventory has no manager or worker hosts to export the share to",
            "add swarm hosts, or set clients = [\"10.0.0.0/24\"]",
        ));
    }
    Ok(out)
}

fn check_options(key: &str, o: String) -> Result<String, ParamError> {
    let ok = o.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b',' | b'=' | b':' | b'/' | b'.' | b'-')
    });
    if ok {
        Ok(o)
    } else {
        Err(util::bad(
            key,
            format!("export options \"{o}\" are not a comma-separated list"),
            format!("e.g. options = \"{DEFAULT_OPTIONS}\" (no spaces or parentheses)"),
        ))
    }
}

fn check_clients(key: &str, clients: Vec<String>) -> Result<Vec<String>, ParamError> {
    for c in &clients {
        let ok = !c.is_empty()
            && c.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'.' | b':' | b'/' | b'-' | b'*' | b'?' | b'_' | b'@')
            });
        if !ok {
            return Err(util::bad(
                key,
                format!("NFS client \"{c}\" is not an address, network or host name"),
                "e.g. \"10.0.0.21\", \"10.0.0.0/24\" or \"worker-1\"",
            ));
        }
    }
    Ok(clients)
}

/// The fact an NFS server needs: [`NfsServerFacts`]. Sections: `apt` (the apt step's own
/// command), `dirN` (each export's directory), `exports`, `etab` (what the kernel exports now),
/// `service`.
pub struct ServerFact {
    pub apt_gather: String,
    pub dirs: Vec<String>,
    pub files: Files,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsServerFacts {
    /// nfs-kernel-server and its unit.
    pub package: systemd::Packaged,
    /// Each export's directory, in the order of the exports.
    pub dirs: Vec<PathFacts>,
    pub exports: PathFacts,
    pub etab: String,
}

impl Fact for ServerFact {
    type Value = NfsServerFacts;

    fn command(&self) -> String {
        let mut parts = vec![("apt".to_string(), self.apt_gather.clone())];
        for (i, path) in self.dirs.iter().enumerate() {
            parts.push((format!("dir{i}"), file::gather_command(path, None)));
        }
        parts.push((
            "exports".into(),
            file::gather_command(&self.files.exports, Some(line::SIZE_LIMIT)),
        ));
        parts.push((
            "etab".into(),
            format!("cat {} 2>/dev/null; echo", quote(&self.files.etab)),
        ));
        parts.push(("service".into(), systemd::UnitFact::new(SERVICE).command()));
        let parts: Vec<(&str, String)> =
            parts.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
        util::sections(&parts)
    }

    fn parse(&self, facts: &Facts) -> Result<NfsServerFacts, StepError> {
        let s = Sections::parse(facts);
        let package = systemd::Packaged::parse(&s, "nfs-kernel-server", SERVICE)?;
        let dirs = (0..self.dirs.len())
            .map(|i| file::parse(s.get(&format!("dir{i}"))?))
            .collect::<Result<_, _>>()?;
        Ok(NfsServerFacts {
            package,
            dirs,
            exports: file::parse(s.get("exports")?)?,
            etab: s.get("etab")?.stdout.clone(),
        })
    }
}

impl NfsServer {
    fn dir_change(&self, e: &Export, now: &PathFacts) -> Result<Option<Change>, StepError> {
        let path = &e.path;
        if now.link.is_some() && now.kind == Kind::Absent {
            return Err(StepError::new(format!(
                "{path} is a symbolic link to a missing directory"
            ))
            .hint("remove the link or create its target"));
        }
        let a = match (&now.kind, &now.attrs) {
            (Kind::Absent, _) => {
                let mode = e.mode.unwrap_or(NEW_DIR_MODE);
                return Ok(Some(Change::new(
                    format!(
                        "create export directory {path} (mode {mode:04o}, owner {}:{})",
                        e.owner, e.group
                    ),
                    vec![Action::run(directory::create_command(
                        path,
                        mode,
                        Some(&e.owner),
                        Some(&e.group),
                    ))],
                )));
            }
            (Kind::Directory, Some(a)) => a,
            (Kind::Directory, None) => {
                return Err(StepError::new(format!("no attributes gathered for {path}")));
            }
            (Kind::File, _) => {
                return Err(
                    StepError::new(format!("{path} exists but is a regular file")).hint(
                        "an export must be a directory: remove the file or export another path",
                    ),
                );
            }
            (Kind::Other(t), _) => {
                return Err(StepError::new(format!("{path} exists but is a {t}"))
                    .hint("export another path"));
            }
        };
        let mut what = Vec::new();
        let mut cmds = Vec::new();
        if let Some(mode) = e.mode.filter(|m| *m != a.mode) {
            what.push(format!("mode {mode:04o} (was {:04o})", a.mode));
            cmds.push(directory::chmod_command(path, mode));
        }
        let owner = (!a.owner_is(&e.owner)).then_some(e.owner.as_str());
        let group = (!a.group_is(&e.group)).then_some(e.group.as_str());
        if let Some(o) = owner {
            what.push(format!("owner {o} (was {})", a.owner));
        }
        if let Some(g) = group {
            what.push(format!("group {g} (was {})", a.group));
        }
        if let Some(spec) = util::chown_spec(owner, group) {
            cmds.push(format!("chown {} {}", quote(&spec), quote(path)));
        }
        Ok((!what.is_empty()).then(|| {
            Change::new(
                format!("update export directory {path}: {}", what.join(", ")),
                vec![Action::run(cmds.join(" && "))],
            )
        }))
    }

    /// The new /etc/exports, refusing a path also exported outside the block
    /// (exportfs would merge the two lines' clients unpredictably).
    fn exports_edit(&self, content: &str) -> Result<Edit, StepError> {
        let path = &self.files.exports;
        let broken = |e: String| {
            StepError::new(format!("{path}: {e}"))
                .hint(format!("repair or remove the `{BEGIN}` block by hand"))
        };
        let outside = match line::set_block(content, BEGIN, END, None).map_err(broken)? {
            Edit::Unchanged(_) => content.to_string(),
            Edit::Changed { content, .. } => content,
        };
        for (n, l) in outside.lines().enumerate() {
            if let Some(e) = self
                .exports
                .iter()
                .find(|e| l.split_whitespace().next() == Some(e.path.as_str()))
            {
                return Err(StepError::new(format!(
                    "{} is also exported by a line of {path} outside provision's block: `{}`",
                    e.path,
                    l.trim()
                ))
                .hint(format!("remove that line (line {} without the block) and let this step manage the export", n + 1)));
            }
        }
        let body: String = self
            .exports
            .iter()
            .map(|e| format!("{}\n", e.line()))
            .collect();
        line::set_block(content, BEGIN, END, Some(&body)).map_err(broken)
    }

    /// Whether the kernel's table has every path for every client.
    fn exported(&self, etab: &str) -> bool {
        let now: Vec<(&str, &str)> = etab
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let path = w.next()?;
                let client = w.next()?.split('(').next()?;
                Some((path, client))
            })
            .collect();
        self.exports.iter().all(|e| {
            e.clients
                .iter()
                .all(|c| now.contains(&(e.path.as_str(), c.as_str())))
        })
    }
}

impl Decide for NfsServer {
    type Fact = ServerFact;

    fn fact(&self) -> ServerFact {
        ServerFact {
            apt_gather: self.apt.gather().unwrap_or_default(),
            dirs: self.exports.iter().map(|e| e.path.clone()).collect(),
            files: self.files.clone(),
        }
    }

    fn decide(&self, f: NfsServerFacts) -> Result<Check, StepError> {
        let mut changes = Vec::new();
        if let Check::Change(c) = self.apt.check(&f.package.apt)? {
            changes.extend(c);
        }
        for (e, now) in self.exports.iter().zip(&f.dirs) {
            changes.extend(self.dir_change(e, now)?);
        }
        let path = &self.files.exports;
        let now = &f.exports;
        let mut reload = !f.package.installed || !self.exported(&f.etab);
        if let Edit::Changed { content, summary } = self.exports_edit(&file::text(now, path)?)?
            && let Some(mut c) = file::change(path, "path", content.as_bytes(), now)?
        {
            c.summary = format!("{path}: {summary} ({} exports)", self.exports.len());
            changes.push(c);
            reload = true;
        }
        if reload {
            changes.push(Change::new(
                "apply the exports (exportfs -ra)",
                vec![Action::run("exportfs -ra")],
            ));
        }
        changes.extend(systemd::keep_running(
            SERVICE,
            f.package.unit.as_ref(),
            false,
        ));
        if changes.is_empty() {
            let paths: Vec<&str> = self.exports.iter().map(|e| e.path.as_str()).collect();
            let clients = self
                .exports
                .iter()
                .map(|e| e.clients.len())
                .max()
                .unwrap_or(0);
            Ok(Check::Ok(format!(
                "{} exported to {clients} clients, nfs-server running",
                paths.join(", ")
            )))
        } else {
            Ok(Check::Change(changes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::fixtures::{CLUSTER, LISTS, build_in, file_facts};
    use crate::steps::testing::{build as build_with_ctx, build_err};

    fn cluster_step_in(cluster: &str, with: &str) -> Built {
        build_in(build, cluster, "storage-1", with)
    }

    fn step(with: &str) -> Box<dyn HostStep> {
        cluster_step_in(CLUSTER, with).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// The /etc/exports nfs-kernel-server installs on Debian 12.
    const DEBIAN_EXPORTS: &str = "# /etc/exports: the access control list for filesystems which may be exported\n#\t\tto NFS clients.  See exports(5).\n#\n# Example for NFSv2 and NFSv3:\n# /srv/homes       hostname1(rw,sync,no_subtree_check) hostname2(ro,sync,no_subtree_check)\n#\n# Example for NFSv4:\n# /srv/nfs4        gss/krb5i(rw,sync,fsid=0,crossmnt,no_subtree_check)\n# /srv/nfs4/homes  gss/krb5i(rw,sync,no_subtree_check)\n#\n";
    const LINE: &str = "/srv/share 10.0.0.11(rw,sync,no_subtree_check,no_root_squash) 10.0.0.21(rw,sync,no_subtree_check,no_root_squash)";
    /// /var/lib/nfs/etab after exportfs -ra (Debian 12).
    const ETAB: &str = "/srv/share\t10.0.0.11(rw,sync,wdelay,hide,nocrossmnt,secure,no_root_squash,no_all_squash,no_subtree_check,secure_locks,acl,no_pnfs,anonuid=65534,anongid=65534,sec=sys,rw,secure,no_root_squash,no_all_squash)\n/srv/share\t10.0.0.21(rw,sync,wdelay,hide,nocrossmnt,secure,no_root_squash,no_all_squash,no_subtree_check,secure_locks,acl,no_pnfs,anonuid=65534,anongid=65534,sec=sys,rw,secure,no_root_squash,no_all_squash)\n";

    fn done_exports() -> String {
        format!("{DEBIAN_EXPORTS}{BEGIN}\n{LINE}\n{END}\n")
    }

    fn facts(apt: &str, dir: &str, exports: Option<&str>, etab: &str, service: &str) -> Facts {
        Facts::new(format!(
            "--- apt\n{apt}{LISTS}--- dir0\n{dir}--- exports\n{}--- etab\n{etab}--- service\n{service}",
            file_facts(exports)
        ))
    }

    const INSTALLED: &str = "pkg=ii  nfs-kernel-server amd64 1:2.6.2-4+deb12u1\n";
    const DIR: &str = "kind=directory\nattrs=755 root root 0 0 4096\n";
    const RUNNING: &str = "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n";

    #[test]
    fn gather_command_is_exact() {
        let s = step("");
        assert_eq!(
            s.gather().unwrap(),
            format!(
                "echo '--- apt'; {}; echo '--- dir0'; {}; echo '--- exports'; {}; echo '--- etab'; cat /var/lib/nfs/etab 2>/dev/null; echo; \
                 echo '--- service'; systemctl show -p LoadState -p ActiveState -p UnitFileState nfs-server.service",
                apt::gather_present(&["nfs-kernel-server".into()]),
                file::gather_command("/srv/share", None),
                file::gather_command("/etc/exports", Some(1024 * 1024)),
            )
        );
    }

    #[test]
    fn fresh_host() {
        let s = step("");
        let Check::Change(c) = s
            .check(&facts(
                "candidate=nfs-kernel-server 1:2.6.2-4+deb12u1\n",
                "kind=absent\n",
                None,
                "",
                "LoadState=not-found\nActiveState=inactive\n",
            ))
            .unwrap()
        else {
            panic!()
        };
        let summaries: Vec<&str> = c.iter().map(|c| c.summary.as_str()).collect();
        assert_eq!(
            summaries,
            vec![
                "install nfs-kernel-server",
                "create export directory /srv/share (mode 0755, owner root:root)",
                "/etc/exports: append block at line 1 (1 exports)",
                "apply the exports (exportfs -ra)",
                "enable and start nfs-server.service",
            ]
        );
        assert_eq!(
            c[1].actions,
            vec![Action::run(
                "mkdir -p /srv/share && chmod 00755 /srv/share && chown root:root /srv/share"
            )]
        );
        let Action::Upload { content, .. } = &c[2].actions[0] else {
            panic!()
        };
        assert_eq!(
            String::from_utf8(content.to_vec()).unwrap(),
            format!("{BEGIN}\n{LINE}\n{END}\n")
        );
        assert_eq!(c[3].actions, vec![Action::run("exportfs -ra")]);
        assert_eq!(
            c[4].actions,
            vec![Action::run("systemctl enable --now nfs-server.service")]
        );
    }

    #[test]
    fn already_done() {
        let s = step("");
        assert_eq!(
            s.check(&facts(INSTALLED, DIR, Some(&done_exports()), ETAB, RUNNING))
                .unwrap(),
            Check::Ok("/srv/share exported to 2 clients, nfs-server running".into())
        );
    }

    #[test]
    fn drifted() {
        // A worker added to the inventory: the block changes and is applied.
        let s = cluster_step_in(
            &format!("{CLUSTER}[[hosts]]\nname = \"worker-2\"\naddress = \"203.0.113.22\"\nprivate_ip = \"10.0.0.22\"\nroles = [\"worker\"]\n"),
            "",
        )
        .unwrap();
        let Check::Change(c) = s
            .check(&facts(INSTALLED, DIR, Some(&done_exports()), ETAB, RUNNING))
            .unwrap()
        else {
            panic!()
        };
        let summaries: Vec<&str> = c.iter().map(|c| c.summary.as_str()).collect();
        assert_eq!(
            summaries,
            vec![
                "/etc/exports: update block at lines 11-13 (1 exports)",
                "apply the exports (exportfs -ra)"
            ]
        );
        assert!(
            c[0].diff
                .as_ref()
                .unwrap()
                .after
                .contains(" 10.0.0.22(rw,sync,no_subtree_check,no_root_squash)\n")
        );
        // The file is right but the kernel lost the exports (exportfs -ua), the
        // directory's owner changed and the server stopped.
        let s = step("exports = [{ path = \"/srv/share\", owner = \"1000\", mode = \"0770\" }]");
        let Check::Change(c) = s
            .check(&facts(
                INSTALLED,
                DIR,
                Some(&done_exports()),
                "",
                "LoadState=loaded\nActiveState=inactive\nUnitFileState=enabled\n",
            ))
            .unwrap()
        else {
            panic!()
        };
        let summaries: Vec<&str> = c.iter().map(|c| c.summary.as_str()).collect();
        assert_eq!(
            summaries,
            vec![
                "update export directory /srv/share: mode 0770 (was 0755), owner 1000 (was root)",
                "apply the exports (exportfs -ra)",
                "start nfs-server.service (was inactive)",
            ]
        );
        assert_eq!(
            c[0].actions,
            vec![Action::run(
                "chmod 00770 /srv/share && chown 1000 /srv/share"
            )]
        );
    }

    #[test]
    fn refuses_conflicting_lines_and_files() {
        let s = step("");
        let hand = format!("{DEBIAN_EXPORTS}/srv/share *(ro)\n");
        let e = s
            .check(&facts(INSTALLED, DIR, Some(&hand), "", RUNNING))
            .unwrap_err();
        assert_eq!(
            e.message,
            "/srv/share is also exported by a line of /etc/exports outside provision's block: `/srv/share *(ro)`"
        );
        let e = s
            .check(&facts(
                INSTALLED,
                "kind=file\nattrs=644 root root 0 0 3\n",
                None,
                "",
                RUNNING,
            ))
            .unwrap_err();
        assert_eq!(e.message, "/srv/share exists but is a regular file");
    }

    #[test]
    fn several_exports_with_their_own_clients() {
        let s = step(
            "options = \"rw,async,no_subtree_check\"\nexports = [{ path = \"/srv/share\" }, { path = \"/srv/db/\", clients = [\"10.0.0.11\"], options = \"rw,sync,no_subtree_check,no_root_squash\" }]",
        );
        let f = Facts::new(format!(
            "--- apt\n{INSTALLED}{LISTS}--- dir0\n{DIR}--- dir1\n{DIR}--- exports\n{}--- etab\n--- service\n{RUNNING}",
            file_facts(Some(""))
        ));
        let Check::Change(c) = s.check(&f).unwrap() else {
            panic!()
        };
        assert_eq!(
            c[0].diff.as_ref().unwrap().after,
            format!(
                "{BEGIN}\n/srv/share 10.0.0.11(rw,async,no_subtree_check) 10.0.0.21(rw,async,no_subtree_check)\n/srv/db 10.0.0.11(rw,sync,no_subtree_check,no_root_squash)\n{END}\n"
            )
        );
    }

    #[test]
    fn param_errors() {
        let no_ip = CLUSTER.replace("private_ip = \"10.0.0.21\"\n", "");
        let e = build_err(cluster_step_in(&no_ip, ""));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (
                Some("clients"),
                "worker-1 (worker) has no private_ip, so the NFS export cannot name it"
            )
        );
        assert!(cluster_step_in(&no_ip, "clients = [\"10.0.0.0/24\"]").is_ok());
        let e = build_err(build_with_ctx(build, "clients = []"));
        assert_eq!(e.message, "`clients` is empty");
        let e = build_err(build_with_ctx(build, "clients = [\"10.0.0.1(rw)\"]"));
        assert_eq!(
            e.message,
            "NFS client \"10.0.0.1(rw)\" is not an address, network or host name"
        );
        let e = build_err(build_with_ctx(build, "options = \"rw, sync\""));
        assert_eq!(e.key.as_deref(), Some("options"));
        let e = build_err(build_with_ctx(build, "exports = [{ path = \"srv\" }]"));
        assert_eq!(
            e.message,
            "`exports`: `path` must be an absolute path, got \"srv\""
        );
        assert_eq!(e.help.as_deref(), Some("write path = \"/srv\""));
        let e = build_err(build_with_ctx(build, "exports = [{ path = \"/srv/a b\" }]"));
        assert_eq!(
            e.message,
            "export path \"/srv/a b\" cannot be exported as is"
        );
        let e = build_err(build_with_ctx(
            build,
            "exports = [{ path = \"/srv/a\", mod = \"0777\" }]",
        ));
        assert_eq!(e.key.as_deref(), Some("exports"));
        assert!(
            e.message.starts_with("`exports`: unknown parameter `mod`"),
            "{}",
            e.message
        );
        let e = build_err(build_with_ctx(
            build,
            "exports = [{ path = \"/srv/a\" }, { path = \"/srv/a/\" }]",
        ));
        assert_eq!(e.message, "/srv/a is exported twice");
        let e = build_err(build_with_ctx(build, "exports = []"));
        assert_eq!(e.message, "`exports` is empty");
        // The test inventory's one worker (10.0.0.5) is the default client.
        let s = build_with_ctx(build, "").unwrap();
        let f = facts(INSTALLED, DIR, Some(""), "", RUNNING);
        let Check::Change(c) = s.check(&f).unwrap() else {
            panic!()
        };
        assert!(
            c[0].diff
                .as_ref()
                .unwrap()
                .after
                .contains("/srv/share 10.0.0.5(rw,sync,no_subtree_check,no_root_squash)")
        );
    }
}
