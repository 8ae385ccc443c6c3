//! Handlers through the compiler: `[[handlers]]` become steps of their own list, a step's
//! `notify` travels with the step, `flush_handlers` becomes the runner's flush point, and each
//! host's pending-notifications file comes from its vars. The built-in base playbook restarts
//! journald through one.

mod common;

use common::compile;
use provision_engine::handlers::DEFAULT_PENDING_FILE;
use provision_engine::step::Check;
use std::path::Path;

const INVENTORY: &str = r#"
name = "t"
[[hosts]]
name = "web-1"
address = "203.0.113.11"
roles = ["worker"]

[[hosts]]
name = "web-2"
address = "203.0.113.12"
roles = ["worker"]
vars = { pending_handlers_file = "/srv/state/pending" }
"#;

#[test]
fn handlers_compile_apart_from_the_steps_that_notify_them() {
    let c = compile(
        INVENTORY,
        r#"
[[steps]]
name = "config"
use = "copy"
with = { content = "x\n", dest = "/etc/app.conf" }
notify = ["restart app", "restart app"]

[[steps]]
use = "flush_handlers"

[[steps]]
name = "no notify"
use = "command"
with = { run = "true" }

[[handlers]]
name = "restart app"
use = "command"
when = "host.name == 'web-1'"
with = { run = "systemctl restart app" }
"#,
    )
    .unwrap();
    let steps: Vec<(&str, Vec<String>, bool)> = c
        .steps
        .iter()
        .map(|s| (s.title(), s.notifies().to_vec(), s.flushes_handlers()))
        .collect();
    assert_eq!(
        steps,
        [
            ("config", vec!["restart app".to_string()], false),
            ("flush_handlers", vec![], true),
            ("no notify", vec![], false),
        ]
    );
    assert!(c.steps[1].targets().is_empty(), "a flush has no hosts");
    assert_eq!(c.handlers.steps.len(), 1);
    let h = &c.handlers.steps[0];
    assert_eq!(h.title(), "restart app");
    assert_eq!(h.targets(), ["web-1", "web-2"]);
    // A handler's `when` is decided per host like a step's.
    let plan = h.plan(&Default::default());
    assert!(matches!(plan.hosts["web-1"], Ok(Check::Change(_))));
    assert!(matches!(plan.hosts["web-2"], Ok(Check::Skip(_))));
    assert_eq!(c.handlers.pending_file("web-1"), DEFAULT_PENDING_FILE);
    assert_eq!(c.handlers.pending_file("web-2"), "/srv/state/pending");
}

#[test]
fn a_pending_file_var_must_be_an_absolute_file_path() {
    let e = compile(
        &INVENTORY.replace("\"/srv/state/pending\"", "\"state/pending\""),
        "[[steps]]\nuse = \"command\"\nwith = { run = \"true\" }\n",
    )
    .err()
    .unwrap();
    assert_eq!(
        e,
        "cluster.toml:8:1: error: host web-2: var `pending_handlers_file` must be the absolute path of a file, not \"state/pending\"\n  \
         help: write pending_handlers_file = \"/var/lib/provision/pending-handlers\" (where the host keeps handlers still to run), or leave it out\n\n1 error"
    );
}

/// `playbooks/base.toml` restarts journald when its configuration changed, through a handler.
#[test]
fn the_base_playbook_restarts_journald_through_a_handler() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../playbooks/base.toml");
    let c = compile(INVENTORY, &std::fs::read_to_string(path).unwrap()).unwrap();
    let journald = c
        .steps
        .iter()
        .find(|s| s.title() == "journald keeps at most 200M")
        .unwrap();
    assert_eq!(journald.notifies(), ["restart journald"]);
    let others: Vec<&str> = c
        .steps
        .iter()
        .filter(|s| !s.notifies().is_empty())
        .map(|s| s.title())
        .collect();
    assert_eq!(others, ["journald keeps at most 200M"]);
    assert_eq!(c.handlers.steps.len(), 1);
    let restart = &c.handlers.steps[0];
    assert_eq!(restart.title(), "restart journald");
    let plan = restart.plan(&Default::default());
    let Ok(Check::Change(changes)) = &plan.hosts["web-1"] else {
        panic!("{:?}", plan.hosts)
    };
    assert_eq!(
        changes[0].actions,
        [provision_engine::step::Action::run(
            "systemctl restart systemd-journald"
        )]
    );
}
