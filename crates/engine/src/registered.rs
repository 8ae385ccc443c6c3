//! What a step registers on each host (Ansible's `register`; a looped step's `results`, one per
//! item), the conditions decided when a step is reached rather than when the playbook is compiled
//! (a `when` that reads a registered result, `until`, `failed_when`, `changed_when`), a step's
//! retries and `ignore_errors`. The runner owns the results; this module only evaluates.

use std::collections::BTreeMap;
use std::time::Duration;

use minijinja::Value;

use crate::event::HostStatus;

/// The fields of a result, as `until` reads them bare and `when` as `NAME.FIELD`.
pub const RESULT_FIELDS: &[&str] = &[
    "rc",
    "stdout",
    "stderr",
    "stdout_lines",
    "changed",
    "failed",
    "skipped",
];

/// `delay` when a step sets `retries` without it (Ansible's default).
pub const DEFAULT_DELAY: Duration = Duration::from_secs(5);

/// What a step did on one host. `stdout` and `stderr` have been through redaction: a secret a
/// command printed reads as the redaction mark here too. A looped step registers one result
/// per item in `results` (each with its `item`), and `changed`/`failed`/`skipped` over them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Registered {
    /// Exit status of the last command the step ran there; 0 when it ran none.
    pub rc: i64,
    /// What its commands printed, in order, without the final newline.
    pub stdout: String,
    pub stderr: String,
    pub changed: bool,
    pub failed: bool,
    /// The step did not run there: its `when` was false, it decided to skip, or `--check` kept
    /// its commands from running (then nothing real is known: rc 0, no output).
    pub skipped: bool,
    /// The loop's item this result is of (an entry of a looped step's `results`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<serde_json::Value>,
    /// A looped step's results, one per item in order; None: the step has no loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<Registered>>,
}

/// `ignore_errors`, `failed_when` and `changed_when` of a step (Ansible's keywords of those
/// names). The expressions read the step's own result as `until` does (`rc`, `stdout`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultRules {
    /// A host that fails the step is reported `ignored` and goes on to the next steps.
    pub ignore_errors: bool,
    /// Whether the host failed, instead of the command's exit status.
    pub failed_when: Option<String>,
    /// Whether the host changed, instead of "the command ran".
    pub changed_when: Option<String>,
}

impl ResultRules {
    /// Whether the step's own result decides its outcome (its commands' exit status does not).
    pub fn judges(&self) -> bool {
        self.failed_when.is_some() || self.changed_when.is_some()
    }

    /// `changed_when` is the constant false: the step never changes anything (a probe).
    pub fn never_changes(&self) -> bool {
        self.changed_when
            .as_deref()
            .is_some_and(|e| matches!(e.trim(), "false" | "False"))
    }

    pub fn is_default(&self) -> bool {
        *self == ResultRules::default()
    }
}

/// The repetition of a looped step that registers: its place in the loop and its item.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopItem {
    /// 0 for the first item: its result starts the list anew.
    pub index: usize,
    pub item: serde_json::Value,
}

/// What the commands of one change printed (redacted), kept by the runner for `register`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub rc: Option<u32>,
    pub stdout: String,
    pub stderr: String,
}

impl Registered {
    /// The result of a step from how it ended on a host and what its commands printed there.
    pub fn from_outcome(status: HostStatus, captured: Option<&Captured>) -> Registered {
        let trim = |s: &str| s.trim_end_matches(['\n', '\r']).to_string();
        let mut r = Registered {
            rc: captured.and_then(|c| c.rc).map_or(0, i64::from),
            stdout: captured.map(|c| trim(&c.stdout)).unwrap_or_default(),
            stderr: captured.map(|c| trim(&c.stderr)).unwrap_or_default(),
            ..Registered::default()
        };
        match status {
            HostStatus::Changed => r.changed = true,
            // An ignored failure is still a failure to what reads the result (Ansible's).
            HostStatus::Failed | HostStatus::Unreachable | HostStatus::Ignored => r.failed = true,
            // Under --check nothing ran: Ansible's "skipped" for a command in check mode.
            HostStatus::WouldChange | HostStatus::Skipped => {
                r = Registered {
                    skipped: true,
                    ..Registered::default()
                }
            }
            HostStatus::Ok => {}
        }
        r
    }

