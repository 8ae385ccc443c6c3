//! Fleet scale (issue 8): `provision`'s no-change run on hundreds to a thousand local
//! hosts from one machine, against the OpenSSH floor (N parallel `ssh HOST true`).
//!
//! Hosts are the same as `compare`'s (one sshd per host in its own mount/UTS/PID
//! namespaces on its own 127.77.X.Y), made lighter: an empty `/root/.bashrc` is bound
//! inside each host so remote commands do not pay this machine's `pyenv init` (use
//! `--bashrc` to keep it). Per N: a fresh fleet, the first run (converges), the
//! no-change run, the floor; wall time, CPU, peak RSS, peak open fds, failures.
//!
//! Usage:
//!   cargo build --release -p provision
//!   cargo run --release -p provision-bench --bin fleet -- 200,500,1000 \
//!       [--forks 64] [--job dpkg|apt] [--nofile N] [--bashrc] [--no-floor] [--tty] [--json FILE]
//!
//! `--tty` runs provision under `script` (a pseudo-terminal), to measure its live
//! progress rendering; the bytes it wrote to the terminal are reported. `--tty-also` and
//! `--nofile-also N` add no-change runs (per N, after the measured ones) under a
//! pseudo-terminal and with a soft limit of N open files (1024 is a common default).
//! Every N also measures `provision check-config` (load + compile, no connection);
//! `--compile-only` does only that, without starting hosts.
// Benchmark reports are printed by design and hold no secrets of a cluster.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

use provision_bench::fleet::{Fleet, FleetOptions};
use provision_bench::measure::{self, Measured};
use provision_bench::tools::{self, Tool};
use provision_bench::workload::{self, PackageStep};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

struct Args {
    hosts: Vec<usize>,
    forks: usize,
    job: PackageStep,
    nofile: Option<u64>,
    bashrc: bool,
    floor: bool,
    json: Option<PathBuf>,
    port: u16,
    keep: bool,
    tty: bool,
    /// Extra no-change runs after the measured ones: under a pseudo-terminal, and with
    /// this soft limit on open files.
    tty_also: bool,
    nofile_also: Option<u64>,
    /// Only `provision check-config` per N (compile cost; no hosts started).
    compile_only: bool,
}

/// The same command under `script`, so that provision's stderr is a terminal and it
/// renders live progress (the summary bar above 40 hosts) as a user would see it.
fn in_pty(cmd: &std::process::Command) -> std::process::Command {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let line = std::iter::once(quote(cmd.get_program()))
        .chain(cmd.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ");
    let mut w = std::process::Command::new("script");
    w.args([
        "-qfec",
        &format!("stty cols 120 rows 40 2>/dev/null; exec {line}"),
        "/dev/null",
    ]);
    if let Some(d) = cmd.get_current_dir() {
        w.current_dir(d);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    w
}

fn parse_args() -> Args {
    let mut a = Args {
        hosts: vec![200, 500, 1000],
        forks: 64,
        job: PackageStep::DpkgGuard,
        nofile: None,
        bashrc: false,
        floor: true,
        json: None,
        port: 40022,
        keep: false,
        tty: false,
        tty_also: false,
        nofile_also: None,
        compile_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--forks" => a.forks = it.next().expect("--forks N").parse().expect("a number"),
            "--job" => {
                a.job = match it.next().as_deref() {
                    Some("apt") => PackageStep::Apt,
                    Some("dpkg") => PackageStep::DpkgGuard,
                    other => panic!("--job apt|dpkg, not {other:?}"),
                }
            }
            "--nofile" => {
                a.nofile = Some(it.next().expect("--nofile N").parse().expect("a number"))
            }
            "--bashrc" => a.bashrc = true,
            "--no-floor" => a.floor = false,
            "--json" => a.json = Some(PathBuf::from(it.next().expect("--json FILE"))),
            "--port" => a.port = it.next().expect("--port N").parse().expect("a port"),
            "--keep" => a.keep = true,
            "--tty" => a.tty = true,
            "--tty-also" => a.tty_also = true,
            "--compile-only" => a.compile_only = true,
            "--nofile-also" => {
                a.nofile_also = Some(
                    it.next()
                        .expect("--nofile-also N")
                        .parse()
                        .expect("a number"),
                )
            }
            "-h" | "--help" => {
                println!(
                    "fleet [200,500,1000] [--forks 64] [--job dpkg|apt] [--nofile N] [--bashrc] [--no-floor] [--tty] [--tty-also] [--nofile-also N] [--compile-only] [--json FILE] [--port 40022] [--keep]"
                );
                std::process::exit(0);
            }
            s if s.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                a.hosts = s
                    .split(',')
                    .map(|x| x.trim().parse().expect("host counts"))
                    .collect()
            }
            other => panic!("unknown argument {other} (see --help)"),
        }
    }
    a
}

