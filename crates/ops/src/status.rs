//! `provision status`: one report of the swarm's nodes, quorum and services,
//! with warnings about what an operator must look at.

use crate::cluster::{HostState, Quorum, Survey, host_of_node};
use crate::parse::{self, TaskLine};
use crate::{Cluster, OpsError, commands};
use provision_engine::inventory::{Inventory, Role};
use provision_playbook::steps::swarm_facts::{Docker, SwarmView};
use provision_playbook::steps::swarm_join::unheard;
use provision_playbook::swarm::commands::unheard_hint;
use provision_playbook::swarm::node::{LocalNodeState, NodeRole, NodeState};
use provision_transport::Command;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub cluster: String,
    /// The swarm's ID (short), when a swarm exists.
    pub swarm_id: Option<String>,
    /// True when no manager could name the swarm and its ID is the last good run's record.
    pub swarm_id_recorded: bool,
    /// The manager the report was read through.
    pub via: Option<String>,
    pub quorum: Option<Quorum>,
    pub nodes: Vec<NodeRow>,
    pub services: Vec<ServiceRow>,
    /// The NFS server of each storage host.
    pub storage: Vec<StorageRow>,
    pub warnings: Vec<String>,
}

/// A storage host's NFS server, as status found it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StorageRow {
    pub host: String,
    /// What `systemctl is-active` says (active, inactive, failed, ...), or "unreachable".
    pub nfs_server: String,
}

/// The NFS server's unit state, and nothing that touches an NFS mount: a storage host that is
/// gone cannot make status hang (the nodes' hard mounts would).
pub const NFS_SERVER_STATE: &str = "systemctl is-active nfs-server.service";

