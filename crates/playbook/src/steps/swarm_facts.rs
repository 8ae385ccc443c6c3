//! What the swarm steps know about a host: its Docker swarm state (`docker info`)
//! and, on managers, the node list and join tokens; plus THE swarm as seen from
//! the managers, shared by every swarm step.

use crate::swarm::commands::manager_addr;
use crate::swarm::node::{Availability, LocalNodeState, NodeRole, NodeState, Reachability};
use provision_engine::inventory::{Host, Inventory, Role};
use provision_engine::step::{Facts, StepError};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The fact command. Managers also print the node list and both join tokens
/// when they can (ControlAvailable); the tokens are declared secret by the steps.
pub fn gather(manager: bool) -> String {
    let mut s = String::from(
        "command -v docker >/dev/null 2>&1 || { echo 'docker=absent'; exit 0; }; \
         i=$(docker info --format '{{json .Swarm}}' 2>&1) || { echo 'docker=down'; printf '%s\\n' \"$i\"; exit 0; }; \
         echo '== info'; printf '%s\\n' \"$i\"",
    );
    if manager {
        s.push_str(
            "; case \"$i\" in *'\"ControlAvailable\":true'*) \
             echo '== nodes'; docker node ls -q | xargs -r docker node inspect --format '{{json .}}'; \
             echo '== tokens'; docker swarm join-token -q worker; docker swarm join-token -q manager;; esac",
        );
    }
    s
}

/// Docker's view of the local node (`docker info` .Swarm).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmInfo {
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    #[serde(default)]
    pub node_addr: String,
    #[serde(default)]
    pub local_node_state: LocalNodeState,
    #[serde(default)]
    pub control_available: bool,
    #[serde(default)]
    pub error: String,
    /// How many managers this node's raft knows (all of them, reachable or not).
    #[serde(default)]
    pub managers: usize,
    #[serde(default)]
    pub cluster: Option<ClusterInfo>,
    #[serde(default)]
    pub remote_managers: Option<Vec<RemoteManager>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct ClusterInfo {
    #[serde(rename = "ID", default)]
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct RemoteManager {
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    #[serde(rename = "Addr", default)]
    pub addr: String,
}

/// One node of the swarm as a manager sees it (`docker node inspect`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub id: String,
    pub hostname: String,
    pub role: NodeRole,
    pub availability: Availability,
    pub labels: BTreeMap<String, String>,
    pub state: NodeState,
    pub addr: String,
    pub leader: bool,
    /// None without a manager status: a worker, or a manager `--force-new-cluster` dropped.
    pub reachability: Option<Reachability>,
    pub manager_addr: String,
    pub engine_version: String,
}

impl NodeInfo {
    /// A manager that counts for the quorum: one with a manager status. After
    /// `--force-new-cluster` the dropped managers keep their role but have none.
    pub fn raft_member(&self) -> bool {
        self.role == NodeRole::Manager && self.reachability.is_some()
    }

    /// A manager the other managers reach.
    pub fn reachable(&self) -> bool {
        self.reachability == Some(Reachability::Reachable)
    }
}

/// The managers' raft as a node list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raft<'a> {
    pub members: Vec<&'a NodeInfo>,
}

impl<'a> Raft<'a> {
    pub fn of(nodes: &'a [NodeInfo]) -> Self {
        Raft {
            members: nodes.iter().filter(|n| n.raft_member()).collect(),
        }
    }

    /// Members the other managers reach.
    pub fn reachable(&self) -> usize {
        self.members.iter().filter(|n| n.reachable()).count()
    }

