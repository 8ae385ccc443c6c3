//! The swarm's command lines, built by pure functions and quoted with the transport's one
//! quoting helper. The swarm steps plan them and the day-2 operations run them: one builder
//! per command, so both say exactly the same thing (tested as exact strings below).

use super::node::Availability;
use provision_transport::shell::quote;
use std::collections::BTreeMap;

/// The swarm's control-plane port.
pub const SWARM_PORT: u16 = 2377;

/// A manager's raft address as Docker writes it: `10.0.0.1:2377`, `[fd00::1]:2377`.
pub fn manager_addr(ip: &str) -> String {
    provision_transport::addr::with_port(ip, SWARM_PORT)
}

/// `docker swarm init` advertising the private address.
pub fn init(advertise_ip: &str) -> String {
    format!("docker swarm init --advertise-addr {}", quote(advertise_ip))
}

/// A new single-manager swarm from this manager's state (the raft keeps the
/// services, networks, secrets and nodes; the other managers are dropped).
pub fn force_new_cluster(advertise_ip: &str) -> String {
    format!(
        "docker swarm init --force-new-cluster --advertise-addr {}",
        quote(advertise_ip)
    )
}

/// Joins through the Docker API on the local socket, with the request (token
/// included) on stdin: `docker swarm join --token` would put it in argv.
/// Docker stops waiting after 20 s and answers 503 "Timeout was reached before
/// node joined" while the join goes on in the background (a slow leader, a
/// raft catching up): that is waited out on `docker info`, not reported as a
/// failure. Any other error prints Docker's message on stderr.
pub const JOIN_COMMAND: &str = r#"out=$(curl -sS --fail-with-body --unix-socket /var/run/docker.sock -H 'Content-Type: application/json' --data-binary @- http://localhost/swarm/join) && exit 0
rc=$?
case $out in
*'continue in the background'*) ;;
*) printf '%s\n' "$out" >&2; exit $rc ;;
esac
i=0
while [ $i -lt 300 ]; do
  s=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)
  [ "$s" = active ] && exit 0
  [ "$s" = error ] && break
  sleep 1; i=$((i + 1))
done
printf 'the join did not finish: %s\n' "$(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.Error}}' 2>&1)" >&2
exit 1"#;

/// Run on a manager that just joined: waits until the swarm reports it ready and
/// reachable, so the next manager joins a raft whose members are all caught up
/// (joining while one is still syncing can leave the swarm without a leader).
pub fn manager_settled() -> String {
    wait_node(
        "self",
        true,
        "joined, but not a ready and reachable manager",
        180,
    )
}

/// The JSON body of a join request.
pub fn join_request(advertise_ip: &str, join_addr: &str, token: &str) -> String {
    serde_json::json!({
        "ListenAddr": "0.0.0.0:2377",
        "AdvertiseAddr": manager_addr(advertise_ip),
        "DataPathAddr": advertise_ip,
        "RemoteAddrs": [join_addr],
        "JoinToken": token,
    })
    .to_string()
}

pub fn promote(node_id: &str) -> String {
    format!("docker node promote {}", quote(node_id))
}

/// Seconds a node that is down in the node list while its own Docker runs in the swarm gets
/// to be heard again: a daemon restarted moments ago registers within seconds; one that stays
/// silent this long is cut off from the other nodes.
pub const HEARD_WITHIN_SECS: u32 = 60;

/// Why a node whose Docker runs in the swarm (it answered over SSH) is still down in the node
/// list, and what to check: the swarm's own traffic does not pass between it and the others.
pub fn unheard_hint(host: &str, private_ip: &str) -> String {
    format!(
        "{host} answers over SSH and its Docker is in the swarm, but the other nodes do not hear it: \
         the private network between them is cut (firewall, route or link) on {private_ip}; \
         the swarm needs 2377/tcp, 7946/tcp+udp and 4789/udp open between the nodes"
    )
}

/// Run on a manager: polls `docker node inspect NODE` every second, up to `secs`, until the
/// node is ready (and a manager reachable); else prints `why`, the time waited and the last
/// state, exit 1. A cut-off node is waited for with [`HEARD_WITHIN_SECS`] and [`unheard_hint`].
pub fn wait_node(node: &str, manager: bool, why: &str, secs: u32) -> String {
    let (format, want) = if manager {
        (
            "{{.Status.State}} {{.ManagerStatus.Reachability}}",
            "ready reachable",
        )
    } else {
        ("{{.Status.State}}", "ready")
    };
    format!(
        "# wait until the swarm hears node {id}\ni=0\nwhile [ $i -lt {secs} ]; do\n  [ \"$(docker node inspect {id} --format {format} 2>/dev/null)\" = {want} ] && exit 0\n  sleep 1; i=$((i + 1))\ndone\nprintf '%s after %s s: %s\\n' {why} {secs} \"$(docker node inspect {id} --format {format} 2>&1)\" >&2\nexit 1",
        id = quote(node),
        format = quote(format),
        want = quote(want),
        why = quote(why),
    )
}

