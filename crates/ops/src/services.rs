//! `provision ps`, `logs` and `exec`: a service's tasks, logs and a command in
//! one of its containers, through a reachable manager (and, for exec, the node
//! that runs the task).

use crate::cluster::host_of_node;
use crate::parse::{self, TaskLine};
use crate::{Cluster, OpsError, commands};
use provision_playbook::steps::swarm_facts::SwarmView;
use provision_transport::{Command, OutputSink};

/// THE swarm, or a refusal that says why there is none.
pub async fn swarm(cluster: &Cluster) -> Result<SwarmView, OpsError> {
    let survey = cluster.survey().await;
    match survey.view(&cluster.inv)? {
        Some(v) => Ok(v),
        None => {
            let file = cluster.inv.path.display();
            Err(match survey.quorum(&cluster.inv) {
                Some(q) => OpsError::refused(
                    format!(
                        "no manager can answer: quorum lost ({} of {} managers reachable, {} needed)",
                        q.reachable, q.managers, q.needed
                    ),
                    format!("bring managers back, or run `provision recover {file}`"),
                ),
                None => OpsError::refused(
                    "no reachable manager is in a swarm",
                    format!(
                        "check the managers with `provision status {file}`; `provision run {file}` creates the swarm"
                    ),
                ),
            })
        }
    }
}

/// The full name of a service (`web` finds `demo_web`).
pub async fn resolve(cluster: &Cluster, via: &str, service: &str) -> Result<String, OpsError> {
    let names = cluster
        .ok(
            via,
            "listing services",
            commands::SERVICE_NAMES,
            "is Docker healthy on the manager?",
        )
        .await?;
    parse::resolve_service(&names, service)
        .map_err(|e| OpsError::refused(e, "`provision status` lists the services"))
}

/// A task with the inventory host of its node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Placed {
    pub task: TaskLine,
    pub host: Option<String>,
}

/// The tasks of a service (only those meant to run unless `all`).
pub async fn ps(
    cluster: &Cluster,
    service: &str,
    all: bool,
) -> Result<(String, Vec<Placed>), OpsError> {
    let v = swarm(cluster).await?;
    let name = resolve(cluster, &v.via, service).await?;
    let out = cluster
        .ok(
            &v.via,
            "listing tasks",
            commands::service_tasks(std::slice::from_ref(&name), !all),
            "is Docker healthy on the manager?",
        )
        .await?;
    let tasks = parse::tasks(&out).map_err(|e| OpsError::unexpected("docker service ps", e))?;
    let placed = tasks
        .into_iter()
        .map(|t| {
            let host = v
                .nodes
                .iter()
                .find(|n| n.hostname == t.node || n.id == t.node)
                .and_then(|n| host_of_node(&cluster.inv, n))
                .map(str::to_string);
            Placed { task: t, host }
        })
        .collect();
    Ok((name, placed))
}

/// Streams a service's logs to `sink`; returns the exit status of `docker service logs`.
pub async fn logs(
    cluster: &Cluster,
    service: &str,
    follow: bool,
    tail: Option<u32>,
    sink: OutputSink,
) -> Result<u32, OpsError> {
    let v = swarm(cluster).await?;
    let name = resolve(cluster, &v.via, service).await?;
    let out = cluster
        .run(
            &v.via,
            Command::new(commands::service_logs(&name, follow, tail)).stream_to(sink),
        )
        .await?;
    Ok(out.exit_status.unwrap_or(255))
}

/// Where `exec` will run: a running task of the service and the inventory host of its node.
pub async fn exec_target(cluster: &Cluster, service: &str) -> Result<(String, Placed), OpsError> {
    let (name, tasks) = ps(cluster, service, false).await?;
    let running: Vec<&Placed> = tasks.iter().filter(|p| p.task.running()).collect();
    let Some(first) = running.first() else {
        return Err(OpsError::refused(
            format!("service {name} has no running task"),
            format!("see why with `provision ps` and `provision logs` on {name}"),
        ));
    };
    // Prefer a task on a node we can reach by name.
    let chosen = running.iter().find(|p| p.host.is_some()).unwrap_or(first);
    if chosen.host.is_none() {
        return Err(OpsError::refused(
            format!(
                "the tasks of {name} run on {}, which is not in the inventory",
                chosen.task.node
            ),
            "add that node to the inventory to reach it",
        ));
    }
    Ok((name, (*chosen).clone()))
}

/// Runs `argv` in the container of a running task of `service`, streaming its
/// output; returns its exit status.
pub async fn exec(
    cluster: &Cluster,
    placed: &Placed,
    argv: &[String],
    sink: OutputSink,
) -> Result<u32, OpsError> {
    let host = placed
        .host
        .as_deref()
        .expect("exec_target chose a task on an inventory host");
    let out = cluster
        .run(
            host,
            Command::new(commands::exec_in_task(&placed.task.id, argv)).stream_to(sink),
        )
        .await?;
    Ok(out.exit_status.unwrap_or(255))
}
