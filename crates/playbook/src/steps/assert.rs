//! `assert`: conditions over a host's vars that must hold (Ansible's `assert`), e.g. `that =
//! ["vars.replicas > 0"]`. They are evaluated when the playbook is compiled, over the host's
//! context (`vars` with its group and host vars, `host`, `hosts`); a false one fails that host
//! with `fail_msg` when the step is reached, so the host drops out before later steps change it.
//! It gathers nothing and changes nothing.

use super::util;
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::step::{Check, Facts, HostStep, StepError};
use provision_engine::template::TemplateError;
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &["that", "fail_msg", "success_msg"];

inventory::submit! { crate::ctx::BuiltIn::host("assert", build) }

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    that: Option<toml::Value>,
    fail_msg: Option<String>,
    success_msg: Option<String>,
}

/// One host's verdict, decided at build time (vars do not change during a run).
#[derive(Debug, PartialEq, Eq)]
pub struct Assert {
    /// The first condition that is false; None: every one holds.
    false_condition: Option<String>,
    fail_msg: Option<String>,
    success_msg: Option<String>,
}

const EXAMPLE: &str = "that = [\"vars.replicas > 0\", \"vars.domain is defined\"]";

pub fn build(with: &toml::Table, ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let conditions = conditions(p.that.as_ref())?;
    for (key, msg) in [("fail_msg", &p.fail_msg), ("success_msg", &p.success_msg)] {
        if msg.as_ref().is_some_and(|m| m.trim().is_empty()) {
            return Err(util::bad(
                key,
                format!("`{key}` is empty"),
                format!("write what it means, or leave `{key}` out"),
            ));
        }
    }
    let eval = |expr: &str| evaluate(ctx.render, expr);
    let false_condition = first_false(&conditions, eval).map_err(|(expr, e)| {
        let help = if e.message.starts_with("syntax error") {
            format!(
                "each condition is one minijinja expression over vars, host and hosts, without {{{{ }}}}, e.g. {EXAMPLE}"
            )
        } else if e.message.starts_with("undefined value") {
            "define the var in [vars], a group's or the host's vars, or test for it first: \
             \"vars.x is defined\" (conditions after a false one are not evaluated)"
                .to_string()
        } else {
            "fix the expression: it is evaluated over vars, host and hosts".to_string()
        };
        util::bad(
            "that",
            format!(
                "cannot evaluate `{expr}` for host {}: {}",
                ctx.host.name, e.message
            ),
            help,
        )
    })?;
    Ok(Box::new(Assert {
        false_condition,
        fail_msg: p.fail_msg,
        success_msg: p.success_msg,
    }))
}

/// `that` as a list of expressions: a non-empty array of non-empty strings.
fn conditions(that: Option<&toml::Value>) -> Result<Vec<String>, ParamError> {
    let items = match that {
        None => {
            return Err(util::bad(
                "that",
                "assert needs `that`, the conditions that must hold",
                format!("add {EXAMPLE}"),
            ));
        }
        Some(toml::Value::Array(items)) if !items.is_empty() => items,
        Some(toml::Value::Array(_)) => {
            return Err(util::bad(
                "that",
                "`that` lists no condition",
                format!("write {EXAMPLE}"),
            ));
        }
        Some(toml::Value::String(s)) => {
            return Err(util::bad(
                "that",
                "`that` must be a list of conditions, not a string",
                format!("write that = [\"{s}\"]"),
            ));
        }
        Some(other) => {
            return Err(util::bad(
                "that",
                format!(
                    "`that` must be a list of conditions, not {}",
                    other.type_str()
                ),
                format!("write {EXAMPLE}"),
            ));
        }
    };
    items
        .iter()
        .map(|item| match item {
            toml::Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            toml::Value::String(_) => Err(util::bad(
                "that",
                "a condition in `that` is empty",
                "remove it, or write an expression such as \"vars.replicas > 0\"",
            )),
            // A lone `{{ ... }}` renders to its value: the condition is then gone.
            other => Err(util::bad(
                "that",
                format!(
                    "each condition in `that` must be an expression in a string, not {} ({other})",
                    other.type_str()
                ),
                "write the expression without {{ }}: that = [\"vars.replicas > 0\"]",
            )),
        })
        .collect()
}

