//! init, set, rm, recipients add/remove and rotate, through the library functions the CLI calls.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use common::*;
use provision_secrets::{
    IdentitySources, InitOptions, RecipientKey, RecipientsFile, SecretString, SecretsError,
    SecretsFile, SetOutcome, find_secrets_files, init, recipients_add, recipients_list,
    recipients_remove, remove, resolve_recipient_arg, rotate, set,
};

#[test]
fn init_creates_a_key_a_recipients_file_and_an_empty_encrypted_file() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let teammate = ssh_key(dir.path(), "mate", "ed25519", "");
    let path = dir.path().join("secrets.age");
    let sources = ids_home(home.path());
    let report = init(
        &path,
        &sources,
        &InitOptions {
            recipients: vec![teammate.public.parse().unwrap()],
            passphrase: false,
        },
    )
    .unwrap();
    let key_path = home.path().join(".config/provision/keys.txt");
    assert_eq!(report.created_key.as_deref(), Some(key_path.as_path()));
    assert!(report.created_recipients && report.created_file);
    assert_eq!(report.recipients, 2);
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(mode(key_path.parent().unwrap()), 0o700);

    // The generated key is a standard age identity file; the file decrypts with the age CLI,
    // for us and for the teammate, and is empty.
    let own = Key {
        private: key_path.clone(),
        public: report.own_key.as_ref().unwrap().1.key().to_string(),
    };
    for key in [&own, &teammate] {
        let out = age_decrypt(key, &path);
        assert!(out.status.success(), "{out:?}");
        // No values: only the record of its two recipients.
        let plain = String::from_utf8(out.stdout).unwrap();
        assert!(
            plain.starts_with("# provision: encrypted to SHA256:"),
            "{plain}"
        );
        assert_eq!(plain.split_whitespace().count(), 6, "{plain}");
    }
    let listed = recipients_list(&path).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].key(), own.public);

    // Again: the existing file is left alone and no second key is made.
    let before = fs::read(&path).unwrap();
    let again = init(&path, &sources, &InitOptions::default()).unwrap();
    assert!(again.created_key.is_none() && !again.created_file);
    assert_eq!(again.own_key.unwrap().1.key(), own.public);
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn init_uses_an_existing_ssh_key_instead_of_creating_one() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    fs::create_dir(home.path().join(".ssh")).unwrap();
    let ssh = ssh_key(&home.path().join(".ssh"), "id_ed25519", "ed25519", "");
    let path = dir.path().join("s.age");
    let report = init(&path, &ids_home(home.path()), &InitOptions::default()).unwrap();
    assert!(report.created_key.is_none());
    let expected: RecipientKey = ssh.public.parse().unwrap();
    assert!(report.own_key.unwrap().1.same_key(&expected));
    assert!(!home.path().join(".config").exists());
    assert!(age_decrypt(&ssh, &path).status.success());
}

#[test]
fn init_with_a_passphrase_needs_no_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("solo.age");
    let sources = IdentitySources {
        passphrase: Some(SecretString::from("solo passphrase")),
        ..IdentitySources::none()
    };
    let report = init(
        &path,
        &sources,
        &InitOptions {
            passphrase: true,
            ..InitOptions::default()
        },
    )
    .unwrap();
    assert!(report.created_file && report.created_key.is_none());
    assert!(!RecipientsFile::path_for(&path).exists());
    set(
        &path,
        &sources,
        "k",
        &SecretString::from("value-one"),
        false,
    )
    .unwrap();
    assert_eq!(
        SecretsFile::new(&path).decrypt(&sources).unwrap().text(),
        "k = \"value-one\"\n"
    );
    // Without the passphrase, a clear error (the CLI reads it from the env var or a prompt).
    let err = init(&path, &IdentitySources::none(), &InitOptions::default());
    assert!(err.is_err(), "no identity at all and no home: {err:?}");
    let err = set(
        &path,
        &IdentitySources::none(),
        "k",
        &SecretString::from("x"),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, SecretsError::NoPassphrase { .. }), "{err}");
}

