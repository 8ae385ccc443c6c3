//! `provision backup` and `provision restore`: the swarm state
//! (`/var/lib/docker/swarm`: raft log, keys, certificates) of one manager,
//! taken with Docker stopped there, and brought back on a manager as a new
//! single-manager swarm that the other nodes re-join.
//!
//! The archive only ever exists in memory here; the binary encrypts it (age,
//! to the secrets' recipients) before it touches the disk. Encryption alone does not say
//! who made a backup (anyone with a recipient's public key can encrypt one), so a backup also
//! carries an HMAC-SHA256 made with `backup_key` from the secrets file, which only holders of
//! the cluster's identity can read; restore checks it, and the whole archive, before Docker
//! stops anywhere.

use crate::cluster::{HostState, Quorum};
use crate::services::swarm;
use crate::{Cluster, OpsError, commands};
use hmac::{KeyInit, Mac};
use provision_playbook::steps::swarm_facts::{NodeInfo, Raft};
use provision_playbook::swarm::commands as swarm_commands;
use provision_playbook::swarm::node::{NodeRole, NodeState};
use provision_transport::{Chunk, Command, Stdin};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;
use zeroize::Zeroizing;

/// First line of a backup: version 2 carries an authentication code.
pub const MAGIC: &str = "PROVISION-SWARM-BACKUP 2";
/// Backups made before authentication: restored only with `--force`.
pub const MAGIC_V1: &str = "PROVISION-SWARM-BACKUP 1";
/// The secrets-file key holding the backups' authentication key (made by the first backup).
pub const BACKUP_KEY: &str = "backup_key";
const MAC_PREFIX: &str = "hmac-sha256=";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;
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
    let addr_of = |h: &provision_engine::inventory::Host| {
        h.private_ip
            .map(|ip| swarm_commands::manager_addr(&ip.to_string()))
    };
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
                    provision_transport::addr::host_of(want)
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
                        provision_transport::addr::host_of(want)
                    ),
                )
            }),
    }
}

/// HMAC-SHA256 of the magic and metadata lines (`header`, newlines included) and the archive.
fn mac(key: &[u8], header: &[u8], archive: &[u8]) -> HmacSha256 {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(header);
    m.update(archive);
    m
}

/// The backup's plaintext: magic line, metadata line, authentication line, tar.gz of the
/// swarm directory.
pub fn pack(meta: &Meta, archive: &[u8], key: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(archive.len() + 512));
    v.extend_from_slice(MAGIC.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(serde_json::to_string(meta).expect("plain data").as_bytes());
    v.push(b'\n');
    let code = mac(key, &v, archive).finalize().into_bytes();
    v.extend_from_slice(format!("{MAC_PREFIX}{}\n", hex::encode(code)).as_bytes());
    v.extend_from_slice(archive);
    v
}

/// A backup's parts, not yet authenticated (see [`Unpacked::authenticate`]).
#[derive(Debug)]
pub struct Unpacked<'a> {
    pub meta: Meta,
    pub tar: &'a [u8],
    /// The magic and metadata lines, as covered by the code.
    header: &'a [u8],
    /// None: a version 1 backup, made before backups were authenticated.
    code: Option<Vec<u8>>,
}

/// What is known of who made a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authenticity {
    /// Made with this cluster's `backup_key`.
    Verified,
    /// A version 1 backup: it has no code, so it could have been made by anyone holding a
    /// recipient's public key.
    Unsigned,
    /// It has a code, but the secrets file has no `backup_key` to check it with.
    NoKey,
}

impl Unpacked<'_> {
    /// Checks the code with the cluster's key; a code that does not match is an error
    /// (the backup was altered or forged), whatever the options.
    pub fn authenticate(&self, key: Option<&[u8]>) -> Result<Authenticity, String> {
        match (&self.code, key) {
            (None, _) => Ok(Authenticity::Unsigned),
            (Some(_), None) => Ok(Authenticity::NoKey),
            (Some(code), Some(key)) => mac(key, self.header, self.tar)
                .verify_slice(code)
                .map(|()| Authenticity::Verified)
                .map_err(|_| {
                    format!(
                        "the backup's authentication code does not match this cluster's `{BACKUP_KEY}`: it was altered after it was made, or made by someone without this cluster's secrets (forged), or for another cluster"
                    )
                }),
        }
    }
}

