//! The release scripts of `stack_deploy`: a versioned stack is upgraded in one run (dump the
//! database, deploy, migrate once per version, converge) and rolled back to the compose file
//! and `.env` deployed before when any part fails; `provision rollback` swaps them by hand.
//! Pure functions building POSIX sh; the decision of what a run does is in `stack_deploy`.
//!
//! Files in the stack directory: `docker-compose.yml`, `.env` (0600), `.provision-deployed`
//! (the stamp: hash of what was deployed, its version, the `docker stack deploy` flags) and
//! `previous/` (the same three, as deployed before the last change). The versions migrated
//! to are recorded on the cluster (raft), as Docker configs named by [`migrated_config`], so
//! a re-run from any manager does not migrate again.

use crate::swarm::commands;
use provision_transport::shell::quote;

/// The flags of `docker stack deploy` and the wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOptions {
    pub resolve_image: String,
    pub with_registry_auth: bool,
    pub prune: bool,
    pub wait: Option<u64>,
}

pub const STAMP: &str = ".provision-deployed";

/// Exports each `KEY=value` line of `.env` verbatim (shell builtins only: no value reaches an argv).
pub const EXPORT_ENV: &str = "while IFS= read -r l || [ -n \"$l\" ]; do case \"$l\" in ''|'#'*) continue;; esac; export \"${l%%=*}=${l#*=}\"; done < .env; ";

/// Waits until every service of the stack runs all its replicas, or fails after
/// `timeout` seconds listing the tasks that do not run and their errors.
pub fn wait_script(name: &str, timeout: u64) -> String {
    let n = quote(name);
    // Replica counts alone say 2/2 in the middle of a rolling update (the old
    // tasks still run): also wait for every service's update to complete, and
    // fail when one paused on errors. The first pause lets the updater start. Each poll starts
    // the docker CLI three times: 5 s apart, polls leave a small manager's CPU to the update.
    format!(
        "end=$(( $(date +%s) + {timeout} )); sleep 2; while :; do \
         pending=$(docker stack services {n} --format '{{{{.Name}}}} {{{{.Replicas}}}}' | awk '{{split($2, r, \"/\"); if (r[1] != r[2]) print $1 \" \" $2}}'); \
         states=$(docker stack services -q {n} | xargs -r docker service inspect --format '{{{{.Spec.Name}}}} {{{{if .UpdateStatus}}}}{{{{.UpdateStatus.State}}}} {{{{.UpdateStatus.Message}}}}{{{{end}}}}'); \
         failed=$(printf '%s\\n' \"$states\" | awk '$2 == \"paused\" || $2 == \"rollback_paused\"'); \
         if [ -n \"$failed\" ]; then echo \"service update paused on errors: $failed\" >&2; \
         docker stack ps {n} --no-trunc --format '{{{{.Name}}}} {{{{.CurrentState}}}} {{{{.Error}}}}' | grep -v ' Running ' | head -n 5 >&2 || true; exit 1; fi; \
         updating=$(printf '%s\\n' \"$states\" | awk '$2 == \"updating\" || $2 == \"rollback_started\" {{ print $1 \" \" $2 }}'); \
         [ -z \"$pending$updating\" ] && exit 0; \
         if [ \"$(date +%s)\" -ge \"$end\" ]; then echo \"services not converged after {timeout}s: $pending $updating\" >&2; \
         docker stack ps {n} --no-trunc --filter desired-state=running --format '{{{{.Name}}}} {{{{.CurrentState}}}} {{{{.Error}}}}' | grep -v ' Running ' >&2 || true; exit 1; fi; \
         sleep 5; done"
    )
}

/// A one-shot task run from a service of the stack: its image, environment, networks
/// (and mounts, for the migration), with another command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub service: String,
    pub command: String,
    pub timeout: u64,
}

/// The database dump taken before an upgrade: `command` writes the dump to its stdout, into
/// `dir`, a directory every swarm node has (the share), as `STACK-VERSION-TIME.sql` (0600).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub job: Job,
    pub dir: String,
}

