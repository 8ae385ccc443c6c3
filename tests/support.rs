//! Support for the end-to-end tests: the built `provision` binary, runs with JSON
//! events, and where a failed test leaves its logs.

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
