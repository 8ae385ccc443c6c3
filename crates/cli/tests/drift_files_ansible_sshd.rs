//! Tier 2, whole binary on real sshd hosts at 127.0.0.1: `run --check --detect-drift`'s exit
//! codes, the `file` step's states, and what `import-ansible` cannot convert (the examples'
//! conversions run for real in `examples_sshd.rs`). As in `run_sshd.rs`, the hosts share this
//! machine's filesystem, so each works under its own root directory (a host var).

mod common;
use common::hosts::{Hosts, hosts, mode, snapshot};
use common::text;

const DRIFT_PLAYBOOK: &str = r#"
[[steps]]
name = "motd"
use = "copy"
with = { content = "managed\n", dest = "{{ vars.root }}/etc/motd", mode = "0644" }
"#;

#[test]
fn detect_drift_exits_0_when_converged_4_when_drifted_1_on_failure_and_changes_nothing() {
    let h = hosts(2, DRIFT_PLAYBOOK, "");
    let cluster = h.cluster();
    let drift = |h: &Hosts| h.provision(&["run", &cluster, "--check", "--detect-drift"]);
    // Nothing converged yet: drift, and --check wrote nothing.
    let out = drift(&h);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(!h.root(1).join("etc/motd").exists());
    // Converged: 0.
    let (out, _) = h.run_json(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = drift(&h);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Someone edits h2 by hand: 4, and the drift is left as it is.
    std::fs::write(h.root(2).join("etc/motd"), "hand edit\n").unwrap();
    let before = snapshot(h.dir.path().join("root-h2").as_path());
    let out = drift(&h);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("would change"), "{}", text(&out));
    assert_eq!(snapshot(&h.root(2)), before, "--detect-drift changed h2");
    // Without the flag a --check run with drift still exits 0, as before.
    let out = h.provision(&["run", &cluster, "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A host that fails wins over drift: 1.
    // (a directory where the file belongs: the step refuses it.)
    std::fs::remove_file(h.root(1).join("etc/motd")).unwrap();
    std::fs::create_dir(h.root(1).join("etc/motd")).unwrap();
    let out = drift(&h);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Without --check the flag is bad input (2), and nothing ran.
    let out = h.provision(&["run", &cluster, "--detect-drift"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(h.root(2).join("etc/motd")).unwrap(),
        "hand edit\n"
    );
    // Every code is in `run --help`.
    let help = text(&h.provision(&["run", "--help"]));
    for line in [
        "  0    done",
        "  1    a host",
        "  2    bad input",
        "  4    --check",
        "  75   ",
        "  130  ",
    ] {
        assert!(help.contains(line), "{line:?} in:\n{help}");
    }
}

const FILE_PLAYBOOK: &str = r#"
[[steps]]
name = "touch log"
use = "file"
with = { path = "{{ vars.root }}/var/app.log", state = "touch", mode = "0640", owner = "nobody" }

[[steps]]
name = "conf mode"
use = "file"
with = { path = "{{ vars.root }}/etc/app.conf", mode = "0600" }

[[steps]]
name = "data dir"
use = "file"
with = { path = "{{ vars.root }}/srv/data", state = "directory", mode = "0750", group = "nogroup" }

[[steps]]
name = "www tree"
use = "file"
with = { path = "{{ vars.root }}/srv/www", state = "directory", recurse = true, owner = "nobody", mode = "0755" }

[[steps]]
name = "old file gone"
use = "file"
with = { path = "{{ vars.root }}/etc/old.conf", state = "absent" }

[[steps]]
name = "old tree gone"
use = "file"
with = { path = "{{ vars.root }}/srv/old", state = "absent", recurse = true }
"#;

#[test]
fn file_states_converge_and_a_second_run_changes_nothing() {
    let h = hosts(2, FILE_PLAYBOOK, "");
    for i in 1..=2 {
        let r = h.root(i);
        std::fs::create_dir_all(r.join("var")).unwrap();
        std::fs::write(r.join("etc/app.conf"), "secret=1\n").unwrap();
        std::fs::write(r.join("etc/old.conf"), "old\n").unwrap();
        std::fs::create_dir_all(r.join("srv/www/css")).unwrap();
        std::fs::write(r.join("srv/www/css/site.css"), "body{}\n").unwrap();
        std::fs::create_dir_all(r.join("srv/old/deep")).unwrap();
        std::fs::write(r.join("srv/old/deep/x"), "x").unwrap();
    }
    // h2's log exists with content: touch keeps it (and its mtime).
    std::fs::write(h.root(2).join("var/app.log"), "earlier lines\n").unwrap();
    let mtime = std::fs::metadata(h.root(2).join("var/app.log"))
        .unwrap()
        .modified()
        .unwrap();
    let (out, results) = h.run_json(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        results.iter().filter(|r| r.2 == "changed").count(),
        12,
        "{results:?}"
    );
    use std::os::unix::fs::MetadataExt;
    for i in 1..=2 {
        let r = h.root(i);
        let log = std::fs::metadata(r.join("var/app.log")).unwrap();
        assert_eq!((mode(&r.join("var/app.log")), log.uid()), (0o640, 65534));
        assert_eq!(
            std::fs::read_to_string(r.join("etc/app.conf")).unwrap(),
            "secret=1\n"
        );
        assert_eq!(mode(&r.join("etc/app.conf")), 0o600);
        assert_eq!(mode(&r.join("srv/data")), 0o750);
        assert_eq!(std::fs::metadata(r.join("srv/data")).unwrap().gid(), 65534);
        for p in ["srv/www", "srv/www/css", "srv/www/css/site.css"] {
            let m = std::fs::metadata(r.join(p)).unwrap();
            assert_eq!((mode(&r.join(p)), m.uid()), (0o755, 65534), "{p}");
        }
        assert!(!r.join("etc/old.conf").exists());
        assert!(!r.join("srv/old").exists());
    }
    assert_eq!(
        std::fs::read_to_string(h.root(2).join("var/app.log")).unwrap(),
        "earlier lines\n"
    );
    assert_eq!(
        std::fs::metadata(h.root(2).join("var/app.log"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    // Idempotence: nothing changes, and --detect-drift agrees.
    let before: Vec<_> = (1..=2).map(|i| snapshot(&h.root(i))).collect();
    let (out, results) = h.run_json(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(results.iter().all(|r| r.2 == "ok"), "{results:?}");
    assert_eq!(results.len(), 12);
    let out = h.provision(&["run", &h.cluster(), "--check", "--detect-drift"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after: Vec<_> = (1..=2).map(|i| snapshot(&h.root(i))).collect();
    assert_eq!(after, before, "a second run changed the hosts");
    // One file deep in the tree drifts: only that step would change.
    std::fs::set_permissions(
        h.root(1).join("srv/www/css/site.css"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (out, results) = h.run_json(&["--check"]);
    assert!(out.status.success(), "{}", text(&out));
    let drifted: Vec<_> = results.iter().filter(|r| r.2 != "ok").collect();
    assert_eq!(
        drifted,
        [&(
            "www tree".to_string(),
            "h1".to_string(),
            "would_change".to_string()
        )],
        "{results:?}"
    );
}

#[test]
fn absent_refuses_a_non_empty_directory_without_recurse_and_bad_states_exit_2() {
    let playbook = r#"
[[steps]]
name = "cache gone"
use = "file"
with = { path = "{{ vars.root }}/srv/cache", state = "absent" }
"#;
    let h = hosts(1, playbook, "");
    std::fs::create_dir_all(h.root(1).join("srv/cache")).unwrap();
    std::fs::write(h.root(1).join("srv/cache/keep"), "k").unwrap();
    let (out, _) = h.run_json(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is a directory holding 1 entries: not removed"),
        "{}",
        text(&out)
    );
    assert!(h.root(1).join("srv/cache/keep").exists());
    // Bad input: a link state, and recurse without attributes, at their lines; nothing runs.
    std::fs::write(
        h.dir.path().join("playbook.toml"),
        format!(
            "{playbook}\n[[steps]]\nuse = \"file\"\nwith = {{ path = \"/srv/x\", state = \"link\" }}\n"
        ),
    )
    .unwrap();
    for cmd in ["check-config", "run"] {
        let out = h.provision(&[cmd, &h.cluster()]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let t = text(&out);
        assert!(t.contains("playbook.toml:9:27"), "{t}");
        assert!(t.contains("use = \"link\""), "{t}");
    }
    assert!(h.root(1).join("srv/cache/keep").exists());
}

#[test]
fn import_ansible_exits_3_naming_what_it_left_out_and_the_rest_passes_check_config() {
    let h = hosts(1, "", "");
    let dir = h.dir.path().join("ansible");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("site.yml"),
        "- hosts: all\n  tasks:\n    - name: motd\n      copy:\n        content: hi\n        dest: /srv/motd\n    - name: count\n      command: wc -l /etc/passwd\n      register: lines\n    - name: elsewhere\n      command: wc -l /etc/group\n      delegate_to: localhost\n",
    )
    .unwrap();
    std::fs::write(dir.join("hosts.ini"), "[app]\nh1 ansible_host=127.0.0.1\n").unwrap();
    let out = h.provision(&[
        "import-ansible",
        "ansible/site.yml",
        "-i",
        "ansible/hosts.ini",
        "-o",
        "out",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("converted 2 of 3 step(s)"), "{t}");
    assert!(
        t.contains("ansible/site.yml:12: delegate_to: localhost: not converted (provision runs steps on the hosts of the inventory, never on the controller)"),
        "{t}"
    );
    let out = h.provision(&["check-config", "out/cluster.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("1 hosts, 2 steps"), "{}", text(&out));
    // Not YAML at all: bad input, nothing written.
    std::fs::write(dir.join("bad.yml"), "- hosts: [all\n").unwrap();
    let out = h.provision(&["import-ansible", "ansible/bad.yml", "-o", "out2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("ansible/bad.yml:"), "{}", text(&out));
    assert!(!h.dir.path().join("out2").exists());
}
