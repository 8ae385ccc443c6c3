//! Integration tests of the configuration layer: inventories, selectors and playbook files,
//! asserting the exact text of every diagnostic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use provision_engine::diagnostic::{ConfigError, Severity};
use provision_engine::inventory::{Inventory, InventoryRules, Role};
use provision_engine::playbook_file::PlaybookFile;
use provision_engine::selector::Selector;
use provision_transport::HostKeyPolicy;

const STEPS: &[&str] = &["apt", "file", "systemd", "swarm_init"];

/// Relative, as a user would type it: diagnostics show paths as given (tests run in the crate dir).
fn fixture(name: &str) -> PathBuf {
    Path::new("tests/fixtures/config").join(name)
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../inventories")
        .join(name)
}

/// The rules the swarm playbook asks for.
fn swarm() -> InventoryRules {
    InventoryRules {
        require_manager: true,
        require_private_ip: true,
    }
}

fn inventory_error(name: &str, rules: &InventoryRules) -> String {
    match Inventory::load(&fixture(name), rules) {
        Ok(_) => panic!("{name} loaded"),
        Err(e) => e.to_string(),
    }
}

fn playbook_error(name: &str) -> String {
    match PlaybookFile::load(&fixture(&format!("playbooks/{name}")), STEPS) {
        Ok(_) => panic!("{name} loaded"),
        Err(e) => e.to_string(),
    }
}

fn names(hosts: &[&provision_engine::inventory::Host]) -> Vec<String> {
    hosts.iter().map(|h| h.name.clone()).collect()
}

#[test]
fn production_example_loads() {
    let path = example("production.toml");
    let inv = Inventory::load(&path, &swarm()).unwrap_or_else(|e| panic!("{e}"));
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    assert_eq!(inv.name, "prod");
    let all: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        all,
        [
            "storage-1",
            "manager-1",
            "manager-2",
            "manager-3",
            "worker-1",
            "worker-2",
            "worker-3",
            "worker-4",
            "worker-5",
            "lb-1"
        ]
    );
    let count = |r: Role| inv.hosts.iter().filter(|h| h.has_role(r)).count();
    assert_eq!(
        (
            count(Role::Storage),
            count(Role::Manager),
            count(Role::Worker),
            count(Role::Lb)
        ),
        (1, 3, 5, 1)
    );
    assert_eq!(inv.managers().count(), 3);
    assert_eq!(inv.hosts.iter().filter(|h| h.is_swarm_node()).count(), 8);

    // Paths are absolute and resolved against the inventory's directory.
    let dir = std::path::absolute(path.parent().unwrap()).unwrap();
    assert_eq!(inv.dir, dir);
    assert_eq!(inv.playbook, None);
    assert_eq!(inv.secrets, Some(dir.join("secrets.age")));
    assert_eq!(inv.ssh.known_hosts, dir.join("known_hosts"));
    assert_eq!(inv.ssh.user.as_deref(), Some("root"));
    assert_eq!(inv.ssh.host_key_policy, HostKeyPolicy::AcceptNew);
    assert_eq!(inv.ssh.connect_timeout, Some(Duration::from_secs(10)));
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        assert_eq!(
            inv.ssh.identity,
            Some(PathBuf::from(home).join(".ssh/id_ed25519"))
        );
    }

    let m1 = inv.host("manager-1").unwrap();
    assert_eq!(m1.address, "203.0.113.11");
    assert_eq!(m1.private_ip, Some("10.0.0.11".parse().unwrap()));
    assert_eq!(m1.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(m1.line, 41);
    assert!(!m1.become_sudo);
    assert_eq!(inv.ssh_port(m1), 22);

    let w5 = inv.host("worker-5").unwrap();
    assert_eq!(w5.user.as_deref(), Some("admin"));
    assert!(w5.become_sudo);
    assert_eq!(inv.host_vars(w5)["swap_size"].as_str(), Some("4G"));
    assert_eq!(inv.host_vars(m1)["swap_size"].as_str(), Some("2G"));
    assert!(inv.host("worker-9").is_none());
}

#[test]
fn minimal_example_loads() {
    let inv = Inventory::load(&example("minimal.toml"), &swarm()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inv.name, "minimal");
    assert_eq!(inv.hosts.len(), 1);
    assert_eq!(inv.hosts[0].roles, [Role::Manager]);
    assert_eq!(inv.ssh.identity, None);
    assert!(inv.warnings.is_empty());
}

