//! The cluster a day-2 command works on: the inventory, a connection per host,
//! and a survey of every swarm host's live state (who is in the swarm, who
//! leads, whether the managers still have quorum).

use crate::OpsError;
use crate::commands;
use crate::record::{self, LastGood};
use provision_engine::event::{Redacted, Redactor};
use provision_engine::inventory::{Host, Inventory, Role};
use provision_playbook::steps::swarm_facts::{self, HostSwarm, NodeInfo, Raft, SwarmView};
use provision_playbook::swarm::node::NodeRole;
use provision_transport::{Command, Connector, Output, Stdin, Target, Transport};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a survey waits for one host's facts.
pub const SURVEY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Cluster {
    pub inv: Inventory,
    connector: Arc<dyn Connector>,
    targets: BTreeMap<String, Target>,
    /// The cluster's secrets, plus those learnt while working (join tokens, the unlock key):
    /// every message is made through it.
    /// Shared with the binary's terminal output ([`Cluster::sharing`]), so a secret learnt
    /// mid-operation is hidden there too.
    redactor: Arc<Mutex<Redactor>>,
    /// Set on Ctrl-C / SIGTERM: no new command starts; the running ones finish.
    interrupted: std::sync::atomic::AtomicBool,
}

impl Cluster {
    pub fn new(
        inv: Inventory,
        connector: Arc<dyn Connector>,
        targets: Vec<Target>,
        redactor: Redactor,
    ) -> Self {
        Cluster {
            inv,
            connector,
            targets: targets.into_iter().map(|t| (t.name.clone(), t)).collect(),
            redactor: Arc::new(Mutex::new(redactor)),
            interrupted: Default::default(),
        }
    }

    /// Keeps the cluster's secrets, and those it learns later, in `shared` (the binary's
    /// one redactor for everything it prints).
    pub fn sharing(mut self, shared: Arc<Mutex<Redactor>>) -> Self {
        {
            let own = self.redactor.lock().unwrap_or_else(|e| e.into_inner());
            let mut all = shared.lock().unwrap_or_else(|e| e.into_inner());
            *all = all.merged(&own);
        }
        self.redactor = shared;
        self
    }