#[test]
fn set_and_rm_keep_the_rest_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = age_key(dir.path(), "k.txt");
    let text = "# who to call\ntoken = \"tok-1\" # inline note\n\n[db]\n# main db\nuser = \"app-user-1\"\n";
    let path = make_secrets(dir.path(), "s.age", text, &[&key]);
    let ids = ids(&key);
    let v = |s: &str| SecretString::from(s);

    assert_eq!(
        set(&path, &ids, "db.password", &v("pw\"with\nnewline"), false).unwrap(),
        SetOutcome::Added
    );
    // Too short to be hidden in output: refused, the file untouched.
    let before = fs::read(&path).unwrap();
    let err = set(&path, &ids, "token", &v("tok-2"), false).unwrap_err();
    assert!(
        err.to_string()
            .contains("`token` (5 characters) is shorter than 8 characters"),
        "{err}"
    );
    assert!(!err.to_string().contains("tok-2"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(
        set(&path, &ids, "token", &v("tok-2-value"), false).unwrap(),
        SetOutcome::Replaced
    );
    assert_eq!(
        set(&path, &ids, "smtp.auth.pass", &v("smtp-pass"), false).unwrap(),
        SetOutcome::Added
    );
    let secrets = SecretsFile::load(&path, &ids).unwrap();
    assert_eq!(secrets.get("token").unwrap().as_str(), Some("tok-2-value"));
    assert_eq!(
        secrets.get("db.password").unwrap().as_str(),
        Some("pw\"with\nnewline")
    );
    assert_eq!(secrets.get("db.user").unwrap().as_str(), Some("app-user-1"));
    assert_eq!(
        secrets.get("smtp.auth.pass").unwrap().as_str(),
        Some("smtp-pass")
    );
    let now = SecretsFile::new(&path).decrypt(&ids).unwrap();
    assert!(
        now.text()
            .starts_with("# who to call\ntoken = \"tok-2-value\" # inline note\n"),
        "{}",
        now.text()
    );
    assert!(now.text().contains("# main db"), "{}", now.text());

    // A value cannot be used as a table, nor a table overwritten by a value.
    let err = set(&path, &ids, "token.inner", &v("x"), false).unwrap_err();
    assert!(matches!(err, SecretsError::NotATable { .. }), "{err}");
    let err = set(&path, &ids, "db", &v("x"), false).unwrap_err();
    assert!(matches!(err, SecretsError::BadKey { .. }), "{err}");
    assert!(err.to_string().contains("it is a table"), "{err}");
    let err = set(&path, &ids, "bad key!", &v("x"), false).unwrap_err();
    assert!(matches!(err, SecretsError::BadKey { .. }), "{err}");

    remove(&path, &ids, "db.password", false).unwrap();
    remove(&path, &ids, "smtp.auth.pass", false).unwrap();
    let err = remove(&path, &ids, "db.password", false).unwrap_err();
    assert!(matches!(err, SecretsError::KeyNotFound { .. }), "{err}");
    let secrets = SecretsFile::load(&path, &ids).unwrap();
    assert_eq!(secrets.names(), vec!["db.user", "token"]);
    // The emptied [smtp.auth] and [smtp] tables went with their last value.
    let text = SecretsFile::new(&path).decrypt(&ids).unwrap();
    assert!(!text.text().contains("smtp"), "{}", text.text());
}

#[test]
fn set_into_an_empty_file_keeps_its_comments_on_top() {
    let dir = tempfile::tempdir().unwrap();
    let key = age_key(dir.path(), "k.txt");
    let path = make_secrets(dir.path(), "s.age", "# header\n", &[&key]);
    set(
        &path,
        &ids(&key),
        "db.password",
        &SecretString::from("pw-123-long"),
        false,
    )
    .unwrap();
    let text = SecretsFile::new(&path).decrypt(&ids(&key)).unwrap();
    assert_eq!(text.text(), "# header\n[db]\npassword = \"pw-123-long\"\n");
}

#[test]
fn recipients_add_and_remove_re_encrypt() {
    let dir = tempfile::tempdir().unwrap();
    let alice = age_key(dir.path(), "alice.txt");
    let bob = ssh_key(dir.path(), "bob", "ed25519", "");
    let carol = ssh_key(dir.path(), "carol", "rsa", "");
    let path = make_secrets(dir.path(), "s.age", "a = \"secret-a\"\n", &[&alice]);

    // Bob cannot read it yet.
    assert!(!age_decrypt(&bob, &path).status.success());
    let bob_key = resolve_recipient_arg(&format!("{}.pub", bob.private.display())).unwrap();
    let change = recipients_add(&path, &ids(&alice), bob_key, Some("bob")).unwrap();
    assert_eq!(change.recipients, 2);
    assert!(change.still_readable);
    assert!(age_decrypt(&bob, &path).status.success());
    let err = recipients_add(&path, &ids(&alice), bob.public.parse().unwrap(), None).unwrap_err();
    assert!(matches!(err, SecretsError::RecipientExists { .. }), "{err}");
    recipients_add(&path, &ids(&bob), carol.public.parse().unwrap(), None).unwrap();
    assert!(age_decrypt(&carol, &path).status.success());

    // Remove by label: bob is out, alice and carol still in.
    let change = recipients_remove(&path, &ids(&alice), "bob").unwrap();
    assert!(change.key.same_key(&bob.public.parse().unwrap()));
    assert_eq!(change.recipients, 2);
    assert!(!age_decrypt(&bob, &path).status.success());
    assert!(age_decrypt(&alice, &path).status.success());
    assert!(age_decrypt(&carol, &path).status.success());
    let listed = fs::read_to_string(RecipientsFile::path_for(&path)).unwrap();
    assert!(!listed.contains("bob"), "{listed}");

    // Removing yourself is allowed (a teammate still can) but reported.
    let change = recipients_remove(&path, &ids(&alice), &alice.public).unwrap();
    assert!(!change.still_readable);
    assert!(age_decrypt(&carol, &path).status.success());
    let err = recipients_remove(&path, &ids(&carol), "carol@test").unwrap_err();
    assert!(matches!(err, SecretsError::LastRecipient { .. }), "{err}");
    let err = recipients_remove(&path, &ids(&carol), "nobody").unwrap_err();
    assert!(
        matches!(err, SecretsError::RecipientNotFound { .. }),
        "{err}"
    );
}

#[test]
fn a_private_key_is_refused_as_a_recipient_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let key = age_key(dir.path(), "k.txt");
    let secret_line = fs::read_to_string(&key.private)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    for arg in [secret_line.clone(), key.private.display().to_string()] {
        let err = resolve_recipient_arg(&arg).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("private key"), "{msg}");
        assert!(!msg.contains(&secret_line[16..]), "{msg}");
    }
}

