//! The tools under comparison: where they are, their versions, how each is invoked on
//! the job written by [`crate::workload`], and the machine the numbers come from.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Versions installed into the venv when it does not exist yet (the latest for this
/// machine's Python 3.11 when the benchmark was written; ansible-core 2.20 needs 3.12).
pub const ANSIBLE_CORE: &str = "2.19.14";
pub const PYINFRA: &str = "3.10.0";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target/release/provision`, or `$PROVISION_BIN`.
pub fn provision_bin() -> PathBuf {
    let p = std::env::var_os("PROVISION_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/provision"));
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --release -p provision` first",
        p.display()
    );
    p
}

pub fn venv() -> PathBuf {
    workspace_root().join("target/bench-venv")
}

/// Creates `target/bench-venv` with pinned ansible-core and pyinfra if it is missing.
pub fn ensure_venv() -> PathBuf {
    let v = venv();
    if v.join("bin/ansible-playbook").exists() && v.join("bin/pyinfra").exists() {
        return v;
    }
    eprintln!(
        "creating {} (ansible-core {ANSIBLE_CORE}, pyinfra {PYINFRA}) ...",
        v.display()
    );
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&v)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "python3 -m venv failed (apt-get install python3-venv)");
    let ok = Command::new(v.join("bin/pip"))
        .args([
            "install",
            "-q",
            &format!("ansible-core=={ANSIBLE_CORE}"),
            &format!("pyinfra=={PYINFRA}"),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "pip install into {} failed", v.display());
    v
}

fn first_line(cmd: &mut Command) -> String {
    cmd.stdin(Stdio::null())
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|e| format!("unavailable: {e}"))
}

/// Versions of everything measured, for the report.
pub fn versions(venv: &Path) -> serde_json::Value {
    serde_json::json!({
        "provision": first_line(Command::new(provision_bin()).arg("--version")),
        "ansible-core": first_line(Command::new(venv.join("bin/ansible-playbook")).arg("--version")),
        "pyinfra": first_line(Command::new(venv.join("bin/pyinfra")).arg("--version")),
        "python (control)": first_line(Command::new(venv.join("bin/python")).arg("--version")),
        "openssh": first_line(Command::new("ssh").arg("-V")),
    })
}

/// nproc, memory, OS and kernel of this machine.
pub fn machine() -> serde_json::Value {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_default();
    let kernel = first_line(Command::new("uname").arg("-r"));
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    serde_json::json!({
        "nproc": nproc,
        "memory_gib": (mem_kb as f64 / 1048576.0 * 10.0).round() / 10.0,
        "os": os,
        "kernel": kernel,
        "cpu": cpu,
        "nofile_limit": nofile(),
    })
}

/// The soft limit on open files of this process.
pub fn nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall with a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    r.rlim_cur
}

/// SIGTERM to every process whose command line mentions `needle` (Ansible's
/// ControlPersist masters, named after their control path under the run's own dir).
pub fn kill_matching(needle: &str) -> usize {
    let mut n = 0;
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cl) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cl).contains(needle) {
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            n += 1;
        }
    }
    n
}

/// The command of one tool run on the job in `dir`.
pub enum Tool {
    Provision,
    /// provision with the package step as a `dpkg-query`-guarded command (see
    /// [`crate::workload::PackageStep::DpkgGuard`]).
    ProvisionDpkg,
    /// Ansible with fact gathering on (true) or off (false).
    Ansible(bool),
    Pyinfra,
}

impl Tool {
    pub fn key(&self) -> &'static str {
        match self {
            Tool::Provision => "provision",
            Tool::ProvisionDpkg => "provision-dpkg",
            Tool::Ansible(true) => "ansible",
            Tool::Ansible(false) => "ansible-nofacts",
            Tool::Pyinfra => "pyinfra",
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Tool::Provision => "provision",
            Tool::ProvisionDpkg => "provision, package step as dpkg-query guard",
            Tool::Ansible(true) => "ansible-playbook (facts on)",
            Tool::Ansible(false) => "ansible-playbook (facts off)",
            Tool::Pyinfra => "pyinfra",
        }
    }

    pub fn parse(s: &str) -> Option<Tool> {
        Some(match s {
            "provision" => Tool::Provision,
            "provision-dpkg" => Tool::ProvisionDpkg,
            "ansible" => Tool::Ansible(true),
            "ansible-nofacts" => Tool::Ansible(false),
            "pyinfra" => Tool::Pyinfra,
            _ => return None,
        })
    }

    /// The command, run with `dir` (the tool's job directory) as working directory;
    /// `parallel`: provision's `--forks`, pyinfra's `--parallel` (Ansible's forks are in
    /// its ansible.cfg); `run_id` names per-run state (Ansible's control sockets) under `dir`.
    pub fn command(
        &self,
        dir: &Path,
        parallel: usize,
        home: &Path,
        venv: &Path,
        run_id: &str,
    ) -> Command {
        let mut cmd = match self {
            Tool::Provision | Tool::ProvisionDpkg => {
                let mut c = Command::new(provision_bin());
                c.args(["run", "cluster.toml", "--forks", &parallel.to_string()]);
                c
            }
            Tool::Ansible(facts) => {
                let mut c = Command::new(venv.join("bin/ansible-playbook"));
                c.arg(if *facts {
                    "site.yml"
                } else {
                    "site-nofacts.yml"
                });
                c.env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
                    .env(
                        "ANSIBLE_SSH_CONTROL_PATH_DIR",
                        dir.join(format!("cp-{run_id}")),
                    )
                    .env("ANSIBLE_NOCOLOR", "1");
                c
            }
            Tool::Pyinfra => {
                let mut c = Command::new(venv.join("bin/pyinfra"));
                c.args([
                    "inventory.py",
                    "deploy.py",
                    "-y",
                    "--parallel",
                    &parallel.to_string(),
                ]);
                c
            }
        };
        let path = format!(
            "{}:{}",
            venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.current_dir(dir)
            .env("HOME", home)
            .env("PATH", path)
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }
}

/// The commit the measured `provision` was built from, and whether its crates had local
/// changes (other work in progress) at measurement time.
pub fn source_rev() -> serde_json::Value {
    let root = workspace_root();
    let rev =
        first_line(
            Command::new("git")
                .arg("-C")
                .arg(&root)
                .args(["rev-parse", "--short", "HEAD"]),
        );
    let dirty = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["status", "--porcelain", "--", "crates"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    serde_json::json!({"commit": rev, "changed_files_in_crates": dirty})
}
