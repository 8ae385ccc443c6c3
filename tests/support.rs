//! Support for the end-to-end tests: the built `provision` binary, runs with JSON
//! events, and where a failed test leaves its logs.
// A VM test prints its progress for CI's log; its secrets are throw-away.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `provision` binary cargo built next to this test (target/<profile>/provision).
pub fn provision_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("provision");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo test --workspace` does)",
        bin.display()
    );
    bin
}

/// One `provision run` with JSON events; its stderr recap is kept for failures.
pub struct Run {
    pub output: Output,
    /// (step, host, status) of every host result.
    pub results: Vec<(String, String, String)>,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.output.status.success()
    }

    pub fn changed_hosts(&self) -> Vec<String> {
        let mut h: Vec<String> = self
            .results
            .iter()
            .filter(|r| r.2 == "changed")
            .map(|r| r.1.clone())
            .collect();
        h.sort();
        h.dedup();
        h
    }

    pub fn count(&self, status: &str) -> usize {
        self.results.iter().filter(|r| r.2 == status).count()
    }

    /// Per step, in playbook order: (step, slowest host's duration in ms, hosts). Under the
    /// built-in playbook's `pipelined` strategy steps on other hosts overlap (the NFS server
    /// and the load balancer beside Docker on the nodes): the figures do not add up to the run.
    pub fn timeline(&self) -> Vec<(String, u64, usize)> {
        let mut out: Vec<(String, u64, usize)> = Vec::new();
        for v in String::from_utf8_lossy(&self.output.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "host_result")
        {
            let step = v["step"].as_str().unwrap_or_default();
            let ms = v["duration"].as_u64().unwrap_or(0);
            match out.iter_mut().find(|s| s.0 == step) {
                Some(s) => {
                    s.1 = s.1.max(ms);
                    s.2 += 1;
                }
                None => out.push((step.to_string(), ms, 1)),
            }
        }
        out
    }

    /// The timeline as lines for the test log (bench/README.md's lab timeline comes from it).
    pub fn print_timeline(&self, what: &str) {
        eprintln!("timeline of {what} (step, slowest host, hosts):");
        for (step, ms, hosts) in self.timeline() {
            eprintln!("  {step:<36} {:>8.1} s  {hosts}", ms as f64 / 1000.0);
        }
    }

    pub fn text(&self) -> String {
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

pub fn run(cluster: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "run".to_string(),
        cluster.display().to_string(),
        "--output".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let output = Command::new(provision_bin())
        .args(&args)
        .output()
        .expect("run provision");
    parse_run(output)
}

/// The host results of a `provision run --output json` that already finished.
pub fn parse_run(output: Output) -> Run {
    let results = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "host_result")
        .map(|v| {
            (
                v["step"].as_str().unwrap_or_default().to_string(),
                v["host"].as_str().unwrap_or_default().to_string(),
                v["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    Run { output, results }
}

/// Any other `provision` subcommand: (exit code, stdout, stderr).
pub fn provision(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(provision_bin())
        .args(args)
        .output()
        .expect("run provision");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command on a lab VM over SSH; it must succeed. Returns its stdout.
pub fn sh(lab: &provision_lab::Lab, vm: &str, cmd: &str) -> String {
    let out = lab.ssh(vm, cmd).expect("ssh");
    assert!(
        out.status.success(),
        "{vm}: `{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lab's ready image layer, made (once per key) by this build's `provision` binary.
pub fn ready_layer() -> provision_lab::ReadyLayer {
    provision_lab::ReadyLayer::with_binary(
        provision_playbook::lab_ready::PLAYBOOK,
        provision_playbook::lab_ready::FILES,
        provision_playbook::lab_ready::code_digest(),
        provision_bin(),
    )
}

/// The qemu processes of lab `name` still running (their argv names the lab: `-name
/// provision-lab:NAME:VM`), as (pid, argv).
pub fn qemu_of_lab(name: &str) -> Vec<(u32, String)> {
    let tag = format!("provision-lab:{name}:");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv = String::from_utf8_lossy(&raw).replace('\0', " ");
        if argv.contains(&tag) {
            found.push((pid, argv));
        }
    }
    found
}

/// After a test's lab (`name`, in `dir`) is down: none of its qemu processes is left, and it
/// let go of the package cache (whose proxy is gone when no other lab uses it).
pub fn assert_no_qemu_left(name: &str, dir: &Path) {
    let left = qemu_of_lab(name);
    assert!(
        left.is_empty(),
        "qemu of lab {name} still running: {left:?}"
    );
    let cache = provision_lab::aptcache::AptCache::default_root().expect("cache root");
    assert!(
        cache.released_by(dir),
        "lab {name} still holds the package cache: users {:?}, proxy {:?}",
        cache.users(),
        cache.running()
    );
}

/// The .deb files in the lab's package cache whose name starts with `prefix`: proof that the
/// VMs' apt went through the cache (which they do whenever apt-cacher-ng is installed).
pub fn cached_debs(prefix: &str) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, found: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), prefix, found);
            } else if name.starts_with(prefix) && name.ends_with(".deb") {
                found.push(name);
            }
        }
    }
    let cache = provision_lab::aptcache::AptCache::default_root().expect("cache root");
    let mut found = Vec::new();
    walk(&cache.cache_dir(), prefix, &mut found);
    found
}
