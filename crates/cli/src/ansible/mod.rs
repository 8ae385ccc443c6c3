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
    let mut files = vec![(
        PathBuf::from("playbook.toml"),
        emit::playbook(&c, &file_name(playbook)).into_bytes(),
    )];
    for a in &c.assets {
        files.push((PathBuf::from(&a.dest), a.content.clone()));
    }
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    match (&inv, inventory) {
        (Some(inv), Some((path, _))) => {
            // Ansible's order: role defaults, then the inventory's `all` vars, then play vars.
            let mut vars = c.defaults.clone();
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
        _ if !c.vars.is_empty() || !c.defaults.is_empty() => {
            let mut vars = c.defaults.clone();
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
        let live = |s: &[convert::Step]| s.iter().filter(|s| !s.disabled).count();
        let mut r = format!(
            "converted {} of {} step(s) and {} of {} handler(s); wrote {}\n",
            live(&c.steps),
            c.steps.len(),
            live(&c.handlers),
            c.handlers.len(),
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
            .join("../../examples/ansible")
            .join(p)
    }

    /// The example role converts whole, to exactly the files kept in examples/ansible/converted/
    /// (reviewed by hand: regenerate them with the command in docs/porting-from-ansible.md).
    #[test]
    fn the_example_role_converts_to_the_reviewed_toml() {
        let inv_path = example("hosts.ini");
        let inv = std::fs::read_to_string(&inv_path).unwrap();
        let read = |p: &Path| std::fs::read(p).ok();
        let r = import(&example("site.yml"), Some((&inv_path, &inv)), &read);
        assert_eq!(r.problems().count(), 0, "{}", r.report(Path::new("out")));
        let names: Vec<String> = r
            .files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(
            names,
            ["playbook.toml", "templates/nginx.conf.j2", "cluster.toml"]
        );
        for (p, content) in &r.files {
            let want = std::fs::read_to_string(example("converted").join(p)).unwrap();
            assert_eq!(String::from_utf8_lossy(content), want, "{}", p.display());
        }
        let notes: Vec<String> = r
            .notes()
            .map(|n| format!("{}:{}", n.file.display(), n.line))
            .collect();
        assert_eq!(notes, [format!("{}:6", example("site.yml").display())]);
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
      when: ansible_distribution_major_version == "11"
    - name: odd key
      file: path=/srv/a state=touch
      colour: blue
    - include_tasks: extra.yml
    - name: a block
      block:
        - command: x
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
                "/pb/site.yml:2: play key `serial`: not converted (see README: `serial`)",
                "/pb/site.yml:8: register: not converted (see README: `register = \"x\"`)",
                "/pb/site.yml:11: until: not converted (see README: `retries`, `delay`, `until`)",
                "/pb/site.yml:12: retries: not converted (see README: `retries`, `delay`, `until`)",
                "/pb/site.yml:15: delegate_to: not converted (provision runs every step on its own hosts)",
                "/pb/site.yml:16: run_once: not converted (see README: `run_once = true`)",
                "/pb/site.yml:18: module `community.general.ufw`: not converted (no provision step does this)",
                "/pb/site.yml:21: when: `ansible_distribution_major_version` not a var of the playbook or inventory (a fact, a registered result or an extra var?): not converted",
                "/pb/site.yml:24: task key `colour`: unknown (a second module?)",
                "/pb/site.yml:25: include_tasks `extra.yml`: not converted (see README: `include = \"roles/web\"`)",
                "/pb/site.yml:26: block: not converted (blocks are not supported: write the tasks as steps)",
            ]
        );
        let toml = String::from_utf8(r.files[0].1.clone()).unwrap();
        // The one whole step is live; every other is commented out under its reasons.
        assert!(toml.contains("\n[[steps]]\nname = \"ok step\"\nuse = \"command\"\nhosts = \"db\"\nwith = { creates = \"/tmp/x\", run = \"echo hi\" }\n"), "{toml}");
        assert_eq!(toml.matches("\n[[steps]]").count(), 1, "{toml}");
        assert!(toml.contains("# not converted: /pb/site.yml:8: register: not converted (see README: `register = \"x\"`)\n# [[steps]]\n# name = \"registered\"\n# use = \"command\"\n"), "{toml}");
        let parsed: toml::Table = toml::from_str(&toml).unwrap();
        assert_eq!(parsed["steps"].as_array().unwrap().len(), 1);
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
}