pub fn unpack(plain: &[u8]) -> Result<Unpacked<'_>, String> {
    let nl = |from: usize| {
        plain[from..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| p + from)
            .ok_or("not a provision swarm backup (truncated header)")
    };
    let a = nl(0)?;
    let signed = match &plain[..a] {
        m if m == MAGIC.as_bytes() => true,
        m if m == MAGIC_V1.as_bytes() => false,
        _ => return Err("not a provision swarm backup (wrong magic line)".into()),
    };
    let b = nl(a + 1)?;
    let meta: Meta = serde_json::from_slice(&plain[a + 1..b])
        .map_err(|e| format!("bad backup metadata: {e}"))?;
    let (code, rest) = if signed {
        let c = nl(b + 1)?;
        let line = std::str::from_utf8(&plain[b + 1..c]).unwrap_or("");
        let code = line
            .strip_prefix(MAC_PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .filter(|c| c.len() == 32)
            .ok_or("bad backup: its authentication line is damaged")?;
        (Some(code), c + 1)
    } else {
        (None, b + 1)
    };
    let tar = &plain[rest..];
    if tar.len() < 2 || tar[..2] != [0x1f, 0x8b] {
        return Err("the backup's archive is not gzip data".into());
    }
    Ok(Unpacked {
        meta,
        tar,
        header: &plain[..b + 1],
        code,
    })
}

/// What a checked archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    pub files: usize,
    pub bytes: u64,
}

/// Reads the whole archive (gzip and tar integrity, every entry to its end) and checks that it
/// holds a swarm's state: the raft log and the node's certificates. Done locally before Docker
/// stops anywhere, so a damaged backup changes nothing.
pub fn verify_archive(tar_gz: &[u8]) -> Result<ArchiveSummary, String> {
    let damaged = |e: std::io::Error| format!("the backup's archive is damaged: {e}");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
    let mut paths = BTreeSet::new();
    let mut summary = ArchiveSummary { files: 0, bytes: 0 };
    for entry in archive.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let path = entry
            .path()
            .map_err(damaged)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        summary.bytes += std::io::copy(&mut entry, &mut std::io::sink()).map_err(damaged)?;
        if entry.header().entry_type().is_file() {
            summary.files += 1;
            paths.insert(path);
        }
    }
    let missing: Vec<&str> = [
        ("swarm/raft/wal-", "the raft log (swarm/raft/wal-*)"),
        ("swarm/certificates/swarm-node.crt", "the node certificate"),
        (
            "swarm/certificates/swarm-root-ca.crt",
            "the swarm's root CA",
        ),
    ]
    .into_iter()
    .filter(|(prefix, _)| !paths.iter().any(|p| p.starts_with(prefix)))
    .map(|(_, what)| what)
    .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the backup's archive is not a swarm state: it lacks {}",
            missing.join(", ")
        ));
    }
    Ok(summary)
}

/// A backup checked for restoring: whole, and made by this cluster (or `--force`d).
#[derive(Debug)]
pub struct CheckedBackup {
    pub summary: ArchiveSummary,
    /// Why it could not be authenticated, when `--force` let it through.
    pub unverified: Option<String>,
}

