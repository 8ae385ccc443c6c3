//! The shell commands of day-2 operations, built by pure functions and quoted
//! with the transport's one quoting helper (tested as exact strings below). The swarm's
//! own commands (node update, promote, demote, rm, join, leave, init) are the ones the
//! swarm steps plan: `provision_playbook::swarm::commands`.

use provision_transport::shell::quote;

/// Where Docker keeps the swarm state (raft log, keys, certificates).
pub const SWARM_DIR: &str = "/var/lib/docker/swarm";

/// Every service of the swarm, one JSON object per line.
pub const SERVICE_LS: &str = "docker service ls --format '{{json .}}'";

/// The names of the services, one per line.
pub const SERVICE_NAMES: &str = "docker service ls --format '{{.Name}}'";

/// The tasks of some services (history included), one JSON object per line.
pub fn service_tasks(services: &[String], running_only: bool) -> String {
    let mut s = String::from("docker service ps --no-trunc --format '{{json .}}'");
    if running_only {
        s.push_str(" --filter desired-state=running");
    }
    for name in services {
        s.push(' ');
        s.push_str(&quote(name));
    }
    s
}

/// `docker service logs`, streamed.
pub fn service_logs(service: &str, follow: bool, tail: Option<u32>) -> String {
    let mut s = String::from("docker service logs --timestamps --no-trunc");
    if follow {
        s.push_str(" --follow");
    }
    if let Some(n) = tail {
        s.push_str(&format!(" --tail {n}"));
    }
    s.push(' ');
    s.push_str(&quote(service));
    s
}

