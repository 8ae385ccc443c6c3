//! The cluster lock: a file on every reachable manager (so it survives a change
//! of leader) naming the owner, taken before any mutating command, refreshed
//! while it runs, stale after a timeout. Two operators cannot change the
//! cluster at once; the second fails fast and is told who holds it.
//!
//! On each manager the decision is made under `flock`, so two processes that
//! race for the same manager cannot both win. The lock counts only when a majority of the
//! inventory's managers granted it (two operators on either side of a partition cannot both
//! hold one), except for `recover` and `restore`, whose job is a swarm that lost its managers.

use crate::{Cluster, OpsError};
use provision_transport::Command;
use provision_transport::shell::quote;
use std::sync::Arc;
use std::time::Duration;

pub const LOCK_DIR: &str = "/var/lib/provision";
/// A lock not refreshed for this long belongs to a process that died.
pub const STALE_SECS: u64 = 120;
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// How many managers must grant (and keep confirming) the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockQuorum {
    /// A majority of the inventory's managers.
    Majority,
    /// Whichever managers answer: `recover` and `restore`, which exist for the case where
    /// most managers are gone.
    Reachable,
}

/// A majority of `managers`.
pub fn majority(managers: usize) -> usize {
    managers / 2 + 1
}

/// Whether the managers that granted the lock are enough under `policy`.
pub fn check_grants(
    policy: LockQuorum,
    managers: usize,
    granted: &[String],
    unreachable: &[String],
) -> Result<(), OpsError> {
    let needed = majority(managers);
    if policy == LockQuorum::Majority && managers > 0 && granted.len() < needed {
        return Err(OpsError::NoLockMajority {
            granted: granted.to_vec(),
            unreachable: unreachable.to_vec(),
            needed,
            managers,
        });
    }
    Ok(())
}

/// Who takes the lock, written into the lock file.
#[derive(Debug, Clone)]
pub struct Owner {
    pub token: String,
    /// `user@machine pid N: provision run`
    pub description: String,
}

impl Owner {
    pub fn new(command: &str) -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| {
                // cron, systemd units and CI runners often set neither.
                let status = std::fs::read_to_string("/proc/self/status").ok()?;
                let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
                Some(user_of_uid(real_uid(&status)?, &passwd))
            })
            .unwrap_or_else(|| "unknown".into());
        let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Owner {
            token: format!("{pid:x}{nanos:x}"),
            description: format!("{user}@{machine} pid {pid}: {command}"),
        }
    }
}

/// The real uid from `/proc/self/status` (`Uid:\treal\teffective\t...`).
fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The login name of `uid` in an `/etc/passwd` text, else `uid N`.
fn user_of_uid(uid: u32, passwd: &str) -> String {
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Takes the lock on this manager, or says who holds it. Prints
/// `acquired`, `taken-over AGE` (a stale lock) or `held AGE` then the record.
pub fn acquire_script(dir: &str, owner: &Owner, stale_secs: u64) -> String {
    let record = format!("token={}\nowner={}\n", owner.token, owner.description);
    format!(
        "d={d}; f=\"$d/cluster.lock\"; mkdir -p \"$d\" && exec 9>\"$d/cluster.lock.guard\" && flock -w 10 9 || {{ echo 'cannot take the lock guard' >&2; exit 3; }}; \
         if [ -f \"$f\" ] && ! grep -qxF {tok} \"$f\"; then \
         age=$(( $(date +%s) - $(stat -c %Y \"$f\") )); \
         if [ \"$age\" -le {stale_secs} ]; then echo \"held $age\"; cat \"$f\"; exit 0; fi; \
         echo \"taken-over $age\"; cat \"$f\"; fi; \
         printf '%s' {rec} > \"$f.tmp\" && mv -f \"$f.tmp\" \"$f\" && echo acquired",
        d = quote(dir),
        tok = quote(&format!("token={}", owner.token)),
        rec = quote(&record),
    )
}

/// Keeps the lock fresh; exits 1 when it is no longer ours (forced away).
pub fn refresh_script(dir: &str, token: &str) -> String {
    format!(
        "f={}/cluster.lock; grep -qxF {} \"$f\" 2>/dev/null && touch \"$f\"",
        quote(dir),
        quote(&format!("token={token}"))
    )
}

/// Releases the lock if it is still ours. The removal is synced to disk: a server
/// that loses power seconds later would otherwise come back holding the lock.
pub fn release_script(dir: &str, token: &str) -> String {
    format!(
        "d={}; f=\"$d/cluster.lock\"; exec 9>\"$d/cluster.lock.guard\" && flock -w 10 9; \
         if grep -qxF {} \"$f\" 2>/dev/null; then rm -f \"$f\"; sync -f \"$d\" 2>/dev/null || :; fi",
        quote(dir),
        quote(&format!("token={token}"))
    )
}

/// Removes whoever's lock, printing what it removed.
pub fn force_unlock_script(dir: &str) -> String {
    format!(
        "f={}/cluster.lock; if [ -f \"$f\" ]; then cat \"$f\"; rm -f \"$f\"; fi",
        quote(dir)
    )
}

/// What [`acquire_script`] printed.
#[derive(Debug, PartialEq, Eq)]
pub enum Acquired {
    Yes,
    /// A stale lock was replaced: (its owner, seconds since its last refresh).
    TookOver(String, u64),
    Held(String, u64),
}

pub fn parse_acquire(stdout: &str) -> Result<Acquired, String> {
    let mut lines = stdout.lines();
    let first = lines.next().unwrap_or("").trim();
    let owner = |lines: std::str::Lines<'_>| {
        lines
            .filter_map(|l| l.strip_prefix("owner="))
            .next()
            .unwrap_or("an unknown owner")
            .to_string()
    };
    let age = |s: &str| s.parse::<u64>().map_err(|_| format!("bad lock age `{s}`"));
    if first == "acquired" {
        return Ok(Acquired::Yes);
    }
    if let Some(a) = first.strip_prefix("held ") {
        return Ok(Acquired::Held(owner(lines), age(a)?));
    }
    if let Some(a) = first.strip_prefix("taken-over ") {
        let who = owner(lines.clone());
        if lines.any(|l| l.trim() == "acquired") {
            return Ok(Acquired::TookOver(who, age(a)?));
        }
    }
    Err(format!("unexpected lock output `{}`", stdout.trim()))
}

