//! Side-by-side benchmark (issue 8): the same 10-step job run by `provision`,
//! `ansible-playbook` (facts on, and off) and `pyinfra` on N local hosts, each a real
//! OpenSSH sshd in its own mount/UTS/PID namespaces on its own 127.77.X.Y address.
//!
//! For each N: the OpenSSH floor (N parallel `ssh HOST true`, median of 3), then per tool,
//! on a fresh fleet: the first run (converges every host; checked afterwards over ssh)
//! and the no-change run. Each run is measured as a child process: wall, CPU
//! (user + sys, descendants included) and peak RSS.
//!
//! Usage:
//!   cargo build --release -p provision
//!   cargo run --release -p provision-bench --bin compare -- --hosts 1,10,50,100 \
//!       [--tools provision,provision-dpkg,ansible,ansible-nofacts,pyinfra] [--json FILE] [--keep]
// Benchmark reports are printed by design and hold no secrets of a cluster.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

use provision_bench::fleet::{Fleet, FleetOptions};
use provision_bench::measure::{self, Measured};
use provision_bench::tools::{self, Tool};
use provision_bench::workload::{self, PackageStep};
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Args {
    hosts: Vec<usize>,
    tools: Vec<String>,
    json: Option<PathBuf>,
    keep: bool,
    port: u16,
}

fn parse_args() -> Args {
    let mut a = Args {
        hosts: vec![1, 10, 50, 100],
        tools: [
            "provision",
            "provision-dpkg",
            "ansible",
            "ansible-nofacts",
            "pyinfra",
        ]
        .map(String::from)
        .to_vec(),
        json: None,
        keep: false,
        port: 40022,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--hosts" => {
                a.hosts = it
                    .next()
                    .expect("--hosts 1,10,50")
                    .split(',')
                    .map(|s| s.trim().parse().expect("--hosts takes numbers"))
                    .collect()
            }
            "--tools" => {
                a.tools = it
                    .next()
                    .expect("--tools provision,pyinfra")
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            "--json" => a.json = Some(PathBuf::from(it.next().expect("--json FILE"))),
            "--port" => a.port = it.next().expect("--port N").parse().expect("a port"),
            "--keep" => a.keep = true,
            "-h" | "--help" => {
                println!(
                    "compare [--hosts 1,10,50,100] [--tools provision,provision-dpkg,ansible,ansible-nofacts,pyinfra] [--json FILE] [--port 40022] [--keep]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (see --help)"),
        }
    }
    for t in &a.tools {
        assert!(Tool::parse(t).is_some(), "unknown tool {t}");
    }
    a
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2}")
    } else {
        format!("{s:.1}")
    }
}

/// One tool's two runs on a fresh fleet of n hosts.
fn run_tool(
    tool: &Tool,
    fleet: &mut Fleet,
    n: usize,
    work: &Path,
    venv: &Path,
) -> serde_json::Value {
    if fleet.running() > 0 {
        fleet.stop();
    }
    fleet.start(n);
    let dir = work.join(format!("n{n}")).join(tool.key());
    match tool {
        Tool::Provision => workload::write_provision(&dir, fleet, n, PackageStep::Apt),
        Tool::ProvisionDpkg => workload::write_provision(&dir, fleet, n, PackageStep::DpkgGuard),
        Tool::Ansible(_) => workload::write_ansible(&dir, fleet, n),
        Tool::Pyinfra => workload::write_pyinfra(&dir, fleet, n),
    }
    let home = work.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let timeout = Duration::from_secs(120 + 15 * n as u64);
    let mut out = serde_json::Map::new();
    for run in ["first", "nochange"] {
        eprintln!("  {} {run} run on {n} hosts ...", tool.label());
        let log = dir.join(format!("{run}.log"));
        let mut cmd = tool.command(&dir, n, &home, venv, run);
        let m = measure::run(&mut cmd, timeout, &log, true);
        if let Tool::Ansible(_) = tool {
            // ControlPersist masters outlive the run: end them so the next run starts cold.
            tools::kill_matching(&dir.join(format!("cp-{run}")).display().to_string());
        }
        let mut j = m.json();
        if !m.success() {
            let tail: String = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!(
                "  !! {} {run}: {} (log {}):\n{tail}",
                tool.label(),
                m.status_text(),
                log.display()
            );
        }
        j["log"] = log.display().to_string().into();
        eprintln!(
            "    {} s wall, {} s CPU, {:.0} MB max RSS, {}",
            secs(m.wall),
            secs(m.cpu()),
            m.max_rss_kb as f64 / 1024.0,
            m.status_text()
        );
        if run == "first" {
            // Every host converged? (all of them up to 10, else a spread of 10)
            let sample: Vec<usize> = if n <= 10 {
                (0..n).collect()
            } else {
                (0..10).map(|k| k * (n - 1) / 9).collect()
            };
            let errors: Vec<String> = sample
                .iter()
                .filter_map(|&i| workload::verify_host(fleet, i).err())
                .collect();
            if !errors.is_empty() {
                eprintln!(
                    "  !! {} did not converge:\n{}",
                    tool.label(),
                    errors.join("\n")
                );
            }
            j["verified_hosts"] = sample.len().into();
            j["verify_errors"] = errors.into();
        }
        out.insert(run.into(), j);
    }
    fleet.stop();
    serde_json::Value::Object(out)
}