/// Everything a restore checks locally, before any host is touched: the authentication code
/// (a mismatch is refused even with `force`; a backup without a code, or without the key to
/// check it, only with `force`), then the whole archive ([`verify_archive`]).
pub fn check_backup(
    name: &str,
    u: &Unpacked<'_>,
    key: Option<&[u8]>,
    force: bool,
) -> Result<CheckedBackup, OpsError> {
    let unverified = match u.authenticate(key) {
        Ok(Authenticity::Verified) => None,
        Ok(Authenticity::Unsigned) => Some(format!(
            "{name} has no authentication code (made before backups were authenticated): anyone holding a recipient's public key could have made it"
        )),
        Ok(Authenticity::NoKey) => Some(format!(
            "{name} cannot be authenticated: the secrets file has no `{BACKUP_KEY}` (the key made by the first backup)"
        )),
        Err(e) => {
            return Err(OpsError::refused(
                format!("{name}: {e}"),
                "nothing was changed; restore a backup this cluster made",
            ));
        }
    };
    if let Some(why) = unverified.as_ref().filter(|_| !force) {
        return Err(OpsError::refused(
            why.clone(),
            "pass --force if you know where this backup came from",
        ));
    }
    let summary = verify_archive(u.tar).map_err(|e| {
        OpsError::refused(
            format!("{name}: {e}"),
            "nothing was changed; use another backup",
        )
    })?;
    Ok(CheckedBackup {
        summary,
        unverified,
    })
}

/// Why restoring over the live state would destroy something, or None when it would not:
/// no manager is in a swarm, or the backup's own swarm lost its quorum (what restore is for).
/// `live` holds the swarm ids the managers report.
pub fn restore_refusal(
    meta: &Meta,
    live: &BTreeSet<String>,
    quorum: Option<&Quorum>,
) -> Option<(String, String)> {
    let short = |id: &str| id.get(..12).unwrap_or(id).to_string();
    let other: Vec<String> = live
        .iter()
        .filter(|id| **id != meta.swarm_id)
        .map(|id| short(id))
        .collect();
    if !other.is_empty() {
        return Some((
            format!(
                "the managers are in swarm {}, the backup is of swarm {} (cluster {}): restoring destroys swarm {} and every service, secret and node membership in it",
                other.join(", "),
                short(&meta.swarm_id),
                meta.cluster,
                other.join(", ")
            ),
            "check that this is the right backup for this cluster; pass --force to replace that swarm with the backup's".into(),
        ));
    }
    match quorum {
        Some(q) if q.ok && !live.is_empty() => Some((
            format!(
                "swarm {} is healthy ({} of {} managers reachable{}): restoring rolls it back to the backup, and whatever changed since (services, secrets, configs, nodes) is lost",
                short(&meta.swarm_id),
                q.reachable,
                q.managers,
                q.leader
                    .as_deref()
                    .map(|l| format!(", leader {l}"))
                    .unwrap_or_default()
            ),
            "restore is for a swarm that is gone or cannot recover; for a lost quorum try `provision recover`; pass --force to roll back anyway".into(),
        )),
        _ => None,
    }
}

