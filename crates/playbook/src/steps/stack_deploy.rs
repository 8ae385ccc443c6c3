//! `stack_deploy`: renders a stack's `docker-compose.yml` and `.env` from templates
//! (vars and secrets), uploads them to the deploying manager (the leader when it
//! answers; `.env` with mode 0600), validates with `docker stack config`, and runs
//! `docker stack deploy` with the `.env` values exported into its environment by
//! the shell (never in argv). A stamp of what was deployed makes re-runs a no-op
//! until the rendered stack changes; optionally waits for the services to converge.

use super::stack_release::{
    self, DeployOptions, Dump, EXPORT_ENV, Job, Release, STAMP, Todo, wait_script,
};
use crate::ctx::{Claim, ClusterCtx, ParamError, params};
use crate::swarm::commands;
use crate::swarm::step::{self, On, SwarmPlanner, SwarmStep};
use provision_engine::inventory::Inventory;
use provision_engine::step::{Action, Change, Check, FileDiff, Step, StepPlan};
use provision_transport::shell::quote;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    compose: String,
    env: Option<String>,
    dir: Option<String>,
    #[serde(default = "always")]
    resolve_image: String,
    #[serde(default = "yes")]
    with_registry_auth: bool,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    wait: bool,
    #[serde(default = "five_minutes")]
    wait_timeout: u64,
    version: Option<String>,
    migrate: Option<JobParams>,
    dump: Option<DumpParams>,
    #[serde(default = "yes")]
    rollback: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobParams {
    service: String,
    command: String,
    #[serde(default = "ten_minutes")]
    timeout: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DumpParams {
    service: String,
    command: String,
    dir: String,
    #[serde(default = "ten_minutes")]
    timeout: u64,
}

fn ten_minutes() -> u64 {
    600
}

fn always() -> String {
    "always".into()
}
fn yes() -> bool {
    true
}
fn five_minutes() -> u64 {
    300
}

const KNOWN: &[&str] = &[
    "name",
    "compose",
    "env",
    "dir",
    "resolve_image",
    "with_registry_auth",
    "prune",
    "wait",
    "wait_timeout",
    "version",
    "migrate",
    "dump",
    "rollback",
];

/// Plans the stack's deploy; the frame around it is [`SwarmStep`].
pub struct StackDeploy {
    name: String,
    dir: String,
    compose: String,
    env: Option<Zeroizing<String>>,
    hash: String,
    deploy: DeployOptions,
    release: Option<Release>,
}

pub fn build(with: &toml::Table, ctx: &ClusterCtx<'_>) -> Result<Box<dyn Step>, ParamError> {
    let p: Params = params(with, KNOWN)?;
    if !p
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || p.name.is_empty()
    {
        return Err(ParamError::new(
            Some("name"),
            format!(
                "stack name `{}` must be letters, digits, `-` or `_`",
                p.name
            ),
        ));
    }
    if !["always", "changed", "never"].contains(&p.resolve_image.as_str()) {
        return Err(ParamError::new(
            Some("resolve_image"),
            format!(
                "resolve_image `{}` is not always, changed or never",
                p.resolve_image
            ),
        ));
    }
    let read = |key: &str, rel: &str| -> Result<String, ParamError> {
        let path = ctx.base_dir.join(rel);
        let body = std::fs::read_to_string(&path).map_err(|e| {
            ParamError::new(Some(key), format!("cannot read {}: {e}", path.display()))
                .help("paths are relative to the playbook file")
        })?;
        (ctx.render)(&path.display().to_string(), &body)
            .map_err(|e| ParamError::new(Some(key), e.to_string()))
    };
    let release = release(&p)?;
    let compose = read("compose", &p.compose)?;
    for (service, constraint) in manager_only_services(&compose, ctx.inventory) {
        (ctx.claim)(
            "compose",
            Claim::ManagerOnly {
                stack: p.name.clone(),
                service,
                constraint,
            },
        );
    }
    let env = p
        .env
        .as_deref()
        .map(|e| read("env", e))
        .transpose()?
        .map(Zeroizing::new);
    let mut h = Sha256::new();
    h.update(compose.as_bytes());
    h.update([0]);
    if let Some(e) = &env {
        h.update(e.as_bytes());
    }
    let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let targets = step::selected_managers(ctx);
    if targets.is_empty() {
        return Err(
            ParamError::new(None, "stack_deploy needs managers among its hosts")
                .help("use hosts = \"manager\""),
        );
    }
    let planner = StackDeploy {
        dir: p
            .dir
            .unwrap_or_else(|| format!("/opt/provision/stacks/{}", p.name)),
        name: p.name,
        compose,
        env,
        hash,
        deploy: DeployOptions {
            resolve_image: p.resolve_image,
            with_registry_auth: p.with_registry_auth,
            prune: p.prune,
            wait: p.wait.then_some(p.wait_timeout),
        },
        release,
    };
    Ok(SwarmStep::boxed(ctx, targets, planner))
}

inventory::submit! { crate::ctx::BuiltIn::cluster("stack_deploy", build) }

/// How long the deploy command may run: its own waits (dump, migration, convergence, and a
/// roll back's convergence) and 30 minutes for Docker's deploys and tries, never less than
/// the run's default.
fn budget(deploy: &DeployOptions, release: Option<&Release>) -> std::time::Duration {
    let wait = deploy.wait.unwrap_or(0);
    let jobs = release.map_or(0, |r| {
        r.migrate.as_ref().map_or(0, |j| j.timeout) + r.dump.as_ref().map_or(0, |d| d.job.timeout)
    });
    std::time::Duration::from_secs(1800 + jobs + 2 * wait)
        .max(provision_engine::runner::DEFAULT_COMMAND_TIMEOUT)
}

/// The release parameters: a version (recorded on the cluster with its migration), the
/// migration and the dump before it, and whether a failure rolls back.
fn release(p: &Params) -> Result<Option<Release>, ParamError> {
    let Some(version) = p.version.clone() else {
        for (key, set) in [("migrate", p.migrate.is_some()), ("dump", p.dump.is_some())] {
            if set {
                return Err(ParamError::new(
                    Some(key),
                    format!("`{key}` needs the stack's `version`"),
                )
                .help("migrations and dumps run when the version changes: set `version`"));
            }
        }
        return Ok(None);
    };
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        || stack_release::migrated_config(&p.name, &version).len() > 64
    {
        return Err(ParamError::new(
            Some("version"),
            format!("version `{version}` must be letters, digits, `.`, `-` or `_` (and short)"),
        ));
    }
    if p.dump.is_some() && p.migrate.is_none() {
        return Err(ParamError::new(
            Some("dump"),
            "the dump is taken before a migration: set `migrate` too",
        ));
    }
    let job = |j: &JobParams| Job {
        service: j.service.clone(),
        command: j.command.clone(),
        timeout: j.timeout,
    };
    Ok(Some(Release {
        version,
        migrate: p.migrate.as_ref().map(job),
        dump: p.dump.as_ref().map(|d| Dump {
            job: Job {
                service: d.service.clone(),
                command: d.command.clone(),
                timeout: d.timeout,
            },
            dir: d.dir.clone(),
        }),
        rollback: p.rollback,
    }))
}

/// The services of a compose file whose placement constraints allow managers only
/// (`node.role == manager`, `node.role != worker`, `node.hostname ==` a manager of the
/// inventory, or `node.labels.K == V` where only managers carry K=V), with the constraint. A line scan, not a YAML parser: constraints are list items
/// under `services:` > NAME > `deploy:` > `placement:` > `constraints:`, one string each.
pub fn manager_only_services(compose: &str, inv: &Inventory) -> Vec<(String, String)> {
    let managers: Vec<&str> = inv
        .hosts
        .iter()
        .filter(|h| h.has_role(provision_engine::inventory::Role::Manager))
        .map(|h| h.name.as_str())
        .collect();
    let mut out = Vec::new();
    let mut in_services = false;
    let mut service: Option<String> = None;
    for line in compose.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if indent == 0 {
            in_services = trimmed == "services:";
            service = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 && trimmed.ends_with(':') {
            service = Some(
                trimmed
                    .trim_end_matches(':')
                    .trim_matches(['"', '\''])
                    .to_string(),
            );
            continue;
        }
        let Some(item) = trimmed.strip_prefix('-') else {
            continue;
        };
        let constraint: String = item
            .trim()
            .trim_matches(['"', '\''])
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let manager_only = match constraint.split_once("==") {
            Some(("node.role", role)) => role == "manager",
            Some(("node.hostname", name)) => managers.contains(&name),
            // A label only managers carry in the inventory.
            Some((key, value)) if key.starts_with("node.labels.") => {
                let key = &key["node.labels.".len()..];
                let mut carriers = inv
                    .hosts
                    .iter()
                    .filter(|h| h.labels.get(key).is_some_and(|v| v == value))
                    .peekable();
                carriers.peek().is_some()
                    && carriers.all(|h| h.has_role(provision_engine::inventory::Role::Manager))
            }
            _ => constraint == "node.role!=worker",
        };
        if let (true, Some(s)) = (manager_only, &service) {
            out.push((s.clone(), constraint));
        }
    }
    out
}

/// Facts of the stack on a manager, after the swarm facts: the stamp, whether the stack
/// exists, the versions recorded as migrated, the compose file deployed.
pub fn stack_gather(dir: &str, name: &str) -> String {
    format!(
        "echo '== stack-deploy'; cat {stamp} 2>/dev/null; echo '== stack-exists'; docker stack ls --format '{{{{.Name}}}}' 2>/dev/null | grep -Fx {name} || true; \
         echo '== migrated'; docker config ls --format '{{{{.Name}}}}' 2>/dev/null | grep -F {prefix} || true; \
         echo '== compose'; cat {compose} 2>/dev/null || true",
        stamp = quote(&format!("{dir}/{STAMP}")),
        name = quote(name),
        prefix = quote(&stack_release::migrated_prefix(name)),
        compose = quote(&format!("{dir}/docker-compose.yml")),
    )
}

/// The deploy script run in the stack directory: export `.env` (builtins only:
/// nothing reaches an argv), validate, deploy, stamp.
pub fn deploy_script(
    dir: &str,
    name: &str,
    with_env: bool,
    hash: &str,
    o: &DeployOptions,
) -> String {
    let mut s = format!("set -e; cd {}; ", quote(dir));
    if with_env {
        s.push_str(EXPORT_ENV);
    }
    s.push_str(&commands::validate_compose(""));
    // The flags as the release scripts record them (resolve_image is a checked keyword).
    s.push_str(&format!(
        "{}; printf '%s\\n' {} > {STAMP}",
        commands::stack_deploy(&stack_release::deploy_flags(o), name),
        quote(hash)
    ));
    s
}

/// The stack part of a manager's facts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StackFacts {
    /// The hash of what was deployed (the stamp's first line).
    pub stamp: Option<String>,
    /// The version deployed (its second line), for versioned stacks.
    pub version: Option<String>,
    pub exists: bool,
    /// The Docker configs recording migrations of this stack (names).
    pub migrated: Vec<String>,
    pub compose: Option<String>,
}