pub fn demote(node_id: &str) -> String {
    format!("docker node demote {}", quote(node_id))
}

pub fn node_rm(node_id: &str, force: bool) -> String {
    format!(
        "docker node rm{} {}",
        if force { " --force" } else { "" },
        quote(node_id)
    )
}

pub fn node_availability(node_id: &str, availability: Availability) -> String {
    format!(
        "docker node update --availability {} {}",
        quote(availability.as_str()),
        quote(node_id)
    )
}

/// `docker node update` adding and removing labels (sorted, quoted).
pub fn node_labels(node: &str, add: &BTreeMap<String, String>, rm: &[String]) -> String {
    let mut s = String::from("docker node update");
    for (k, v) in add {
        s.push_str(&format!(" --label-add {}", quote(&format!("{k}={v}"))));
    }
    for k in rm {
        s.push_str(&format!(" --label-rm {}", quote(k)));
    }
    s.push(' ');
    s.push_str(&quote(node));
    s
}

/// Leaves whatever swarm state the node holds; only for a node the swarm removed.
/// A manager whose raft peers are gone can hang while stopping, and Docker gives
/// up after 15 s with "context deadline exceeded" (moby/moby#34140; seen in CI on
/// a manager that came back after `recover`): dockerd is restarted and the leave
/// tried again, at most twice. Any other error is printed and fails.
pub const LEAVE_COMMAND: &str = r#"out=$(docker swarm leave --force 2>&1) && exit 0
for _ in 2 3; do
  case $out in
  *'not part of a swarm'*) exit 0 ;;
  *'context deadline exceeded'*) ;;
  *) break ;;
  esac
  systemctl restart docker || exit 1
  i=0
  until docker info >/dev/null 2>&1; do
    [ $i -lt 120 ] || { echo 'dockerd did not answer within 120 s of a restart' >&2; exit 1; }
    sleep 1; i=$((i + 1))
  done
  out=$(docker swarm leave --force 2>&1) && exit 0
done
case $out in *'not part of a swarm'*) exit 0 ;; esac
printf '%s\n' "$out" >&2
exit 1"#;

/// Validates `docker-compose.yml` where Docker can: `docker stack config` exists from Docker
/// 23 on (Debian 12's docker.io is 20.10); elsewhere the deploy reports the same errors
/// itself. `on_error` follows the check (` || exit 1`); empty where `set -e` stops the script.
pub fn validate_compose(on_error: &str) -> String {
    format!(
        "if docker stack --help 2>/dev/null | grep -q '^  config '; then docker stack config -c docker-compose.yml >/dev/null{on_error}; fi; "
    )
}

