//! Day-2 flows against the recording fake transport: which commands run on
//! which host, in which order, and what is refused before anything changes.

use provision_engine::event::Redactor;
use provision_engine::inventory::Inventory;
use provision_ops::commands::raft_files;
use provision_ops::{Cluster, OpsError, nodes, recover, status};
use provision_transport::fake::{FakeConnector, FakeTransport};
use provision_transport::{Connector, Output};
use std::sync::Arc;

const GATHER: &str = "{{json .Swarm}}";

fn inventory() -> Inventory {
    inventory_at(std::path::Path::new("c.toml"))
}

/// The test inventory as if read from `path` (its `.provision/` beside it).
fn inventory_at(path: &std::path::Path) -> Inventory {
    let mut t = String::from("name = \"t\"\n");
    for i in 1..=3 {
        t.push_str(&format!(
            "[[hosts]]\nname = \"manager-{i}\"\naddress = \"127.0.0.1\"\nport = {}\nprivate_ip = \"10.10.0.1{i}\"\nroles = [\"manager\"]\n",
            2200 + i
        ));
    }
    t.push_str("[[hosts]]\nname = \"worker-1\"\naddress = \"127.0.0.1\"\nport = 2301\nprivate_ip = \"10.10.0.21\"\nroles = [\"worker\"]\n");
    Inventory::parse(&t, path, &Default::default()).unwrap()
}

fn info(node: &str, managers: usize) -> String {
    format!(
        "{{\"NodeID\":\"{node}\",\"NodeAddr\":\"10.10.0.11\",\"LocalNodeState\":\"active\",\"ControlAvailable\":true,\"Error\":\"\",\"RemoteManagers\":[],\"Managers\":{managers},\"Cluster\":{{\"ID\":\"C\"}}}}"
    )
}

/// (id, hostname, role, state, reachability, leader)
fn node(n: (&str, &str, &str, &str, &str, bool)) -> String {
    let ms = if n.2 == "manager" && !n.4.is_empty() {
        format!(
            ",\"ManagerStatus\":{{\"Leader\":{},\"Reachability\":\"{}\",\"Addr\":\"10.10.0.1{}:2377\"}}",
            n.5,
            n.4,
            &n.1[n.1.len() - 1..]
        )
    } else {
        String::new()
    };
    format!(
        "{{\"ID\":\"{}\",\"Spec\":{{\"Role\":\"{}\",\"Availability\":\"active\"}},\"Description\":{{\"Hostname\":\"{}\",\"Engine\":{{\"EngineVersion\":\"20.10.24\"}}}},\"Status\":{{\"State\":\"{}\",\"Addr\":\"10.10.0.1\"}}{ms}}}",
        n.0, n.2, n.1, n.3
    )
}

fn manager_facts(
    own: &str,
    managers: usize,
    nodes: &[(&str, &str, &str, &str, &str, bool)],
) -> String {
    let mut s = format!("== info\n{}\n== nodes\n", info(own, managers));
    for n in nodes {
        s.push_str(&node(*n));
        s.push('\n');
    }
    s.push_str("== tokens\nSWMTKN-1-w\nSWMTKN-1-m\n");
    s
}

const WORKER: &str = "== info\n{\"NodeID\":\"w1\",\"NodeAddr\":\"10.10.0.21\",\"LocalNodeState\":\"active\",\"ControlAvailable\":false,\"Error\":\"\",\"RemoteManagers\":[{\"NodeID\":\"m1\",\"Addr\":\"10.10.0.11:2377\"}],\"Managers\":0,\"Cluster\":null}\n";

fn cluster(hosts: &[Arc<FakeTransport>]) -> Cluster {
    cluster_of(inventory(), hosts)
}

fn cluster_of(inv: Inventory, hosts: &[Arc<FakeTransport>]) -> Cluster {
    let c = FakeConnector::default();
    for h in hosts {
        c.add(h.clone());
    }
    let connector: Arc<dyn Connector> = Arc::new(c);
    let targets = provision_playbook::compile::targets(&inv, None);
    Cluster::new(inv, connector, targets, Redactor::empty())
}