pub fn parse_stack(stdout: &str) -> (String, StackFacts) {
    let Some((swarm, rest)) = stdout.split_once("== stack-deploy\n") else {
        return (stdout.to_string(), StackFacts::default());
    };
    let (stamp, rest) = rest.split_once("== stack-exists\n").unwrap_or((rest, ""));
    let (rest, compose) = rest.split_once("== compose\n").unwrap_or((rest, ""));
    let (exists, migrated) = rest.split_once("== migrated\n").unwrap_or((rest, ""));
    let line = |n: usize| {
        stamp
            .lines()
            .nth(n)
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
    };
    let f = StackFacts {
        stamp: line(0),
        version: line(1),
        exists: !exists.trim().is_empty(),
        migrated: migrated
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        compose: Some(compose.to_string()).filter(|s| !s.is_empty()),
    };
    (swarm.to_string(), f)
}

impl SwarmPlanner for StackDeploy {
    /// The stack's state follows the swarm facts on each manager.
    fn more_facts(&self, _host: &str) -> Option<String> {
        Some(stack_gather(&self.dir, &self.name))
    }

    fn swarm_part(&self, stdout: &str) -> String {
        parse_stack(stdout).0
    }

    fn timeout(&self) -> Option<std::time::Duration> {
        Some(budget(&self.deploy, self.release.as_ref()))
    }

