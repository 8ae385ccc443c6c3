//! `provision rollback`: a versioned stack back on the compose file and `.env` deployed
//! before its last change (after an upgrade that went wrong in a way no run could see); a
//! second rollback returns. The database is not touched: the dump taken before the upgrade
//! is named, restoring it is a person's decision.

use crate::services::swarm;
use crate::{Cluster, OpsError};
use provision_playbook::steps::stack_release;

/// What was rolled back, and through which manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    pub via: String,
    pub from: String,
    pub to: String,
}

/// The deployed and the previous version from [`stack_release::rollback_facts`]; `None`
/// when nothing is kept to roll back to.
pub fn parse_versions(stdout: &str) -> Option<(String, String)> {
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| if v.is_empty() { "?" } else { v }.to_string())
    };
    Some((field("deployed=")?, field("previous=")?))
}

pub async fn rollback(
    cluster: &Cluster,
    stack: &str,
    dir: &str,
    wait: u64,
    yes: bool,
) -> Result<RolledBack, OpsError> {
    let v = swarm(cluster).await?;
    let facts = cluster
        .ok(
            &v.via,
            "reading the stack's versions",
            stack_release::rollback_facts(dir),
            "is the manager healthy?",
        )
        .await?;
    let Some((from, to)) = parse_versions(&facts) else {
        return Err(OpsError::refused(
            format!(
                "no earlier deployment of stack {stack} is kept in {dir}/previous on {}: nothing to roll back to",
                v.via
            ),
            "provision keeps the deployment before the last change of a stack with a `version` (the built-in Appwrite stack); pass --stack and --dir for another one",
        ));
    };
    if !yes {
        return Err(OpsError::refused(
            format!(
                "would roll back stack {stack} through {} from version {from} to version {to} (the compose file and .env deployed before); the database stays as it is: the dump taken before the upgrade is in the stack's backup directory (for Appwrite: <share>/backups/appwrite)",
                v.via
            ),
            "run again with --yes to roll back",
        ));
    }
    cluster
        .ok(
            &v.via,
            &format!("rolling stack {stack} back"),
            stack_release::rollback_script(dir, stack, wait),
            "see `provision status` and `provision ps` for the services that did not converge",
        )
        .await?;
    Ok(RolledBack {
        via: v.via,
        from,
        to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_or_nothing_is_kept() {
        assert_eq!(
            parse_versions("deployed=1.4.0\nprevious=1.3.8\n"),
            Some(("1.4.0".into(), "1.3.8".into()))
        );
        assert_eq!(
            parse_versions("deployed=\nprevious=1.3.8\n"),
            Some(("?".into(), "1.3.8".into()))
        );
        assert_eq!(parse_versions(""), None);
    }
}
