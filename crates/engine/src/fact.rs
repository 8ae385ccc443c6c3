//! Typed facts: a fact is one read-only gather command and one pure parser of its output into a
//! type. A per-host step declares the fact it needs ([`Decide::fact`]) and decides over the
//! parsed value; [`Typed`] makes such a step a [`HostStep`] the engine runs (the engine batches
//! the fact commands of a host, and runs identical ones once per batch).

use crate::step::{Check, Facts, HostStep, StepError};

/// One thing to know about a host.
pub trait Fact {
    /// What the output says, parsed.
    type Value;

    /// A POSIX sh command printing the fact. Must not change the host: it also runs under
    /// `--check`.
    fn command(&self) -> String;

    /// Pure: the command's output to its value; an error says what was unexpected (it is shown
    /// with the host and step).
    fn parse(&self, facts: &Facts) -> Result<Self::Value, StepError>;
}

/// A per-host step written as a decision over one typed fact (often a struct of several, gathered
/// by one command in [`sections`]).
pub trait Decide: Send + Sync {
    type Fact: Fact;

    /// The fact this host's decision needs (its command is built from the step's parameters).
    fn fact(&self) -> Self::Fact;

    /// Pure: the parsed fact to a plan.
    fn decide(&self, fact: <Self::Fact as Fact>::Value) -> Result<Check, StepError>;

    /// See [`HostStep::waits_for_hosts`]. Default: none.
    fn waits_for_hosts(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A [`Decide`] step as the engine runs it: gather the fact's command, parse, decide.
pub struct Typed<S>(pub S);

impl<S: Decide> HostStep for Typed<S> {
    fn gather(&self) -> Option<String> {
        Some(self.0.fact().command())
    }

    fn check(&self, facts: &Facts) -> Result<Check, StepError> {
        self.0.decide(self.0.fact().parse(facts)?)
    }

    fn waits_for_hosts(&self) -> Vec<String> {
        self.0.waits_for_hosts()
    }
}

/// Several fact commands as one (a step gathers with one command): the output of each follows
/// a line `--- NAME`. Parts must not print such lines themselves: file contents are gathered as
/// base64 for this reason.
pub fn sections(parts: &[(&str, String)]) -> String {
    parts
        .iter()
        .map(|(name, cmd)| format!("echo '--- {name}'; {cmd}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The output of a [`sections`] command, split back into each part's facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sections {
    parts: Vec<(String, Facts)>,
    stdout: String,
}

impl Sections {
    pub fn parse(facts: &Facts) -> Sections {
        let mut parts: Vec<(String, Facts)> = Vec::new();
        for line in facts.stdout.split_inclusive('\n') {
            let bare = line.trim_end_matches('\n');
            if let Some(name) = bare.strip_prefix("--- ") {
                // Each part is read in the same run as the whole: it keeps the run's marks.
                let part = Facts {
                    marks: facts.marks.clone(),
                    ..Facts::new("")
                };
                parts.push((name.to_string(), part));
            } else if let Some((_, f)) = parts.last_mut() {
                f.stdout.push_str(line);
            }
        }
        Sections {
            parts,
            stdout: facts.stdout.clone(),
        }
    }

    /// The facts of one part; an error when the command did not get that far.
    pub fn get(&self, name: &str) -> Result<&Facts, StepError> {
        self.parts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f)
            .ok_or_else(|| unexpected(&format!("`{name}` fact"), &self.stdout))
    }
}

/// A fact command printed something its parser cannot read: what, and the start of the output.
pub fn unexpected(what: &str, stdout: &str) -> StepError {
    let shown: String = stdout.chars().take(200).collect();
    StepError::new(format!("unexpected {what} output: {shown:?}")).hint(
        "is this a Debian or Ubuntu host with GNU coreutils? run the gather command with \
         `provision shell` to see",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::{Action, Change};

    /// The first line of a file, typed: a fact of the smallest kind.
    struct FirstLine(&'static str);

    impl Fact for FirstLine {
        type Value = Option<String>;
        fn command(&self) -> String {
            format!("head -n1 {} 2>/dev/null || true", self.0)
        }
        fn parse(&self, facts: &Facts) -> Result<Option<String>, StepError> {
            match facts.stdout.lines().next() {
                None => Ok(None),
                Some(l) if l.starts_with("--- ") => Err(unexpected("first line", &facts.stdout)),
                Some(l) => Ok(Some(l.to_string())),
            }
        }
    }

    struct Motd;

    impl Decide for Motd {
        type Fact = FirstLine;
        fn fact(&self) -> FirstLine {
            FirstLine("/etc/motd")
        }
        fn decide(&self, first: Option<String>) -> Result<Check, StepError> {
            Ok(match first.as_deref() {
                Some("welcome") => Check::Ok("motd says welcome".into()),
                _ => Check::Change(vec![Change::new(
                    "write /etc/motd",
                    vec![Action::run("echo welcome > /etc/motd")],
                )]),
            })
        }
    }

    #[test]
    fn a_typed_step_gathers_its_fact_and_decides_over_the_parsed_value() {
        let step = Typed(Motd);
        assert_eq!(
            step.gather().as_deref(),
            Some("head -n1 /etc/motd 2>/dev/null || true")
        );
        assert_eq!(
            step.check(&Facts::new("welcome\n")).unwrap(),
            Check::Ok("motd says welcome".into())
        );
        assert!(matches!(
            step.check(&Facts::new("")).unwrap(),
            Check::Change(_)
        ));
        let e = step.check(&Facts::new("--- x\n")).unwrap_err();
        assert!(e.message.starts_with("unexpected first line output"), "{e}");
    }

    #[test]
    fn sections_split_back_into_their_parts() {
        assert_eq!(
            sections(&[("a", "echo 1".into()), ("b", "true".into())]),
            "echo '--- a'; echo 1; echo '--- b'; true"
        );
        let s = Sections::parse(&Facts::new("--- a\n1\n--- b\n"));
        assert_eq!(s.get("a").unwrap().stdout, "1\n");
        assert_eq!(s.get("b").unwrap().stdout, "");
        let e = s.get("c").unwrap_err();
        assert!(e.message.starts_with("unexpected `c` fact output"), "{e}");
        let marked = Facts {
            marks: ["apt-lists-updated".to_string()].into(),
            ..Facts::new("--- a\n1\n")
        };
        assert_eq!(
            Sections::parse(&marked).get("a").unwrap().marks,
            marked.marks
        );
    }
}
