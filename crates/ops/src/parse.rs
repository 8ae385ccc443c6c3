//! Pure parsers of Docker's output for day-2 operations, tested on captured
//! output (docker.io 20.10 on Debian 12, the lab's engine).

use serde::{Deserialize, Serialize};

/// One line of `docker service ls --format '{{json .}}'`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceLine {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub mode: String,
    /// "2/2", "1/2 (max 1 per node)", "3/3" for global services.
    pub replicas: String,
    pub image: String,
    #[serde(default)]
    pub ports: String,
}

impl ServiceLine {
    /// (running, desired) from the replicas column.
    pub fn counts(&self) -> Option<(u32, u32)> {
        let head = self.replicas.split_whitespace().next()?;
        let (a, b) = head.split_once('/')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }
}

/// One line of `docker service ps --format '{{json .}}'`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskLine {
    #[serde(rename = "ID")]
    pub id: String,
    /// `demo_web.1`; older tasks of a slot print as `\_ demo_web.1` in tables only.
    pub name: String,
    pub image: String,
    pub node: String,
    pub desired_state: String,
    /// "Running 2 minutes ago", "Rejected 3 seconds ago", ...
    pub current_state: String,
    #[serde(default)]
    pub error: String,
}

impl TaskLine {
    pub fn running(&self) -> bool {
        self.current_state.starts_with("Running")
    }

    /// The service a task belongs to: the name without its `.slot` (or `.nodeid`).
    pub fn service(&self) -> &str {
        let n = self.name.trim_start_matches("\\_").trim();
        n.rsplit_once('.').map(|(s, _)| s).unwrap_or(n)
    }
}

fn json_lines<T: for<'de> Deserialize<'de>>(what: &str, stdout: &str) -> Result<Vec<T>, String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| format!("cannot parse {what} line `{l}`: {e}"))
        })
        .collect()
}

pub fn services(stdout: &str) -> Result<Vec<ServiceLine>, String> {
    json_lines("docker service ls", stdout)
}

pub fn tasks(stdout: &str) -> Result<Vec<TaskLine>, String> {
    json_lines("docker service ps", stdout)
}

/// A service name as the user typed it: exact, or the one service of a stack
/// named `STACK_NAME` (`web` for `demo_web`).
pub fn resolve_service(names: &str, wanted: &str) -> Result<String, String> {
    let all: Vec<&str> = names
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if all.contains(&wanted) {
        return Ok(wanted.to_string());
    }
    let suffix = format!("_{wanted}");
    let matches: Vec<&&str> = all.iter().filter(|n| n.ends_with(&suffix)).collect();
    match matches.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(format!(
            "no service `{wanted}` in the swarm (services: {})",
            if all.is_empty() {
                "none".to_string()
            } else {
                all.join(", ")
            }
        )),
        many => Err(format!(
            "`{wanted}` matches several services: {}; give the full name",
            many.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `docker info` state line: (LocalNodeState, ControlAvailable).
pub fn local_state(stdout: &str) -> Option<(String, bool)> {
    let mut it = stdout.split_whitespace();
    let state = it.next()?.to_string();
    let control = it.next()? == "true";
    Some((state, control))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE_LS: &str = r#"{"ID":"kq3x9","Image":"lab/web:1","Mode":"replicated","Name":"demo_web","Ports":"*:8080-\u003e8080/tcp","Replicas":"2/2"}
{"ID":"p0a1z","Image":"busybox:latest","Mode":"global","Name":"demo_agent","Ports":"","Replicas":"1/3"}
{"ID":"z9","Image":"x","Mode":"replicated","Name":"demo_one","Ports":"","Replicas":"0/1 (max 1 per node)"}
"#;

    const SERVICE_PS: &str = r#"{"CurrentState":"Running 2 minutes ago","DesiredState":"Running","Error":"","ID":"t1","Image":"lab/web:1","Name":"demo_web.1","Node":"manager-1","Ports":""}
{"CurrentState":"Rejected 5 seconds ago","DesiredState":"Shutdown","Error":"No such image: lab/web:9","ID":"t2","Image":"lab/web:9","Name":"demo_web.2","Node":"worker-1","Ports":""}
"#;

    #[test]
    fn parses_services_and_counts() {
        let s = services(SERVICE_LS).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "demo_web");
        assert_eq!(s[0].ports, "*:8080->8080/tcp");
        assert_eq!(s[0].counts(), Some((2, 2)));
        assert_eq!(s[1].counts(), Some((1, 3)));
        assert_eq!(s[2].counts(), Some((0, 1)));
        assert!(services("not json").is_err());
    }

    #[test]
    fn parses_tasks() {
        let t = tasks(SERVICE_PS).unwrap();
        assert!(t[0].running());
        assert!(!t[1].running());
        assert_eq!(t[1].error, "No such image: lab/web:9");
        assert_eq!(t[1].service(), "demo_web");
    }

    #[test]
    fn resolves_short_service_names() {
        let names = "demo_web\ndemo_worker\nappwrite_web\n";
        assert_eq!(resolve_service(names, "demo_web").unwrap(), "demo_web");
        assert_eq!(resolve_service(names, "worker").unwrap(), "demo_worker");
        assert!(
            resolve_service(names, "web")
                .unwrap_err()
                .contains("several")
        );
        assert!(
            resolve_service(names, "db")
                .unwrap_err()
                .contains("demo_web, demo_worker")
        );
        assert!(resolve_service("", "db").unwrap_err().contains("none"));
    }

    #[test]
    fn parses_local_state() {
        assert_eq!(local_state("active true\n"), Some(("active".into(), true)));
        assert_eq!(local_state("locked false"), Some(("locked".into(), false)));
        assert_eq!(local_state(""), None);
    }
}