#[test]
fn settings_vars_and_facts() {
    let inv = Inventory::load(&fixture("vars.toml"), &InventoryRules::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = std::path::absolute("tests/fixtures/config").unwrap();
    let ssh = &inv.ssh;
    assert_eq!(ssh.user.as_deref(), Some("deploy"));
    assert_eq!(ssh.port, Some(2200));
    assert!(ssh.become_sudo);
    assert_eq!(ssh.proxy_jump.as_deref(), Some("admin@bastion.example.com"));
    assert_eq!(ssh.identity, Some(dir.join("keys/id_ed25519")));
    assert_eq!(ssh.known_hosts, PathBuf::from("/etc/provision/known_hosts"));
    assert_eq!(ssh.host_key_policy, HostKeyPolicy::Strict);
    assert_eq!(ssh.connect_timeout, None);

    let web = &inv.hosts[0];
    assert_eq!(web.address, "web-1.example.com");
    assert_eq!(web.port, Some(22));
    assert_eq!(inv.ssh_port(web), 22);
    assert_eq!(web.user.as_deref(), Some("root"));
    // The [ssh] default applies to a host that does not set its own.
    assert!(web.become_sudo);
    assert_eq!(web.private_ip, Some("fd00::1".parse().unwrap()));
    assert_eq!(web.roles, [Role::Worker, Role::Lb]);
    assert!(web.is_swarm_node());

    let vars = inv.host_vars(web);
    let expected: toml::Table = toml::from_str(
        r#"
        swap_size = "4G"
        extra = true
        docker = { version = "27" }
        [host]
        name = "web-1"
        address = "web-1.example.com"
        private_ip = "fd00::1"
        roles = ["worker", "lb"]
        groups = []
        labels = { tier = "front", zone = "a" }
        "#,
    )
    .unwrap();
    assert_eq!(vars, expected);
}

#[test]
fn the_message_format_of_the_contract() {
    // Host `web-1` starts at line 12, as in the documented example.
    let text = format!(
        "name = \"c\"\n{}[[hosts]]\nname = \"web-1\"\naddress = \"203.0.113.1\"\n",
        "\n".repeat(10)
    );
    let err =
        Inventory::parse(&text, Path::new("cluster.toml"), &InventoryRules::default()).unwrap_err();
    assert_eq!(
        err.diagnostics[0].to_string(),
        "cluster.toml:12:1: error: host `web-1` has no role\n  help: add roles = [\"worker\"] (one of: storage, manager, worker, lb)"
    );
    assert_eq!(err.diagnostics.len(), 1);
    assert_eq!(err.diagnostics[0].line, 12);
    assert_eq!(err.diagnostics[0].column, 1);
}

#[test]
fn duplicate_keys_are_syntax_errors() {
    let text = "name = \"a\"\nname = \"b\"\n";
    let err = Inventory::parse(text, Path::new("c.toml"), &InventoryRules::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "c.toml:2:1: error: duplicate key `name`\n  help: a key may appear only once in a table; remove one of them\n\n1 error"
    );
}

#[test]
fn unreadable_inventory() {
    let err = Inventory::load(&fixture("nonexistent.toml"), &swarm()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tests/fixtures/config/nonexistent.toml:1:1: error: cannot read inventory: file not found\n  \
         help: pass the path of your cluster.toml (see inventories/minimal.toml for a start)\n\n1 error"
    );
}

#[test]
fn even_managers_warn_but_load() {
    let inv =
        Inventory::load(&fixture("even_managers.toml"), &swarm()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inv.hosts.len(), 2);
    assert_eq!(inv.warnings.len(), 1);
    assert_eq!(inv.warnings[0].severity, Severity::Warning);
    assert_eq!(
        inv.warnings[0].to_string(),
        "tests/fixtures/config/even_managers.toml:9:1: warning: 2 managers: an even number tolerates no more failures than 1\n  \
         help: use an odd number of managers (1, 3 or 5) so a majority, the Raft quorum, survives a failure"
    );
}

#[test]
fn no_manager_is_fine_when_not_required() {
    let rules = InventoryRules {
        require_manager: false,
        require_private_ip: true,
    };
    let inv =
        Inventory::load(&fixture("no_manager.toml"), &rules).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inv.managers().count(), 0);
}