    /// From now on no new command starts ([`Cluster::run`] returns
    /// [`OpsError::Interrupted`]); commands already running finish, and the cluster lock
    /// is still released.
    pub fn interrupt(&self) {
        self.interrupted
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Declares a value secret: it never appears in messages from now on.
    pub fn learn_secret(&self, s: &str) {
        let mut r = self.redactor.lock().unwrap();
        *r = r.with_values([s]);
    }

    /// `s` with every secret of the cluster hidden, in any encoding.
    pub fn clean(&self, s: &str) -> Redacted {
        self.redactor.lock().unwrap().clean(s)
    }

    /// [`Cluster::clean`] as a plain string, for error values.
    pub fn redact(&self, s: &str) -> String {
        self.clean(s).into_string()
    }

    /// Inventory hosts that are swarm nodes (managers first, in inventory order).
    pub fn swarm_hosts(&self) -> Vec<&Host> {
        let mut v: Vec<&Host> = self.inv.managers().collect();
        v.extend(
            self.inv
                .hosts
                .iter()
                .filter(|h| h.has_role(Role::Worker) && !h.has_role(Role::Manager)),
        );
        v
    }

    pub fn is_manager(&self, host: &str) -> bool {
        self.inv
            .host(host)
            .is_some_and(|h| h.has_role(Role::Manager))
    }

    pub fn host(&self, name: &str) -> Result<&Host, OpsError> {
        self.inv.host(name).ok_or_else(|| {
            let names: Vec<&str> = self.inv.hosts.iter().map(|h| h.name.as_str()).collect();
            OpsError::refused(
                format!("no host `{name}` in {}", self.inv.path.display()),
                format!("hosts: {}", names.join(", ")),
            )
        })
    }

    pub fn private_ip(&self, host: &str) -> Result<String, OpsError> {
        self.host(host)?
            .private_ip
            .map(|ip| ip.to_string())
            .ok_or_else(|| {
                OpsError::refused(
                    format!("{host} has no private_ip in {}", self.inv.path.display()),
                    "set private_ip on the host: the swarm advertises it",
                )
            })
    }

    pub async fn transport(&self, host: &str) -> Result<Arc<dyn Transport>, OpsError> {
        let t = self.targets.get(host).ok_or_else(|| {
            OpsError::refused(
                format!("no host `{host}` in the inventory"),
                "check the name",
            )
        })?;
        self.connector
            .connect(t)
            .await
            .map_err(|e| OpsError::transport(host, e))
    }

    /// Runs a command; a non-zero exit is returned, not an error. Refused once the
    /// command was interrupted.
    pub async fn run(&self, host: &str, cmd: Command) -> Result<Output, OpsError> {
        if self.is_interrupted() {
            return Err(OpsError::Interrupted {
                next: format!(
                    "{} on {host}",
                    cmd.script.lines().next().unwrap_or("").trim()
                ),
            });
        }
        self.run_always(host, cmd).await
    }

    /// [`Cluster::run`] even after an interrupt: for the cluster lock's refresh and release,
    /// and the read-only survey.
    pub async fn run_always(&self, host: &str, cmd: Command) -> Result<Output, OpsError> {
        let t = self.transport(host).await?;
        t.run(cmd).await.map_err(|e| OpsError::transport(host, e))
    }

    /// Runs a command that must succeed; returns its stdout.
    pub async fn ok(
        &self,
        host: &str,
        what: &str,
        script: impl Into<String>,
        hint: &str,
    ) -> Result<String, OpsError> {
        self.ok_cmd(host, what, Command::new(script), hint).await
    }

    /// Like [`Cluster::ok`], with data (a secret, an archive) on stdin.
    pub async fn ok_stdin(
        &self,
        host: &str,
        what: &str,
        script: impl Into<String>,
        stdin: Vec<u8>,
        hint: &str,
    ) -> Result<String, OpsError> {
        let cmd = Command::new(script).stdin(Stdin::bytes(stdin));
        self.ok_cmd(host, what, cmd, hint).await
    }

    pub async fn ok_cmd(
        &self,
        host: &str,
        what: &str,
        cmd: Command,
        hint: &str,
    ) -> Result<String, OpsError> {
        let script = cmd.script.clone();
        let out = self.run(host, cmd).await?;
        if out.success() {
            Ok(out.stdout_str())
        } else {
            Err(OpsError::Command {
                host: host.to_string(),
                what: what.to_string(),
                command: self.redact(&script),
                status: out.describe_exit(),
                stderr: self.redact(out.stderr_str().trim()),
                hint: hint.to_string(),
            })
        }
    }

    /// Polls `script` on `host` until `done(stdout)` or the timeout.
    pub async fn wait_for(
        &self,
        host: &str,
        what: &str,
        script: &str,
        timeout: Duration,
        hint: &str,
        done: impl Fn(&str) -> bool,
    ) -> Result<(), OpsError> {
        let start = Instant::now();
        loop {
            let out = self
                .run(host, Command::new(script).timeout(Duration::from_secs(30)))
                .await;
            if let Ok(o) = &out
                && done(&o.stdout_str())
            {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(OpsError::Timeout {
                    what: format!("{what} on {host}"),
                    secs: timeout.as_secs(),
                    hint: hint.to_string(),
                });
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Unlocks a manager locked by autolock; the key travels on stdin.
    pub async fn unlock(&self, host: &str, key: &str, hint: &str) -> Result<(), OpsError> {
        self.ok_stdin(
            host,
            "unlocking the swarm",
            commands::UNLOCK,
            commands::unlock_request(key).into_bytes(),
            hint,
        )
        .await
        .map(drop)
    }

    /// Waits until a manager is back in the swarm and can act as one (unlocking
    /// it with `unlock_key` when autolock locked it on restart).
    pub async fn wait_manager_ready(
        &self,
        host: &str,
        unlock_key: Option<&str>,
        timeout: Duration,
    ) -> Result<(), OpsError> {
        let start = Instant::now();
        loop {
            let out = self.run(host, Command::new(commands::LOCAL_STATE)).await;
            if let Ok(o) = &out {
                match crate::parse::local_state(&o.stdout_str()) {
                    Some((s, true)) if s == "active" => return Ok(()),
                    Some((s, _)) if s == "locked" => {
                        let Some(key) = unlock_key else {
                            return Err(OpsError::refused(
                                format!(
                                    "{host} came back locked (swarm autolock) and no unlock key is at hand"
                                ),
                                format!("unlock it: ssh {host} docker swarm unlock"),
                            ));
                        };
                        self.unlock(
                            host,
                            key,
                            "check the unlock key (`docker swarm unlock-key` on another manager)",
                        )
                        .await?;
                    }
                    _ => {}
                }
            }
            if start.elapsed() >= timeout {
                return Err(OpsError::Timeout {
                    what: format!("{host} to be an active manager again"),
                    secs: timeout.as_secs(),
                    hint: format!("look at `journalctl -u docker` on {host}"),
                });
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Every swarm host's live state, gathered in parallel.
    pub async fn survey(&self) -> Survey {
        let futs = self.swarm_hosts().into_iter().map(|h| async move {
            let manager = h.has_role(Role::Manager);
            let cmd = Command::new(swarm_facts::gather(manager)).timeout(SURVEY_TIMEOUT);
            // Read-only, and decisions rest on it: it runs even after an interrupt, so
            // nothing is decided on hosts wrongly seen as unreachable.
            let state = match self.run_always(&h.name, cmd).await {
                Err(e) => HostState::Unreachable(self.redact(&e.to_string())),
                Ok(out) => match swarm_facts::parse(&out.stdout_str()) {
                    Ok(s) => {
                        for t in s.worker_token.iter().chain(s.manager_token.iter()) {
                            self.learn_secret(t);
                        }
                        let list_error = if manager
                            && s.info().is_some_and(|i| i.control_available)
                            && s.nodes.is_empty()
                        {
                            Some(out.stderr_str().trim().to_string())
                        } else {
                            None
                        };
                        HostState::Up {
                            swarm: Box::new(s),
                            list_error,
                        }
                    }
                    Err(e) => HostState::Broken(e),
                },
            };
            (h.name.clone(), state)
        });
        Survey {
            hosts: futures::future::join_all(futs).await.into_iter().collect(),
            last_good: record::load(&record::path(&self.inv)),
        }
    }
}

/// One host as a survey found it.
#[derive(Debug, Clone)]
pub enum HostState {
    /// SSH failed: the host is down or cut off.
    Unreachable(String),
    /// Its facts did not parse.
    Broken(String),
    Up {
        swarm: Box<HostSwarm>,
        /// A manager that could not list nodes: Docker's reason (no leader, ...).
        list_error: Option<String>,
    },
}

impl HostState {
    pub fn swarm(&self) -> Option<&HostSwarm> {
        match self {
            HostState::Up { swarm, .. } => Some(swarm),
            _ => None,
        }
    }

    pub fn reachable(&self) -> bool {
        !matches!(self, HostState::Unreachable(_))
    }
}

#[derive(Debug, Clone)]
pub struct Survey {
    pub hosts: BTreeMap<String, HostState>,
    /// What the last successful run recorded ([`crate::record`]): counted when no leader can
    /// list the nodes.
    pub last_good: Option<LastGood>,
}

/// The managers' quorum.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Quorum {
    /// Managers in the swarm's raft (reachable or not).
    pub managers: usize,
    /// Managers that answer.
    pub reachable: usize,
    /// Managers needed for a majority.
    pub needed: usize,
    pub ok: bool,
    /// The inventory name of the leader, when there is one.
    pub leader: Option<String>,
}

impl Survey {
    pub fn state(&self, host: &str) -> Option<&HostState> {
        self.hosts.get(host)
    }

    /// THE swarm as the managers that can list nodes see it (None: no swarm,
    /// or no manager with a leader).
    pub fn view(&self, inv: &Inventory) -> Result<Option<SwarmView>, OpsError> {
        let swarms = self
            .hosts
            .iter()
            .map(|(h, s)| {
                let r = match s {
                    HostState::Up { swarm, .. } => Ok((**swarm).clone()),
                    HostState::Unreachable(e) | HostState::Broken(e) => {
                        Err(provision_engine::step::StepError::new(e.clone()))
                    }
                };
                (h.clone(), r)
            })
            .collect();
        let v = swarm_facts::view(inv, &swarms)
            .map_err(|e| OpsError::refused(e.to_string(), "fix the swarm first"))?;
        // A manager without a leader cannot list nodes: no usable view then.
        Ok(v.filter(|v| !v.nodes.is_empty()))
    }

    /// Managers in a swarm according to their own Docker (whatever the quorum).
    pub fn managers_in_swarm<'a>(&'a self, inv: &'a Inventory) -> Vec<&'a str> {
        inv.managers()
            .filter(|m| {
                self.state(&m.name)
                    .and_then(HostState::swarm)
                    .is_some_and(|s| {
                        s.in_a_swarm() && s.info().is_some_and(|i| i.control_available)
                    })
            })
            .map(|m| m.name.as_str())
            .collect()
    }

    /// The quorum: from the node list when a manager can list nodes, else from
    /// what the managers' own Docker says (raft size) and who answers.
    pub fn quorum(&self, inv: &Inventory) -> Option<Quorum> {
        if let Ok(Some(v)) = self.view(inv) {
            let raft = Raft::of(&v.nodes);
            let (reachable, needed) = (raft.reachable(), raft.needed());
            let leader = v
                .leader()
                .and_then(|n| host_of_node(inv, n))
                .map(str::to_string);
            return Some(Quorum {
                managers: raft.members.len(),
                reachable,
                needed,
                ok: reachable >= needed,
                leader,
            });
        }
        let in_swarm = self.managers_in_swarm(inv);
        if in_swarm.is_empty() {
            return None;
        }
        let raft = in_swarm
            .iter()
            .filter_map(|m| {
                self.state(m)
                    .and_then(HostState::swarm)?
                    .info()
                    // Docker counts `Managers` from the node list, which needs a leader: 0 then.
                    // `RemoteManagers` is the node's own view of the raft's members.
                    .map(|i| {
                        i.managers
                            .max(i.remote_managers.as_ref().map_or(0, Vec::len))
                    })
            })
            .max()
            .unwrap_or(0)
            .max(in_swarm.len())
            // A lone manager that lost its peers may know fewer than the swarm had: the last
            // good run's membership counts too.
            .max(self.last_good.as_ref().map_or(0, |r| r.managers.len()));
        let needed = raft / 2 + 1;
        Some(Quorum {
            managers: raft,
            reachable: in_swarm.len(),
            needed,
            // No manager can list nodes: there is no leader, whatever the count says.
            ok: false,
            leader: None,
        })
    }
}

/// The inventory host of a swarm node: same name as its hostname, or same private address.
pub fn host_of_node<'a>(inv: &'a Inventory, n: &NodeInfo) -> Option<&'a str> {
    inv.hosts
        .iter()
        .find(|h| h.name == n.hostname)
        .or_else(|| {
            inv.hosts.iter().find(|h| {
                h.private_ip.is_some_and(|ip| {
                    let ip = ip.to_string();
                    n.addr == ip || provision_transport::addr::host_of(&n.manager_addr) == ip
                })
            })
        })
        .map(|h| h.name.as_str())
}

/// Pure: the last good state of a swarm as a leader listed it ([`crate::record`]).
pub fn last_good(inv: &Inventory, view: &SwarmView, recorded_at: u64) -> LastGood {
    let mut managers = Vec::new();
    let mut workers = Vec::new();
    for n in &view.nodes {
        let name = host_of_node(inv, n)
            .map(str::to_string)
            .unwrap_or_else(|| n.hostname.clone());
        match n.role {
            NodeRole::Manager => managers.push(name),
            NodeRole::Worker => workers.push(name),
        }
    }
    LastGood {
        swarm_id: view.cluster_id.clone(),
        recorded_at,
        managers,
        workers,
    }
}

impl Cluster {
    /// The swarm's state now, when a leader lists it (one survey of the swarm hosts); None
    /// when there is no swarm or no leader: then nothing is good enough to record.
    pub async fn last_good_now(&self) -> Option<LastGood> {
        let survey = self.survey().await;
        let view = survey.view(&self.inv).ok()??;
        view.leader()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Some(last_good(&self.inv, &view, now))
    }
}