/// A held lock: refreshed in the background until released.
pub struct LockGuard {
    cluster: Arc<Cluster>,
    hosts: Vec<String>,
    owner: Owner,
    refresher: tokio::task::JoinHandle<()>,
    dir: String,
    /// What the last refresh round saw.
    health: tokio::sync::watch::Receiver<LockHealth>,
}

/// What a refresh round of the lock saw, for the holder to show and act on (a library does
/// not print: the binary's terminal output is redacted in one place).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockHealth {
    /// Warnings of the last round (a manager whose lock someone forced away, the majority lost).
    pub notes: Vec<String>,
    /// The lock lost the managers its policy needs (a partition, managers going down): the
    /// holder must start nothing new. Once true, stays true.
    pub lost: bool,
}

/// What the lock did, for the caller to tell the user.
#[derive(Debug, Default)]
pub struct LockReport {
    pub hosts: Vec<String>,
    pub took_over: Vec<(String, String, u64)>,
    pub forced: Vec<(String, String)>,
    pub skipped: Vec<(String, String)>,
}

/// The hosts holding the lock: the managers (an inventory without managers is
/// not a swarm and takes no lock).
fn lock_hosts(cluster: &Cluster) -> Vec<String> {
    cluster.inv.managers().map(|h| h.name.clone()).collect()
}

/// Takes the cluster lock on every reachable manager, in inventory order.
/// Unreachable managers are skipped (a down manager cannot be changed anyway).
pub async fn acquire(
    cluster: Arc<Cluster>,
    command: &str,
    force_unlock: bool,
    policy: LockQuorum,
) -> Result<(LockGuard, LockReport), OpsError> {
    acquire_in(cluster, command, force_unlock, policy, LOCK_DIR, STALE_SECS).await
}

