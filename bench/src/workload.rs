//! The benchmark's job, written three ways: a `provision` playbook, an Ansible playbook
//! and a pyinfra deploy. Ten steps of general kinds, all per host under `/srv/bench`
//! (a tmpfs private to each host) plus the host's own hostname:
//!
//!  1. directory `/srv/bench/app`            6. line in `limits.conf` (created if missing)
//!  2. directory `/srv/bench/run` (0750)     7. command guarded by `creates`
//!  3. template `app.conf` with host vars    8. command guarded by `unless`: set the hostname
//!  4. copy of `motd` naming the host        9. package present (`openssh-client`, installed)
//!  5. line in `sysctl.conf` (created)      10. "service running": see below
//!
//! Step 10 substitutes for a `service` step: this machine has no systemd (PID 1 is not
//! an init system), so no tool's service module can work here. All three tools instead
//! run the same guarded command: start `sleep infinity` as a daemon with
//! `start-stop-daemon` unless its pidfile names a live process.
//!
//! Guards per tool: provision uses `creates` / `unless` (checked with the step's facts,
//! batched); Ansible uses `creates` and, for `unless`, one `shell` task that tests and
//! acts, with `changed_when` (one round trip, as cheap as Ansible can express it);
//! pyinfra has no guards on `server.shell`, so the test is inlined (`test || act`):
//! one command per host each run, reported as a change every time.

use crate::fleet::Fleet;
use std::fmt::Write as _;
use std::path::Path;

pub const HOSTNAME_GUARD: &str = "test \"$(hostname)\" = ";
pub const SVC_STATUS: &str = "start-stop-daemon --status --pidfile /srv/bench/run/app.pid";
pub const SVC_START: &str = "start-stop-daemon --start --background --make-pidfile --pidfile /srv/bench/run/app.pid --exec /bin/sleep -- infinity";
pub const INIT_FILE: &str = "/srv/bench/app/initialised";
pub const PACKAGE: &str = "openssh-client";

fn http_port(i: usize) -> usize {
    8000 + i % 1000
}

fn workers(i: usize) -> usize {
    2 + i % 7
}

/// What `app.conf` must hold on host `i` after a run, whichever tool made it.
pub fn expected_listen_line(fleet: &Fleet, i: usize) -> String {
    format!("listen = {}:{}", fleet.hosts[i].private_ip, http_port(i))
}

/// How the package step is written for `provision`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PackageStep {
    /// `use = "apt"`, as a user writes it.
    Apt,
    /// A `command` step guarded by `dpkg-query` alone: what the `apt` step's facts
    /// cost once they skip `apt-cache policy` for packages already installed (proposed
    /// fix; on this machine `apt-cache policy` takes about 2.4 s, see the README).
    DpkgGuard,
}

/// `provision`: cluster.toml (hosts 0..n) + playbook.toml + template, in `dir`.
pub fn write_provision(dir: &Path, fleet: &Fleet, n: usize, package: PackageStep) {
    std::fs::create_dir_all(dir).unwrap();
    let mut inv = format!(
        "name = \"bench\"\nplaybook = \"playbook.toml\"\n\n[ssh]\nuser = \"root\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\nhost_key_policy = \"strict\"\n",
        fleet.key.display(),
        fleet.known_hosts.display()
    );
    for (i, h) in fleet.hosts[..n].iter().enumerate() {
        let _ = write!(
            inv,
            "\n[[hosts]]\nname = \"{}\"\naddress = \"{}\"\nport = {}\nprivate_ip = \"{}\"\nroles = [\"worker\"]\nvars = {{ http_port = {}, workers = {} }}\n",
            h.name,
            h.addr,
            h.port,
            h.private_ip,
            http_port(i),
            workers(i)
        );
    }
    std::fs::write(dir.join("cluster.toml"), inv).unwrap();
    std::fs::write(
        dir.join("app.conf.j2"),
        "# {{ host.name }}: managed by the benchmark\nname = {{ host.name }}\nlisten = {{ host.private_ip }}:{{ vars.http_port }}\nworkers = {{ vars.workers }}\n",
    )
    .unwrap();
    let playbook = format!(
        r#"# The benchmark's 10-step job (bench/src/workload.rs).

[[steps]]
name = "app directory"
use = "directory"
with = {{ path = "/srv/bench/app", mode = "0755" }}

[[steps]]
name = "run directory"
use = "directory"
with = {{ path = "/srv/bench/run", mode = "0750" }}

[[steps]]
name = "app config from a template with host vars"
use = "template"
with = {{ src = "app.conf.j2", dest = "/srv/bench/app/app.conf", mode = "0644" }}

[[steps]]
name = "motd"
use = "copy"
with = {{ content = "{{{{ host.name }}}} is managed by the benchmark\n", dest = "/srv/bench/motd", mode = "0644" }}

[[steps]]
name = "swappiness line"
use = "line"
with = {{ path = "/srv/bench/app/sysctl.conf", regexp = "^vm.swappiness", line = "vm.swappiness = 10", create = true }}

[[steps]]
name = "nofile line"
use = "line"
with = {{ path = "/srv/bench/app/limits.conf", regexp = "^nofile", line = "nofile = 65536", create = true }}

[[steps]]
name = "one-time init (creates)"
use = "command"
with = {{ run = "date > {INIT_FILE}", creates = "{INIT_FILE}" }}

[[steps]]
name = "hostname (unless)"
use = "command"
with = {{ run = "hostname {{{{ host.name }}}}", unless = '{HOSTNAME_GUARD}{{{{ host.name }}}}' }}

{{package_step}}

# Substitute for `service` (no systemd on this machine): the same guarded command for all tools.
[[steps]]
name = "app service running (unless)"
use = "command"
with = {{ run = "{SVC_START}", unless = "{SVC_STATUS}" }}
"#
    );
    let package_step = match package {
        PackageStep::Apt => format!(
            "[[steps]]\nname = \"package present\"\nuse = \"apt\"\nwith = {{ packages = [\"{PACKAGE}\"], state = \"present\" }}\n"
        ),
        PackageStep::DpkgGuard => format!(
            "[[steps]]\nname = \"package present (dpkg-query guard)\"\nuse = \"command\"\nwith = {{ run = \"DEBIAN_FRONTEND=noninteractive apt-get install -y -q {PACKAGE}\", unless = \"dpkg-query -W -f='${{db:Status-Abbrev}}' {PACKAGE} | grep -q '^ii'\" }}\n"
        ),
    };
    let playbook = playbook.replace("{package_step}", &package_step);
    std::fs::write(dir.join("playbook.toml"), playbook).unwrap();
}