/// Runs `argv` in the container of a swarm task on this node (`docker exec`),
/// with the task's exit status. 125 (Docker's own "could not run") when the
/// task has no container here.
pub fn exec_in_task(task_id: &str, argv: &[String]) -> String {
    let mut s = format!(
        "c=$(docker ps -q --filter label=com.docker.swarm.task.id={}); \
         [ -n \"$c\" ] || {{ echo {} >&2; exit 125; }}; exec docker exec \"$c\"",
        quote(task_id),
        quote(&format!(
            "no running container of task {task_id} on this node"
        ))
    );
    for a in argv {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s
}

/// The tasks still meant to run on a node (empty once a drain has finished).
pub fn node_running_tasks(node_id: &str) -> String {
    format!(
        "docker node ps --filter desired-state=running --format '{{{{.Name}}}} {{{{.CurrentState}}}}' {}",
        quote(node_id)
    )
}

/// A node's status as the managers see it: `ready` / `down`, and its manager reachability.
pub fn node_state(node_id: &str) -> String {
    format!(
        "docker node inspect --format '{{{{.Status.State}}}} {{{{if .ManagerStatus}}}}{{{{.ManagerStatus.Reachability}}}}{{{{end}}}}' {}",
        quote(node_id)
    )
}

/// The unlock key when autolock is on; empty output when it is off.
pub const UNLOCK_KEY: &str = "docker swarm unlock-key -q 2>/dev/null || true";

/// Unlocks a locked manager through the Docker API, the key on stdin
/// (`docker swarm unlock` would want a terminal; argv would show the key).
pub const UNLOCK: &str = "curl -sS --fail-with-body --unix-socket /var/run/docker.sock -H 'Content-Type: application/json' --data-binary @- http://localhost/swarm/unlock";

pub fn unlock_request(key: &str) -> String {
    serde_json::json!({ "UnlockKey": key }).to_string()
}

/// The local node's swarm state and whether it can act as a manager: `active true`.
pub const LOCAL_STATE: &str =
    "docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}' 2>&1";

/// Whether this manager can list nodes (it can only with a leader): `ok` or the error.
pub const CAN_LIST_NODES: &str =
    "docker node ls -q >/dev/null 2>&1 && echo ok || docker node ls 2>&1 | tail -n 1";

/// Stops Docker, streams the swarm state as tar.gz on stdout, starts Docker
/// again, whatever happens to the archive (the trap).
pub fn backup_archive() -> String {
    format!(
        "trap 'systemctl start docker.socket docker.service' EXIT; \
         systemctl stop docker.socket docker.service && \
         tar -C {} -czf - {}",
        quote(parent(SWARM_DIR)),
        quote(base(SWARM_DIR))
    )
}

/// Stops Docker, puts the current swarm state aside in a copy named for the time
/// (`swarm.before-restore-20261206T031500Z-PID`, never removed: a retried restore must not
/// delete the only copy of what was there), unpacks the archive read from stdin, starts
/// Docker again in any case.
pub fn restore_archive() -> String {
    let dir = quote(SWARM_DIR);
    format!(
        "trap 'systemctl start docker.socket docker.service' EXIT; \
         set -e; systemctl stop docker.socket docker.service; \
         rm -rf {dir}.restore-tmp; \
         if [ -e {dir} ]; then mv {dir} {dir}.before-restore-$(date -u +%Y%m%dT%H%M%SZ)-$$; fi; \
         mkdir -m 0700 {dir}.restore-tmp; tar -xzf - -C {dir}.restore-tmp; \
         mv {dir}.restore-tmp/{} {dir}; rmdir {dir}.restore-tmp",
        quote(base(SWARM_DIR))
    )
}

/// How new a manager's raft state is: its snapshot and log segment files with their
/// modification times (nanoseconds), parsed by `recover::parse_raft_files`. The names carry
/// the raft index (`<term>-<index>.snap`, `<seq>-<index>.wal`, hex).
pub fn raft_files() -> String {
    let raft = format!("{SWARM_DIR}/raft");
    let d = quote(&raft);
    format!(
        "for f in {d}/snap-v3-encrypted/*.snap {d}/wal-v3-encrypted/*.wal; do if [ -e \"$f\" ]; then stat -c '%n %.9Y' \"$f\"; fi; done"
    )
}

fn parent(p: &str) -> &str {
    p.rsplit_once('/').map(|(a, _)| a).unwrap_or(".")
}

fn base(p: &str) -> &str {
    p.rsplit_once('/').map(|(_, b)| b).unwrap_or(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_commands_are_exact() {
        assert_eq!(
            service_tasks(&["demo_web".into(), "it's".into()], true),
            "docker service ps --no-trunc --format '{{json .}}' --filter desired-state=running demo_web 'it'\\''s'"
        );
        assert_eq!(
            service_logs("demo_web", true, Some(50)),
            "docker service logs --timestamps --no-trunc --follow --tail 50 demo_web"
        );
        assert_eq!(
            service_logs("a b", false, None),
            "docker service logs --timestamps --no-trunc 'a b'"
        );
        assert_eq!(
            exec_in_task("t1", &["php".into(), "migrate; rm -rf /".into()]),
            "c=$(docker ps -q --filter label=com.docker.swarm.task.id=t1); [ -n \"$c\" ] || { echo 'no running container of task t1 on this node' >&2; exit 125; }; exec docker exec \"$c\" php 'migrate; rm -rf /'"
        );
    }

    #[test]
    fn node_commands_are_exact() {
        assert_eq!(
            node_running_tasks("n1"),
            "docker node ps --filter desired-state=running --format '{{.Name}} {{.CurrentState}}' n1"
        );
        assert_eq!(
            node_state("n1"),
            "docker node inspect --format '{{.Status.State}} {{if .ManagerStatus}}{{.ManagerStatus.Reachability}}{{end}}' n1"
        );
        assert_eq!(
            unlock_request("SWMKEY-1-x\"y"),
            "{\"UnlockKey\":\"SWMKEY-1-x\\\"y\"}"
        );
    }

    #[test]
    fn backup_and_restore_commands_are_exact() {
        assert_eq!(
            backup_archive(),
            "trap 'systemctl start docker.socket docker.service' EXIT; systemctl stop docker.socket docker.service && tar -C /var/lib/docker -czf - swarm"
        );
        assert_eq!(
            restore_archive(),
            "trap 'systemctl start docker.socket docker.service' EXIT; set -e; systemctl stop docker.socket docker.service; rm -rf /var/lib/docker/swarm.restore-tmp; if [ -e /var/lib/docker/swarm ]; then mv /var/lib/docker/swarm /var/lib/docker/swarm.before-restore-$(date -u +%Y%m%dT%H%M%SZ)-$$; fi; mkdir -m 0700 /var/lib/docker/swarm.restore-tmp; tar -xzf - -C /var/lib/docker/swarm.restore-tmp; mv /var/lib/docker/swarm.restore-tmp/swarm /var/lib/docker/swarm; rmdir /var/lib/docker/swarm.restore-tmp"
        );
        assert_eq!(
            raft_files(),
            "for f in /var/lib/docker/swarm/raft/snap-v3-encrypted/*.snap /var/lib/docker/swarm/raft/wal-v3-encrypted/*.wal; do if [ -e \"$f\" ]; then stat -c '%n %.9Y' \"$f\"; fi; done"
        );
    }

    /// The restore script really swaps the directories (run locally on a copy).
    #[test]
    fn restore_script_swaps_directories_locally() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("src/swarm/raft")).unwrap();
        std::fs::write(root.join("src/swarm/raft/wal"), "new").unwrap();
        std::fs::create_dir_all(root.join("docker/swarm")).unwrap();
        std::fs::write(root.join("docker/swarm/old"), "old").unwrap();
        let tar = std::process::Command::new("tar")
            .args([
                "-C",
                root.join("src").to_str().unwrap(),
                "-czf",
                "-",
                "swarm",
            ])
            .output()
            .unwrap();
        assert!(tar.status.success());
        let script = restore_archive()
            .replace(SWARM_DIR, root.join("docker/swarm").to_str().unwrap())
            .replace("systemctl", "true");
        let restore = || {
            let mut child = std::process::Command::new("sh")
                .args(["-c", &script])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
            assert!(child.wait().unwrap().success());
        };
        let copies = || {
            let mut v: Vec<String> = std::fs::read_dir(root.join("docker"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("swarm.before-restore-"))
                .collect();
            v.sort();
            v
        };
        restore();
        assert_eq!(
            std::fs::read_to_string(root.join("docker/swarm/raft/wal")).unwrap(),
            "new"
        );
        let first = copies();
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(
            std::fs::read_to_string(root.join("docker").join(&first[0]).join("old")).unwrap(),
            "old"
        );
        assert!(!root.join("docker/swarm.restore-tmp").exists());
        // A retry keeps the first copy (the only one holding what was there before).
        restore();
        let both = copies();
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(both.contains(&first[0]));
        assert!(root.join("docker").join(&first[0]).join("old").exists());
    }
}
