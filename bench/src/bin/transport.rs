//! Transport benchmark (issue "SSH transport"): provision's pooled russh connections
//! against OpenSSH on N local sshd hosts.
//!
//! 1. connect + run `true` on N hosts at once, vs N parallel `ssh HOST true`;
//! 2. per-command latency: commands on one reused connection vs a fresh `ssh` each.
//!
//! Usage: cargo run --release -p provision-bench --bin transport -- [N...] [--json FILE]
// Benchmark reports are printed by design and hold no secrets of a cluster.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

use provision_bench::{median, ms};
use provision_testkit::{Sshd, keygen};
use provision_transport::{Command, ConnectOptions, HostKeyPolicy, SshPool, Target, Transport};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ssh_argv(key: &Path, kh: &Path, port: u16) -> Vec<String> {
    [
        "-i",
        &key.display().to_string(),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        &format!("UserKnownHostsFile={}", kh.display()),
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ControlMaster=no",
        "-p",
        &port.to_string(),
        "root@127.0.0.1",
        "true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn openssh_parallel(servers: &[Sshd], key: &Path, kh: &Path) -> Duration {
    let start = Instant::now();
    let children: Vec<_> = servers
        .iter()
        .map(|s| {
            std::process::Command::new("ssh")
                .args(ssh_argv(key, kh, s.port))
                .stdout(Stdio::null())
                .spawn()
                .expect("ssh")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "ssh failed");
    }
    start.elapsed()
}

fn options(kh: &Path) -> ConnectOptions {
    let mut o = ConnectOptions::new(kh.to_path_buf());
    o.extra_known_hosts = vec![];
    o.agent_socket = None;
    o.policy = HostKeyPolicy::Strict;
    o.max_connecting = 256;
    o
}

async fn provision_parallel(servers: &[Sshd], key: &Path, kh: &Path) -> Duration {
    let pool = Arc::new(SshPool::new(options(kh)).unwrap());
    let start = Instant::now();
    let futs = servers.iter().enumerate().map(|(i, s)| {
        let pool = pool.clone();
        let t = Target {
            name: format!("h{i}"),
            address: "127.0.0.1".into(),
            port: Some(s.port),
            user: Some("root".into()),
            identity: Some(key.to_path_buf()),
            ..Default::default()
        };
        async move {
            let sess = pool.session(&t).await.expect("connect");
            assert!(sess.run(Command::new("true")).await.expect("run").success());
        }
    });
    futures::future::join_all(futs).await;
    start.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json_path = args
        .iter()
        .position(|a| a == "--json")
        .map(|i| args[i + 1].clone());
    let mut ns: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if ns.is_empty() {
        ns = vec![1, 10, 50, 100];
    }
    let max = *ns.iter().max().unwrap();
    let dir = tempfile_dir();
    let key = keygen(&dir, "bench", "ed25519", "");
    eprintln!("starting {max} sshd on 127.0.0.1...");
    let servers: Vec<Sshd> = (0..max).map(|_| Sshd::start()).collect();
    let kh = dir.join("known_hosts");
    let mut lines = String::new();
    for s in &servers {
        s.authorize(&key);
        lines.push_str(&s.known_hosts_line());
    }
    std::fs::write(&kh, lines).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut rows = Vec::new();
    println!("connect + one command on N hosts at once (median of 3)");
    println!(
        "{:>5}  {:>14}  {:>14}  {:>7}",
        "N", "provision ms", "openssh ms", "ratio"
    );
    for &n in &ns {
        let hosts = &servers[..n];
        let p = median(
            (0..3)
                .map(|_| rt.block_on(provision_parallel(hosts, &key.private, &kh)))
                .collect(),
        );
        let o = median(
            (0..3)
                .map(|_| openssh_parallel(hosts, &key.private, &kh))
                .collect(),
        );
        let ratio = ms(p) / ms(o);
        println!("{:>5}  {:>14.0}  {:>14.0}  {:>7.2}", n, ms(p), ms(o), ratio);
        rows.push(
            serde_json::json!({"n": n, "provision_ms": ms(p), "openssh_ms": ms(o), "ratio": ratio}),
        );
    }

    // Per-command latency, sequential, one host.
    let reps = 30;
    let s0 = &servers[0];
    let reused = rt.block_on(async {
        let pool = SshPool::new(options(&kh)).unwrap();
        let t = Target {
            name: "h0".into(),
            address: "127.0.0.1".into(),
            port: Some(s0.port),
            user: Some("root".into()),
            identity: Some(key.private.clone()),
            ..Default::default()
        };
        let sess = pool.session(&t).await.unwrap();
        let mut xs = Vec::new();
        for _ in 0..reps {
            let start = Instant::now();
            assert!(sess.run(Command::new("true")).await.unwrap().success());
            xs.push(start.elapsed());
        }
        median(xs)
    });
    let fresh = median(
        (0..reps)
            .map(|_| {
                let start = Instant::now();
                assert!(
                    std::process::Command::new("ssh")
                        .args(ssh_argv(&key.private, &kh, s0.port))
                        .status()
                        .unwrap()
                        .success()
                );
                start.elapsed()
            })
            .collect(),
    );
    println!(
        "\nper-command latency, median of {reps}: reused connection {:.1} ms, fresh ssh {:.1} ms, ratio {:.2}x",
        ms(reused),
        ms(fresh),
        ms(fresh) / ms(reused)
    );
    let report = serde_json::json!({
        "parallel_connect": rows,
        "per_command": {"reused_ms": ms(reused), "fresh_ssh_ms": ms(fresh), "speedup": ms(fresh) / ms(reused)},
    });
    if let Some(p) = json_path {
        std::fs::write(&p, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        eprintln!("wrote {p}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("provision-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
