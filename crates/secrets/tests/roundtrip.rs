//! Encrypt/decrypt round trips with several recipients of each kind, identity lookup order,
//! and the errors for wrong identities and damaged files.

mod common;

use std::fs;

use common::*;
use provision_secrets::{
    EncryptionMode, IdentitySources, LookStatus, SecretString, SecretsError, SecretsFile,
};

const TEXT: &str = "# team secrets\ntoken = \"tok-abcdef\"\n[db]\npassword = \"correct horse battery\"\nport = 54321000\n";

#[test]
fn several_recipients_of_each_kind_all_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        age_key(dir.path(), "a1.txt"),
        age_key(dir.path(), "a2.txt"),
        ssh_key(dir.path(), "e1", "ed25519", ""),
        ssh_key(dir.path(), "e2", "ed25519", ""),
        ssh_key(dir.path(), "r1", "rsa", ""),
        ssh_key(dir.path(), "r2", "rsa", ""),
    ];
    let refs: Vec<&Key> = keys.iter().collect();
    let path = make_secrets(dir.path(), "secrets.age", TEXT, &refs);
    let on_disk = fs::read_to_string(&path).unwrap();
    assert!(on_disk.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(!on_disk.contains("correct horse"));
    for key in &keys {
        let decrypted = SecretsFile::new(&path).decrypt(&ids(key)).unwrap();
        assert_eq!(
            decrypted.text(),
            TEXT,
            "decrypting with {}",
            key.private.display()
        );
        assert!(matches!(decrypted.mode(), EncryptionMode::Recipients));
    }
    // A key that is not listed cannot.
    let other = age_key(dir.path(), "other.txt");
    let err = SecretsFile::new(&path).decrypt(&ids(&other)).unwrap_err();
    assert!(matches!(err, SecretsError::NoIdentity(_)), "{err}");
}

#[test]
fn load_gives_a_table_and_a_redactor() {
    let dir = tempfile::tempdir().unwrap();
    let key = age_key(dir.path(), "k.txt");
    let path = make_secrets(dir.path(), "s.age", TEXT, &[&key]);
    let secrets = SecretsFile::load(&path, &ids(&key)).unwrap();
    assert_eq!(
        secrets.get("db.password").and_then(|v| v.as_str()),
        Some("correct horse battery")
    );
    let json = serde_json::to_value(&secrets).unwrap();
    assert_eq!(json["token"], "tok-abcdef");
    assert_eq!(json["db"]["port"], 54321000);
    let r = secrets.redactor();
    assert_eq!(
        r.redact("login tok-abcdef pw=correct horse battery port 54321000"),
        "login *** pw=*** port ***"
    );
    assert!(!format!("{secrets:?}").contains("tok-abcdef"));
}

#[test]
fn passphrase_mode_round_trips_and_rejects_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_passphrase_secrets(dir.path(), "solo.age", TEXT, "a long passphrase");
    let with = |p: &str| IdentitySources {
        passphrase: Some(SecretString::from(p)),
        ..IdentitySources::none()
    };
    let d = SecretsFile::new(&path)
        .decrypt(&with("a long passphrase"))
        .unwrap();
    assert_eq!(d.text(), TEXT);
    assert!(matches!(d.mode(), EncryptionMode::Passphrase(_)));
    let err = SecretsFile::new(&path).decrypt(&with("wrong")).unwrap_err();
    assert!(matches!(err, SecretsError::WrongPassphrase { .. }), "{err}");
    let err = SecretsFile::new(&path)
        .decrypt(&IdentitySources::none())
        .unwrap_err();
    assert!(matches!(err, SecretsError::NoPassphrase { .. }), "{err}");
    assert!(
        err.to_string().contains("PROVISION_SECRETS_PASSPHRASE"),
        "{err}"
    );
}