/// manager-1 answering its first survey without a leader. The fake gives the
/// newest rule priority: rules for later calls go in before this one.
fn lost_quorum_manager1() -> Arc<FakeTransport> {
    lose_quorum(Arc::new(FakeTransport::new("manager-1")))
}

fn lose_quorum(m1: Arc<FakeTransport>) -> Arc<FakeTransport> {
    // No leader: the node list and the tokens fail, only `docker info` answers.
    m1.respond_once(
        GATHER,
        Output {
            exit_status: Some(0),
            stdout: format!("== info\n{}\n== nodes\n", info("m1", 3)).into_bytes(),
            stderr: b"Error response from daemon: rpc error: code = Unknown desc = The swarm does not have a leader.".to_vec(),
            ..Default::default()
        },
    );
    m1
}

#[tokio::test]
async fn status_reports_a_lost_quorum() {
    let m1 = lost_quorum_manager1();
    let w1 = Arc::new(FakeTransport::new("worker-1"));
    w1.respond(GATHER, Output::ok(WORKER));
    let c = cluster(&[m1.clone(), w1]);
    let st = status::status(&c).await.unwrap();
    let q = st.quorum.clone().unwrap();
    assert_eq!((q.managers, q.reachable, q.needed, q.ok), (3, 1, 2, false));
    assert!(
        st.warnings[0].starts_with("QUORUM LOST: 1 of 3 managers reachable, 2 needed"),
        "{:?}",
        st.warnings
    );
    assert!(
        st.warnings
            .iter()
            .any(|w| w.starts_with("manager-2 is unreachable over SSH"))
    );
    let rows: Vec<(&str, &str, &str)> = st
        .nodes
        .iter()
        .map(|n| {
            (
                n.host.as_deref().unwrap(),
                n.ssh.as_str(),
                n.manager.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("manager-1", "reachable", "no leader"),
            ("manager-2", "unreachable", "unreachable"),
            ("manager-3", "unreachable", "unreachable"),
            ("worker-1", "reachable", ""),
        ]
    );
    // Read-only: nothing but the survey ran.
    assert_eq!(m1.scripts().len(), 1);
}

/// manager-1 in a swarm without a leader: its `docker info` is `info`, and it cannot list nodes.
fn leaderless_manager1(info: &str) -> Arc<FakeTransport> {
    let m1 = Arc::new(FakeTransport::new("manager-1"));
    m1.respond(
        GATHER,
        Output {
            exit_status: Some(0),
            stdout: format!("== info\n{info}\n== nodes\n").into_bytes(),
            stderr: b"Error response from daemon: rpc error: code = Unknown desc = The swarm does not have a leader.".to_vec(),
            ..Default::default()
        },
    );
    m1
}

/// Without a leader Docker's `Managers` count is 0 (it comes from the node list): the raft's
/// size is read from `RemoteManagers`, else one surviving manager would look like a majority
/// of one and recover would refuse (seen on the lab).
#[tokio::test]
async fn a_leaderless_manager_counts_the_raft_from_its_remote_managers() {
    let info = "{\"NodeID\":\"m1\",\"NodeAddr\":\"10.10.0.11\",\"LocalNodeState\":\"active\",\"ControlAvailable\":true,\"Error\":\"\",\"RemoteManagers\":[{\"NodeID\":\"m1\",\"Addr\":\"10.10.0.11:2377\"},{\"NodeID\":\"m2\",\"Addr\":\"10.10.0.12:2377\"},{\"NodeID\":\"m3\",\"Addr\":\"10.10.0.13:2377\"}],\"Managers\":0,\"Cluster\":{\"ID\":\"C\"}}";
    let survey = || {
        let m1 = leaderless_manager1(info);
        m1.respond(raft_files(), Output::ok(""));
        let w1 = Arc::new(FakeTransport::new("worker-1"));
        w1.respond(GATHER, Output::ok(WORKER));
        cluster(&[m1, w1])
    };
    let st = status::status(&survey()).await.unwrap();
    let q = st.quorum.clone().unwrap();
    assert_eq!((q.managers, q.reachable, q.needed, q.ok), (3, 1, 2, false));
    let err = recover::recover(&survey(), None, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("recover would start a new swarm from manager-1's state")
            && err.contains("drop manager-2, manager-3 from it as dead"),
        "{err}"
    );
}

/// A lone manager whose peers are gone may know only itself (RemoteManagers) and no swarm id:
/// the last good run's record names the swarm and counts its managers, in status and in every
/// refusal that quotes the quorum.
#[tokio::test]
async fn the_last_good_run_names_the_swarm_and_counts_its_managers_without_a_leader() {
    let info = "{\"NodeID\":\"m1\",\"NodeAddr\":\"10.10.0.11\",\"LocalNodeState\":\"active\",\"ControlAvailable\":true,\"Error\":\"\",\"RemoteManagers\":[{\"NodeID\":\"m1\",\"Addr\":\"10.10.0.11:2377\"}],\"Managers\":0,\"Cluster\":{\"ID\":\"\"}}";
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory_at(&dir.path().join("c.toml"));
    let survey = || {
        let w1 = Arc::new(FakeTransport::new("worker-1"));
        w1.respond(GATHER, Output::ok(WORKER));
        cluster_of(inv.clone(), &[leaderless_manager1(info), w1])
    };
    // Without a record, what the lone manager knows is all there is.
    let st = status::status(&survey()).await.unwrap();
    let q = st.quorum.clone().unwrap();
    assert_eq!((q.managers, q.reachable, q.needed), (1, 1, 1));
    assert_eq!(st.swarm_id, None);
    // With one, its three managers count and it names the swarm.
    std::fs::create_dir(dir.path().join(".provision")).unwrap();
    provision_ops::record::save(
        &provision_ops::record::path(&inv),
        &provision_ops::record::LastGood {
            swarm_id: "pgrthigctdiqz0b5x3lm9hkq2".into(),
            recorded_at: 1_765_000_000,
            managers: vec!["manager-1".into(), "manager-2".into(), "manager-3".into()],
            workers: vec!["worker-1".into()],
        },
    )
    .unwrap();
    let st = status::status(&survey()).await.unwrap();
    let q = st.quorum.clone().unwrap();
    assert_eq!((q.managers, q.reachable, q.needed, q.ok), (3, 1, 2, false));
    assert_eq!(st.swarm_id.as_deref(), Some("pgrthigctdiq"));
    assert!(st.swarm_id_recorded);
    assert!(
        st.warnings[0].starts_with("QUORUM LOST: 1 of 3 managers reachable, 2 needed"),
        "{:?}",
        st.warnings
    );
    // remove-node quotes the same figures.
    let err = nodes::remove_node(&survey(), "worker-1")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 of 3"), "{err}");
}

#[tokio::test]
async fn recover_forces_a_new_cluster_and_drops_the_dead_managers() {
    let m1 = Arc::new(FakeTransport::new("manager-1"));
    m1.set_default(Output::ok(""));
    m1.respond("--force-new-cluster", Output::ok("Swarm initialized\n"));
    m1.respond("docker node ls -q >/dev/null", Output::ok("ok\n"));
    let after = manager_facts(
        "m1",
        1,
        &[
            ("m1", "manager-1", "manager", "ready", "reachable", true),
            // Out of the raft after --force-new-cluster: no manager status.
            ("m2", "manager-2", "manager", "down", "", false),
            ("m3", "manager-3", "manager", "down", "", false),
            ("w1", "worker-1", "worker", "ready", "", false),
        ],
    );
    m1.respond(GATHER, Output::ok(after));
    let m1 = lose_quorum(m1);
    let w1 = Arc::new(FakeTransport::new("worker-1"));
    w1.respond(GATHER, Output::ok(WORKER));
    let c = cluster(&[m1.clone(), w1.clone()]);
    let r = recover::recover(&c, None, true).await.unwrap();
    assert_eq!(r.survivor, "manager-1");
    let changes: Vec<String> = m1
        .scripts()
        .into_iter()
        .filter(|s| {
            !s.contains(GATHER) && !s.contains("docker node ls -q >/dev/null") && *s != raft_files()
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            "docker swarm init --force-new-cluster --advertise-addr 10.10.0.11",
            "docker node rm --force m2",
            "docker node rm --force m3",
        ]
    );
    // The worker is fine where it is: only surveyed.
    assert!(w1.scripts().iter().all(|s| s.contains(GATHER)));
    assert!(
        r.steps.iter().any(|s| s.starts_with("manager-2: skipped")),
        "{:?}",
        r.steps
    );
}

/// manager-1 still leads for a moment, but 2 of its 3 managers are gone.
fn leader_without_majority() -> Arc<FakeTransport> {
    let m1 = Arc::new(FakeTransport::new("manager-1"));
    m1.set_default(Output::ok(""));
    m1.respond(
        GATHER,
        Output::ok(manager_facts(
            "m1",
            3,
            &[
                ("m1", "manager-1", "manager", "ready", "reachable", true),
                ("m2", "manager-2", "manager", "ready", "unreachable", false),
                ("m3", "manager-3", "manager", "down", "unreachable", false),
            ],
        )),
    );
    m1
}

#[tokio::test]
async fn recover_proceeds_while_a_leader_that_lost_its_majority_still_answers() {
    let m1 = leader_without_majority();
    m1.respond("docker node ls -q >/dev/null", Output::ok("ok\n"));
    let c = cluster(std::slice::from_ref(&m1));
    // Without --yes: it says what it would do, and does nothing.
    let e = recover::recover(&c, None, false).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "recover would start a new swarm from manager-1's state (the first surviving manager (its raft files could not be read)) and drop manager-2, manager-3 from it as dead; they re-join as managers when they are back and `provision run c.toml` runs\n  hint: pass --yes to go ahead"
    );
    assert!(
        m1.scripts()
            .iter()
            .all(|s| s.contains(GATHER) || *s == raft_files()),
        "only read: {:?}",
        m1.scripts()
    );
    recover::recover(&c, None, true).await.unwrap();
    assert!(
        m1.scripts()
            .iter()
            .any(|s| s == "docker swarm init --force-new-cluster --advertise-addr 10.10.0.11")
    );
}