#[test]
fn rotate_after_removing_a_recipient_makes_the_old_key_fail() {
    let dir = tempfile::tempdir().unwrap();
    let alice = age_key(dir.path(), "alice.txt");
    let mallory = ssh_key(dir.path(), "mallory", "rsa", "");
    let one = make_secrets(
        dir.path(),
        "one.age",
        "x = \"one-secret\"\n",
        &[&alice, &mallory],
    );
    let two = make_secrets(
        dir.path(),
        "two.age",
        "y = \"two-secret\"\n",
        &[&alice, &mallory],
    );
    for f in [&one, &two] {
        assert!(age_decrypt(&mallory, f).status.success());
    }
    // Mallory is taken out of both recipients files by hand, then one rotate re-encrypts all.
    for f in [&one, &two] {
        remove_rsa_keys_by_hand(f);
    }
    let found = find_secrets_files(dir.path()).unwrap();
    assert_eq!(found, vec![one.clone(), two.clone()]);
    // The recipients files changed since the files were written: not without confirmation.
    let done = rotate(&found, &ids(&alice), false).unwrap();
    assert!(done.rotated.is_empty());
    assert_eq!(done.skipped.len(), 2);
    for (_, why) in &done.skipped {
        assert!(
            why.contains("the recipients of")
                && why.contains("changed since it was last written (removed SHA256:"),
            "{why}"
        );
    }
    assert!(
        age_decrypt(&mallory, &one).status.success(),
        "nothing written"
    );
    let done = rotate(&found, &ids(&alice), true).unwrap();
    assert!(done.skipped.is_empty(), "{:?}", done.skipped);
    assert_eq!(done.rotated.len(), 2);
    assert!(done.rotated.iter().all(|d| d.recipients == Some(1)));
    for f in [&one, &two] {
        assert!(!age_decrypt(&mallory, f).status.success());
        let err = SecretsFile::new(f).decrypt(&ids(&mallory)).unwrap_err();
        assert!(matches!(err, SecretsError::NoIdentity(_)), "{err}");
        assert!(age_decrypt(&alice, f).status.success());
    }
}

#[test]
fn rotate_skips_and_names_what_it_cannot_decrypt_and_rotates_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let alice = age_key(dir.path(), "alice.txt");
    let bob = age_key(dir.path(), "bob.txt");
    let mine = make_secrets(dir.path(), "a.age", "x = \"aaaa-secret\"\n", &[&alice]);
    let theirs = make_secrets(dir.path(), "b.age", "y = \"bbbb-secret\"\n", &[&bob]);
    let (mine_before, theirs_before) = (fs::read(&mine).unwrap(), fs::read(&theirs).unwrap());
    let done = rotate(&[mine.clone(), theirs.clone()], &ids(&alice), false).unwrap();
    assert_eq!(done.rotated.len(), 1);
    assert_eq!(done.rotated[0].path, mine);
    assert_ne!(fs::read(&mine).unwrap(), mine_before, "a fresh file key");
    assert_eq!(done.skipped.len(), 1);
    assert_eq!(done.skipped[0].0, theirs);
    assert!(
        done.skipped[0].1.contains("no identity"),
        "{:?}",
        done.skipped
    );
    assert_eq!(
        fs::read(&theirs).unwrap(),
        theirs_before,
        "skipped: untouched"
    );
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        find_secrets_files(empty.path()),
        Err(SecretsError::NoFiles { .. })
    ));
}

