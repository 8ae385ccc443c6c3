//! The built-in swarm playbook and every file it references (both stacks' compose and `.env`
//! templates; HAProxy's configuration is embedded in its step), compiled into the binary and
//! written next to the cluster file (`.provision/builtin/`) by `run` when the inventory names
//! no playbook, so that users can read exactly what runs. `check-config` writes nothing in
//! the cluster's directory: it reads them from a private temporary directory.

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
    (
        "templates/appwrite/docker-compose.yml",
        include_str!("../../../templates/appwrite/docker-compose.yml"),
    ),
    (
        "templates/appwrite/.env",
        include_str!("../../../templates/appwrite/.env"),
    ),
    (
        "templates/appwrite/README.md",
        include_str!("../../../templates/appwrite/README.md"),
    ),
];

/// Writes the built-in files under `cluster_dir/.provision/builtin` (only those
/// whose content differs) and returns the playbook's path.
pub fn materialize(cluster_dir: &Path) -> std::io::Result<PathBuf> {
    let root = crate::state_dir::ensure(cluster_dir, "builtin")?;
    write_into(&root)
}

/// Writes the built-in files under `root` (only those whose content differs) and returns the
/// playbook's path.
pub fn write_into(root: &Path) -> std::io::Result<PathBuf> {
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

/// Names files of a scratch copy (`root`) as the built-in files they are (`<built-in>/...`),
/// so that a diagnostic does not point into a directory removed when the command ends.
pub fn name_builtin_files(
    mut e: provision_engine::diagnostic::ConfigError,
    root: &Path,
) -> provision_engine::diagnostic::ConfigError {
    for d in &mut e.diagnostics {
        if let Ok(rel) = d.file.strip_prefix(root) {
            d.file = Path::new("<built-in>").join(rel);
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use provision_engine::inventory::{Inventory, InventoryRules};
    use provision_engine::playbook_file::PlaybookFile;

    /// Every file the built-in playbook references is embedded: from an empty directory it
    /// compiles for both stacks (the compose and `.env` files are read and rendered then).
    #[test]
    fn the_builtin_playbook_resolves_every_file_from_an_empty_directory() {
        let empty = tempfile::tempdir().unwrap();
        let pb_path = write_into(empty.path()).unwrap();
        let pb = PlaybookFile::load(&pb_path, &provision_playbook::known_steps()).unwrap();
        let rules = InventoryRules {
            require_manager: true,
            require_private_ip: true,
        };
        let inventory = include_str!("../../../inventories/minimal.toml");
        let appwrite: toml::Table = toml::from_str(
            "[appwrite]\nopenssl_key = \"k-0123456789abcdef\"\ndb_pass = \"db-pass-123456\"\ndb_root_pass = \"db-root-123456\"\nexecutor_secret = \"exec-secret-123456\"\n",
        )
        .unwrap();
        for (stack, secrets) in [("demo", toml::Table::new()), ("appwrite", appwrite)] {
            let text = format!("{inventory}\n[vars]\nstack = \"{stack}\"\n");
            let inv = Inventory::parse(&text, &empty.path().join("cluster.toml"), &rules).unwrap();
            let none = |_: &str| false;
            let view = provision_playbook::compile::SecretsView {
                table: &secrets,
                contains_secret: &none,
            };
            if let Err(e) = provision_playbook::compile(&inv, &pb, &view) {
                panic!("{stack}: {:#?}", e.diagnostics);
            }
        }
    }

    /// `drain_managers = true` while the Appwrite executor is pinned to the first manager (the
    /// default): one error naming both steps; pinned to a worker, the same cluster compiles.
    #[test]
    fn drained_managers_and_a_service_only_managers_can_run_are_caught_together() {
        let dir = tempfile::tempdir().unwrap();
        let pb_path = write_into(dir.path()).unwrap();
        let pb = PlaybookFile::load(&pb_path, &provision_playbook::known_steps()).unwrap();
        let rules = InventoryRules {
            require_manager: true,
            require_private_ip: true,
        };
        let production = include_str!("../../../inventories/production.toml");
        let secrets: toml::Table = toml::from_str(
            "[appwrite]\nopenssl_key = \"k-0123456789abcdef\"\ndb_pass = \"db-pass-123456\"\ndb_root_pass = \"db-root-123456\"\nexecutor_secret = \"exec-secret-123456\"\n",
        )
        .unwrap();
        let none = |_: &str| false;
        let view = provision_playbook::compile::SecretsView {
            table: &secrets,
            contains_secret: &none,
        };
        let compile = |vars: &str| {
            let text = production.replace("[vars]\n", &format!("[vars]\n{vars}\n"));
            let inv = Inventory::parse(&text, &dir.path().join("cluster.toml"), &rules).unwrap();
            provision_playbook::compile(&inv, &pb, &view).map(|_| ())
        };
        let err = compile("drain_managers = true").unwrap_err();
        let msgs: Vec<String> = err.diagnostics.iter().map(|d| d.to_string()).collect();
        let text = std::fs::read_to_string(&pb_path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let line = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap() + 1;
        // Each step's `with` is three lines below its name; claims point at their parameter.
        let (stack_line, drain_line) = (
            line("name = \"stack deployed\""),
            line("name = \"manager availability\""),
        );
        let compose_column = lines[stack_line + 2].find("compose =").unwrap() + 1;
        assert!(lines[drain_line + 2].contains("drain_managers ="));
        assert_eq!(msgs.len(), 2, "{msgs:#?}");
        for (msg, service) in msgs
            .iter()
            .zip(["appwrite-worker-functions", "appwrite-executor"])
        {
            assert_eq!(
                msg.lines().next().unwrap(),
                format!(
                    "{}:{}:{}: error: step `stack deployed`: service `{service}` of stack `appwrite` can run only on a manager (`node.hostname==manager-1`), and step `manager availability` drains every manager (drain_managers = true, line {}): it would never start",
                    pb_path.display(),
                    stack_line + 3,
                    compose_column,
                    drain_line + 3,
                ),
                "{msg}"
            );
        }
        compile("drain_managers = true\nappwrite_functions_node = \"worker-1\"").unwrap();
        compile("drain_managers = false").unwrap();
    }

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