pub async fn acquire_in(
    cluster: Arc<Cluster>,
    command: &str,
    force_unlock: bool,
    policy: LockQuorum,
    dir: &str,
    stale_secs: u64,
) -> Result<(LockGuard, LockReport), OpsError> {
    let owner = Owner::new(command);
    let mut report = LockReport::default();
    let mut held: Vec<String> = Vec::new();
    for host in lock_hosts(&cluster) {
        let t = match cluster.transport(&host).await {
            Ok(t) => t,
            Err(e) => {
                report.skipped.push((host.clone(), e.to_string()));
                continue;
            }
        };
        if force_unlock {
            let out = t
                .run(Command::new(force_unlock_script(dir)).timeout(Duration::from_secs(30)))
                .await
                .map_err(|e| OpsError::transport(&host, e))?;
            let text = out.stdout_str();
            if let Some(o) = text.lines().find_map(|l| l.strip_prefix("owner=")) {
                report.forced.push((host.clone(), o.to_string()));
            }
        }
        let script = acquire_script(dir, &owner, stale_secs);
        let res = cluster
            .ok_cmd(
                &host,
                "taking the cluster lock",
                Command::new(script).timeout(Duration::from_secs(30)),
                "the lock needs root, `flock` and a writable /var/lib on the managers",
            )
            .await
            .and_then(|out| {
                parse_acquire(&out).map_err(|e| OpsError::unexpected("the cluster lock", e))
            });
        match res {
            Ok(Acquired::Yes) => held.push(host.clone()),
            Ok(Acquired::TookOver(o, age)) => {
                report.took_over.push((host.clone(), o, age));
                held.push(host.clone());
            }
            Ok(Acquired::Held(o, age)) => {
                release_all(&cluster, &held, dir, &owner.token).await;
                return Err(OpsError::Locked {
                    host,
                    owner: o,
                    age_secs: age,
                    stale_secs,
                });
            }
            Err(e) => {
                release_all(&cluster, &held, dir, &owner.token).await;
                return Err(e);
            }
        }
    }
    let managers = lock_hosts(&cluster).len();
    let unreachable: Vec<String> = report.skipped.iter().map(|(h, _)| h.clone()).collect();
    if let Err(e) = check_grants(policy, managers, &held, &unreachable) {
        release_all(&cluster, &held, dir, &owner.token).await;
        return Err(e);
    }
    report.hosts = held.clone();
    let (health_tx, health) = tokio::sync::watch::channel(LockHealth::default());
    let refresher = {
        let (cluster, hosts, dir, token) = (
            cluster.clone(),
            held.clone(),
            dir.to_string(),
            owner.token.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let mut confirmed = Vec::new();
                let mut notes = Vec::new();
                for h in &hosts {
                    let cmd =
                        Command::new(refresh_script(&dir, &token)).timeout(Duration::from_secs(20));
                    match cluster.run_always(h, cmd).await {
                        Ok(out) if out.success() => confirmed.push(h.clone()),
                        Ok(_) => notes.push(format!(
                            "the cluster lock on {h} is no longer ours (someone forced it away)"
                        )),
                        Err(_) => {}
                    }
                }
                let lost = check_grants(policy, managers, &confirmed, &[]).err();
                if let Some(e) = &lost {
                    notes.push(e.to_string().lines().next().unwrap_or("").to_string());
                }
                health_tx.send_if_modified(|h| {
                    let now = LockHealth {
                        notes,
                        lost: h.lost || lost.is_some(),
                    };
                    let changed = *h != now;
                    *h = now;
                    changed
                });
            }
        })
    };
    Ok((
        LockGuard {
            cluster,
            hosts: held,
            owner,
            refresher,
            dir: dir.to_string(),
            health,
        },
        report,
    ))
}

async fn release_all(cluster: &Cluster, hosts: &[String], dir: &str, token: &str) {
    for h in hosts {
        let cmd = Command::new(release_script(dir, token)).timeout(Duration::from_secs(20));
        let _ = cluster.run_always(h, cmd).await;
    }
}

impl LockGuard {
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// What the refresh rounds see, as they see it.
    pub fn health(&self) -> tokio::sync::watch::Receiver<LockHealth> {
        self.health.clone()
    }