/// A versioned stack: what an upgrade does around the deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub version: String,
    pub migrate: Option<Job>,
    pub dump: Option<Dump>,
    pub rollback: bool,
}

/// What this run does, decided from the facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Todo {
    /// Deploy the uploaded files (they differ from the stamp).
    pub deploy: bool,
    /// Dump, then migrate to the version (the stack existed and the version is not recorded).
    pub migrate: bool,
    /// Record the version as migrated without migrating (a fresh install of that version).
    pub record: bool,
}

/// The Docker config recording that stack `name` was migrated to `version`.
pub fn migrated_config(name: &str, version: &str) -> String {
    format!("{}{version}", migrated_prefix(name))
}

pub fn migrated_prefix(name: &str) -> String {
    format!("provision-migrated-{name}-")
}

/// The flags of `docker stack deploy`, as recorded in the stamp's third line.
pub fn deploy_flags(o: &DeployOptions) -> String {
    let mut s = String::new();
    if o.with_registry_auth {
        s.push_str("--with-registry-auth ");
    }
    s.push_str(&format!("--resolve-image {}", o.resolve_image));
    if o.prune {
        s.push_str(" --prune");
    }
    s
}

/// Shell functions both scripts use: `say`, `deploy` (the files in place, with `$flags`; up
/// to 5 attempts: a deploy right after another one, as a roll back is, can meet Docker's
/// transient "update out of sequence" while the first one's updates still run),
/// `converge` (wait for every service), `job NAME SERVICE COMMAND TIMEOUT MOUNTS [ARG...]`.
fn functions(name: &str, wait: u64) -> String {
    format!(
        "say() {{ printf '%s\\n' \"$*\" >&2; }}; \
         deploy_once() ( [ ! -f .env ] || {EXPORT_ENV}{validate}{deploy} ); \
         deploy() {{ n=1; until deploy_once; do [ \"$n\" -lt 5 ] || return 1; say \"docker stack deploy failed (attempt $n of 5): trying again in 5 s\"; n=$((n + 1)); sleep 5; done; }}; \
         converge() ( {wait} ); {JOB}",
        validate = commands::validate_compose(" || exit 1"),
        deploy = commands::stack_deploy("$flags", name),
        wait = wait_script(name, wait),
    )
}

/// `job NAME SERVICE COMMAND TIMEOUT MOUNTS [ARG...]`: COMMAND once (`sh -c`) in a one-shot
/// task with the image, environment and networks of the stack's SERVICE (and its mounts when
/// MOUNTS is `yes`); extra ARGs go to `docker service create`. The environment (secrets) goes
/// through a 0600 file, never argv. On failure: the task's state and last log lines.
const JOB: &str = "job() { j=$1; svc=${stack}_$2; cmd=$3; limit=$4; copy=$5; shift 5; \
img=$(docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' \"$svc\") || { say \"no service $svc to run $j from\"; return 1; }; \
nets=$(docker service inspect --format '{{range .Spec.TaskTemplate.Networks}}--network={{.Target}} {{end}}' \"$svc\") || return 1; \
mounts=; if [ \"$copy\" = yes ]; then mounts=$(docker service inspect --format '{{range .Spec.TaskTemplate.ContainerSpec.Mounts}}--mount=type={{.Type}},source={{.Source}},target={{.Target}} {{end}}' \"$svc\") || return 1; fi; \
(umask 077; docker service inspect --format '{{range .Spec.TaskTemplate.ContainerSpec.Env}}{{println .}}{{end}}' \"$svc\" > .job.env) || return 1; \
docker service rm \"$j\" >/dev/null 2>&1 || true; \
docker service create --quiet --detach --name \"$j\" --mode replicated-job --restart-condition none --env-file .job.env $nets $mounts \"$@\" --entrypoint sh \"$img\" -c \"$cmd\" >/dev/null; rc=$?; rm -f .job.env; \
[ \"$rc\" -eq 0 ] || { say \"$j: docker service create failed\"; return 1; }; \
end=$(( $(date +%s) + limit )); \
while :; do st=$(docker service ps \"$j\" --no-trunc --format '{{.CurrentState}} {{.Error}}' 2>/dev/null | head -n 1); \
case \"$st\" in Complete*) docker service rm \"$j\" >/dev/null 2>&1 || true; return 0;; \
Failed*|Rejected*|Shutdown*|Orphaned*) docker service logs --raw \"$j\" 2>&1 | tail -n 20 >&2; say \"$j: $st\"; docker service rm \"$j\" >/dev/null 2>&1 || true; return 1;; esac; \
if [ \"$(date +%s)\" -ge \"$end\" ]; then docker service logs --raw \"$j\" 2>&1 | tail -n 20 >&2; say \"$j: not done after ${limit}s (${st:-no task})\"; docker service rm \"$j\" >/dev/null 2>&1 || true; return 1; fi; \
sleep 2; done; }; ";