/// The first false condition, in order; conditions after it are not evaluated (Ansible's
/// order: `"vars.x is defined"` guards the conditions after it). An expression that cannot be
/// evaluated is returned with its error.
fn first_false(
    conditions: &[String],
    eval: impl Fn(&str) -> Result<bool, TemplateError>,
) -> Result<Option<String>, (String, TemplateError)> {
    for c in conditions {
        match eval(c) {
            Ok(true) => {}
            Ok(false) => return Ok(Some(c.clone())),
            Err(e) => return Err((c.clone(), e)),
        }
    }
    Ok(None)
}

/// Evaluates one condition with the host's renderer: checked alone as one expression first
/// (so it cannot close the tag it is put in), then rendered as an `if` to `true`/`false`.
fn evaluate(
    render: &dyn Fn(&str, &str) -> Result<String, TemplateError>,
    expr: &str,
) -> Result<bool, TemplateError> {
    provision_engine::template::environment()
        .compile_expression(expr)
        .map_err(|e| TemplateError {
            name: "that".into(),
            line: None,
            message: match e.detail() {
                Some(d) => format!("{}: {d}", e.kind()),
                None => e.kind().to_string(),
            },
        })?;
    let out = render("that", &condition_template(expr))?;
    Ok(out == "true")
}

/// The template that renders `true` when `expr` holds, else `false`.
fn condition_template(expr: &str) -> String {
    format!("{{% if ({expr}) %}}true{{% else %}}false{{% endif %}}")
}

impl HostStep for Assert {
    fn gather(&self) -> Option<String> {
        None
    }

