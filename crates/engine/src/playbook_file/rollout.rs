//! `serial`, `max_fail_percentage` and `run_once` in a playbook (Ansible's keywords of those
//! names): on a step, and the first two at the top of the playbook for every step that does not
//! set its own. Checked where they are written.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::Reporter;
use crate::rollout::{BatchSize, Rollout, Serial};

const SERIAL_EXAMPLE: &str = "serial = 1, serial = \"25%\" or serial = [1, 5, \"50%\"]";
const MAX_FAIL_EXAMPLE: &str =
    "max_fail_percentage = 30 (stop the run when more than 30% of a step's hosts failed)";

/// The rollout keys of a step (`label` names it), or of the play (`label` "the playbook"; no
/// `run_once` there). None when one of them is wrong (reported).
pub(super) fn check_rollout(
    r: &mut Reporter<'_>,
    t: &DeTable<'_>,
    label: &str,
    step: bool,
) -> Option<Rollout> {
    let serial = match t.get("serial") {
        Some(v) => check_serial(r, v, &format!("`serial` in {label}")).map(Some),
        None => Some(None),
    };
    let max_fail_percentage = match t.get("max_fail_percentage") {
        Some(v) => check_max_fail(r, v, &format!("`max_fail_percentage` in {label}")).map(Some),
        None => Some(None),
    };
    let run_once = match t.get("run_once").filter(|_| step) {
        Some(v) => match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                r.wrong_type(
                    v,
                    &format!("`run_once` in {label}"),
                    "a boolean",
                    "run_once = true (the step runs on the first of its hosts only)",
                );
                None
            }
        },
        None => Some(false),
    };
    Some(Rollout {
        serial: serial?,
        max_fail_percentage: max_fail_percentage?,
        run_once: run_once?,
    })
}

/// `serial`: a number of hosts (at least 1), a percentage of the step's hosts ("1%" to
/// "100%"), or a non-empty list of them.
fn check_serial(r: &mut Reporter<'_>, v: &Spanned<DeValue<'_>>, what: &str) -> Option<Serial> {
    match v.get_ref() {
        DeValue::Array(items) if items.is_empty() => {
            r.error(
                &v.span(),
                format!("{what} is an empty list"),
                Some(format!("give at least one batch size: {SERIAL_EXAMPLE}")),
            );
            None
        }
        DeValue::Array(items) => {
            let before = r.diagnostics.len();
            let sizes: Vec<BatchSize> = items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| batch_size(r, item, &format!("item #{} of {what}", i + 1)))
                .collect();
            (r.diagnostics.len() == before).then_some(Serial(sizes))
        }
        DeValue::Integer(_) | DeValue::String(_) => batch_size(r, v, what).map(|b| Serial(vec![b])),
        _ => {
            r.wrong_type(
                v,
                what,
                "a number, a percentage or a list of them",
                SERIAL_EXAMPLE,
            );
            None
        }
    }
}

fn batch_size(r: &mut Reporter<'_>, v: &Spanned<DeValue<'_>>, what: &str) -> Option<BatchSize> {
    match v.get_ref() {
        DeValue::Integer(_) => {
            let n = r.integer(v, what, SERIAL_EXAMPLE)?;
            match usize::try_from(n) {
                Ok(n) if n >= 1 => Some(BatchSize::Hosts(n)),
                _ => {
                    r.error(
                        &v.span(),
                        format!("{what} must be at least 1 host, not {n}"),
                        Some(format!(
                            "write {SERIAL_EXAMPLE}; leave `serial` out to change all hosts at once"
                        )),
                    );
                    None
                }
            }
        }
        DeValue::String(s) => {
            let pct = s
                .strip_suffix('%')
                .and_then(|d| d.parse::<u8>().ok())
                .filter(|p| (1..=100).contains(p));
            match pct {
                Some(p) => Some(BatchSize::Percent(p)),
                None => {
                    let help = if s.ends_with('%') {
                        format!("a percentage is a whole number from 1% to 100%: {SERIAL_EXAMPLE}")
                    } else {
                        format!("a number of hosts is written without quotes: {SERIAL_EXAMPLE}")
                    };
                    r.error(
                        &v.span(),
                        format!("{what} must be a number of hosts or a percentage from 1% to 100%, not \"{s}\""),
                        Some(help),
                    );
                    None
                }
            }
        }
        _ => {
            r.wrong_type(v, what, "a number or a percentage", SERIAL_EXAMPLE);
            None
        }
    }
}