    pub async fn release(self) {
        self.refresher.abort();
        release_all(&self.cluster, &self.hosts, &self.dir, &self.owner.token).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(token: &str) -> Owner {
        Owner {
            token: token.into(),
            description: format!("ops@laptop pid 1: provision run ({token})"),
        }
    }

    #[test]
    fn owner_without_user_is_named_from_the_uid() {
        let status = "Name:\tprovision\nUmask:\t0022\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(real_uid(status), Some(1000));
        assert_eq!(real_uid("Name:\tx\n"), None);
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\nbroken\nops:x:1000:1000:Ops,,,:/home/ops:/bin/bash\n";
        assert_eq!(user_of_uid(0, passwd), "root");
        assert_eq!(user_of_uid(1000, passwd), "ops");
        assert_eq!(user_of_uid(1234, passwd), "uid 1234");
    }

    #[test]
    fn the_lock_needs_a_majority_of_the_managers_unless_told_otherwise() {
        let s = |v: &[&str]| v.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        assert!(check_grants(LockQuorum::Majority, 3, &s(&["m1", "m2"]), &s(&["m3"])).is_ok());
        let e = check_grants(LockQuorum::Majority, 3, &s(&["m1"]), &s(&["m2", "m3"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the cluster lock needs a majority of the managers (2 of 3), and only m1 granted it (no answer from m2, m3)\n  hint: bring the managers back or check the network to them; when the swarm lost its quorum, `provision recover` and `provision restore` work with the managers that answer"
        );
        let e = check_grants(LockQuorum::Majority, 2, &s(&["m1"]), &s(&["m2"])).unwrap_err();
        assert!(e.to_string().contains("(2 of 2)"), "{e}");
        let e = check_grants(LockQuorum::Majority, 1, &[], &s(&["m1"])).unwrap_err();
        assert!(e.to_string().contains("and none granted it"), "{e}");
        assert!(check_grants(LockQuorum::Reachable, 3, &s(&["m1"]), &s(&["m2", "m3"])).is_ok());
        // No managers: not a swarm, nothing to lock.
        assert!(check_grants(LockQuorum::Majority, 0, &[], &[]).is_ok());
        assert_eq!(
            (majority(1), majority(3), majority(4), majority(5)),
            (1, 2, 3, 3)
        );
    }

    #[test]
    fn scripts_are_exact() {
        assert_eq!(
            refresh_script("/var/lib/provision", "abc"),
            "f=/var/lib/provision/cluster.lock; grep -qxF token=abc \"$f\" 2>/dev/null && touch \"$f\""
        );
        assert_eq!(
            release_script("/var/lib/provision", "abc"),
            "d=/var/lib/provision; f=\"$d/cluster.lock\"; exec 9>\"$d/cluster.lock.guard\" && flock -w 10 9; \
             if grep -qxF token=abc \"$f\" 2>/dev/null; then rm -f \"$f\"; sync -f \"$d\" 2>/dev/null || :; fi"
        );
        assert_eq!(
            force_unlock_script("/var/lib/provision"),
            "f=/var/lib/provision/cluster.lock; if [ -f \"$f\" ]; then cat \"$f\"; rm -f \"$f\"; fi"
        );
        assert!(acquire_script("/x", &owner("t"), 120).contains(
            "printf '%s' 'token=t\nowner=ops@laptop pid 1: provision run (t)\n' > \"$f.tmp\""
        ));
    }

    fn sh(script: &str) -> String {
        let out = std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The scripts run for real by the local sh: acquire, re-acquire, contend,
    /// refresh, stale take-over, release, force.
    #[test]
    fn lock_scripts_work_locally() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lockdir");
        let dir = dir.to_str().unwrap();
        let (a, b) = (owner("aaa"), owner("bbb"));
        assert_eq!(
            parse_acquire(&sh(&acquire_script(dir, &a, 120))),
            Ok(Acquired::Yes)
        );
        // Re-entrant for the same owner.
        assert_eq!(
            parse_acquire(&sh(&acquire_script(dir, &a, 120))),
            Ok(Acquired::Yes)
        );
        match parse_acquire(&sh(&acquire_script(dir, &b, 120))).unwrap() {
            Acquired::Held(o, age) => {
                assert_eq!(o, "ops@laptop pid 1: provision run (aaa)");
                assert!(age <= 2);
            }
            other => panic!("{other:?}"),
        }
        // Refresh works only for the holder.
        sh(&refresh_script(dir, "aaa"));
        let out = std::process::Command::new("sh")
            .args(["-c", &refresh_script(dir, "bbb")])
            .output()
            .unwrap();
        assert!(!out.status.success());
        // Stale: age the file, then b takes over.
        sh(&format!("touch -d '10 minutes ago' {dir}/cluster.lock"));
        match parse_acquire(&sh(&acquire_script(dir, &b, 120))).unwrap() {
            Acquired::TookOver(o, age) => {
                assert!(o.contains("(aaa)"));
                assert!(age >= 590, "{age}");
            }
            other => panic!("{other:?}"),
        }
        // a's release does not remove b's lock; b's does.
        sh(&release_script(dir, "aaa"));
        assert!(std::path::Path::new(&format!("{dir}/cluster.lock")).exists());
        sh(&release_script(dir, "bbb"));
        assert!(!std::path::Path::new(&format!("{dir}/cluster.lock")).exists());
        // Force removes anyone's lock and says whose it was.
        sh(&acquire_script(dir, &a, 120));
        assert!(
            sh(&force_unlock_script(dir)).contains("owner=ops@laptop pid 1: provision run (aaa)")
        );
        assert_eq!(
            parse_acquire(&sh(&acquire_script(dir, &b, 120))),
            Ok(Acquired::Yes)
        );
    }

    #[test]
    fn racing_acquirers_one_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap().to_string();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let script = acquire_script(&dir, &owner(&format!("o{i}")), 120);
                std::thread::spawn(move || sh(&script))
            })
            .collect();
        let results: Vec<Acquired> = handles
            .into_iter()
            .map(|h| parse_acquire(&h.join().unwrap()).unwrap())
            .collect();
        assert_eq!(
            results.iter().filter(|r| **r == Acquired::Yes).count(),
            1,
            "{results:?}"
        );
    }
}
