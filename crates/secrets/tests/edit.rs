//! `edit` driven by scripted editors: no change, valid change, invalid then fixed, invalid then
//! given up, editor crash; each checks the file on disk and that no plaintext remains under
//! the temp dir. (Ctrl-C and SIGTERM are tested through the real binary in the cli crate.)

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use provision_secrets::{
    EditOptions, EditOutcome, EncryptionMode, IdentitySources, SecretString, SecretsError,
    SecretsFile, edit,
};

const TEXT: &str = "# keep me\ntoken = \"tok-original-1\"\n";

struct Setup {
    dir: tempfile::TempDir,
    tmp_root: tempfile::TempDir,
    key: Key,
    path: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let tmp_root = tempfile::tempdir_in("/dev/shm").unwrap();
    let key = age_key(dir.path(), "k.txt");
    let path = make_secrets(dir.path(), "secrets.age", TEXT, &[&key]);
    Setup {
        dir,
        tmp_root,
        key,
        path,
    }
}

fn opts(editor: &Path, tmp_root: &Path) -> EditOptions {
    EditOptions {
        editor: editor.display().to_string(),
        tmp_root: Some(tmp_root.to_path_buf()),
        notice: |_| {},
        confirm_recipients: false,
    }
}

fn assert_no_plaintext_left(tmp_root: &Path) {
    let left = files_under(tmp_root);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn no_change_keeps_the_file_byte_identical() {
    let s = setup();
    let before = fs::read(&s.path).unwrap();
    // Saving without changes (touching the file) is still "no change".
    let editor = script(s.dir.path(), "ed.sh", "touch \"$1\"");
    let outcome = edit(&s.path, &ids(&s.key), &opts(&editor, s.tmp_root.path())).unwrap();
    assert_eq!(outcome, EditOutcome::Unchanged);
    assert_eq!(fs::read(&s.path).unwrap(), before);
    assert_no_plaintext_left(s.tmp_root.path());
}

#[test]
fn a_valid_change_is_encrypted_to_every_recipient_in_a_private_temp_file() {
    let s = setup();
    let other = ssh_key(s.dir.path(), "other", "ed25519", "");
    // Add a second recipient straight in the recipients file: edit names it and asks for
    // confirmation (before the editor runs), then encrypts to the current list.
    let rpath = SecretsFile::new(&s.path).recipients_path();
    let mut list = fs::read_to_string(&rpath).unwrap();
    list.push_str(&format!("{}\n", other.public));
    fs::write(&rpath, list).unwrap();

    let record = s.dir.path().join("record");
    let editor = script(
        s.dir.path(),
        "ed.sh",
        &format!(
            "stat -c '%a' \"$1\" > {r}; stat -c '%a' \"$(dirname \"$1\")\" >> {r}; basename \"$1\" >> {r}\n\
             printf 'token = \"tok-changed-2\"\\n[db]\\npassword = \"pw-new-secret\"\\n' > \"$1\"",
            r = record.display()
        ),
    );
    let e = edit(&s.path, &ids(&s.key), &opts(&editor, s.tmp_root.path())).unwrap_err();
    assert!(
        e.to_string().contains("(added ssh-ed25519 …")
            && e.to_string().contains("other@test (SHA256:"),
        "{e}"
    );
    assert!(!record.exists(), "the editor did not run");
    let confirmed = EditOptions {
        confirm_recipients: true,
        ..opts(&editor, s.tmp_root.path())
    };
    let outcome = edit(&s.path, &ids(&s.key), &confirmed).unwrap();
    assert_eq!(outcome, EditOutcome::Saved);
    assert_eq!(
        fs::read_to_string(&record).unwrap(),
        "600\n700\nsecrets.toml\n"
    );
    let expected = "token = \"tok-changed-2\"\n[db]\npassword = \"pw-new-secret\"\n";
    for key in [&s.key, &other] {
        let out = age_decrypt(key, &s.path);
        assert!(out.status.success(), "{out:?}");
        // `age -d` also shows the record of the recipients, a TOML comment, last.
        let plain = String::from_utf8(out.stdout).unwrap();
        let record = plain
            .strip_prefix(expected)
            .unwrap_or_else(|| panic!("{plain}"));
        assert!(
            record.starts_with("# provision: encrypted to SHA256:"),
            "{record}"
        );
        assert_eq!(record.split_whitespace().count(), 6, "two keys: {record}");
    }
    assert_no_plaintext_left(s.tmp_root.path());
    // Nothing else was left next to the secrets file (no FILE.tmp-XXXX).
    let mut names: Vec<String> = fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("secrets"))
        .collect();
    names.sort();
    assert_eq!(names, vec!["secrets.age", "secrets.recipients"]);
}

