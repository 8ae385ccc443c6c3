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
    let pending: Vec<_> = d
        .iter()
        .filter(|(_, v)| v.as_str() != "ok" && !v.starts_with("Skip"))
        .collect();
    assert!(pending.is_empty(), "{pending:#?}");
}
