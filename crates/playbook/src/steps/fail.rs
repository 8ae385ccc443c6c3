//! `fail`: fails every host it applies to with a message (Ansible's `fail`), usually with a
//! `when` naming the hosts that must not go on (`when = "vars.env == 'prod' and not
//! vars.approved"`). Those hosts drop out before later steps change them; the others go on.
//! It gathers nothing and changes nothing.

use super::util;
use crate::ctx::{BuildCtx, ParamError};
use provision_engine::step::{Check, Facts, HostStep, StepError};
use serde::Deserialize;

pub const KNOWN_KEYS: &[&str] = &["msg"];

/// Without `msg`: Ansible's words.
pub const DEFAULT_MSG: &str = "failed as requested by the playbook";

inventory::submit! { crate::ctx::BuiltIn::host("fail", build) }

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    msg: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Fail {
    msg: String,
}

pub fn build(with: &toml::Table, _ctx: &BuildCtx<'_>) -> Result<Box<dyn HostStep>, ParamError> {
    let p: Params = util::params(with, KNOWN_KEYS)?;
    let msg = match p.msg {
        Some(m) if m.trim().is_empty() => {
            return Err(util::bad(
                "msg",
                "`msg` is empty",
                format!(
                    "write why the host must not go on, or leave `msg` out (\"{DEFAULT_MSG}\")"
                ),
            ));
        }
        Some(m) => m,
        None => DEFAULT_MSG.to_string(),
    };
    Ok(Box::new(Fail { msg }))
}

impl HostStep for Fail {
    fn gather(&self) -> Option<String> {
        None
    }

    fn check(&self, _: &Facts) -> Result<Check, StepError> {
        Err(StepError::new(self.msg.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::testing::{build as build_with, build_err};

    #[test]
    fn fails_with_its_message_and_reads_nothing() {
        let step = build_with(build, "msg = \"not on {{ host.name }}\"").unwrap();
        assert!(step.gather().is_none());
        // `with` is rendered before the constructor sees it; here it is taken as written.
        assert_eq!(
            step.check(&Facts::default()),
            Err(StepError::new("not on {{ host.name }}"))
        );
        let step = build_with(build, "").unwrap();
        assert_eq!(
            step.check(&Facts::default()),
            Err(StepError::new(DEFAULT_MSG))
        );
    }

    #[test]
    fn bad_parameters() {
        let e = build_err(build_with(build, "msg = \" \""));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (Some("msg"), "`msg` is empty")
        );
        let e = build_err(build_with(build, "mgs = \"x\""));
        assert_eq!(
            (e.key.as_deref(), e.message.as_str(), e.help.as_deref()),
            (
                Some("mgs"),
                "unknown parameter `mgs`",
                Some("did you mean `msg`? (known: msg)")
            )
        );
        let e = build_err(build_with(build, "msg = 3"));
        assert_eq!(e.key.as_deref(), Some("msg"));
    }
}
