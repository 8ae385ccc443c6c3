//! The lab's ready image layer as the playbook crate knows it: the playbook that makes it and
//! the digest of the code of the steps it runs, so a change to any of them makes a new layer.

use sha2::{Digest, Sha256};

/// The playbook run on the layer's builder VM.
pub const PLAYBOOK: &str = include_str!("../../../playbooks/lab-ready.toml");

/// The sources of every step the playbook uses and of the step modules they import (checked by
/// a test against the `use super::` lines, so a new helper cannot be forgotten).
pub const SOURCES: &[(&str, &str)] = &[
    ("steps/docker.rs", include_str!("steps/docker.rs")),
    ("steps/apt.rs", include_str!("steps/apt.rs")),
    ("steps/file.rs", include_str!("steps/file.rs")),
    ("steps/service.rs", include_str!("steps/service.rs")),
    ("steps/util.rs", include_str!("steps/util.rs")),
    ("registry.rs", include_str!("registry.rs")),
];

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
        use std::path::Path;
        let pb = PlaybookFile::parse(PLAYBOOK, Path::new("ready.toml"), &crate::known_steps())
            .unwrap_or_else(|e| panic!("{:#?}", e.diagnostics));
        let text = "name = \"b\"\nplaybook = \"ready.toml\"\n[vars]\ndocker_source = \"distro\"\n\
                    [[hosts]]\nname = \"builder\"\naddress = \"127.0.0.1\"\nprivate_ip = \"10.10.0.11\"\nroles = [\"manager\"]\n";
        let inv = Inventory::parse(text, Path::new("cluster.toml"), &Default::default()).unwrap();
        let secrets = toml::Table::new();
        let none = |_: &str| false;
        let view = crate::compile::SecretsView {
            table: &secrets,
            contains_secret: &none,
        };
        let compiled =
            crate::compile(&inv, &pb, &view).unwrap_or_else(|e| panic!("{:#?}", e.diagnostics));
        assert_eq!(compiled.steps.len(), 2);
    }
}