    /// Its tasks may land on any node: every node's earlier steps (images, the share's mount,
    /// its join and labels) come first.
    fn waits_for_hosts(&self, inv: &Inventory) -> Vec<String> {
        inv.hosts
            .iter()
            .filter(|h| h.is_swarm_node())
            .map(|h| h.name.clone())
            .collect()
    }

    fn plan(&self, on: &On<'_>) -> StepPlan {
        let parsed: BTreeMap<String, StackFacts> = on
            .facts
            .iter()
            .map(|(h, f)| (h.clone(), parse_stack(&f.stdout).1))
            .collect();
        let mut out = StepPlan::default();
        let view = match &on.swarm.view {
            Err(e) => {
                for t in on.reachable_targets() {
                    out.hosts.insert(t.clone(), Err(e.clone()));
                }
                return out;
            }
            Ok(v) => v,
        };
        // Deploy through the leader (or the first manager, before the swarm exists under --check).
        let via = view
            .as_ref()
            .map(|v| v.via.clone())
            .or_else(|| on.reachable_targets().next().cloned());
        let stack_exists = view.is_some() && parsed.values().any(|s| s.exists);
        let up_to_date = stack_exists
            && parsed
                .values()
                .any(|s| s.stamp.as_deref() == Some(self.hash.as_str()));
        let deployed = via
            .as_ref()
            .and_then(|v| parsed.get(v))
            .and_then(|s| s.version.clone());
        let todo = self.todo(up_to_date, stack_exists, deployed.as_deref(), &parsed);
        for t in on.reachable_targets() {
            let check = if !todo.deploy && !todo.migrate && !todo.record {
                Ok(Check::Ok(format!(
                    "stack {} up to date ({}){}",
                    self.name,
                    &self.hash[..12],
                    self.release
                        .as_ref()
                        .map(|r| format!(", version {}", r.version))
                        .unwrap_or_default()
                )))
            } else if Some(t) == via.as_ref() {
                let before = parsed.get(t).and_then(|s| s.compose.clone());
                Ok(Check::Change(vec![self.change(
                    before,
                    todo,
                    deployed.clone(),
                )]))
            } else {
                Ok(Check::Ok(format!(
                    "deployed from {}",
                    via.clone().unwrap_or_default()
                )))
            };
            out.hosts.insert(t.clone(), check);
        }
        out
    }
}