#[tokio::test]
async fn after_an_interrupt_no_new_command_starts_but_the_lock_can_be_released() {
    let m1 = leader_without_majority();
    let c = cluster(std::slice::from_ref(&m1));
    c.interrupt();
    let e = recover::recover(&c, None, true).await.unwrap_err();
    assert!(matches!(e, OpsError::Interrupted { .. }), "{e}");
    assert!(
        e.to_string().starts_with("interrupted: the commands that were running finished, and the next one (for f in /var/lib/docker/swarm/raft/"),
        "{e}"
    );
    assert!(
        m1.scripts()
            .iter()
            .all(|s| !s.contains("--force-new-cluster")),
        "{:?}",
        m1.scripts()
    );
    // The lock's release goes through.
    let before = m1.scripts().len();
    c.run_always("manager-1", provision_transport::Command::new("release"))
        .await
        .unwrap();
    assert_eq!(m1.scripts().len(), before + 1);
}

#[tokio::test]
async fn recover_refuses_when_quorum_is_fine() {
    let m1 = Arc::new(FakeTransport::new("manager-1"));
    m1.respond(
        GATHER,
        Output::ok(manager_facts(
            "m1",
            3,
            &[
                ("m1", "manager-1", "manager", "ready", "reachable", true),
                ("m2", "manager-2", "manager", "ready", "reachable", false),
                ("m3", "manager-3", "manager", "down", "unreachable", false),
            ],
        )),
    );
    let c = cluster(std::slice::from_ref(&m1));
    let e = recover::recover(&c, None, true).await.unwrap_err();
    let OpsError::Refused { reason, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(
        reason,
        "quorum is not lost: 2 of 3 managers reachable, manager-1 leads; nothing to recover"
    );
    assert_eq!(m1.scripts().len(), 1, "nothing but the survey ran");
}

#[tokio::test]
async fn remove_node_refuses_while_another_manager_is_down() {
    let m1 = Arc::new(FakeTransport::new("manager-1"));
    m1.respond(
        GATHER,
        Output::ok(manager_facts(
            "m1",
            3,
            &[
                ("m1", "manager-1", "manager", "ready", "reachable", true),
                ("m2", "manager-2", "manager", "ready", "reachable", false),
                ("m3", "manager-3", "manager", "down", "unreachable", false),
            ],
        )),
    );
    let m2 = Arc::new(FakeTransport::new("manager-2"));
    m2.respond(GATHER, Output::ok(format!("== info\n{}\n", info("m2", 3))));
    let c = cluster(&[m1.clone(), m2.clone()]);
    let e = nodes::remove_node(&c, "manager-2").await.unwrap_err();
    assert_eq!(
        e.to_string().lines().next().unwrap(),
        "refusing to remove manager manager-2: it would leave 1 of 2 managers reachable and a quorum needs 2 (manager-3 unreachable)"
    );
    for f in [&m1, &m2] {
        assert!(
            f.scripts().iter().all(|s| s.contains(GATHER)),
            "read-only: {:?}",
            f.scripts()
        );
    }
}

#[test]
fn a_node_is_found_by_its_ipv6_raft_address() {
    let inv = Inventory::parse(
        "name = \"t\"\n[[hosts]]\nname = \"manager-1\"\naddress = \"fd00::1\"\nprivate_ip = \"fd00:10::11\"\nroles = [\"manager\"]\n",
        std::path::Path::new("c.toml"),
        &Default::default(),
    )
    .unwrap();
    // A renamed machine: only Docker's raft address (`[v6]:2377`) ties it to the inventory.
    let n = provision_playbook::steps::swarm_facts::NodeInfo {
        hostname: "renamed".into(),
        role: provision_playbook::swarm::node::NodeRole::Manager,
        manager_addr: "[fd00:10::11]:2377".into(),
        ..Default::default()
    };
    assert_eq!(
        provision_ops::cluster::host_of_node(&inv, &n),
        Some("manager-1")
    );
    let other = provision_playbook::steps::swarm_facts::NodeInfo {
        manager_addr: "[fd00:10::12]:2377".into(),
        ..n
    };
    assert_eq!(provision_ops::cluster::host_of_node(&inv, &other), None);
}

/// A leader that lost its majority but has not stepped down yet lists its nodes from memory
/// and then cannot answer for services (seen on the lab: `docker service ls` hung until its
/// deadline): status still reports the nodes and the quorum, and says why services are missing.
#[tokio::test]
async fn status_reports_the_nodes_when_services_cannot_be_listed() {
    let m1 = Arc::new(FakeTransport::new("manager-1"));
    m1.respond(
        GATHER,
        Output::ok(manager_facts(
            "m1",
            3,
            &[
                ("m1", "manager-1", "manager", "ready", "reachable", true),
                ("m2", "manager-2", "manager", "down", "unreachable", false),
                ("m3", "manager-3", "manager", "down", "unreachable", false),
                ("w1", "worker-1", "worker", "ready", "", false),
            ],
        )),
    );
    m1.respond(
        "docker service ls",
        Output {
            exit_status: Some(1),
            stderr: b"Error response from daemon: rpc error: code = DeadlineExceeded desc = context deadline exceeded".to_vec(),
            ..Default::default()
        },
    );
    let w1 = Arc::new(FakeTransport::new("worker-1"));
    w1.respond(GATHER, Output::ok(WORKER));
    let c = cluster(&[m1.clone(), w1]);
    let st = status::status(&c).await.unwrap();
    let q = st.quorum.clone().unwrap();
    assert_eq!((q.managers, q.reachable, q.ok), (3, 1, false));
    assert_eq!(st.nodes.len(), 4);
    assert!(st.services.is_empty());
    assert!(
        st.warnings.iter().any(|w| w
            .starts_with("services unknown: listing them on manager-1 failed (")
            && w.contains("context deadline exceeded")),
        "{:?}",
        st.warnings
    );
}
