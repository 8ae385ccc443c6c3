//! Tier 3: boots real VMs under qemu and checks them through the real OpenSSH `ssh`: distinct
//! identities, the private network, bare images, `add_vm`, and `down`.
// A VM test prints its progress for CI's log.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

use provision_lab::aptcache::AptCache;
use provision_lab::{DEFAULT_BOOT_TIMEOUT, DropPolicy, Lab, LabSpec, Role, UpOptions, VmSpec};
use std::path::PathBuf;
use std::time::Instant;

/// Runs a command that must succeed and returns its trimmed stdout.
fn sh(lab: &Lab, vm: &str, cmd: &str) -> String {
    let out = lab.ssh(vm, cmd).expect("ssh runs");
    assert!(
        out.status.success(),
        "`{cmd}` on {vm} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .trim()
        .to_string()
}

#[test]
#[ignore = "boots real VMs (tier 3); run with --include-ignored"]
fn two_vms_are_distinct_bare_servers_on_one_private_network() {
    // A known place (not a temp dir that vanishes): on failure the console logs stay here.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lab_vm");
    let _ = provision_lab::down_dir(&dir);
    let spec = LabSpec::topology("t3", 0, 1, 1).unwrap();
    let opts = UpOptions {
        dir: Some(dir.clone()),
        ..Default::default()
    };
    let started = Instant::now();
    let mut lab = Lab::up(&spec, &opts).unwrap_or_else(|e| panic!("lab up: {e}"));
    lab.set_drop_policy(DropPolicy::TEST);
    eprintln!(
        "lab up (2 VMs, {}): {:.1} s",
        lab.accel().as_str(),
        started.elapsed().as_secs_f64()
    );

    // Every VM is running and answering.
    let status = lab.status();
    assert_eq!(status.len(), 2);
    assert!(
        status.iter().all(|s| s.pid.is_some() && s.ssh_answering),
        "{status:?}"
    );

    // Generic host name (the playbook sets it), distinct machine-ids.
    for vm in ["manager-1", "worker-1"] {
        assert_eq!(sh(&lab, vm, "hostname"), "debian");
    }
    let ids: Vec<String> = ["manager-1", "worker-1"]
        .iter()
        .map(|vm| sh(&lab, vm, "cat /etc/machine-id"))
        .collect();
    assert!(
        ids.iter()
            .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())),
        "{ids:?}"
    );
    assert_ne!(ids[0], ids[1]);

    // Host keys: pinned from the console, distinct, and what the VM really has.
    let mut ed25519 = Vec::new();
    for vm in ["manager-1", "worker-1"] {
        let v = lab.vm(vm).unwrap();
        assert_eq!(
            v.host_keys_from, "console",
            "{vm} keys came from {}",
            v.host_keys_from
        );
        let pinned = v
            .host_keys
            .iter()
            .find(|k| k.key_type == "ssh-ed25519")
            .expect("ed25519 key");
        let live = sh(&lab, vm, "cat /etc/ssh/ssh_host_ed25519_key.pub");
        assert!(
            live.starts_with(&format!("ssh-ed25519 {}", pinned.base64)),
            "{vm}: {live}"
        );
        ed25519.push(pinned.base64.clone());
    }
    assert_ne!(ed25519[0], ed25519[1]);

    // The private network: eth1 has the assigned address and VM1 reaches VM2's sshd over it.
    assert!(sh(&lab, "manager-1", "ip -4 -o addr show dev eth1").contains("inet 10.10.0.11/24"));
    assert!(sh(&lab, "worker-1", "ip -4 -o addr show dev eth1").contains("inet 10.10.0.12/24"));
    let banner = sh(
        &lab,
        "manager-1",
        "timeout 20 bash -c 'exec 3<>/dev/tcp/10.10.0.12/22 && head -c 7 <&3'",
    );
    assert_eq!(banner, "SSH-2.0");

    // DNS through qemu's NAT resolves Debian's mirror (apt inside the VMs depends on it).
    assert!(!sh(&lab, "worker-1", "getent hosts deb.debian.org").is_empty());

    // Bare: nothing the playbook installs.
    for vm in ["manager-1", "worker-1"] {
        assert_eq!(
            sh(&lab, vm, "command -v docker dockerd || echo none"),
            "none"
        );
        let out = lab
            .ssh(
                vm,
                "dpkg-query -W -f='${Status}\\n' docker.io nfs-common nfs-kernel-server",
            )
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("install ok installed"),
            "{vm} has docker or NFS"
        );
    }

    // The inventory: two hosts, pinned keys.
    let text = std::fs::read_to_string(lab.cluster_toml_path()).unwrap();
    let inv: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(inv["ssh"]["host_key_policy"].as_str(), Some("strict"));
    assert_eq!(inv["hosts"].as_array().unwrap().len(), 2);

    // Add a node to the lab and to the inventory.
    let started = Instant::now();
    lab.add_vm(
        &VmSpec::new("worker-2", vec![Role::Worker]),
        DEFAULT_BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("add_vm: {e}"));
    eprintln!("lab add (1 VM): {:.1} s", started.elapsed().as_secs_f64());
    let text = std::fs::read_to_string(lab.cluster_toml_path()).unwrap();
    assert!(
        text.contains("name = \"worker-2\"\naddress = \"127.0.0.1\"\n"),
        "{text}"
    );
    assert!(
        text.contains("private_ip = \"10.10.0.13\"\nroles = [\"worker\"]\n"),
        "{text}"
    );
    let banner = sh(
        &lab,
        "manager-1",
        "timeout 20 bash -c 'exec 3<>/dev/tcp/10.10.0.13/22 && head -c 7 <&3'",
    );
    assert_eq!(banner, "SSH-2.0");
    assert_ne!(sh(&lab, "worker-2", "cat /etc/machine-id"), ids[0]);

    // Down: qemu gone, directory gone.
    // The VMs' apt goes through the lab's package cache, which answers them on the host's
    // loopback as qemu's NAT shows it.
    let cache = AptCache::default_root().unwrap();
    let proxy = cache
        .running()
        .expect("the package cache runs while VMs do (is apt-cacher-ng installed? scripts/install-lab-deps.sh)");
    assert_eq!(
        sh(
            &lab,
            "worker-2",
            "cat /etc/apt/apt.conf.d/00provision-lab-proxy"
        ),
        format!(
            "Acquire::http::Proxy \"http://10.0.2.2:{}/\";\nAcquire::http::Proxy::10.0.2.2 \"DIRECT\";\nAcquire::https::Proxy \"DIRECT\";",
            proxy.port
        )
    );
    let answer = sh(
        &lab,
        "manager-1",
        &format!(
            "timeout 20 bash -c 'exec 3<>/dev/tcp/10.0.2.2/{} && printf \"HEAD / HTTP/1.0\\r\\n\\r\\n\" >&3 && head -c 5 <&3'",
            proxy.port
        ),
    );
    assert_eq!(answer, "HTTP/", "the package cache does not answer the VMs");
    let lab_dir = lab.dir().to_path_buf();
    assert!(!cache.released_by(&lab_dir));

    let pids: Vec<u32> = lab.status().iter().filter_map(|s| s.pid).collect();
    assert_eq!(pids.len(), 3);
    let started = Instant::now();
    let report = lab.down().unwrap();
    eprintln!("lab down: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(report.stopped.len(), 3);
    assert!(report.removed_dir);
    assert!(!dir.exists());
    assert!(
        cache.released_by(&lab_dir),
        "the package cache outlived the lab: {:?}",
        cache.running()
    );
    for pid in pids {
        // Gone or a zombie (whoever reaps daemonized qemu may be slow to collect it).
        assert!(
            !provision_lab::process::pid_alive(pid),
            "qemu {pid} still running"
        );
    }
}