#[test]
fn private_ip_only_when_required() {
    let inv = Inventory::load(
        &fixture("missing_private_ip.toml"),
        &InventoryRules::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inv.host("storage-1").unwrap().private_ip, None);
}

#[test]
fn a_host_named_like_a_role_warns() {
    let text =
        "name = \"c\"\n[[hosts]]\nname = \"lb\"\naddress = \"203.0.113.1\"\nroles = [\"lb\"]\n";
    let inv = Inventory::parse(text, Path::new("c.toml"), &InventoryRules::default()).unwrap();
    assert_eq!(
        inv.warnings[0].to_string(),
        "c.toml:3:8: warning: host name `lb` is also a role or group name\n  \
         help: hosts = \"lb\" in a playbook means the role or group; rename the host (e.g. `lb-1`) to target it alone"
    );
}

#[test]
fn config_error_lists_errors_first_to_last() {
    let err: ConfigError =
        Inventory::load(&fixture("roles.toml"), &InventoryRules::default()).unwrap_err();
    let lines: Vec<usize> = err.diagnostics.iter().map(|d| d.line).collect();
    assert_eq!(lines, [3, 10, 15, 15, 15, 15]);
    assert_eq!(err.errors().count(), 5);
}

#[test]
fn selectors() {
    let inv = Inventory::load(&example("production.toml"), &swarm()).unwrap();
    let select = |s: &str| names(&Selector::parse(s).unwrap().select(&inv));
    assert_eq!(select("all").len(), 10);
    assert_eq!(select("storage"), ["storage-1"]);
    assert_eq!(select("lb"), ["lb-1"]);
    assert_eq!(select("manager,worker").len(), 8);
    assert_eq!(select("swarm"), select("manager,worker"));
    assert_eq!(
        select("swarm,!manager-1"),
        [
            "manager-2",
            "manager-3",
            "worker-1",
            "worker-2",
            "worker-3",
            "worker-4",
            "worker-5"
        ]
    );
    // Inventory order, whatever the selector's order.
    assert_eq!(select("worker-2,worker-1"), ["worker-1", "worker-2"]);
    // Only exclusions: everything else.
    assert_eq!(select("!swarm"), ["storage-1", "lb-1"]);
    assert_eq!(select("all,!worker,!manager"), ["storage-1", "lb-1"]);
    assert_eq!(select("lb,manager-1"), ["manager-1", "lb-1"]);
    assert!(select("!all").is_empty());

    let m1 = inv.host("manager-1").unwrap();
    assert!(Selector::parse("manager").unwrap().matches(&inv, m1));
    assert!(!Selector::parse("swarm,!manager").unwrap().matches(&inv, m1));

    let s = Selector::parse("swarm,web-9,!web-8,!worker-1,web-9").unwrap();
    assert_eq!(s.unknown_names(&inv), ["web-9", "web-8"]);
    assert!(
        Selector::parse("all")
            .unwrap()
            .unknown_names(&inv)
            .is_empty()
    );
}

#[test]
fn playbook_parses() {
    let path = fixture("playbooks/valid.toml");
    let pb = PlaybookFile::load(&path, STEPS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pb.path, path);
    assert_eq!(pb.steps.len(), 2);

    let apt = &pb.steps[0];
    assert_eq!((apt.name.as_str(), apt.uses.as_str()), ("apt", "apt"));
    assert_eq!(apt.hosts, Selector::parse("swarm").unwrap());
    assert_eq!(apt.when, None);
    assert_eq!((apt.line, apt.column), (1, 1));
    let expected: toml::Table =
        toml::from_str("packages = [\"docker-ce\"]\nstate = \"present\"").unwrap();
    assert_eq!(apt.with, expected);
    assert_eq!(apt.param_positions["packages"], (4, 10));
    assert_eq!(apt.param_positions["state"], (4, 36));

    let file = &pb.steps[1];
    assert_eq!(file.name, "load balancer config");
    assert_eq!(file.uses, "file");
    assert_eq!(file.hosts.to_string(), "lb,!lb-2");
    assert_eq!(file.when.as_deref(), Some("vars.use_lb"));
    assert_eq!((file.line, file.column), (6, 1));
    assert_eq!(file.param_positions["path"], (13, 1));

    // Step constructors point at the parameter, or at the step when it is absent.
    let d = file.param_error(
        &path,
        "mode",
        "mode `0644x` is not octal".into(),
        Some("write mode = \"0644\"".into()),
    );
    assert_eq!(
        d.to_string(),
        "tests/fixtures/config/playbooks/valid.toml:14:1: error: mode `0644x` is not octal\n  help: write mode = \"0644\""
    );
    let d = file.param_error(&path, "owner", "missing `owner`".into(), None);
    assert_eq!(
        d.to_string(),
        "tests/fixtures/config/playbooks/valid.toml:6:1: error: missing `owner`"
    );
}

