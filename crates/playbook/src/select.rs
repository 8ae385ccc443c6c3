//! Which steps of a playbook a run keeps: `--tags`, `--skip-tags` and `--start-at-step`
//! (Ansible's), decided per playbook entry from its tags and name. The playbook is compiled
//! whole first, so a bad step is an error whatever is chosen; the choice only drops steps.

use crate::compile::Compiled;
use provision_engine::diagnostic::did_you_mean;
use provision_engine::playbook_file::{ALWAYS, NEVER, PlaybookFile};

/// What the command line asks for; empty: every step (except those tagged `never`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// `--tags`: only steps with one of these tags, and those tagged `always`.
    pub tags: Vec<String>,
    /// `--skip-tags`: no step with one of these tags.
    pub skip_tags: Vec<String>,
    /// `--start-at-step`: nothing before the first step of this name.
    pub start_at: Option<String>,
}

/// A selection that does not fit the playbook: what is wrong and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectionError {
    pub message: String,
    pub help: String,
}

impl std::fmt::Display for SelectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n  help: {}", self.message, self.help)
    }
}

impl std::error::Error for SelectionError {}

/// Whether a step with `tags` runs under `--tags only` and `--skip-tags skip`, as Ansible
/// decides it: with no `--tags`, every step but those tagged `never`; with `--tags`, the steps
/// carrying one of them (a `never` step too: it was asked for) and those tagged `always`. Then
/// `--skip-tags` drops every step carrying one of its tags, so a step tagged only `always` is
/// skipped only by `--skip-tags always`.
pub fn tags_allow(tags: &[String], only: &[String], skip: &[String]) -> bool {
    let has = |tag: &str| tags.iter().any(|t| t == tag);
    let any_of = |set: &[String]| tags.iter().any(|t| set.contains(t));
    let chosen = if only.is_empty() {
        has(ALWAYS) || !has(NEVER)
    } else {
        has(ALWAYS) || any_of(only)
    };
    chosen && !any_of(skip)
}

impl Selection {
    /// For each step of the playbook (in `PlaybookFile::steps` order), whether it runs. A tag
    /// no step carries or a step name no step has is an error (Ansible would silently run
    /// nothing), naming the known ones.
    pub fn decide(&self, pb: &PlaybookFile) -> Result<Vec<bool>, SelectionError> {
        let mut known: Vec<&str> = pb
            .steps
            .iter()
            .flat_map(|s| s.tags.iter().map(String::as_str))
            .collect();
        known.sort_unstable();
        known.dedup();
        for (flag, tags) in [("--tags", &self.tags), ("--skip-tags", &self.skip_tags)] {
            for tag in tags {
                check_tag(flag, tag, &known)?;
            }
        }
        let start = match &self.start_at {
            None => 0,
            Some(name) => start_index(pb, name)?,
        };
        Ok(pb
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| i >= start && tags_allow(&s.tags, &self.tags, &self.skip_tags))
            .collect())
    }
}

fn check_tag(flag: &str, tag: &str, known: &[&str]) -> Result<(), SelectionError> {
    if tag.is_empty() {
        return Err(SelectionError {
            message: format!("{flag}: an empty tag"),
            help: format!("name the tags, separated by commas: {flag} docker,nfs"),
        });
    }
    if known.contains(&tag) {
        return Ok(());
    }
    if known.is_empty() {
        return Err(SelectionError {
            message: format!("{flag}: unknown tag `{tag}`: no step of the playbook has tags"),
            help: "tag steps in the playbook: tags = [\"docker\"]".into(),
        });
    }
    let guess = did_you_mean(tag, known)
        .map(|m| format!("did you mean `{m}`? "))
        .unwrap_or_default();
    Err(SelectionError {
        message: format!("{flag}: unknown tag `{tag}`"),
        help: format!("{guess}the playbook's tags: {}", known.join(", ")),
    })
}

