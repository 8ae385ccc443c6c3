//! `provision import-ansible`: an Ansible playbook (and optionally its inventory) to provision
//! TOML. What converts is written; what does not is named with its YAML file and line, and the
//! command then exits 3 (`EXIT_UNCONVERTED`), so a port is never silently partial.

mod convert;
mod emit;
mod inventory;
mod jinja;
mod yaml;

use crate::exit::{EXIT_UNCONVERTED, config_failure};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(after_help = "Exit codes:
  0    everything was converted
  1    the output could not be written
  2    bad input: the playbook or inventory cannot be read, or an output file exists (--force)
  3    the TOML was written, but something was left unconverted: the report names each part
       at its YAML file:line, and its step is written commented out")]
pub struct ImportArgs {
    /// The Ansible playbook (YAML). Its roles are read from `roles/` beside it.
    pub playbook: PathBuf,
    /// An Ansible inventory (INI or YAML): also writes cluster.toml.
    #[arg(short, long)]
    pub inventory: Option<PathBuf>,
    /// Where to write playbook.toml (and cluster.toml, templates/, files/).
    #[arg(short, long, default_value = ".")]
    pub out: PathBuf,
    /// Overwrite files that exist in the output directory.
    #[arg(long)]
    pub force: bool,
}

/// Everything the command writes, relative to the output directory, and its report.
pub struct Import {
    pub files: Vec<(PathBuf, Vec<u8>)>,
    pub converted: convert::Converted,
    pub inventory_problems: Vec<convert::Problem>,
    pub inventory_notes: Vec<convert::Problem>,
}

/// Pure but for reading the inputs through `read`: the files to write and what was left out.
pub fn import(
    playbook: &Path,
    inventory: Option<(&Path, &str)>,
    read: &dyn Fn(&Path) -> Option<Vec<u8>>,
) -> Import {
    let inv = inventory.map(|(p, text)| inventory::read(p, text));
    let known: BTreeSet<String> = inv.iter().flat_map(|i| i.var_names()).collect();
    let base = playbook.parent().unwrap_or(Path::new(""));
    let c = convert::Converter::new(base, known, read).playbook(playbook);
    let mut files: Vec<(PathBuf, Vec<u8>)> = c
        .files
        .iter()
        .map(|f| (PathBuf::from(&f.path), emit::file(f).into_bytes()))
        .collect();
    for d in &c.role_defaults {
        files.push((PathBuf::from(&d.path), emit::role_defaults(d).into_bytes()));
    }
    for a in &c.assets {
        files.push((PathBuf::from(&a.dest), a.content.clone()));
    }
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    // Role defaults that the playbook's own steps and templates read (Ansible shows them to the
    // whole play; provision's defaults.toml only to the role's steps).
    let read_outside: BTreeSet<String> = files
        .iter()
        .filter(|(p, _)| !p.starts_with("roles"))
        .flat_map(|(_, text)| vars_read(&String::from_utf8_lossy(text)))
        .collect();
    let outside: toml::Table = c
        .defaults
        .iter()
        .filter(|(k, _)| read_outside.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match (&inv, inventory) {
        (Some(inv), Some((path, _))) => {
            // Ansible's order: role defaults, then the inventory's `all` vars, then play vars.
            let mut vars = outside.clone();
            vars.extend(inv.all_vars.clone());
            vars.extend(c.vars.clone());
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "cluster".into());
            files.push((
                PathBuf::from("cluster.toml"),
                emit::cluster(inv, &vars, &name, c.become_, &file_name(path)).into_bytes(),
            ));
            problems.extend(inv.problems.iter().cloned());
            notes.extend(inv.notes.iter().cloned());
        }
        _ if !c.vars.is_empty() || !outside.is_empty() => {
            let mut vars = outside.clone();
            vars.extend(c.vars.clone());
            files.push((
                PathBuf::from("vars.toml"),
                emit::vars_only(&vars).into_bytes(),
            ))
        }
        _ => {}
    }
    Import {
        files,
        converted: c,
        inventory_problems: problems,
        inventory_notes: notes,
    }
}

/// The names a converted text reads as `vars.NAME`.
fn vars_read(text: &str) -> BTreeSet<String> {
    text.match_indices("vars.")
        .filter(|(i, _)| {
            !text[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        })
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

impl Import {
    pub fn problems(&self) -> impl Iterator<Item = &convert::Problem> {
        self.inventory_problems
            .iter()
            .chain(&self.converted.problems)
    }

    pub fn notes(&self) -> impl Iterator<Item = &convert::Problem> {
        self.inventory_notes.iter().chain(&self.converted.notes)
    }

    /// The report: what was written, each note, each unconverted part at its file:line.
    pub fn report(&self, out: &Path) -> String {
        let c = &self.converted;
        let steps: Vec<&convert::Step> = c.files.iter().flat_map(|f| &f.steps).collect();
        let handlers: Vec<&convert::Step> = c.files.iter().flat_map(|f| &f.handlers).collect();
        let live = |s: &[&convert::Step]| s.iter().filter(|s| !s.disabled).count();
        let mut r = format!(
            "converted {} of {} step(s) and {} of {} handler(s); wrote {}\n",
            live(&steps),
            steps.len(),
            live(&handlers),
            handlers.len(),
            self.files
                .iter()
                .map(|(p, _)| out.join(p).display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let line =
            |p: &convert::Problem| format!("  {}:{}: {}\n", p.file.display(), p.line, p.what);
        let notes: Vec<_> = self.notes().collect();
        if !notes.is_empty() {
            r.push_str(&format!("notes ({}):\n", notes.len()));
            notes.iter().for_each(|p| r.push_str(&line(p)));
        }
        let problems: Vec<_> = self.problems().collect();
        if !problems.is_empty() {
            r.push_str(&format!(
                "not converted ({}): their steps are written commented out\n",
                problems.len()
            ));
            problems.iter().for_each(|p| r.push_str(&line(p)));
        }
        r
    }
}

pub fn run(args: ImportArgs) -> Result<u8> {
    if std::fs::metadata(&args.playbook).is_err() {
        return Err(config_failure(format!(
            "{}: cannot read the playbook",
            args.playbook.display()
        )));
    }
    let inv_text = match &args.inventory {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            config_failure(format!("{}: cannot read the inventory: {e}", p.display()))
        })?),
        None => None,
    };
    let read = |p: &Path| std::fs::read(p).ok();
    let result = import(
        &args.playbook,
        args.inventory.as_deref().zip(inv_text.as_deref()),
        &read,
    );
    // A playbook that is not YAML at all is bad input, not a partial conversion.
    if let Some(p) = result.converted.problems.first()
        && p.file == args.playbook
        && p.what.starts_with("YAML error")
    {
        return Err(config_failure(format!(
            "{}:{}: {}",
            p.file.display(),
            p.line,
            p.what
        )));
    }
    if !args.force {
        let existing: Vec<String> = result
            .files
            .iter()
            .map(|(p, _)| args.out.join(p))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(config_failure(format!(
                "would overwrite {}\n  help: choose another --out directory, or add --force",
                existing.join(", ")
            )));
        }
    }
    for (p, content) in &result.files {
        let dest = args.out.join(p);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&dest, content)
            .with_context(|| format!("cannot write {}", dest.display()))?;
    }
    crate::term::err(&result.report(&args.out));
    Ok(if result.problems().next().is_some() {
        EXIT_UNCONVERTED
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(p: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(p)
    }

    /// Each example's Ansible original converts whole, to the files its hand-written port has
    /// (examples_sshd.rs proves the two do the same on real hosts); only `become` and `serial`
    /// are noted.
    #[test]
    fn the_examples_convert_whole() {
        for (name, playbook, notes) in [
            ("nginx", "site.yml", vec![6]),
            ("users", "site.yml", vec![5]),
            ("rolling-deploy", "deploy.yml", vec![6, 8]),
        ] {
            let dir = example(name).join("ansible");
            let inv_path = dir.join("hosts.ini");
            let inv = std::fs::read_to_string(&inv_path).unwrap();
            let read = |p: &Path| std::fs::read(p).ok();
            let r = import(&dir.join(playbook), Some((&inv_path, &inv)), &read);
            assert_eq!(r.problems().count(), 0, "{}", r.report(Path::new("out")));
            let mut got: Vec<String> = r
                .files
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect();
            got.sort();
            let port = example(name).join("provision");
            let mut want = Vec::new();
            let mut todo = vec![port.clone()];
            while let Some(d) = todo.pop() {
                for e in std::fs::read_dir(d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        todo.push(p);
                    } else {
                        want.push(p.strip_prefix(&port).unwrap().display().to_string());
                    }
                }
            }
            want.sort();
            assert_eq!(got, want, "{name}");
            let lines: Vec<usize> = r.notes().map(|n| n.line).collect();
            assert_eq!(lines, notes, "{name}");
        }
    }

    const PARTIAL: &str = r#"- hosts: db
  serial: 2
  tasks:
    - name: ok step
      command: echo hi creates=/tmp/x
    - name: registered
      command: /usr/bin/check
      register: out
    - name: retried
      apt: name=curl
      until: out is success
      retries: 3
    - name: elsewhere
      service: name=pg state=started
      delegate_to: db-0
      run_once: true
    - name: unknown module
      community.general.ufw: rule=allow
    - name: fact condition
      fail: msg=old
      when: ansible_os_family == "Debian"
    - name: odd key
      file: path=/srv/a state=touch
      colour: blue
    - include_tasks: extra.yml
    - name: a block
      block:
        - command: x
    - name: on the controller
      command: echo hi
      delegate_to: localhost
"#;

    #[test]
    fn everything_unconverted_is_named_at_its_line_and_its_step_commented_out() {
        let pb = Path::new("/pb/site.yml");
        let read = |p: &Path| (p == pb).then(|| PARTIAL.as_bytes().to_vec());
        let r = import(pb, None, &read);
        let got: Vec<String> = r
            .problems()
            .map(|p| format!("{}:{}: {}", p.file.display(), p.line, p.what))
            .collect();
        assert_eq!(
            got,
            [
                "/pb/site.yml:18: module `community.general.ufw`: not converted (no provision step does this)",
                "/pb/site.yml:21: when: `ansible_os_family` not a var of the playbook or inventory (a fact, a registered result or an extra var?): not converted",
                "/pb/site.yml:24: task key `colour`: unknown (a second module?)",
                "/pb/site.yml:25: include_tasks `extra.yml`: not found beside /pb/site.yml or in /pb",
                "/pb/site.yml:26: block: not converted (blocks are not supported: write the tasks as steps)",
                "/pb/site.yml:31: delegate_to: localhost: not converted (provision runs steps on the hosts of the inventory, never on the controller)",
            ]
        );
        let toml = String::from_utf8(r.files[0].1.clone()).unwrap();
        // The whole steps are live (serial, register, until and retries convert); every other
        // is commented out under its reasons.
        assert!(toml.contains("\nserial = 2\n"), "{toml}");
        assert!(toml.contains("\n[[steps]]\nname = \"ok step\"\nuse = \"command\"\nhosts = \"db\"\nwith = { creates = \"/tmp/x\", run = \"echo hi\" }\n"), "{toml}");
        assert!(toml.contains("\n[[steps]]\nname = \"registered\"\nuse = \"command\"\nhosts = \"db\"\nregister = \"out\"\n"), "{toml}");
        assert!(
            toml.contains("\nretries = 3\nuntil = \"not out.failed\"\n"),
            "{toml}"
        );
        // delegate_to a host of the inventory is `on`; to the controller it is not converted.
        assert!(toml.contains("\n[[steps]]\nname = \"elsewhere\"\nuse = \"service\"\nhosts = \"db\"\nrun_once = true\non = \"db-0\"\n"), "{toml}");
        assert_eq!(toml.matches("\n[[steps]]").count(), 4, "{toml}");
        assert!(toml.contains("# not converted: /pb/site.yml:31: delegate_to: localhost: not converted (provision runs steps on the hosts of the inventory, never on the controller)\n# [[steps]]\n# name = \"on the controller\"\n"), "{toml}");
        let parsed: toml::Table = toml::from_str(&toml).unwrap();
        assert_eq!(parsed["steps"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn free_form_arguments_keep_jinja_whole() {
        let kv = convert::split_kv("path={{ root }}/a b='c d' force=yes", 3).unwrap();
        let got: Vec<(String, yaml::V)> = kv.into_iter().map(|(k, n)| (k, n.v)).collect();
        assert_eq!(
            got,
            [
                ("path".to_string(), yaml::V::Str("{{ root }}/a".into())),
                ("b".to_string(), yaml::V::Str("c d".into())),
                ("force".to_string(), yaml::V::Bool(true)),
            ]
        );
        assert!(convert::split_kv("just words", 1).is_none());
    }

    /// Converts the fixture files (paths under /pb/) with no inventory.
    fn convert(files: &[(&str, &str)]) -> Import {
        let files: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(p, t)| (Path::new("/pb").join(p), t.to_string()))
            .collect();
        let read = move |p: &Path| {
            files
                .iter()
                .find(|(f, _)| f == p)
                .map(|(_, t)| t.as_bytes().to_vec())
        };
        import(Path::new("/pb/site.yml"), None, &read)
    }

    fn problems(r: &Import) -> Vec<String> {
        r.problems()
            .map(|p| format!("{}:{}: {}", p.file.display(), p.line, p.what))
            .collect()
    }

    fn text(r: &Import, path: &str) -> String {
        let (_, t) = r
            .files
            .iter()
            .find(|(p, _)| p == Path::new(path))
            .unwrap_or_else(|| {
                panic!(
                    "no {path} in {:?}",
                    r.files.iter().map(|f| &f.0).collect::<Vec<_>>()
                )
            });
        String::from_utf8(t.clone()).unwrap()
    }

    const REGISTERED: &str = r#"- hosts: app
  vars:
    probe_cmd: /usr/bin/probe
  tasks:
    - name: probe
      command: "{{ probe_cmd }}"
      register: probe
    - name: setup
      command: /usr/bin/setup
      when:
        - probe.rc != 0
        - probe is not skipped
        - probe_cmd is defined
    - name: wait
      command: curl -fsS http://127.0.0.1/health
      register: health
      until: "'ok' in health.stdout"
      retries: 10
      delay: 3
    - name: once
      command: /usr/bin/migrate
      run_once: true
    - name: until alone
      command: /usr/bin/ready
      register: ready
      until: ready is succeeded
    - name: in a parameter
      command: echo {{ probe.stdout }}
    - name: looped
      command: echo {{ item }}
      loop: [a, b]
      register: each
    - name: too early
      command: /usr/bin/x
      when: late.rc == 0
    - name: late
      command: /usr/bin/y
      register: late
    - name: taken name
      command: /usr/bin/z
      register: vars
    - name: once registered
      command: /usr/bin/w
      run_once: yes
      register: w
    - name: templated retries
      command: /usr/bin/v
      retries: "{{ n }}"
"#;

    /// `register`, a `when` over registered results (read bare, Ansible's result tests as
    /// fields), `retries`/`delay`/`until` and `run_once` convert; what provision reads
    /// differently is named.
    #[test]
    fn register_until_retries_and_run_once_convert() {
        let r = convert(&[("site.yml", REGISTERED)]);
        assert_eq!(
            problems(&r),
            [
                "/pb/site.yml:28: `echo {{ probe.stdout }}`: reads the registered result `probe`: not converted (provision's `when` and `until` read registered results; parameters and templates cannot)",
                "/pb/site.yml:35: when: `late` not a var of the playbook or inventory (a fact, a registered result or an extra var?): not converted",
                "/pb/site.yml:41: register `vars`: not converted (provision takes a name of letters, digits and `_` that templates do not read already)",
                "/pb/site.yml:44: run_once with register: not converted (Ansible gives every host the one result; provision registers it on the host that ran the step only)",
                "/pb/site.yml:48: retries: not converted (provision takes a positive number of seconds/attempts, not a template)",
            ]
        );
        let notes: Vec<String> = r
            .notes()
            .map(|n| format!("{}: {}", n.line, n.what))
            .collect();
        assert_eq!(
            notes,
            ["26: until without retries: retries = 2 (Ansible's default of 3 attempts in all)"]
        );
        let toml = text(&r, "playbook.toml");
        for want in [
            "[[steps]]\nname = \"probe\"\nuse = \"command\"\nhosts = \"app\"\nregister = \"probe\"\nwith = { run = \"{{ vars.probe_cmd }}\" }\n",
            "[[steps]]\nname = \"setup\"\nuse = \"command\"\nhosts = \"app\"\nwhen = \"(probe.rc != 0) and (not probe.skipped) and (vars.probe_cmd is defined)\"\n",
            "[[steps]]\nname = \"wait\"\nuse = \"command\"\nhosts = \"app\"\nregister = \"health\"\nretries = 10\ndelay = 3\nuntil = \"'ok' in health.stdout\"\n",
            "[[steps]]\nname = \"once\"\nuse = \"command\"\nhosts = \"app\"\nrun_once = true\n",
            "[[steps]]\nname = \"until alone\"\nuse = \"command\"\nhosts = \"app\"\nregister = \"ready\"\nretries = 2\nuntil = \"not ready.failed\"\n",
            // Registered by a step after it: not a registered result here.
            "# [[steps]]\n# name = \"too early\"\n",
            "[[steps]]\nname = \"late\"\nuse = \"command\"\nhosts = \"app\"\nregister = \"late\"\n",
        ] {
            assert!(toml.contains(want), "{want}\nnot in\n{toml}");
        }
        let parsed: toml::Table = toml::from_str(&toml).unwrap();
        assert_eq!(parsed["steps"].as_array().unwrap().len(), 7, "{toml}");
    }

    const RESULT_RULES: &str = r#"- hosts: app
  tasks:
    - name: grep
      command: grep -q x /etc/y
      register: found
      failed_when: found.rc not in [0, 1]
      changed_when: false
    - name: maybe
      shell: /usr/bin/maybe
      ignore_errors: yes
      changed_when:
        - "'updated' in result.stdout"
        - result.rc == 0
      register: result
    - name: each
      command: echo {{ item }}
      loop: [a, b]
      register: each
      failed_when: "'bad' in each.stderr"
    - name: after
      command: /usr/bin/after
      when: each.results | selectattr('changed') | list | length > 0 and each.results[0].rc == 0
    - name: probe is ok
      command: /usr/bin/probe
      changed_when: "False"
      failed_when: true
    - name: templated
      command: /usr/bin/t
      ignore_errors: "{{ lax }}"
    - name: a file
      copy:
        content: x
        dest: /etc/x
      changed_when: false
"#;

    /// `ignore_errors`, `failed_when` and `changed_when` (a boolean, an expression, a list that
    /// must all hold) convert, reading the step's own register; a loop's register converts and
    /// a later `when` reads its `results`. The converted playbook passes the parser.
    #[test]
    fn ignore_errors_failed_when_changed_when_and_loop_results_convert() {
        let r = convert(&[("site.yml", RESULT_RULES)]);
        assert_eq!(
            problems(&r),
            [
                "/pb/site.yml:29: ignore_errors: not converted (provision takes true or false, not a template)",
                "/pb/site.yml:34: changed_when on `copy`: not converted (provision's `copy` decides failure and change from the host's state; only `command` steps take changed_when)",
            ]
        );
        let toml = text(&r, "playbook.toml");
        for want in [
            "[[steps]]\nname = \"grep\"\nuse = \"command\"\nhosts = \"app\"\nregister = \"found\"\nfailed_when = \"found.rc not in [0, 1]\"\nchanged_when = false\n",
            "[[steps]]\nname = \"maybe\"\nuse = \"command\"\nhosts = \"app\"\nregister = \"result\"\nignore_errors = true\nchanged_when = \"('updated' in result.stdout) and (result.rc == 0)\"\n",
            "loop = [\"a\", \"b\"]\nregister = \"each\"\nfailed_when = \"'bad' in each.stderr\"\n",
            "[[steps]]\nname = \"after\"\nuse = \"command\"\nhosts = \"app\"\nwhen = \"each.results | selectattr('changed') | list | length > 0 and each.results[0].rc == 0\"\n",
            "[[steps]]\nname = \"probe is ok\"\nuse = \"command\"\nhosts = \"app\"\nfailed_when = true\nchanged_when = false\n",
        ] {
            assert!(toml.contains(want), "{want}\nnot in\n{toml}");
        }
        let pb = provision_engine::playbook_file::PlaybookFile::parse(
            &toml,
            std::path::Path::new("playbook.toml"),
            &["command", "copy"],
        )
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(pb.steps.len(), 5, "{toml}");
        assert!(pb.steps[3].when_at_run, "reads each.results");
    }

    const ROLES_SITE: &str = r#"- hosts: web
  tags: [site]
  vars:
    enable_app: true
    base_port: 80
  roles:
    - common
    - role: app
      vars:
        app_port: 8080
      app_user: deploy
      when: enable_app
      tags: app
    - role: app
      app_port: "{{ base_port }}"
  tasks:
    - include_tasks: tasks/extra.yml
      vars:
        level: 2
      when: enable_app
    - import_tasks: tasks/extra.yml
      loop: [1, 2]
    - name: common again
      include_role:
        name: common
      tags: again
    - include_tasks: missing.yml
"#;

    fn roles_fixture() -> Import {
        convert(&[
            ("site.yml", ROLES_SITE),
            (
                "roles/common/tasks/main.yml",
                "- name: motd\n  copy:\n    content: \"{{ motd }}\"\n    dest: /etc/motd\n- include_tasks: sub.yml\n",
            ),
            ("roles/common/defaults/main.yml", "motd: hello\nunused: 1\n"),
            (
                "roles/common/tasks/sub.yml",
                "- name: sub\n  command: echo sub creates=/tmp/sub\n- import_role:\n    name: app\n",
            ),
            (
                "roles/common/handlers/main.yml",
                "- name: reload motd\n  command: /usr/bin/true\n",
            ),
            (
                "roles/app/tasks/main.yml",
                "- name: app dir\n  file: path=/srv/{{ app_user }} state=directory\n- name: app conf\n  template: src=app.conf.j2 dest=/etc/app.conf\n",
            ),
            ("roles/app/templates/app.conf.j2", "port={{ app_port }}\n"),
            (
                "tasks/extra.yml",
                "- name: extra\n  command: echo {{ level }} creates=/tmp/extra\n  when: motd is defined\n",
            ),
        ])
    }

    /// Each role becomes its own directory (steps.toml, handlers.toml, defaults.toml,
    /// templates/) included where Ansible ran it, with the entry's vars, params, when and tags;
    /// a task file becomes the TOML file at its place, included with its vars, when and tags.
    #[test]
    fn roles_and_task_files_convert_to_included_files() {
        let r = roles_fixture();
        let names: Vec<String> = r
            .files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "playbook.toml",
                "roles/common/steps.toml",
                "roles/common/sub.toml",
                "roles/app/steps.toml",
                "roles/common/handlers.toml",
                "tasks/extra.toml",
                "roles/common/defaults.toml",
                "roles/app/templates/app.conf.j2",
                "vars.toml",
            ]
        );
        assert_eq!(
            problems(&r),
            [
                "/pb/site.yml:15: var `app_port` of an include: a template: not converted (provision's include `vars` are plain values)",
                "/pb/site.yml:22: loop on `import_tasks`: not converted (provision's include has no loop: include a file whose step loops)",
                "/pb/site.yml:27: include_tasks `missing.yml`: not found beside /pb/site.yml or in /pb",
            ]
        );
        assert_eq!(
            text(&r, "playbook.toml"),
            r#"# Converted from site.yml by `provision import-ansible` (docs/porting-from-ansible.md).
# Steps written commented out could not be converted whole: the comment above each says why.

# play: web servers
[[steps]]
include = "roles/common"
hosts = "web"
tags = ["site"]

[[steps]]
include = "roles/app"
hosts = "web"
when = "vars.enable_app"
tags = ["site", "app"]
vars = { app_port = 8080, app_user = "deploy" }

# not converted: /pb/site.yml:15: var `app_port` of an include: a template: not converted (provision's include `vars` are plain values)
# [[steps]]
# include = "roles/app"
# hosts = "web"
# tags = ["site"]

[[steps]]
include = "tasks/extra.toml"
hosts = "web"
when = "vars.enable_app"
tags = ["site"]
vars = { level = 2 }

# not converted: /pb/site.yml:22: loop on `import_tasks`: not converted (provision's include has no loop: include a file whose step loops)
# [[steps]]
# include = "tasks/extra.toml"
# hosts = "web"
# tags = ["site"]

# include_role: common again
[[steps]]
include = "roles/common"
hosts = "web"
tags = ["site", "again"]
"#
            .replace("# play: web servers\n", "")
        );
        assert_eq!(
            text(&r, "roles/common/sub.toml"),
            "# Converted from roles/common/tasks/sub.yml by `provision import-ansible` (docs/porting-from-ansible.md).\n# Steps written commented out could not be converted whole: the comment above each says why.\n\n[[steps]]\nname = \"sub\"\nuse = \"command\"\nwith = { creates = \"/tmp/sub\", run = \"echo sub\" }\n\n[[steps]]\ninclude = \"../app\"\n"
        );
        assert!(
            text(&r, "roles/common/steps.toml").ends_with("\n[[steps]]\ninclude = \"sub.toml\"\n"),
            "{}",
            text(&r, "roles/common/steps.toml")
        );
        assert!(
            text(&r, "roles/app/steps.toml")
                .contains("with = { dest = \"/etc/app.conf\", src = \"templates/app.conf.j2\" }")
        );
        assert_eq!(
            text(&r, "roles/app/templates/app.conf.j2"),
            "port={{ vars.app_port }}\n"
        );
        assert!(
            text(&r, "roles/common/handlers.toml")
                .contains("[[handlers]]\nname = \"reload motd\"\n")
        );
        assert!(
            text(&r, "roles/common/defaults.toml").ends_with("\nmotd = \"hello\"\nunused = 1\n")
        );
        // `motd` is a role default that a step outside the role reads (Ansible shows role
        // defaults to the whole play): it goes to [vars] too; `unused` does not.
        assert!(text(&r, "tasks/extra.toml").contains("when = \"vars.motd is defined\""));
        assert_eq!(
            text(&r, "vars.toml"),
            "# The playbook's vars and its roles' defaults: add them to your cluster.toml.\n[vars]\nbase_port = 80\nenable_app = true\nmotd = \"hello\"\n"
        );
    }

    /// A task file that includes itself again is named with the chain, its include commented out.
    #[test]
    fn an_include_cycle_is_named_not_followed() {
        let r = convert(&[
            (
                "site.yml",
                "- hosts: all\n  tasks:\n    - include_tasks: a.yml\n",
            ),
            ("a.yml", "- import_tasks: b.yml\n"),
            (
                "b.yml",
                "- name: b\n  command: /bin/true\n- include_tasks: a.yml\n",
            ),
        ]);
        assert_eq!(
            problems(&r),
            [
                "/pb/b.yml:3: include cycle: playbook.toml -> a.toml -> b.toml -> a.toml: not converted"
            ]
        );
        assert!(
            text(&r, "b.toml").ends_with("\n# [[steps]]\n# include = \"a.toml\"\n"),
            "{}",
            text(&r, "b.toml")
        );
        assert!(text(&r, "a.toml").ends_with("\n[[steps]]\ninclude = \"b.toml\"\n"));
    }

    /// A play's `serial` and `max_fail_percentage` become the playbook's top-level keys when
    /// every play agrees; plays that differ, templates and values out of range are named.
    #[test]
    fn play_serial_and_max_fail_percentage_become_top_level_keys() {
        let two = "- hosts: a\n  serial: [1, \"50%\"]\n  max_fail_percentage: 10\n  tasks:\n    - command: /bin/true\n- hosts: b\n  serial: [1, \"50%\"]\n  max_fail_percentage: 10\n  tasks: []\n";
        let r = convert(&[("site.yml", two)]);
        assert_eq!(problems(&r), Vec::<String>::new());
        assert!(
            text(&r, "playbook.toml")
                .contains("\n\nserial = [1, \"50%\"]\nmax_fail_percentage = 10\n\n[[steps]]\n"),
            "{}",
            text(&r, "playbook.toml")
        );
        let differ = "- hosts: a\n  serial: 1\n  tasks: []\n- hosts: b\n  tasks: []\n";
        assert_eq!(
            problems(&convert(&[("site.yml", differ)])),
            [
                "/pb/site.yml:2: play key `serial`: not converted (plays differ, and provision has one `serial` per playbook: set it per step)"
            ]
        );
        let bad = "- hosts: a\n  serial: \"{{ n }}\"\n  max_fail_percentage: 150\n  tasks: []\n- hosts: b\n  serial: 0\n  max_fail_percentage: 150\n  tasks: []\n";
        let r = convert(&[("site.yml", bad)]);
        assert_eq!(
            problems(&r),
            [
                "/pb/site.yml:2: play key `serial`: not converted (provision takes a positive number of hosts, a percentage (\"25%\") or a list of them, not a template)",
                "/pb/site.yml:6: play key `serial`: not converted (provision takes a positive number of hosts, a percentage (\"25%\") or a list of them, not a template)",
                "/pb/site.yml:3: play key `max_fail_percentage`: not converted (provision takes a percentage from 0 to 100, not a template)",
                "/pb/site.yml:7: play key `max_fail_percentage`: not converted (provision takes a percentage from 0 to 100, not a template)",
            ]
        );
        assert!(!text(&r, "playbook.toml").contains("serial ="));
    }

    const DELEGATED: &str = r#"- hosts: web
  vars:
    lb: lb-1
  tasks:
    - name: drain
      command: haproxy-drain {{ inventory_hostname }}
      delegate_to: "{{ lb }}"
    - name: record
      lineinfile:
        path: /srv/backends
        line: "{{ inventory_hostname }}"
      delegate_to: backup-1
    - name: local
      local_action: command echo hi
    - name: unknown var
      command: "true"
      delegate_to: "{{ elsewhere }}"
    - name: facts
      command: "true"
      delegate_to: db-1
      delegate_facts: true
"#;

    /// `delegate_to` becomes `on` (a template rewritten like any other); the controller
    /// (`local_action`), an unknown var in it and `delegate_facts` are not converted.
    #[test]
    fn delegate_to_converts_to_on() {
        let r = convert(&[("site.yml", DELEGATED)]);
        assert_eq!(
            problems(&r),
            [
                "/pb/site.yml:14: local_action: not converted (provision runs steps on the hosts of the inventory, never on the controller)",
                "/pb/site.yml:17: `{{ elsewhere }}`: `elsewhere` not a var of the playbook or inventory (a fact, a registered result or an extra var?): not converted",
                "/pb/site.yml:21: delegate_facts: not converted (provision keeps no facts between steps)",
            ]
        );
        let toml = text(&r, "playbook.toml");
        for want in [
            "[[steps]]\nname = \"drain\"\nuse = \"command\"\nhosts = \"web\"\non = \"{{ vars.lb }}\"\nwith = { run = \"haproxy-drain {{ host.name }}\" }\n",
            "[[steps]]\nname = \"record\"\nuse = \"line\"\nhosts = \"web\"\non = \"backup-1\"\n",
        ] {
            assert!(toml.contains(want), "{want}\nnot in\n{toml}");
        }
        let parsed: toml::Table = toml::from_str(&toml).unwrap();
        assert_eq!(parsed["steps"].as_array().unwrap().len(), 2, "{toml}");
    }

    /// `authorized_key` (also as `ansible.posix.authorized_key`) becomes the step of that name,
    /// a loop over users with a joined key list included; what it has no form for is named.
    #[test]
    fn authorized_key_converts_to_its_step() {
        let site = r#"- hosts: all
  vars:
    people:
      - name: alice
        ssh_keys: ["ssh-ed25519 AAAAC3Nz alice@laptop"]
  tasks:
    - name: keys
      ansible.posix.authorized_key:
        user: "{{ item.name }}"
        key: '{{ item.ssh_keys | join("\n") }}'
        path: /srv/keys/{{ item.name }}
        exclusive: yes
        manage_dir: false
      loop: "{{ people }}"
    - name: revoked
      authorized_key: user=bob key="ssh-rsa AAAAB3 old" state=absent
    - name: options
      authorized_key:
        user: carol
        key: ssh-ed25519 AAAAC3Nz carol
        key_options: no-pty
        state: maybe
"#;
        let r = convert(&[("site.yml", site)]);
        assert_eq!(
            problems(&r),
            [
                "/pb/site.yml:22: authorized_key state `maybe`: not converted",
                "/pb/site.yml:21: `authorized_key` option `key_options`: not converted",
            ]
        );
        let t = text(&r, "playbook.toml");
        assert!(
            t.contains(
                "[[steps]]\nname = \"keys\"\nuse = \"authorized_key\"\nloop = \"{{ vars.people }}\"\nwith = { exclusive = true, key = '{{ item.ssh_keys | join(\"\\n\") }}', manage_dir = false, path = \"/srv/keys/{{ item.name }}\", user = \"{{ item.name }}\" }\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "[[steps]]\nname = \"revoked\"\nuse = \"authorized_key\"\nwith = { key = \"ssh-rsa AAAAB3 old\", state = \"absent\", user = \"bob\" }\n"
            ),
            "{t}"
        );
    }

    /// Ansible's fact variables become `facts.*` in `when`, parameters and template files, and
    /// the play converts whole.
    #[test]
    fn fact_variables_convert_to_provision_facts() {
        let site = r#"- hosts: all
  tasks:
    - name: motd
      template: src=motd.j2 dest=/etc/motd
      when: ansible_distribution == "Debian" and ansible_facts['distribution_major_version'] | int >= 12
    - name: address
      copy:
        content: "{{ ansible_default_ipv4.address }} {{ ansible_facts.processor_vcpus }}\n"
        dest: /etc/address
"#;
        let r = convert(&[
            ("site.yml", site),
            (
                "templates/motd.j2",
                "{{ ansible_distribution_release }} {{ ansible_architecture }} {{ ansible_memtotal_mb }} {{ ansible_facts['default_ipv6']['address'] }}\n",
            ),
        ]);
        assert_eq!(problems(&r), Vec::<String>::new());
        let toml = text(&r, "playbook.toml");
        for want in [
            "when = \"\"\"(facts.os | capitalize) == \"Debian\" and (facts.os_version | split('.') | first) | int >= 12\"\"\"",
            "content = \"\"\"\n{{ facts.ipv4 }} {{ facts.cpus }}\n\"\"\"",
        ] {
            assert!(toml.contains(want), "{want}\nnot in\n{toml}");
        }
        assert_eq!(
            text(&r, "templates/motd.j2"),
            "{{ facts.os_codename }} {{ facts.arch }} {{ facts.memory_mb }} {{ facts.ipv6 }}\n"
        );
    }

    /// `strategy: free` in every play becomes `strategy = "pipelined"`, with a comment that
    /// cross-host needs are declared with `after`; `linear` is the default; plays that differ
    /// and other strategies are named.
    #[test]
    fn play_strategy_free_becomes_pipelined() {
        let two = "- hosts: a\n  strategy: free\n  tasks:\n    - command: /bin/true\n- hosts: b\n  strategy: free\n  tasks: []\n";
        let r = convert(&[("site.yml", two)]);
        assert_eq!(problems(&r), Vec::<String>::new());
        let t = text(&r, "playbook.toml");
        assert!(
            t.contains("\n\n# From Ansible's `strategy: free`: each step waits only for the earlier steps on its\n# hosts. A step that needs another host's earlier step (a join needs the init) must say\n# so: after = [\"step name\"].\nstrategy = \"pipelined\"\n\n[[steps]]\n"),
            "{t}"
        );
        let notes: Vec<String> = r.notes().map(|p| p.what.clone()).collect();
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("strategy: free became strategy = \"pipelined\"")),
            "{notes:?}"
        );
        let linear = "- hosts: a\n  strategy: linear\n  tasks: []\n";
        let r = convert(&[("site.yml", linear)]);
        assert_eq!(problems(&r), Vec::<String>::new());
        assert!(!text(&r, "playbook.toml").contains("strategy"));
        let differ = "- hosts: a\n  strategy: free\n  tasks: []\n- hosts: b\n  tasks: []\n";
        assert_eq!(
            problems(&convert(&[("site.yml", differ)])),
            [
                "/pb/site.yml:2: play key `strategy`: not converted (plays differ, and provision has one `strategy` per playbook)"
            ]
        );
        let other = "- hosts: a\n  strategy: host_pinned\n  tasks: []\n";
        let r = convert(&[("site.yml", other)]);
        assert_eq!(
            problems(&r),
            [
                "/pb/site.yml:2: play key `strategy`: not converted (provision has `linear`, the default, and `pipelined`, for Ansible's `free`)"
            ]
        );
        assert!(!text(&r, "playbook.toml").contains("strategy ="));
    }

    #[test]
    fn apt_cache_settings_convert_to_seconds_and_a_refresh_once_per_run() {
        let y = "- hosts: all\n  tasks:\n    - name: lists\n      apt: update_cache=yes cache_valid_time=3600\n    - name: nginx\n      apt: name=nginx update_cache=yes\n    - name: tools\n      apt:\n        name: [curl, git]\n        update_cache: true\n        cache_valid_time: 86400\n    - name: vim\n      apt: name=vim update_cache=no\n    - name: odd\n      apt: name=jq cache_valid_time=soon\n";
        let r = convert(&[("site.yml", y)]);
        assert_eq!(
            problems(&r),
            ["/pb/site.yml:15: apt cache_valid_time `soon`: not converted (a number of seconds)"]
        );
        let t = text(&r, "playbook.toml");
        for step in [
            // update_cache alone: the refresh-only step, with its validity as a number.
            "name = \"lists\"\nuse = \"apt\"\nwith = { cache_valid_time = 3600, update_cache = true }\n",
            // Ansible refreshes at every such task: once per host and run here.
            "name = \"nginx\"\nuse = \"apt\"\nwith = { cache_valid_time = 0, packages = \"nginx\", update_cache = true }\n",
            "name = \"tools\"\nuse = \"apt\"\nwith = { cache_valid_time = 86400, packages = [\"curl\", \"git\"], update_cache = true }\n",
            "name = \"vim\"\nuse = \"apt\"\nwith = { packages = \"vim\", update_cache = false }\n",
        ] {
            assert!(t.contains(step), "{step}\n{t}");
        }
    }
}