/// Rows and warnings from what each storage host answered to [`NFS_SERVER_STATE`] (its stdout,
/// or why SSH failed).
pub fn storage_from(
    answers: Vec<(String, Result<String, String>)>,
    cluster_file: &str,
) -> (Vec<StorageRow>, Vec<String>) {
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    for (host, answer) in answers {
        let nfs_server = match answer {
            Ok(out) => {
                let state = out.trim().to_string();
                if state != "active" {
                    warnings.push(format!(
                        "{host}: the NFS server is {state}, so the share is unavailable: `provision run {cluster_file}` starts it"
                    ));
                }
                state
            }
            Err(e) => {
                warnings.push(format!(
                    "{host} is unreachable over SSH ({}): the NFS share it serves is unavailable; the nodes' mounts wait for it (hard mounts) and services that use it stall until it is back",
                    first_line(&e)
                ));
                "unreachable".into()
            }
        };
        rows.push(StorageRow { host, nfs_server });
    }
    (rows, warnings)
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeRow {
    /// Inventory name (None: in the swarm but not in the inventory).
    pub host: Option<String>,
    /// The node's hostname in the swarm ("-" when not in the swarm).
    pub hostname: String,
    pub role: String,
    pub availability: String,
    /// SSH from here: reachable / unreachable / "-" (not in the inventory).
    pub ssh: String,
    /// The node's state in the swarm: ready / down / not in swarm / unknown.
    pub state: String,
    /// leader / reachable / unreachable for managers, empty for workers.
    pub manager: String,
    pub engine: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServiceRow {
    pub name: String,
    pub mode: String,
    pub running: u32,
    pub desired: u32,
    pub image: String,
    pub ports: String,
    /// Recent tasks that failed, newest first (at most 3).
    pub failing: Vec<TaskLine>,
}

fn ssh_state(s: Option<&HostState>) -> String {
    match s {
        Some(HostState::Unreachable(_)) => "unreachable".into(),
        Some(_) => "reachable".into(),
        None => "-".into(),
    }
}

/// Node rows and warnings from THE swarm's node list.
pub fn nodes_from_view(
    inv: &Inventory,
    survey: &Survey,
    v: &SwarmView,
) -> (Vec<NodeRow>, Vec<String>) {
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = Vec::new();
    for n in &v.nodes {
        let host = host_of_node(inv, n).map(str::to_string);
        if let Some(h) = &host {
            seen.push(h.clone());
        } else {
            warnings.push(format!(
                "node {} ({}) is in the swarm but not in the inventory: add it, or remove it with `docker node rm {}`",
                n.hostname, n.addr, n.id
            ));
        }
        let manager = if n.role == NodeRole::Manager {
            if n.leader {
                "leader".to_string()
            } else {
                n.reachability.map(|r| r.to_string()).unwrap_or_default()
            }
        } else {
            String::new()
        };
        if unheard(n)
            && let Some(h) = &host
        {
            let what = if n.state == NodeState::Down {
                "is down"
            } else {
                "is unreachable for the other managers"
            };
            // Not heard by the swarm, yet its own Docker answered in the swarm: cut off, not dead.
            let in_swarm = survey
                .state(h)
                .and_then(HostState::swarm)
                .and_then(|s| s.info())
                .is_some_and(|i| i.local_node_state == LocalNodeState::Active);
            warnings.push(if in_swarm {
                let ip = inv
                    .host(h)
                    .and_then(|x| x.private_ip)
                    .map(|ip| ip.to_string())
                    .unwrap_or_default();
                format!("node {} {what}: {}", n.hostname, unheard_hint(h, &ip))
            } else {
                format!("node {} {what}", n.hostname)
            });
        }
        rows.push(NodeRow {
            ssh: ssh_state(host.as_deref().and_then(|h| survey.state(h))),
            host,
            hostname: n.hostname.clone(),
            role: n.role.to_string(),
            availability: n.availability.to_string(),
            state: n.state.to_string(),
            manager,
            engine: n.engine_version.clone(),
        });
    }
    for h in inv.hosts.iter().filter(|h| h.is_swarm_node()) {
        if seen.contains(&h.name) {
            continue;
        }
        warnings.push(format!(
            "{} is in the inventory but not in the swarm: run `provision run {}`",
            h.name,
            inv.path.display()
        ));
        rows.push(NodeRow {
            host: Some(h.name.clone()),
            hostname: "-".into(),
            role: h
                .roles
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(","),
            availability: "-".into(),
            ssh: ssh_state(survey.state(&h.name)),
            state: "not in swarm".into(),
            manager: String::new(),
            engine: String::new(),
        });
    }
    (rows, warnings)
}

/// Node rows when no manager can list nodes: what each host says of itself.
pub fn nodes_from_hosts(cluster: &Cluster, survey: &Survey) -> Vec<NodeRow> {
    cluster
        .swarm_hosts()
        .into_iter()
        .map(|h| {
            let st = survey.state(&h.name);
            let swarm = st.and_then(HostState::swarm);
            let info = swarm.and_then(|s| s.info());
            let manager = cluster.is_manager(&h.name);
            NodeRow {
                host: Some(h.name.clone()),
                hostname: if info.is_some() {
                    h.name.clone()
                } else {
                    "-".into()
                },
                role: if manager {
                    "manager".into()
                } else {
                    "worker".into()
                },
                availability: "?".into(),
                ssh: ssh_state(st),
                state: match (st, info) {
                    (Some(HostState::Unreachable(_)), _) => "unknown".into(),
                    (_, Some(i)) => i.local_node_state.to_string(),
                    _ => "docker down".into(),
                },
                manager: if !manager {
                    String::new()
                } else if matches!(st, Some(HostState::Unreachable(_))) || info.is_none() {
                    "unreachable".into()
                } else {
                    "no leader".into()
                },
                engine: String::new(),
            }
        })
        .collect()
}

/// Warnings about the managers: quorum lost or at risk, an even count.
pub fn quorum_warnings(q: &Quorum, cluster_file: &str) -> Vec<String> {
    let mut w = Vec::new();
    if !q.ok {
        w.push(format!(
            "QUORUM LOST: {} of {} managers reachable, {} needed; the swarm cannot change (no deploys, no rescheduling, no joins). Bring managers back, or run `provision recover {cluster_file}`",
            q.reachable, q.managers, q.needed
        ));
    } else if q.reachable == q.needed && q.managers > 1 {
        w.push(format!(
            "quorum at risk: {} of {} managers reachable; one more failure loses it",
            q.reachable, q.managers
        ));
    }
    if q.managers == 1 {
        w.push(
            "1 manager: losing it stops the control plane; 3 managers tolerate one failure".into(),
        );
    }
    if q.managers > 0 && q.managers.is_multiple_of(2) {
        w.push(format!(
            "{} managers: an even count tolerates no more failures than {}; use an odd number (3 or 5)",
            q.managers,
            q.managers - 1
        ));
    }
    w
}

/// Services with counts and their recent failures.
pub fn services_from(ls: &str, ps: &str) -> Result<Vec<ServiceRow>, String> {
    let services = parse::services(ls)?;
    let tasks = parse::tasks(ps)?;
    Ok(services
        .into_iter()
        .map(|s| {
            let (running, desired) = s.counts().unwrap_or((0, 0));
            let failing: Vec<TaskLine> = tasks
                .iter()
                .filter(|t| t.service() == s.name && !t.error.is_empty())
                .filter(|_| running < desired)
                .take(3)
                .cloned()
                .collect();
            ServiceRow {
                name: s.name,
                mode: s.mode,
                running,
                desired,
                image: s.image,
                ports: s.ports,
                failing,
            }
        })
        .collect())
}

/// The swarm's services and their failing tasks, read on manager `via` (bounded like the
/// survey: a manager without quorum can hang on them).
async fn services_of(cluster: &Cluster, via: &str) -> Result<Vec<ServiceRow>, OpsError> {
    let hint = "is Docker healthy on the manager?";
    let timed = |script: String| Command::new(script).timeout(crate::cluster::SURVEY_TIMEOUT);
    let ls = cluster
        .ok_cmd(
            via,
            "listing services",
            timed(commands::SERVICE_LS.into()),
            hint,
        )
        .await?;
    let names: Vec<String> = parse::services(&ls)
        .map_err(|e| OpsError::unexpected("docker service ls", e))?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let ps = if names.is_empty() {
        String::new()
    } else {
        cluster
            .ok_cmd(
                via,
                "listing tasks",
                timed(commands::service_tasks(&names, false)),
                hint,
            )
            .await?
    };
    services_from(&ls, &ps).map_err(|e| OpsError::unexpected("docker service ps", e))
}

pub async fn status(cluster: &Cluster) -> Result<Status, OpsError> {
    let inv = &cluster.inv;
    let storage_hosts: Vec<String> = inv
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Storage))
        .map(|h| h.name.clone())
        .collect();
    // The storage hosts alongside the swarm's survey.
    let (survey, answers) = tokio::join!(
        cluster.survey(),
        futures::future::join_all(storage_hosts.into_iter().map(|h| async move {
            let cmd = Command::new(NFS_SERVER_STATE).timeout(crate::cluster::SURVEY_TIMEOUT);
            let answer = cluster
                .run_always(&h, cmd)
                .await
                .map(|o| o.stdout_str())
                .map_err(|e| e.to_string());
            (h, answer)
        }))
    );
    let file = inv.path.display().to_string();
    let (storage, storage_warnings) = storage_from(answers, &file);
    let view = survey.view(inv)?;
    let quorum = survey.quorum(inv);
    let mut warnings = Vec::new();
    let mut swarm_id_recorded = false;
    let (nodes, services, swarm_id, via) = match &view {
        Some(v) => {
            let (nodes, w) = nodes_from_view(inv, &survey, v);
            warnings.extend(w);
            // A leader that lost its majority may still list nodes from its cache but not
            // answer for services: the report goes on without them rather than failing.
            let services = match services_of(cluster, &v.via).await {
                Ok(services) => services,
                Err(e) => {
                    warnings.push(format!(
                        "services unknown: listing them on {} failed ({}); managers that lost their quorum cannot answer",
                        v.via,
                        first_line(&e.to_string())
                    ));
                    Vec::new()
                }
            };
            for s in services.iter().filter(|s| s.running < s.desired) {
                warnings.push(format!(
                    "service {}: {}/{} tasks running{}",
                    s.name,
                    s.running,
                    s.desired,
                    s.failing
                        .first()
                        .map(|t| format!(" (last error on {}: {})", t.node, t.error))
                        .unwrap_or_default()
                ));
            }
            (
                nodes,
                services,
                Some(v.short_id().to_string()),
                Some(v.via.clone()),
            )
        }
        None => {
            let nodes = nodes_from_hosts(cluster, &survey);
            if quorum.is_none() {
                warnings.push(format!(
                    "no swarm: no reachable manager is in a swarm; `provision run {file}` creates it"
                ));
            }
            let live = survey.managers_in_swarm(inv).first().and_then(|m| {
                survey
                    .state(m)?
                    .swarm()?
                    .cluster_id()
                    .map(|c| c[..c.len().min(12)].to_string())
            });
            // Managers in a swarm without a leader may not name it: the last good run did.
            let recorded = quorum
                .as_ref()
                .and(survey.last_good.as_ref())
                .map(|r| r.short_id().to_string());
            swarm_id_recorded = live.is_none() && recorded.is_some();
            (nodes, vec![], live.or(recorded), None)
        }
    };
    if let Some(q) = &quorum {
        let mut qw = quorum_warnings(q, &file);
        qw.extend(warnings);
        warnings = qw;
    }
    warnings.extend(host_warnings(&survey, &file));
    warnings.extend(storage_warnings);
    Ok(Status {
        cluster: inv.name.clone(),
        swarm_id,
        swarm_id_recorded,
        via,
        quorum,
        nodes,
        services,
        storage,
        warnings,
    })
}