/// Before new files are uploaded: keeps what is deployed now as `previous/`, only when the
/// files in place are the ones the stamp says were deployed (a failed deploy's files are not).
/// The `previous/` it replaces waits in `.previous.old` until the release ends: a roll back
/// puts it back, so `provision rollback` afterwards still reaches the version before.
pub fn keep_previous_script(dir: &str, with_env: bool) -> String {
    let env = if with_env { "cat .env; " } else { "" };
    format!(
        "cd {d} && if [ -f {STAMP} ] && [ \"$({{ cat docker-compose.yml; printf '\\0'; {env}}} 2>/dev/null | sha256sum | cut -d' ' -f1)\" = \"$(sed -n 1p {STAMP})\" ]; then \
         rm -rf .previous.new .previous.old && mkdir -m 0700 .previous.new && cp -p docker-compose.yml {STAMP} .previous.new/ && {{ [ ! -f .env ] || cp -p .env .previous.new/; }} && {{ [ ! -d previous ] || mv previous .previous.old; }} && mv .previous.new previous; fi",
        d = quote(dir)
    )
}

/// The run of a versioned stack: dump (when migrating), deploy, migrate once, converge,
/// stamp; any failure after the dump rolls back to `previous/` and exits 1 saying what
/// happened and where the dump is.
pub fn release_script(
    dir: &str,
    name: &str,
    hash: &str,
    o: &DeployOptions,
    r: &Release,
    todo: Todo,
) -> String {
    let wait = o.wait.unwrap_or(300);
    let config_name = migrated_config(name, &r.version);
    let config = quote(&config_name);
    let mut s = format!(
        "set -e; cd {d}; stack={n}; version={v}; flags={f}; deployed=$(sed -n 2p {STAMP} 2>/dev/null || true); dump=; {fns}",
        d = quote(dir),
        n = quote(name),
        v = quote(&r.version),
        f = quote(&deploy_flags(o)),
        fns = functions(name, wait),
    );
    if r.rollback {
        s.push_str(&format!(
            "rollback() {{ say \"$1\"; \
             if [ ! -f previous/docker-compose.yml ]; then say \"no earlier deployment of stack $stack is kept in $PWD/previous to roll back to\"; \
             else back=$(sed -n 2p previous/{STAMP} 2>/dev/null || true); cp -p previous/docker-compose.yml docker-compose.yml; if [ -f previous/.env ]; then cp -p previous/.env .env; else rm -f .env; fi; \
             flags=$(sed -n 3p previous/{STAMP}); [ -n \"$flags\" ] || flags='--resolve-image never'; \
             if deploy && converge; then cp -p previous/{STAMP} {STAMP}; if [ -d .previous.old ]; then rm -rf previous; mv .previous.old previous; fi; say \"rolled back: stack $stack runs version ${{back:-?}} again, with the compose file and .env deployed before\"; \
             else say \"the roll back did not converge either: see provision status and provision ps\"; fi; fi; \
             [ -z \"$dump\" ] || say \"the database as it was before the upgrade: $dump (restore it by hand if the migration changed it)\"; exit 1; }}; "
        ));
    } else {
        s.push_str(
            "rollback() { say \"$1\"; [ -z \"$dump\" ] || say \"the database as it was before the upgrade: $dump\"; exit 1; }; ",
        );
    }
    if let (true, Some(d)) = (todo.migrate, &r.dump) {
        let command = format!(
            "umask 077; ( {} ) > \"/provision-dump/$PROVISION_DUMP.part\" && mv \"/provision-dump/$PROVISION_DUMP.part\" \"/provision-dump/$PROVISION_DUMP\"",
            d.job.command
        );
        s.push_str(&format!(
            "mkdir -p {dd} && chmod 0700 {dd}; f=\"$stack-${{deployed:-unknown}}-$(date -u +%Y%m%dT%H%M%SZ).sql\"; \
             job \"${{stack}}_provision-dump\" {svc} {cmd} {t} no --env=\"PROVISION_DUMP=$f\" {mount} \
             || {{ say \"dumping the database of stack $stack before the upgrade failed: nothing was deployed, it still runs version ${{deployed:-?}}\"; exit 1; }}; \
             dump={dd}/\"$f\"; say \"stack $stack: database dumped to $dump\"; ",
            dd = quote(&d.dir),
            svc = quote(&d.job.service),
            cmd = quote(&command),
            t = d.job.timeout,
            mount = quote(&format!(
                "--mount=type=bind,source={},target=/provision-dump",
                d.dir
            )),
        ));
    }
    if todo.deploy {
        s.push_str(
            "deploy || rollback \"deploying stack $stack version $version failed\"; say \"stack $stack: version $version deployed\"; ",
        );
    }
    let record = format!(
        "docker config inspect {config} >/dev/null 2>&1 || printf 'migrated %s\\n' \"$version\" | docker config create {config} - >/dev/null; "
    );
    if let (true, Some(m)) = (todo.migrate, &r.migrate) {
        s.push_str(&format!(
            "job \"${{stack}}_provision-migrate\" {svc} {cmd} {t} yes || rollback \"the migration of stack $stack to version $version failed\"; {record}\
             say \"stack $stack: migrated to version $version (recorded in the swarm as config {cfg})\"; ",
            svc = quote(&m.service),
            cmd = quote(&m.command),
            t = m.timeout,
            cfg = migrated_config(name, &r.version),
        ));
    }
    s.push_str("converge || rollback \"the services of stack $stack did not converge on version $version\"; ");
    if todo.record {
        s.push_str(&record);
    }
    if todo.deploy {
        s.push_str(&format!(
            "rm -rf .previous.old; printf '%s\\n' {h} \"$version\" \"$flags\" > {STAMP}",
            h = quote(hash)
        ));
    } else {
        s.push_str("true");
    }
    s
}

