//! Helpers shared by the real-sshd test files of the binary: its output as text, the host
//! results of a `--output json` run, and (`hosts`) the sshd hosts those runs go to.

// Each test file uses its own part of the harness.
#[allow(dead_code)]
pub mod hosts;

use std::process::Output;

/// stdout then stderr, for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Host results of a `--output json` run: (step, host, status).
pub fn host_results(out: &Output) -> Vec<(String, String, String)> {
    String::from_utf8_lossy(&out.stdout)
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
        .collect()
}