    /// Members a majority needs.
    pub fn needed(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNode {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    spec: RawSpec,
    #[serde(default)]
    description: RawDescription,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    manager_status: Option<RawManagerStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawSpec {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    role: NodeRole,
    #[serde(default)]
    availability: Availability,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawDescription {
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    engine: RawEngine,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawEngine {
    #[serde(default)]
    engine_version: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawStatus {
    #[serde(default)]
    state: NodeState,
    #[serde(default)]
    addr: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawManagerStatus {
    #[serde(default)]
    leader: bool,
    #[serde(default)]
    reachability: String,
    #[serde(default)]
    addr: String,
}

/// Docker on one host, as gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Docker {
    /// Not installed (yet: under --check before the docker step ran).
    Absent,
    /// Installed, but the daemon does not answer.
    Down(String),
    Up(SwarmInfo),
}

/// Everything [`gather`] printed, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSwarm {
    pub docker: Docker,
    pub nodes: Vec<NodeInfo>,
    pub worker_token: Option<String>,
    pub manager_token: Option<String>,
}

impl HostSwarm {
    pub fn info(&self) -> Option<&SwarmInfo> {
        match &self.docker {
            Docker::Up(i) => Some(i),
            _ => None,
        }
    }

    /// In some swarm (active, locked, pending or in error).
    pub fn in_a_swarm(&self) -> bool {
        self.info()
            .is_some_and(|i| i.local_node_state != LocalNodeState::Inactive)
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.info()
            .and_then(|i| i.cluster.as_ref())
            .map(|c| c.id.as_str())
            .filter(|s| !s.is_empty())
    }
}

/// Parses the output of [`gather`].
pub fn parse(stdout: &str) -> Result<HostSwarm, String> {
    let mut lines = stdout.lines();
    let mut out = HostSwarm {
        docker: Docker::Absent,
        nodes: vec![],
        worker_token: None,
        manager_token: None,
    };
    let first = lines.next().unwrap_or("").trim();
    match first {
        "docker=absent" => return Ok(out),
        "docker=down" => {
            out.docker = Docker::Down(lines.collect::<Vec<_>>().join("\n").trim().to_string());
            return Ok(out);
        }
        "== info" => {}
        other => return Err(format!("unexpected swarm facts starting with `{other}`")),
    }
    let info_line = lines.next().ok_or("missing docker info output")?;
    let info: SwarmInfo =
        serde_json::from_str(info_line).map_err(|e| format!("cannot parse docker info: {e}"))?;
    out.docker = Docker::Up(info);
    let mut section = "";
    let mut tokens = Vec::new();
    for line in lines {
        let line = line.trim();
        match line {
            "== nodes" | "== tokens" => section = line,
            "" => {}
            _ if section == "== nodes" => {
                let raw: RawNode = serde_json::from_str(line)
                    .map_err(|e| format!("cannot parse docker node inspect: {e}"))?;
                let ms = raw.manager_status.unwrap_or_default();
                out.nodes.push(NodeInfo {
                    id: raw.id,
                    hostname: raw.description.hostname,
                    role: raw.spec.role,
                    availability: raw.spec.availability,
                    labels: raw.spec.labels.unwrap_or_default(),
                    state: raw.status.state,
                    addr: raw.status.addr,
                    leader: ms.leader,
                    // Docker leaves it empty without a manager status.
                    reachability: ms.reachability.parse().ok(),
                    manager_addr: ms.addr,
                    engine_version: raw.description.engine.engine_version,
                });
            }
            _ if section == "== tokens" => tokens.push(line.to_string()),
            _ => return Err(format!("unexpected line in swarm facts: `{line}`")),
        }
    }
    let mut t = tokens.into_iter();
    out.worker_token = t.next();
    out.manager_token = t.next();
    Ok(out)
}

/// Parses every host's facts; hosts whose facts do not parse are errors of theirs.
pub fn parse_all(
    facts: &BTreeMap<String, Facts>,
) -> BTreeMap<String, Result<HostSwarm, StepError>> {
    facts
        .iter()
        .map(|(h, f)| {
            (
                h.clone(),
                parse(&f.stdout).map_err(|e| {
                    StepError::new(format!("{h}: {e}"))
                        .hint("run `docker info` on the host to see what is wrong")
                }),
            )
        })
        .collect()
}

/// One read of the swarm from every host's facts: each host's own state, and THE swarm as
/// the managers see it. Every swarm step plans from one.
#[derive(Debug, Clone)]
pub struct Swarm {
    pub hosts: BTreeMap<String, Result<HostSwarm, StepError>>,
    /// None while no reachable manager controls a swarm; an error when managers disagree.
    pub view: Result<Option<SwarmView>, StepError>,
}

impl Swarm {
    pub fn read(inv: &Inventory, facts: &BTreeMap<String, Facts>) -> Self {
        let hosts = parse_all(facts);
        let view = view(inv, &hosts);
        Swarm { hosts, view }
    }

    /// A host's own swarm state, when its facts parsed.
    pub fn host(&self, host: &str) -> Option<&HostSwarm> {
        self.hosts.get(host).and_then(|s| s.as_ref().ok())
    }
}

/// THE swarm, as the reachable managers of the inventory see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmView {
    pub cluster_id: String,
    pub nodes: Vec<NodeInfo>,
    /// The inventory host that answered as a manager (the leader when reachable):
    /// manager-side actions run there.
    pub via: String,
    /// Address to join through (`IP:2377`), the leader's when known.
    pub join_addr: String,
    pub worker_token: String,
    pub manager_token: String,
}

impl SwarmView {
    /// The node of an inventory host, by its node ID (from its own facts) or by hostname.
    pub fn node_of<'a>(&'a self, host: &str, own: Option<&HostSwarm>) -> Option<&'a NodeInfo> {
        let id = own
            .and_then(|s| s.info())
            .map(|i| i.node_id.as_str())
            .filter(|s| !s.is_empty());
        match id {
            Some(id) => self.nodes.iter().find(|n| n.id == id),
            None => self.nodes.iter().find(|n| n.hostname == host),
        }
    }

    pub fn short_id(&self) -> &str {
        &self.cluster_id[..self.cluster_id.len().min(12)]
    }

    /// The node that leads the raft, when one does.
    pub fn leader(&self) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.leader)
    }
}