    /// `prev` (what the loop registered so far on the host) with `one`, the result of item
    /// `l`, appended; the first item starts a new list. `changed` and `failed`: any item's;
    /// `skipped`: every item's.
    pub fn add_item(prev: Option<Registered>, l: &LoopItem, one: Registered) -> Registered {
        let mut results = match prev {
            Some(Registered {
                results: Some(r), ..
            }) if l.index > 0 => r,
            _ => Vec::new(),
        };
        results.push(Registered {
            item: Some(l.item.clone()),
            ..one
        });
        Registered {
            changed: results.iter().any(|r| r.changed),
            failed: results.iter().any(|r| r.failed),
            skipped: results.iter().all(|r| r.skipped),
            results: Some(results),
            ..Registered::default()
        }
    }

    fn value(&self) -> Value {
        if let Some(results) = &self.results {
            // A loop's result has no rc or output of its own: reading them is an error, as
            // reading `results` of a step without a loop is.
            #[derive(serde::Serialize)]
            struct Looped {
                changed: bool,
                failed: bool,
                skipped: bool,
                results: Vec<Value>,
            }
            return Value::from(minijinja::value::Serde(Looped {
                changed: self.changed,
                failed: self.failed,
                skipped: self.skipped,
                results: results.iter().map(Registered::value).collect::<Vec<_>>(),
            }));
        }
        #[derive(serde::Serialize)]
        struct View<'a> {
            #[serde(flatten)]
            r: &'a Registered,
            stdout_lines: Vec<&'a str>,
        }
        Value::from(minijinja::value::Serde(View {
            r: self,
            stdout_lines: self.stdout.lines().collect(),
        }))
    }
}

/// `retries`, `delay` and `until` of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Attempts after the first.
    pub retries: u32,
    pub delay: Duration,
    /// Over the step's own result; None: retry while the host fails.
    pub until: Option<String>,
}

/// What is decided about a step when it is reached (`step::Configured` carries it): its
/// `register`, a `when` over registered results, its retries. It keeps each target host's
/// template context (vars, host, the loop's item) so those expressions read what the
/// compile-time ones read, plus the registered results.
pub struct AtRun {
    pub register: Option<String>,
    /// A `when` that reads a registered result.
    pub when: Option<String>,
    pub retry: Option<Retry>,
    /// `ignore_errors`, `failed_when`, `changed_when`.
    pub rules: ResultRules,
    /// A looped step's repetition: its result is one entry of the registered `results`.
    pub looped: Option<LoopItem>,
    /// Host to its template context.
    pub contexts: BTreeMap<String, Value>,
}

impl AtRun {
    /// Whether the step's `when` holds on `host`, given what is registered there. Err: why it
    /// cannot be evaluated (a result read that this host has none of, a type error).
    pub fn when_holds(
        &self,
        host: &str,
        registered: &BTreeMap<String, Registered>,
    ) -> Result<bool, String> {
        let Some(expr) = &self.when else {
            return Ok(true);
        };
        self.eval("when", expr, host, registered, None)
    }

    /// Whether `until` holds over the step's own result `own` on `host` (true without `until`
    /// when the host did not fail).
    pub fn until_holds(
        &self,
        host: &str,
        own: &Registered,
        registered: &BTreeMap<String, Registered>,
    ) -> Result<bool, String> {
        match self.retry.as_ref().and_then(|r| r.until.as_ref()) {
            Some(expr) => self.eval("until", expr, host, registered, Some(own)),
            None => Ok(!own.failed),
        }
    }

