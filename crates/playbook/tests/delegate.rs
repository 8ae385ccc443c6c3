//! `on = "HOST"` through the compiler: the host each target runs on (a template rendered per
//! target, the target itself dropped), and every bad `on` an error at its line and column.

mod common;

use provision_playbook::compile::Compiled;

const INVENTORY: &str = r#"
name = "t"
[vars]
backup_host = "lb-1"

[[hosts]]
name = "web-1"
address = "203.0.113.11"
roles = ["worker"]

[[hosts]]
name = "web-2"
address = "203.0.113.12"
roles = ["worker"]
vars = { backup_host = "web-2" }

[[hosts]]
name = "lb-1"
address = "203.0.113.20"
roles = ["lb"]

[groups.front]
hosts = ["lb-1"]
"#;

fn compile(playbook: &str) -> Result<Compiled, String> {
    common::compile(INVENTORY, playbook)
}

fn delegates(c: &Compiled) -> Vec<(String, Option<String>)> {
    c.steps[0]
        .targets()
        .into_iter()
        .map(|h| {
            let d = c.steps[0].delegate(&h).map(str::to_string);
            (h, d)
        })
        .collect()
}

#[test]
fn on_names_where_each_target_runs() {
    let c = compile(
        r#"
[[steps]]
name = "drain"
use = "command"
hosts = "web-*"
on = "lb-1"
with = { run = "haproxy-drain {{ host.name }}" }
"#,
    )
    .unwrap();
    assert_eq!(
        delegates(&c),
        [
            ("web-1".to_string(), Some("lb-1".to_string())),
            ("web-2".into(), Some("lb-1".into()))
        ]
    );
    // A template is rendered per target: web-2's own var names itself, so it runs at home.
    let c = compile(
        r#"
[[steps]]
use = "command"
hosts = "web-*"
on = "{{ vars.backup_host }}"
with = { run = "true" }
"#,
    )
    .unwrap();
    assert_eq!(
        delegates(&c),
        [
            ("web-1".to_string(), Some("lb-1".to_string())),
            ("web-2".into(), None)
        ]
    );
    // The delegate need not be among the step's hosts; a step without `on` runs at home.
    let c = compile("[[steps]]\nuse = \"command\"\nhosts = \"web-1\"\nwith = { run = \"true\" }\n")
        .unwrap();
    assert_eq!(delegates(&c), [("web-1".to_string(), None)]);
}

#[test]
fn a_bad_on_is_an_error_at_its_value() {
    let err = |on: &str| {
        compile(&format!(
            "[[steps]]\nname = \"s\"\nuse = \"command\"\nhosts = \"web-1\"\non = {on}\nwith = {{ run = \"true\" }}\n"
        ))
        .map(|_| ())
        .unwrap_err()
    };
    assert_eq!(
        err("\"lb-2\""),
        "site.toml:5:6: error: step `s`: `on` names `lb-2`, which is no host of the inventory\n  help: did you mean `lb-1`?\n\n1 error"
    );
    assert_eq!(
        err("\"front\""),
        "site.toml:5:6: error: step `s`: `on` names `front`, which is no host of the inventory\n  help: `front` is a group: `on` takes one host, e.g. on = \"lb-1\"\n\n1 error"
    );
    assert_eq!(
        err("\"database\""),
        "site.toml:5:6: error: step `s`: `on` names `database`, which is no host of the inventory\n  help: hosts of the inventory: web-1, web-2, lb-1\n\n1 error"
    );
    assert_eq!(
        err("\"{{ vars.backup_host }}-x\""),
        "site.toml:5:6: error: step `s`, host web-1: `on = \"{{ vars.backup_host }}-x\"` is `lb-1-x`, which is no host of the inventory\n  help: did you mean `lb-1`?\n\n1 error"
    );
    assert!(
        err("\"{{ vars.nope }}\"")
            .starts_with("site.toml:5:6: error: step `s`, host web-1: `on`: "),
        "an undefined var"
    );
    assert_eq!(
        err("\"{{ '' }}\""),
        "site.toml:5:6: error: step `s`, host web-1: `on = \"{{ '' }}\"` is ``: an empty host name\n  help: `on` must name one host of the inventory\n\n1 error"
    );
    assert!(err("\"\"").starts_with("site.toml:5:6: error: `on` in step `s` must not be empty"));
    assert!(
        err("true")
            .starts_with("site.toml:5:6: error: `on` in step `s` must be a string, not a boolean")
    );
}

/// A cluster step decides over several hosts and runs its commands where the swarm needs them:
/// `on` is refused there.
#[test]
fn on_is_refused_on_cluster_steps() {
    for uses in [
        "swarm_init",
        "swarm_join",
        "node_labels",
        "node_availability",
        "stack_deploy",
    ] {
        let e = compile(&format!(
            "[[steps]]\nname = \"s\"\nuse = \"{uses}\"\non = \"lb-1\"\n"
        ))
        .map(|_| ())
        .unwrap_err();
        assert_eq!(
            e,
            format!(
                "site.toml:4:6: error: step `s`: `on` cannot be used with `{uses}`, which decides over several hosts at once and runs each command where the swarm needs it\n  help: remove `on`; `on` is for steps that work on one host at a time (command, copy, template, ...)\n\n1 error"
            )
        );
    }
}
