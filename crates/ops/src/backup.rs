//! `provision backup` and `provision restore`: the swarm state
//! (`/var/lib/docker/swarm`: raft log, keys, certificates) of one manager,
//! taken with Docker stopped there, and brought back on a manager as a new
//! single-manager swarm that the other nodes re-join.
//!
//! The archive only ever exists in memory here; the binary encrypts it (age,
//! to the secrets' recipients) before it touches the disk.

use crate::cluster::HostState;
use crate::services::swarm;
use crate::{Cluster, OpsError, commands};
use provision_playbook::steps::swarm_facts::NodeInfo;
use provision_transport::{Chunk, Command, Stdin};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use zeroize::Zeroizing;

pub const MAGIC: &str = "PROVISION-SWARM-BACKUP 1";
const READY_WAIT: Duration = Duration::from_secs(240);

/// What a backup says about itself (inside the encryption).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    pub cluster: String,
    pub swarm_id: String,
    /// The inventory host and node the state was taken from.
    pub host: String,
    pub node_id: String,
    pub managers: usize,
    pub taken_at_unix: u64,
    /// The swarm's unlock key when autolock is on: restoring needs it.
    pub unlock_key: Option<String>,
    /// The source manager's raft address (`10.0.0.12:2377`): the restored
    /// swarm keeps it, so the restore target must have it too.
    #[serde(default)]
    pub manager_addr: Option<String>,
}

/// The manager to restore onto. Docker can only restore a swarm onto a manager
/// with the address the state was taken at: the raft keeps its own member
/// address (`--advertise-addr` does not change it, docker/for-linux#523), so
/// managers that join later dial the old address and the new swarm loses its
/// leader. Without `to`, the inventory manager with that address.
pub fn restore_target(
    inv: &provision_engine::inventory::Inventory,
    meta: &Meta,
    to: Option<&str>,
) -> Result<String, OpsError> {
    let addr_of =
        |h: &provision_engine::inventory::Host| h.private_ip.map(|ip| format!("{ip}:2377"));
    let Some(want) = meta.manager_addr.as_deref() else {
        // A backup without the address: only its own host is known to be safe.
        return match to {
            Some(t) => Ok(t.to_string()),
            None => Ok(meta.host.clone()),
        };
    };
    match to {
        Some(t) => {
            let h = inv.host(t).ok_or_else(|| {
                OpsError::refused(
                    format!("{t} is not in {}", inv.path.display()),
                    "name a manager of the inventory",
                )
            })?;
            if addr_of(h).as_deref() == Some(want) {
                return Ok(t.to_string());
            }
            Err(OpsError::refused(
                format!(
                    "the backup was taken on {} at {want}; {t} has {}. Docker restores a swarm only onto a manager with the same address: the restored raft keeps {want}, and managers that join cannot reach the leader (docker/for-linux#523)",
                    meta.host,
                    addr_of(h).unwrap_or_else(|| "no private_ip".into())
                ),
                format!(
                    "restore onto the manager with private_ip {} (leave out --to), or give the replacement server that address",
                    want.trim_end_matches(":2377")
                ),
            ))
        }
        None => inv
            .managers()
            .find(|h| addr_of(h).as_deref() == Some(want))
            .map(|h| h.name.clone())
            .ok_or_else(|| {
                OpsError::refused(
                    format!(
                        "no manager in {} has the address the backup was taken at ({want}, host {})",
                        inv.path.display(),
                        meta.host
                    ),
                    format!(
                        "Docker restores a swarm only onto a manager with that address: give a manager private_ip = \"{}\"",
                        want.trim_end_matches(":2377")
                    ),
                )
            }),
    }
}

/// The backup's plaintext: magic line, metadata line, tar.gz of the swarm directory.
pub fn pack(meta: &Meta, archive: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(archive.len() + 512));
    v.extend_from_slice(MAGIC.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(serde_json::to_string(meta).expect("plain data").as_bytes());
    v.push(b'\n');
    v.extend_from_slice(archive);
    v
}

