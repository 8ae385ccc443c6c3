//! Tier 3, the Appwrite stack: the built-in playbook with `stack = "appwrite"` on a storage
//! node, a manager, a worker and a load balancer, set up as a user would (`secrets init`,
//! `secrets generate`, `check-config`, `run`). The lab builds the stack's images under the
//! compose file's names (real MariaDB and Redis from Debian's packages, stand-ins for Appwrite
//! and Traefik: templates/appwrite/lab-images.sh): the default version's in the ready layer,
//! the upgrades' on the nodes. Asserts: every service runs
//! with its replicas; MariaDB's data is in a local volume of the data node, not on the share;
//! the edge answers on 80 and 443 on every swarm node, routing by path as the Traefik labels
//! say; a request through the load balancer reaches the API with the client's own address
//! (PROXY protocol v2, trusted from the load balancer only) and the API logs in to MariaDB
//! with the generated password; a re-run changes nothing. Then the upgrade path: a new version
//! dumps the database, deploys, migrates once and converges, and a re-run does not migrate
//! again; a failing migration rolls the stack back and exits 1 naming the dump (only with
//! PROVISION_E2E_FAILING_UPGRADE=1: 13-17 minutes more); `provision rollback` names the
//! version it would go back to.
//!
//! The VMs start from the lab's ready layer. `#[ignore]`d in the quick loop, run by
//! scripts/test.sh. On failure the lab directory (console logs, cluster.toml, run logs) is kept.
// A VM test prints its progress for CI's log; its secrets are throw-away.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

use provision_e2e::{assert_no_qemu_left, provision, ready_layer, run, sh};
use provision_lab::{DropPolicy, Lab, LabSpec, LayerName, Role, UpOptions, VmSpec};
use std::path::Path;
use std::time::{Duration, Instant};

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// An HTTP/1.0 GET sent from `vm` with bash's /dev/tcp (no HTTP client on the VMs): the
/// whole answer, status line, headers and body.
fn get(lab: &Lab, vm: &str, ip: &str, port: u16, path: &str) -> String {
    sh(
        lab,
        vm,
        &format!(
            "exec 3<>/dev/tcp/{ip}/{port}; printf 'GET {path} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; timeout 20 cat <&3"
        ),
    )
}