/// Deploys `docker-compose.yml` as stack `name`; `flags` are shell words as they are (the
/// recorded flags, or a variable holding them).
pub fn stack_deploy(flags: &str, name: &str) -> String {
    format!(
        "docker stack deploy -c docker-compose.yml {flags} {}",
        quote(name)
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::write_executable;
    use super::*;

    #[test]
    fn init_command_is_exact() {
        assert_eq!(
            init("10.10.0.11"),
            "docker swarm init --advertise-addr 10.10.0.11"
        );
        assert_eq!(
            force_new_cluster("10.10.0.12"),
            "docker swarm init --force-new-cluster --advertise-addr 10.10.0.12"
        );
    }

    #[test]
    fn node_commands_are_exact() {
        assert_eq!(
            node_availability("n1", Availability::Drain),
            "docker node update --availability drain n1"
        );
        assert_eq!(promote("n1"), "docker node promote n1");
        assert_eq!(demote("n1"), "docker node demote n1");
        assert_eq!(node_rm("n1", true), "docker node rm --force n1");
        assert_eq!(node_rm("n1", false), "docker node rm n1");
    }

    #[test]
    fn stack_commands_are_exact() {
        assert_eq!(
            validate_compose(" || exit 1"),
            "if docker stack --help 2>/dev/null | grep -q '^  config '; then docker stack config -c docker-compose.yml >/dev/null || exit 1; fi; "
        );
        assert_eq!(
            stack_deploy("$flags", "my stack"),
            "docker stack deploy -c docker-compose.yml $flags 'my stack'"
        );
    }

    #[test]
    fn label_command_is_exact() {
        let add = BTreeMap::from([
            ("zone".to_string(), "a b".to_string()),
            ("swarm".to_string(), "true".to_string()),
        ]);
        assert_eq!(
            node_labels("w1", &add, &["old".into()]),
            "docker node update --label-add swarm=true --label-add 'zone=a b' --label-rm old w1"
        );
    }

    #[test]
    fn wait_node_is_exact_and_names_the_cut_off_node() {
        assert_eq!(
            wait_node("n3", true, "m3 is cut off", 60),
            "# wait until the swarm hears node n3\ni=0\nwhile [ $i -lt 60 ]; do\n  [ \"$(docker node inspect n3 --format '{{.Status.State}} {{.ManagerStatus.Reachability}}' 2>/dev/null)\" = 'ready reachable' ] && exit 0\n  sleep 1; i=$((i + 1))\ndone\nprintf '%s after %s s: %s\\n' 'm3 is cut off' 60 \"$(docker node inspect n3 --format '{{.Status.State}} {{.ManagerStatus.Reachability}}' 2>&1)\" >&2\nexit 1"
        );
        // Heard again on the second poll: done.
        let (code, err, _, polls) = run_script(
            &wait_node("n3", true, "m3 is cut off", 5),
            0,
            "",
            &["down unreachable", "ready reachable"],
        );
        assert_eq!((code, err.as_str(), polls), (Some(0), "", 2));
        // A worker only needs to be ready.
        let (code, _, _, polls) = run_script(
            &wait_node("w1", false, "w1 is cut off", 5),
            0,
            "",
            &["ready"],
        );
        assert_eq!((code, polls), (Some(0), 1));
        // Never heard: the hint, the time waited and the last state.
        let (code, err, _, polls) = run_script(
            &wait_node("n3", true, "m3 is cut off", 2),
            0,
            "",
            &["down unreachable"],
        );
        assert_eq!(
            (code, err.as_str(), polls),
            (Some(1), "m3 is cut off after 2 s: down unreachable\n", 3)
        );
        assert_eq!(
            unheard_hint("manager-3", "10.10.0.13"),
            "manager-3 answers over SSH and its Docker is in the swarm, but the other nodes do not hear it: \
             the private network between them is cut (firewall, route or link) on 10.10.0.13; \
             the swarm needs 2377/tcp, 7946/tcp+udp and 4789/udp open between the nodes"
        );
    }

    /// The join script against stand-in `curl` and `docker` on PATH.
    /// `curl_rc`/`curl_out` is what the API call does; `states` what
    /// `docker info` says on each poll. Returns (exit code, stderr, stdin seen
    /// by curl, polls).
    fn run_script(
        script: &str,
        curl_rc: i32,
        curl_out: &str,
        states: &[&str],
    ) -> (Option<i32>, String, String, usize) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let write = |name: &str, body: String| write_executable(&dir.join(name), &body);
        write(
            "curl",
            format!(
                "#!/bin/sh\ncat > \"$0.stdin\"\nprintf '%s' {}\nexit {curl_rc}\n",
                quote(curl_out)
            ),
        );
        let mut docker = String::from(
            "#!/bin/sh\nn=$(cat \"$0.n\" 2>/dev/null || echo 0); echo $((n + 1)) > \"$0.n\"\ncase $n in\n",
        );
        for (i, st) in states.iter().enumerate() {
            docker.push_str(&format!("  {i}) echo {};;\n", quote(st)));
        }
        docker.push_str(&format!(
            "  *) echo {};;\nesac\n",
            quote(states.last().unwrap_or(&""))
        ));
        write("docker", docker);
        let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
        let out = provision_testkit::local::LocalShell::new()
            .env("PATH", path)
            .sh(script, b"{\"JoinToken\":\"t\"}");
        let polls = std::fs::read_to_string(dir.join("docker.n"))
            .map(|n| n.trim().parse().unwrap())
            .unwrap_or(0);
        (
            out.exit_status.map(|c| c as i32),
            out.stderr_str().to_string(),
            std::fs::read_to_string(dir.join("curl.stdin")).unwrap_or_default(),
            polls,
        )
    }

    fn run_join(
        curl_rc: i32,
        curl_out: &str,
        states: &[&str],
    ) -> (Option<i32>, String, String, usize) {
        run_script(JOIN_COMMAND, curl_rc, curl_out, states)
    }

    /// LEAVE_COMMAND against a stand-in `docker` whose `swarm leave` calls
    /// answer `leaves` in turn (exit code, message), and a stand-in
    /// `systemctl`. Returns (exit code, stderr, the calls made).
    fn run_leave(leaves: &[(i32, &str)]) -> (Option<i32>, String, Vec<String>) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let log = dir.join("calls");
        let mut docker = format!(
            "#!/bin/sh\necho \"docker $*\" >> {log}\n[ \"$1\" = swarm ] || exit 0\nn=$(cat \"$0.n\" 2>/dev/null || echo 0); echo $((n + 1)) > \"$0.n\"\ncase $n in\n",
            log = quote(&log.display().to_string())
        );
        for (i, (rc, msg)) in leaves.iter().enumerate() {
            docker.push_str(&format!("  {i}) echo {} >&2; exit {rc};;\n", quote(msg)));
        }
        docker.push_str("esac\necho 'no more answers' >&2; exit 99\n");
        write_executable(&dir.join("docker"), &docker);
        write_executable(
            &dir.join("systemctl"),
            &format!(
                "#!/bin/sh\necho \"systemctl $*\" >> {}\n",
                quote(&log.display().to_string())
            ),
        );
        let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
        let out = provision_testkit::local::LocalShell::new()
            .env("PATH", path)
            .sh(LEAVE_COMMAND, b"");
        let calls = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        (
            out.exit_status.map(|c| c as i32),
            out.stderr_str().to_string(),
            calls,
        )
    }

    #[test]
    fn leave_restarts_dockerd_when_stopping_the_manager_times_out() {
        const LEAVE: &str = "docker swarm leave --force";
        const RESTART: &str = "systemctl restart docker";
        const INFO: &str = "docker info";
        const DEADLINE: &str = "Error response from daemon: context deadline exceeded";

        let (code, err, calls) = run_leave(&[(0, "Node left the swarm.")]);
        assert_eq!(
            (code, err.as_str(), calls),
            (Some(0), "", vec![LEAVE.to_string()])
        );

        let (code, err, calls) = run_leave(&[(1, DEADLINE), (0, "Node left the swarm.")]);
        assert_eq!((code, err.as_str()), (Some(0), ""));
        assert_eq!(calls, vec![LEAVE, RESTART, INFO, LEAVE]);

        let (code, err, calls) = run_leave(&[(1, DEADLINE), (1, DEADLINE), (1, DEADLINE)]);
        assert_eq!(
            (code, err),
            (Some(1), format!("{DEADLINE}\n")),
            "gives up after three"
        );
        assert_eq!(
            calls,
            vec![LEAVE, RESTART, INFO, LEAVE, RESTART, INFO, LEAVE]
        );

        // Already out (a restart finished the leave): nothing left to do.
        let (code, _, calls) = run_leave(&[
            (1, DEADLINE),
            (
                1,
                "Error response from daemon: This node is not part of a swarm",
            ),
        ]);
        assert_eq!((code, calls.len()), (Some(0), 4));

        let other = "Error response from daemon: permission denied";
        let (code, err, calls) = run_leave(&[(1, other)]);
        assert_eq!(
            (code, err),
            (Some(1), format!("{other}\n")),
            "other errors fail at once"
        );
        assert_eq!(calls, vec![LEAVE]);
    }

    #[test]
    fn a_joined_manager_waits_until_it_is_reachable() {
        let (code, err, _, polls) = run_script(
            &manager_settled(),
            0,
            "",
            &["ready unknown", "ready unknown", "ready reachable"],
        );
        assert_eq!((code, err.as_str(), polls), (Some(0), "", 3));
    }

    #[test]
    fn join_script_waits_out_dockers_20_second_timeout() {
        let (code, err, stdin, polls) = run_join(0, "", &[]);
        assert_eq!((code, err.as_str(), polls), (Some(0), "", 0));
        assert_eq!(
            stdin, "{\"JoinToken\":\"t\"}",
            "the request reaches curl on stdin"
        );

        let timeout = r#"{"message":"Timeout was reached before node joined. The attempt to join the swarm will continue in the background. Use the \"docker info\" command to see the current swarm status of your node."}"#;
        let (code, err, _, polls) = run_join(22, timeout, &["pending", "pending", "active"]);
        assert_eq!((code, err.as_str(), polls), (Some(0), "", 3));

        let (code, err, _, polls) = run_join(22, timeout, &["pending", "error"]);
        assert_eq!((code, polls), (Some(1), 3));
        assert_eq!(err, "the join did not finish: error\n");

        let refused =
            r#"{"message":"rpc error: code = Unknown desc = The swarm does not have a leader."}"#;
        let (code, err, _, polls) = run_join(22, refused, &["active"]);
        assert_eq!((code, polls), (Some(22), 0), "other errors fail at once");
        assert_eq!(err, format!("{refused}\n"), "with Docker's message");
    }
}