/// Builds THE swarm from the managers' facts: None when no reachable manager
/// controls a swarm; an error when managers are in different swarms.
pub fn view(
    inv: &Inventory,
    swarms: &BTreeMap<String, Result<HostSwarm, StepError>>,
) -> Result<Option<SwarmView>, StepError> {
    let mut controlling: Vec<(&Host, &HostSwarm)> = Vec::new();
    for m in inv.hosts.iter().filter(|h| h.has_role(Role::Manager)) {
        if let Some(Ok(s)) = swarms.get(&m.name)
            && s.info().is_some_and(|i| i.control_available)
            && s.cluster_id().is_some()
        {
            controlling.push((m, s));
        }
    }
    // A manager whose node is missing from the node list of a manager that can
    // list nodes was removed from the swarm (by `recover` or `remove-node`) and
    // only remembers it, e.g. a dead manager that came back after a recovery:
    // it is not part of THE swarm (swarm_join makes it leave and join again).
    let lists: Vec<&Vec<NodeInfo>> = controlling
        .iter()
        .map(|(_, s)| &s.nodes)
        .filter(|n| !n.is_empty())
        .collect();
    if !lists.is_empty() {
        let listing: Vec<(Option<&str>, &Vec<NodeInfo>)> = controlling
            .iter()
            .filter(|(_, s)| !s.nodes.is_empty())
            .map(|(_, s)| (s.cluster_id(), &s.nodes))
            .collect();
        controlling.retain(|(_, s)| {
            let own = s.info().map(|i| i.node_id.as_str()).unwrap_or_default();
            !s.nodes.is_empty()
                && listing
                    .iter()
                    .filter(|(c, _)| *c == s.cluster_id())
                    .all(|(_, l)| l.iter().any(|n| n.id == own))
        });
    }
    let Some((_, first)) = controlling.first() else {
        return Ok(None);
    };
    let id = first.cluster_id().expect("filtered above").to_string();
    if let Some((other, s)) = controlling
        .iter()
        .find(|(_, s)| s.cluster_id() != Some(id.as_str()))
    {
        return Err(StepError::new(format!(
            "managers are in different swarms: {} is in swarm {}, {} in swarm {}",
            controlling[0].0.name,
            &id[..id.len().min(12)],
            other.name,
            s.cluster_id().unwrap_or("?")
        ))
        .hint("keep one swarm: on the managers of the other one run `docker swarm leave --force`, then re-run"));
    }
    // Prefer the leader: the manager whose own node is marked leader.
    let leader_host = controlling
        .iter()
        .find(|(_, s)| {
            let own = s.info().map(|i| i.node_id.clone()).unwrap_or_default();
            s.nodes.iter().any(|n| n.id == own && n.leader)
        })
        .copied()
        .unwrap_or(controlling[0]);
    let (via, s) = leader_host;
    let join_addr = s
        .nodes
        .iter()
        .find(|n| n.leader)
        .map(|n| n.manager_addr.clone())
        .filter(|a| !a.is_empty())
        .or_else(|| via.private_ip.map(|ip| manager_addr(&ip.to_string())))
        .unwrap_or_else(|| {
            manager_addr(s.info().map(|i| i.node_addr.as_str()).unwrap_or_default())
        });
    Ok(Some(SwarmView {
        cluster_id: id,
        nodes: s.nodes.clone(),
        via: via.name.clone(),
        join_addr,
        worker_token: s.worker_token.clone().unwrap_or_default(),
        manager_token: s.manager_token.clone().unwrap_or_default(),
    }))
}

