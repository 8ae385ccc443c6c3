//! The lab's ready image layer as the playbook crate knows it: the playbook that makes it and
//! the digest of the code of the steps it runs, so a change to any of them makes a new layer.

use sha2::{Digest, Sha256};

/// The playbook run on the layer's builder VM.
pub const PLAYBOOK: &str = include_str!("../../../playbooks/lab-ready.toml");

/// The sources of every step the playbook uses and of the step modules they import (checked by
/// a test against the `use super::` lines, so a new helper cannot be forgotten).
pub const SOURCES: &[(&str, &str)] = &[
    ("steps/docker.rs", include_str!("steps/docker.rs")),
    ("steps/docker_repo.rs", include_str!("steps/docker_repo.rs")),
    (
        "steps/docker_engine.rs",
        include_str!("steps/docker_engine.rs"),
    ),
    (
        "steps/docker_daemon.rs",
        include_str!("steps/docker_daemon.rs"),
    ),
    (
        "steps/docker_users.rs",
        include_str!("steps/docker_users.rs"),
    ),
    ("steps/apt.rs", include_str!("steps/apt.rs")),
    ("steps/file.rs", include_str!("steps/file.rs")),
    ("steps/systemd.rs", include_str!("steps/systemd.rs")),
    (
        "steps/system_files.rs",
        include_str!("steps/system_files.rs"),
    ),
    ("steps/util.rs", include_str!("steps/util.rs")),
    ("steps/copy.rs", include_str!("steps/copy.rs")),
    ("steps/command.rs", include_str!("steps/command.rs")),
    ("ctx.rs", include_str!("ctx.rs")),
    (FILES[0].0, FILES[0].1),
];

/// Files the playbook copies (`src` relative to it), written beside it on the build: the
/// script that builds the Appwrite stack's lab images (also in [`SOURCES`], so in the key).
pub const FILES: &[(&str, &str)] = &[(
    "lab-images.sh",
    include_str!("../../../templates/appwrite/lab-images.sh"),
)];

/// SHA-256 over the named sources, in order (hex).
pub fn digest_of(sources: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    for (name, text) in sources {
        h.update(format!("{name} {}\n", text.len()).as_bytes());
        h.update(text.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of this build's step code.
pub fn code_digest() -> String {
    digest_of(SOURCES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imports(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("use super::"))
            .filter_map(|rest| rest.split([':', ';']).next())
            .map(|m| format!("steps/{m}.rs"))
            .collect()
    }

    #[test]
    fn sources_cover_the_steps_and_everything_they_import() {
        let listed: Vec<&str> = SOURCES.iter().map(|s| s.0).collect();
        for use_name in ["docker", "apt"] {
            assert!(
                PLAYBOOK.contains(&format!("use = \"{use_name}\"")),
                "{use_name}"
            );
        }
        for (name, text) in SOURCES {
            for m in imports(text) {
                assert!(listed.contains(&m.as_str()), "{name} imports {m}");
            }
        }
        // Every step the playbook names is covered.
        for line in PLAYBOOK.lines() {
            if let Some(u) = line.strip_prefix("use = \"") {
                let step = u.trim_end_matches('"');
                assert!(
                    listed.contains(&format!("steps/{step}.rs").as_str()),
                    "{step}"
                );
            }
        }
    }

    #[test]
    fn every_file_is_in_the_key_and_read_by_the_playbook() {
        for (name, text) in FILES {
            assert!(
                SOURCES.contains(&(*name, *text)),
                "{name} is not in SOURCES"
            );
            assert!(PLAYBOOK.contains(&format!("src = \"{name}\"")), "{name}");
        }
    }

    #[test]
    fn a_change_to_a_step_changes_the_digest() {
        let d = code_digest();
        assert_eq!(d.len(), 64);
        let mut changed: Vec<(&str, String)> =
            SOURCES.iter().map(|(n, t)| (*n, t.to_string())).collect();
        changed[0].1.push_str("\n// a change to the docker step\n");
        let refs: Vec<(&str, &str)> = changed.iter().map(|(n, t)| (*n, t.as_str())).collect();
        assert_ne!(digest_of(&refs), d);
        assert_eq!(digest_of(SOURCES), d);
    }

    #[test]
    fn the_playbook_compiles_for_a_lab_host() {
        use provision_engine::inventory::Inventory;
        use provision_engine::playbook_file::PlaybookFile;
        // As the build lays it out: the files beside the playbook.
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in FILES {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let ready = dir.path().join("ready.toml");
        let pb = PlaybookFile::parse(PLAYBOOK, &ready, &crate::known_steps())
            .unwrap_or_else(|e| panic!("{:#?}", e.diagnostics));
        let text = "name = \"b\"\nplaybook = \"ready.toml\"\n[vars]\ndocker_source = \"distro\"\n\
                    [[hosts]]\nname = \"builder\"\naddress = \"127.0.0.1\"\nprivate_ip = \"10.10.0.11\"\nroles = [\"manager\"]\n";
        let inv =
            Inventory::parse(text, &dir.path().join("cluster.toml"), &Default::default()).unwrap();
        let secrets = toml::Table::new();
        let none = |_: &str| false;
        let view = crate::compile::SecretsView {
            table: &secrets,
            contains_secret: &none,
        };
        let compiled =
            crate::compile(&inv, &pb, &view).unwrap_or_else(|e| panic!("{:#?}", e.diagnostics));
        assert_eq!(compiled.steps.len(), 4);
    }

    /// The images are built for the version swarm.toml deploys by default, so the Appwrite
    /// lab's first run finds them built.
    #[test]
    fn the_images_are_built_for_the_default_appwrite_version() {
        let swarm = include_str!("../../../playbooks/swarm.toml");
        let default = "vars.appwrite_version | default('1.3.8')";
        assert!(swarm.contains(default), "swarm.toml's default changed");
        assert!(PLAYBOOK.contains("provision-appwrite-lab-images 1.3.8\""));
    }
}