pub fn unpack(plain: &[u8]) -> Result<(Meta, &[u8]), String> {
    let nl = |from: usize| {
        plain[from..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| p + from)
            .ok_or("not a provision swarm backup (truncated header)")
    };
    let a = nl(0)?;
    if &plain[..a] != MAGIC.as_bytes() {
        return Err("not a provision swarm backup (wrong magic line)".into());
    }
    let b = nl(a + 1)?;
    let meta: Meta = serde_json::from_slice(&plain[a + 1..b])
        .map_err(|e| format!("bad backup metadata: {e}"))?;
    let tar = &plain[b + 1..];
    if tar.len() < 2 || tar[..2] != [0x1f, 0x8b] {
        return Err("the backup's archive is not gzip data".into());
    }
    Ok((meta, tar))
}

/// The manager to take the state from: a non-leader when one can stop without
/// losing quorum. `pauses` is true when stopping it pauses the control plane.
pub fn choose_source(
    nodes: &[NodeInfo],
    candidates: &[(String, String)],
) -> Option<(String, String, bool)> {
    let managers: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| crate::cluster::raft_member(n))
        .collect();
    let reachable = managers
        .iter()
        .filter(|n| n.reachability == "reachable")
        .count();
    let needed = managers.len() / 2 + 1;
    let pauses = reachable.saturating_sub(1) < needed;
    let is_leader = |id: &str| managers.iter().any(|n| n.id == id && n.leader);
    candidates
        .iter()
        .find(|(_, id)| !is_leader(id))
        .or_else(|| candidates.first())
        .map(|(h, id)| (h.clone(), id.clone(), pauses))
}

#[derive(Debug)]
pub struct BackupDone {
    pub meta: Meta,
    pub plaintext: Zeroizing<Vec<u8>>,
    pub archive_bytes: usize,
    pub paused_control_plane: bool,
}

/// Takes the backup. `yes` must be true when the control plane would pause.
pub async fn backup(cluster: &Cluster, yes: bool) -> Result<BackupDone, OpsError> {
    let survey = cluster.survey().await;
    let v = swarm(cluster).await?;
    let candidates: Vec<(String, String)> = cluster
        .inv
        .managers()
        .filter_map(|m| {
            let node = v.node_of(&m.name, survey.state(&m.name).and_then(HostState::swarm))?;
            (node.role == "manager" && node.reachability == "reachable" && node.state == "ready")
                .then(|| (m.name.clone(), node.id.clone()))
        })
        .collect();
    let Some((host, node_id, pauses)) = choose_source(&v.nodes, &candidates) else {
        return Err(OpsError::refused(
            "no reachable manager of the inventory to take the backup from",
            "check the managers with `provision status`",
        ));
    };
    let managers = v
        .nodes
        .iter()
        .filter(|n| crate::cluster::raft_member(n))
        .count();
    if pauses && !yes {
        return Err(OpsError::refused(
            format!(
                "with {managers} manager(s), stopping Docker on {host} for the backup pauses the swarm's control plane (no deploys, no rescheduling) for about a minute; running containers keep running"
            ),
            "pass --yes to accept, or add managers (3 lets a backup run without a pause)",
        ));
    }
    let key = cluster
        .ok(&v.via, "reading the unlock key", commands::UNLOCK_KEY, "")
        .await?
        .trim()
        .to_string();
    cluster.learn_secret(&key);
    let unlock_key = (!key.is_empty()).then_some(key);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let collect = tokio::spawn(async move {
        let mut data = Zeroizing::new(Vec::new());
        let mut err = Vec::new();
        while let Some(c) = rx.recv().await {
            match c {
                Chunk::Stdout(b) => data.extend_from_slice(&b),
                Chunk::Stderr(b) => err.extend_from_slice(&b),
            }
        }
        (data, err)
    });
    let out = cluster
        .run(
            &host,
            Command::new(commands::backup_archive())
                .timeout(Duration::from_secs(900))
                .stream_to(tx),
        )
        .await;
    let (archive, stderr) = collect.await.expect("collector never panics");
    let out = out?;
    if !out.success() {
        return Err(OpsError::Command {
            host: host.clone(),
            what: "archiving the swarm state".into(),
            command: commands::backup_archive(),
            status: out.describe_exit(),
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            hint: format!("Docker was started again on {host}; check it with `provision status`"),
        });
    }
    // Docker is back: wait until the node is a working manager again.
    cluster
        .wait_manager_ready(&host, unlock_key.as_deref(), READY_WAIT)
        .await?;
    if v.via != host {
        cluster
            .wait_for(
                &v.via,
                &format!("{host} to be a reachable manager"),
                &commands::node_state(&node_id),
                READY_WAIT,
                "look at `docker node ls`",
                |o| o.split_whitespace().collect::<Vec<_>>() == ["ready", "reachable"],
            )
            .await?;
    }
    let manager_addr = v
        .nodes
        .iter()
        .find(|n| n.id == node_id)
        .map(|n| n.manager_addr.clone())
        .filter(|a| !a.is_empty());
    let meta = Meta {
        cluster: cluster.inv.name.clone(),
        swarm_id: v.cluster_id.clone(),
        host,
        node_id,
        managers,
        taken_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        unlock_key,
        manager_addr,
    };
    let archive_bytes = archive.len();
    if unpack(&pack(&meta, &archive)).is_err() {
        return Err(OpsError::unexpected(
            "the swarm archive",
            "tar did not produce gzip data",
        ));
    }
    Ok(BackupDone {
        plaintext: pack(&meta, &archive),
        meta,
        archive_bytes,
        paused_control_plane: pauses,
    })
}