#[test]
fn wrong_identity_error_lists_recipients_and_places_looked() {
    let dir = tempfile::tempdir().unwrap();
    let alice = age_key(dir.path(), "alice.txt");
    let bob = ssh_key(dir.path(), "bob", "ed25519", "");
    let path = make_secrets(dir.path(), "secrets.age", TEXT, &[&alice, &bob]);

    // A home with an unrelated ed25519 key, no keys.txt, no id_rsa.
    let home = tempfile::tempdir().unwrap();
    fs::create_dir(home.path().join(".ssh")).unwrap();
    ssh_key(&home.path().join(".ssh"), "id_ed25519", "ed25519", "");
    let sources = ids_home(home.path());
    let err = SecretsFile::new(&path).decrypt(&sources).unwrap_err();
    let SecretsError::NoIdentity(info) = &err else {
        panic!("unexpected {err}");
    };
    assert_eq!(info.stanza_types, vec!["X25519", "ssh-ed25519"]);
    let (listed_path, listed) = info.listed.as_ref().unwrap();
    assert!(listed_path.ends_with("secrets.recipients"));
    assert_eq!(listed.len(), 2);
    assert!(listed[1].contains("bob@test"), "{listed:?}");
    let statuses: Vec<(&str, &LookStatus)> = info
        .looked
        .iter()
        .map(|l| (l.place.as_str(), &l.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("--identity", &LookStatus::NotGiven),
            ("$PROVISION_IDENTITY", &LookStatus::Unset),
            ("~/.config/provision/keys.txt", &LookStatus::Missing),
            ("~/.ssh/id_ed25519", &LookStatus::NotARecipient),
            ("~/.ssh/id_rsa", &LookStatus::Missing),
        ]
    );
    let msg = err.to_string();
    assert!(msg.starts_with("no identity can decrypt"), "{msg}");
    assert!(
        msg.contains("2 recipients (1 X25519, 1 ssh-ed25519)"),
        "{msg}"
    );
    assert!(msg.contains("~/.ssh/id_ed25519 (not a recipient)"), "{msg}");
    assert!(msg.contains("provision secrets recipients add"), "{msg}");
}

#[test]
fn identities_are_found_in_every_place_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let env_key = age_key(dir.path(), "env.txt");
    let home = tempfile::tempdir().unwrap();
    fs::create_dir_all(home.path().join(".config/provision")).unwrap();
    fs::create_dir_all(home.path().join(".ssh")).unwrap();
    let keys_txt = age_key(&home.path().join(".config/provision"), "keys.txt");
    let id_ed = ssh_key(&home.path().join(".ssh"), "id_ed25519", "ed25519", "");
    let id_rsa = ssh_key(&home.path().join(".ssh"), "id_rsa", "rsa", "");
    for (name, key) in [
        ("env", &env_key),
        ("keys", &keys_txt),
        ("ed", &id_ed),
        ("rsa", &id_rsa),
    ] {
        let path = make_secrets(dir.path(), &format!("{name}.age"), TEXT, &[key]);
        let sources = IdentitySources {
            identity_env: Some(env_key.private.clone()),
            home: Some(home.path().to_path_buf()),
            ..IdentitySources::none()
        };
        let d = SecretsFile::new(&path).decrypt(&sources).unwrap();
        assert_eq!(d.text(), TEXT, "{name}");
    }
    // A --identity that does not exist is an error, not a silent fallback.
    let sources = IdentitySources {
        identity_flag: Some(dir.path().join("typo.txt")),
        home: Some(home.path().to_path_buf()),
        ..IdentitySources::none()
    };
    let path = dir.path().join("keys.age");
    let err = SecretsFile::new(&path).decrypt(&sources).unwrap_err();
    assert!(matches!(err, SecretsError::IdentityFile { .. }), "{err}");
    assert!(err.to_string().contains("typo.txt"), "{err}");
}

#[test]
fn a_protected_ssh_key_that_is_not_a_recipient_is_not_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    fs::create_dir_all(home.path().join(".ssh")).unwrap();
    // Protected, and not a recipient: must be skipped without any prompt.
    ssh_key(
        &home.path().join(".ssh"),
        "id_ed25519",
        "ed25519",
        "sesame-pass",
    );
    let rsa = ssh_key(&home.path().join(".ssh"), "id_rsa", "rsa", "");
    let path = make_secrets(dir.path(), "s.age", TEXT, &[&rsa]);
    let mut sources = ids_home(home.path());
    sources.prompt = true; // would block or fail if it tried to ask
    let d = SecretsFile::new(&path).decrypt(&sources).unwrap();
    assert_eq!(d.text(), TEXT);
    // When nothing can decrypt, the protected key is reported as not a recipient: it was
    // recognised by its tag, not tried (which would have needed a prompt).
    let stranger = age_key(dir.path(), "stranger.txt");
    let path = make_secrets(dir.path(), "x.age", TEXT, &[&stranger]);
    let err = SecretsFile::new(&path).decrypt(&sources).unwrap_err();
    let SecretsError::NoIdentity(info) = &err else {
        panic!("unexpected {err}");
    };
    assert!(
        info.looked
            .iter()
            .any(|l| l.place == "~/.ssh/id_ed25519"
                && l.status == LookStatus::ProtectedNotARecipient),
        "{err}"
    );

    // Protected and a recipient, prompting off: a clear error naming the key.
    let protected = ssh_key(dir.path(), "prot", "ed25519", "sesame-pass");
    let path = make_secrets(dir.path(), "p.age", TEXT, &[&protected]);
    let err = SecretsFile::new(&path)
        .decrypt(&ids(&protected))
        .unwrap_err();
    assert!(matches!(err, SecretsError::SshKey { .. }), "{err}");
    assert!(err.to_string().contains("passphrase-protected"), "{err}");
}

