//! The built-in swarm playbook and its templates, compiled into the binary and
//! written next to the cluster file (`.provision/builtin/`) when the inventory
//! names no playbook, so that users can read exactly what runs.

use std::path::{Path, PathBuf};

/// (path relative to the builtin directory, content)
pub const FILES: &[(&str, &str)] = &[
    (
        "playbooks/swarm.toml",
        include_str!("../../../playbooks/swarm.toml"),
    ),
    (
        "templates/demo/docker-compose.yml",
        include_str!("../../../templates/demo/docker-compose.yml"),
    ),
    (
        "templates/demo/.env",
        include_str!("../../../templates/demo/.env"),
    ),
];

/// Writes the built-in files under `cluster_dir/.provision/builtin` (only those
/// whose content differs) and returns the playbook's path.
pub fn materialize(cluster_dir: &Path) -> std::io::Result<PathBuf> {
    let root = crate::state_dir::ensure(cluster_dir, "builtin")?;
    for (rel, content) in FILES {
        let path = root.join(rel);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(*content) {
            continue;
        }
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, content)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(root.join("playbooks/swarm.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_points_at_the_playbook() {
        let dir = tempfile::tempdir().unwrap();
        let pb = materialize(dir.path()).unwrap();
        assert_eq!(
            pb,
            dir.path().join(".provision/builtin/playbooks/swarm.toml")
        );
        assert_eq!(std::fs::read_to_string(&pb).unwrap(), FILES[0].1);
        let before = std::fs::metadata(&pb).unwrap().modified().unwrap();
        materialize(dir.path()).unwrap();
        assert_eq!(
            std::fs::metadata(&pb).unwrap().modified().unwrap(),
            before,
            "unchanged files are not rewritten"
        );
    }
}