/// What `provision rollback` would do: the deployed and the previous version, or nothing.
pub fn rollback_facts(dir: &str) -> String {
    format!(
        "cd {d} 2>/dev/null && [ -f previous/docker-compose.yml ] && echo \"deployed=$(sed -n 2p {STAMP})\" && echo \"previous=$(sed -n 2p previous/{STAMP})\" || true",
        d = quote(dir)
    )
}

/// `provision rollback`: swaps the deployed files with `previous/`, deploys and converges; a
/// second rollback returns to where the first started.
pub fn rollback_script(dir: &str, name: &str, wait: u64) -> String {
    format!(
        "set -e; cd {d}; stack={n}; {fns}\
         [ -f previous/docker-compose.yml ] || {{ say \"no earlier deployment of stack $stack is kept in $PWD/previous: nothing to roll back to\"; exit 1; }}; \
         from=$(sed -n 2p {STAMP} 2>/dev/null || true); to=$(sed -n 2p previous/{STAMP} 2>/dev/null || true); \
         flags=$(sed -n 3p previous/{STAMP}); [ -n \"$flags\" ] || flags='--resolve-image never'; \
         rm -rf .swap; mkdir -m 0700 .swap; for f in docker-compose.yml .env {STAMP}; do [ ! -f \"$f\" ] || mv \"$f\" .swap/; done; \
         for f in docker-compose.yml .env {STAMP}; do [ ! -f \"previous/$f\" ] || mv \"previous/$f\" .; done; rm -rf previous; mv .swap previous; \
         deploy || {{ say \"deploying the previous compose file of stack $stack failed\"; exit 1; }}; \
         converge || {{ say \"the services of stack $stack did not converge on the previous version\"; exit 1; }}; \
         say \"stack $stack rolled back from version ${{from:-?}} to ${{to:-?}}; provision rollback again returns to ${{from:-?}}\"",
        d = quote(dir),
        n = quote(name),
        fns = functions(name, wait),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::testing::write_executable;
    use std::path::Path;

    /// A stand-in `docker` that logs what it is asked to do (one line per call) and answers
    /// like Docker: services of the stack converged, one-shot tasks `Complete` (or `Failed`
    /// when the job's name matches `$FAIL`), configs kept as files.
    const DOCKER: &str = r#"#!/bin/sh
log() { printf '%s\n' "$*" >> "$FAKE/log"; }
case "$1 $2" in
"stack --help") ;;
"stack deploy") if [ -n "$DEPLOY_FAILS_ONCE" ] && [ ! -f "$FAKE/failed-once" ]; then touch "$FAKE/failed-once"; echo 'failed to update service demo_web: update out of sequence' >&2; exit 1; fi
  log "deploy $(head -n 1 docker-compose.yml) .env=$(cat .env 2>/dev/null) $*";;