#[test]
fn steps_default_to_all_hosts_and_empty_with() {
    let pb = PlaybookFile::parse(
        "steps = [{ use = \"systemd\" }]\n",
        Path::new("p.toml"),
        STEPS,
    )
    .unwrap();
    let s = &pb.steps[0];
    assert_eq!(s.name, "systemd");
    assert_eq!(s.hosts, Selector::all());
    assert!(s.with.is_empty());
    assert!(s.param_positions.is_empty());
    assert_eq!((s.line, s.column), (1, 10));
}

#[test]
fn playbook_without_steps() {
    let err = PlaybookFile::parse("", Path::new("p.toml"), STEPS).unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.toml:1:1: error: no steps defined\n  help: add a [[steps]] block for each step, with use = \"<built-in step>\"\n\n1 error"
    );
}

#[test]
fn unreadable_playbook() {
    let err = PlaybookFile::load(Path::new("missing/swarm.toml"), STEPS).unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing/swarm.toml:1:1: error: cannot read playbook: file not found\n  \
         help: check `playbook` in the inventory; it is relative to the inventory file\n\n1 error"
    );
}

/// Unknown keys at every level, each with its own position and suggestion; a typo of a
/// required key does not also report it missing.
#[test]
fn unknown_keys() {
    assert_eq!(
        inventory_error("unknown_keys.toml", &swarm()),
        r#"tests/fixtures/config/unknown_keys.toml:1:1: error: unknown key `nmae`
  help: did you mean `name`?

tests/fixtures/config/unknown_keys.toml:2:1: error: unknown key `user`
  help: `user` belongs in [ssh] (the default for every host) or in a [[hosts]] block

tests/fixtures/config/unknown_keys.toml:5:1: error: unknown key `usr` in [ssh]
  help: did you mean `user`?

tests/fixtures/config/unknown_keys.toml:7:1: error: host `web-1` has no private_ip
  help: add private_ip = "10.0.0.x", its address on the cluster network (storage, manager and worker hosts need one)

tests/fixtures/config/unknown_keys.toml:7:1: error: no host has the manager role
  help: add "manager" to the roles of one host (three for fault tolerance)

tests/fixtures/config/unknown_keys.toml:9:1: error: unknown key `adress` in host `web-1`
  help: did you mean `address`?

tests/fixtures/config/unknown_keys.toml:11:1: error: unknown key `hostname` in host `web-1`
  help: expected one of: name, address, port, user, become, private_ip, roles, labels, vars

7 errors"#
    );
}

/// Wrong types name the expected type and show the line to write.
#[test]
fn wrong_types() {
    assert_eq!(
        inventory_error("wrong_types.toml", &InventoryRules::default()),
        r#"tests/fixtures/config/wrong_types.toml:1:8: error: `name` must be a string, not an integer
  help: write name = "prod"

tests/fixtures/config/wrong_types.toml:4:19: error: `connect_timeout` in [ssh] must be an integer, not a float
  help: write connect_timeout = 10 (seconds)

tests/fixtures/config/wrong_types.toml:9:8: error: `port` in host `web-1` must be an integer, not a string
  help: write port = 22

tests/fixtures/config/wrong_types.toml:10:9: error: `roles` in host `web-1` must be an array, not a string
  help: write roles = ["manager"]

tests/fixtures/config/wrong_types.toml:11:10: error: `labels` in host `web-1` must be a table, not a string
  help: write labels = { zone = "a" }

5 errors"#
    );
}

