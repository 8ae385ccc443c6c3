//! What a step registers on each host (Ansible's `register`), the conditions decided when a step
//! is reached rather than when the playbook is compiled (a `when` that reads a registered result,
//! `until`), and a step's retries. The runner owns the results; this module only evaluates.

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
/// command printed reads as the redaction mark here too.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
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
            HostStatus::Failed | HostStatus::Unreachable => r.failed = true,
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

    fn value(&self) -> Value {
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
}
