//! Rollouts through the compiler: a step's own `serial` and `max_fail_percentage` over the
//! play's, and a run-once step whose hosts are only those whose `when` is true (the runner runs
//! it on the first of them).

mod common;

use provision_engine::rollout::{BatchSize, Rollout, Serial};
use provision_playbook::compile::Compiled;

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
vars = { primary = true }

[[hosts]]
name = "web-3"
address = "203.0.113.13"
roles = ["worker"]
vars = { primary = true }
"#;

fn compile(playbook: &str) -> Compiled {
    common::compile(INVENTORY, playbook).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_steps_own_rollout_wins_over_the_plays() {
    let c = compile(
        r#"
serial = "50%"
max_fail_percentage = 10

[[steps]]
name = "inherits"
use = "command"
with = { run = "true" }

[[steps]]
name = "own"
use = "command"
serial = [1, 2]
max_fail_percentage = 0
with = { run = "true" }

[[handlers]]
name = "h"
use = "command"
with = { run = "true" }
"#,
    );
    let half = Some(Serial(vec![BatchSize::Percent(50)]));
    assert_eq!(
        *c.steps[0].rollout(),
        Rollout {
            serial: half.clone(),
            max_fail_percentage: Some(10),
            run_once: false
        }
    );
    assert_eq!(
        *c.steps[1].rollout(),
        Rollout {
            serial: Some(Serial(vec![BatchSize::Hosts(1), BatchSize::Hosts(2)])),
            max_fail_percentage: Some(0),
            run_once: false
        }
    );
    assert_eq!(c.handlers.steps[0].rollout().serial, half, "handlers too");
    let plain = compile("[[steps]]\nuse = \"command\"\nwith = { run = \"true\" }\n");
    assert!(plain.steps[0].rollout().is_default());
}

#[test]
fn a_run_once_step_keeps_only_the_hosts_whose_when_is_true() {
    let c = compile(
        r#"
[[steps]]
name = "migrate"
use = "command"
run_once = true
when = "vars.primary | default(false)"
with = { run = "true" }

[[steps]]
name = "everywhere"
use = "command"
when = "vars.primary | default(false)"
with = { run = "true" }
"#,
    );
    assert!(c.steps[0].rollout().run_once);
    assert_eq!(
        c.steps[0].targets(),
        ["web-2", "web-3"],
        "web-1's when is false"
    );
    assert_eq!(c.origins[0].runs_on, ["web-2", "web-3"]);
    assert_eq!(
        c.steps[1].targets(),
        ["web-1", "web-2", "web-3"],
        "without run_once a false when is a skip, reported"
    );
}
