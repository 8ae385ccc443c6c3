//! Tier 2, whole binary on real sshd hosts at 127.0.0.1: `run --check --detect-drift`'s exit
//! codes, the `file` step's states, and a playbook converted by `import-ansible` run for real.
//! As in `run_sshd.rs`, the hosts share this machine's filesystem, so each works under its own
//! root directory (a host var).

use provision_testkit::{KeyPair, Sshd, keygen};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Hosts {
    dir: tempfile::TempDir,
    _servers: Vec<Sshd>,
    _key: KeyPair,
}

/// `n` sshd hosts (h1..hn, root `root-hN`), running `playbook`. `extra` is appended to the
/// inventory (groups, vars).
fn hosts(n: usize, playbook: &str, extra: &str) -> Hosts {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "id", "ed25519", "");
    let servers: Vec<Sshd> = (0..n).map(|_| Sshd::start()).collect();
    let mut kh = String::new();
    let mut inv = format!(
        "name = \"test\"\nplaybook = \"playbook.toml\"\n\n[ssh]\nuser = \"root\"\nidentity = \"{}\"\nhost_key_policy = \"strict\"\n",
        key.private.display()
    );
    for (i, s) in servers.iter().enumerate() {
        s.authorize(&key);
        kh.push_str(&s.known_hosts_line());
        let root = dir.path().join(format!("root-h{}", i + 1));
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
    std::fs::write(dir.path().join("known_hosts"), kh).unwrap();
    std::fs::write(dir.path().join("cluster.toml"), inv).unwrap();
    std::fs::write(dir.path().join("playbook.toml"), playbook).unwrap();
    Hosts {
        dir,
        _servers: servers,
        _key: key,
    }
}

impl Hosts {
    fn provision(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_provision"))
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("PROVISION_IDENTITY")
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    fn cluster(&self) -> String {
        self.dir.path().join("cluster.toml").display().to_string()
    }

    fn root(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("root-h{i}"))
    }

    /// `run --output json`'s host results: (step, host, status).
    fn run_json(&self, extra: &[&str]) -> (Output, Vec<(String, String, String)>) {
        let cluster = self.cluster();
        let mut args = vec!["run", cluster.as_str(), "--output", "json"];
        args.extend_from_slice(extra);
        let out = self.provision(&args);
        let results = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "host_result")
            .map(|v| {
                (
                    v["step"].as_str().unwrap().into(),
                    v["host"].as_str().unwrap().into(),
                    v["status"].as_str().unwrap().into(),
                )
            })
            .collect();
        (out, results)
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every file under `dir` with its content and mode, sorted: to prove a run changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
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

const DRIFT_PLAYBOOK: &str = r#"
[[steps]]
name = "motd"
use = "copy"
with = { content = "managed\n", dest = "{{ vars.root }}/etc/motd", mode = "0644" }
"#;

#[test]
fn detect_drift_exits_0_when_converged_4_when_drifted_1_on_failure_and_changes_nothing() {
    let h = hosts(2, DRIFT_PLAYBOOK, "");
    let cluster = h.cluster();
    let drift = |h: &Hosts| h.provision(&["run", &cluster, "--check", "--detect-drift"]);
    // Nothing converged yet: drift, and --check wrote nothing.
    let out = drift(&h);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(!h.root(1).join("etc/motd").exists());
    // Converged: 0.
    let (out, _) = h.run_json(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = drift(&h);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Someone edits h2 by hand: 4, and the drift is left as it is.
    std::fs::write(h.root(2).join("etc/motd"), "hand edit\n").unwrap();
    let before = snapshot(h.dir.path().join("root-h2").as_path());
    let out = drift(&h);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("would change"), "{}", text(&out));
    assert_eq!(snapshot(&h.root(2)), before, "--detect-drift changed h2");
    // Without the flag a --check run with drift still exits 0, as before.
    let out = h.provision(&["run", &cluster, "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A host that fails wins over drift: 1.
    // (a directory where the file belongs: the step refuses it.)
    std::fs::remove_file(h.root(1).join("etc/motd")).unwrap();
    std::fs::create_dir(h.root(1).join("etc/motd")).unwrap();
    let out = drift(&h);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Without --check the flag is bad input (2), and nothing ran.
    let out = h.provision(&["run", &cluster, "--detect-drift"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(h.root(2).join("etc/motd")).unwrap(),
        "hand edit\n"
    );
    // Every code is in `run --help`.
    let help = text(&h.provision(&["run", "--help"]));
    for line in [
        "  0    done",
        "  1    a host",
        "  2    bad input",
        "  4    --check",
        "  75   ",
        "  130  ",
    ] {
        assert!(help.contains(line), "{line:?} in:\n{help}");
    }
}