#[derive(Debug, Default)]
pub struct RestoreDone {
    pub steps: Vec<String>,
}

/// Restores a backup (`meta` and `tar` from [`unpack`]) onto manager `to`
/// (chosen with [`restore_target`] before the cluster lock is taken): a new
/// swarm from that state, then the other inventory nodes re-join it with fresh
/// tokens.
pub async fn restore(
    cluster: &Cluster,
    meta: &Meta,
    tar: &[u8],
    to: &str,
) -> Result<RestoreDone, OpsError> {
    if !cluster.is_manager(to) {
        return Err(OpsError::refused(
            format!("{to} is not a manager in the inventory"),
            "restore onto a manager",
        ));
    }
    let ip = cluster.private_ip(to)?;
    if let Some(k) = &meta.unlock_key {
        cluster.learn_secret(k);
    }
    let mut done = RestoreDone::default();
    cluster
        .ok_cmd(
            to,
            "restoring the swarm state",
            Command::new(commands::restore_archive())
                .stdin(Stdin::bytes(tar.to_vec()))
                .timeout(Duration::from_secs(900)),
            &format!(
                "the previous state is kept in {}.before-restore on {to}",
                commands::SWARM_DIR
            ),
        )
        .await?;
    done.steps.push(format!(
        "{to}: swarm state of {} ({}) restored; the previous one is in {}.before-restore",
        meta.host,
        meta.swarm_id.get(..12).unwrap_or(&meta.swarm_id),
        commands::SWARM_DIR
    ));
    // Docker may come back locked (autolock): unlock with the backup's key.
    let start = std::time::Instant::now();
    loop {
        let st = cluster.run(to, Command::new(commands::LOCAL_STATE)).await?;
        match crate::parse::local_state(&st.stdout_str()) {
            Some((s, _)) if s == "locked" => {
                let Some(key) = &meta.unlock_key else {
                    return Err(OpsError::refused(
                        format!("{to} is locked and the backup has no unlock key"),
                        format!("unlock it by hand: ssh {to} docker swarm unlock"),
                    ));
                };
                cluster
                    .unlock(to, key, "the backup's unlock key was refused")
                    .await?;
                done.steps.push(format!("{to}: unlocked"));
            }
            Some(_) => break,
            None if start.elapsed() > READY_WAIT => {
                return Err(OpsError::Timeout {
                    what: format!("Docker on {to}"),
                    secs: READY_WAIT.as_secs(),
                    hint: format!("look at `journalctl -u docker` on {to}"),
                });
            }
            None => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
    cluster
        .ok(
            to,
            "starting a new swarm from the restored state",
            commands::force_new_cluster(&ip),
            "look at `journalctl -u docker`",
        )
        .await?;
    done.steps.push(format!(
        "{to}: docker swarm init --force-new-cluster --advertise-addr {ip}"
    ));
    crate::recover::wait_leader(cluster, to).await?;
    crate::recover::rejoin_others(cluster, to, &mut done.steps).await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, leader: bool, reach: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            role: "manager".into(),
            leader,
            reachability: reach.into(),
            ..Default::default()
        }
    }

    #[test]
    fn pack_and_unpack() {
        let meta = Meta {
            cluster: "lab".into(),
            swarm_id: "abc".into(),
            host: "manager-2".into(),
            node_id: "n2".into(),
            managers: 3,
            taken_at_unix: 1,
            unlock_key: Some("SWMKEY-1-x".into()),
            manager_addr: Some("10.10.0.13:2377".into()),
        };
        let tar = [0x1f, 0x8b, 8, 0, 1, 2, 3];
        let p = pack(&meta, &tar);
        let (m, t) = unpack(&p).unwrap();
        assert_eq!(m, meta);
        assert_eq!(t, tar);
        assert!(unpack(b"hello\n{}\n").unwrap_err().contains("magic"));
        let mut bad = pack(&meta, b"plain");
        assert!(unpack(&bad).unwrap_err().contains("gzip"));
        bad.truncate(10);
        assert!(unpack(&bad).is_err());
    }

    #[test]
    fn restores_only_onto_the_address_the_backup_was_taken_at() {
        let inv = provision_engine::inventory::Inventory::parse(
            &(1..=3)
                .map(|i| format!("[[hosts]]\nname = \"m{i}\"\naddress = \"127.0.0.1\"\nport = {}\nprivate_ip = \"10.10.0.{}\"\nroles = [\"manager\"]\n", 2200 + i, 11 + i))
                .fold("name = \"t\"\n".to_string(), |a, h| a + &h),
            std::path::Path::new("c.toml"),
            &Default::default(),
        )
        .unwrap();
        let mut meta = Meta {
            cluster: "t".into(),
            swarm_id: "abc".into(),
            host: "m2".into(),
            node_id: "n2".into(),
            managers: 2,
            taken_at_unix: 1,
            unlock_key: None,
            manager_addr: Some("10.10.0.13:2377".into()),
        };
        assert_eq!(restore_target(&inv, &meta, None).unwrap(), "m2");
        assert_eq!(restore_target(&inv, &meta, Some("m2")).unwrap(), "m2");
        let e = restore_target(&inv, &meta, Some("m1"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the backup was taken on m2 at 10.10.0.13:2377; m1 has 10.10.0.12:2377. Docker restores a swarm only onto a manager with the same address: the restored raft keeps 10.10.0.13:2377, and managers that join cannot reach the leader (docker/for-linux#523)\n  hint: restore onto the manager with private_ip 10.10.0.13 (leave out --to), or give the replacement server that address"
        );
        assert!(restore_target(&inv, &meta, Some("nope")).is_err());
        // The server was replaced by one at the same address under a new name.
        meta.host = "old-m2".into();
        assert_eq!(restore_target(&inv, &meta, None).unwrap(), "m2");
        meta.manager_addr = Some("10.10.0.99:2377".into());
        let e = restore_target(&inv, &meta, None).unwrap_err().to_string();
        assert!(e.contains("private_ip = \"10.10.0.99\""), "{e}");
    }

    #[test]
    fn chooses_a_follower_and_says_when_the_control_plane_pauses() {
        let three = [
            node("1", true, "reachable"),
            node("2", false, "reachable"),
            node("3", false, "reachable"),
        ];
        let cands = vec![
            ("m1".to_string(), "1".to_string()),
            ("m2".into(), "2".into()),
            ("m3".into(), "3".into()),
        ];
        assert_eq!(
            choose_source(&three, &cands),
            Some(("m2".into(), "2".into(), false))
        );
        let one = [node("1", true, "reachable")];
        assert_eq!(
            choose_source(&one, &cands[..1]),
            Some(("m1".into(), "1".into(), true))
        );
        // 3 managers, one down: stopping another would lose quorum.
        let degraded = [
            node("1", true, "reachable"),
            node("2", false, "unreachable"),
            node("3", false, "reachable"),
        ];
        assert_eq!(
            choose_source(&degraded, &[cands[0].clone(), cands[2].clone()]),
            Some(("m3".into(), "3".into(), true))
        );
        assert_eq!(choose_source(&three, &[]), None);
    }
}