/// What each host says of itself beside the swarm's view: unreachable over SSH, or reachable
/// with a Docker that does not answer (the swarm only says "down" for it, and only after its
/// heartbeat timeout; a stopped daemon is what `provision run` starts again).
pub fn host_warnings(survey: &Survey, cluster_file: &str) -> Vec<String> {
    let mut w = Vec::new();
    for (h, s) in &survey.hosts {
        match s {
            HostState::Unreachable(e) => {
                w.push(format!("{h} is unreachable over SSH: {}", first_line(e)))
            }
            HostState::Up { swarm, .. } => match &swarm.docker {
                Docker::Down(e) => w.push(format!(
                    "{h}: Docker is not running ({}); `provision run {cluster_file}` starts it",
                    first_line(e)
                )),
                Docker::Absent => w.push(format!(
                    "{h}: Docker is not installed; `provision run {cluster_file}` installs it"
                )),
                Docker::Up(_) => {}
            },
            HostState::Broken(_) => {}
        }
    }
    w
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_warnings_say_what_to_do() {
        let lost = Quorum {
            managers: 3,
            reachable: 1,
            needed: 2,
            ok: false,
            leader: None,
        };
        let w = quorum_warnings(&lost, "c.toml");
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("QUORUM LOST: 1 of 3 managers reachable, 2 needed"));
        assert!(w[0].contains("provision recover c.toml"));
        let risk = Quorum {
            managers: 3,
            reachable: 2,
            needed: 2,
            ok: true,
            leader: Some("m1".into()),
        };
        assert!(quorum_warnings(&risk, "c")[0].starts_with("quorum at risk"));
        let even = Quorum {
            managers: 2,
            reachable: 2,
            needed: 2,
            ok: true,
            leader: None,
        };
        assert!(
            quorum_warnings(&even, "c")
                .iter()
                .any(|w| w.contains("even count"))
        );
        let fine = Quorum {
            managers: 3,
            reachable: 3,
            needed: 2,
            ok: true,
            leader: None,
        };
        assert!(quorum_warnings(&fine, "c").is_empty());
        let single = Quorum {
            managers: 1,
            reachable: 1,
            needed: 1,
            ok: true,
            leader: None,
        };
        assert!(quorum_warnings(&single, "c")[0].starts_with("1 manager"));
    }

    #[test]
    fn a_host_whose_docker_does_not_answer_is_named_with_what_starts_it() {
        use provision_playbook::steps::swarm_facts::parse;
        let up = |out: &str| HostState::Up {
            swarm: Box::new(parse(out).unwrap()),
            list_error: None,
        };
        let survey = Survey {
            hosts: [
                (
                    "manager-3".to_string(),
                    // As `gather` prints it on a manager whose dockerd was stopped.
                    up("docker=down\nCannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n"),
                ),
                ("worker-1".to_string(), up("docker=absent\n")),
                (
                    "worker-2".to_string(),
                    HostState::Unreachable("worker-2: cannot connect: Connection refused\nmore".into()),
                ),
            ]
            .into_iter()
            .collect(),
            last_good: None,
        };
        assert_eq!(
            host_warnings(&survey, "c.toml"),
            [
                "manager-3: Docker is not running (Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?); `provision run c.toml` starts it",
                "worker-1: Docker is not installed; `provision run c.toml` installs it",
                "worker-2 is unreachable over SSH: worker-2: cannot connect: Connection refused",
            ]
        );
    }

    #[test]
    fn a_manager_cut_off_from_the_private_network_is_counted_out_and_explained() {
        use provision_playbook::steps::swarm_facts::parse;
        // Captured on the lab: manager-3's private interface dropped by nftables, SSH up.
        let fixture = |f: &str| {
            let dir = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../playbook/tests/fixtures/swarm/"
            );
            std::fs::read_to_string(format!("{dir}{f}")).unwrap()
        };
        let up = |out: &str| HostState::Up {
            swarm: Box::new(parse(out).unwrap()),
            list_error: None,
        };
        let mut t = String::from("name = \"lab\"\n");
        for i in 1..=3 {
            t.push_str(&format!(
                "[[hosts]]\nname = \"manager-{i}\"\naddress = \"127.0.0.1\"\nport = {}\nprivate_ip = \"10.10.0.{}\"\nroles = [\"manager\"]\n",
                2200 + i,
                11 + i
            ));
        }
        let inv =
            Inventory::parse(&t, std::path::Path::new("c.toml"), &Default::default()).unwrap();
        let survey = |m3: HostState| Survey {
            hosts: [
                (
                    "manager-1".to_string(),
                    up(&fixture("partition-manager-1.gather")),
                ),
                ("manager-3".to_string(), m3),
            ]
            .into_iter()
            .collect(),
            last_good: None,
        };
        let cut = survey(up(&fixture("partition-manager-3.gather")));
        let q = cut.quorum(&inv).unwrap();
        assert_eq!((q.managers, q.reachable, q.needed, q.ok), (3, 2, 2, true));
        assert_eq!(q.leader.as_deref(), Some("manager-1"));
        let view = cut.view(&inv).unwrap().unwrap();
        let (_, warnings) = nodes_from_view(&inv, &cut, &view);
        assert_eq!(
            warnings,
            [
                "node manager-3 is down: manager-3 answers over SSH and its Docker is in the swarm, but the other nodes do not hear it: \
              the private network between them is cut (firewall, route or link) on 10.10.0.14; \
              the swarm needs 2377/tcp, 7946/tcp+udp and 4789/udp open between the nodes"
            ]
        );
        // Seconds earlier, the leader counts it unreachable but not yet down: the same cause.
        let early = fixture("partition-manager-1.gather").replace(
            "\"Status\":{\"State\":\"down\",\"Message\":\"heartbeat failure\"",
            "\"Status\":{\"State\":\"ready\",\"Message\":\"\"",
        );
        let mut first = survey(up(&fixture("partition-manager-3.gather")));
        first.hosts.insert("manager-1".into(), up(&early));
        let view_early = first.view(&inv).unwrap().unwrap();
        let (_, warnings) = nodes_from_view(&inv, &first, &view_early);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with(
                "node manager-3 is unreachable for the other managers: manager-3 answers over SSH"
            ),
            "{warnings:?}"
        );
        // Powered off (no SSH either): down, nothing more is known.
        let off = survey(HostState::Unreachable("manager-3: cannot connect".into()));
        let (_, warnings) = nodes_from_view(&inv, &off, &view);
        assert_eq!(warnings, ["node manager-3 is down"]);
    }

    #[test]
    fn a_storage_host_that_is_gone_or_stopped_makes_the_share_unavailable() {
        let (rows, warnings) = storage_from(
            vec![
                ("storage-1".into(), Ok("active\n".into())),
                ("storage-2".into(), Ok("inactive\n".into())),
                (
                    "storage-3".into(),
                    Err("storage-3: cannot connect: Connection refused\nmore".into()),
                ),
            ],
            "c.toml",
        );
        let states: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.host.as_str(), r.nfs_server.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("storage-1", "active"),
                ("storage-2", "inactive"),
                ("storage-3", "unreachable")
            ]
        );
        assert_eq!(
            warnings,
            [
                "storage-2: the NFS server is inactive, so the share is unavailable: `provision run c.toml` starts it",
                "storage-3 is unreachable over SSH (storage-3: cannot connect: Connection refused): the NFS share it serves is unavailable; the nodes' mounts wait for it (hard mounts) and services that use it stall until it is back",
            ]
        );
    }

    #[test]
    fn services_show_failures_only_when_short() {
        let ls = "{\"ID\":\"a\",\"Image\":\"lab/web:9\",\"Mode\":\"replicated\",\"Name\":\"demo_web\",\"Ports\":\"\",\"Replicas\":\"1/2\"}\n\
                  {\"ID\":\"b\",\"Image\":\"x\",\"Mode\":\"replicated\",\"Name\":\"demo_ok\",\"Ports\":\"\",\"Replicas\":\"1/1\"}\n";
        let ps = "{\"CurrentState\":\"Rejected 5 seconds ago\",\"DesiredState\":\"Shutdown\",\"Error\":\"No such image: lab/web:9\",\"ID\":\"t2\",\"Image\":\"lab/web:9\",\"Name\":\"demo_web.2\",\"Node\":\"worker-1\",\"Ports\":\"\"}\n\
                  {\"CurrentState\":\"Failed 1 hour ago\",\"DesiredState\":\"Shutdown\",\"Error\":\"old\",\"ID\":\"t3\",\"Image\":\"x\",\"Name\":\"demo_ok.1\",\"Node\":\"worker-1\",\"Ports\":\"\"}\n";
        let s = services_from(ls, ps).unwrap();
        assert_eq!((s[0].running, s[0].desired), (1, 2));
        assert_eq!(s[0].failing.len(), 1);
        assert_eq!(s[0].failing[0].error, "No such image: lab/web:9");
        assert!(s[1].failing.is_empty());
    }
}