#[test]
fn rotate_re_encrypts_backups_to_the_secrets_recipients_keeping_their_mode() {
    let dir = tempfile::tempdir().unwrap();
    let alice = age_key(dir.path(), "alice.txt");
    let mallory = ssh_key(dir.path(), "mallory", "rsa", "");
    let secrets = make_secrets(
        dir.path(),
        "secrets.age",
        "k = \"value-1234\"\n",
        &[&alice, &mallory],
    );
    // A backup: binary data encrypted to the same recipients, 0600, as `provision backup` writes.
    let plain: Vec<u8> = (0u8..=255).cycle().take(5000).collect();
    let backup = dir.path().join("swarm-2026.age");
    let enc = SecretsFile::new(&secrets)
        .encrypt(&plain, &provision_secrets::EncryptionMode::Recipients)
        .unwrap();
    fs::write(&backup, enc).unwrap();
    fs::set_permissions(&backup, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(age_decrypt(&mallory, &backup).status.success());
    // Mallory leaves.
    remove_rsa_keys_by_hand(&secrets);
    let found = find_secrets_files(dir.path()).unwrap();
    let done = rotate(&found, &ids(&alice), true).unwrap();
    assert!(done.skipped.is_empty(), "{:?}", done.skipped);
    let b = done.rotated.iter().find(|r| r.path == backup).unwrap();
    assert_eq!(
        (b.recipients, b.backup_of.as_ref()),
        (Some(1), Some(&secrets))
    );
    assert!(!age_decrypt(&mallory, &backup).status.success());
    let out = age_decrypt(&alice, &backup);
    assert_eq!(out.stdout, plain, "the same bytes");
    assert_eq!(
        fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // With two secrets files beside it, whose recipients it has cannot be told: skipped.
    let other = make_secrets(dir.path(), "other.age", "o = \"other-1234\"\n", &[&alice]);
    let done = rotate(
        &[secrets.clone(), other, backup.clone()],
        &ids(&alice),
        true,
    )
    .unwrap();
    assert_eq!(done.skipped.len(), 1);
    assert_eq!(done.skipped[0].0, backup);
    assert!(
        done.skipped[0].1.contains("cannot be told"),
        "{:?}",
        done.skipped
    );
}

#[test]
fn a_key_slipped_into_the_recipients_file_is_named_and_needs_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let alice = age_key(dir.path(), "alice.txt");
    let mallory = ssh_key(dir.path(), "mallory", "ed25519", "");
    let path = make_secrets(dir.path(), "s.age", "k = \"value-1234\"\n", &[&alice]);
    // The recipients are recorded inside the encrypted text, and never shown.
    let d = SecretsFile::new(&path).decrypt(&ids(&alice)).unwrap();
    assert_eq!(d.text(), "k = \"value-1234\"\n");
    assert_eq!(d.drift(&SecretsFile::new(&path)).unwrap(), None);
    let raw = age_decrypt(&alice, &path);
    let raw = String::from_utf8(raw.stdout).unwrap();
    assert!(
        raw.starts_with("k = \"value-1234\"\n# provision: encrypted to SHA256:"),
        "{raw}"
    );
    // Someone appends a key to the recipients file (a pull request, a shared drive).
    let rpath = RecipientsFile::path_for(&path);
    let mut list = fs::read_to_string(&rpath).unwrap();
    list.push_str(&format!("{}\n", mallory.public));
    fs::write(&rpath, list).unwrap();
    let before = fs::read(&path).unwrap();
    let err = set(
        &path,
        &ids(&alice),
        "k2",
        &SecretString::from("value-5678"),
        false,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, SecretsError::RecipientsChanged { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("changed since it was last written (added ssh-ed25519 …"),
        "{msg}"
    );
    assert!(msg.contains("mallory@test (SHA256:"), "{msg}");
    assert_eq!(fs::read(&path).unwrap(), before, "nothing written");
    assert!(remove(&path, &ids(&alice), "k", false).is_err());
    // Confirmed: written to both, and recorded, so the next write needs nothing.
    set(
        &path,
        &ids(&alice),
        "k2",
        &SecretString::from("value-5678"),
        true,
    )
    .unwrap();
    assert!(age_decrypt(&mallory, &path).status.success());
    set(
        &path,
        &ids(&alice),
        "k3",
        &SecretString::from("value-9999"),
        false,
    )
    .unwrap();
    // recipients add/remove are themselves the confirmation.
    recipients_remove(&path, &ids(&alice), "mallory@test").unwrap();
    set(
        &path,
        &ids(&alice),
        "k4",
        &SecretString::from("value-0000"),
        false,
    )
    .unwrap();
}

/// Deletes the ssh-rsa lines of a secrets file's recipients file, as a person editing it would.
fn remove_rsa_keys_by_hand(secrets: &std::path::Path) {
    let rpath = RecipientsFile::path_for(secrets);
    let kept: String = fs::read_to_string(&rpath)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("ssh-rsa"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&rpath, kept).unwrap();
}