/// `max_fail_percentage`: 0 to 100.
fn check_max_fail(r: &mut Reporter<'_>, v: &Spanned<DeValue<'_>>, what: &str) -> Option<u8> {
    let n = r.integer(v, what, MAX_FAIL_EXAMPLE)?;
    match u8::try_from(n) {
        Ok(p) if p <= 100 => Some(p),
        _ => {
            r.error(
                &v.span(),
                format!("{what} must be from 0 to 100, not {n}"),
                Some(format!("write {MAX_FAIL_EXAMPLE}")),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::playbook_file::PlaybookFile;
    use crate::rollout::{BatchSize, Rollout, Serial};
    use std::path::Path;

    fn parse(top: &str, keys: &str) -> Result<PlaybookFile, String> {
        let text = format!("{top}[[steps]]\nname = \"s\"\nuse = \"apt\"\n{keys}\n");
        PlaybookFile::parse(&text, Path::new("p.toml"), &["apt"]).map_err(|e| e.to_string())
    }

    fn step(keys: &str) -> Result<Rollout, String> {
        parse("", keys).map(|pb| pb.steps[0].rollout.clone())
    }

    #[test]
    fn rollout_keys_are_read_on_a_step() {
        assert_eq!(step("").unwrap(), Rollout::default());
        assert_eq!(step("serial = 1").unwrap().serial, Some(Serial::one()));
        assert_eq!(
            step("serial = \"25%\"").unwrap().serial,
            Some(Serial(vec![BatchSize::Percent(25)]))
        );
        assert_eq!(
            step("serial = [1, 5, \"50%\"]").unwrap().serial,
            Some(Serial(vec![
                BatchSize::Hosts(1),
                BatchSize::Hosts(5),
                BatchSize::Percent(50)
            ]))
        );
        assert_eq!(
            step("max_fail_percentage = 0").unwrap().max_fail_percentage,
            Some(0)
        );
        assert_eq!(
            step("max_fail_percentage = 100")
                .unwrap()
                .max_fail_percentage,
            Some(100)
        );
        assert!(step("run_once = true").unwrap().run_once);
        assert!(!step("run_once = false").unwrap().run_once);
    }

    #[test]
    fn the_play_sets_serial_and_max_fail_percentage_for_every_step() {
        let pb = parse("serial = \"50%\"\nmax_fail_percentage = 20\n", "").unwrap();
        assert_eq!(
            pb.rollout,
            Rollout {
                serial: Some(Serial(vec![BatchSize::Percent(50)])),
                max_fail_percentage: Some(20),
                run_once: false,
            }
        );
        assert_eq!(
            pb.steps[0].rollout,
            Rollout::default(),
            "the step's own keys only"
        );
        let e = parse("run_once = true\n", "").unwrap_err();
        assert!(
            e.starts_with("p.toml:1:1: error: unknown key `run_once`"),
            "run_once is a step's: {e}"
        );
        let e = parse("serial = 0\n", "").unwrap_err();
        assert!(
            e.starts_with(
                "p.toml:1:10: error: `serial` in the playbook must be at least 1 host, not 0"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_rollout_keys_are_errors_at_their_position() {
        let err = |keys: &str| step(keys).unwrap_err();
        assert_eq!(
            err("serial = 0"),
            "p.toml:4:10: error: `serial` in step `s` must be at least 1 host, not 0\n  help: write serial = 1, serial = \"25%\" or serial = [1, 5, \"50%\"]; leave `serial` out to change all hosts at once\n\n1 error"
        );
        assert_eq!(
            err("serial = -2"),
            "p.toml:4:10: error: `serial` in step `s` must be at least 1 host, not -2\n  help: write serial = 1, serial = \"25%\" or serial = [1, 5, \"50%\"]; leave `serial` out to change all hosts at once\n\n1 error"
        );
        assert_eq!(
            err("serial = \"0%\""),
            "p.toml:4:10: error: `serial` in step `s` must be a number of hosts or a percentage from 1% to 100%, not \"0%\"\n  help: a percentage is a whole number from 1% to 100%: serial = 1, serial = \"25%\" or serial = [1, 5, \"50%\"]\n\n1 error"
        );
        assert!(err("serial = \"101%\"").starts_with("p.toml:4:10: error: `serial` in step `s` must be a number of hosts or a percentage from 1% to 100%, not \"101%\""));
        assert!(err("serial = \"12.5%\"").contains("not \"12.5%\""));
        assert_eq!(
            err("serial = \"3\""),
            "p.toml:4:10: error: `serial` in step `s` must be a number of hosts or a percentage from 1% to 100%, not \"3\"\n  help: a number of hosts is written without quotes: serial = 1, serial = \"25%\" or serial = [1, 5, \"50%\"]\n\n1 error"
        );
        assert_eq!(
            err("serial = []"),
            "p.toml:4:10: error: `serial` in step `s` is an empty list\n  help: give at least one batch size: serial = 1, serial = \"25%\" or serial = [1, 5, \"50%\"]\n\n1 error"
        );
        assert_eq!(
            err("serial = [1, 0]"),
            "p.toml:4:14: error: item #2 of `serial` in step `s` must be at least 1 host, not 0\n  help: write serial = 1, serial = \"25%\" or serial = [1, 5, \"50%\"]; leave `serial` out to change all hosts at once\n\n1 error"
        );
        assert_eq!(
            err("serial = true"),
            "p.toml:4:10: error: `serial` in step `s` must be a number, a percentage or a list of them, not a boolean\n  help: write serial = 1, serial = \"25%\" or serial = [1, 5, \"50%\"]\n\n1 error"
        );
        assert_eq!(
            err("serial = [[1]]"),
            "p.toml:4:11: error: item #1 of `serial` in step `s` must be a number or a percentage, not an array\n  help: write serial = 1, serial = \"25%\" or serial = [1, 5, \"50%\"]\n\n1 error"
        );
        assert_eq!(
            err("max_fail_percentage = 101"),
            "p.toml:4:23: error: `max_fail_percentage` in step `s` must be from 0 to 100, not 101\n  help: write max_fail_percentage = 30 (stop the run when more than 30% of a step's hosts failed)\n\n1 error"
        );
        assert!(err("max_fail_percentage = -1").contains("must be from 0 to 100, not -1"));
        assert_eq!(
            err("max_fail_percentage = \"30%\""),
            "p.toml:4:23: error: `max_fail_percentage` in step `s` must be an integer, not a string\n  help: write max_fail_percentage = 30 (stop the run when more than 30% of a step's hosts failed)\n\n1 error"
        );
        assert_eq!(
            err("run_once = \"yes\""),
            "p.toml:4:12: error: `run_once` in step `s` must be a boolean, not a string\n  help: write run_once = true (the step runs on the first of its hosts only)\n\n1 error"
        );
        assert_eq!(
            err("serail = 1"),
            "p.toml:4:1: error: unknown key `serail` in step `s`\n  help: did you mean `serial`?\n\n1 error"
        );
    }
}
