//! Tier 2, whole binary on real sshd hosts at 127.0.0.1: each example of `examples/` (nginx,
//! users, rolling-deploy). The hand-written provision port converges (each step's result on
//! each host asserted, the files by content, mode and owner), a second run changes nothing, and
//! a config change runs exactly what it should (the handler, the restart) once. Then the
//! converter's output of the Ansible original, run the same way on a fresh set of hosts, gives
//! the same results, run by run, and the same host trees, file by file. The hosts share this
//! machine, so the examples' paths point under per-host roots by vars, and the tasks that would
//! change the machine itself (packages, services, accounts) are switched off by their vars.

mod common;
use common::hosts::{Entry, Hosts, first_difference, tree};
use common::text;
use std::path::{Path, PathBuf};

type Results = Vec<(String, String, String)>;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// What a test sets for an example: `[vars]`, each host's vars from its name, its root and the
/// set's directory, and what is on the hosts before the first run.
struct Setup {
    example: &'static str,
    /// The Ansible playbook, under `ansible/`.
    playbook: &'static str,
    vars: toml::Table,
    host_vars: fn(&str, &Path, &Path) -> toml::Table,
    before: fn(&Path),
}

/// The example's hand-written port, copied and pointed at a fresh set of hosts.
fn port(s: &Setup) -> (Hosts, PathBuf) {
    let h = Hosts::start(2);
    let dir = h.dir.path().join("port");
    copy_dir(&example(s.example).join("provision"), &dir);
    let cluster = dir.join("cluster.toml");
    connect(&h, s, &cluster);
    check_config_ok(&h, &cluster);
    (h, cluster)
}

