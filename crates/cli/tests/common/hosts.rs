//! Real sshd hosts at 127.0.0.1 for whole-binary runs, shared by the sshd test files: the hosts
//! share this machine's filesystem, so each works under its own root directory (a host var),
//! and the trees under those roots are what a test compares.

use super::host_results;
use provision_testkit::{KeyPair, Sshd, keygen};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Hosts {
    pub dir: tempfile::TempDir,
    pub servers: Vec<Sshd>,
    _key: KeyPair,
}

/// `n` sshd hosts (h1..hn, root `root-hN`), running `playbook`. `extra` is appended to the
/// inventory (groups, vars).
pub fn hosts(n: usize, playbook: &str, extra: &str) -> Hosts {
    let h = Hosts::start(n);
    let mut inv = format!(
        "name = \"test\"\nplaybook = \"playbook.toml\"\n\n[ssh]\nuser = \"root\"\nidentity = \"{}\"\nhost_key_policy = \"strict\"\n",
        h.key_path().display()
    );
    for (i, s) in h.servers.iter().enumerate() {
        let root = h.root(i + 1);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        inv.push_str(&format!(
            "\n[[hosts]]\nname = \"h{n}\"\naddress = \"{a}\"\nport = {p}\nroles = [\"worker\"]\nvars = {{ root = \"{r}\" }}\n",
            n = i + 1,
            a = s.listen,
            p = s.port,
            r = root.display()
        ));
    }
    inv.push_str(extra);
    std::fs::write(h.dir.path().join("cluster.toml"), inv).unwrap();
    std::fs::write(h.dir.path().join("playbook.toml"), playbook).unwrap();
    h
}

impl Hosts {
    /// `n` sshd servers that accept one throw-away key, their host keys in `known_hosts`.
    pub fn start(n: usize) -> Hosts {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "id", "ed25519", "");
        let servers: Vec<Sshd> = (0..n).map(|_| Sshd::start()).collect();
        let mut kh = String::new();
        for s in &servers {
            s.authorize(&key);
            kh.push_str(&s.known_hosts_line());
        }
        std::fs::write(dir.path().join("known_hosts"), kh).unwrap();
        Hosts {
            dir,
            servers,
            _key: key,
        }
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("id")
    }

    pub fn provision(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_provision"))
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("PROVISION_IDENTITY")
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    pub fn cluster(&self) -> String {
        self.dir.path().join("cluster.toml").display().to_string()
    }

    pub fn root(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("root-h{i}"))
    }

    /// The root directory of the host named `name` in an inventory made by [`Hosts::connect`].
    pub fn root_of(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("root-{name}"))
    }

    /// `run --output json`'s host results: (step, host, status).
    pub fn run_json(&self, extra: &[&str]) -> (Output, Vec<(String, String, String)>) {
        let cluster = self.cluster();
        self.run_cluster(Path::new(&cluster), extra)
    }

    /// `run CLUSTER --output json`'s host results.
    pub fn run_cluster(
        &self,
        cluster: &Path,
        extra: &[&str],
    ) -> (Output, Vec<(String, String, String)>) {
        let cluster = cluster.display().to_string();
        let mut args = vec!["run", cluster.as_str(), "--output", "json"];
        args.extend_from_slice(extra);
        let out = self.provision(&args);
        let results = host_results(&out);
        (out, results)
    }

    /// Points an inventory written for real servers (an example's, or the converter's) at
    /// these sshd hosts: its `[[hosts]]`, in order, get this set's servers, a root directory
    /// `root-NAME` (made here) and the vars `host_vars(name, root)`; `vars` are set in
    /// `[vars]`; `[ssh]` becomes root with this set's key. The host keys go beside it.
    pub fn connect(
        &self,
        cluster: &Path,
        vars: &toml::Table,
        host_vars: &dyn Fn(&str, &Path) -> toml::Table,
    ) {
        let mut inv: toml::Table = std::fs::read_to_string(cluster).unwrap().parse().unwrap();
        let mut ssh = toml::Table::new();
        ssh.insert("user".into(), "root".into());
        ssh.insert(
            "identity".into(),
            self.key_path().display().to_string().into(),
        );
        ssh.insert("host_key_policy".into(), "strict".into());
        inv.insert("ssh".into(), ssh.into());
        let all = inv
            .entry("vars")
            .or_insert_with(|| toml::Table::new().into())
            .as_table_mut()
            .unwrap();
        all.extend(vars.clone());
        let list = inv["hosts"].as_array_mut().unwrap();
        assert_eq!(list.len(), self.servers.len(), "one server per host");
        for (host, s) in list.iter_mut().zip(&self.servers) {
            let host = host.as_table_mut().unwrap();
            let name = host["name"].as_str().unwrap().to_string();
            let root = self.root_of(&name);
            std::fs::create_dir_all(&root).unwrap();
            host.insert("address".into(), s.listen.to_string().into());
            host.insert("port".into(), i64::from(s.port).into());
            let hv = host
                .entry("vars")
                .or_insert_with(|| toml::Table::new().into())
                .as_table_mut()
                .unwrap();
            hv.extend(host_vars(&name, &root));
        }
        std::fs::write(cluster, toml::to_string(&inv).unwrap()).unwrap();
        std::fs::copy(
            self.dir.path().join("known_hosts"),
            cluster.parent().unwrap().join("known_hosts"),
        )
        .unwrap();
    }
}

pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every file under `dir` with its content and mode, sorted: to prove a run changed nothing.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = mode(&p);
            if p.is_dir() {
                out.push((p.clone(), Vec::new(), m));
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap(), m));
            }
        }
    }
    out.sort();
    out
}

/// One entry of a host's tree: its path under the root, what it is (`dir`, `file`, `link ->
/// TARGET`), its content, mode, uid and gid. The root's own path, in contents and link
/// targets, reads `ROOT`, so two sets of hosts compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub path: String,
    pub kind: String,
    pub content: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The tree under `root`, sorted by path, links not followed.
pub fn tree(root: &Path) -> Vec<Entry> {
    use std::os::unix::fs::MetadataExt;
    let r = root.display().to_string();
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let (kind, content) = if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap().display().to_string();
                (format!("link -> {}", t.replace(&r, "ROOT")), String::new())
            } else if m.is_dir() {
                todo.push(p.clone());
                ("dir".to_string(), String::new())
            } else {
                let c = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).replace(&r, "ROOT");
                ("file".to_string(), c)
            };
            out.push(Entry {
                path: p.strip_prefix(root).unwrap().display().to_string(),
                kind,
                content,
                mode: mode(&p),
                uid: m.uid(),
                gid: m.gid(),
            });
        }
    }
    out.sort();
    out
}

/// Two hosts' trees, entry by entry; the first difference, said plainly.
pub fn first_difference(a_name: &str, a: &[Entry], b_name: &str, b: &[Entry]) -> Option<String> {
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            (None, None) => return None,
            (Some(x), None) => return Some(format!("{} is in {a_name} only", x.path)),
            (None, Some(y)) => return Some(format!("{} is in {b_name} only", y.path)),
            (Some(x), Some(y)) if x.path != y.path => {
                let (first, name) = if x.path < y.path {
                    (x, a_name)
                } else {
                    (y, b_name)
                };
                return Some(format!("{} is in {name} only", first.path));
            }
            (Some(x), Some(y)) if x != y => {
                let what = if x.kind != y.kind {
                    format!("is {} in {a_name}, {} in {b_name}", x.kind, y.kind)
                } else if x.content != y.content {
                    format!(
                        "differs in content:\n--- {a_name}\n{}\n--- {b_name}\n{}",
                        x.content, y.content
                    )
                } else if x.mode != y.mode {
                    format!(
                        "has mode {:o} in {a_name}, {:o} in {b_name}",
                        x.mode, y.mode
                    )
                } else {
                    format!(
                        "is owned by {}:{} in {a_name}, {}:{} in {b_name}",
                        x.uid, x.gid, y.uid, y.gid
                    )
                };
                return Some(format!("{} {what}", x.path));
            }
            _ => i += 1,
        }
    }
}
