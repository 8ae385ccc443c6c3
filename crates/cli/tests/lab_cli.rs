//! `provision lab` from the outside: messages and exit codes of the commands that need no VM.

use std::path::Path;
use std::process::{Command, Output};

fn provision(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_provision"));
    cmd.args(args)
        .env_remove("PROVISION_LAB_DIR")
        .env_remove("PROVISION_LAB_ACCEL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("provision runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A lab state file as `lab up` writes it, for a lab whose VM is not running.
fn write_stopped_lab(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("lab.json"),
        r#"{"format":1,"name":"t","subnet":"10.10.0.0/24","mcast_port":40000,"image_dir":"/nonexistent",
            "accel":"tcg","vms":[{"name":"manager-1","roles":["manager"],"memory_mib":1536,"cpus":1,
            "ssh_port":22201,"private_ip":"10.10.0.11","mac":"52:54:00:aa:00:0b"}]}"#,
    )
    .unwrap();
}

#[test]
fn status_of_a_missing_lab_says_how_to_start_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nolab");
    let out = provision(&["lab", "status", "--dir", dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: no lab in {}: start one with `provision lab up`\n",
            dir.display()
        )
    );
}

#[test]
fn status_of_a_stopped_lab_exits_3_with_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    write_stopped_lab(&dir);
    // The directory comes from the environment variable here.
    let out = provision(&["lab", "status"], &[("PROVISION_LAB_DIR", &dir)]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "lab `t` in {} (tcg)\n\
             VM         ROLES    PID  SSH PORT  PRIVATE IP  SSHD\n\
             manager-1  manager  -    22201     10.10.0.11  no\n",
            dir.display()
        )
    );
}

#[test]
fn ssh_to_an_unknown_vm_lists_the_known_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    write_stopped_lab(&dir);
    let out = provision(
        &[
            "lab",
            "ssh",
            "nope",
            "--dir",
            dir.to_str().unwrap(),
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: no VM `nope` in this lab (it has: manager-1)\n"
    );
}

#[test]
fn up_reports_lab_toml_errors_with_position() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("LAB.toml");
    std::fs::write(
        &file,
        "name = \"lab\"\n[[vms]]\nname = \"a\"\nroles = [\"worker\", \"db\"]\n",
    )
    .unwrap();
    let out = provision(&["lab", "up", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {}:4:20: unknown role `db`: roles are storage, manager, worker, lb\n",
            file.display()
        )
    );
}

#[test]
fn up_refuses_a_file_and_a_generated_topology_together() {
    let out = provision(&["lab", "up", "LAB.toml", "--managers", "3"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn down_cleans_a_half_failed_lab() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    write_stopped_lab(&dir);
    std::fs::write(dir.join("manager-1.console"), "[    0.0] Linux version").unwrap();
    std::fs::write(dir.join("manager-1.pid"), "999999999\n").unwrap();
    let out = provision(&["lab", "down", "--dir", dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("removed {}\n", dir.display())
    );
    assert!(!dir.exists());
}