    /// Whether the host failed and whether it changed, by `failed_when` and `changed_when`
    /// over the step's own result `own` (its `failed`: the commands' exit status said so;
    /// `changed`: they ran). A failed host has not changed.
    pub fn judge(
        &self,
        host: &str,
        own: &Registered,
        registered: &BTreeMap<String, Registered>,
    ) -> Result<(bool, bool), String> {
        let failed = match &self.rules.failed_when {
            Some(expr) => self.eval("failed_when", expr, host, registered, Some(own))?,
            None => own.failed,
        };
        if failed {
            return Ok((true, false));
        }
        let changed = match &self.rules.changed_when {
            Some(expr) => self.eval("changed_when", expr, host, registered, Some(own))?,
            None => own.changed,
        };
        Ok((false, changed))
    }

    fn eval(
        &self,
        key: &str,
        expr: &str,
        host: &str,
        registered: &BTreeMap<String, Registered>,
        own: Option<&Registered>,
    ) -> Result<bool, String> {
        let ctx = self.context(host, registered, own);
        let env = crate::template::environment();
        crate::template::truthy(&env, expr, &ctx).map_err(|e| {
            let missing: Vec<String> = crate::template::names_read_by_expression(expr)
                .unwrap_or_default()
                .into_iter()
                .filter(|n| ctx.get_attr(n).is_ok_and(|v| v.is_undefined()))
                .collect();
            match missing.first() {
                Some(n) => format!(
                    "`{key} = {expr}`: `{n}` is not registered on this host (the step that registers it did not reach it)"
                ),
                None => format!("cannot evaluate `{key} = {expr}`: {}", e.message),
            }
        })
    }

