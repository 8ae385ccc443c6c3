//! Tier 3: the swarm playbook on real Debian VMs booted by the lab, reached only
//! over SSH: from bare images to a swarm running the demo stack behind an
//! HAProxy load balancer, then a re-run with zero changes, then a new worker
//! (from the ready layer) that alone changes (with the NFS export and the
//! balancer's backends).
//!
//! Slow (package installs under TCG): `#[ignore]`d in the quick loop, run by
//! scripts/test.sh with --include-ignored. On failure the lab directory (console
//! logs, cluster.toml, run logs under .provision/logs) is kept and printed.
// A VM test prints its progress for CI's log; its secrets are throw-away.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

use provision_e2e::{assert_no_qemu_left, cached_debs, ready_layer, run, sh};
use provision_lab::{DropPolicy, Lab, LabSpec, LayerName, Role, UpOptions, VmSpec};
use std::time::{Duration, Instant};

#[test]
#[ignore = "boots real VMs and installs Docker (tier 3); run with --include-ignored"]
fn bare_vms_to_a_swarm_with_the_demo_stack_then_idempotent_then_a_new_worker() {
    // A load balancer in front of the swarm (role lb): HAProxy forwarding the
    // demo port (the lab's vars.lb_ports) to every swarm node. Booted with the
    // others: one boot round.
    let mut spec = LabSpec::topology("e2e-swarm", 1, 1, 1).expect("topology");
    spec.vms.push(VmSpec::new("lb-1", vec![Role::Lb]));
    let dir = std::env::temp_dir().join(format!("provision-e2e-swarm-{}", std::process::id()));
    // Generous: under TCG a loaded machine boots slowly; a quiet one takes about a minute.
    let opts = UpOptions {
        dir: Some(dir.clone()),
        boot_timeout: Duration::from_secs(900),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut lab = Lab::up(&spec, &opts).expect("lab up");
    // Gone when the test passes; stopped but kept (console logs, run logs) when it fails.
    lab.set_drop_policy(DropPolicy::TEST);
    eprintln!("lab up in {:?}; lab dir {}", t0.elapsed(), dir.display());
    let lb_ip = lab.vm("lb-1").expect("lb-1").private_ip;
    let cluster = lab.cluster_toml_path();

    // 1. From bare VMs: the whole playbook.
    let t1 = Instant::now();
    let first = run(&cluster, &[]);
    eprintln!("first run in {:?}", t1.elapsed());
    first.print_timeline("bare VMs to a swarm");
    assert!(first.ok(), "first run failed:\n{}", first.text());
    // The engine came through the lab's package cache: downloaded once for this machine.
    let debs = cached_debs("docker.io_");
    assert!(
        !debs.is_empty(),
        "docker.io is not in the lab's package cache (is apt-cacher-ng installed? scripts/install-lab-deps.sh)"
    );

    // Swarm membership and roles, seen from the manager.
    let nodes = sh(
        &lab,
        "manager-1",
        "docker node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}' | sort",
    );
    assert_eq!(
        nodes, "manager-1 Ready Leader\nworker-1 Ready \n",
        "docker node ls"
    );
    // The swarm's join tokens are secrets: not in the run's output nor in its log, though
    // `docker swarm init` prints the worker's.
    for role in ["worker", "manager"] {
        let token = sh(
            &lab,
            "manager-1",
            &format!("docker swarm join-token -q {role}"),
        );
        let token = token.trim();
        assert!(token.starts_with("SWMTKN-1-"), "{token}");
        let logs = cluster.parent().unwrap().join(".provision/logs");
        let mut seen = first.text();
        for e in std::fs::read_dir(&logs).expect("run logs") {
            seen.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
        }
        assert!(
            !seen.contains(token),
            "the {role} join token leaked into the run's output or {}",
            logs.display()
        );
    }
    // The good run recorded the swarm (for status when no leader answers).
    let id = sh(
        &lab,
        "manager-1",
        "docker info --format '{{.Swarm.Cluster.ID}}'",
    );
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cluster.parent().unwrap().join(".provision/last-good.json"))
            .expect("the last good state is recorded after a successful run"),
    )
    .unwrap();
    assert_eq!(record["swarm_id"], id.trim(), "{record}");
    assert_eq!(
        record["managers"],
        serde_json::json!(["manager-1"]),
        "{record}"
    );
    assert_eq!(
        record["workers"],
        serde_json::json!(["worker-1"]),
        "{record}"
    );
    let labels = sh(
        &lab,
        "manager-1",
        "docker node inspect worker-1 --format '{{json .Spec.Labels}}'",
    );
    assert_eq!(
        labels.trim(),
        "{\"swarm\":\"true\",\"swarm-worker\":\"true\"}"
    );
    // Hostnames and swap.
    for vm in ["storage-1", "manager-1", "worker-1"] {
        assert_eq!(sh(&lab, vm, "hostname").trim(), vm);
    }
    for vm in ["manager-1", "worker-1"] {
        // The file is the requested size; swapon reports it less the header page.
        let swap = sh(
            &lab,
            vm,
            "stat -c '%s %a' /swapfile; swapon --show=NAME --noheadings",
        );
        assert_eq!(swap, "536870912 600\n/swapfile\n", "{vm} swap");
    }
    // The NFS share: written on one node, read on the other.
    sh(
        &lab,
        "manager-1",
        "echo written-on-manager > /mnt/share/e2e-probe",
    );
    assert_eq!(
        sh(&lab, "worker-1", "cat /mnt/share/e2e-probe"),
        "written-on-manager\n"
    );
    assert_eq!(
        sh(&lab, "storage-1", "cat /srv/share/e2e-probe"),
        "written-on-manager\n"
    );
    // The demo stack runs and answers on every node's published port (routing mesh).
    let services = sh(
        &lab,
        "manager-1",
        "docker service ls --format '{{.Name}} {{.Replicas}}' | sort",
    );
    assert_eq!(services, "demo_ticker 1/1\ndemo_web 2/2\n", "services");
    for (vm, ip) in [("manager-1", "10.10.0.12"), ("worker-1", "10.10.0.13")] {
        let page = sh(
            &lab,
            vm,
            &format!("curl -fsS --max-time 10 http://{ip}:8080/"),
        );
        assert!(page.contains("provision demo"), "{vm}: {page}");
    }

    // Through the load balancer (lb-1 itself is bare: no curl there).
    for vm in ["manager-1", "worker-1"] {
        let page = sh(
            &lab,
            vm,
            &format!("curl -fsS --max-time 10 http://{lb_ip}:8080/"),
        );
        assert!(page.contains("provision demo"), "{vm} via lb-1: {page}");
    }

    // 2. Second run: nothing to change.
    let t2 = Instant::now();
    let second = run(&cluster, &[]);
    eprintln!("second run in {:?}", t2.elapsed());
    assert!(second.ok(), "second run failed:\n{}", second.text());
    assert_eq!(
        second.count("changed"),
        0,
        "second run changed something:\n{:?}",
        second.results
    );

    // 3. A new worker: only it changes, and it joins with its labels. Adding a node is
    // day-2 work, not the install (proven on the bare VMs above): it boots from the ready
    // layer, which the day-2 tests use too (built here first when the cache lacks it).
    let t3 = Instant::now();
    lab.add_vm_from(
        &VmSpec::new("worker-2", vec![Role::Worker]),
        Duration::from_secs(900),
        LayerName::Ready,
        Some(&ready_layer()),
    )
    .expect("add worker-2");
    eprintln!("worker-2 booted in {:?}", t3.elapsed());
    let t4 = Instant::now();
    let third = run(&cluster, &[]);
    eprintln!("run with worker-2 in {:?}", t4.elapsed());
    third.print_timeline("worker-2 joins");
    assert!(
        third.ok(),
        "run after adding worker-2 failed:\n{}",
        third.text()
    );
    // Only the new node changes, plus what must: the NFS export, restricted to
    // the cluster's private addresses, and the load balancer's backends now
    // list worker-2 too.
    let mut others: Vec<_> = third
        .results
        .iter()
        .filter(|r| r.2 == "changed" && r.1 != "worker-2")
        .map(|r| (r.0.as_str(), r.1.as_str()))
        .collect();
    others.sort();
    assert_eq!(
        others,
        vec![("load balancer", "lb-1"), ("nfs server", "storage-1")],
        "{:?}",
        third.results
    );
    assert!(third.changed_hosts().contains(&"worker-2".to_string()));
    let nodes = sh(
        &lab,
        "manager-1",
        "docker node ls --format '{{.Hostname}} {{.Status}}' | sort",
    );
    assert_eq!(nodes, "manager-1 Ready\nworker-1 Ready\nworker-2 Ready\n");
    eprintln!("whole test in {:?}", t0.elapsed());
    let lab_dir = lab.dir().to_path_buf();
    lab.down().expect("lab down");
    assert_no_qemu_left("e2e-swarm", &lab_dir);
}