/// The gather command for a host of the inventory (managers print more).
pub fn gather_for(inv: &Inventory, host: &str) -> String {
    gather(inv.host(host).is_some_and(|h| h.has_role(Role::Manager)))
}

/// Join tokens found in facts: secrets for the runner's redaction.
pub fn tokens_in(facts: &Facts) -> Vec<String> {
    parse(&facts.stdout)
        .map(|s| s.worker_token.into_iter().chain(s.manager_token).collect())
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Captured from docker.io 20.10.24 on Debian 12 (lab VMs), trimmed.

    use provision_engine::inventory::Inventory;
    use provision_engine::step::Facts;
    use std::collections::BTreeMap;

    pub const INACTIVE: &str = "== info\n{\"NodeID\":\"\",\"NodeAddr\":\"\",\"LocalNodeState\":\"inactive\",\"ControlAvailable\":false,\"Error\":\"\",\"RemoteManagers\":null}\n";

    pub fn manager(
        node_id: &str,
        cluster: &str,
        nodes: &[(&str, &str, &str, bool, &str)],
    ) -> String {
        let mut s = format!(
            "== info\n{{\"NodeID\":\"{node_id}\",\"NodeAddr\":\"10.10.0.12\",\"LocalNodeState\":\"active\",\"ControlAvailable\":true,\"Error\":\"\",\"RemoteManagers\":[{{\"NodeID\":\"{node_id}\",\"Addr\":\"10.10.0.12:2377\"}}],\"Nodes\":{},\"Managers\":1,\"Cluster\":{{\"ID\":\"{cluster}\",\"Version\":{{\"Index\":10}}}}}}\n== nodes\n",
            nodes.len()
        );
        for (id, host, role, leader, labels) in nodes {
            let ms = if *role == "manager" {
                format!(
                    ",\"ManagerStatus\":{{\"Leader\":{leader},\"Reachability\":\"reachable\",\"Addr\":\"10.10.0.12:2377\"}}"
                )
            } else {
                String::new()
            };
            s.push_str(&format!(
                "{{\"ID\":\"{id}\",\"Version\":{{\"Index\":9}},\"Spec\":{{\"Labels\":{labels},\"Role\":\"{role}\",\"Availability\":\"active\"}},\"Description\":{{\"Hostname\":\"{host}\",\"Engine\":{{\"EngineVersion\":\"20.10.24+dfsg1\"}}}},\"Status\":{{\"State\":\"ready\",\"Addr\":\"10.10.0.12\"}}{ms}}}\n"
            ));
        }
        s.push_str("== tokens\nSWMTKN-1-worker-token\nSWMTKN-1-manager-token\n");
        s
    }

    /// An inventory of managers `manager-N` (private IPs from 10.10.0.11) and workers
    /// `worker-N` (from 10.10.0.31).
    pub fn inventory(managers: usize, workers: usize) -> Inventory {
        let mut t = String::from("name = \"t\"\n");
        for i in 1..=managers {
            t.push_str(&format!("[[hosts]]\nname = \"manager-{i}\"\naddress = \"127.0.0.1\"\nport = {}\nprivate_ip = \"10.10.0.{}\"\nroles = [\"manager\"]\n", 2200 + i, 10 + i));
        }
        for i in 1..=workers {
            t.push_str(&format!("[[hosts]]\nname = \"worker-{i}\"\naddress = \"127.0.0.1\"\nport = {}\nprivate_ip = \"10.10.0.{}\"\nroles = [\"worker\"]\n", 2300 + i, 30 + i));
        }
        Inventory::parse(&t, std::path::Path::new("c.toml"), &Default::default()).unwrap()
    }

    /// Facts by host, as the runner hands them to a plan.
    pub fn facts(entries: &[(&str, String)]) -> BTreeMap<String, Facts> {
        entries
            .iter()
            .map(|(h, f)| (h.to_string(), Facts::new(f.clone())))
            .collect()
    }

    pub fn worker(node_id: &str) -> String {
        format!(
            "== info\n{{\"NodeID\":\"{node_id}\",\"NodeAddr\":\"10.10.0.13\",\"LocalNodeState\":\"active\",\"ControlAvailable\":false,\"Error\":\"\",\"RemoteManagers\":[{{\"NodeID\":\"m1\",\"Addr\":\"10.10.0.12:2377\"}}],\"Nodes\":0,\"Managers\":0,\"Cluster\":null}}\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_commands_are_exact() {
        assert_eq!(
            gather(false),
            "command -v docker >/dev/null 2>&1 || { echo 'docker=absent'; exit 0; }; i=$(docker info --format '{{json .Swarm}}' 2>&1) || { echo 'docker=down'; printf '%s\\n' \"$i\"; exit 0; }; echo '== info'; printf '%s\\n' \"$i\""
        );
        assert!(gather(true).ends_with(
            "docker swarm join-token -q worker; docker swarm join-token -q manager;; esac"
        ));
    }

    #[test]
    fn parses_absent_down_inactive_manager_worker() {
        assert_eq!(parse("docker=absent\n").unwrap().docker, Docker::Absent);
        assert_eq!(
            parse(
                "docker=down\nCannot connect to the Docker daemon at unix:///var/run/docker.sock.\n"
            )
            .unwrap()
            .docker,
            Docker::Down(
                "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.".into()
            )
        );
        let s = parse(fixtures::INACTIVE).unwrap();
        assert!(!s.in_a_swarm());
        let m = parse(&fixtures::manager(
            "m1",
            "clusterA",
            &[
                ("m1", "manager-1", "manager", true, "{\"swarm\":\"true\"}"),
                ("w1", "worker-1", "worker", false, "{}"),
            ],
        ))
        .unwrap();
        assert!(m.in_a_swarm());
        assert_eq!(m.cluster_id(), Some("clusterA"));
        assert_eq!(m.nodes.len(), 2);
        assert_eq!(
            m.nodes[0].labels.get("swarm").map(String::as_str),
            Some("true")
        );
        assert!(m.nodes[0].leader);
        assert_eq!(m.nodes[1].role, NodeRole::Worker);
        assert_eq!(m.worker_token.as_deref(), Some("SWMTKN-1-worker-token"));
        let w = parse(&fixtures::worker("w1")).unwrap();
        assert!(w.in_a_swarm());
        assert_eq!(w.cluster_id(), None);
        assert!(parse("garbage").is_err());
    }

    #[test]
    fn tokens_are_reported_as_secrets() {
        let f = Facts::new(fixtures::manager(
            "m1",
            "c",
            &[("m1", "manager-1", "manager", true, "null")],
        ));
        assert_eq!(
            tokens_in(&f),
            vec![
                "SWMTKN-1-worker-token".to_string(),
                "SWMTKN-1-manager-token".to_string()
            ]
        );
    }
}