/// The index of the first step named `name`.
fn start_index(pb: &PlaybookFile, name: &str) -> Result<usize, SelectionError> {
    if let Some(i) = pb.steps.iter().position(|s| s.name == name) {
        return Ok(i);
    }
    let mut names: Vec<&str> = Vec::new();
    for s in &pb.steps {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    let guess = did_you_mean(name, &names)
        .map(|m| format!("did you mean `{m}`? "))
        .unwrap_or_default();
    Err(SelectionError {
        message: format!("--start-at-step: no step is named `{name}`"),
        help: format!(
            "{guess}the playbook's steps, in order: {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

impl Compiled {
    /// Keeps the steps whose playbook entry runs (`runs` as [`Selection::decide`] gives it).
    pub fn retain_chosen(&mut self, runs: &[bool]) {
        let keep: Vec<bool> = self.origins.iter().map(|o| runs[o.spec]).collect();
        let mut k = keep.iter();
        self.steps
            .retain(|_| *k.next().expect("one origin per step"));
        let mut k = keep.iter();
        self.origins
            .retain(|_| *k.next().expect("one origin per step"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tags_decide_as_ansible_does() {
        let allow = |step: &[&str], only: &[&str], skip: &[&str]| {
            tags_allow(&tags(step), &tags(only), &tags(skip))
        };
        // No --tags: everything but `never`.
        assert!(allow(&[], &[], &[]));
        assert!(allow(&["docker"], &[], &[]));
        assert!(allow(&["always"], &[], &[]));
        assert!(!allow(&["never"], &[], &[]));
        assert!(!allow(&["never", "debug"], &[], &[]));
        // --tags: the steps carrying one, and `always`.
        assert!(allow(&["docker", "packages"], &["packages"], &[]));
        assert!(!allow(&["docker"], &["nfs"], &[]));
        assert!(!allow(&[], &["nfs"], &[]), "an untagged step");
        assert!(allow(&["always"], &["nfs"], &[]));
        // `never` runs only when one of its tags is asked for.
        assert!(allow(&["never", "debug"], &["debug"], &[]));
        assert!(allow(&["never", "debug"], &["never"], &[]));
        assert!(!allow(&["never", "debug"], &["docker"], &[]));
        // --skip-tags: any step carrying one; `always` only when `always` is named.
        assert!(!allow(&["docker"], &[], &["docker"]));
        assert!(allow(&[], &[], &["docker"]));
        assert!(allow(&["always"], &[], &["docker"]));
        assert!(allow(&["always"], &["nfs"], &["docker"]));
        assert!(!allow(&["always"], &[], &["always"]));
        assert!(!allow(&["always", "docker"], &[], &["docker"]));
        assert!(
            !allow(&["docker", "nfs"], &["docker"], &["nfs"]),
            "skip wins"
        );
    }

    const PLAYBOOK: &str = r#"
[[steps]]
name = "check"
use = "command"
tags = ["always"]
with = { run = "true" }

[[steps]]
name = "docker engine"
use = "command"
tags = ["docker", "packages"]
with = { run = "true" }

[[steps]]
name = "share"
use = "command"
tags = ["nfs"]
with = { run = "true" }

[[steps]]
name = "untagged"
use = "command"
with = { run = "true" }

[[steps]]
name = "debug dump"
use = "command"
tags = ["never", "debug"]
with = { run = "true" }
"#;

    fn pb() -> PlaybookFile {
        PlaybookFile::parse(PLAYBOOK, Path::new("p.toml"), &["command"]).unwrap()
    }

    fn decide(tags_: &[&str], skip: &[&str], start: Option<&str>) -> Result<Vec<bool>, String> {
        Selection {
            tags: tags(tags_),
            skip_tags: tags(skip),
            start_at: start.map(str::to_string),
        }
        .decide(&pb())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_selection_decides_every_step() {
        let (t, f) = (true, false);
        assert_eq!(decide(&[], &[], None).unwrap(), [t, t, t, t, f]);
        assert_eq!(decide(&["nfs"], &[], None).unwrap(), [t, f, t, f, f]);
        assert_eq!(
            decide(&["packages", "debug"], &[], None).unwrap(),
            [t, t, f, f, t]
        );
        assert_eq!(decide(&[], &["docker"], None).unwrap(), [t, f, t, t, f]);
        assert_eq!(decide(&[], &["always"], None).unwrap(), [f, t, t, t, f]);
        // --start-at-step: nothing before it, `always` included; tags still apply after.
        assert_eq!(decide(&[], &[], Some("share")).unwrap(), [f, f, t, t, f]);
        assert_eq!(
            decide(&["nfs"], &[], Some("docker engine")).unwrap(),
            [f, f, t, f, f]
        );
    }

    #[test]
    fn unknown_tags_and_step_names_are_refused_naming_the_known_ones() {
        assert_eq!(
            decide(&["dokcer"], &[], None).unwrap_err(),
            "--tags: unknown tag `dokcer`\n  help: did you mean `docker`? the playbook's tags: always, debug, docker, never, nfs, packages"
        );
        assert_eq!(
            decide(&[], &["web"], None).unwrap_err(),
            "--skip-tags: unknown tag `web`\n  help: the playbook's tags: always, debug, docker, never, nfs, packages"
        );
        assert_eq!(
            decide(&[""], &[], None).unwrap_err(),
            "--tags: an empty tag\n  help: name the tags, separated by commas: --tags docker,nfs"
        );
        assert_eq!(
            decide(&[], &[], Some("docker")).unwrap_err(),
            "--start-at-step: no step is named `docker`\n  help: did you mean `docker engine`? the playbook's steps, in order: `check`, `docker engine`, `share`, `untagged`, `debug dump`"
        );
        let untagged = PlaybookFile::parse(
            "[[steps]]\nuse = \"command\"\n",
            Path::new("p.toml"),
            &["command"],
        )
        .unwrap();
        let e = Selection {
            tags: tags(&["docker"]),
            ..Default::default()
        }
        .decide(&untagged)
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--tags: unknown tag `docker`: no step of the playbook has tags\n  help: tag steps in the playbook: tags = [\"docker\"]"
        );
    }

    #[test]
    fn the_first_step_of_a_name_is_where_a_run_starts() {
        let twice = format!(
            "{PLAYBOOK}\n[[steps]]\nname = \"share\"\nuse = \"command\"\nwith = {{ run = \"true\" }}\n"
        );
        let pb = PlaybookFile::parse(&twice, Path::new("p.toml"), &["command"]).unwrap();
        let runs = Selection {
            start_at: Some("share".into()),
            ..Default::default()
        }
        .decide(&pb)
        .unwrap();
        assert_eq!(runs, [false, false, true, true, false, true]);
    }
}