/// Ansible: ansible.cfg (forks = n, pipelining, host keys checked against the fleet's
/// known_hosts, the hosts' system Python: discovery would pick root's pyenv shim, which
/// the targets' non-interactive shells cannot run), inventory.ini, and two playbooks: facts gathered (`site.yml`) and not
/// (`site-nofacts.yml`).
pub fn write_ansible(dir: &Path, fleet: &Fleet, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = format!(
        "[defaults]\ninventory = inventory.ini\nforks = {n}\nhost_key_checking = True\nretry_files_enabled = False\n\
         local_tmp = {dir}/local-tmp\ninterpreter_python = /usr/bin/python3\n\n\
         [ssh_connection]\npipelining = True\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("ansible.cfg"), cfg).unwrap();
    let mut inv = String::from("[bench]\n");
    for (i, h) in fleet.hosts[..n].iter().enumerate() {
        let _ = writeln!(
            inv,
            "{} ansible_host={} ansible_port={} private_ip={} http_port={} workers={}",
            h.name,
            h.addr,
            h.port,
            h.private_ip,
            http_port(i),
            workers(i)
        );
    }
    let _ = write!(
        inv,
        "\n[bench:vars]\nansible_user=root\nansible_ssh_private_key_file={}\nansible_ssh_common_args='-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'\n",
        fleet.key.display(),
        fleet.known_hosts.display()
    );
    std::fs::write(dir.join("inventory.ini"), inv).unwrap();
    std::fs::write(
        dir.join("app.conf.j2"),
        "# {{ inventory_hostname }}: managed by the benchmark\nname = {{ inventory_hostname }}\nlisten = {{ private_ip }}:{{ http_port }}\nworkers = {{ workers }}\n",
    )
    .unwrap();
    for (file, facts) in [("site.yml", "true"), ("site-nofacts.yml", "false")] {
        let pb = format!(
            r#"# The benchmark's 10-step job (bench/src/workload.rs).
- hosts: all
  gather_facts: {facts}
  tasks:
    - name: app directory
      file: {{ path: /srv/bench/app, state: directory, mode: "0755" }}
    - name: run directory
      file: {{ path: /srv/bench/run, state: directory, mode: "0750" }}
    - name: app config from a template with host vars
      template: {{ src: app.conf.j2, dest: /srv/bench/app/app.conf, mode: "0644" }}
    - name: motd
      copy: {{ content: "{{{{ inventory_hostname }}}} is managed by the benchmark\n", dest: /srv/bench/motd, mode: "0644" }}
    - name: swappiness line
      lineinfile: {{ path: /srv/bench/app/sysctl.conf, regexp: '^vm.swappiness', line: 'vm.swappiness = 10', create: true }}
    - name: nofile line
      lineinfile: {{ path: /srv/bench/app/limits.conf, regexp: '^nofile', line: 'nofile = 65536', create: true }}
    - name: one-time init (creates)
      shell: date > {INIT_FILE}
      args: {{ creates: {INIT_FILE} }}
    - name: hostname (unless)
      shell: '{HOSTNAME_GUARD}{{{{ inventory_hostname }}}} && echo unchanged || hostname {{{{ inventory_hostname }}}}'
      register: hn
      changed_when: "'unchanged' not in hn.stdout"
    - name: package present
      apt: {{ name: {PACKAGE}, state: present }}
    - name: app service running (unless)
      shell: '{SVC_STATUS} && echo unchanged || {SVC_START}'
      register: svc
      changed_when: "'unchanged' not in svc.stdout"
"#
        );
        std::fs::write(dir.join(file), pb).unwrap();
    }
}

/// pyinfra: inventory.py (hosts 0..n with their data) and deploy.py.
pub fn write_pyinfra(dir: &Path, fleet: &Fleet, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut inv = format!(
        "COMMON = dict(ssh_user=\"root\", ssh_key=\"{}\", ssh_known_hosts_file=\"{}\", ssh_strict_host_key_checking=\"yes\")\n\nhosts = [\n",
        fleet.key.display(),
        fleet.known_hosts.display()
    );
    for (i, h) in fleet.hosts[..n].iter().enumerate() {
        let _ = writeln!(
            inv,
            "    (\"{}\", dict(COMMON, ssh_hostname=\"{}\", ssh_port={}, private_ip=\"{}\", http_port={}, workers={})),",
            h.name,
            h.addr,
            h.port,
            h.private_ip,
            http_port(i),
            workers(i)
        );
    }
    inv.push_str("]\n");
    std::fs::write(dir.join("inventory.py"), inv).unwrap();
    std::fs::write(
        dir.join("app.conf.j2"),
        "# {{ host.name }}: managed by the benchmark\nname = {{ host.name }}\nlisten = {{ host.data.private_ip }}:{{ host.data.http_port }}\nworkers = {{ host.data.workers }}\n",
    )
    .unwrap();
    let deploy = format!(
        r#"# The benchmark's 10-step job (bench/src/workload.rs).
from io import StringIO

from pyinfra import host
from pyinfra.operations import apt, files, server

files.directory(name="app directory", path="/srv/bench/app", mode="755")
files.directory(name="run directory", path="/srv/bench/run", mode="750")
files.template(name="app config from a template with host vars", src="app.conf.j2", dest="/srv/bench/app/app.conf", mode="644")
files.put(name="motd", src=StringIO(f"{{host.name}} is managed by the benchmark\n"), dest="/srv/bench/motd", mode="644")
files.line(name="swappiness line", path="/srv/bench/app/sysctl.conf", line="^vm.swappiness", replace="vm.swappiness = 10")
files.line(name="nofile line", path="/srv/bench/app/limits.conf", line="^nofile", replace="nofile = 65536")
server.shell(name="one-time init (creates)", commands=["test -e {INIT_FILE} || date > {INIT_FILE}"])
server.shell(name="hostname (unless)", commands=[f'{HOSTNAME_GUARD}{{host.name}} || hostname {{host.name}}'])
apt.packages(name="package present", packages=["{PACKAGE}"])
server.shell(name="app service running (unless)", commands=["{SVC_STATUS} || {SVC_START}"])
"#,
        HOSTNAME_GUARD = HOSTNAME_GUARD.replace('"', "\\\"")
    );
    std::fs::write(dir.join("deploy.py"), deploy).unwrap();
}

/// Checks that host `i` converged, whichever tool ran: config, lines, hostname, daemon.
pub fn verify_host(fleet: &Fleet, i: usize) -> Result<(), String> {
    let name = &fleet.hosts[i].name;
    let script = format!(
        "cat /srv/bench/app/app.conf /srv/bench/motd /srv/bench/app/sysctl.conf /srv/bench/app/limits.conf && test -e {INIT_FILE} && hostname && {SVC_STATUS} && echo svc-running"
    );
    let out = fleet
        .ssh(i, &script)
        .ok_or_else(|| format!("{name}: verification command failed"))?;
    let want = [
        expected_listen_line(fleet, i),
        format!("{name} is managed by the benchmark"),
        "vm.swappiness = 10".into(),
        "nofile = 65536".into(),
        "svc-running".into(),
    ];
    for w in want {
        if !out.contains(&w) {
            return Err(format!("{name}: `{w}` missing in:\n{out}"));
        }
    }
    if !out.lines().any(|l| l.trim() == name) {
        return Err(format!("{name}: hostname not set:\n{out}"));
    }
    Ok(())
}