    fn check(&self, _: &Facts) -> Result<Check, StepError> {
        match (&self.false_condition, &self.fail_msg) {
            (None, _) => Ok(Check::Ok(
                self.success_msg
                    .clone()
                    .unwrap_or_else(|| "all assertions passed".into()),
            )),
            (Some(c), Some(msg)) => Err(StepError::new(msg).hint(format!("`{c}` is false"))),
            (Some(c), None) => Err(StepError::new(format!("assertion `{c}` is false"))
                .hint("set fail_msg to say what it means")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{build as build_with, build_err};

    fn verdict(with: &str) -> Result<Check, StepError> {
        build_with(build, with).unwrap().check(&Facts::default())
    }

    #[test]
    fn conditions_that_hold_pass_with_the_success_message() {
        // The test context: vars.ip = "10.0.0.5", host.name = "web-1".
        assert!(
            build_with(build, "that = [\"true\"]")
                .unwrap()
                .gather()
                .is_none()
        );
        assert_eq!(
            verdict("that = [\"vars.ip == '10.0.0.5'\", \"host.name is startingwith('web')\"]"),
            Ok(Check::Ok("all assertions passed".into()))
        );
        assert_eq!(
            verdict("that = [\"vars.ip is defined\"]\nsuccess_msg = \"ip set\""),
            Ok(Check::Ok("ip set".into()))
        );
    }

    #[test]
    fn the_first_false_condition_fails_the_host() {
        assert_eq!(
            verdict(
                "that = [\"vars.ip is defined\", \"vars.ip == '10.0.0.9'\", \"vars.ip == '10.0.0.5'\"]\nfail_msg = \"wrong ip\""
            ),
            Err(StepError::new("wrong ip").hint("`vars.ip == '10.0.0.9'` is false"))
        );
        assert_eq!(
            verdict("that = [\"vars.missing is defined\"]"),
            Err(
                StepError::new("assertion `vars.missing is defined` is false")
                    .hint("set fail_msg to say what it means")
            )
        );
        // A false condition guards the ones after it: `vars.missing > 1` is never evaluated.
        assert_eq!(
            verdict("that = [\"vars.missing is defined\", \"vars.missing > 1\"]\nfail_msg = \"m\""),
            Err(StepError::new("m").hint("`vars.missing is defined` is false"))
        );
    }

    #[test]
    fn evaluation_order_and_errors() {
        let seen = std::cell::RefCell::new(Vec::new());
        let eval = |e: &str| {
            seen.borrow_mut().push(e.to_string());
            Ok(e != "b")
        };
        let conds = ["a", "b", "c"].map(String::from);
        assert_eq!(first_false(&conds, eval), Ok(Some("b".into())));
        assert_eq!(*seen.borrow(), ["a", "b"]);
        let err = TemplateError {
            name: "that".into(),
            line: None,
            message: "boom".into(),
        };
        assert_eq!(
            first_false(&conds, |_| Err(err.clone())),
            Err(("a".into(), err.clone()))
        );
        assert_eq!(first_false(&conds, |_| Ok(true)), Ok(None));
    }

    #[test]
    fn a_condition_cannot_close_its_tag() {
        assert_eq!(
            condition_template("vars.a > 0"),
            "{% if (vars.a > 0) %}true{% else %}false{% endif %}"
        );
        // `%}` inside a string literal is part of the string.
        assert_eq!(
            verdict("that = [\"'%}' != vars.ip\"]"),
            Ok(Check::Ok("all assertions passed".into()))
        );
        let e = build_err(build_with(build, "that = [\"true) %}x{% if (true\"]"));
        assert_eq!(e.key.as_deref(), Some("that"));
        assert!(e.message.contains("syntax error"), "{e:?}");
    }

    #[test]
    fn bad_parameters() {
        let e = build_err(build_with(build, "that = \"vars.ip is defined\""));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str(), e.help.as_deref()),
            (
                Some("that"),
                "`that` must be a list of conditions, not a string",
                Some("write that = [\"vars.ip is defined\"]")
            )
        );
        let e = build_err(build_with(build, "that = 3"));
        assert_eq!(
            e.message,
            "`that` must be a list of conditions, not integer"
        );
        let e = build_err(build_with(build, "that = []"));
        assert_eq!(e.message, "`that` lists no condition");
        let e = build_err(build_with(build, "that = [true]"));
        assert_eq!(
            (e.message.as_str(), e.help.as_deref()),
            (
                "each condition in `that` must be an expression in a string, not boolean (true)",
                Some("write the expression without {{ }}: that = [\"vars.replicas > 0\"]")
            )
        );
        let e = build_err(build_with(build, "that = [\" \"]"));
        assert_eq!(e.message, "a condition in `that` is empty");
        let e = build_err(build_with(build, "fail_msg = \"x\""));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (
                Some("that"),
                "assert needs `that`, the conditions that must hold"
            )
        );
        let e = build_err(build_with(build, "that = [\"true\"]\nfail_msg = \"\""));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (Some("fail_msg"), "`fail_msg` is empty")
        );
        // An unknown key, with the nearest known one.
        let e = build_err(build_with(build, "that = [\"true\"]\nfail_message = \"x\""));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str(), e.help.as_deref()),
            (
                Some("fail_message"),
                "unknown parameter `fail_message`",
                Some("did you mean `fail_msg`? (known: that, fail_msg, success_msg)")
            )
        );
        // An expression that does not parse, and one over a var that is not there.
        let e = build_err(build_with(build, "that = [\"vars.ip ==\"]"));
        assert_eq!(e.key.as_deref(), Some("that"));
        assert!(
            e.message
                .starts_with("cannot evaluate `vars.ip ==` for host web-1: syntax error"),
            "{}",
            e.message
        );
        assert!(e.help.unwrap().contains("without {{ }}"));
        let e = build_err(build_with(build, "that = [\"vars.replicas > 0\"]"));
        assert!(
            e.message
                .starts_with("cannot evaluate `vars.replicas > 0` for host web-1: undefined value"),
            "{}",
            e.message
        );
        assert!(e.help.unwrap().contains("vars.x is defined"));
    }
}
