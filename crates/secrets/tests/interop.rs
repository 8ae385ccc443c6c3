//! Interoperability with the reference `age` CLI (Debian package `age`), both ways: our files
//! decrypt with `age -d`, and files made by `age -e` decrypt with us.

mod common;

use std::fs;
use std::process::Command;

use common::*;
use provision_secrets::{RecipientsFile, SecretsFile};

const TEXT: &str =
    "api_key = \"ak-0123456789\"\n[smtp]\nuser = \"mailer\"\npassword = \"p@ss w0rd\\n\"\n";

#[test]
fn our_files_decrypt_with_the_age_cli_for_every_key_kind() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        age_key(dir.path(), "a.txt"),
        ssh_key(dir.path(), "ed", "ed25519", ""),
        ssh_key(dir.path(), "rsa", "rsa", ""),
    ];
    let refs: Vec<&Key> = keys.iter().collect();
    let path = make_secrets(dir.path(), "secrets.age", TEXT, &refs);
    for key in &keys {
        let out = age_decrypt(key, &path);
        assert!(
            out.status.success(),
            "age -d -i {} failed: {}",
            key.private.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // The text, then the record of its recipients (a TOML comment) as the last line.
        let plain = String::from_utf8(out.stdout).unwrap();
        let record = plain
            .strip_prefix(TEXT)
            .unwrap_or_else(|| panic!("{plain}"));
        assert!(
            record.starts_with("# provision: encrypted to SHA256:"),
            "{record}"
        );
        assert_eq!(record.lines().count(), 1);
    }
}

#[test]
fn our_recipients_file_is_usable_by_age_and_its_files_decrypt_with_us() {
    let dir = tempfile::tempdir().unwrap();
    let alice = age_key(dir.path(), "alice.txt");
    let bob = ssh_key(dir.path(), "bob", "ed25519", "");
    let carol = ssh_key(dir.path(), "carol", "rsa", "");
    // Our recipients file, with its comments and labels, fed to `age -R`.
    let path = make_secrets(dir.path(), "secrets.age", "", &[&alice, &bob, &carol]);
    let recipients = RecipientsFile::path_for(&path);
    assert!(fs::read_to_string(&recipients).unwrap().contains("# key 0"));
    let plain = dir.path().join("plain.toml");
    fs::write(&plain, TEXT).unwrap();
    for armor in [true, false] {
        let mut cmd = Command::new("age");
        cmd.arg("-e")
            .arg("-R")
            .arg(&recipients)
            .arg("-o")
            .arg(&path);
        if armor {
            cmd.arg("-a");
        }
        let out = cmd.arg(&plain).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for key in [&alice, &bob, &carol] {
            let d = SecretsFile::new(&path).decrypt(&ids(key)).unwrap();
            assert_eq!(
                d.text(),
                TEXT,
                "armor={armor} key={}",
                key.private.display()
            );
        }
    }
}

/// Runs `age` under `script` (util-linux) so it gets the terminal it insists on for
/// passphrases; the passphrase lines are typed after a pause, once age has set up the terminal
/// (it discards input typed earlier).
fn age_with_terminal(args: &str, typed: &[&str]) -> std::process::Output {
    let mut feed = String::new();
    for line in typed {
        feed.push_str(&format!("sleep 1; printf '%s\\n' '{line}'; "));
    }
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "({feed}) | timeout 60 script -qec \"age {args}\" /dev/null"
        ))
        .output()
        .unwrap()
}

#[test]
fn passphrase_files_interoperate_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // Ours -> age.
    let path = make_passphrase_secrets(dir.path(), "ours.age", TEXT, "ours-passphrase");
    let out = age_with_terminal(
        &format!("-d -o {d}/ours.toml {d}/ours.age"),
        &["ours-passphrase"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        fs::read_to_string(dir.path().join("ours.toml")).unwrap(),
        TEXT
    );
    assert!(path.exists());

    // age -> ours.
    fs::write(dir.path().join("in.toml"), TEXT).unwrap();
    let out = age_with_terminal(
        &format!("-p -a -o {d}/theirs.age {d}/in.toml"),
        &["theirs-passphrase", "theirs-passphrase"],
    );
    assert!(out.status.success(), "{out:?}");
    let sources = provision_secrets::IdentitySources {
        passphrase: Some(provision_secrets::SecretString::from("theirs-passphrase")),
        ..provision_secrets::IdentitySources::none()
    };
    let decrypted = SecretsFile::new(dir.path().join("theirs.age"))
        .decrypt(&sources)
        .unwrap();
    assert_eq!(decrypted.text(), TEXT);
}
