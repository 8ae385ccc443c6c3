//! Tier 2: whole `provision run` invocations of the real binary against several real
//! sshd hosts on 127.0.0.1. The hosts share this machine's filesystem, so every host
//! works under its own root directory (a host var).

mod common;
use common::text;
use provision_testkit::leaks::leaks;
use provision_testkit::{KeyPair, Netns, Sshd, SshdOptions, keygen};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Cluster {
    dir: tempfile::TempDir,
    servers: Vec<Sshd>,
    /// The namespace the servers listen in; `provision` runs there too.
    netns: Option<String>,
    key: KeyPair,
}

const PLAYBOOK: &str = r#"
[[steps]]
name = "app directory"
use = "directory"
with = { path = "{{ vars.root }}/etc/app", mode = "0750" }

[[steps]]
name = "app config"
use = "template"
with = { src = "app.conf.j2", dest = "{{ vars.root }}/etc/app/app.conf", mode = "0600" }

[[steps]]
name = "motd"
use = "copy"
with = { content = "{{ host.name }} is managed by provision\n", dest = "{{ vars.root }}/etc/motd" }

[[steps]]
name = "sysctl line"
use = "line"
with = { path = "{{ vars.root }}/etc/sysctl.conf", regexp = "^vm.swappiness", line = "vm.swappiness = 10", create = true }

[[steps]]
name = "one-time init"
use = "command"
with = { run = "date > {{ vars.root }}/etc/app/initialised", creates = "{{ vars.root }}/etc/app/initialised" }

[[steps]]
name = "packages present"
use = "apt"
with = { packages = ["openssh-server"], state = "present" }
"#;

const TEMPLATE: &str = "# {{ host.name }}\nlisten = {{ host.private_ip }}\npeers = {% for h in hosts %}{{ h.name }} {% endfor %}\ntoken = {{ secrets.app_token }}\n";
const SECRET: &str = "tok-7f3a9c-very-secret";

fn cluster(n: usize) -> Cluster {
    cluster_with(n, SshdOptions::default())
}

/// `n` hosts served by sshds started with `opts`, addressed by their listen address;
/// private addresses in the same family.
fn cluster_with(n: usize, opts: SshdOptions) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "id", "ed25519", "");
    let servers: Vec<Sshd> = (0..n).map(|_| Sshd::start_with(opts.clone())).collect();
    let private = |n: usize| {
        if opts.listen.contains(':') {
            format!("fd00::{n}")
        } else {
            format!("10.0.0.{n}")
        }
    };
    let mut kh = String::new();
    let mut hosts = String::new();
    for (i, s) in servers.iter().enumerate() {
        s.authorize(&key);
        kh.push_str(&s.known_hosts_line());
        let root = dir.path().join(format!("root-h{}", i + 1));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        hosts.push_str(&format!(
            "\n[[hosts]]\nname = \"h{n}\"\naddress = \"{address}\"\nport = {port}\nprivate_ip = \"{private}\"\nroles = [\"worker\"]\nvars = {{ root = \"{root}\" }}\n",
            n = i + 1,
            address = s.listen,
            private = private(i + 1),
            port = s.port,
            root = root.display()
        ));
    }
    std::fs::write(dir.path().join("known_hosts"), kh).unwrap();
    std::fs::write(dir.path().join("playbook.toml"), PLAYBOOK).unwrap();
    std::fs::write(dir.path().join("app.conf.j2"), TEMPLATE).unwrap();
    // Secrets made with the reference age CLI: our reader must take them as they are.
    let age_key = dir.path().join("age.key");
    run_ok(Command::new("age-keygen").arg("-o").arg(&age_key));
    let public = std::fs::read_to_string(&age_key)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .unwrap();
    let plain = dir.path().join("secrets.toml");
    std::fs::write(&plain, format!("app_token = \"{SECRET}\"\n")).unwrap();
    run_ok(
        Command::new("age")
            .args(["-a", "-r", &public, "-o"])
            .arg(dir.path().join("secrets.age"))
            .arg(&plain),
    );
    std::fs::remove_file(&plain).unwrap();
    std::fs::write(dir.path().join("secrets.recipients"), format!("{public}\n")).unwrap();
    let inventory = format!(
        "name = \"test\"\nplaybook = \"playbook.toml\"\nsecrets = \"secrets.age\"\n\n[ssh]\nuser = \"root\"\nidentity = \"{}\"\nhost_key_policy = \"strict\"\n{hosts}",
        key.private.display()
    );
    std::fs::write(dir.path().join("cluster.toml"), inventory).unwrap();
    Cluster {
        dir,
        servers,
        netns: opts.netns,
        key,
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    fn provision(&self, args: &[&str]) -> Output {
        let bin = env!("CARGO_BIN_EXE_provision");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(args)
            .env("PROVISION_IDENTITY", self.dir.path().join("age.key"))
            .env("HOME", self.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Rewrites the playbook as PLAYBOOK with `from` replaced by `to`.
    fn playbook_with(&self, from: &str, to: &str) {
        assert!(PLAYBOOK.contains(from), "{from}");
        std::fs::write(
            self.dir.path().join("playbook.toml"),
            PLAYBOOK.replace(from, to),
        )
        .unwrap();
    }

    /// Switches the cluster to `accept-new` with no known_hosts file; returns the inventory
    /// as it was (strict).
    fn trust_on_first_use(&self) -> String {
        let toml = self.dir.path().join("cluster.toml");
        let inventory = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(
            &toml,
            inventory.replace(
                "host_key_policy = \"strict\"",
                "host_key_policy = \"accept-new\"",
            ),
        )
        .unwrap();
        std::fs::remove_file(self.dir.path().join("known_hosts")).unwrap();
        inventory
    }

    fn cluster_toml(&self) -> String {
        self.dir.path().join("cluster.toml").display().to_string()
    }

    fn root(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("root-h{i}"))
    }

    /// Host results of a `--output json` run: (step, host, status).
    fn results(out: &Output) -> Vec<(String, String, String)> {
        common::host_results(out)
    }

    fn logs(&self) -> String {
        let dir = self.dir.path().join(".provision/logs");
        let mut all = String::new();
        for e in std::fs::read_dir(dir).unwrap() {
            all.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
        }
        all
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn converges_then_reports_zero_changes_and_never_leaks_the_secret() {
    let c = cluster(3);
    // Watch every process on the machine while the run goes on: no argv may hold the secret.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut samples = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
                let ps = String::from_utf8_lossy(&ps.stdout).to_string();
                samples += 1;
                if ps.contains(SECRET) {
                    seen.push(ps);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            (samples, seen)
        })
    };
    let first = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (samples, seen) = watcher.join().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    // The run logs are never committed: `.provision/` ignores everything in it.
    assert_eq!(
        std::fs::read_to_string(c.dir.path().join(".provision/.gitignore")).unwrap(),
        "# Written by provision: run logs and generated files are never committed.\n*\n"
    );
    assert!(
        samples > 3,
        "the watcher sampled the process list during the run"
    );
    assert!(
        seen.is_empty(),
        "secret seen in a process listing:\n{}",
        seen.join("\n---\n")
    );

    let results = Cluster::results(&first);
    let changed = results.iter().filter(|r| r.2 == "changed").count();
    assert_eq!(
        changed, 15,
        "5 file steps x 3 hosts change on the first run: {results:?}"
    );
    assert!(
        results
            .iter()
            .any(|r| r.0 == "packages present" && r.2 == "ok")
    );
    for i in 1..=3 {
        let conf = std::fs::read_to_string(c.root(i).join("etc/app/app.conf")).unwrap();
        assert_eq!(
            conf,
            format!("# h{i}\nlisten = 10.0.0.{i}\npeers = h1 h2 h3 \ntoken = {SECRET}\n")
        );
        assert_eq!(mode(&c.root(i).join("etc/app/app.conf")), 0o600);
        assert_eq!(mode(&c.root(i).join("etc/app")), 0o750);
        assert_eq!(
            std::fs::read_to_string(c.root(i).join("etc/motd")).unwrap(),
            format!("h{i} is managed by provision\n")
        );
        assert_eq!(
            std::fs::read_to_string(c.root(i).join("etc/sysctl.conf")).unwrap(),
            "vm.swappiness = 10\n"
        );
    }

    let second = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(second.status.success(), "{}", text(&second));
    let results = Cluster::results(&second);
    assert_eq!(results.len(), 18);
    assert!(
        results.iter().all(|r| r.2 == "ok"),
        "second run: {results:?}"
    );

    // Someone edits the file on h1 by hand: --check --diff shows the drift, with the secret
    // hidden on both sides (the current file holds it too).
    let conf = c.root(1).join("etc/app/app.conf");
    let drifted = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("listen = 10.0.0.1", "listen = 0.0.0.0");
    std::fs::write(&conf, drifted).unwrap();
    let diff = c.provision(&["run", &c.cluster_toml(), "--check", "--diff"]);
    assert!(diff.status.success(), "{}", text(&diff));
    let shown = text(&diff);
    assert!(
        shown.contains("-listen = 0.0.0.0\n") && shown.contains("+listen = 10.0.0.1\n"),
        "{shown}"
    );
    assert!(shown.contains(" token = ***\n"), "{shown}");

    // Nothing on any output path carries the secret in any encoding: stdout (JSON events),
    // stderr (terminal lines, recap, diffs), the run logs (which record every command and
    // the size of fact output, never fact output: it holds file contents base64-encoded).
    for out in [&first, &second, &diff] {
        assert_eq!(
            leaks(&text(out), SECRET),
            Vec::<String>::new(),
            "{}",
            text(out)
        );
    }
    let logs = c.logs();
    assert!(logs.contains("upload"), "the log records every command");
    assert!(logs.contains(" bytes of facts, not logged)"), "{logs}");
    // The file's current content as the gather prints it: `content=` + base64 of "# h".
    assert!(!logs.contains("content=IyBo"), "fact output in the run log");
    assert_eq!(
        leaks(&logs, SECRET),
        Vec::<String>::new(),
        "secret in the run log"
    );
}

#[test]
fn check_mode_changes_nothing_on_disk() {
    let c = cluster(2);
    let out = c.provision(&["run", &c.cluster_toml(), "--check", "--diff"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("would change"), "{t}");
    assert!(t.contains("+h1 is managed by provision"), "diff shown: {t}");
    assert!(!t.contains(SECRET), "diffs are redacted: {t}");
    for i in 1..=2 {
        let entries: Vec<_> = std::fs::read_dir(c.root(i).join("etc")).unwrap().collect();
        assert!(entries.is_empty(), "--check created files on h{i}");
    }
}

#[test]
fn a_failing_host_leaves_the_others_done() {
    let c = cluster(3);
    // On h2, a file stands where the app directory must go.
    std::fs::write(c.root(2).join("etc/app"), "in the way").unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("h2 failed in step `app directory`"), "{t}");
    for i in [1, 3] {
        assert!(
            c.root(i).join("etc/app/app.conf").exists(),
            "h{i} converged"
        );
    }
    assert!(
        !c.root(2).join("etc/motd").exists(),
        "h2 dropped out after its failure"
    );
}

/// A command past its step's `timeout` is abandoned: its host fails, naming the step and the
/// time it was given; the others go on. (The abandoned `sleep` ends on its own.)
#[test]
fn a_command_past_its_timeout_fails_its_host_and_the_run_goes_on() {
    let c = cluster(2);
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        r#"
[[steps]]
name = "hung mount"
use = "command"
hosts = "h1"
timeout = 2
with = { run = "sleep 6 && touch {{ vars.root }}/late" }

[[steps]]
name = "after"
use = "command"
with = { run = "touch {{ vars.root }}/after", creates = "{{ vars.root }}/after" }
"#,
    )
    .unwrap();
    let start = std::time::Instant::now();
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(25),
        "took {:?}",
        start.elapsed()
    );
    assert!(t.contains("h1 failed in step `hung mount`"), "{t}");
    assert!(
        t.contains("command did not finish within 2s and was stopped on the host"),
        "{t}"
    );
    assert!(t.contains("set `timeout` (seconds) on the step"), "{t}");
    assert!(c.root(2).join("after").exists(), "h2 went on");
    assert!(!c.root(1).join("after").exists(), "h1 dropped out");
    // Stopped, not abandoned: the command never gets to its `touch`.
    std::thread::sleep(std::time::Duration::from_secs(6).saturating_sub(start.elapsed()));
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        !c.root(1).join("late").exists(),
        "the command ran on after its timeout"
    );
    // The run's own limit, for steps without one.
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        "[[steps]]\nname = \"slow\"\nuse = \"command\"\nwith = { run = \"sleep 30\" }\n",
    )
    .unwrap();
    let out = c.provision(&["run", &c.cluster_toml(), "--timeout", "1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("command did not finish within 1s"), "{t}");
}

#[test]
fn an_unreachable_host_is_reported_and_the_rest_converges() {
    let mut c = cluster(2);
    c.servers[1].kill();
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("h2: unreachable"), "{t}");
    assert!(c.root(1).join("etc/app/app.conf").exists());
}

