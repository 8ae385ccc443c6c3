//! The `docker` step's `users`: accounts added to the docker group, which lets them use the
//! engine without sudo. An account that does not exist is an error: creating it is a `user`
//! step's job.

use provision_engine::fact::Fact;
use provision_engine::step::{Action, Change, Facts, StepError};
use provision_transport::shell::join;

/// The docker group's entry, and which of `users` exist: [`Members`].
pub struct UsersFact<'a> {
    pub users: &'a [String],
}

/// The docker group's members, and the accounts of `users` that exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    pub members: Vec<String>,
    pub exist: Vec<String>,
}

impl Fact for UsersFact<'_> {
    type Value = Members;

    fn command(&self) -> String {
        format!(
            "getent group docker | sed 's/^/group=/'; getent passwd {} | cut -d: -f1 | sed 's/^/user=/'",
            join(self.users)
        )
    }

    fn parse(&self, f: &Facts) -> Result<Members, StepError> {
        let mut m = Members::default();
        for line in f.stdout.lines() {
            if let Some(g) = line.strip_prefix("group=") {
                // docker:x:998:alice,bob
                m.members.extend(
                    g.splitn(4, ':')
                        .nth(3)
                        .unwrap_or("")
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string),
                );
            } else if let Some(u) = line.strip_prefix("user=") {
                m.exist.push(u.to_string());
            }
        }
        Ok(m)
    }
}

/// Adds to the group those of `users` not in it yet, refusing one that does not exist.
pub fn change(users: &[String], host: &str, now: &Members) -> Result<Option<Change>, StepError> {
    let (members, exist) = (&now.members, &now.exist);
    if let Some(u) = users.iter().find(|u| !exist.contains(u)) {
        return Err(StepError::new(format!("{host}: user {u} does not exist"))
            .hint("create it before this step (a `user` step), or remove it from `users`"));
    }
    let missing: Vec<&String> = users.iter().filter(|u| !members.contains(u)).collect();
    if missing.is_empty() {
        return Ok(None);
    }
    let cmd = missing
        .iter()
        .map(|u| join(["usermod", "-aG", "docker", u.as_str()]))
        .collect::<Vec<_>>()
        .join(" && ");
    let names: Vec<&str> = missing.iter().map(|u| u.as_str()).collect();
    Ok(Some(Change::new(
        format!("add {} to the docker group", names.join(", ")),
        vec![Action::run(cmd)],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::docker::testing::*;

    #[test]
    fn drifted() {
        // A user left the group.
        let s = step("users = [\"deploy\", \"ci\"]");
        let mut h = done();
        h.users = "group=docker:x:998:\nuser=deploy\nuser=ci\n";
        let Check::Change(c) = s.check(&facts(&h, true, true)).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].summary, "add deploy, ci to the docker group");
        assert_eq!(
            c[0].actions,
            vec![Action::run(
                "usermod -aG docker deploy && usermod -aG docker ci"
            )]
        );
    }

    #[test]
    fn param_errors() {
        let e = build_err(build_with_ctx(build, "users = [\"Deploy\"]"));
        assert_eq!(e.key.as_deref(), Some("users"));
        // A user that does not exist on the host is a check error naming it.
        let s = step("users = [\"ci\"]");
        let e = s.check(&facts(&done(), true, true)).unwrap_err();
        assert_eq!(e.message, "web-1: user ci does not exist");
    }
}