/// Duplicate names, address+port pairs (with the [ssh] default port) and private IPs.
#[test]
fn duplicates() {
    assert_eq!(
        inventory_error("duplicates.toml", &InventoryRules::default()),
        r#"tests/fixtures/config/duplicates.toml:13:8: error: host name `web-1` is already used at line 6
  help: give every host a unique name

tests/fixtures/config/duplicates.toml:19:11: error: host `web-3` has the same address and port (203.0.113.11:2222) as host `web-1` at line 6
  help: give each host its own address, or its own port when they share one

tests/fixtures/config/duplicates.toml:21:14: error: host `web-3` has the same private_ip (10.0.0.1) as host `web-1` at line 6
  help: give every host its own private_ip

3 errors"#
    );
}

/// Missing, empty and unknown roles; a repeated role only warns.
#[test]
fn roles() {
    assert_eq!(
        inventory_error("roles.toml", &InventoryRules::default()),
        r#"tests/fixtures/config/roles.toml:3:1: error: host `web-1` has no role
  help: add roles = ["worker"] (one of: storage, manager, worker, lb)

tests/fixtures/config/roles.toml:10:9: error: host `web-2` has no role
  help: add roles = ["worker"] (one of: storage, manager, worker, lb)

tests/fixtures/config/roles.toml:15:10: error: unknown role `mananger` in host `web-3`
  help: did you mean `manager`? (one of: storage, manager, worker, lb)

tests/fixtures/config/roles.toml:15:22: error: unknown role `swarm` in host `web-3`
  help: `swarm` is a selector group (managers and workers), not a role: write "manager" or "worker"

tests/fixtures/config/roles.toml:15:31: error: unknown role `database` in host `web-3`
  help: use one of: storage, manager, worker, lb

tests/fixtures/config/roles.toml:15:53: warning: role `worker` is listed twice in host `web-3`
  help: remove one

5 errors, 1 warning"#
    );
}

/// Out-of-range ports, bad IPs and addresses, invalid hostnames, bad labels and [ssh] values,
/// all in one pass.
#[test]
fn bad_values() {
    assert_eq!(
        inventory_error("bad_values.toml", &InventoryRules::default()),
        r#"tests/fixtures/config/bad_values.toml:4:19: error: unknown host_key_policy `strikt`
  help: did you mean `strict`? (one of: strict, accept-new)

tests/fixtures/config/bad_values.toml:5:19: error: `connect_timeout` in [ssh] must be a positive number of seconds, not 0
  help: write connect_timeout = 10 (seconds)

tests/fixtures/config/bad_values.toml:6:10: error: unsupported become method `su`
  help: write become = "sudo" (the only supported method), or remove it to run as the SSH user

tests/fixtures/config/bad_values.toml:7:8: error: `port` in [ssh] must be between 1 and 65535, not 70000
  help: write port = 22, or the port sshd listens on

tests/fixtures/config/bad_values.toml:10:8: error: host name `web_1` is not a valid hostname
  help: use letters, digits and hyphens (at most 63, not first or last), e.g. name = "web-1"

tests/fixtures/config/bad_values.toml:11:11: error: address `203.0.113.11:2222` is not an IP address or hostname
  help: put the port in its own key: address = "203.0.113.11" and port = 2222

tests/fixtures/config/bad_values.toml:12:8: error: `port` in host `web_1` must be between 1 and 65535, not 0
  help: write port = 22, or the port sshd listens on

tests/fixtures/config/bad_values.toml:13:14: error: private_ip `10.0.0.300` is not an IP address
  help: write an IPv4 or IPv6 address, e.g. private_ip = "10.0.0.11"

tests/fixtures/config/bad_values.toml:17:8: error: host name `-db-` is not a valid hostname
  help: use letters, digits and hyphens (at most 63, not first or last), e.g. name = "db"

tests/fixtures/config/bad_values.toml:18:11: error: address `bad address` is not an IP address or hostname
  help: write an IP address or DNS name, e.g. address = "203.0.113.10"

tests/fixtures/config/bad_values.toml:19:14: error: private_ip `10.0.0.2/24` is not an IP address
  help: drop the prefix length: private_ip = "10.0.0.2"

tests/fixtures/config/bad_values.toml:21:19: error: label `zone` in host `-db-` has an empty value
  help: write zone = "a", or remove the label

tests/fixtures/config/bad_values.toml:21:30: error: label `rack` in host `-db-` must be a string, not an integer
  help: write rack = "3"

tests/fixtures/config/bad_values.toml:21:33: error: a label name in host `-db-` is empty
  help: name the label, e.g. labels = { zone = "a" }

14 errors"#
    );
}