impl StackDeploy {
    /// What a run does: deploy when the files changed; for a versioned stack with a
    /// migration, migrate when the stack existed and the version is neither recorded as
    /// migrated nor the one deployed, else record it (a fresh install needs no migration).
    fn todo(
        &self,
        up_to_date: bool,
        stack_exists: bool,
        deployed: Option<&str>,
        parsed: &BTreeMap<String, StackFacts>,
    ) -> Todo {
        let deploy = !up_to_date;
        let Some(r) = self.release.as_ref().filter(|r| r.migrate.is_some()) else {
            return Todo {
                deploy,
                migrate: false,
                record: false,
            };
        };
        let config = stack_release::migrated_config(&self.name, &r.version);
        let recorded = parsed.values().any(|s| s.migrated.contains(&config));
        let migrate = !recorded && stack_exists && deployed != Some(r.version.as_str());
        Todo {
            deploy,
            migrate,
            record: !recorded && !migrate,
        }
    }

    fn change(&self, before: Option<String>, todo: Todo, deployed: Option<String>) -> Change {
        let mut actions = vec![Action::run(format!(
            "mkdir -p {d} && chmod 0750 {d}",
            d = quote(&self.dir)
        ))];
        if let Some(r) = &self.release {
            return self.release_change(actions, before, r, todo, deployed);
        }
        actions.extend(self.uploads());
        actions.push(Action::run(deploy_script(
            &self.dir,
            &self.name,
            self.env.is_some(),
            &self.hash,
            &self.deploy,
        )));
        if let Some(t) = self.deploy.wait {
            actions.push(Action::run(wait_script(&self.name, t)));
        }
        Change::new(
            format!("deploy stack {} ({})", self.name, &self.hash[..12]),
            actions,
        )
        .with_diff(FileDiff {
            path: format!("{}/docker-compose.yml", self.dir),
            before,
            after: self.compose.clone(),
        })
    }