#[test]
#[ignore = "boots 4 real VMs and runs the Appwrite stack (tier 3); run with --include-ignored"]
fn appwrite_stack_on_the_lab_with_the_client_address_through_the_load_balancer() {
    let mut spec = LabSpec::topology("e2e-appwrite", 1, 1, 1).expect("topology");
    spec.vms.push(VmSpec::new("lb-1", vec![Role::Lb]));
    for vm in &mut spec.vms {
        // MariaDB and a dozen Python stand-ins share the swarm nodes.
        if vm.roles.contains(&Role::Manager) || vm.roles.contains(&Role::Worker) {
            vm.memory_mib = 2048;
        }
    }
    spec.layer = LayerName::Ready;
    let dir = std::env::temp_dir().join(format!("provision-e2e-appwrite-{}", std::process::id()));
    let opts = UpOptions {
        dir: Some(dir.clone()),
        boot_timeout: Duration::from_secs(900),
        ready: Some(ready_layer()),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut lab = Lab::up(&spec, &opts).expect("lab up");
    lab.set_drop_policy(DropPolicy::TEST);
    eprintln!("lab up in {:?}; lab dir {}", t0.elapsed(), dir.display());
    let ip = |vm: &str| lab.vm(vm).expect(vm).private_ip.to_string();
    let (storage, manager, worker, lb) =
        (ip("storage-1"), ip("manager-1"), ip("worker-1"), ip("lb-1"));

    // The user's path: a secrets file, the generated secrets, the stack and its ports.
    let cluster = lab.cluster_toml_path();
    let c = cluster.to_str().unwrap();
    let key = lab.identity_path();
    let k = key.to_str().unwrap();
    let secrets = dir.join("secrets.age");
    let pubkey = dir.join("id_ed25519.pub");
    let s = secrets.to_str().unwrap();
    let (code, _, err) = provision(&[
        "secrets",
        "init",
        s,
        "-r",
        pubkey.to_str().unwrap(),
        "-i",
        k,
    ]);
    assert_eq!(code, 0, "secrets init: {err}");
    edit(
        &cluster,
        "\n\n[ssh]",
        "\nsecrets = \"secrets.age\"\n\n[ssh]",
    );
    edit(
        &cluster,
        "stack = \"demo\"",
        // Some twenty services starting under emulation: more than the default 600 s on a
        // slow machine (seen: every task still "Starting" after 600 s).
        "stack = \"appwrite\"\nappwrite_lab_images = true\nresolve_image = \"never\"\nstack_wait_timeout = 1500",
    );
    edit(&cluster, "lb_ports = [8080]", "lb_ports = [80, 443]");
    let (code, _, err) = provision(&["check-config", c, "--identity", k]);
    assert_eq!(code, 2, "missing secrets are named: {err}");
    assert!(err.contains("provision secrets generate"), "{err}");
    let (code, _, err) = provision(&["secrets", "generate", c, "-i", k]);
    assert_eq!(code, 0, "secrets generate: {err}");
    let (code, out, err) = provision(&["check-config", c, "--identity", k]);
    assert_eq!(code, 0, "check-config: {out}{err}");

    // 1. The whole playbook.
    let idargs = ["--identity", k];
    let t = Instant::now();
    let first = run(&cluster, &idargs);
    eprintln!("first run in {:?}", t.elapsed());
    first.print_timeline("ready layer to Appwrite");
    assert!(first.ok(), "first run failed:\n{}", first.text());

    // Every service with its replicas (the deploy step waited for them to converge).
    let services = sh(
        &lab,
        "manager-1",
        "docker service ls --format '{{.Name}} {{.Mode}} {{.Replicas}}' | sort",
    );
    let lines: Vec<&str> = services.lines().collect();
    assert_eq!(lines.len(), 20, "{services}");
    for line in &lines {
        let replicas = line.rsplit(' ').next().unwrap();
        let (running, desired) = replicas.split_once('/').unwrap();
        assert_eq!(running, desired, "{services}");
        assert_ne!(running, "0", "{services}");
    }
    assert!(
        lines.contains(&"appwrite_appwrite global 2/2"),
        "{services}"
    );
    assert!(
        lines.contains(&"appwrite_appwrite-realtime global 2/2"),
        "{services}"
    );
    assert!(lines.contains(&"appwrite_traefik global 2/2"), "{services}");

    // MariaDB on the data node (the first worker) in a local volume; not on the share.
    let placed = sh(
        &lab,
        "manager-1",
        "docker service ps appwrite_mariadb --filter desired-state=running --format '{{.Node}}'",
    );
    assert_eq!(placed.trim(), "worker-1");
    let volume = sh(
        &lab,
        "worker-1",
        "ls \"$(docker volume inspect appwrite_mariadb --format '{{.Mountpoint}}')\"",
    );
    assert!(volume.lines().any(|l| l == "ibdata1"), "{volume}");
    assert!(
        volume.lines().any(|l| l == "appwrite"),
        "the stack's database: {volume}"
    );
    let share = sh(&lab, "storage-1", "ls /srv/share/appwrite");
    assert!(!share.contains("mariadb"), "{share}");

    // 2. The edge on every swarm node, 80 and 443, routing by path.
    for node in [&manager, &worker] {
        for port in [80, 443] {
            let api = get(&lab, "storage-1", node, port, "/v1/health");
            assert!(api.starts_with("HTTP/1.0 200"), "{node}:{port}: {api}");
            assert!(
                api.contains(&format!(
                    "service=appwrite client={storage} path=/v1/health db=ok redis=ok"
                )),
                "{node}:{port}: {api}"
            );
            let realtime = get(&lab, "storage-1", node, port, "/v1/realtime");
            assert!(
                realtime.contains("service=realtime "),
                "{node}:{port}: {realtime}"
            );
        }
    }

    // 3. Through the load balancer: the client's own address reaches the API.
    for port in [80, 443] {
        let via_lb = get(&lab, "storage-1", &lb, port, "/v1/account");
        assert!(
            via_lb.contains(&format!(
                "service=appwrite client={storage} path=/v1/account db=ok redis=ok"
            )),
            "through the lb on {port}: {via_lb}"
        );
    }
    // A PROXY header from anyone but the load balancer is refused (a client cannot forge its
    // address): the edge closes the connection without an answer.
    let forged = sh(
        &lab,
        "storage-1",
        &format!(
            "exec 3<>/dev/tcp/{manager}/80; printf '\\r\\n\\r\\n\\000\\r\\nQUIT\\n\\041\\021\\000\\014\\001\\002\\003\\004\\001\\002\\003\\004\\000\\120\\000\\120GET / HTTP/1.0\\r\\n\\r\\n' >&3; timeout 20 cat <&3; echo end"
        ),
    );
    assert_eq!(
        forged.trim(),
        "end",
        "a forged PROXY header was accepted: {forged}"
    );

    // 4. A re-run changes nothing.
    let again = run(&cluster, &idargs);
    assert!(again.ok(), "re-run failed:\n{}", again.text());
    assert_eq!(
        again.count("changed"),
        0,
        "re-run changed: {:?}",
        again.changed_hosts()
    );

    // The database dump the README gives, through `provision exec` on the data node's task
    // (the root password stays in the container's environment).
    let (code, dump, err) = provision(&[
        "exec",
        "--identity",
        k,
        c,
        "mariadb",
        "--",
        "sh",
        "-c",
        "MYSQL_PWD=\"$MYSQL_ROOT_PASSWORD\" mysqldump -u root --all-databases",
    ]);
    assert_eq!(code, 0, "mysqldump: {err}");
    assert!(
        dump.contains("CREATE DATABASE /*!32312 IF NOT EXISTS*/ `appwrite`"),
        "{dump}"
    );

    // 5. An upgrade in one run: the database dumped to the share, the new version deployed,
    // Appwrite's migration run once (the stand-in appends the version to a log on the share),
    // every service converged on the new image. The fresh install did not migrate.
    let migrations = || {
        sh(
            &lab,
            "storage-1",
            "cat /srv/share/appwrite/uploads/lab-migrations.log 2>/dev/null || true",
        )
    };
    let api_image = || {
        sh(
            &lab,
            "manager-1",
            "docker service inspect appwrite_appwrite --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}'",
        )
        .trim()
        .to_string()
    };
    assert_eq!(migrations(), "", "a fresh install does not migrate");
    edit(
        &cluster,
        "appwrite_lab_images = true",
        "appwrite_lab_images = true\nappwrite_version = \"1.4.0\"",
    );
    let t = Instant::now();
    let upgrade = run(&cluster, &idargs);
    eprintln!("upgrade in {:?}", t.elapsed());
    assert!(upgrade.ok(), "upgrade failed:\n{}", upgrade.text());
    assert!(
        upgrade
            .text()
            .contains("upgrade stack appwrite from 1.3.8 to 1.4.0: dump the database into /mnt/share/backups/appwrite, deploy, migrate once, converge; roll back on failure"),
        "{}",
        upgrade.text()
    );
    assert_eq!(migrations(), "1.4.0\n");
    assert_eq!(api_image(), "appwrite/appwrite:1.4.0");
    let dumps = sh(
        &lab,
        "storage-1",
        "cd /srv/share/backups/appwrite && stat -c '%a %n' . appwrite-1.3.8-*.sql && grep -c 'CREATE DATABASE .*`appwrite`' appwrite-1.3.8-*.sql",
    );
    let dump_lines: Vec<&str> = dumps.lines().collect();
    assert_eq!(dump_lines.len(), 3, "{dumps}");
    assert_eq!(dump_lines[0], "700 .", "{dumps}");
    assert!(dump_lines[1].starts_with("600 appwrite-1.3.8-"), "{dumps}");
    assert_eq!(
        dump_lines[2], "1",
        "the dump holds Appwrite's database: {dumps}"
    );
    assert!(
        sh(&lab, "manager-1", "docker config ls --format '{{.Name}}'")
            .lines()
            .any(|l| l == "provision-migrated-appwrite-1.4.0")
    );
    let again_after = run(&cluster, &idargs);
    assert!(
        again_after.ok(),
        "re-run after the upgrade failed:\n{}",
        again.text()
    );
    assert_eq!(
        again_after.count("changed"),
        0,
        "{:?}",
        again_after.changed_hosts()
    );
    assert_eq!(migrations(), "1.4.0\n", "a re-run does not migrate again");

    // 6. A migration that fails (the stand-in fails for a version containing "fail"): the
    // stack goes back to 1.4.0's compose file and .env, converges there, and the run exits 1
    // saying so and naming the dump. Run only with PROVISION_E2E_FAILING_UPGRADE=1: on 2 cores
    // under TCG it takes 13-17 minutes (the roll forward and the roll back of 15 services
    // overlap), which the suite's 90 minutes of CI cannot hold next to the other VM tests.
    let text = if std::env::var_os("PROVISION_E2E_FAILING_UPGRADE").is_some() {
        edit(
            &cluster,
            "appwrite_version = \"1.4.0\"",
            "appwrite_version = \"1.5.0-fail\"",
        );
        let t = Instant::now();
        let failed = run(&cluster, &idargs);
        eprintln!("failing upgrade in {:?}", t.elapsed());
        let text = failed.text();
        assert!(
            !failed.ok(),
            "a failed migration must fail the run:\n{text}"
        );
        assert_eq!(failed.output.status.code(), Some(1), "{text}");
        for said in [
            "migrate: migration to 1.5.0-fail failed (the lab stand-in was told to fail)",
            "the migration of stack appwrite to version 1.5.0-fail failed",
            "rolled back: stack appwrite runs version 1.4.0 again, with the compose file and .env deployed before",
            "the database as it was before the upgrade: /mnt/share/backups/appwrite/appwrite-1.4.0-",
        ] {
            assert!(text.contains(said), "{said:?} not in:\n{text}");
        }
        assert_eq!(api_image(), "appwrite/appwrite:1.4.0");
        assert_eq!(migrations(), "1.4.0\n");
        let converged = sh(
            &lab,
            "manager-1",
            "docker service ls --format '{{.Replicas}}' | awk -F/ '$1 != $2' | wc -l",
        );
        assert_eq!(converged.trim(), "0", "every service converged on 1.4.0");
        text
    } else {
        eprintln!("failing upgrade not run (set PROVISION_E2E_FAILING_UPGRADE=1 to run it)");
        String::new()
    };

    // 7. `provision rollback` by hand: without --yes it says what it would do and does nothing
    // (back to 1.3.8, the deployment before 1.4.0, kept through a failed upgrade).
    let (code, _, err) = provision(&["rollback", c, "--identity", k]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(
            "would roll back stack appwrite through manager-1 from version 1.4.0 to version 1.3.8"
        ),
        "{err}"
    );
    assert_eq!(
        api_image(),
        "appwrite/appwrite:1.4.0",
        "nothing changed without --yes"
    );
    // (`--yes` swaps and redeploys as the roll back above did; its script is tested against a
    // stand-in docker in crates/playbook/src/steps/stack_release.rs: another roll of the whole
    // stack would cost minutes of the CI budget here.)
    let out = String::new();
    let upgrade_text = format!(
        "{}{}{}{text}{out}{err}",
        upgrade.text(),
        again.text(),
        again_after.text()
    );

    // The generated secrets went to the hosts (MariaDB accepted the password above) and
    // nowhere else: not in any output or run log, in any encoding.
    let (code, view, err) = provision(&["secrets", "view", s, "-i", k]);
    assert_eq!(code, 0, "{err}");
    let table: toml::Table = toml::from_str(&view).unwrap();
    let mut said = format!("{}{dump}{err}{upgrade_text}", first.text());
    for log in std::fs::read_dir(dir.join(".provision/logs")).unwrap() {
        said.push_str(&std::fs::read_to_string(log.unwrap().path()).unwrap());
    }
    for (name, value) in table["appwrite"].as_table().unwrap() {
        let found = provision_testkit::leaks::leaks(&said, value.as_str().unwrap());
        assert!(found.is_empty(), "appwrite.{name} leaked: {found:?}");
    }

    let name = lab.name().to_string();
    drop(lab);
    assert_no_qemu_left(&name, &dir);
}
