//! The built-in swarm playbook's steps decide over facts captured from real hosts: lab VMs
//! (Debian 12, qemu) reached over SSH, their outputs kept as JSON under `fixtures/facts/`
//! with `provision facts CLUSTER --save DIR` (secrets hidden). Two states of one 3-VM lab:
//! `ready` (the lab's ready image layer, Docker and NFS packages installed, nothing
//! configured) and `converged` (after a successful `provision run`). Each capture also pins
//! its fact command: a step whose command changed no longer matches its capture, and the
//! fixture must be captured again (`fixtures/facts/README.md`).

use provision_engine::inventory::Inventory;
use provision_engine::playbook_file::PlaybookFile;
use provision_engine::step::{Check, Facts};
use provision_playbook::compile::SecretsView;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts")
}

/// One step's captures: its name, and per host the command and its output.
struct Captured {
    step: String,
    hosts: BTreeMap<String, (String, Facts)>,
}

fn captures(state: &str) -> Vec<Captured> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join(state))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|d| {
            let mut step = String::new();
            let mut hosts = BTreeMap::new();
            for f in std::fs::read_dir(&d).unwrap().flatten() {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(f.path()).unwrap()).unwrap();
                step = v["step"].as_str().unwrap().to_string();
                hosts.insert(
                    v["host"].as_str().unwrap().to_string(),
                    (
                        v["command"].as_str().unwrap().to_string(),
                        Facts {
                            stdout: v["stdout"].as_str().unwrap().to_string(),
                            exit_status: v["exit_status"].as_u64().map(|c| c as u32),
                            ..Default::default()
                        },
                    ),
                );
            }
            Captured { step, hosts }
        })
        .collect()
}

/// Each captured step's decision per host: "ok" or the change summaries.
fn decisions(state: &str) -> BTreeMap<(String, String), String> {
    let dir = root().join(state);
    let inv = Inventory::load(&dir.join("cluster.toml"), &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let pb_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../playbooks/swarm.toml");
    let pb = PlaybookFile::load(&pb_path, &provision_playbook::known_steps()).unwrap();
    let table = toml::Table::new();
    let none = |_: &str| false;
    let view = SecretsView {
        table: &table,
        contains_secret: &none,
    };
    let compiled =
        provision_playbook::compile(&inv, &pb, &view).unwrap_or_else(|e| panic!("{e:?}"));
    let mut out = BTreeMap::new();
    let caps = captures(state);
    assert!(caps.len() >= 10, "{state}: {} captured steps", caps.len());
    for c in caps {
        let step = compiled
            .steps
            .iter()
            .find(|s| s.title() == c.step)
            .unwrap_or_else(|| panic!("{state}: no step `{}` in the playbook", c.step));
        let mut facts = BTreeMap::new();
        for (host, (command, f)) in &c.hosts {
            assert_eq!(
                step.gather(host).as_deref(),
                Some(command.as_str()),
                "{state}: `{}` on {host} gathers with another command than its capture: capture again",
                c.step
            );
            facts.insert(host.clone(), f.clone());
        }
        let plan = step.plan(&facts);
        for host in c.hosts.keys().filter(|h| step.targets().contains(h)) {
            let d = match plan.hosts.get(host) {
                Some(Ok(Check::Ok(_))) => "ok".to_string(),
                Some(Ok(Check::Change(changes))) => changes
                    .iter()
                    .map(|c| c.summary.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                Some(Ok(other)) => format!("{other:?}"),
                Some(Err(e)) => panic!("{state}: `{}` on {host}: {e}", c.step),
                None => "no plan".to_string(),
            };
            out.insert((c.step.clone(), host.clone()), d);
        }
    }
    out
}

#[test]
fn after_a_good_run_every_step_on_every_host_has_nothing_to_do() {
    let d = decisions("converged");
    assert_eq!(d.len(), 19, "every captured step and host: {d:#?}");
    let pending: Vec<_> = d
        .iter()
        .filter(|(_, v)| v.as_str() != "ok" && !v.starts_with("Skip"))
        .collect();
    assert!(pending.is_empty(), "{pending:#?}");
}

/// On the ready layer (packages installed, nothing configured) each step plans what a first
/// run does, as `provision run --check` shows it on those hosts.
#[test]
fn on_the_ready_layer_each_step_plans_the_first_run() {
    let d = decisions("ready");
    let swap = "create swap file /swapfile (512M) and activate it; /etc/fstab: append line 2 (/swapfile none swap sw 0 0); set vm.swappiness to 10 (was 60) and persist it in /etc/sysctl.d/99-provision-swap.conf";
    let hostname = |h: &str| {
        format!("/etc/hosts: replace line 2 (127.0.1.1 {h}); set hostname to {h} (was debian)")
    };
    let docker = "enable docker.service (was disabled); start docker.service (was inactive)";
    let mount = "create mount point /mnt/share; /etc/fstab: append line 2 (10.10.0.11:/srv/share /mnt/share nfs rw,hard,noatime,nfsvers=4.2,_netdev 0 0); mount 10.10.0.11:/srv/share on /mnt/share and check it is writable";
    let join = "join the swarm that swarm_init creates on manager-1";
    let image = "run `set -e; d=$(mktemp -d); cd \"$d\"; apt-get download busybox-st…`";
    let expected: Vec<(&str, &str, String)> = vec![
        ("demo image", "manager-1", image.into()),
        ("demo image", "worker-1", image.into()),
        ("docker engine", "manager-1", docker.into()),
        ("docker engine", "worker-1", docker.into()),
        ("hostname", "manager-1", hostname("manager-1")),
        ("hostname", "storage-1", hostname("storage-1")),
        ("hostname", "worker-1", hostname("worker-1")),
        ("manager availability", "manager-1", "ok".into()),
        ("nfs server", "storage-1", "create export directory /srv/share (mode 0755, owner root:root); /etc/exports: append block at line 11 (1 exports); apply the exports (exportfs -ra); enable nfs-server.service (was disabled); start nfs-server.service (was inactive)".into()),
        ("nfs share mounted", "manager-1", mount.into()),
        ("nfs share mounted", "worker-1", mount.into()),
        ("node labels", "manager-1", "label swarm=true, swarm-manager=true".into()),
        ("node labels", "worker-1", "label swarm=true, swarm-worker=true".into()),
        ("stack deployed", "manager-1", "deploy stack demo (30ec00ba294a)".into()),
        ("swap file", "manager-1", swap.into()),
        ("swap file", "worker-1", swap.into()),
        ("swarm initialised", "manager-1", "init the swarm advertising 10.10.0.12".into()),
        ("swarm members", "manager-1", join.into()),
        ("swarm members", "worker-1", join.into()),
    ];
    let expected: BTreeMap<(String, String), String> = expected
        .into_iter()
        .map(|(s, h, d)| ((s.to_string(), h.to_string()), d))
        .collect();
    assert_eq!(d, expected);
}