"stack services") if [ "$3" = -q ]; then echo id1; else echo 'demo_web 1/1'; fi;;
"service inspect") case "$4" in
    *Image*) echo "img-of-$5";;
    *Networks*) echo '--network=net1 ';;
    *Mounts*) echo '--mount=type=bind,source=/srv/up,target=/storage ';;
    *Env*) printf 'SECRET=s3cr3t\nB=2\n';;
    *) echo 'demo_web completed';;
  esac;;
"service create") log "create $(cat .job.env | tr '\n' ' ')| $*";;
"service ps") case "$3" in $FAIL) echo 'Failed 1 second ago task: non-zero exit (1)';; *) echo 'Complete 1 second ago ';; esac;;
"service logs") echo 'migration: table users cannot be altered';;
"service rm") log "rm $3";;
"config inspect") [ -f "$FAKE/config.$3" ];;
"config create") cat > "$FAKE/config.$3"; log "config $3";;
*) log "unexpected $*"; exit 1;;
esac
"#;

    fn release(dumps: &Path) -> Release {
        Release {
            version: "2.0".into(),
            migrate: Some(Job {
                service: "api".into(),
                command: "migrate --all".into(),
                timeout: 30,
            }),
            dump: Some(Dump {
                job: Job {
                    service: "db".into(),
                    command: "dump-db \"$SECRET\"".into(),
                    timeout: 30,
                },
                dir: dumps.display().to_string(),
            }),
            rollback: true,
        }
    }

    fn opts() -> DeployOptions {
        DeployOptions {
            resolve_image: "never".into(),
            with_registry_auth: true,
            prune: false,
            wait: Some(30),
        }
    }

    /// A stack directory as an earlier run left it (version 1.0, its files kept in
    /// previous/ too), with version 2.0's files uploaded in place.
    fn stack_dir(root: &Path) -> std::path::PathBuf {
        let dir = root.join("stack");
        std::fs::create_dir_all(dir.join("previous")).unwrap();
        std::fs::write(dir.join("docker-compose.yml"), "# v2\n").unwrap();
        std::fs::write(dir.join(".env"), "K=two\n").unwrap();
        std::fs::write(
            dir.join(STAMP),
            "hash1\n1.0\n--with-registry-auth --resolve-image never\n",
        )
        .unwrap();
        std::fs::write(dir.join("previous/docker-compose.yml"), "# v1\n").unwrap();
        std::fs::write(dir.join("previous/.env"), "K=one\n").unwrap();
        std::fs::write(
            dir.join("previous").join(STAMP),
            "hash1\n1.0\n--with-registry-auth --resolve-image never\n",
        )
        .unwrap();
        dir
    }

    /// Runs `script` in `dir` with the stand-in docker; exit code, stderr, the calls.
    fn run(root: &Path, dir: &Path, script: &str, fail: &str) -> (Option<i32>, String, String) {
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        write_executable(&bin.join("docker"), DOCKER);
        let out = std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(dir)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("FAKE", root)
            .env("FAIL", fail)
            .env(
                "DEPLOY_FAILS_ONCE",
                if fail == "deploy-once" { "1" } else { "" },
            )
            .output()
            .unwrap();
        let log = std::fs::read_to_string(root.join("log")).unwrap_or_default();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            log,
        )
    }

    /// The upgrade from 1.0 to 2.0 in the stack directory under `root`, dumps in `root/dumps`.
    fn upgrade(root: &Path, fail: &str) -> (Option<i32>, String, String) {
        let script = release_script(
            "stack",
            "demo",
            "hash2",
            &opts(),
            &release(&root.join("dumps")),
            UPGRADE,
        );
        run(root, root, &script, fail)
    }

    /// `err` holds `line`.
    fn says(err: &str, line: &str) {
        assert!(err.contains(line), "{line:?} not in:\n{err}");
    }

    const UPGRADE: Todo = Todo {
        deploy: true,
        migrate: true,
        record: false,
    };

    #[test]
    fn an_upgrade_dumps_deploys_migrates_once_and_records_the_version() {
        let root = tempfile::tempdir().unwrap();
        let dumps = root.path().join("dumps");
        let dir = stack_dir(root.path());
        let (code, err, log) = upgrade(root.path(), "none");
        assert_eq!(code, Some(0), "{err}\n{log}");
        // Each job first removes a leftover of an interrupted run, and itself when done.
        let calls: Vec<&str> = log.lines().collect();
        assert_eq!(calls.len(), 8, "{log}");
        assert_eq!(calls[0], "rm demo_provision-dump");
        // The dump: the database service's image, environment (from a file) and networks,
        // the dump directory mounted, the command's output into a 0600 file.
        assert!(calls[1].starts_with("create SECRET=s3cr3t B=2 | service create --quiet --detach --name demo_provision-dump --mode replicated-job --restart-condition none --env-file .job.env --network=net1 --env=PROVISION_DUMP=demo-1.0-"), "{}", calls[1]);
        assert!(
            calls[1].ends_with(&format!(".sql --mount=type=bind,source={},target=/provision-dump --entrypoint sh img-of-demo_db -c umask 077; ( dump-db \"$SECRET\" ) > \"/provision-dump/$PROVISION_DUMP.part\" && mv \"/provision-dump/$PROVISION_DUMP.part\" \"/provision-dump/$PROVISION_DUMP\"", dumps.display())),
            "{}",
            calls[1]
        );
        assert_eq!(calls[2], "rm demo_provision-dump");
        assert_eq!(
            calls[3],
            "deploy # v2 .env=K=two stack deploy -c docker-compose.yml --with-registry-auth --resolve-image never demo"
        );
        // The migration: the API's image, environment, networks and mounts.
        assert_eq!(calls[4], "rm demo_provision-migrate");
        assert_eq!(
            calls[5],
            "create SECRET=s3cr3t B=2 | service create --quiet --detach --name demo_provision-migrate --mode replicated-job --restart-condition none --env-file .job.env --network=net1 --mount=type=bind,source=/srv/up,target=/storage --entrypoint sh img-of-demo_api -c migrate --all"
        );
        assert_eq!(calls[6], "rm demo_provision-migrate");
        assert_eq!(calls[7], "config provision-migrated-demo-2.0");
        assert!(
            !dir.join(".job.env").exists(),
            "the environment file is gone"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(STAMP)).unwrap(),
            "hash2\n2.0\n--with-registry-auth --resolve-image never\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dumps).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "dumps are for root only");
        says(&err, "stack demo: database dumped to ");
        says(
            &err,
            "stack demo: migrated to version 2.0 (recorded in the swarm as config provision-migrated-demo-2.0)",
        );
    }

    #[test]
    fn a_failed_migration_rolls_back_to_the_files_deployed_before_and_names_the_dump() {
        let root = tempfile::tempdir().unwrap();
        let dumps = root.path().join("dumps");
        let dir = stack_dir(root.path());
        // As keep_previous_script leaves it: version 1.0 in previous/, 0.9 aside.
        std::fs::create_dir_all(dir.join(".previous.old")).unwrap();
        std::fs::write(dir.join(".previous.old/docker-compose.yml"), "# v0\n").unwrap();
        let (code, err, log) = upgrade(root.path(), "*migrate");
        assert_eq!(code, Some(1), "{err}\n{log}");
        let deploys: Vec<&str> = log.lines().filter(|l| l.starts_with("deploy")).collect();
        assert_eq!(
            deploys,
            [
                "deploy # v2 .env=K=two stack deploy -c docker-compose.yml --with-registry-auth --resolve-image never demo",
                "deploy # v1 .env=K=one stack deploy -c docker-compose.yml --with-registry-auth --resolve-image never demo",
            ]
        );
        assert!(
            !log.contains("config provision-migrated"),
            "a failed migration is not recorded: {log}"
        );
        assert!(
            err.contains("migration: table users cannot be altered"),
            "the job's log: {err}"
        );
        says(
            &err,
            "demo_provision-migrate: Failed 1 second ago task: non-zero exit (1)",
        );
        says(&err, "the migration of stack demo to version 2.0 failed");
        says(
            &err,
            "rolled back: stack demo runs version 1.0 again, with the compose file and .env deployed before",
        );
        says(
            &err,
            &format!(
                "the database as it was before the upgrade: {}/demo-1.0-",
                dumps.display()
            ),
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("docker-compose.yml")).unwrap(),
            "# v1\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(".env")).unwrap(),
            "K=one\n"
        );
        // The deployment before that one is previous again (kept aside during the release).
        assert_eq!(
            std::fs::read_to_string(dir.join("previous/docker-compose.yml")).unwrap(),
            "# v0\n"
        );
        assert!(!dir.join(".previous.old").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join(STAMP)).unwrap(),
            "hash1\n1.0\n--with-registry-auth --resolve-image never\n"
        );
    }

    /// Docker refusing a deploy once ("update out of sequence", as a roll back right after a
    /// deploy met on the lab) is tried again.
    #[test]
    fn a_deploy_refused_once_is_tried_again() {
        let root = tempfile::tempdir().unwrap();
        stack_dir(root.path());
        let (code, err, log) = upgrade(root.path(), "deploy-once");
        assert_eq!(code, Some(0), "{err}\n{log}");
        says(&err, "update out of sequence");
        says(
            &err,
            "docker stack deploy failed (attempt 1 of 5): trying again in 5 s",
        );
        assert_eq!(log.matches("deploy # v2").count(), 1, "{log}");
    }

    #[test]
    fn a_failed_dump_deploys_nothing() {
        let root = tempfile::tempdir().unwrap();
        stack_dir(root.path());
        let (code, err, log) = upgrade(root.path(), "*dump");
        assert_eq!(code, Some(1), "{err}\n{log}");
        assert!(!log.contains("deploy"), "{log}");
        says(
            &err,
            "dumping the database of stack demo before the upgrade failed: nothing was deployed, it still runs version 1.0",
        );
    }

    #[test]
    fn a_fresh_install_records_its_version_without_migrating() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("stack");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("docker-compose.yml"), "# v2\n").unwrap();
        let todo = Todo {
            deploy: true,
            migrate: false,
            record: true,
        };
        let script = release_script(
            "stack",
            "demo",
            "hash2",
            &opts(),
            &release(&root.path().join("dumps")),
            todo,
        );
        let (code, err, log) = run(root.path(), root.path(), &script, "none");
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            [
                "deploy # v2 .env= stack deploy -c docker-compose.yml --with-registry-auth --resolve-image never demo",
                "config provision-migrated-demo-2.0"
            ]
        );
        assert!(!root.path().join("dumps").exists());
    }

    #[test]
    fn what_is_deployed_is_kept_only_when_the_files_are_the_ones_deployed() {
        use sha2::{Digest, Sha256};
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        std::fs::write(dir.join("docker-compose.yml"), "c\n").unwrap();
        std::fs::write(dir.join(".env"), "K=v\n").unwrap();
        let hash: String = Sha256::digest(b"c\n\0K=v\n")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let keep = keep_previous_script(&dir.display().to_string(), true);
        // A failed deploy's files (the stamp names other files): nothing kept.
        std::fs::write(dir.join(STAMP), "other\n1\n").unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &keep])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(!dir.join("previous").exists());
        std::fs::write(dir.join(STAMP), format!("{hash}\n1\n")).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &keep])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            std::fs::read_to_string(dir.join("previous/.env")).unwrap(),
            "K=v\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("previous/docker-compose.yml")).unwrap(),
            "c\n"
        );
        // Kept again: the previous one waits aside until the release ends.
        let out = std::process::Command::new("sh")
            .args(["-c", &keep])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            std::fs::read_to_string(dir.join(".previous.old/docker-compose.yml")).unwrap(),
            "c\n"
        );
    }

    #[test]
    fn rollback_by_hand_swaps_and_a_second_returns() {
        let root = tempfile::tempdir().unwrap();
        let dir = stack_dir(root.path());
        std::fs::write(dir.join(STAMP), "hash2\n2.0\n--resolve-image changed\n").unwrap();
        let script = rollback_script("stack", "demo", 30);
        let (code, err, log) = run(root.path(), root.path(), &script, "none");
        assert_eq!(code, Some(0), "{err}");
        assert!(
            log.ends_with("deploy # v1 .env=K=one stack deploy -c docker-compose.yml --with-registry-auth --resolve-image never demo\n"),
            "{log}"
        );
        says(
            &err,
            "stack demo rolled back from version 2.0 to 1.0; provision rollback again returns to 2.0",
        );
        let (code, err, log) = run(root.path(), root.path(), &script, "none");
        assert_eq!(code, Some(0), "{err}");
        assert!(
            log.ends_with("deploy # v2 .env=K=two stack deploy -c docker-compose.yml --resolve-image changed demo\n"),
            "{log}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(STAMP)).unwrap(),
            "hash2\n2.0\n--resolve-image changed\n"
        );
        std::fs::remove_dir_all(dir.join("previous")).unwrap();
        let (code, err, _) = run(root.path(), root.path(), &script, "none");
        assert_eq!(code, Some(1));
        says(&err, "nothing to roll back to");
    }

    /// The wait script against a stand-in `docker` on PATH: replicas already
    /// 2/2 but the update still running, then completed (exit 0); or paused on
    /// errors (exit 1, with Docker's message).
    #[test]
    fn wait_script_waits_for_rolling_updates() {
        let run = |states: &[&str]| {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            let mut script = String::from(
                "#!/bin/sh\nn=$(cat \"$0.n\" 2>/dev/null || echo 0)\ncase \"$*\" in\n",
            );
            script.push_str("  'stack services demo --format'*) echo 'demo_web 2/2';;\n");
            script.push_str("  'stack services -q demo') echo id1;;\n  'stack ps'*) echo 'demo_web.1 Rejected No such image';;\n");
            script.push_str("  'service inspect'*) echo $((n + 1)) > \"$0.n\"; case $n in\n");
            for (i, st) in states.iter().enumerate() {
                script.push_str(&format!("    {i}) echo 'demo_web {st}';;\n"));
            }
            script.push_str(&format!(
                "    *) echo 'demo_web {}';;\n  esac;;\nesac\n",
                states.last().unwrap()
            ));
            write_executable(&dir.join("docker"), &script);
            let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
            let out = std::process::Command::new("sh")
                .args(["-c", &wait_script("demo", 60)])
                .env("PATH", path)
                .output()
                .unwrap();
            let polls: u32 = std::fs::read_to_string(dir.join("docker.n"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
                polls,
            )
        };
        let (code, _, polls) = run(&["updating", "updating", "completed update completed"]);
        assert_eq!(code, Some(0));
        assert_eq!(
            polls, 3,
            "waited for the update, not only the replica count"
        );
        let (code, err, _) = run(&["updating", "paused update paused due to failure"]);
        assert_eq!(code, Some(1));
        assert!(
            err.contains(
                "service update paused on errors: demo_web paused update paused due to failure"
            ),
            "{err}"
        );
        assert!(err.contains("No such image"), "{err}");
    }
}
