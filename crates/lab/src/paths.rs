//! Where a lab's state and the base-image cache live (XDG directories, overridable by flag or env).

use crate::error::{LabError, Result};
use std::path::{Path, PathBuf};

/// Env var naming one lab's state directory (same as `--dir`).
pub const ENV_LAB_DIR: &str = "PROVISION_LAB_DIR";
/// Env var naming the cache root (images live in `<root>/images/<hash>/`).
pub const ENV_CACHE_DIR: &str = "PROVISION_CACHE_DIR";

/// The state directory of lab `name`: explicit dir, else $PROVISION_LAB_DIR, else
/// `$XDG_STATE_HOME/provision/labs/<name>`, else `~/.local/state/provision/labs/<name>`.
pub fn lab_dir(explicit: Option<&Path>, name: &str) -> Result<PathBuf> {
    lab_dir_with(explicit, name, &|k| std::env::var_os(k).map(PathBuf::from))
}

/// The cache root: explicit, else $PROVISION_CACHE_DIR, else `$XDG_CACHE_HOME/provision`,
/// else `~/.cache/provision`.
pub fn cache_root(explicit: Option<&Path>) -> Result<PathBuf> {
    cache_root_with(explicit, &|k| std::env::var_os(k).map(PathBuf::from))
}

type Env<'a> = &'a dyn Fn(&str) -> Option<PathBuf>;

pub(crate) fn lab_dir_with(explicit: Option<&Path>, name: &str, env: Env) -> Result<PathBuf> {
    if let Some(p) = explicit
        .map(Path::to_path_buf)
        .or_else(|| non_empty(env(ENV_LAB_DIR)))
    {
        return absolute(&p);
    }
    // XDG says relative values are invalid and must be ignored.
    if let Some(state) = non_empty(env("XDG_STATE_HOME")).filter(|p| p.is_absolute()) {
        return Ok(state.join("provision/labs").join(name));
    }
    let home = non_empty(env("HOME")).ok_or(LabError::NoHome {
        what: "lab state",
        env: ENV_LAB_DIR,
    })?;
    absolute(&home.join(".local/state/provision/labs").join(name))
}

pub(crate) fn cache_root_with(explicit: Option<&Path>, env: Env) -> Result<PathBuf> {
    if let Some(p) = explicit
        .map(Path::to_path_buf)
        .or_else(|| non_empty(env(ENV_CACHE_DIR)))
    {
        return absolute(&p);
    }
    if let Some(cache) = non_empty(env("XDG_CACHE_HOME")).filter(|p| p.is_absolute()) {
        return Ok(cache.join("provision"));
    }
    let home = non_empty(env("HOME")).ok_or(LabError::NoHome {
        what: "the image cache",
        env: ENV_CACHE_DIR,
    })?;
    absolute(&home.join(".cache/provision"))
}

fn non_empty(p: Option<PathBuf>) -> Option<PathBuf> {
    p.filter(|p| !p.as_os_str().is_empty())
}

/// Absolute form (the inventory names the key by absolute path), checked for qemu's syntax.
pub(crate) fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p)
        .map_err(|e| LabError::io(format!("cannot resolve {}", p.display()), e))?;
    check_qemu_safe(&abs)?;
    Ok(abs)
}

/// qemu splits option values at commas, and the inventory and kernel command line are text.
pub(crate) fn check_qemu_safe(p: &Path) -> Result<()> {
    let Some(s) = p.to_str() else {
        return Err(LabError::BadPath {
            path: p.to_path_buf(),
            reason: "it is not UTF-8".into(),
        });
    };
    if s.contains(',') || s.contains('\n') || s.contains('"') {
        return Err(LabError::BadPath {
            path: p.to_path_buf(),
            reason:
                "qemu options cannot carry commas, quotes or newlines: choose another directory"
                    .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<PathBuf> {
        let map: HashMap<String, PathBuf> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn lab_dir_precedence() {
        let e = env(&[
            ("HOME", "/home/u"),
            ("XDG_STATE_HOME", "/xdg/state"),
            ("PROVISION_LAB_DIR", "/env/lab"),
        ]);
        assert_eq!(
            lab_dir_with(Some(Path::new("/flag")), "l", &e).unwrap(),
            PathBuf::from("/flag")
        );
        assert_eq!(
            lab_dir_with(None, "l", &e).unwrap(),
            PathBuf::from("/env/lab")
        );
        let e = env(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "/xdg/state")]);
        assert_eq!(
            lab_dir_with(None, "demo", &e).unwrap(),
            PathBuf::from("/xdg/state/provision/labs/demo")
        );
        let e = env(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "relative")]);
        assert_eq!(
            lab_dir_with(None, "demo", &e).unwrap(),
            PathBuf::from("/home/u/.local/state/provision/labs/demo")
        );
        let e = env(&[]);
        assert!(
            lab_dir_with(None, "demo", &e)
                .unwrap_err()
                .to_string()
                .contains("set HOME")
        );
    }

    #[test]
    fn cache_root_precedence() {
        let e = env(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg/cache")]);
        assert_eq!(
            cache_root_with(None, &e).unwrap(),
            PathBuf::from("/xdg/cache/provision")
        );
        let e = env(&[("HOME", "/home/u"), ("PROVISION_CACHE_DIR", "/c")]);
        assert_eq!(cache_root_with(None, &e).unwrap(), PathBuf::from("/c"));
        let e = env(&[("HOME", "/home/u"), ("PROVISION_CACHE_DIR", "")]);
        assert_eq!(
            cache_root_with(None, &e).unwrap(),
            PathBuf::from("/home/u/.cache/provision")
        );
    }

    #[test]
    fn relative_dirs_become_absolute_and_commas_are_refused() {
        let e = env(&[]);
        let p = lab_dir_with(Some(Path::new("rel/lab")), "l", &e).unwrap();
        assert!(p.is_absolute() && p.ends_with("rel/lab"));
        let err = lab_dir_with(Some(Path::new("/a,b")), "l", &e)
            .unwrap_err()
            .to_string();
        assert!(err.contains("commas"), "{err}");
    }
}