#[test]
fn invalid_toml_reopens_the_editor_with_the_error_until_fixed() {
    let s = setup();
    let count = s.dir.path().join("count");
    let seen = s.dir.path().join("seen");
    // 1st run: break the file. 2nd run: record what it shows, fix the broken line but leave the
    // error block in place (it must be stripped).
    let editor = script(
        s.dir.path(),
        "ed.sh",
        &format!(
            "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}\n\
             if [ $n = 1 ]; then printf 'token = \"tok-3-long\"\\nbroken = \\n' > \"$1\"; exit 0; fi\n\
             grep '^#! ' \"$1\" > {seen}\n\
             sed -i 's/^broken = $/fixed = \"yes-fixed\"/' \"$1\"",
            c = count.display(),
            seen = seen.display()
        ),
    );
    let outcome = edit(&s.path, &ids(&s.key), &opts(&editor, s.tmp_root.path())).unwrap();
    assert_eq!(outcome, EditOutcome::Saved);
    assert_eq!(fs::read_to_string(&count).unwrap().trim(), "2");
    let shown = fs::read_to_string(&seen).unwrap();
    assert!(shown.contains("not valid TOML"), "{shown}");
    // The position points at the broken line in the file as the editor shows it (3 block lines
    // above the 2 lines of content).
    assert!(shown.contains("line 5"), "{shown}");
    let d = SecretsFile::new(&s.path).decrypt(&ids(&s.key)).unwrap();
    assert_eq!(d.text(), "token = \"tok-3-long\"\nfixed = \"yes-fixed\"\n");
    assert_no_plaintext_left(s.tmp_root.path());
}

#[test]
fn a_value_too_short_to_redact_reopens_the_editor_until_lengthened() {
    let s = setup();
    let count = s.dir.path().join("count");
    let seen = s.dir.path().join("seen");
    let editor = script(
        s.dir.path(),
        "ed.sh",
        &format!(
            "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}\n\
             if [ $n = 1 ]; then printf 'token = \"long-enough-1\"\\npin = \"1234\"\\n' > \"$1\"; exit 0; fi\n\
             grep '^#! ' \"$1\" > {seen}\n\
             sed -i 's/^pin = .*/pin = \"12345678\"/' \"$1\"",
            c = count.display(),
            seen = seen.display()
        ),
    );
    let outcome = edit(&s.path, &ids(&s.key), &opts(&editor, s.tmp_root.path())).unwrap();
    assert_eq!(outcome, EditOutcome::Saved);
    assert_eq!(fs::read_to_string(&count).unwrap().trim(), "2");
    let shown = fs::read_to_string(&seen).unwrap();
    // The line as the editor shows it: 3 block lines above the 2 lines of content.
    assert!(
        shown.contains("need at least 8 characters")
            && shown.contains("`pin` (line 5, 4 characters)"),
        "{shown}"
    );
    assert!(!shown.contains("1234\""), "{shown}");
    let d = SecretsFile::new(&s.path).decrypt(&ids(&s.key)).unwrap();
    assert_eq!(d.text(), "token = \"long-enough-1\"\npin = \"12345678\"\n");
    assert_no_plaintext_left(s.tmp_root.path());
}

#[test]
fn closing_the_editor_unchanged_after_an_error_gives_up_without_saving() {
    let s = setup();
    let before = fs::read(&s.path).unwrap();
    let count = s.dir.path().join("count");
    let editor = script(
        s.dir.path(),
        "ed.sh",
        &format!(
            "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}\n\
             if [ $n = 1 ]; then printf 'token = \\n' > \"$1\"; fi",
            c = count.display()
        ),
    );
    let err = edit(&s.path, &ids(&s.key), &opts(&editor, s.tmp_root.path())).unwrap_err();
    assert!(matches!(err, SecretsError::EditAbandoned { .. }), "{err}");
    assert_eq!(fs::read_to_string(&count).unwrap().trim(), "2");
    assert_eq!(fs::read(&s.path).unwrap(), before);
    assert_no_plaintext_left(s.tmp_root.path());
}

#[test]
fn an_editor_that_fails_or_crashes_changes_nothing() {
    let s = setup();
    let before = fs::read(&s.path).unwrap();
    for (name, body, status) in [
        (
            "exit.sh",
            "printf 'token = \"half-done\"\\n' > \"$1\"; exit 3",
            "exit status 3",
        ),
        (
            "crash.sh",
            "printf 'token = \"half-done\"\\n' > \"$1\"; kill -KILL $$",
            "killed by signal 9",
        ),
    ] {
        let editor = script(s.dir.path(), name, body);
        let err = edit(&s.path, &ids(&s.key), &opts(&editor, s.tmp_root.path())).unwrap_err();
        match &err {
            SecretsError::EditorFailed { status: got, .. } => assert_eq!(got, status),
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("plaintext copy removed"), "{err}");
        assert_eq!(fs::read(&s.path).unwrap(), before);
        assert_no_plaintext_left(s.tmp_root.path());
    }
}