    fn uploads(&self) -> Vec<Action> {
        let mut out = vec![Action::Upload {
            dest: format!("{}/docker-compose.yml", self.dir),
            content: Zeroizing::new(self.compose.clone().into_bytes()),
            mode: Some(0o640),
            owner: None,
            group: None,
        }];
        if let Some(env) = &self.env {
            out.push(Action::Upload {
                dest: format!("{}/.env", self.dir),
                content: Zeroizing::new(env.as_bytes().to_vec()),
                mode: Some(0o600),
                owner: None,
                group: None,
            });
        }
        out
    }

    /// A versioned stack: keep what is deployed, upload, then the release script.
    fn release_change(
        &self,
        mut actions: Vec<Action>,
        before: Option<String>,
        r: &Release,
        todo: Todo,
        deployed: Option<String>,
    ) -> Change {
        if todo.deploy {
            if r.rollback {
                actions.push(Action::run(stack_release::keep_previous_script(
                    &self.dir,
                    self.env.is_some(),
                )));
            }
            actions.extend(self.uploads());
        }
        actions.push(Action::run(stack_release::release_script(
            &self.dir,
            &self.name,
            &self.hash,
            &self.deploy,
            r,
            todo,
        )));
        let from = deployed.unwrap_or_else(|| "an unknown version".into());
        let summary = if todo.migrate {
            format!(
                "upgrade stack {} from {from} to {}: {}deploy, migrate once, converge{}",
                self.name,
                r.version,
                r.dump
                    .as_ref()
                    .map(|d| format!("dump the database into {}, ", d.dir))
                    .unwrap_or_default(),
                if r.rollback {
                    "; roll back on failure"
                } else {
                    ""
                }
            )
        } else if todo.deploy {
            format!(
                "deploy stack {} version {} ({})",
                self.name,
                r.version,
                &self.hash[..12]
            )
        } else {
            format!(
                "record stack {} as migrated to version {}",
                self.name, r.version
            )
        };
        let change = Change::new(summary, actions);
        if todo.deploy {
            change.with_diff(FileDiff {
                path: format!("{}/docker-compose.yml", self.dir),
                before,
                after: self.compose.clone(),
            })
        } else {
            change
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::swarm_facts::fixtures;
    use super::*;
    use provision_engine::step::Facts;

    /// The deploy command may run as long as its own waits need, and never less than the
    /// run's default: the run's command timeout must not cut an upgrade's migration short.
    #[test]
    fn a_deploy_may_run_as_long_as_its_waits() {
        let deploy = DeployOptions {
            resolve_image: "always".into(),
            with_registry_auth: false,
            prune: false,
            wait: Some(1200),
        };
        let job = |t| Job {
            service: "s".into(),
            command: "c".into(),
            timeout: t,
        };
        let release = Release {
            version: "2".into(),
            migrate: Some(job(900)),
            dump: Some(Dump {
                job: job(1500),
                dir: "/d".into(),
            }),
            rollback: true,
        };
        assert_eq!(
            budget(&deploy, Some(&release)).as_secs(),
            1800 + 900 + 1500 + 2 * 1200
        );
        let quick = DeployOptions {
            wait: None,
            ..deploy
        };
        assert_eq!(
            budget(&quick, None),
            provision_engine::runner::DEFAULT_COMMAND_TIMEOUT
        );
    }

    #[test]
    fn scripts_are_exact() {
        let o = DeployOptions {
            resolve_image: "never".into(),
            with_registry_auth: true,
            prune: false,
            wait: None,
        };
        assert_eq!(
            deploy_script("/opt/provision/stacks/demo", "demo", true, "abc", &o),
            "set -e; cd /opt/provision/stacks/demo; while IFS= read -r l || [ -n \"$l\" ]; do case \"$l\" in ''|'#'*) continue;; esac; export \"${l%%=*}=${l#*=}\"; done < .env; \
             if docker stack --help 2>/dev/null | grep -q '^  config '; then docker stack config -c docker-compose.yml >/dev/null; fi; docker stack deploy -c docker-compose.yml --with-registry-auth --resolve-image never demo; printf '%s\\n' abc > .provision-deployed"
        );
        assert_eq!(
            stack_gather("/s", "demo"),
            "echo '== stack-deploy'; cat /s/.provision-deployed 2>/dev/null; echo '== stack-exists'; docker stack ls --format '{{.Name}}' 2>/dev/null | grep -Fx demo || true; echo '== migrated'; docker config ls --format '{{.Name}}' 2>/dev/null | grep -F provision-migrated-demo- || true; echo '== compose'; cat /s/docker-compose.yml 2>/dev/null || true"
        );
    }

    #[test]
    fn env_export_keeps_values_verbatim_in_a_real_shell() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "# comment\nA=plain\nB=with spaces and $dollar 'quotes'\n\nC=x=y",
        )
        .unwrap();
        let script = "while IFS= read -r l || [ -n \"$l\" ]; do case \"$l\" in ''|'#'*) continue;; esac; export \"${l%%=*}=${l#*=}\"; done < .env; printf '%s|' \"$A\" \"$B\" \"$C\"";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "plain|with spaces and $dollar 'quotes'|x=y|"
        );
    }

    fn step(inv: &Inventory) -> SwarmStep<StackDeploy> {
        let planner = StackDeploy {
            name: "demo".into(),
            dir: "/opt/s".into(),
            compose: "services: {}\n".into(),
            env: Some(Zeroizing::new("K=v\n".into())),
            hash: "0123456789abcdef0123".into(),
            deploy: DeployOptions {
                resolve_image: "never".into(),
                with_registry_auth: true,
                prune: false,
                wait: Some(60),
            },
            release: None,
        };
        SwarmStep {
            title: "stack".into(),
            inv: inv.clone(),
            targets: vec!["manager-1".into()],
            planner,
        }
    }

    /// Constraints that allow managers only, in any spelling swarm accepts (quotes, spaces);
    /// others (a worker's name, labels, `node.role == worker`) and lists outside `services:`
    /// are not claims.
    #[test]
    fn services_only_managers_can_run_are_found() {
        let mut inv = inv();
        inv.hosts[0].labels.insert("data".into(), "yes".into());
        let compose = "x-list: &l\n  - node.role == manager\nservices:\n  web:\n    image: w\n    deploy:\n      placement:\n        constraints:\n          - node.labels.zone == a\n          - \"node.role == manager\"\n  'api':\n    deploy:\n      placement:\n        constraints: [ ]\n  db:\n    environment:\n      - A=1\n    deploy:\n      placement:\n        constraints:\n          - 'node.hostname==manager-1'\n  job:\n    deploy:\n      placement:\n        constraints:\n          - node.role != worker\n  w:\n    deploy:\n      placement:\n        constraints:\n          - node.hostname == worker-1\n          - node.role==worker\n  lab:\n    deploy:\n      placement:\n        constraints:\n          - node.labels.data == yes\n          - node.labels.zone==a\nvolumes:\n  - node.role == manager\n";
        assert_eq!(
            manager_only_services(compose, &inv),
            [
                ("web".to_string(), "node.role==manager".to_string()),
                ("db".to_string(), "node.hostname==manager-1".to_string()),
                ("job".to_string(), "node.role!=worker".to_string()),
                ("lab".to_string(), "node.labels.data==yes".to_string()),
            ]
        );
    }

    fn inv() -> Inventory {
        let t = "name = \"t\"\n[[hosts]]\nname = \"manager-1\"\naddress = \"127.0.0.1\"\nport = 2201\nprivate_ip = \"10.10.0.12\"\nroles = [\"manager\"]\n";
        Inventory::parse(t, std::path::Path::new("c.toml"), &Default::default()).unwrap()
    }

    fn facts(stamp: &str, exists: bool) -> BTreeMap<String, Facts> {
        let m = fixtures::manager("m1", "c", &[("m1", "manager-1", "manager", true, "null")]);
        let s = format!(
            "{m}== stack-deploy\n{stamp}\n== stack-exists\n{}== compose\nold: 1\n",
            if exists { "demo\n" } else { "" }
        );
        [("manager-1".to_string(), Facts::new(s))]
            .into_iter()
            .collect()
    }

    #[test]
    fn deploys_when_missing_or_changed_and_not_otherwise() {
        let inv = inv();
        let s = step(&inv);
        let p = s.plan(&facts("0123456789abcdef0123", true));
        assert_eq!(
            p.hosts["manager-1"],
            Ok(Check::Ok("stack demo up to date (0123456789ab)".into()))
        );
        for f in [
            facts("old-hash", true),
            facts("0123456789abcdef0123", false),
        ] {
            let Ok(Check::Change(c)) = &s.plan(&f).hosts["manager-1"] else {
                panic!()
            };
            assert_eq!(c[0].summary, "deploy stack demo (0123456789ab)");
            assert_eq!(c[0].actions.len(), 5, "mkdir, compose, .env, deploy, wait");
            assert!(
                matches!(&c[0].actions[2], Action::Upload { dest, mode: Some(0o600), .. } if dest == "/opt/s/.env")
            );
            assert_eq!(
                c[0].diff.as_ref().unwrap().before.as_deref(),
                Some("old: 1\n")
            );
        }
    }

    fn versioned(inv: &Inventory) -> SwarmStep<StackDeploy> {
        let mut s = step(inv);
        s.planner.release = Some(Release {
            version: "2.0".into(),
            migrate: Some(Job {
                service: "api".into(),
                command: "migrate".into(),
                timeout: 60,
            }),
            dump: Some(Dump {
                job: Job {
                    service: "db".into(),
                    command: "dump".into(),
                    timeout: 60,
                },
                dir: "/mnt/share/backups/demo".into(),
            }),
            rollback: true,
        });
        s
    }

    fn release_facts(stamp: &str, exists: bool, migrated: &str) -> BTreeMap<String, Facts> {
        let m = fixtures::manager("m1", "c", &[("m1", "manager-1", "manager", true, "null")]);
        let s = format!(
            "{m}== stack-deploy\n{stamp}\n== stack-exists\n{}== migrated\n{migrated}== compose\nold: 1\n",
            if exists { "demo\n" } else { "" }
        );
        [("manager-1".to_string(), Facts::new(s))]
            .into_iter()
            .collect()
    }

    /// A versioned stack migrates when it existed at another version and that version is not
    /// recorded; a fresh install records its version; a recorded version is never migrated
    /// again, even when the files are deployed again.
    #[test]
    fn a_version_is_migrated_once_and_only_on_upgrade() {
        let inv = inv();
        let s = versioned(&inv);
        let change = |f: &BTreeMap<String, Facts>| match &s.plan(f).hosts["manager-1"] {
            Ok(Check::Change(c)) => (c[0].summary.clone(), c[0].actions.len()),
            other => panic!("{other:?}"),
        };
        let upgrade = release_facts("old-hash\n1.0\n--resolve-image never", true, "");
        assert_eq!(
            change(&upgrade),
            (
                "upgrade stack demo from 1.0 to 2.0: dump the database into /mnt/share/backups/demo, deploy, migrate once, converge; roll back on failure".into(),
                5
            ),
            "mkdir, keep previous, compose, .env, release"
        );
        let Ok(Check::Change(c)) = &s.plan(&upgrade).hosts["manager-1"] else {
            panic!()
        };
        let Action::Run { script, .. } = &c[0].actions[4] else {
            panic!()
        };
        assert_eq!(
            script,
            &stack_release::release_script(
                "/opt/s",
                "demo",
                "0123456789abcdef0123",
                &s.planner.deploy,
                s.planner.release.as_ref().unwrap(),
                Todo {
                    deploy: true,
                    migrate: true,
                    record: false
                }
            )
        );
        // A fresh install: deployed and recorded, not migrated.
        assert_eq!(
            change(&release_facts("", false, "")),
            ("deploy stack demo version 2.0 (0123456789ab)".into(), 5)
        );
        // Migrated already (a re-run after a roll back by hand, say): deployed, not migrated.
        let recorded = "provision-migrated-demo-2.0\n";
        assert_eq!(
            change(&release_facts("old-hash\n1.0", true, recorded)),
            ("deploy stack demo version 2.0 (0123456789ab)".into(), 5)
        );
        // The files deployed by a provision that did not record versions: recorded only.
        assert_eq!(
            change(&release_facts("0123456789abcdef0123\n2.0", true, "")),
            ("record stack demo as migrated to version 2.0".into(), 2)
        );
        assert_eq!(
            s.plan(&release_facts("0123456789abcdef0123\n2.0", true, recorded))
                .hosts["manager-1"],
            Ok(Check::Ok(
                "stack demo up to date (0123456789ab), version 2.0".into()
            ))
        );
    }

    #[test]
    fn release_parameters_are_checked() {
        let base = "name = \"demo\"\ncompose = \"c.yml\"\n";
        let err = |extra: &str| {
            let with: toml::Table = toml::from_str(&format!("{base}{extra}")).unwrap();
            let p: Params = params(&with, KNOWN).unwrap();
            release(&p)
                .err()
                .map(|e| format!("{}: {}", e.message, e.help.unwrap_or_default()))
        };
        assert!(
            err("migrate = { service = \"api\", command = \"migrate\" }")
                .unwrap()
                .contains("`migrate` needs the stack's `version`")
        );
        assert!(
            err("version = \"1.0 beta\"")
                .unwrap()
                .contains("must be letters")
        );
        assert!(
            err("version = \"1\"\ndump = { service = \"db\", command = \"d\", dir = \"/d\" }")
                .unwrap()
                .contains("set `migrate` too")
        );
        assert_eq!(err("version = \"1.4.0\""), None);
    }

    #[test]
    fn tokens_in_stack_facts_are_secret() {
        let inv = inv();
        let f = facts("x", true);
        assert_eq!(
            step(&inv).secret_values("manager-1", &f["manager-1"]).len(),
            2
        );
    }
}