fn get(v: &serde_json::Value, tool: &str, run: &str, field: &str) -> Option<f64> {
    v.get(tool)?.get(run)?.get(field)?.as_f64()
}

fn ok(v: &serde_json::Value, tool: &str, run: &str) -> bool {
    v.get(tool)
        .and_then(|t| t.get(run))
        .is_some_and(|r| r["exit_code"] == 0 && r["timed_out"] == false)
}

fn main() {
    provision_bench::log_sigterm_senders();
    let args = parse_args();
    let venv = tools::ensure_venv();
    let _ = tools::provision_bin();
    let work = tools::workspace_root()
        .join("target/bench-work")
        .join(format!("compare-{}", std::process::id()));
    let max = *args.hosts.iter().max().unwrap();
    eprintln!("preparing {max} hosts under {} ...", work.display());
    let mut fleet = Fleet::prepare(
        &work.join("fleet"),
        max,
        FleetOptions {
            port: args.port,
            light_shell: false,
        },
    );
    let command = format!(
        "cargo run --release -p provision-bench --bin compare -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| work.with_extension("json"));
    let machine = tools::machine();
    let versions = tools::versions(&venv);
    let source = tools::source_rev();
    // Written after every tool run, so an interrupted benchmark keeps what it measured.
    let save = |rows: &Vec<serde_json::Value>, complete: bool| {
        let report = serde_json::json!({
            "command": command,
            "complete": complete,
            "machine": machine,
            "versions": versions,
            "source": source,
            "results": rows,
        });
        std::fs::write(&json_path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    };
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for &n in &args.hosts {
        eprintln!("== N = {n}");
        fleet.start(n);
        let argvs: Vec<Vec<String>> = (0..n).map(|i| fleet.ssh_argv(i, "true")).collect();
        let mut floors: Vec<(Measured, usize)> =
            (0..3).map(|_| measure::parallel_ssh(&argvs)).collect();
        floors.sort_by_key(|(m, _)| m.wall);
        let (floor, floor_failed) = floors.swap_remove(1);
        eprintln!(
            "  floor: {n} parallel `ssh HOST true`: {} s wall (median of 3), {} failed",
            secs(floor.wall),
            floor_failed
        );
        fleet.stop();
        let mut floor_json = floor.json();
        floor_json["failed"] = floor_failed.into();
        rows.push(serde_json::json!({"n": n, "floor": floor_json, "tools": {}}));
        for t in &args.tools {
            let tool = Tool::parse(t).unwrap();
            let r = run_tool(&tool, &mut fleet, n, &work, &venv);
            rows.last_mut().unwrap()["tools"][tool.key()] = r;
            save(&rows, false);
        }
    }
    drop(fleet);

    // The table.
    println!("\nSame 10-step job; wall seconds; ratio = tool / provision (no-change run)");
    println!(
        "| N | tool | first run s | no-change s | no-change ratio | no-change CPU s | peak RSS MB (largest process / process group) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &rows {
        let n = row["n"].as_u64().unwrap();
        let t = &row["tools"];
        let p = get(t, "provision", "nochange", "wall_s");
        for key in [
            "provision",
            "provision-dpkg",
            "ansible",
            "ansible-nofacts",
            "pyinfra",
        ] {
            if t.get(key).is_none() {
                continue;
            }
            let label = Tool::parse(key).unwrap().label();
            let cell = |run: &str| match get(t, key, run, "wall_s") {
                Some(w) if ok(t, key, run) => format!("{w:.2}"),
                Some(w) => format!("{w:.2} (failed)"),
                None => "-".into(),
            };
            let ratio = match (get(t, key, "nochange", "wall_s"), p) {
                (Some(w), Some(p)) if p > 0.0 => format!("{:.1}x", w / p),
                _ => "-".into(),
            };
            println!(
                "| {n} | {label} | {} | {} | {ratio} | {:.2} | {:.0} / {:.0} |",
                cell("first"),
                cell("nochange"),
                get(t, key, "nochange", "cpu_s").unwrap_or(0.0),
                get(t, key, "nochange", "max_rss_mb").unwrap_or(0.0),
                get(t, key, "nochange", "group_rss_peak_mb").unwrap_or(0.0),
            );
        }
        let f = &row["floor"];
        let fw = f["wall_s"].as_f64().unwrap();
        println!(
            "| {n} | floor: {n} parallel `ssh HOST true` | - | {fw:.2} | {} | {:.2} | {:.0} / {:.0} (sum) |",
            p.map(|p| format!("provision = {:.2}x floor", p / fw))
                .unwrap_or("-".into()),
            f["cpu_s"].as_f64().unwrap(),
            f["max_rss_mb"].as_f64().unwrap(),
            f["group_rss_peak_mb"].as_f64().unwrap(),
        );
    }
    save(&rows, true);
    eprintln!("wrote {}", json_path.display());
    if !args.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
}