/// The manager to take the state from: a non-leader when one can stop without
/// losing quorum. `pauses` is true when stopping it pauses the control plane.
pub fn choose_source(
    nodes: &[NodeInfo],
    candidates: &[(String, String)],
) -> Option<(String, String, bool)> {
    let raft = Raft::of(nodes);
    let pauses = raft.reachable().saturating_sub(1) < raft.needed();
    let is_leader = |id: &str| raft.members.iter().any(|n| n.id == id && n.leader);
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

/// Takes the backup, authenticated with `mac_key` (the secrets' `backup_key`). `yes` must be
/// true when the control plane would pause.
pub async fn backup(cluster: &Cluster, yes: bool, mac_key: &[u8]) -> Result<BackupDone, OpsError> {
    let survey = cluster.survey().await;
    let v = swarm(cluster).await?;
    let candidates: Vec<(String, String)> = cluster
        .inv
        .managers()
        .filter_map(|m| {
            let node = v.node_of(&m.name, survey.state(&m.name).and_then(HostState::swarm))?;
            (node.role == NodeRole::Manager && node.reachable() && node.state == NodeState::Ready)
                .then(|| (m.name.clone(), node.id.clone()))
        })
        .collect();
    let Some((host, node_id, pauses)) = choose_source(&v.nodes, &candidates) else {
        return Err(OpsError::refused(
            "no reachable manager of the inventory to take the backup from",
            "check the managers with `provision status`",
        ));
    };
    let managers = Raft::of(&v.nodes).members.len();
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
    if let Err(e) = verify_archive(&archive) {
        return Err(OpsError::unexpected("the swarm archive", e));
    }
    Ok(BackupDone {
        plaintext: pack(&meta, &archive, mac_key),
        meta,
        archive_bytes,
        paused_control_plane: pauses,
    })
}

#[derive(Debug, Default)]
pub struct RestoreDone {
    pub steps: Vec<String>,
}

/// Restores a backup (`meta` and `tar` from [`unpack`], authenticated and checked with
/// [`verify_archive`]) onto manager `to` (chosen with [`restore_target`] before the cluster
/// lock is taken): a new swarm from that state, then the other inventory nodes re-join it
/// with fresh tokens. Refused before anything changes when the live swarm is healthy or is
/// another swarm ([`restore_refusal`]), unless `force`.
pub async fn restore(
    cluster: &Cluster,
    meta: &Meta,
    tar: &[u8],
    to: &str,
    force: bool,
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
    // From live state, before Docker stops anywhere.
    let survey = cluster.survey().await;
    let live: BTreeSet<String> = cluster
        .inv
        .managers()
        .filter_map(|m| survey.state(&m.name)?.swarm())
        .filter(|s| s.in_a_swarm())
        .filter_map(|s| s.info()?.cluster.as_ref().map(|c| c.id.clone()))
        .filter(|id| !id.is_empty())
        .collect();
    if let Some((reason, hint)) = restore_refusal(meta, &live, survey.quorum(&cluster.inv).as_ref())
    {
        if !force {
            return Err(OpsError::refused(reason, hint));
        }
        done.steps.push(format!("--force: {reason}"));
    }
    cluster
        .ok_cmd(
            to,
            "restoring the swarm state",
            Command::new(commands::restore_archive())
                .stdin(Stdin::bytes(tar.to_vec()))
                .timeout(Duration::from_secs(900)),
            &format!(
                "the previous state is kept in {}.before-restore-* on {to}",
                commands::SWARM_DIR
            ),
        )
        .await?;
    done.steps.push(format!(
        "{to}: swarm state of {} ({}) restored; the previous one is kept in {}.before-restore-<time> (never removed by provision)",
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
            swarm_commands::force_new_cluster(&ip),
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
            role: NodeRole::Manager,
            leader,
            reachability: reach.parse().ok(),
            ..Default::default()
        }
    }

    fn meta() -> Meta {
        Meta {
            cluster: "lab".into(),
            swarm_id: "abcdefabcdefabcdef".into(),
            host: "manager-2".into(),
            node_id: "n2".into(),
            managers: 3,
            taken_at_unix: 1,
            unlock_key: Some("SWMKEY-1-x".into()),
            manager_addr: Some("10.10.0.13:2377".into()),
        }
    }

    /// A tar.gz of a swarm directory holding `files`, made by tar(1) as on a manager.
    fn swarm_tar(files: &[&str]) -> Vec<u8> {
        let tmp = tempfile::tempdir().unwrap();
        for f in files {
            let p = tmp.path().join("swarm").join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("content of {f}")).unwrap();
        }
        std::fs::create_dir_all(tmp.path().join("swarm")).unwrap();
        let out = std::process::Command::new("tar")
            .args(["-C", tmp.path().to_str().unwrap(), "-czf", "-", "swarm"])
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    /// A manager's swarm directory as found on the lab (`find swarm -type f | sort` on
    /// swarm_lab's manager-1 after the first run).
    const STATE: &[&str] = &[
        "certificates/swarm-node.crt",
        "certificates/swarm-node.key",
        "certificates/swarm-root-ca.crt",
        "docker-state.json",
        "raft/wal-v3-encrypted/0.tmp",
        "raft/wal-v3-encrypted/0000000000000000-0000000000000000.wal",
        "state.json",
        "worker/tasks.db",
    ];

    #[test]
    fn pack_and_unpack() {
        let meta = meta();
        let tar = [0x1f, 0x8b, 8, 0, 1, 2, 3];
        let p = pack(&meta, &tar, b"key-1");
        let u = unpack(&p).unwrap();
        assert_eq!(u.meta, meta);
        assert_eq!(u.tar, tar);
        assert!(unpack(b"hello\n{}\n").unwrap_err().contains("magic"));
        let mut bad = pack(&meta, b"plain", b"key-1");
        assert!(unpack(&bad).unwrap_err().contains("gzip"));
        bad.truncate(10);
        assert!(unpack(&bad).is_err());
    }

    #[test]
    fn only_a_backup_made_with_the_clusters_key_is_verified() {
        let tar = swarm_tar(STATE);
        let p = pack(&meta(), &tar, b"the-cluster-key");
        let u = unpack(&p).unwrap();
        assert_eq!(
            u.authenticate(Some(b"the-cluster-key")),
            Ok(Authenticity::Verified)
        );
        assert_eq!(u.authenticate(None), Ok(Authenticity::NoKey));
        // Forged: made by someone who has the recipients' public keys but not the key.
        let forged = pack(&meta(), &tar, b"a-guessed-key");
        let e = unpack(&forged)
            .unwrap()
            .authenticate(Some(b"the-cluster-key"))
            .unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        // Altered: the metadata points the restore elsewhere.
        let text =
            String::from_utf8_lossy(&p[..p.len() - tar.len()]).replace("manager-2", "manager-1");
        let mut altered = text.into_bytes();
        altered.extend_from_slice(&tar);
        let u = unpack(&altered).unwrap();
        assert_eq!(u.meta.host, "manager-1");
        assert!(u.authenticate(Some(b"the-cluster-key")).is_err());
        // Altered archive.
        let mut altered = p.to_vec();
        let n = altered.len();
        altered[n - 5] ^= 1;
        assert!(
            unpack(&altered)
                .unwrap()
                .authenticate(Some(b"the-cluster-key"))
                .is_err()
        );
        // A version 1 backup has no code at all.
        let mut v1 =
            format!("{MAGIC_V1}\n{}\n", serde_json::to_string(&meta()).unwrap()).into_bytes();
        v1.extend_from_slice(&tar);
        assert_eq!(
            unpack(&v1).unwrap().authenticate(Some(b"the-cluster-key")),
            Ok(Authenticity::Unsigned)
        );
        // A damaged code line.
        let broken = String::from_utf8_lossy(&p[..p.len() - tar.len()])
            .replace("hmac-sha256=", "hmac-sha256=zz");
        let mut broken = broken.into_bytes();
        broken.extend_from_slice(&tar);
        assert!(unpack(&broken).unwrap_err().contains("authentication line"));
    }

    #[test]
    fn restore_checks_the_code_then_the_archive_and_force_only_covers_what_it_says() {
        let key: &[u8] = b"the-cluster-key";
        let good = pack(&meta(), &swarm_tar(STATE), key);
        let c = check_backup("b.age", &unpack(&good).unwrap(), Some(key), false).unwrap();
        assert_eq!((c.summary.files, c.unverified), (STATE.len(), None));
        // No key in the secrets file: only with --force, which says what it let through.
        let e = check_backup("b.age", &unpack(&good).unwrap(), None, false).unwrap_err();
        assert!(e.to_string().contains("cannot be authenticated"), "{e}");
        let c = check_backup("b.age", &unpack(&good).unwrap(), None, true).unwrap();
        assert!(c.unverified.unwrap().contains("no `backup_key`"));
        // Forged: never, even with --force.
        let forged = pack(&meta(), &swarm_tar(STATE), b"other");
        for force in [false, true] {
            let e = check_backup("b.age", &unpack(&forged).unwrap(), Some(key), force).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("b.age: the backup's authentication code does not match"),
                "{e}"
            );
        }
        // Authentic but not a swarm state: refused whatever the options.
        let empty = pack(&meta(), &swarm_tar(&["state.json"]), key);
        let e = check_backup("b.age", &unpack(&empty).unwrap(), Some(key), true).unwrap_err();
        assert!(e.to_string().contains("is not a swarm state"), "{e}");
    }

    #[test]
    fn the_archive_is_read_whole_and_must_hold_a_swarm_state() {
        let tar = swarm_tar(STATE);
        let s = verify_archive(&tar).unwrap();
        assert_eq!(s.files, STATE.len());
        // Truncated (a short write, a cut download).
        let e = verify_archive(&tar[..tar.len() / 2]).unwrap_err();
        assert!(e.starts_with("the backup's archive is damaged"), "{e}");
        // A tar of something else.
        let e =
            verify_archive(&swarm_tar(&["state.json", "certificates/swarm-node.crt"])).unwrap_err();
        assert_eq!(
            e,
            "the backup's archive is not a swarm state: it lacks the raft log (swarm/raft/wal-*), the swarm's root CA"
        );
    }

    #[test]
    fn restore_refuses_a_healthy_or_another_swarm() {
        let m = meta();
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let q = |reachable, ok| Quorum {
            managers: 3,
            reachable,
            needed: 2,
            ok,
            leader: ok.then(|| "manager-1".to_string()),
        };
        // Nothing left of any swarm: the case restore is for.
        assert_eq!(restore_refusal(&m, &ids(&[]), None), None);
        // The backup's own swarm without a quorum: restore may replace it.
        assert_eq!(
            restore_refusal(&m, &ids(&["abcdefabcdefabcdef"]), Some(&q(1, false))),
            None
        );
        let (reason, hint) =
            restore_refusal(&m, &ids(&["abcdefabcdefabcdef"]), Some(&q(3, true))).unwrap();
        assert_eq!(
            reason,
            "swarm abcdefabcdef is healthy (3 of 3 managers reachable, leader manager-1): restoring rolls it back to the backup, and whatever changed since (services, secrets, configs, nodes) is lost"
        );
        assert!(hint.contains("--force"), "{hint}");
        let (reason, _) =
            restore_refusal(&m, &ids(&["0123456789abcdef"]), Some(&q(1, false))).unwrap();
        assert_eq!(
            reason,
            "the managers are in swarm 0123456789ab, the backup is of swarm abcdefabcdef (cluster lab): restoring destroys swarm 0123456789ab and every service, secret and node membership in it"
        );
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
    fn an_ipv6_backup_restores_onto_the_manager_with_its_bracketed_address() {
        let inv = provision_engine::inventory::Inventory::parse(
            &(1..=2)
                .map(|i| format!("[[hosts]]\nname = \"m{i}\"\naddress = \"fd00::{i}\"\nprivate_ip = \"fd00:10::{i}\"\nroles = [\"manager\"]\n"))
                .fold("name = \"t\"\n".to_string(), |a, h| a + &h),
            std::path::Path::new("c.toml"),
            &Default::default(),
        )
        .unwrap();
        // As Docker writes a v6 raft address (ManagerStatus.Addr).
        let meta = Meta {
            cluster: "t".into(),
            swarm_id: "abc".into(),
            host: "old".into(),
            node_id: "n2".into(),
            managers: 2,
            taken_at_unix: 1,
            unlock_key: None,
            manager_addr: Some("[fd00:10::2]:2377".into()),
        };
        assert_eq!(restore_target(&inv, &meta, None).unwrap(), "m2");
        let e = restore_target(&inv, &meta, Some("m1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("m1 has [fd00:10::1]:2377"), "{e}");
        assert!(
            e.contains("restore onto the manager with private_ip fd00:10::2 "),
            "{e}"
        );
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