#[test]
fn an_editor_that_cannot_start_changes_nothing() {
    let s = setup();
    let before = fs::read(&s.path).unwrap();
    let err = edit(
        &s.path,
        &ids(&s.key),
        &opts(Path::new("/nonexistent/editor"), s.tmp_root.path()),
    )
    .unwrap_err();
    assert!(matches!(err, SecretsError::EditorFailed { .. }), "{err}");
    assert_eq!(fs::read(&s.path).unwrap(), before);
    assert_no_plaintext_left(s.tmp_root.path());
}

#[test]
fn no_editor_runs_when_the_result_could_not_be_encrypted() {
    let s = setup();
    fs::remove_file(SecretsFile::new(&s.path).recipients_path()).unwrap();
    let marker = s.dir.path().join("ran");
    let editor = script(
        s.dir.path(),
        "ed.sh",
        &format!("touch {}", marker.display()),
    );
    let err = edit(&s.path, &ids(&s.key), &opts(&editor, s.tmp_root.path())).unwrap_err();
    assert!(
        matches!(err, SecretsError::NoRecipientsFile { .. }),
        "{err}"
    );
    assert!(!marker.exists());
    assert_no_plaintext_left(s.tmp_root.path());
}

#[test]
fn a_passphrase_file_stays_a_passphrase_file() {
    let dir = tempfile::tempdir().unwrap();
    let tmp_root = tempfile::tempdir_in("/dev/shm").unwrap();
    let path = make_passphrase_secrets(dir.path(), "solo.age", TEXT, "my passphrase");
    let sources = IdentitySources {
        passphrase: Some(SecretString::from("my passphrase")),
        ..IdentitySources::none()
    };
    let editor = script(
        dir.path(),
        "ed.sh",
        "printf 'a = \"bcdefghij\"\\n' > \"$1\"",
    );
    let outcome = edit(&path, &sources, &opts(&editor, tmp_root.path())).unwrap();
    assert_eq!(outcome, EditOutcome::Saved);
    let d = SecretsFile::new(&path).decrypt(&sources).unwrap();
    assert_eq!(d.text(), "a = \"bcdefghij\"\n");
    assert!(matches!(d.mode(), EncryptionMode::Passphrase(_)));
    assert_no_plaintext_left(tmp_root.path());
}

#[test]
fn the_default_temp_location_is_private_and_cleaned() {
    // No override: tmpfs ($XDG_RUNTIME_DIR or /dev/shm), never the disk. The editor
    // reports where it was; afterwards that directory must be gone.
    let s = setup();
    let record = s.dir.path().join("where");
    let editor = script(
        s.dir.path(),
        "ed.sh",
        &format!("dirname \"$1\" > {}", record.display()),
    );
    let options = EditOptions {
        tmp_root: None,
        ..opts(&editor, s.tmp_root.path())
    };
    assert_eq!(
        edit(&s.path, &ids(&s.key), &options).unwrap(),
        EditOutcome::Unchanged
    );
    let used = PathBuf::from(fs::read_to_string(&record).unwrap().trim());
    assert!(
        used.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("provision-secrets-"),
        "{}",
        used.display()
    );
    assert!(!used.exists(), "{} still exists", used.display());
    let fs_type = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(used.parent().unwrap())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&fs_type.stdout).trim(), "tmpfs");
}

#[test]
fn the_plaintext_never_goes_to_a_disk_backed_directory() {
    let s = setup();
    let before = fs::read(&s.path).unwrap();
    let editor = script(
        s.dir.path(),
        "ed.sh",
        "echo 'token = \"tok-changed-22\"' > \"$1\"",
    );
    // /proc is not tmpfs: refused like a directory on a disk, before the editor runs.
    let e = edit(&s.path, &ids(&s.key), &opts(&editor, Path::new("/proc"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot create a private directory for the plaintext: no memory-backed directory for the plaintext copy (/proc is not memory-backed (tmpfs)): set PROVISION_SECRETS_TMPDIR or XDG_RUNTIME_DIR to a directory on tmpfs; the secrets file was not changed"
    );
    assert_eq!(fs::read(&s.path).unwrap(), before, "unchanged");
}
