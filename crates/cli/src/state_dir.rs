//! `.provision/` next to the cluster file (run logs, the built-in playbook): created ignored by git.

use std::io;
use std::path::{Path, PathBuf};

/// Its name, next to the cluster file.
pub const NAME: &str = ".provision";

/// What `.provision/.gitignore` holds: everything in the directory, itself included.
pub const GITIGNORE: &str =
    "# Written by provision: run logs and generated files are never committed.\n*\n";

/// `cluster_dir/.provision/` and a subdirectory of it, created if missing, with a `.gitignore`
/// holding `*` so `git add .` never commits run logs (an existing one is left as the user has it).
pub fn ensure(cluster_dir: &Path, sub: &str) -> io::Result<PathBuf> {
    let root = cluster_dir.join(NAME);
    let dir = root.join(sub);
    std::fs::create_dir_all(&dir)?;
    let ignore = root.join(".gitignore");
    if !ignore.exists() {
        let tmp = root.join(".gitignore.tmp");
        std::fs::write(&tmp, GITIGNORE)?;
        std::fs::rename(&tmp, &ignore)?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_ignored_by_git_and_a_users_gitignore_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = ensure(tmp.path(), "logs").unwrap();
        assert_eq!(logs, tmp.path().join(".provision/logs"));
        assert!(logs.is_dir());
        let ignore = tmp.path().join(".provision/.gitignore");
        assert_eq!(std::fs::read_to_string(&ignore).unwrap(), GITIGNORE);
        std::fs::write(&ignore, "*\n!keep.txt\n").unwrap();
        ensure(tmp.path(), "builtin").unwrap();
        assert_eq!(std::fs::read_to_string(&ignore).unwrap(), "*\n!keep.txt\n");
    }

    /// What git itself makes of it: a log written there is not a change to commit.
    #[test]
    fn git_sees_nothing_to_add() {
        let tmp = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(tmp.path())
                .output()
                .expect("git runs (apt-get install git)");
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        git(&["init", "-q"]);
        std::fs::write(tmp.path().join("cluster.toml"), "# inventory\n").unwrap();
        let logs = ensure(tmp.path(), "logs").unwrap();
        std::fs::write(logs.join("run-1.log"), "a run\n").unwrap();
        assert_eq!(
            git(&["status", "--porcelain", "--untracked-files=all"]),
            "?? cluster.toml\n"
        );
    }
}