#[test]
fn damaged_files_give_clear_errors_and_stay_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let key = age_key(dir.path(), "k.txt");
    let path = make_secrets(dir.path(), "s.age", TEXT, &[&key]);
    let good = fs::read(&path).unwrap();

    let truncated = &good[..good.len() / 2];
    fs::write(&path, truncated).unwrap();
    let err = SecretsFile::new(&path).decrypt(&ids(&key)).unwrap_err();
    assert!(matches!(err, SecretsError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), truncated);
    // Operations that write refuse too, leaving the bytes as they were.
    let err = provision_secrets::set(&path, &ids(&key), "x", &SecretString::from("v"), false)
        .unwrap_err();
    assert!(matches!(err, SecretsError::Corrupt { .. }), "{err}");
    assert_eq!(fs::read(&path).unwrap(), truncated);

    // One flipped character in the armored body.
    let mut flipped = good.clone();
    let i = good.len() / 2;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    fs::write(&path, &flipped).unwrap();
    let err = SecretsFile::new(&path).decrypt(&ids(&key)).unwrap_err();
    assert!(matches!(err, SecretsError::Corrupt { .. }), "{err}");

    // Plaintext where an encrypted file should be.
    fs::write(&path, TEXT).unwrap();
    let err = SecretsFile::new(&path).decrypt(&ids(&key)).unwrap_err();
    assert!(matches!(err, SecretsError::NotAgeFile { .. }), "{err}");
    assert!(!err.to_string().contains("correct horse"), "{err}");

    let err = SecretsFile::new(dir.path().join("missing.age"))
        .decrypt(&ids(&key))
        .unwrap_err();
    assert!(matches!(err, SecretsError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("provision secrets init"), "{err}");
}

#[test]
fn invalid_toml_inside_is_reported_without_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let key = age_key(dir.path(), "k.txt");
    let path = make_secrets(
        dir.path(),
        "s.age",
        "ok = 1\nbroken = hunter2secret\n",
        &[&key],
    );
    let err = SecretsFile::load(&path, &ids(&key)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, SecretsError::InvalidToml { line: 2, .. }),
        "{msg}"
    );
    assert!(!msg.contains("hunter2secret"), "{msg}");
    assert!(msg.contains("provision secrets edit"), "{msg}");
}

#[test]
fn values_too_short_to_redact_are_refused_by_name_and_line_never_by_value() {
    let dir = tempfile::tempdir().unwrap();
    let key = age_key(dir.path(), "k.txt");
    let path = make_secrets(
        dir.path(),
        "s.age",
        "token = \"long-enough-1\"\n[db]\npassword = \"abc\"\nport = 5432\nssl = true\n",
        &[&key],
    );
    let err = SecretsFile::load(&path, &ids(&key)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SecretsError::TooShort { .. }), "{msg}");
    assert!(
        msg.contains(
            "`db.password` (line 3, 3 characters) and `db.port` (line 4, 4 characters) are shorter than 8 characters"
        ),
        "{msg}"
    );
    assert!(msg.contains("provision secrets set"), "{msg}");
    assert!(!msg.contains("abc\"") && !msg.contains("5432"), "{msg}");
    // Eight characters is enough; booleans are never redacted, so never refused.
    let path = make_secrets(
        dir.path(),
        "ok.age",
        "password = \"abcdefgh\"\nssl = true\n",
        &[&key],
    );
    SecretsFile::load(&path, &ids(&key)).unwrap();
}