/// Missing required keys point at the top of the file or at the host.
#[test]
fn missing_required() {
    assert_eq!(
        inventory_error("missing_required.toml", &InventoryRules::default()),
        r#"tests/fixtures/config/missing_required.toml:1:1: error: missing required key `name`
  help: add name = "prod" at the top of the file: the cluster's name

tests/fixtures/config/missing_required.toml:2:1: error: host #1 has no name
  help: add name = "web-1" (it also becomes the server's hostname)

tests/fixtures/config/missing_required.toml:2:1: error: host #1 has no address
  help: add address = "203.0.113.10": the IP address or DNS name SSH connects to

3 errors"#
    );
}

/// An empty hosts list.
#[test]
fn empty_hosts() {
    assert_eq!(
        inventory_error("empty_hosts.toml", &InventoryRules::default()),
        r#"tests/fixtures/config/empty_hosts.toml:2:9: error: no hosts defined
  help: add a [[hosts]] block for each server, with name, address and roles

1 error"#
    );
}

/// No hosts at all.
#[test]
fn no_hosts() {
    assert_eq!(
        inventory_error("no_hosts.toml", &InventoryRules::default()),
        r#"tests/fixtures/config/no_hosts.toml:1:1: error: no hosts defined
  help: add a [[hosts]] block for each server, with name, address and roles

1 error"#
    );
}

/// [hosts] instead of [[hosts]].
#[test]
fn hosts_table() {
    assert_eq!(
        inventory_error("hosts_table.toml", &InventoryRules::default()),
        r#"tests/fixtures/config/hosts_table.toml:3:1: error: `hosts` must be an array of tables, not a table
  help: write [[hosts]] (double brackets) before each host

1 error"#
    );
}

/// A TOML syntax error; an unquoted string gets a hint.
#[test]
fn syntax_error() {
    assert_eq!(
        inventory_error("syntax_error.toml", &InventoryRules::default()),
        r#"tests/fixtures/config/syntax_error.toml:5:16: error: invalid TOML: invalid float, expected nothing
  help: strings need quotes: address = "203.0.113.11"

1 error"#
    );
}

/// `host` is reserved for facts in both kinds of vars.
#[test]
fn reserved_vars() {
    assert_eq!(
        inventory_error("reserved_vars.toml", &InventoryRules::default()),
        r#"tests/fixtures/config/reserved_vars.toml:4:1: error: var `host` in [vars] is reserved
  help: rename it: templates see the host's facts (name, address, private_ip, roles, labels) as `host`

tests/fixtures/config/reserved_vars.toml:10:10: error: var `host` in host `web-1` is reserved
  help: rename it: templates see the host's facts (name, address, private_ip, roles, labels) as `host`

2 errors"#
    );
}

/// No manager is an error only when the caller requires one
/// (see also `no_manager_is_fine_when_not_required`).
#[test]
fn no_manager() {
    assert_eq!(
        inventory_error("no_manager.toml", &swarm()),
        r#"tests/fixtures/config/no_manager.toml:3:1: error: no host has the manager role
  help: add "manager" to the roles of one host (three for fault tolerance)

1 error"#
    );
}

/// Storage, manager and worker hosts need a private_ip for the swarm playbook; lb hosts do not.
#[test]
fn missing_private_ip() {
    assert_eq!(
        inventory_error("missing_private_ip.toml", &swarm()),
        r#"tests/fixtures/config/missing_private_ip.toml:3:1: error: host `storage-1` has no private_ip
  help: add private_ip = "10.0.0.x", its address on the cluster network (storage, manager and worker hosts need one)

1 error"#
    );
}

/// Unknown steps: a suggestion when one is close, else the list.
#[test]
fn playbook_unknown_step() {
    assert_eq!(
        playbook_error("unknown_step.toml"),
        r#"tests/fixtures/config/playbooks/unknown_step.toml:2:7: error: unknown step `aptt`
  help: did you mean `apt`?

tests/fixtures/config/playbooks/unknown_step.toml:5:7: error: unknown step `frobnicate`
  help: built-in steps: apt, file, systemd, swarm_init

2 errors"#
    );
}

/// An unknown top-level key; `steps` is not reported missing as well.
#[test]
fn playbook_unknown_top_key() {
    assert_eq!(
        playbook_error("unknown_top_key.toml"),
        r#"tests/fixtures/config/playbooks/unknown_top_key.toml:1:3: error: unknown key `step`
  help: did you mean `steps`?

1 error"#
    );
}

/// A malformed selector and a selector of the wrong type.
#[test]
fn playbook_bad_selector() {
    assert_eq!(
        playbook_error("bad_selector.toml"),
        r#"tests/fixtures/config/playbooks/bad_selector.toml:4:9: error: bad hosts selector `manager,,worker` in step `docker`: empty term between separators (`,` or `:`)
  help: write terms joined by `,` or `:`: all, a role (storage, manager, worker, lb), swarm, a group, a host name or a glob (web-*); &term intersects, !term excludes, e.g. hosts = "web:&prod,!web-3"

tests/fixtures/config/playbooks/bad_selector.toml:8:9: error: `hosts` in step `file` must be a string, not an array
  help: write hosts = "swarm"

2 errors"#
    );
}

/// `with` must be a table; unknown step keys get a suggestion.
#[test]
fn playbook_with_not_table() {
    assert_eq!(
        playbook_error("with_not_table.toml"),
        r#"tests/fixtures/config/playbooks/with_not_table.toml:3:8: error: `with` in step `apt` must be a table, not a string
  help: write with = { packages = ["nginx"] }

tests/fixtures/config/playbooks/with_not_table.toml:4:1: error: unknown key `withh` in step `apt`
  help: did you mean `with`?

2 errors"#
    );
}

/// A step without `use`, and an empty `when`.
#[test]
fn playbook_bad_steps() {
    assert_eq!(
        playbook_error("bad_steps.toml"),
        r#"tests/fixtures/config/playbooks/bad_steps.toml:1:1: error: step `no use` has no `use`
  help: add use = "<step>" naming a built-in step (apt, file, systemd, swarm_init)

tests/fixtures/config/playbooks/bad_steps.toml:6:8: error: `when` in step `apt` must not be empty
  help: write when = "vars.use_lb"

2 errors"#
    );
}

/// `[[secrets]]` declarations: defaults (required, no generation unless `length`), and every
/// mistake at its own position with what to write instead.
#[test]
fn secret_declarations() {
    use provision_engine::playbook_file::SecretSpec;
    use provision_secrets::Alphabet;
    let ok = "steps = [{ use = \"systemd\" }]\n\
              [[secrets]]\nname = \"app.db_pass\"\nlength = 32\n\
              [[secrets]]\nname = \"app.token\"\nrequired = false\nalphabet = \"hex\"\nlength = 16\nwhen = \"vars.x | default(false)\"\n\
              [[secrets]]\nname = \"registry.password\"\ndescription = \"from the registry\"\n";
    let pb = PlaybookFile::parse(ok, Path::new("p.toml"), STEPS).unwrap();
    assert_eq!(
        pb.secrets,
        [
            SecretSpec {
                name: "app.db_pass".into(),
                description: None,
                required: true,
                generate: Some((32, Alphabet::Alnum)),
                when: None,
                line: 2,
                column: 1,
                file: "p.toml".into(),
            },
            SecretSpec {
                name: "app.token".into(),
                description: None,
                required: false,
                generate: Some((16, Alphabet::Hex)),
                when: Some("vars.x | default(false)".into()),
                line: 5,
                column: 1,
                file: "p.toml".into(),
            },
            SecretSpec {
                name: "registry.password".into(),
                description: Some("from the registry".into()),
                required: true,
                generate: None,
                when: None,
                line: 11,
                column: 1,
                file: "p.toml".into(),
            },
        ]
    );

    let bad = "steps = [{ use = \"systemd\" }]\n\
               [[secrets]]\nname = \"a b\"\n\
               [[secrets]]\nname = \"x\"\nlength = 8\nalphabet = \"base64\"\nrequierd = true\n\
               [[secrets]]\nname = \"y\"\nalphabet = \"hex\"\nrequired = \"yes\"\n\
               [[secrets]]\nname = \"z\"\n[[secrets]]\nname = \"z\"\n";
    let err = PlaybookFile::parse(bad, Path::new("p.toml"), STEPS)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "p.toml:3:8: error: `name` in secret `a b` must be a dotted key of letters, digits, `_` and `-`\n  \
         help: write name = \"appwrite.db_pass\": templates read it as secrets.appwrite.db_pass\n\n\
         p.toml:6:10: error: `length` in secret `x` must be between 16 and 4096, not 8\n  \
         help: write length = 32 (characters of the generated value)\n\n\
         p.toml:7:12: error: unknown alphabet `base64` in secret `x`\n  help: did you mean `base64url`?\n\n\
         p.toml:8:1: error: unknown key `requierd` in secret `x`\n  help: did you mean `required`?\n\n\
         p.toml:11:12: error: `alphabet` in secret `y` is set but `length` is not\n  \
         help: add length = 32 so the value can be generated, or remove `alphabet`\n\n\
         p.toml:12:12: error: `required` in secret `y` must be a boolean, not a string\n  help: write required = false\n\n\
         p.toml:16:8: error: secret `z` is declared twice (first at line 13)\n  \
         help: declare each secret once; use `when` for the cases that need it\n\n7 errors"
    );
}