    /// The host's context, with every result registered there under its name and, for
    /// `until`, the step's own result's fields at the top (and under its own `register`).
    fn context(
        &self,
        host: &str,
        registered: &BTreeMap<String, Registered>,
        own: Option<&Registered>,
    ) -> Value {
        let mut map: BTreeMap<String, Value> = BTreeMap::new();
        if let Some(base) = self.contexts.get(host)
            && let Ok(keys) = base.try_iter()
        {
            for k in keys {
                if let (Some(name), Ok(v)) = (k.as_str(), base.get_item(&k)) {
                    map.insert(name.to_string(), v);
                }
            }
        }
        for (name, r) in registered {
            map.insert(name.clone(), r.value());
        }
        if let Some(own) = own {
            let v = own.value();
            if let Some(name) = &self.register {
                map.insert(name.clone(), v.clone());
            }
            for field in RESULT_FIELDS {
                if let Ok(x) = v.get_attr(field) {
                    map.insert(field.to_string(), x);
                }
            }
        }
        Value::from(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_run(when: Option<&str>, until: Option<&str>) -> AtRun {
        let ctx = Value::from(minijinja::value::Serde(serde_json::json!({
            "vars": {"want": "absent"},
            "host": {"name": "web-1"},
        })));
        AtRun {
            register: Some("me".into()),
            rules: ResultRules::default(),
            looped: None,
            when: when.map(str::to_string),
            retry: Some(Retry {
                retries: 2,
                delay: Duration::ZERO,
                until: until.map(str::to_string),
            }),
            contexts: [("web-1".to_string(), ctx)].into(),
        }
    }

    fn probe(rc: i64, stdout: &str) -> BTreeMap<String, Registered> {
        [(
            "probe".to_string(),
            Registered {
                rc,
                stdout: stdout.into(),
                changed: true,
                ..Registered::default()
            },
        )]
        .into()
    }

    #[test]
    fn results_from_outcomes() {
        let c = Captured {
            rc: Some(3),
            stdout: "a\nb\n".into(),
            stderr: "oops\n".into(),
        };
        assert_eq!(
            Registered::from_outcome(HostStatus::Changed, Some(&c)),
            Registered {
                rc: 3,
                stdout: "a\nb".into(),
                stderr: "oops".into(),
                changed: true,
                ..Registered::default()
            }
        );
        let failed = Registered::from_outcome(HostStatus::Failed, Some(&c));
        assert!(failed.failed && !failed.changed && failed.rc == 3);
        let ok = Registered::from_outcome(HostStatus::Ok, None);
        assert_eq!(ok, Registered::default(), "nothing ran: rc 0, no output");
        // Under --check nothing ran, whatever would have: skipped, nothing known.
        for status in [HostStatus::WouldChange, HostStatus::Skipped] {
            assert_eq!(
                Registered::from_outcome(status, Some(&c)),
                Registered {
                    skipped: true,
                    ..Registered::default()
                }
            );
        }
    }

    #[test]
    fn when_reads_registered_results_and_vars_per_host() {
        let s = at_run(Some("probe.rc != 0 or probe.stdout == vars.want"), None);
        assert!(s.when_holds("web-1", &probe(1, "present")).unwrap());
        assert!(s.when_holds("web-1", &probe(0, "absent")).unwrap());
        assert!(!s.when_holds("web-1", &probe(0, "present")).unwrap());
        let lines = at_run(Some("'b' in probe.stdout_lines and probe.changed"), None);
        assert!(lines.when_holds("web-1", &probe(0, "a\nb")).unwrap());
        assert!(!lines.when_holds("web-1", &probe(0, "a\nbc")).unwrap());
        assert!(
            at_run(None, None)
                .when_holds("web-1", &BTreeMap::new())
                .unwrap()
        );
    }

    #[test]
    fn a_result_the_host_does_not_have_is_named() {
        let s = at_run(Some("probe.rc == 0"), None);
        assert_eq!(
            s.when_holds("web-1", &BTreeMap::new()).unwrap_err(),
            "`when = probe.rc == 0`: `probe` is not registered on this host (the step that registers it did not reach it)"
        );
        // `is defined` guards it.
        let guarded = at_run(Some("probe is defined and probe.rc == 0"), None);
        assert!(!guarded.when_holds("web-1", &BTreeMap::new()).unwrap());
        let bad = at_run(Some("probe.stdout + 1"), None);
        let e = bad.when_holds("web-1", &probe(0, "x")).unwrap_err();
        assert!(
            e.starts_with("cannot evaluate `when = probe.stdout + 1`: "),
            "{e}"
        );
    }

    #[test]
    fn until_reads_the_steps_own_result_bare_and_by_name() {
        let own = |rc, stdout: &str| Registered {
            rc,
            stdout: stdout.into(),
            ..Registered::default()
        };
        let s = at_run(None, Some("'ready' in stdout"));
        assert!(
            s.until_holds("web-1", &own(0, "ready"), &BTreeMap::new())
                .unwrap()
        );
        assert!(
            !s.until_holds("web-1", &own(0, "starting"), &BTreeMap::new())
                .unwrap()
        );
        let s = at_run(None, Some("me.rc == 0 and rc == 0 and probe.rc == 1"));
        assert!(s.until_holds("web-1", &own(0, ""), &probe(1, "")).unwrap());
        assert!(!s.until_holds("web-1", &own(2, ""), &probe(1, "")).unwrap());
        // Without `until`: until the host does not fail.
        let plain = at_run(None, None);
        assert!(
            plain
                .until_holds("web-1", &own(0, ""), &BTreeMap::new())
                .unwrap()
        );
        let failed = Registered {
            failed: true,
            rc: 1,
            ..Registered::default()
        };
        assert!(
            !plain
                .until_holds("web-1", &failed, &BTreeMap::new())
                .unwrap()
        );
    }

    /// A command's own result as the runner judges it: it ran, so it changed.
    fn own(rc: i64, stdout: &str, failed: bool) -> Registered {
        Registered {
            rc,
            stdout: stdout.into(),
            changed: true,
            failed,
            ..Registered::default()
        }
    }

    fn judging(failed_when: Option<&str>, changed_when: Option<&str>) -> AtRun {
        AtRun {
            rules: ResultRules {
                ignore_errors: false,
                failed_when: failed_when.map(str::to_string),
                changed_when: changed_when.map(str::to_string),
            },
            retry: None,
            ..at_run(None, None)
        }
    }

    #[test]
    fn failed_when_and_changed_when_decide_over_the_own_result() {
        let none = BTreeMap::new();
        let s = judging(Some("rc not in [0, 1]"), None);
        assert_eq!(
            s.judge("web-1", &own(1, "", true), &none),
            Ok((false, true))
        );
        assert_eq!(
            s.judge("web-1", &own(0, "", false), &none),
            Ok((false, true))
        );
        assert_eq!(
            s.judge("web-1", &own(2, "", true), &none),
            Ok((true, false))
        );
        let s = judging(None, Some("'updated' in stdout and me.rc == 0"));
        assert_eq!(
            s.judge("web-1", &own(0, "1 updated", false), &none),
            Ok((false, true))
        );
        assert_eq!(
            s.judge("web-1", &own(0, "nothing", false), &none),
            Ok((false, false))
        );
        // Without failed_when, the exit status decides; a failure has not changed.
        assert_eq!(
            s.judge("web-1", &own(3, "updated", true), &none),
            Ok((true, false))
        );
        let probe = judging(None, Some("false"));
        assert!(probe.rules.never_changes() && probe.rules.judges());
        assert_eq!(
            probe.judge("web-1", &own(0, "", false), &none),
            Ok((false, false))
        );
        // Registered results of earlier steps and vars are read too.
        let s = judging(Some("probe.rc == rc and vars.want == 'absent'"), None);
        assert_eq!(
            s.judge("web-1", &own(1, "", true), &probe_rc(1)),
            Ok((true, false))
        );
        let e = judging(Some("stdout + 1"), None)
            .judge("web-1", &own(0, "x", false), &none)
            .unwrap_err();
        assert!(
            e.starts_with("cannot evaluate `failed_when = stdout + 1`: "),
            "{e}"
        );
        assert!(!ResultRules::default().judges());
    }

    fn probe_rc(rc: i64) -> BTreeMap<String, Registered> {
        probe(rc, "")
    }

    #[test]
    fn a_loop_registers_its_results_with_the_aggregate() {
        let item = |index, v: &str| LoopItem {
            index,
            item: serde_json::json!(v),
        };
        let a = Registered::add_item(None, &item(0, "a"), own(0, "A", false));
        let stale = Registered::add_item(Some(a.clone()), &item(1, "b"), own(1, "B", true));
        // A new run of the loop (its first item) starts the list anew.
        let b = Registered::add_item(Some(stale), &item(0, "a"), own(0, "A", false));
        assert_eq!(b, a);
        let skipped = Registered {
            skipped: true,
            ..Registered::default()
        };
        let two = Registered::add_item(Some(a), &item(1, "b"), skipped.clone());
        assert!(two.changed && !two.failed && !two.skipped);
        let results = two.results.as_ref().unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[1].item, Some(serde_json::json!("b")));
        assert!(results[1].skipped);
        let all_skipped = Registered::add_item(None, &item(0, "a"), skipped);
        assert!(all_skipped.skipped && !all_skipped.changed);

        let registered: BTreeMap<String, Registered> = [("each".to_string(), two)].into();
        for (expr, holds) in [
            ("each.changed and not each.failed", true),
            (
                "each.results[0].rc == 0 and each.results[0].item == 'a'",
                true,
            ),
            ("each.results[0].stdout_lines == ['A']", true),
            ("each.results | length == 2", true),
            (
                "each.results | selectattr('changed') | list | length == 1",
                true,
            ),
            (
                "each.results | rejectattr('skipped') | map(attribute='item') | list == ['a']",
                true,
            ),
            (
                "each.results[1].skipped and not each.results[1].changed",
                true,
            ),
            (
                "each.results | selectattr('failed') | list | length > 0",
                false,
            ),
        ] {
            assert_eq!(
                at_run(Some(expr), None).when_holds("web-1", &registered),
                Ok(holds),
                "{expr}"
            );
        }
        // A loop's result has no rc of its own.
        let e = at_run(Some("each.rc == 0"), None)
            .when_holds("web-1", &registered)
            .unwrap_err();
        assert!(
            e.starts_with("cannot evaluate `when = each.rc == 0`"),
            "{e}"
        );
    }
}