/// "N host(s), C changed, F failed or unreachable" from provision's recap.
fn recap(log: &std::path::Path) -> (Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for l in text.lines().rev() {
        if l.contains(" host(s), ") && l.contains(" failed or unreachable") {
            let nums: Vec<u64> = l
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|s| s.parse().ok())
                .collect();
            if nums.len() >= 3 {
                return (Some(nums[1]), Some(nums[2]));
            }
        }
    }
    (None, None)
}

fn main() {
    provision_bench::log_sigterm_senders();
    let args = parse_args();
    let _ = tools::provision_bin();
    let venv = tools::venv();
    let work = tools::workspace_root()
        .join("target/bench-work")
        .join(format!("fleet-{}", std::process::id()));
    let max = *args.hosts.iter().max().unwrap();
    eprintln!("preparing {max} hosts under {} ...", work.display());
    let mut fleet = Fleet::prepare(
        &work.join("fleet"),
        max,
        FleetOptions {
            port: args.port,
            light_shell: !args.bashrc,
        },
    );
    let home = work.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| work.with_extension("json"));
    let command = format!(
        "cargo run --release -p provision-bench --bin fleet -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let (machine, source, versions) = (
        tools::machine(),
        tools::source_rev(),
        tools::versions(&venv),
    );
    // Written after every N, so an interrupted run keeps what it measured.
    let save = |rows: &Vec<serde_json::Value>, complete: bool| {
        let report = serde_json::json!({
            "command": command,
            "complete": complete,
            "machine": machine,
            "source": source,
            "provision": versions["provision"],
            "openssh": versions["openssh"],
            "light_shell": !args.bashrc,
            "job": format!("{:?}", args.job),
            "nofile": args.nofile.unwrap_or(tools::nofile()),
            "results": rows,
        });
        std::fs::write(&json_path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    };
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for &n in &args.hosts {
        let dir = work.join(format!("n{n}"));
        workload::write_provision(&dir, &fleet, n, args.job);
        let mut cc = std::process::Command::new(tools::provision_bin());
        cc.args(["check-config", "cluster.toml"])
            .current_dir(&dir)
            .env("HOME", &home);
        let c = measure::run(
            &mut cc,
            Duration::from_secs(600),
            &dir.join("check-config.log"),
            false,
        );
        eprintln!(
            "== N = {n}: provision check-config (load + compile): {:.2} s wall, {:.0} MB peak RSS, {}",
            c.wall.as_secs_f64(),
            c.max_rss_kb as f64 / 1024.0,
            c.status_text()
        );
        let mut row = serde_json::json!({"n": n, "forks": args.forks, "check_config": c.json()});
        if args.compile_only {
            rows.push(row);
            save(&rows, false);
            continue;
        }
        eprintln!("  starting {n} hosts ...");
        let t0 = std::time::Instant::now();
        fleet.start(n);
        eprintln!("  {n} hosts up in {:.1} s", t0.elapsed().as_secs_f64());
        let timeout = Duration::from_secs(300 + n as u64);
        let mut runs: Vec<(&str, bool, Option<u64>)> = vec![
            ("first", args.tty, args.nofile),
            ("nochange", args.tty, args.nofile),
        ];
        if args.tty_also {
            runs.push(("nochange_tty", true, args.nofile));
        }
        if let Some(l) = args.nofile_also {
            runs.push(("nochange_nofile", args.tty, Some(l)));
        }
        for (run, tty, nofile) in runs {
            let log = dir.join(format!("{run}.log"));
            let mut cmd = Tool::Provision.command(&dir, args.forks, &home, &venv, run);
            if tty {
                cmd = in_pty(&cmd);
            }
            if let Some(limit) = nofile {
                // SAFETY: setrlimit is async-signal-safe.
                unsafe {
                    cmd.pre_exec(move || {
                        let r = libc::rlimit {
                            rlim_cur: limit,
                            rlim_max: limit.max(tools::nofile()),
                        };
                        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
                        Ok(())
                    });
                }
            }
            eprintln!("  provision {run} run ...");
            let m = measure::run(&mut cmd, timeout, &log, false);
            let (changed, failed) = recap(&log);
            eprintln!(
                "    {:.1} s wall, {:.1} s CPU, {:.0} MB peak RSS, {} peak fds, changed {:?}, failed {:?}, {}",
                m.wall.as_secs_f64(),
                m.cpu().as_secs_f64(),
                m.max_rss_kb as f64 / 1024.0,
                m.peak_fds,
                changed,
                failed,
                m.status_text()
            );
            if !m.success() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let failures: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains("unreachable") || l.contains("failed"))
                    .take(8)
                    .collect();
                eprintln!("  !! log {}:\n{}", log.display(), failures.join("\n"));
            }
            let mut j = m.json();
            j["changed"] = changed.into();
            j["failed_or_unreachable"] = failed.into();
            j["log"] = log.display().to_string().into();
            j["output_bytes"] = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0).into();
            j["tty"] = tty.into();
            j["nofile"] = nofile.unwrap_or(tools::nofile()).into();
            row[run] = j;
        }
        // A spread of 10 hosts really converged.
        let errors: Vec<String> = (0..10)
            .map(|k| k * (n - 1) / 9)
            .filter_map(|i| workload::verify_host(&fleet, i).err())
            .collect();
        if !errors.is_empty() {
            eprintln!("  !! not converged:\n{}", errors.join("\n"));
        }
        row["verify_errors"] = errors.into();
        if args.floor {
            let argvs: Vec<Vec<String>> = (0..n).map(|i| fleet.ssh_argv(i, "true")).collect();
            let (f, failed): (Measured, usize) = measure::parallel_ssh(&argvs);
            eprintln!(
                "  floor: {n} parallel `ssh HOST true`: {:.1} s wall, {:.1} s CPU, {failed} failed",
                f.wall.as_secs_f64(),
                f.cpu().as_secs_f64()
            );
            let mut fj = f.json();
            fj["failed"] = failed.into();
            row["floor"] = fj;
        }
        fleet.stop();
        rows.push(row);
        save(&rows, false);
    }
    drop(fleet);

    println!(
        "\nprovision no-change run (first run in brackets); --forks {}; job: {:?}; target shell: {}",
        args.forks,
        args.job,
        if args.bashrc {
            "root's .bashrc (pyenv)"
        } else {
            "light (empty .bashrc)"
        }
    );
    println!(
        "| hosts | no-change wall s | (first run s) | CPU s | peak RSS MB | peak fds | failed | floor: N x `ssh true` s | ratio to floor |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows.iter().filter(|r| r.get("nochange").is_some()) {
        let nc = &r["nochange"];
        let w = nc["wall_s"].as_f64().unwrap();
        let floor = r.get("floor").and_then(|f| f["wall_s"].as_f64());
        let failed = nc["failed_or_unreachable"]
            .as_u64()
            .map(|f| f.to_string())
            .unwrap_or_else(|| {
                format!(
                    "? ({})",
                    if nc["timed_out"] == true {
                        "timed out"
                    } else {
                        "no recap"
                    }
                )
            });
        println!(
            "| {} | {:.1} | ({:.1}) | {:.1} | {:.0} | {} | {} | {} | {} |",
            r["n"],
            w,
            r["first"]["wall_s"].as_f64().unwrap(),
            nc["cpu_s"].as_f64().unwrap(),
            nc["max_rss_mb"].as_f64().unwrap(),
            nc["peak_fds"],
            failed,
            floor.map(|f| format!("{f:.1}")).unwrap_or("-".into()),
            floor
                .map(|f| format!("{:.2}x", w / f))
                .unwrap_or("-".into()),
        );
    }
    println!(
        "\n| hosts | `provision check-config` (load + compile) s | its peak RSS MB |\n|---|---|---|"
    );
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.0} |",
            r["n"],
            r["check_config"]["wall_s"].as_f64().unwrap_or(0.0),
            r["check_config"]["max_rss_mb"].as_f64().unwrap_or(0.0)
        );
    }
    for r in &rows {
        for (key, what) in [
            ("nochange_tty", "under a pseudo-terminal (live progress)"),
            ("nochange_nofile", "with a lower open-files limit"),
        ] {
            if let Some(v) = r.get(key) {
                println!(
                    "{} hosts, no-change run {what} (nofile {}): {:.1} s wall, {:.0} MB, {} peak fds, {} failed or unreachable, {} bytes of output, {}",
                    r["n"],
                    v["nofile"],
                    v["wall_s"].as_f64().unwrap_or(0.0),
                    v["max_rss_mb"].as_f64().unwrap_or(0.0),
                    v["peak_fds"],
                    v["failed_or_unreachable"],
                    v["output_bytes"],
                    if v["exit_code"] == 0 {
                        "exit 0"
                    } else {
                        "failed"
                    }
                );
            }
        }
    }
    save(&rows, true);
    eprintln!("wrote {}", json_path.display());
    if !args.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
}