/// `import-ansible` of the example's Ansible original and its inventory, pointed at a fresh set
/// of hosts the same way.
fn converted(s: &Setup) -> (Hosts, PathBuf) {
    let h = Hosts::start(2);
    let dir = h.dir.path().join("converted");
    let src = example(s.example).join("ansible");
    let out = h.provision(&[
        "import-ansible",
        src.join(s.playbook).to_str().unwrap(),
        "-i",
        src.join("hosts.ini").to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let cluster = dir.join("cluster.toml");
    connect(&h, s, &cluster);
    check_config_ok(&h, &cluster);
    (h, cluster)
}

fn connect(h: &Hosts, s: &Setup, cluster: &Path) {
    let set = h.dir.path().to_path_buf();
    h.connect(cluster, &s.vars, &|name, root| {
        (s.host_vars)(name, root, &set)
    });
    for name in names(cluster) {
        (s.before)(&h.root_of(&name));
    }
}

fn check_config_ok(h: &Hosts, cluster: &Path) {
    let out = h.provision(&["check-config", cluster.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// The inventory's host names, in order, with nothing else.
fn names(cluster: &Path) -> Vec<String> {
    let inv: toml::Table = std::fs::read_to_string(cluster).unwrap().parse().unwrap();
    inv["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect()
}

/// Every host's tree, each entry's path led by its host's name.
fn trees(h: &Hosts, cluster: &Path) -> Vec<Entry> {
    let mut all = Vec::new();
    for name in names(cluster) {
        for mut e in tree(&h.root_of(&name)) {
            e.path = format!("{name}/{}", e.path);
            all.push(e);
        }
    }
    all
}

/// One run: its results, sorted (hosts of a step finish in any order), and the trees after it.
fn run(h: &Hosts, cluster: &Path) -> (Results, Vec<Entry>, String) {
    let (out, mut results) = h.run_cluster(cluster, &[]);
    assert!(out.status.success(), "{}", text(&out));
    results.sort();
    (results, trees(h, cluster), text(&out))
}

/// Sets `[vars] key = value` in a cluster file: the config change of a test.
fn set_var(cluster: &Path, key: &str, value: toml::Value) {
    let mut inv: toml::Table = std::fs::read_to_string(cluster).unwrap().parse().unwrap();
    inv["vars"]
        .as_table_mut()
        .unwrap()
        .insert(key.into(), value);
    std::fs::write(cluster, toml::to_string(&inv).unwrap()).unwrap();
}

/// The results a test expects: every (step, status) on every host.
fn expect(hosts: &[&str], steps: &[(&str, &str)]) -> Results {
    let mut r: Results = hosts
        .iter()
        .flat_map(|h| {
            steps
                .iter()
                .map(move |(s, st)| (s.to_string(), h.to_string(), st.to_string()))
        })
        .collect();
    r.sort();
    r
}

/// Four runs on one set: converge, again (nothing), the config change, again (nothing).
fn four_runs(
    h: &Hosts,
    cluster: &Path,
    change: &dyn Fn(&Path),
) -> Vec<(Results, Vec<Entry>, String)> {
    let mut runs = vec![run(h, cluster), run(h, cluster)];
    change(cluster);
    runs.push(run(h, cluster));
    runs.push(run(h, cluster));
    runs
}

/// The converter's output, on a fresh set of hosts, does what the hand-written port did: the
/// same results in each of the four runs and the same trees after each, file by file.
fn converted_matches(
    s: &Setup,
    change: &dyn Fn(&Path),
    port_runs: &[(Results, Vec<Entry>, String)],
) {
    let (c, cluster) = converted(s);
    let conv_runs = four_runs(&c, &cluster, change);
    for (i, (p, c)) in port_runs.iter().zip(&conv_runs).enumerate() {
        assert_eq!(
            p.0,
            c.0,
            "run {}: the converted playbook's results differ from the port's\n{}",
            i + 1,
            c.2
        );
        if let Some(d) = first_difference("the port's hosts", &p.1, "the converted hosts", &c.1) {
            panic!("run {}: {d}", i + 1);
        }
    }
}

fn no_change(r: &Results) {
    assert!(
        r.iter().all(|(_, _, s)| s == "ok" || s == "skipped"),
        "a second run changed something: {r:?}"
    );
}

fn entry<'a>(t: &'a [Entry], path: &str) -> &'a Entry {
    t.iter().find(|e| e.path == path).unwrap_or_else(|| {
        panic!(
            "no {path} in {:?}",
            t.iter().map(|e| &e.path).collect::<Vec<_>>()
        )
    })
}

fn table(pairs: &[(&str, toml::Value)]) -> toml::Table {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn s(p: &Path) -> toml::Value {
    p.display().to_string().into()
}

fn nginx() -> Setup {
    Setup {
        example: "nginx",
        playbook: "site.yml",
        // A package that is installed already; no service on this machine.
        vars: table(&[
            ("nginx_packages", vec!["openssh-server"].into()),
            ("nginx_manage_service", false.into()),
        ]),
        host_vars: |name, root, set| {
            table(&[
                ("nginx_conf_dir", s(&root.join("etc/nginx"))),
                ("nginx_www_root", s(&root.join("var/www"))),
                // What the handler ran, where the test can count it.
                (
                    "nginx_reload_command",
                    format!("echo reloaded >> {}/reloads.log", root.display()).into(),
                ),
                (
                    "pending_handlers_file",
                    s(&set.join(format!("pending-{name}"))),
                ),
            ])
        },
        before: |_| {},
    }
}

#[test]
fn nginx_example_reloads_only_when_its_config_changed_and_its_conversion_matches() {
    let setup = nginx();
    let (h, cluster) = port(&setup);
    let change = |c: &Path| set_var(c, "nginx_worker_connections", 1024.into());
    let runs = four_runs(&h, &cluster, &change);
    let hosts = ["web-1", "web-2"];
    assert_eq!(
        runs[0].0,
        expect(
            &hosts,
            &[
                ("install nginx", "ok"),
                ("configuration directories (sites-available)", "changed"),
                ("configuration directories (sites-enabled)", "changed"),
                ("nginx.conf", "changed"),
                ("site configuration", "changed"),
                ("site enabled", "changed"),
                ("web root", "changed"),
                ("index page", "changed"),
                ("nginx running", "skipped"),
                ("reload nginx", "changed"),
            ]
        ),
        "{}",
        runs[0].2
    );
    let t = &runs[0].1;
    for host in hosts {
        let conf = entry(t, &format!("{host}/etc/nginx/nginx.conf"));
        assert_eq!(
            conf.content,
            "# Managed: edit the role, not this file.\nuser www-data;\nworker_processes auto;\npid /run/nginx.pid;\n\nevents {\n    worker_connections 768;\n}\n\nhttp {\n    sendfile on;\n    access_log /var/log/nginx/access.log;\n    include ROOT/etc/nginx/sites-enabled/*.conf;\n}\n"
        );
        assert_eq!((conf.mode, conf.uid, conf.gid), (0o644, 0, 0));
        assert_eq!(
            entry(t, &format!("{host}/etc/nginx/sites-available/default.conf")).content,
            format!(
                "# Managed: edit the role, not this file.\nserver {{\n    listen 8080;\n    server_name {host};\n    root ROOT/var/www/{host};\n}}\n"
            )
        );
        assert_eq!(
            entry(t, &format!("{host}/etc/nginx/sites-enabled/default.conf")).kind,
            "link -> ROOT/etc/nginx/sites-available/default.conf"
        );
        let index = entry(t, &format!("{host}/var/www/{host}/index.html"));
        assert_eq!(
            (index.content.as_str(), index.mode),
            (format!("<h1>{host}</h1>\n").as_str(), 0o644)
        );
        assert_eq!(entry(t, &format!("{host}/var/www/{host}")).mode, 0o755);
        assert_eq!(
            entry(t, &format!("{host}/reloads.log")).content,
            "reloaded\n"
        );
    }
    // Nothing changed: no step changes and the handler does not run.
    no_change(&runs[1].0);
    assert!(
        !runs[1].0.iter().any(|r| r.0 == "reload nginx"),
        "{:?}",
        runs[1].0
    );
    assert_eq!(runs[1].1, runs[0].1);
    // The config changed: nginx.conf and the handler, once per host, nothing else.
    let changed: Vec<_> = runs[2]
        .0
        .iter()
        .filter(|r| r.2 != "ok" && r.2 != "skipped")
        .collect();
    assert_eq!(
        changed,
        expect(
            &hosts,
            &[("nginx.conf", "changed"), ("reload nginx", "changed")]
        )
        .iter()
        .collect::<Vec<_>>(),
        "{}",
        runs[2].2
    );
    for host in hosts {
        assert!(
            entry(&runs[2].1, &format!("{host}/etc/nginx/nginx.conf"))
                .content
                .contains("worker_connections 1024;")
        );
        assert_eq!(
            entry(&runs[2].1, &format!("{host}/reloads.log")).content,
            "reloaded\nreloaded\n"
        );
    }
    no_change(&runs[3].0);
    assert_eq!(runs[3].1, runs[2].1);
    converted_matches(&setup, &change, &runs);
}

const ALICE: [&str; 2] = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ+Uy4MdrULPC1OGggiFHpVUOGmptorrOLe032W2rXN0 alice@laptop",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF/7EW7GJ1aQ4xZkMxD5ApGW8AMCzB1ozFYc5tbrlKbj alice@desktop",
];
const BOB: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBEOC3LWNxWuDnaQTGIH3f3NYIKEuuaLrS6Sh5EA+Umw bob@laptop";
const BOB_OLD: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFSl1M0xKBOjSu06UdtDsptC5qINtm3SNMYr79ff3+9i bob@old";
const CI: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIwyMPBmVKBrAP6F3fhhd84ab+L+46HkewLMbbf67a6J ci@deploy";

/// The example's people, as accounts that exist on this machine (daemon, nobody), with the
/// example's keys; accounts are not created here.
fn people(daemon_keys: &[&str]) -> toml::Value {
    let person = |name: &str, keys: &[&str]| {
        toml::Value::Table(table(&[
            ("name", name.into()),
            ("shell", "/usr/sbin/nologin".into()),
            ("ssh_keys", keys.to_vec().into()),
        ]))
    };
    vec![person("daemon", daemon_keys), person("nobody", &[BOB])].into()
}

fn users() -> Setup {
    Setup {
        example: "users",
        playbook: "site.yml",
        vars: table(&[
            ("users_manage_accounts", false.into()),
            ("users", people(&ALICE)),
            (
                "users_revoked_keys",
                vec![toml::Value::Table(table(&[
                    ("user", "nobody".into()),
                    ("key", BOB_OLD.into()),
                ]))]
                .into(),
            ),
        ]),
        host_vars: |_, root, _| table(&[("users_home_root", s(&root.join("home")))]),
        // nobody's keys before the role: the lost laptop's and one added by hand, loosely.
        before: |root| {
            let ssh = root.join("home/nobody/.ssh");
            std::fs::create_dir_all(&ssh).unwrap();
            std::fs::write(ssh.join("authorized_keys"), format!("{BOB_OLD}\n{CI}\n")).unwrap();
        },
    }
}

#[test]
fn users_example_authorizes_and_revokes_keys_and_its_conversion_matches() {
    let setup = users();
    let (h, cluster) = port(&setup);
    let more = [ALICE[0], ALICE[1], CI];
    let change = |c: &Path| set_var(c, "users", people(&more));
    let runs = four_runs(&h, &cluster, &change);
    let hosts = ["app-1", "app-2"];
    assert_eq!(
        runs[0].0,
        expect(
            &hosts,
            &[
                ("accounts (daemon)", "skipped"),
                ("accounts (nobody)", "skipped"),
                ("home directories (daemon)", "changed"),
                ("home directories (nobody)", "changed"),
                ("authorized keys (daemon)", "changed"),
                ("authorized keys (nobody)", "changed"),
                ("revoked keys (nobody)", "changed"),
            ]
        ),
        "{}",
        runs[0].2
    );
    let t = &runs[0].1;
    // Their uid and gid on Debian: daemon 1:1, nobody 65534:65534 (nogroup).
    let (daemon, nobody) = ((1, 1), (65534, 65534));
    for host in hosts {
        for (user, ids, keys) in [
            ("daemon", daemon, format!("{}\n{}\n", ALICE[0], ALICE[1])),
            ("nobody", nobody, format!("{CI}\n{BOB}\n")),
        ] {
            let home = entry(t, &format!("{host}/home/{user}"));
            assert_eq!((home.mode, home.uid), (0o750, ids.0), "{user}");
            let ssh = entry(t, &format!("{host}/home/{user}/.ssh"));
            assert_eq!(
                (ssh.mode, ssh.uid, ssh.gid),
                (0o700, ids.0, ids.1),
                "{user}"
            );
            let k = entry(t, &format!("{host}/home/{user}/.ssh/authorized_keys"));
            assert_eq!(k.content, keys, "{user}");
            assert_eq!((k.mode, k.uid, k.gid), (0o600, ids.0, ids.1), "{user}");
        }
    }
    no_change(&runs[1].0);
    assert_eq!(runs[1].1, runs[0].1);
    // One more key for daemon: that step alone changes, the key appended.
    let changed: Vec<_> = runs[2].0.iter().filter(|r| r.2 == "changed").collect();
    assert_eq!(
        changed,
        expect(&hosts, &[("authorized keys (daemon)", "changed")])
            .iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        entry(&runs[2].1, "app-1/home/daemon/.ssh/authorized_keys").content,
        format!("{}\n{}\n{CI}\n", ALICE[0], ALICE[1])
    );
    no_change(&runs[3].0);
    converted_matches(&setup, &change, &runs);
}

fn rolling() -> Setup {
    Setup {
        example: "rolling-deploy",
        playbook: "deploy.yml",
        vars: toml::Table::new(),
        host_vars: |name, root, set| {
            let probe = set.join(format!("probed-{name}"));
            table(&[
                ("app_root", s(&root.join("srv/app"))),
                (
                    "app_restart_command",
                    format!("echo restarted >> {}/restarts.log", root.display()).into(),
                ),
                // Down for the first probe after the first restart, then up: one retry.
                (
                    "app_health_command",
                    format!(
                        "test -e {p} || (touch {p}; echo starting >&2; exit 1)",
                        p = probe.display()
                    )
                    .into(),
                ),
            ])
        },
        before: |_| {},
    }
}

#[test]
fn rolling_deploy_example_restarts_where_the_release_changed_and_its_conversion_matches() {
    let setup = rolling();
    let (h, cluster) = port(&setup);
    let change = |c: &Path| set_var(c, "app_version", "1.5.0".into());
    let runs = four_runs(&h, &cluster, &change);
    let hosts = ["app-1", "app-2"];
    let release = [
        ("release directory", "changed"),
        ("release program", "changed"),
        ("release configuration", "changed"),
        ("current release", "changed"),
        ("restart the app", "changed"),
        ("the app answers", "changed"),
    ];
    let mut first = release.to_vec();
    first.push(("releases directory", "changed"));
    assert_eq!(runs[0].0, expect(&hosts, &first), "{}", runs[0].2);
    // The health check failed once on each host and was retried.
    assert_eq!(
        runs[0].2.matches("\"retrying\"").count(),
        2,
        "{}",
        runs[0].2
    );
    let t = &runs[0].1;
    for host in hosts {
        assert_eq!(
            entry(t, &format!("{host}/srv/app/current")).kind,
            "link -> ROOT/srv/app/releases/1.4.2"
        );
        let env = entry(t, &format!("{host}/srv/app/releases/1.4.2/app.env"));
        assert_eq!(
            (env.content.as_str(), env.mode),
            (
                "# Managed: edit the role, not this file.\nAPP_VERSION=1.4.2\nAPP_PORT=8080\n",
                0o640
            )
        );
        let program = entry(t, &format!("{host}/srv/app/releases/1.4.2/app.sh"));
        assert_eq!(
            program.content,
            std::fs::read_to_string(
                example("rolling-deploy").join("ansible/roles/app/files/app.sh")
            )
            .unwrap()
        );
        assert_eq!(program.mode, 0o755);
        assert_eq!(
            entry(t, &format!("{host}/restarts.log")).content,
            "restarted\n"
        );
    }
    // Nothing new: the link is as it was, so no restart and no health check.
    assert_eq!(
        runs[1].0,
        expect(
            &hosts,
            &[
                ("releases directory", "ok"),
                ("release directory", "ok"),
                ("release program", "ok"),
                ("release configuration", "ok"),
                ("current release", "ok"),
                ("restart the app", "skipped"),
                ("the app answers", "skipped"),
            ]
        )
    );
    assert_eq!(runs[1].1, runs[0].1);
    // A new version: its release, the link, one restart per host, up at the first probe.
    let mut next = release.to_vec();
    next.push(("releases directory", "ok"));
    assert_eq!(runs[2].0, expect(&hosts, &next), "{}", runs[2].2);
    assert!(!runs[2].2.contains("\"retrying\""), "{}", runs[2].2);
    for host in hosts {
        assert_eq!(
            entry(&runs[2].1, &format!("{host}/srv/app/current")).kind,
            "link -> ROOT/srv/app/releases/1.5.0"
        );
        // The previous release stays, for a rollback.
        entry(
            &runs[2].1,
            &format!("{host}/srv/app/releases/1.4.2/app.env"),
        );
        assert_eq!(
            entry(&runs[2].1, &format!("{host}/restarts.log")).content,
            "restarted\nrestarted\n"
        );
    }
    assert_eq!(runs[3].0, runs[1].0);
    // Half of the hosts at a time: app-1's restart finished before app-2's began.
    let order: Vec<String> = runs[2]
        .2
        .lines()
        .filter(|l| l.contains("\"host_result\"") && l.contains("\"restart the app\""))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["host"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(order, ["app-1", "app-2"]);
    converted_matches(&setup, &change, &runs);
}

#[test]
fn a_private_key_in_the_users_list_is_bad_input_and_nothing_runs() {
    let mut setup = users();
    let mut bad = people(&ALICE);
    bad.as_array_mut().unwrap()[1]["ssh_keys"] = vec!["-----BEGIN OPENSSH PRIVATE KEY-----"].into();
    setup.vars.insert("users".into(), bad);
    let h = Hosts::start(2);
    let dir = h.dir.path().join("port");
    copy_dir(&example("users").join("provision"), &dir);
    let cluster = dir.join("cluster.toml");
    connect(&h, &setup, &cluster);
    for cmd in ["check-config", "run"] {
        let out = h.provision(&[cmd, cluster.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let t = text(&out);
        assert!(
            t.contains("roles/users/steps.toml:22:36: error: key entry 1 is a private key"),
            "{t}"
        );
    }
    // Nothing ran: no home directory was made on either host.
    for name in ["app-1", "app-2"] {
        assert!(!h.root_of(name).join("home/daemon").exists());
    }
}