/// `timeout` on a step: seconds, positive; anything else points at the value.
#[test]
fn a_step_timeout_is_a_positive_number_of_seconds() {
    let ok = "[[steps]]\nuse = \"apt\"\ntimeout = 90\n";
    let pb = PlaybookFile::parse(ok, Path::new("p.toml"), STEPS).unwrap();
    assert_eq!(pb.steps[0].timeout, Some(Duration::from_secs(90)));
    for (bad, message) in [
        (
            "timeout = 0",
            "p.toml:3:11: error: `timeout` in step `apt` must be a positive number of seconds, not 0\n  help: write timeout = 600 (seconds)",
        ),
        (
            "timeout = \"10m\"",
            "p.toml:3:11: error: `timeout` in step `apt` must be an integer, not a string\n  help: write timeout = 600 (seconds)",
        ),
    ] {
        let e = PlaybookFile::parse(&ok.replace("timeout = 90", bad), Path::new("p.toml"), STEPS)
            .unwrap_err()
            .to_string();
        assert_eq!(e, format!("{message}\n\n1 error"));
    }
}

/// IPv6 addresses are written bare, as `private_ip` is; the bracketed URL form is
/// refused with the exact fix, port included.
#[test]
fn ipv6_addresses_are_bare_and_brackets_are_explained() {
    let text = "name = \"t\"\n[[hosts]]\nname = \"m1\"\naddress = \"fd00::1\"\nport = 2222\nprivate_ip = \"fd00:10::1\"\nroles = [\"manager\"]\n";
    let inv = Inventory::parse(text, Path::new("c.toml"), &InventoryRules::default()).unwrap();
    assert_eq!(inv.hosts[0].address, "fd00::1");
    // Docker 20.10's overlays do not work over an IPv6 underlay: said once, at the address.
    let warnings: Vec<String> = inv.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("c.toml:6:14: warning: host `m1` has an IPv6 private_ip: the swarm's control plane, joins and NFS work over IPv6, but Docker's overlay networks do not carry traffic"),
        "{}",
        warnings[0]
    );
    assert_eq!(inv.hosts[0].private_ip.unwrap().to_string(), "fd00:10::1");
    for (written, help) in [
        (
            "[fd00::1]:2222",
            "write the address without brackets and the port in its own key: address = \"fd00::1\" and port = 2222",
        ),
        (
            "[fd00::1]",
            "write the address without brackets: address = \"fd00::1\"",
        ),
    ] {
        let e = Inventory::parse(
            &text
                .replace("\"fd00::1\"", &format!("\"{written}\""))
                .replace("fd00:10::1", "10.0.0.1"),
            Path::new("c.toml"),
            &InventoryRules::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            format!(
                "c.toml:4:11: error: address `{written}` is not an IP address or hostname\n  help: {help}\n\n1 error"
            )
        );
    }
}