#[test]
fn limit_changes_only_the_named_host() {
    let c = cluster(2);
    let out = c.provision(&["run", &c.cluster_toml(), "--limit", "h2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!c.root(1).join("etc/motd").exists());
    assert!(c.root(2).join("etc/motd").exists());
}

const TAGGED: &str = r#"
[[steps]]
name = "check"
use = "copy"
tags = ["always"]
with = { content = "always\n", dest = "{{ vars.root }}/always" }

[[steps]]
name = "docker part"
use = "copy"
tags = ["docker", "packages"]
with = { content = "docker\n", dest = "{{ vars.root }}/docker" }

[[steps]]
name = "nfs part"
use = "copy"
tags = ["nfs"]
with = { content = "nfs\n", dest = "{{ vars.root }}/nfs" }

[[steps]]
name = "untagged part"
use = "copy"
with = { content = "untagged\n", dest = "{{ vars.root }}/untagged" }

[[steps]]
name = "debug dump"
use = "copy"
tags = ["never", "debug"]
with = { content = "debug\n", dest = "{{ vars.root }}/debug" }
"#;

impl Cluster {
    /// The files of TAGGED present on host `i`, in its order.
    fn tagged_files(&self, i: usize) -> Vec<&'static str> {
        ["always", "docker", "nfs", "untagged", "debug"]
            .into_iter()
            .filter(|f| self.root(i).join(f).exists())
            .collect()
    }

    fn remove_tagged_files(&self) {
        for i in 1..=2 {
            for f in ["always", "docker", "nfs", "untagged", "debug"] {
                let _ = std::fs::remove_file(self.root(i).join(f));
            }
        }
    }

    /// The steps a `--output json` run reported, each once, in order.
    fn steps_run(out: &Output) -> Vec<String> {
        let mut steps: Vec<String> = Vec::new();
        for (step, _, _) in Cluster::results(out) {
            if !steps.contains(&step) {
                steps.push(step);
            }
        }
        steps
    }
}

/// --tags runs only the steps carrying one of them (and `always` ones) on the hosts;
/// --skip-tags the others; --start-at-step nothing before the step named; a `never` step only
/// when asked for. An unknown tag or step name is bad input: exit 2 naming the known ones,
/// before any host is contacted.
#[test]
fn tags_skip_tags_and_start_at_step_choose_the_steps_that_run() {
    let c = cluster(2);
    std::fs::write(c.dir.path().join("playbook.toml"), TAGGED).unwrap();

    let out = c.provision(&["run", &c.cluster_toml(), "--tags", "dokcer"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("--tags: unknown tag `dokcer`\n  help: did you mean `docker`? the playbook's tags: always, debug, docker, never, nfs, packages"),
        "{t}"
    );
    let out = c.provision(&["run", &c.cluster_toml(), "--start-at-step", "nfs"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("--start-at-step: no step is named `nfs`\n  help: did you mean `nfs part`? the playbook's steps, in order: `check`, `docker part`, `nfs part`, `untagged part`, `debug dump`"),
        "{t}"
    );
    for s in &c.servers {
        assert!(
            !s.log().contains("Accepted publickey"),
            "bad input connected to a host"
        );
    }
    assert!(c.tagged_files(1).is_empty() && c.tagged_files(2).is_empty());

    let toml = c.cluster_toml();
    let run = |args: &[&str]| {
        let mut all = vec!["run", &toml, "--output", "json"];
        all.extend_from_slice(args);
        let out = c.provision(&all);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        out
    };
    let out = run(&["--tags", "docker"]);
    assert_eq!(Cluster::steps_run(&out), ["check", "docker part"]);
    for i in 1..=2 {
        assert_eq!(c.tagged_files(i), ["always", "docker"], "h{i}");
    }
    assert_eq!(
        std::fs::read_to_string(c.root(2).join("docker")).unwrap(),
        "docker\n"
    );
    c.remove_tagged_files();

    // Both forms of a list: comma-separated, and the flag repeated.
    let out = run(&["--skip-tags", "docker,nfs", "--skip-tags", "always"]);
    assert_eq!(Cluster::steps_run(&out), ["untagged part"]);
    for i in 1..=2 {
        assert_eq!(c.tagged_files(i), ["untagged"], "h{i}");
    }
    c.remove_tagged_files();

    let out = run(&["--start-at-step", "nfs part"]);
    assert_eq!(Cluster::steps_run(&out), ["nfs part", "untagged part"]);
    for i in 1..=2 {
        assert_eq!(c.tagged_files(i), ["nfs", "untagged"], "h{i}");
    }
    c.remove_tagged_files();

    // `never` runs when one of its tags is asked for; --check with tags changes nothing.
    let out = run(&["--tags", "debug", "--check"]);
    assert_eq!(Cluster::steps_run(&out), ["check", "debug dump"]);
    assert!(c.tagged_files(1).is_empty(), "--check changed a file");
    let out = run(&["--tags", "debug,packages", "--limit", "h2"]);
    assert_eq!(
        Cluster::steps_run(&out),
        ["check", "docker part", "debug dump"]
    );
    assert!(c.tagged_files(1).is_empty(), "--limit h2 changed h1");
    assert_eq!(c.tagged_files(2), ["always", "docker", "debug"]);
    // With no selection, every step but the `never` one.
    let out = run(&[]);
    assert_eq!(
        Cluster::steps_run(&out),
        ["check", "docker part", "nfs part", "untagged part"]
    );
    assert_eq!(c.tagged_files(1), ["always", "docker", "nfs", "untagged"]);
}

/// --list-steps prints the steps that would run, in order, with their tags and the hosts they
/// run on (a looped step once per item, a `when` false on a host leaving it out), from the
/// configuration alone: with every host down it still works, and writes nothing.
#[test]
fn list_steps_names_what_would_run_and_touches_no_host() {
    let mut c = cluster(2);
    let playbook = format!(
        "{TAGGED}\n[[steps]]\nname = \"fruit\"\nuse = \"copy\"\ntags = [\"fruit\"]\nloop = [\"apple\", \"pear\"]\nwhen = \"item == 'apple' or host.name == 'h2'\"\nwith = {{ content = \"{{{{ item }}}}\\n\", dest = \"{{{{ vars.root }}}}/{{{{ item }}}}\" }}\n"
    );
    std::fs::write(c.dir.path().join("playbook.toml"), playbook).unwrap();
    for s in &mut c.servers {
        s.kill();
    }
    let out = c.provision(&["run", &c.cluster_toml(), "--list-steps"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "STEP           TAGS             HOSTS\n\
         check          always           h1,h2\n\
         docker part    docker,packages  h1,h2\n\
         nfs part       nfs              h1,h2\n\
         untagged part  -                h1,h2\n\
         fruit (apple)  fruit            h1,h2\n\
         fruit (pear)   fruit            h2\n"
    );
    assert!(
        t.contains("6 step(s) would run; nothing was changed and no host contacted"),
        "{t}"
    );
    let out = c.provision(&[
        "run",
        &c.cluster_toml(),
        "--check",
        "--list-steps",
        "--tags",
        "fruit,debug",
        "--skip-tags",
        "always",
        "--limit",
        "h1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "STEP           TAGS         HOSTS\n\
         debug dump     never,debug  h1\n\
         fruit (apple)  fruit        h1\n"
    );
    // Bad input is still bad input.
    let out = c.provision(&["run", &c.cluster_toml(), "--list-steps", "--tags", "web"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        !c.dir.path().join(".provision").exists(),
        "--list-steps wrote next to the cluster file"
    );
}

/// A loop over vars makes one file per item with the item's content, each reported as its own
/// result under the step's name and the item; a second run changes nothing. A loop over what
/// is not a list, and `item` in a step without a loop, are bad input: exit 2 at the line and
/// column, nothing run.
#[test]
fn a_loop_makes_one_file_per_item_reported_per_item_and_converges() {
    let c = cluster(2);
    let inventory = c.dir.path().join("cluster.toml");
    let mut text_in = std::fs::read_to_string(&inventory).unwrap();
    text_in.push_str(
        "\n[vars]\nuser_name = \"alice\"\nusers = [{ name = \"alice\", uid = 1001 }, { name = \"bob\", uid = 1002 }]\n",
    );
    std::fs::write(&inventory, text_in).unwrap();
    let playbook = r#"
[[steps]]
name = "user file"
use = "copy"
loop = "{{ vars.users }}"
loop_var = "u"
with = { content = "{{ u.name }} has uid {{ u.uid }} on {{ host.name }}\n", dest = "{{ vars.root }}/{{ u.name }}.user" }

[[steps]]
name = "fruit"
use = "copy"
loop = ["apple", "pear"]
when = "item == 'apple' or host.name == 'h2'"
with = { content = "{{ item }}\n", dest = "{{ vars.root }}/{{ item }}" }
"#;
    let pb = c.dir.path().join("playbook.toml");

    for (bad, at, message) in [
        (
            playbook.replace("{{ vars.users }}", "{{ vars.user_name }}"),
            "playbook.toml:5:8:",
            "step `user file`: `loop` must give a list, and `vars.user_name` is a string (\"alice\")",
        ),
        (
            playbook.replace("loop = [\"apple\", \"pear\"]\n", ""),
            "playbook.toml:12:8:",
            "`when`: step `fruit` reads `item`, but it has no `loop`",
        ),
        (
            playbook.replace("loop = [\"apple\", \"pear\"]", "loop = 3"),
            "playbook.toml:12:8:",
            "`loop` in step `fruit` must be a list, not an integer",
        ),
        (
            playbook.replace("loop_var = \"u\"", "loop_var = \"\""),
            "playbook.toml:6:12:",
            "`loop_var` in step `user file` must not be empty",
        ),
    ] {
        std::fs::write(&pb, bad).unwrap();
        let out = c.provision(&["run", &c.cluster_toml()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(t.contains(&format!("{at} error: {message}")), "{t}");
    }
    for s in &c.servers {
        assert!(
            !s.log().contains("Accepted publickey"),
            "bad input connected"
        );
    }
    assert!(!c.root(1).join("alice.user").exists());

    std::fs::write(&pb, playbook).unwrap();
    let first = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(first.status.success(), "{}", text(&first));
    let mut results = Cluster::results(&first);
    results.sort();
    let r = |step: &str, host: &str, status: &str| (step.into(), host.into(), status.into());
    assert_eq!(
        results,
        vec![
            r("fruit (apple)", "h1", "changed"),
            r("fruit (apple)", "h2", "changed"),
            r("fruit (pear)", "h1", "skipped"),
            r("fruit (pear)", "h2", "changed"),
            r("user file (alice)", "h1", "changed"),
            r("user file (alice)", "h2", "changed"),
            r("user file (bob)", "h1", "changed"),
            r("user file (bob)", "h2", "changed"),
        ]
    );
    for i in 1..=2 {
        assert_eq!(
            std::fs::read_to_string(c.root(i).join("alice.user")).unwrap(),
            format!("alice has uid 1001 on h{i}\n")
        );
        assert_eq!(
            std::fs::read_to_string(c.root(i).join("bob.user")).unwrap(),
            format!("bob has uid 1002 on h{i}\n")
        );
        assert_eq!(
            std::fs::read_to_string(c.root(i).join("apple")).unwrap(),
            "apple\n"
        );
    }
    assert!(!c.root(1).join("pear").exists());
    assert_eq!(
        std::fs::read_to_string(c.root(2).join("pear")).unwrap(),
        "pear\n"
    );
    let second = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(second.status.success(), "{}", text(&second));
    let results = Cluster::results(&second);
    assert_eq!(results.len(), 8);
    assert!(
        results.iter().all(|r| r.2 == "ok" || r.2 == "skipped"),
        "second run: {results:?}"
    );
    // The terminal names each repetition too.
    let check = c.provision(&["run", &c.cluster_toml(), "--check", "-v"]);
    let t = text(&check);
    assert!(check.status.success(), "{t}");
    assert!(t.contains("user file (bob)"), "{t}");
}

#[test]
fn bad_inventory_exits_2_naming_file_line_and_column_and_runs_nothing() {
    let c = cluster(1);
    let path = c.dir.path().join("cluster.toml");
    let text_in = std::fs::read_to_string(&path)
        .unwrap()
        .replace("address =", "adress =");
    std::fs::write(&path, text_in).unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("cluster.toml:")
            && t.contains("unknown key `adress`")
            && t.contains("did you mean `address`"),
        "{t}"
    );
    assert!(
        !c.servers[0].log().contains("Accepted publickey"),
        "nothing connected"
    );
}

#[test]
fn bad_playbook_parameter_exits_2_at_its_line() {
    let c = cluster(1);
    let pb = c.dir.path().join("playbook.toml");
    std::fs::write(&pb, PLAYBOOK.replace("mode = \"0750\"", "mdoe = \"0750\"")).unwrap();
    let out = c.provision(&["check-config", &c.cluster_toml()]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("playbook.toml:5:")
            && t.contains("unknown parameter `mdoe`")
            && t.contains("did you mean `mode`"),
        "{t}"
    );
}

#[test]
fn a_secret_on_a_command_line_is_refused_and_stdin_is_the_way() {
    let c = cluster(1);
    c.playbook_with("run = \"date > ", "run = \"echo {{ secrets.app_token }} > ");
    for cmd in ["check-config", "run"] {
        let out = c.provision(&[cmd, &c.cluster_toml()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", text(&out));
        let t = text(&out);
        assert!(
            t.contains("playbook.toml:25:10")
                && t.contains("`run` holds a secret, and `run` becomes part of a command line")
                && t.contains("stdin = \"{{ secrets.NAME }}\""),
            "{cmd}: {t}"
        );
        assert!(!t.contains(SECRET), "{t}");
    }
    assert!(
        !c.root(1).join("etc/app").exists(),
        "a refused playbook changes nothing"
    );
    // The same secret on stdin is fine: the script reads it, argv never holds it.
    c.playbook_with(
        "run = \"date > ",
        "stdin = \"{{ secrets.app_token }}\", run = \"cat > ",
    );
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(c.root(1).join("etc/app/initialised")).unwrap(),
        SECRET
    );
}

#[test]
fn files_holding_secrets_are_private_unless_a_mode_says_otherwise() {
    let c = cluster(1);
    // No `mode` on the template that renders the secret: created 0600.
    c.playbook_with(
        "dest = \"{{ vars.root }}/etc/app/app.conf\", mode = \"0600\"",
        "dest = \"{{ vars.root }}/etc/app/app.conf\"",
    );
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(mode(&c.root(1).join("etc/app/app.conf")), 0o600);
    // A mode that lets everyone read it: a warning at the parameter, naming the step.
    c.playbook_with("mode = \"0600\"", "mode = \"0644\"");
    let out = c.provision(&["check-config", &c.cluster_toml()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("playbook.toml:10:")
            && t.contains("step `app config`:")
            && t.contains("holds a secret, and mode 0644 lets every user of the host read it")
            && t.contains("1 warning(s)"),
        "{t}"
    );
}

#[test]
fn keys_trusted_on_first_use_are_named_with_their_fingerprints() {
    let c = cluster(2);
    c.trust_on_first_use();
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for h in ["h1", "h2"] {
        assert!(
            t.contains(&format!("trusted a new host key for {h}: SHA256:")),
            "{t}"
        );
    }
    // Known now: the next run trusts nothing new.
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert!(out.status.success());
    assert!(!text(&out).contains("trusted a new host key"));
}

#[test]
fn an_ipv6_host_is_reached_pinned_and_configured() {
    // sshd on ::1 in a namespace of the test's own; the inventory gives IPv6 addresses.
    let ns = Netns::create();
    let c = cluster_with(
        2,
        SshdOptions {
            listen: "::1",
            netns: Some(ns.name.clone()),
            ..Default::default()
        },
    );
    let toml = c.dir.path().join("cluster.toml");
    let inventory = c.trust_on_first_use();
    assert!(inventory.contains("address = \"::1\""), "{inventory}");
    let known_hosts = c.dir.path().join("known_hosts");
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // Recorded as OpenSSH records them (`ssh -p PORT ::1`), and only those.
    let mut recorded: Vec<String> = std::fs::read_to_string(&known_hosts)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    recorded.sort();
    let mut expected: Vec<String> = c.servers.iter().map(|s| s.known_hosts_line()).collect();
    expected.sort();
    assert_eq!(recorded, expected);
    assert!(expected[0].starts_with("[::1]:"), "{expected:?}");
    for i in 1..=2 {
        let conf = std::fs::read_to_string(c.root(i).join("etc/app/app.conf")).unwrap();
        assert!(conf.contains(&format!("listen = fd00::{i}\n")), "{conf}");
    }
    // Pinned: the next run under the strict policy reaches both and changes nothing.
    std::fs::write(&toml, &inventory).unwrap();
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let results = Cluster::results(&out);
    assert!(!results.is_empty());
    assert!(
        results.iter().all(|(_, _, status)| status == "ok"),
        "{results:?}"
    );
    // Through a bastion written as OpenSSH takes it, a bare IPv6 address on port 22.
    let bastion = Sshd::start_with(SshdOptions {
        listen: "::1",
        netns: Some(ns.name.clone()),
        port: Some(22),
        extra_config: "LogLevel DEBUG1".into(),
        ..Default::default()
    });
    bastion.authorize(&c.key);
    std::fs::write(
        &toml,
        inventory.replace(
            "host_key_policy = \"strict\"",
            "host_key_policy = \"accept-new\"\nproxy_jump = \"root@::1\"",
        ),
    )
    .unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert!(out.status.success(), "{}", text(&out));
    let pinned = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(
        pinned.contains(&format!("\n::1 {}\n", bastion.host_keys[0])),
        "the bastion on port 22 is recorded as `::1`: {pinned}"
    );
    for s in &c.servers {
        assert!(
            bastion.log().contains(&format!("port {}", s.port)),
            "the bastion must forward to {}: {}",
            s.port,
            bastion.log()
        );
    }
}

#[test]
fn a_key_added_to_the_recipients_file_is_warned_about_by_check_config() {
    let c = cluster(1);
    // A write by provision records the recipients inside the encrypted file.
    let mut set = Command::new(env!("CARGO_BIN_EXE_provision"));
    set.args(["secrets", "set", "secrets.age", "other_token"])
        .env("PROVISION_IDENTITY", c.dir.path().join("age.key"))
        .current_dir(c.dir.path())
        .stdin(std::process::Stdio::piped());
    let mut child = set.spawn().unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"other-value-123")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let out = c.provision(&["check-config", &c.cluster_toml()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("recipients file changed"),
        "{}",
        text(&out)
    );
    // Someone slips a key in.
    let extra = c.dir.path().join("extra.key");
    run_ok(Command::new("age-keygen").arg("-o").arg(&extra));
    let public = std::fs::read_to_string(&extra)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .unwrap();
    let recipients = c.dir.path().join("secrets.recipients");
    let mut list = std::fs::read_to_string(&recipients).unwrap();
    list.push_str(&format!("{public}\n"));
    std::fs::write(&recipients, list).unwrap();
    let out = c.provision(&["check-config", &c.cluster_toml()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("warning: ")
            && t.contains(
                "the recipients file changed since the secrets were last written (added age1"
            )
            && t.contains("provision secrets rotate --yes"),
        "{t}"
    );
}

#[test]
fn shell_runs_everywhere_and_groups_output() {
    let c = cluster(2);
    let out = c.provision(&["shell", &c.cluster_toml(), "--", "echo", "hi;", "exit", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("== h1 (exit status 0)\nhi\n")
            && stdout.contains("== h2 (exit status 0)\nhi\n"),
        "{stdout}"
    );
}

#[test]
fn ctrl_c_lets_running_commands_finish_then_stops_with_a_recap() {
    interrupted_run(2);
}

/// SIGTERM (systemd, CI, `kill`) stops as gently as Ctrl-C.
#[test]
fn sigterm_stops_like_ctrl_c() {
    interrupted_run(15);
}

fn interrupted_run(signal: i32) {
    let c = cluster(2);
    let pb = c.dir.path().join("slow.toml");
    std::fs::write(
        &pb,
        "[[steps]]\nname = \"slow\"\nuse = \"command\"\nwith = { run = \"sleep 2; touch {{ vars.root }}/slow-done\" }\n\n\
         [[steps]]\nname = \"after\"\nuse = \"command\"\nwith = { run = \"touch {{ vars.root }}/after-done\" }\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args([
            "run",
            &c.cluster_toml(),
            "--playbook",
            &pb.display().to_string(),
        ])
        .env("PROVISION_IDENTITY", c.dir.path().join("age.key"))
        .env("HOME", c.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt while the slow step runs (generous: a loaded machine is slow to get there).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let pattern = format!("sleep 2; touch {}", c.root(1).display());
    while !Command::new("pgrep")
        .args(["-f", &pattern])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow step never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: signalling the child we spawned.
    unsafe { kill(child.id() as i32, signal) };
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(130), "{t}");
    assert!(t.contains("interrupt"), "{t}");
    assert!(
        t.contains("HOST") && t.contains("h1") && t.contains("h2"),
        "recap printed: {t}"
    );
    for i in 1..=2 {
        assert!(
            c.root(i).join("slow-done").exists(),
            "the running command finished on h{i}"
        );
        assert!(
            !c.root(i).join("after-done").exists(),
            "no new step started on h{i}"
        );
    }
}

/// `provision facts`: each step's fact output per host and its decision, nothing changed; with
/// `--save`, one JSON file per step and host, cleaned of secrets like everything printed.
#[test]
fn facts_shows_what_each_step_reads_and_decides_and_changes_nothing() {
    let c = cluster(2);
    let saved = c.dir.path().join("captured");
    let out = c.provision(&[
        "facts",
        &c.cluster_toml(),
        "--step",
        "app",
        "--host",
        "h1",
        "--save",
        saved.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("== app directory\n-- h1 (exit 0)\nkind=absent\n"),
        "{t}"
    );
    assert!(t.contains("would change: create directory"), "{t}");
    assert!(!t.contains("-- h2"), "only the hosts asked for: {t}");
    assert!(!t.contains("== motd"), "only the steps asked for: {t}");
    // Read only.
    assert!(!c.root(1).join("etc/app").exists());
    let f: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(saved.join("01-app-directory/h1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(f["step"], "app directory");
    assert_eq!(f["host"], "h1");
    assert_eq!(f["exit_status"], 0);
    assert_eq!(f["stdout"], "kind=absent\n");
    assert!(f["command"].as_str().unwrap().starts_with("p="), "{f}");
    // After a run: nothing to do, and the secret in the rendered config never reaches a file.
    assert!(c.provision(&["run", &c.cluster_toml()]).status.success());
    let out = c.provision(&[
        "facts",
        &c.cluster_toml(),
        "--step",
        "app config",
        "--save",
        saved.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(t.contains("nothing to do"), "{t}");
    for h in ["h1", "h2"] {
        let f = std::fs::read_to_string(saved.join(format!("02-app-config/{h}.json"))).unwrap();
        assert!(!f.contains(SECRET), "{f}");
        assert!(
            provision_testkit::leaks::leaks(&f, SECRET).is_empty(),
            "the secret in an encoded form: {f}"
        );
    }
}

/// Appends `extra` (groups, [vars]) to the cluster file.
fn add_to_inventory(c: &Cluster, extra: &str) {
    let path = c.dir.path().join("cluster.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
}

/// Adds `var` (`key = value`) to host h`i`'s own vars.
fn add_host_var(c: &Cluster, i: usize, var: &str) {
    let path = c.dir.path().join("cluster.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let root = format!("root-h{i}\" }}");
    assert!(text.contains(&root), "{text}");
    std::fs::write(
        &path,
        text.replace(&root, &format!("root-h{i}\", {var} }}")),
    )
    .unwrap();
}

/// A group's vars reach the templates of exactly its hosts, over [vars]; a host's own var
/// overrides the group's.
#[test]
fn a_group_var_reaches_its_hosts_and_a_host_var_overrides_it() {
    let c = cluster(3);
    add_to_inventory(
        &c,
        "\n[vars]\ngreeting = \"global\"\n\n[groups.web]\nhosts = [\"h1\", \"h2\"]\nvars = { greeting = \"from-web\" }\n",
    );
    add_host_var(&c, 2, "greeting = \"from-h2\"");
    std::fs::write(
        c.dir.path().join("greet.j2"),
        "{{ vars.greeting }} on {{ host.name }}, groups [{{ host.groups | join(',') }}]\n",
    )
    .unwrap();
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        "[[steps]]\nname = \"greeting\"\nuse = \"template\"\nwith = { src = \"greet.j2\", dest = \"{{ vars.root }}/etc/greeting\" }\n",
    )
    .unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert!(out.status.success(), "{}", text(&out));
    let greeting = |i: usize| std::fs::read_to_string(c.root(i).join("etc/greeting")).unwrap();
    assert_eq!(greeting(1), "from-web on h1, groups [web]\n");
    assert_eq!(greeting(2), "from-h2 on h2, groups [web]\n");
    assert_eq!(greeting(3), "global on h3, groups []\n");
}

/// `--limit 'web:&prod'`: only the host in both groups changes.
#[test]
fn limit_with_an_intersection_of_groups_changes_only_the_host_in_both() {
    let c = cluster(3);
    add_to_inventory(
        &c,
        "\n[groups.web]\nhosts = [\"h1\", \"h2\"]\n\n[groups.prod]\nhosts = [\"h2\", \"h3\"]\n",
    );
    let out = c.provision(&["run", &c.cluster_toml(), "--limit", "web:&prod"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(c.root(2).join("etc/motd").exists(), "h2 is in web and prod");
    for i in [1, 3] {
        let entries: Vec<_> = std::fs::read_dir(c.root(i).join("etc")).unwrap().collect();
        assert!(entries.is_empty(), "h{i} is outside the limit: {entries:?}");
    }
    // A misspelt group in --limit: bad input, with the nearest name, and nothing runs.
    let out = c.provision(&["run", &c.cluster_toml(), "--limit", "web:&prdo"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("--limit web:&prdo: unknown group or host `prdo` (did you mean `prod`?)"),
        "{t}"
    );
    assert!(!c.root(1).join("etc/motd").exists());
}

/// An unknown group in a step's `hosts`: exit 2 at the value's line and column, with the
/// nearest group, before anything connects.
#[test]
fn an_unknown_group_in_a_steps_hosts_exits_2_at_its_position_and_runs_nothing() {
    let c = cluster(2);
    add_to_inventory(&c, "\n[groups.web]\nhosts = [\"h1\"]\n");
    c.playbook_with(
        "name = \"motd\"\nuse = \"copy\"\n",
        "name = \"motd\"\nuse = \"copy\"\nhosts = \"wbe,!h2\"\n",
    );
    for cmd in ["check-config", "run"] {
        let out = c.provision(&[cmd, &c.cluster_toml()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {t}");
        assert!(
            t.contains("playbook.toml:15:9: error: step `motd`: `hosts` names an unknown group or host: `wbe` (did you mean `web`?)"),
            "{cmd}: {t}"
        );
    }
    for s in &c.servers {
        assert!(
            !s.log().contains("Accepted publickey"),
            "nothing connected: {}",
            s.log()
        );
    }
    for i in 1..=2 {
        let entries: Vec<_> = std::fs::read_dir(c.root(i).join("etc")).unwrap().collect();
        assert!(entries.is_empty(), "h{i} was changed: {entries:?}");
    }
}

/// A false assert fails its host with fail_msg, a `fail` step fails the hosts its `when`
/// picks, the run exits 1, and the other hosts finish every step.
#[test]
fn a_failing_assert_fails_its_host_with_the_message_and_the_others_finish() {
    let c = cluster(3);
    add_to_inventory(
        &c,
        "\n[vars]\nreplicas = 2\n\n[groups.frozen]\nhosts = [\"h3\"]\n",
    );
    add_host_var(&c, 2, "replicas = 0");
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        r#"
[[steps]]
name = "replicas"
use = "assert"
with = { that = ["vars.replicas is defined", "vars.replicas > 0"], fail_msg = "replicas must be positive, not {{ vars.replicas }}", success_msg = "{{ vars.replicas }} replicas" }

[[steps]]
name = "not frozen"
use = "fail"
when = "'frozen' in host.groups"
with = { msg = "{{ host.name }} is frozen" }

[[steps]]
name = "motd"
use = "copy"
with = { content = "{{ host.name }} done\n", dest = "{{ vars.root }}/etc/motd" }
"#,
    )
    .unwrap();
    let out = c.provision(&["run", &c.cluster_toml(), "--verbose"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("h2 failed in step `replicas`"), "{t}");
    assert!(t.contains("replicas must be positive, not 0"), "{t}");
    assert!(t.contains("`vars.replicas > 0` is false"), "{t}");
    assert!(t.contains("h3 failed in step `not frozen`"), "{t}");
    assert!(t.contains("h3 is frozen"), "{t}");
    assert!(
        t.contains("2 replicas"),
        "the success message is shown: {t}"
    );
    assert_eq!(
        std::fs::read_to_string(c.root(1).join("etc/motd")).unwrap(),
        "h1 done\n"
    );
    for i in [2, 3] {
        assert!(
            !c.root(i).join("etc/motd").exists(),
            "h{i} dropped out after its failure"
        );
    }
}

/// Handlers: a config step notifies `restart app`, a second step both handlers (in the reverse
/// of their declaration order); a command step fails on a host that has a `break` file.
const HANDLERS_PLAYBOOK: &str = r#"
[[steps]]
name = "app config"
use = "copy"
with = { content = "v1\n", dest = "{{ vars.root }}/etc/app.conf" }
notify = "restart app"

[[steps]]
name = "app unit"
use = "copy"
with = { content = "unit\n", dest = "{{ vars.root }}/etc/app.unit" }
notify = ["restart app", "reload proxy"]

[[steps]]
name = "breaks where asked"
use = "command"
with = { run = "test ! -e {{ vars.root }}/break", unless = "test ! -e {{ vars.root }}/break" }

[[handlers]]
name = "reload proxy"
use = "command"
with = { run = "echo reload >> {{ vars.root }}/handlers.log" }

[[handlers]]
name = "restart app"
use = "command"
with = { run = "echo restart >> {{ vars.root }}/handlers.log" }
"#;

/// `n` hosts running `playbook`, each keeping its pending notifications under its own root (the
/// hosts share this machine's filesystem).
fn handlers_cluster(n: usize, playbook: &str) -> Cluster {
    let c = cluster(n);
    std::fs::write(c.dir.path().join("playbook.toml"), playbook).unwrap();
    let toml = c.dir.path().join("cluster.toml");
    let mut inventory = std::fs::read_to_string(&toml).unwrap();
    for i in 1..=n {
        let root = c.root(i).display().to_string();
        inventory = inventory.replace(
            &format!("vars = {{ root = \"{root}\" }}"),
            &format!(
                "vars = {{ root = \"{root}\", pending_handlers_file = \"{root}/var/lib/provision/pending-handlers\" }}"
            ),
        );
    }
    assert_eq!(inventory.matches("pending_handlers_file").count(), n);
    std::fs::write(&toml, inventory).unwrap();
    c
}

impl Cluster {
    fn pending(&self, i: usize) -> PathBuf {
        self.root(i).join("var/lib/provision/pending-handlers")
    }

    fn handlers_log(&self, i: usize) -> Option<String> {
        std::fs::read_to_string(self.root(i).join("handlers.log")).ok()
    }

    /// (handler, host, status) of the handler results of a `--output json` run.
    fn handler_results(out: &Output) -> Vec<(String, String, String)> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "host_result" && v["handler"] == true)
            .map(|v| {
                (
                    v["step"].as_str().unwrap().into(),
                    v["host"].as_str().unwrap().into(),
                    v["status"].as_str().unwrap().into(),
                )
            })
            .collect()
    }
}

fn triple(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

#[test]
fn handlers_run_once_where_a_notifying_step_changed_and_not_on_a_no_change_run() {
    let c = handlers_cluster(2, HANDLERS_PLAYBOOK);
    // h2 already has both files: nothing changes there.
    std::fs::write(c.root(2).join("etc/app.conf"), "v1\n").unwrap();
    std::fs::write(c.root(2).join("etc/app.unit"), "unit\n").unwrap();
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    // Declaration order, once each although `restart app` was notified by both steps.
    assert_eq!(
        Cluster::handler_results(&out),
        [
            triple("reload proxy", "h1", "changed"),
            triple("restart app", "h1", "changed")
        ]
    );
    assert_eq!(c.handlers_log(1).as_deref(), Some("reload\nrestart\n"));
    assert_eq!(c.handlers_log(2), None, "nothing changed on h2");
    assert!(!c.pending(1).exists(), "handled: nothing left pending");
    assert_eq!(
        std::fs::read_dir(c.pending(1).parent().unwrap())
            .unwrap()
            .count(),
        0,
        "no temporary file left"
    );

    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(Cluster::handler_results(&out), []);
    assert!(Cluster::results(&out).iter().all(|r| r.2 == "ok"));
    assert_eq!(c.handlers_log(1).as_deref(), Some("reload\nrestart\n"));
    // Still one command per host: the pending file is read in the fact batch.
    let newest = std::fs::read_dir(c.dir.path().join(".provision/logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let log = std::fs::read_to_string(newest).unwrap();
    for h in ["h1", "h2"] {
        let commands: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("] {h} [")) && l.contains(" exit="))
            .collect();
        assert_eq!(commands.len(), 1, "{h}: {log}");
    }
    assert!(log.contains("pending-handlers; if [ -f"), "{log}");

    // --check: the handler a drift would notify is reported, nothing runs or is kept.
    std::fs::write(c.root(1).join("etc/app.conf"), "v0\n").unwrap();
    let out = c.provision(&["run", &c.cluster_toml(), "--check"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("handler: restart app (1 hosts)"), "{t}");
    assert!(t.contains("h1: would change handler restart app"), "{t}");
    assert!(
        !t.contains("reload proxy"),
        "only what the drift notifies: {t}"
    );
    assert_eq!(c.handlers_log(1).as_deref(), Some("reload\nrestart\n"));
    assert!(!c.pending(1).exists());
    assert_eq!(
        std::fs::read_to_string(c.root(1).join("etc/app.conf")).unwrap(),
        "v0\n"
    );
}

#[test]
fn flush_handlers_runs_the_notified_handlers_mid_play() {
    let playbook = r#"
[[steps]]
name = "app config"
use = "copy"
with = { content = "v1\n", dest = "{{ vars.root }}/etc/app.conf" }
notify = "restart app"

[[steps]]
use = "flush_handlers"

[[steps]]
name = "after the flush"
use = "command"
with = { run = "cp {{ vars.root }}/handlers.log {{ vars.root }}/seen-after-flush", creates = "{{ vars.root }}/seen-after-flush" }

[[handlers]]
name = "restart app"
use = "command"
with = { run = "echo restart >> {{ vars.root }}/handlers.log" }
"#;
    let c = handlers_cluster(1, playbook);
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(c.root(1).join("seen-after-flush")).unwrap(),
        "restart\n",
        "the handler ran before the next step"
    );
    assert_eq!(
        c.handlers_log(1).as_deref(),
        Some("restart\n"),
        "and not again at the end"
    );
    assert_eq!(
        Cluster::handler_results(&out),
        [triple("restart app", "h1", "changed")]
    );
}

#[test]
fn a_run_that_fails_after_the_change_leaves_the_handler_pending_on_the_host_for_the_next_run() {
    let c = handlers_cluster(2, HANDLERS_PLAYBOOK);
    std::fs::write(c.root(1).join("break"), "").unwrap();
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // h1 failed after its changes: no handler ran there, and the host keeps both notifications
    // in a private file; h2 ran its handlers and keeps nothing.
    assert_eq!(
        Cluster::handler_results(&out),
        [
            triple("reload proxy", "h2", "changed"),
            triple("restart app", "h2", "changed")
        ]
    );
    assert_eq!(c.handlers_log(1), None);
    assert_eq!(
        std::fs::read_to_string(c.pending(1)).unwrap(),
        "reload proxy\nrestart app\n"
    );
    assert_eq!(mode(&c.pending(1)), 0o600);
    assert_eq!(mode(c.pending(1).parent().unwrap()), 0o700);
    assert!(!c.pending(2).exists());

    // Fixed: nothing of the playbook changes any more, yet h1's handlers run, once, in order,
    // and only then is the file removed.
    std::fs::remove_file(c.root(1).join("break")).unwrap();
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        Cluster::results(&out)
            .iter()
            .filter(|r| !r.0.starts_with("re"))
            .all(|r| r.2 == "ok"),
        "{:?}",
        Cluster::results(&out)
    );
    assert_eq!(
        Cluster::handler_results(&out),
        [
            triple("reload proxy", "h1", "changed"),
            triple("restart app", "h1", "changed")
        ]
    );
    assert_eq!(c.handlers_log(1).as_deref(), Some("reload\nrestart\n"));
    assert_eq!(c.handlers_log(2).as_deref(), Some("reload\nrestart\n"));
    assert!(!c.pending(1).exists());

    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(Cluster::handler_results(&out), []);
    assert_eq!(c.handlers_log(1).as_deref(), Some("reload\nrestart\n"));
}

#[test]
fn bad_handlers_exit_2_at_their_lines_and_nothing_runs() {
    let bad = HANDLERS_PLAYBOOK
        .replace("notify = \"restart app\"", "notify = \"restart ap\"")
        .replace("name = \"reload proxy\"", "name = \"restart app\"");
    let c = handlers_cluster(1, &bad);
    for cmd in ["check-config", "run"] {
        let out = c.provision(&[cmd, &c.cluster_toml()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {t}");
        assert!(
            t.contains("playbook.toml:6:10: error: step `app config` notifies unknown handler `restart ap`\n  help: did you mean `restart app`?"),
            "{cmd}: {t}"
        );
        assert!(
            t.contains("playbook.toml:25:8: error: handler `restart app` is declared twice (first at line 19)"),
            "{cmd}: {t}"
        );
    }
    assert!(
        !c.servers[0].log().contains("Accepted publickey"),
        "nothing connected"
    );
    assert!(!c.root(1).join("etc/app.conf").exists());
}

/// A role: default vars, a template under its templates/ and a handler it notifies.
const SITE_ROLE: &[(&str, &str)] = &[
    (
        "roles/site/steps.toml",
        "[[steps]]\nname = \"site config\"\nuse = \"template\"\nwith = { src = \"templates/site.conf.j2\", dest = \"{{ vars.root }}/etc/{{ vars.site }}.conf\" }\nnotify = \"reload sites\"\n",
    ),
    (
        "roles/site/handlers.toml",
        "[[handlers]]\nname = \"reload sites\"\nuse = \"command\"\nwith = { run = \"echo reload >> {{ vars.root }}/handlers.log\" }\n",
    ),
    (
        "roles/site/defaults.toml",
        "site = \"default\"\nport = 80\n",
    ),
    (
        "roles/site/templates/site.conf.j2",
        "site {{ vars.site }} on {{ host.name }} port {{ vars.port }}\n",
    ),
];

fn write_files(c: &Cluster, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let p = c.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// One role included twice with different vars (two sites): each include's vars over the
/// role's defaults, the template found in the role's templates/, the role's handler run once
/// per changed host; a second run changes nothing and runs no handler.
#[test]
fn a_role_included_twice_with_its_own_vars_converges_and_notifies_its_handler() {
    let c = handlers_cluster(
        2,
        "[[steps]]\ninclude = \"roles/site\"\nvars = { site = \"blog\" }\n\n\
         [[steps]]\ninclude = \"roles/site\"\nvars = { site = \"shop\", port = 8080 }\nhosts = \"h2\"\n",
    );
    write_files(&c, SITE_ROLE);
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    // Hosts of one step finish in any order.
    let mut results = Cluster::results(&out);
    results.sort();
    assert_eq!(
        results,
        [
            triple("reload sites", "h1", "changed"),
            triple("reload sites", "h2", "changed"),
            triple("site config", "h1", "changed"),
            triple("site config", "h2", "changed"),
            triple("site config", "h2", "changed"),
        ]
    );
    let read = |i: usize, f: &str| std::fs::read_to_string(c.root(i).join(f)).ok();
    assert_eq!(
        read(1, "etc/blog.conf").as_deref(),
        Some("site blog on h1 port 80\n")
    );
    assert_eq!(
        read(2, "etc/blog.conf").as_deref(),
        Some("site blog on h2 port 80\n")
    );
    assert_eq!(
        read(2, "etc/shop.conf").as_deref(),
        Some("site shop on h2 port 8080\n")
    );
    assert_eq!(
        read(1, "etc/shop.conf"),
        None,
        "the include's hosts: h2 only"
    );
    assert_eq!(read(1, "handlers.log").as_deref(), Some("reload\n"));
    assert_eq!(read(2, "handlers.log").as_deref(), Some("reload\n"));

    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let results = Cluster::results(&out);
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(results.iter().all(|r| r.2 == "ok"), "{results:?}");
    assert_eq!(read(2, "handlers.log").as_deref(), Some("reload\n"));
}

/// A user's playbook extends the built-in swarm playbook by including it: check-config passes
/// and --list-steps shows the built-in steps, then the user's, connecting to nothing.
#[test]
fn a_playbook_including_the_builtin_swarm_lists_its_steps_then_the_users() {
    let mut c = cluster(2);
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        "[[steps]]\ninclude = \"builtin:swarm\"\n\n\
         [[steps]]\nname = \"my motd\"\nuse = \"copy\"\nwith = { content = \"hi\\n\", dest = \"{{ vars.root }}/etc/motd\" }\n",
    )
    .unwrap();
    let toml = c.dir.path().join("cluster.toml");
    let inventory = std::fs::read_to_string(&toml).unwrap().replacen(
        "roles = [\"worker\"]",
        "roles = [\"manager\"]",
        1,
    );
    std::fs::write(&toml, format!("{inventory}\n[vars]\nstack = \"demo\"\n")).unwrap();
    for s in &mut c.servers {
        s.kill();
    }
    let out = c.provision(&["check-config", &c.cluster_toml()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = c.provision(&["run", &c.cluster_toml(), "--list-steps"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let steps: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split("  ").next().unwrap().to_string())
        .collect();
    assert_eq!(
        steps,
        [
            "swap file",
            "hostname",
            "docker engine",
            "nfs share mounted",
            "swarm initialised",
            "swarm members",
            "node labels",
            "manager availability",
            "demo image",
            "stack deployed",
            "my motd"
        ],
        "{}",
        text(&out)
    );
    assert!(
        !c.dir.path().join(".provision").exists(),
        "--list-steps wrote next to the cluster file"
    );
    // A misspelt built-in name is bad input with a suggestion.
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        "[[steps]]\ninclude = \"builtin:swram\"\n",
    )
    .unwrap();
    let out = c.provision(&["check-config", &c.cluster_toml()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("playbook.toml:2:11: error: unknown built-in playbook `builtin:swram`\n  help: did you mean `builtin:swarm`?"),
        "{t}"
    );
}

/// An include cycle, and an include naming a missing role, are bad input: exit 2 at the
/// include, the cycle's chain shown, nothing run on any host.
#[test]
fn an_include_cycle_exits_2_showing_the_chain_and_runs_nothing() {
    let c = cluster(1);
    write_files(
        &c,
        &[
            (
                "roles/web/steps.toml",
                "[[steps]]\nname = \"marker\"\nuse = \"copy\"\nwith = { content = \"x\\n\", dest = \"{{ vars.root }}/marker\" }\n\n[[steps]]\ninclude = \"../../playbook.toml\"\n",
            ),
            (
                "playbook.toml",
                "[[steps]]\nname = \"first\"\nuse = \"copy\"\nwith = { content = \"x\\n\", dest = \"{{ vars.root }}/first\" }\n\n[[steps]]\ninclude = \"roles/web\"\n",
            ),
        ],
    );
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("roles/web/steps.toml:7:11: error: include cycle: playbook.toml -> roles/web -> playbook.toml"),
        "{t}"
    );
    assert!(!c.root(1).join("first").exists(), "nothing ran");
    assert!(!c.root(1).join("marker").exists(), "nothing ran");

    std::fs::write(
        c.dir.path().join("playbook.toml"),
        "[[steps]]\nname = \"first\"\nuse = \"copy\"\nwith = { content = \"x\\n\", dest = \"{{ vars.root }}/first\" }\n\n[[steps]]\ninclude = \"roles/wbe\"\nvar = { a = 1 }\n",
    )
    .unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("playbook.toml:8:1: error: unknown key `var` in include `roles/wbe`\n  help: did you mean `vars`?"),
        "{t}"
    );
    assert!(!c.root(1).join("first").exists(), "nothing ran");
}

const REGISTER_PLAYBOOK: &str = r#"
[[steps]]
name = "probe"
use = "command"
register = "probe"
with = { run = "if [ -e {{ vars.root }}/flag ]; then echo present; else echo absent; fi" }

[[steps]]
name = "fix"
use = "command"
when = "probe.rc == 0 and probe.stdout == 'absent'"
with = { run = "touch {{ vars.root }}/fixed" }

[[steps]]
name = "echo the token"
use = "command"
register = "echoed"
with = { run = "cat", stdin = "{{ secrets.app_token }}" }

[[steps]]
name = "token redacted"
use = "command"
when = "'very-secret' not in echoed.stdout and echoed.changed"
with = { run = "touch {{ vars.root }}/redacted" }
"#;

/// A probe's registered stdout decides, per host and when the step is reached, where the next
/// step runs; a registered output holding a secret holds it redacted; under --check the probe
/// ran nothing, so it is skipped and the step over it too.
#[test]
fn a_registered_probe_decides_on_which_hosts_a_later_step_runs() {
    let c = handlers_cluster(2, REGISTER_PLAYBOOK);
    std::fs::write(c.root(2).join("flag"), "").unwrap();
    let out = c.provision(&["run", &c.cluster_toml(), "--check", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let fix: Vec<_> = Cluster::results(&out)
        .into_iter()
        .filter(|(s, _, _)| s == "fix")
        .collect();
    assert_eq!(
        fix,
        [
            triple("fix", "h1", "skipped"),
            triple("fix", "h2", "skipped")
        ],
        "under --check the probe is skipped"
    );
    assert!(!c.root(1).join("fixed").exists());

    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let results = Cluster::results(&out);
    assert!(
        results.contains(&triple("fix", "h1", "changed")),
        "{results:?}"
    );
    assert!(
        results.contains(&triple("fix", "h2", "skipped")),
        "{results:?}"
    );
    assert!(c.root(1).join("fixed").exists());
    assert!(
        !c.root(2).join("fixed").exists(),
        "the probe found the flag on h2"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "\"details\":[\"`when = probe.rc == 0 and probe.stdout == 'absent'` is false\"]"
        ),
        "{}",
        text(&out)
    );
    for i in [1, 2] {
        assert!(
            c.root(i).join("redacted").exists(),
            "h{i}: registered stdout is redacted"
        );
    }
    assert!(!text(&out).contains(SECRET) && !c.logs().contains(SECRET));
}

const RETRY_PLAYBOOK: &str = r#"
[[steps]]
name = "third time lucky"
use = "command"
retries = 5
delay = 0
with = { run = "n=$(cat {{ vars.root }}/count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {{ vars.root }}/count; [ $n -ge 3 ]" }

[[steps]]
name = "wait until ready"
use = "command"
retries = 3
delay = 0
until = "'ready' in stdout"
with = { run = "n=$(cat {{ vars.root }}/polls 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {{ vars.root }}/polls; if [ $n -ge 2 ]; then echo ready; else echo starting; fi" }

[[steps]]
name = "never"
use = "command"
retries = 1
delay = 0
with = { run = "echo once >> {{ vars.root }}/never; exit 4" }
"#;

/// A command that succeeds on its third attempt passes, each retry reported; `until` over its
/// stdout re-runs it until it holds; retries that run out fail the host naming the attempts.
#[test]
fn retries_rerun_a_step_until_it_succeeds_or_they_run_out() {
    let c = handlers_cluster(1, RETRY_PLAYBOOK);
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let read = |f: &str| std::fs::read_to_string(c.root(1).join(f)).unwrap();
    assert_eq!(read("count"), "3\n");
    assert!(
        t.contains("h1: retrying (1/5) third time lucky: command failed with exit status 1"),
        "{t}"
    );
    assert!(t.contains("h1: retrying (2/5) third time lucky"), "{t}");
    assert!(!t.contains("(3/5)"), "{t}");
    assert!(t.contains("h1: changed third time lucky"), "{t}");
    assert_eq!(read("polls"), "2\n");
    assert!(
        t.contains("h1: retrying (1/3) wait until ready: `until = 'ready' in stdout` is false"),
        "{t}"
    );
    assert!(t.contains("h1: changed wait until ready"), "{t}");
    assert_eq!(read("never"), "once\nonce\n");
    assert!(
        t.contains("h1: retrying (1/1) never: command failed with exit status 4"),
        "{t}"
    );
    assert!(
        t.contains("h1: failed never: command failed with exit status 4 (after 2 attempts)"),
        "{t}"
    );
}

/// `until` (and `delay`) without `retries`, and a `when` reading a name no earlier step registers, exit 2 at
/// their lines; nothing connects.
#[test]
fn bad_register_and_retry_keys_exit_2_at_their_lines_and_nothing_runs() {
    let bad = RETRY_PLAYBOOK.replace("retries = 3\n", "register = \"polled\"\n")
        + "\n[[steps]]\nuse = \"command\"\nwhen = \"poled.rc == 0\"\nwith = { run = \"true\" }\n";
    let c = handlers_cluster(1, &bad);
    for cmd in ["check-config", "run"] {
        let out = c.provision(&[cmd, &c.cluster_toml()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {t}");
        assert!(
            t.contains("playbook.toml:13:9: error: `delay` in step `wait until ready` without `retries`")
                && t.contains("playbook.toml:14:9: error: `until` in step `wait until ready` without `retries`\n  help: add retries = 5"),
            "{cmd}: {t}"
        );
        assert!(
            t.contains("playbook.toml:26:8: error: `when` in step `command` reads `poled`, which no earlier step registers\n  help: did you mean `polled`?"),
            "{cmd}: {t}"
        );
    }
    assert!(
        !c.servers[0].log().contains("Accepted publickey"),
        "nothing connected"
    );
    assert!(!c.root(1).join("count").exists());
}

/// `n` hosts running `playbook` (which may read `vars.shared`, a file all hosts append to: they
/// share this machine's filesystem).
fn rollout_cluster(n: usize, playbook: &str) -> Cluster {
    let c = cluster(n);
    let shared = c.dir.path().join("shared.log");
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        playbook.replace("SHARED", &shared.display().to_string()),
    )
    .unwrap();
    c
}

impl Cluster {
    /// The lines the hosts appended to the shared file, without their timestamps.
    fn shared(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("shared.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect()
    }
}

/// serial = 1: each host's command starts only when the previous host's finished, in inventory
/// order; the same command without serial runs on every host at once.
#[test]
fn serial_one_changes_one_host_at_a_time() {
    let c = rollout_cluster(
        3,
        r#"
[[steps]]
name = "rolling"
use = "command"
serial = 1
with = { run = "echo start {{ host.name }} $(date +%s%N) >> SHARED; sleep 0.4; echo end {{ host.name }} $(date +%s%N) >> SHARED" }
"#,
    );
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        c.shared(),
        [
            "start h1", "end h1", "start h2", "end h2", "start h3", "end h3"
        ]
    );
    assert_eq!(
        Cluster::results(&out),
        [
            triple("rolling", "h1", "changed"),
            triple("rolling", "h2", "changed"),
            triple("rolling", "h3", "changed")
        ]
    );

    // The control: without serial the three commands overlap (all start before any ends; a
    // longer sleep, so that a loaded machine starting them slowly still shows it).
    std::fs::remove_file(c.dir.path().join("shared.log")).unwrap();
    let pb = c.dir.path().join("playbook.toml");
    let parallel = std::fs::read_to_string(&pb)
        .unwrap()
        .replace("serial = 1\n", "")
        .replace("sleep 0.4", "sleep 6");
    std::fs::write(&pb, parallel).unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert!(out.status.success(), "{}", text(&out));
    let lines = c.shared();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(
        lines[..3].iter().all(|l| l.starts_with("start")),
        "{lines:?}"
    );
}

/// max_fail_percentage = 30 with serial = 1: h1 failing is 33% of the step's 3 hosts, so the
/// run stops after that first batch: h2 and h3 are never touched, the next step never runs, the
/// recap says why, exit 1.
#[test]
fn past_max_fail_percentage_the_run_stops_after_the_batch() {
    let c = rollout_cluster(
        3,
        r#"
serial = 1

[[steps]]
name = "risky"
use = "command"
max_fail_percentage = 30
with = { run = "if [ {{ host.name }} = h1 ]; then echo broken >&2; exit 3; fi; touch {{ vars.root }}/etc/risky" }

[[steps]]
name = "after"
use = "command"
with = { run = "touch {{ vars.root }}/etc/after" }
"#,
    );
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("h1 failed in step `risky`"), "{t}");
    assert!(
        t.contains("stopped after step `risky`: 1 of its 3 host(s) failed (33%), more than max_fail_percentage = 30; no further batches or steps ran"),
        "{t}"
    );
    for i in 1..=3 {
        assert!(!c.root(i).join("etc/risky").exists(), "h{i}");
        assert!(!c.root(i).join("etc/after").exists(), "h{i}");
    }
    let log = c.logs();
    assert!(log.contains("] h1 ["), "{log}");
    assert!(
        !log.contains("] h2 [") && !log.contains("] h3 ["),
        "h2 and h3 ran nothing: {log}"
    );

    // Without the threshold, h1 drops out and the others finish both steps.
    let pb = c.dir.path().join("playbook.toml");
    let lenient = std::fs::read_to_string(&pb)
        .unwrap()
        .replace("max_fail_percentage = 30\n", "");
    std::fs::write(&pb, lenient).unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("stopped after"), "{}", text(&out));
    for i in [2, 3] {
        assert!(c.root(i).join("etc/after").exists(), "h{i}");
    }
}

/// run_once: the first host whose `when` is true, and only it, runs the step; it is reported
/// once.
#[test]
fn run_once_changes_exactly_one_host() {
    let c = rollout_cluster(
        3,
        r#"
[[steps]]
name = "migrate"
use = "command"
run_once = true
when = "host.name != 'h1'"
with = { run = "echo migrated {{ host.name }} >> SHARED" }
"#,
    );
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(Cluster::results(&out), [triple("migrate", "h2", "changed")]);
    assert_eq!(c.shared(), ["migrated h2"]);
    // Within --limit, the first host of the limit.
    let out = c.provision(&[
        "run",
        &c.cluster_toml(),
        "--limit",
        "h3",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(Cluster::results(&out), [triple("migrate", "h3", "changed")]);
    assert_eq!(c.shared(), ["migrated h2", "migrated h3"]);
}

#[test]
fn bad_rollout_keys_exit_2_at_their_position_and_nothing_runs() {
    let c = rollout_cluster(
        1,
        r#"serial = "0%"

[[steps]]
name = "a"
use = "command"
serial = 0
max_fail_percentage = 101
run_once = "yes"
with = { run = "touch {{ vars.root }}/etc/ran" }

[[steps]]
name = "b"
use = "command"
serial = []
with = { run = "touch {{ vars.root }}/etc/ran" }
"#,
    );
    for cmd in ["check-config", "run"] {
        let out = c.provision(&[cmd, &c.cluster_toml()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {t}");
        for expected in [
            "playbook.toml:6:10: error: `serial` in step `a` must be at least 1 host, not 0",
            "playbook.toml:7:23: error: `max_fail_percentage` in step `a` must be from 0 to 100, not 101",
            "playbook.toml:8:12: error: `run_once` in step `a` must be a boolean, not a string",
            "playbook.toml:14:10: error: `serial` in step `b` is an empty list",
            "playbook.toml:1:10: error: `serial` in the playbook must be a number of hosts or a percentage from 1% to 100%, not \"0%\"",
        ] {
            assert!(t.contains(expected), "{cmd}: {expected}\n{t}");
        }
    }
    assert!(
        !c.servers[0].log().contains("Accepted publickey"),
        "nothing connected"
    );
    assert!(!c.root(1).join("etc/ran").exists());
}

const IGNORE_PLAYBOOK: &str = r#"
[[steps]]
name = "version probe"
use = "command"
changed_when = false
register = "version"
with = { run = "cat {{ vars.root }}/version 2>/dev/null || echo none" }

[[steps]]
name = "may fail"
use = "command"
ignore_errors = true
changed_when = false
register = "maybe"
with = { run = "test -e {{ vars.root }}/ok" }

[[steps]]
name = "after"
use = "command"
when = "(maybe.failed or maybe.rc == 0) and version.stdout == 'none' and not version.changed"
with = { run = "touch {{ vars.root }}/after", creates = "{{ vars.root }}/after" }
"#;

/// A host failing a step with `ignore_errors` is reported ignored (text, JSON, recap column),
/// still runs the next step, and the run exits 0; probes with `changed_when = false` report ok,
/// so a second run reports 0 changed, and under --check they are skipped (0 would change).
#[test]
fn an_ignored_failure_goes_on_and_a_probe_never_changes() {
    let c = handlers_cluster(2, IGNORE_PLAYBOOK);
    std::fs::write(c.root(1).join("ok"), "").unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("h2: ignored may fail: command failed with exit status 1"),
        "{t}"
    );
    assert!(!t.contains("h1: ignored"), "{t}");
    assert!(t.contains("IGNORED"), "{t}");
    assert!(
        t.contains("2 host(s), 2 changed, 0 failed or unreachable, 1 failure(s) ignored"),
        "{t}"
    );
    for i in [1, 2] {
        assert!(c.root(i).join("after").exists(), "h{i} went on");
    }

    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let results = Cluster::results(&out);
    for want in [
        triple("version probe", "h1", "ok"),
        triple("version probe", "h2", "ok"),
        triple("may fail", "h1", "ok"),
        triple("may fail", "h2", "ignored"),
        triple("after", "h2", "ok"),
    ] {
        assert!(results.contains(&want), "{want:?} not in {results:?}");
    }
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert!(
        text(&out).contains("2 host(s), 0 changed, 0 failed or unreachable"),
        "{}",
        text(&out)
    );

    let out = c.provision(&["run", &c.cluster_toml(), "--check"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("2 host(s), 0 would change, 0 failed or unreachable"),
        "{t}"
    );
}

const FAILED_WHEN_PLAYBOOK: &str = r#"
[[steps]]
name = "exit code"
use = "command"
failed_when = "rc not in [0, 1]"
register = "code"
with = { run = "exit $(cat {{ vars.root }}/code)" }

[[steps]]
name = "next"
use = "command"
when = "code.rc == 1 and not code.failed"
with = { run = "touch {{ vars.root }}/next" }
"#;

/// `failed_when = "rc not in [0, 1]"`: exit status 1 is a success (the registered result says
/// not failed), exit status 2 fails the host naming the expression, and the run exits 1.
#[test]
fn failed_when_turns_rc_1_into_ok_and_rc_2_into_a_failure() {
    let c = handlers_cluster(2, FAILED_WHEN_PLAYBOOK);
    std::fs::write(c.root(1).join("code"), "1").unwrap();
    std::fs::write(c.root(2).join("code"), "2").unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("h1: changed exit code"), "{t}");
    assert!(
        t.contains("h2: failed exit code: `failed_when = rc not in [0, 1]` is true (rc 2)"),
        "{t}"
    );
    assert!(t.contains("exit status: 2"), "{t}");
    assert!(c.root(1).join("next").exists());
    assert!(!c.root(2).join("next").exists(), "a failed host stops");
}

const LOOP_REGISTER_PLAYBOOK: &str = r#"
[[steps]]
name = "each"
use = "command"
loop = ["a", "b"]
ignore_errors = true
changed_when = false
register = "each"
with = { run = "test -e {{ vars.root }}/{{ item }}" }

[[steps]]
name = "all present"
use = "command"
when = "not each.failed and each.results | length == 2"
with = { run = "touch {{ vars.root }}/all-present" }

[[steps]]
name = "b missing"
use = "command"
when = "each.results[0].rc == 0 and each.results[1].rc != 0 and each.results | selectattr('failed') | map(attribute='item') | list == ['b']"
with = { run = "touch {{ vars.root }}/b-missing" }
"#;

/// A looped step registers one result per item: later `when`s read the aggregate
/// (`each.failed`), an item by index (`each.results[1].rc`) and filters over the list.
#[test]
fn a_looped_register_is_read_by_a_later_when() {
    let c = handlers_cluster(2, LOOP_REGISTER_PLAYBOOK);
    for f in ["a", "b"] {
        std::fs::write(c.root(1).join(f), "").unwrap();
    }
    std::fs::write(c.root(2).join("a"), "").unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("h2: ignored each (b)"), "{t}");
    assert!(c.root(1).join("all-present").exists(), "{t}");
    assert!(!c.root(1).join("b-missing").exists(), "{t}");
    assert!(!c.root(2).join("all-present").exists(), "{t}");
    assert!(c.root(2).join("b-missing").exists(), "{t}");
}

/// `failed_when` on a step with no result to read, a non-boolean `ignore_errors`, an
/// expression that does not parse and `results` of a register without a loop: exit 2 at their
/// positions, for check-config and run, and nothing connects.
#[test]
fn bad_result_rules_exit_2_at_their_positions_and_nothing_runs() {
    let bad = r#"
[[steps]]
use = "copy"
failed_when = "rc != 0"
with = { content = "x", dest = "{{ vars.root }}/x" }

[[steps]]
use = "command"
ignore_errors = "yes"
register = "one"
with = { run = "true" }

[[steps]]
use = "command"
changed_when = "rc =="
with = { run = "touch {{ vars.root }}/ran" }

[[steps]]
use = "command"
when = "one.results[0].rc == 0"
with = { run = "touch {{ vars.root }}/ran" }
"#;
    let c = handlers_cluster(1, bad);
    for cmd in ["check-config", "run"] {
        let out = c.provision(&[cmd, &c.cluster_toml()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {t}");
        for want in [
            "playbook.toml:4:15: error: `failed_when` in step `copy`: `copy` has no result of its own to read (rc, stdout, stderr); only command steps have",
            "playbook.toml:9:17: error: `ignore_errors` in step `command` must be a boolean, not a string",
            "playbook.toml:15:16: error: `changed_when` in step `command`: `rc ==` is not a valid expression",
            "playbook.toml:20:8: error: `when` in step `command` reads `one.results`, but the step that registers it has no `loop`",
        ] {
            assert!(t.contains(want), "{cmd}: {want}\nnot in\n{t}");
        }
    }
    assert!(
        !c.servers[0].log().contains("Accepted publickey"),
        "nothing connected"
    );
    assert!(!c.root(1).join("ran").exists() && !c.root(1).join("x").exists());
}

const CHANGED_WHEN_NOTIFY_PLAYBOOK: &str = r#"
[[steps]]
name = "maybe update"
use = "command"
changed_when = "'updated' in stdout"
notify = "record"
with = { run = "if [ -e {{ vars.root }}/update ]; then rm {{ vars.root }}/update; echo updated; fi" }

[[handlers]]
name = "record"
use = "command"
with = { run = "echo ran >> {{ vars.root }}/handled" }
"#;

/// A step whose change `changed_when` decides notifies its handler only when it changed: the
/// notification is written (and cleared) after the decision, not with the command.
#[test]
fn changed_when_decides_whether_a_handler_is_notified() {
    let c = handlers_cluster(1, CHANGED_WHEN_NOTIFY_PLAYBOOK);
    std::fs::write(c.root(1).join("update"), "").unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("h1: changed maybe update"), "{t}");
    let handled = || std::fs::read_to_string(c.root(1).join("handled")).unwrap_or_default();
    assert_eq!(handled(), "ran\n");
    assert!(
        std::fs::read_to_string(c.pending(1))
            .unwrap_or_default()
            .trim()
            .is_empty(),
        "the notification was cleared once the handler ran"
    );
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert!(t.contains("1 host(s), 0 changed"), "{t}");
    assert_eq!(handled(), "ran\n", "no change, no handler");
}

const FACTS_PLAYBOOK: &str = r#"
[[steps]]
name = "facts file"
use = "template"
with = { src = "facts.j2", dest = "{{ vars.root }}/etc/facts" }

[[steps]]
name = "debian only"
use = "copy"
when = "facts.os == 'debian' and facts.cpus > 0"
with = { content = "{{ facts.os_codename }} {{ facts.arch }}\n", dest = "{{ vars.root }}/etc/debian" }

[[steps]]
name = "never on debian"
use = "copy"
when = "facts.os != 'debian'"
with = { content = "x\n", dest = "{{ vars.root }}/etc/other" }
"#;

const FACTS_TEMPLATE: &str = "{{ host.name }} os={{ facts.os }} version={{ facts.os_version }} cpus={{ facts.cpus }} memory_mb={{ facts.memory_mb }} half={{ facts.memory_mb // 2 }}\n";

/// This machine's facts as its own files and tools say (the sshd hosts are this machine).
fn local_facts() -> (String, String, u64, u64, String) {
    let release = std::fs::read_to_string("/etc/os-release").unwrap();
    let field = |k: &str| {
        release
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap()
            .trim_matches('"')
            .to_string()
    };
    let cpus = String::from_utf8(Command::new("nproc").output().unwrap().stdout).unwrap();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    let machine =
        String::from_utf8(Command::new("uname").arg("-m").output().unwrap().stdout).unwrap();
    (
        field("ID"),
        field("VERSION_ID"),
        cpus.trim().parse().unwrap(),
        mem_kb / 1024,
        format!("{} {}", field("VERSION_CODENAME"), machine.trim()),
    )
}

/// The newest run log's lines of host `h` that record a command (`] h1 [step] exit=`).
fn commands_of(c: &Cluster, h: &str) -> Vec<String> {
    let newest = std::fs::read_dir(c.dir.path().join(".provision/logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    std::fs::read_to_string(newest)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("] {h} [")) && l.contains(" exit="))
        .map(str::to_string)
        .collect()
}

/// Facts are gathered only for a playbook that reads them, once per host and run: their values
/// reach a template file and `when`; check-config stays offline and says it used placeholders;
/// a playbook reading no fact runs no facts command.
#[test]
fn facts_are_gathered_once_per_host_only_when_read_and_reach_templates_and_conditions() {
    let c = handlers_cluster(2, FACTS_PLAYBOOK);
    std::fs::write(c.dir.path().join("facts.j2"), FACTS_TEMPLATE).unwrap();
    let (os, version, cpus, memory_mb, codename_arch) = local_facts();

    let out = c.provision(&["check-config", &c.cluster_toml()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("facts.* are read on 2 host(s) (h1, h2): checked with placeholders (debian 12 (bookworm) x86_64, 1 CPUs, 1024 MB"),
        "{t}"
    );
    assert!(
        !c.servers[0].log().contains("Accepted publickey"),
        "check-config connects to no host"
    );

    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let results = Cluster::results(&out);
    for (i, h) in ["h1", "h2"].iter().enumerate() {
        let root = c.root(i + 1);
        assert_eq!(
            std::fs::read_to_string(root.join("etc/facts")).unwrap(),
            format!(
                "{h} os={os} version={version} cpus={cpus} memory_mb={memory_mb} half={}\n",
                memory_mb / 2
            )
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/debian")).unwrap(),
            format!("{codename_arch}\n")
        );
        assert!(!root.join("etc/other").exists(), "its `when` is false");
        assert!(results.contains(&triple("facts", h, "ok")), "{results:?}");
        assert!(
            results.contains(&triple("never on debian", h, "skipped")),
            "{results:?}"
        );
        let facts: Vec<String> = commands_of(&c, h)
            .into_iter()
            .filter(|l| l.contains(" [facts] "))
            .collect();
        assert_eq!(facts.len(), 1, "once per host and run: {facts:?}");
    }
    // The facts step's result shows what was gathered.
    let shown = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "host_result" && v["step"] == "facts" && v["host"] == "h1")
        .unwrap();
    assert!(
        shown["details"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{os} {version} (")),
        "{shown}"
    );

    // Nothing to change: the facts command and the one fact batch, per host.
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        Cluster::results(&out)
            .iter()
            .all(|r| r.2 == "ok" || r.2 == "skipped")
    );
    for h in ["h1", "h2"] {
        let commands = commands_of(&c, h);
        assert_eq!(commands.len(), 2, "{h}: {commands:?}");
        assert!(commands[0].contains(" [facts] "), "{commands:?}");
    }

    // A playbook that reads no fact gathers none: one command per host on a no-change run.
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        "[[steps]]\nuse = \"copy\"\nwith = { content = \"{{ host.name }}\\n\", dest = \"{{ vars.root }}/etc/plain\" }\n",
    )
    .unwrap();
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let results = Cluster::results(&out);
    assert!(results.iter().all(|r| r.0 != "facts"), "{results:?}");
    for h in ["h1", "h2"] {
        let commands = commands_of(&c, h);
        assert_eq!(commands.len(), 1, "{h}: {commands:?}");
        assert!(!commands[0].contains(" [facts] "), "{commands:?}");
    }
}

/// A fact that does not exist is bad input (in `when`, `with` or a template file): exit 2 at
/// its place with the nearest fact, and nothing connects or runs.
#[test]
fn an_unknown_fact_exits_2_at_its_place_and_nothing_runs() {
    let bad = FACTS_PLAYBOOK.replace("facts.cpus > 0", "facts.memory > 0");
    let c = handlers_cluster(2, &bad);
    std::fs::write(c.dir.path().join("facts.j2"), FACTS_TEMPLATE).unwrap();
    for cmd in ["check-config", "run"] {
        let out = c.provision(&[cmd, &c.cluster_toml()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {t}");
        assert!(
            t.contains("playbook.toml:10:34: error: `facts.memory` is not a fact\n  help: did you mean `facts.memory_mb`?"),
            "{cmd}: {t}"
        );
    }
    // In a template file: at the step's `src`, naming the template's line.
    std::fs::write(c.dir.path().join("playbook.toml"), FACTS_PLAYBOOK).unwrap();
    std::fs::write(c.dir.path().join("facts.j2"), "ok\n{{ facts.cpu }}\n").unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("playbook.toml:5:10: error: cannot render template: facts.j2:2: `facts.cpu` is not a fact (did you mean `facts.cpus`?)"),
        "{t}"
    );
    for s in &c.servers {
        assert!(!s.log().contains("Accepted publickey"), "nothing connected");
    }
    assert!(!c.root(1).join("etc/facts").exists());
}

const PIPELINED: &str = r#"strategy = "pipelined"

[[steps]]
name = "slow"
use = "command"
hosts = "h1"
with = { run = "sleep 3; echo written > SHARED.flag; echo end slow >> SHARED" }

[[steps]]
name = "quick"
use = "command"
hosts = "h2"
with = { run = "sleep 2; echo end quick >> SHARED" }

[[steps]]
name = "needs slow"
use = "command"
hosts = "h2"
after = ["slow"]
with = { run = "cat SHARED.flag > {{ vars.root }}/etc/seen" }
"#;

/// The order of the step starts and the host results in a `--output json` run.
fn json_order(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| match v["event"].as_str() {
            Some("step_started") => Some(format!("start {}", v["title"].as_str().unwrap())),
            Some("host_result") => Some(format!(
                "{} {} {}",
                v["step"].as_str().unwrap(),
                v["host"].as_str().unwrap(),
                v["status"].as_str().unwrap()
            )),
            _ => None,
        })
        .collect()
}

/// strategy = "pipelined": the quick step on h2 runs while the slow one on h1 does (it ends
/// first), yet the output is in
/// playbook order; the step `after` the slow one waits for it and sees what it wrote. The same
/// playbook under the default `linear` runs the steps one after the other.
#[test]
fn pipelined_steps_overlap_across_hosts_and_report_in_playbook_order() {
    let c = rollout_cluster(2, PIPELINED);
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(c.shared(), ["end quick", "end slow"]);
    assert_eq!(
        std::fs::read_to_string(c.root(2).join("etc/seen")).unwrap(),
        "written\n",
        "`after` waited for the slow step"
    );
    let expected = [
        "start slow",
        "slow h1 changed",
        "start quick",
        "quick h2 changed",
        "start needs slow",
        "needs slow h2 changed",
    ];
    assert_eq!(json_order(&out), expected);

    // Text output: the same order.
    std::fs::remove_file(c.dir.path().join("shared.log")).unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    let at = |s: &str| t.find(s).unwrap_or_else(|| panic!("{s} in {t}"));
    assert!(
        at("slow") < at("quick") && at("quick") < at("needs slow"),
        "{t}"
    );
    assert_eq!(c.shared(), ["end quick", "end slow"]);

    // Linear (the default): one step after the other, the same events.
    std::fs::remove_file(c.dir.path().join("shared.log")).unwrap();
    let pb = c.dir.path().join("playbook.toml");
    let linear = std::fs::read_to_string(&pb)
        .unwrap()
        .replace("strategy = \"pipelined\"\n", "");
    std::fs::write(&pb, linear).unwrap();
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(c.shared(), ["end slow", "end quick"]);
    assert_eq!(json_order(&out), expected);
    // The overlap is proven by the order the hosts wrote (quick ended before slow, which only
    // an overlap allows), not by wall time: that comparison failed under load (5.05 s against
    // 5.93 s with VMs running beside it).
}

#[test]
fn bad_strategy_and_after_exit_2_at_their_position_and_nothing_runs() {
    let c = rollout_cluster(
        2,
        &PIPELINED
            .replace("\"pipelined\"", "\"pipelind\"")
            .replace("[\"slow\"]", "[\"slwo\", \"needs slow\"]"),
    );
    for cmd in ["check-config", "run"] {
        let out = c.provision(&[cmd, &c.cluster_toml()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {t}");
        for expected in [
            "playbook.toml:1:12: error: unknown strategy `pipelind`\n  help: did you mean `pipelined`?",
            "playbook.toml:19:10: error: `after` in step `needs slow` names no step: `slwo`\n  help: did you mean `slow`?",
            "playbook.toml:19:18: error: `after` in step `needs slow` names the step itself",
        ] {
            assert!(t.contains(expected), "{cmd}: {expected}\n{t}");
        }
    }
    assert!(!c.dir.path().join("shared.log").exists(), "nothing ran");
    for s in &c.servers {
        assert!(!s.log().contains("Accepted publickey"), "nothing connected");
    }
}

/// `on = "h3"` on a step of h1 and h2: its facts are read and its commands run over h3's
/// connection (h1 and h2 are never connected to), its templates still describe the target, its
/// results are the targets', saying where they ran; `--limit` keeps the targets, not the
/// delegate; a second run changes nothing.
#[test]
fn a_step_on_another_host_runs_there_for_each_target() {
    let c = cluster(3);
    let h3 = c.root(3).display().to_string();
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        format!(
            r#"
[[steps]]
name = "drain"
use = "copy"
hosts = "h1,h2"
on = "h3"
with = {{ content = "drained {{{{ host.name }}}}\n", dest = "{h3}/etc/drained-{{{{ host.name }}}}" }}

[[steps]]
name = "seen"
use = "command"
hosts = "h1,h2"
on = "{{{{ 'h' ~ 3 }}}}"
with = {{ run = "echo {{{{ host.name }}}} ${{SSH_CONNECTION##* }} > {h3}/etc/seen-{{{{ host.name }}}}", creates = "{h3}/etc/seen-{{{{ host.name }}}}" }}
"#
        ),
    )
    .unwrap();
    let json = |out: &Output| -> Vec<(String, String, String, String)> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "host_result")
            .map(|v| {
                let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
                (s("step"), s("host"), s("on"), s("status"))
            })
            .collect()
    };
    let q = |s: &str, h: &str, st: &str| {
        (
            s.to_string(),
            h.to_string(),
            "h3".to_string(),
            st.to_string(),
        )
    };
    // Within --limit h1: the delegate is outside the limit and still runs the step for h1.
    let out = c.provision(&[
        "run",
        &c.cluster_toml(),
        "--limit",
        "h1",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        json(&out),
        [q("drain", "h1", "changed"), q("seen", "h1", "changed")]
    );
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("h2 (on h3): changed drain"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("h2 (on h3): changed seen"),
        "{}",
        text(&out)
    );
    for target in ["h1", "h2"] {
        assert_eq!(
            std::fs::read_to_string(c.root(3).join(format!("etc/drained-{target}"))).unwrap(),
            format!("drained {target}\n"),
            "the template describes the target"
        );
        // The command ran over h3's connection: the port it came in on is h3's.
        assert_eq!(
            std::fs::read_to_string(c.root(3).join(format!("etc/seen-{target}"))).unwrap(),
            format!("{target} {}\n", c.servers[2].port)
        );
    }
    for i in [1, 2] {
        let etc: Vec<_> = std::fs::read_dir(c.root(i).join("etc")).unwrap().collect();
        assert!(etc.is_empty(), "nothing on h{i}: {etc:?}");
        assert!(
            !c.servers[i - 1].log().contains("Accepted publickey"),
            "h{i} was never connected to"
        );
    }
    let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        json(&out),
        [
            q("drain", "h1", "ok"),
            q("drain", "h2", "ok"),
            q("seen", "h1", "ok"),
            q("seen", "h2", "ok")
        ],
        "the second run changes nothing"
    );
}

#[test]
fn a_bad_on_exits_2_at_its_position_and_nothing_runs() {
    let c = cluster(2);
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        r#"
[[steps]]
name = "a"
use = "command"
on = "h22"
with = { run = "touch {{ vars.root }}/etc/ran" }

[[steps]]
name = "b"
use = "command"
on = "{{ host.name }}-x"
with = { run = "touch {{ vars.root }}/etc/ran" }
"#,
    )
    .unwrap();
    for cmd in ["check-config", "run"] {
        let out = c.provision(&[cmd, &c.cluster_toml()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {t}");
        for expected in [
            "playbook.toml:5:6: error: step `a`: `on` names `h22`, which is no host of the inventory\n  help: did you mean `h2`?",
            "playbook.toml:11:6: error: step `b`, host h1: `on = \"{{ host.name }}-x\"` is `h1-x`, which is no host of the inventory\n  help: hosts of the inventory: h1, h2",
        ] {
            assert!(t.contains(expected), "{cmd}: {expected}\n{t}");
        }
    }
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        "[[steps]]\nuse = \"command\"\non = 7\nwith = { run = \"touch {{ vars.root }}/etc/ran\" }\n\n[[steps]]\nname = \"b\"\nuse = \"command\"\non = \"\"\nwith = { run = \"true\" }\n",
    )
    .unwrap();
    let out = c.provision(&["run", &c.cluster_toml()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for expected in [
        "playbook.toml:3:6: error: `on` in step `command` must be a string, not an integer",
        "playbook.toml:9:6: error: `on` in step `b` must not be empty",
    ] {
        assert!(text(&out).contains(expected), "{expected}\n{}", text(&out));
    }
    for (i, s) in c.servers.iter().enumerate() {
        assert!(
            !s.log().contains("Accepted publickey"),
            "h{} connected",
            i + 1
        );
        assert!(!c.root(i + 1).join("etc/ran").exists());
    }
}

/// A fake apt for a real-sshd host: `apt-get` records its arguments in `apt.log`, `apt-cache
/// policy` knows every package but those named `*-unlisted`, and `stat`, `ls`, `touch` and
/// `mkdir` see `/var/lib/apt` and `/etc/apt` under `root` (so the stamp the update writes,
/// and the lists' age, are the test's, not this machine's). The directory goes first on the
/// sshd's PATH (`SetEnv`).
struct FakeApt {
    dir: tempfile::TempDir,
}

impl FakeApt {
    fn new() -> FakeApt {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(root.join("var/lib/apt/lists")).unwrap();
        std::fs::create_dir_all(root.join("etc/apt")).unwrap();
        std::fs::write(root.join("var/lib/apt/lists/deb_dists_main_Packages"), "").unwrap();
        std::fs::write(
            root.join("etc/apt/sources.list"),
            "deb http://deb.example/ x main\n",
        )
        .unwrap();
        let script = |name: &str, body: String| {
            use std::os::unix::fs::PermissionsExt;
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        script(
            "apt-get",
            format!(
                "echo \"apt-get $*\" >> {}\n",
                dir.path().join("apt.log").display()
            ),
        );
        script(
            "apt-cache",
            "[ \"$1\" = policy ] || exit 1\nshift\nfor p in \"$@\"; do case $p in -*|*-unlisted) ;; *) printf '%s:\\n  Installed: (none)\\n  Candidate: 1.0-1\\n' \"$p\";; esac; done\n".into(),
        );
        let remap = format!(
            "n=$#; while [ \"$n\" -gt 0 ]; do a=$1; shift; case $a in /var/lib/apt*|/etc/apt*) a={}$a;; esac; set -- \"$@\" \"$a\"; n=$((n - 1)); done\nexec /usr/bin/$(basename \"$0\") \"$@\"\n",
            root.display()
        );
        for tool in ["stat", "ls", "touch", "mkdir"] {
            script(tool, remap.clone());
        }
        // Lists last refreshed long ago, sources older still.
        Self::age(&root.join("etc/apt/sources.list"), "2001-01-01");
        Self::age(&root.join("var/lib/apt/lists"), "2001-01-02");
        FakeApt { dir }
    }

    fn sshd_config(&self) -> String {
        format!(
            "SetEnv PATH={}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin\n",
            self.dir.path().join("bin").display()
        )
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn stamp(&self) -> PathBuf {
        self.root()
            .join("var/lib/apt/periodic/update-success-stamp")
    }

    fn age(path: &Path, date: &str) {
        run_ok(Command::new("/usr/bin/touch").args(["-d", date]).arg(path));
    }

    /// What apt-get was asked since the last call (and forgets it).
    fn calls(&self) -> Vec<String> {
        let log = self.dir.path().join("apt.log");
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        calls.lines().map(str::to_string).collect()
    }
}

const APT_UPDATE: &str = "apt-get update -q -o DPkg::Lock::Timeout=300";
const APT_INSTALL: &str = "apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=300";

/// Two package steps on a host refresh its stale package lists once (the second asks for
/// `cache_valid_time = 0` and a package the lists lack, either of which would refresh them
/// again without the run's memory); lists younger than `cache_valid_time` are not refreshed
/// at all; `--check` plans one refresh and runs nothing; a step without packages (Ansible's
/// "update the apt cache") and a package step after it refresh once; `cache_valid_time =
/// "soon"` exits 2 at its line and column, and nothing runs.
#[test]
fn package_steps_refresh_the_lists_at_most_once_per_host_and_run() {
    let apt = FakeApt::new();
    let c = cluster_with(
        1,
        SshdOptions {
            extra_config: apt.sshd_config(),
            ..SshdOptions::default()
        },
    );
    // Two package steps: `base packages` (pv-one) and `tools` (pv-two and `tools`).
    let playbook = |first: &str, tools: &str, second: &str| {
        std::fs::write(
            c.dir.path().join("playbook.toml"),
            format!(
                "[[steps]]\nname = \"base packages\"\nuse = \"apt\"\nwith = {{ packages = [\"pv-one\"]{first} }}\n\n\
                 [[steps]]\nname = \"tools\"\nuse = \"apt\"\nwith = {{ packages = [\"pv-two\", \"{tools}\"]{second} }}\n"
            ),
        )
        .unwrap();
    };
    let run = || {
        let out = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        out
    };
    let install = |p: &str| format!("{APT_INSTALL} {p}");

    // Stale lists: one refresh, before the first install; a dry run plans just that.
    playbook("", "pv-three-unlisted", ", cache_valid_time = 0");
    let out = c.provision(&["run", &c.cluster_toml(), "--check"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert_eq!(t.matches("after apt-get update").count(), 1, "{t}");
    assert!(
        t.contains("install pv-one (after apt-get update: package lists are "),
        "{t}"
    );
    assert!(t.contains("install pv-two, pv-three-unlisted\n"), "{t}");
    assert_eq!(apt.calls(), Vec::<String>::new(), "--check ran apt-get");
    assert!(!apt.stamp().exists());
    let out = run();
    assert_eq!(
        Cluster::results(&out),
        vec![
            ("base packages".into(), "h1".into(), "changed".into()),
            ("tools".into(), "h1".into(), "changed".into())
        ]
    );
    assert_eq!(
        apt.calls(),
        vec![
            APT_UPDATE.to_string(),
            install("pv-one"),
            install("pv-two pv-three-unlisted")
        ]
    );
    assert!(apt.stamp().exists(), "the update writes its stamp");

    // Lists the lists know, refreshed by that run: fresh, no refresh at all (the fake dpkg
    // never installs, so every run installs).
    playbook(
        ", cache_valid_time = 3600",
        "pv-three",
        ", cache_valid_time = 3600",
    );
    let fresh = vec![install("pv-one"), install("pv-two pv-three")];
    run();
    assert_eq!(apt.calls(), fresh);
    // 2 h old: stale for an hour's validity (once), fresh for a day's.
    FakeApt::age(&apt.stamp(), "2 hours ago");
    run();
    assert_eq!(
        apt.calls(),
        [vec![APT_UPDATE.to_string()], fresh.clone()].concat()
    );
    FakeApt::age(&apt.stamp(), "2 hours ago");
    playbook(
        ", cache_valid_time = 86400",
        "pv-three",
        ", cache_valid_time = 86400",
    );
    run();
    assert_eq!(apt.calls(), fresh);

    // Ansible's "update the apt cache" task (no packages) and a package step after it, both
    // refreshing at every run: once.
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        "[[steps]]\nname = \"lists\"\nuse = \"apt\"\nwith = { update_cache = true, cache_valid_time = 0 }\n\n\
         [[steps]]\nname = \"base packages\"\nuse = \"apt\"\nwith = { packages = [\"pv-one\"], cache_valid_time = 0 }\n",
    )
    .unwrap();
    let out = run();
    assert_eq!(
        Cluster::results(&out),
        vec![
            ("lists".into(), "h1".into(), "changed".into()),
            ("base packages".into(), "h1".into(), "changed".into())
        ]
    );
    assert_eq!(apt.calls(), vec![APT_UPDATE.to_string(), install("pv-one")]);

    // Bad input: exit 2 at the value's position, nothing run, no host contacted.
    let connected = c.servers[0].log().matches("Accepted publickey").count();
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        "[[steps]]\nname = \"base packages\"\nuse = \"apt\"\nwith = { packages = [\"pv-one\"], cache_valid_time = \"soon\" }\n",
    )
    .unwrap();
    for cmd in ["check-config", "run"] {
        let out = c.provision(&[cmd, &c.cluster_toml()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {t}");
        assert!(
            t.contains("playbook.toml:4:33: error: `cache_valid_time` is \"soon\": it must be a whole number of seconds, 0 or more\n  help: e.g. cache_valid_time = 86400"),
            "{cmd}: {t}"
        );
    }
    assert_eq!(apt.calls(), Vec::<String>::new());
    assert_eq!(
        c.servers[0].log().matches("Accepted publickey").count(),
        connected,
        "bad input connected to the host"
    );
}

/// A step running longer than 10 s has a heartbeat: without a terminal one line per 10 s naming
/// the step, its host and the last whole line the command printed so far (through the resident
/// shell on h1, a channel with stdin on h2); under `pipelined` both running steps have theirs.
/// The secret the command printed before its sleep is redacted in that line, and shows nowhere:
/// not on stderr, not in the JSON events, not in the run log. `--profile` ends the recap with
/// the slowest steps, slowest first; JSON carries every step's timing in `run_finished`.
#[test]
fn a_long_step_has_a_heartbeat_and_the_profile_names_it_first() {
    let c = cluster(2);
    std::fs::write(
        c.dir.path().join("playbook.toml"),
        r#"
strategy = "pipelined"

[[steps]]
name = "quick"
use = "command"
with = { run = "echo quick" }

[[steps]]
name = "slow h1"
use = "command"
hosts = "h1"
with = { run = "echo first; sleep 12; echo second" }

[[steps]]
name = "slow h2"
use = "command"
hosts = "h2"
with = { stdin = "{{ secrets.app_token }}", run = "echo first; echo \"token=$(cat)\"; printf half; sleep 12; echo second" }
"#,
    )
    .unwrap();
    let out = c.provision(&["run", &c.cluster_toml(), "--profile"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let beats: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("still running after"))
        .collect();
    assert_eq!(beats.len(), 2, "one heartbeat per slow step: {t}");
    let h1 = beats
        .iter()
        .find(|l| l.contains("step 2: slow h1"))
        .unwrap();
    assert!(
        h1.contains(": still running after 10 s on h1 (") && h1.ends_with(", last line: first)"),
        "{h1}"
    );
    let h2 = beats
        .iter()
        .find(|l| l.contains("step 3: slow h2"))
        .unwrap();
    assert!(
        h2.contains(" on h2 (") && h2.ends_with(", last line: token=***)"),
        "the last whole line, redacted; never the partial one: {h2}"
    );
    // The profile, after the recap: the slow steps first, each with its slowest host.
    let profile = &t[t.find("slowest steps (3 of 3):").expect(&t)..];
    let rows: Vec<&str> = profile.lines().skip(2).take(3).collect();
    assert!(
        rows[0].starts_with("step ") && rows[0].contains("slow h"),
        "{profile}"
    );
    assert!(rows[2].starts_with("step 1: quick "), "{profile}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("step 2: slow h1 ") && r.contains("  h1 (")),
        "{profile}"
    );
    let json = c.provision(&["run", &c.cluster_toml(), "--output", "json"]);
    assert!(json.status.success(), "{}", text(&json));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut running: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e["event"] == "step_running")
        .map(|e| {
            assert_eq!(e["seconds"], 10, "{e}");
            let busy = &e["busy"][0];
            (
                e["step"].as_str().unwrap().to_string(),
                busy["host"].as_str().unwrap().to_string(),
                busy["last_line"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    running.sort();
    assert_eq!(
        running,
        [
            ("slow h1".into(), "h1".into(), "first".into()),
            ("slow h2".into(), "h2".into(), "token=***".into())
        ]
    );
    let finished = events.last().unwrap();
    let timings: Vec<(String, u64)> = finished["timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().into(),
                s["duration"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        timings.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        ["quick", "slow h1", "slow h2"],
        "{finished}"
    );
    assert!(
        timings[1].1 >= 12_000 && timings[0].1 < 5_000,
        "{timings:?}"
    );
    let logs = c.logs();
    assert_eq!(
        logs.matches("still running after 10 s").count(),
        4,
        "each run's heartbeats are in its log: {logs}"
    );
    for (what, shown) in [("stderr", t), ("JSON", text(&json)), ("run log", logs)] {
        assert_eq!(
            leaks(&shown, SECRET),
            Vec::<String>::new(),
            "{what}: {shown}"
        );
    }
}
