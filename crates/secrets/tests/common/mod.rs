//! Test helpers: key pairs made with the reference tools (age-keygen, ssh-keygen), secrets files
//! encrypted to them, and scripted editors.

#![allow(dead_code)] // each test file uses a different subset

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use provision_secrets::{
    EncryptionMode, IdentitySources, RecipientKey, RecipientsFile, SecretString, SecretsFile,
};

/// A key pair: the private key file and the public key line.
#[derive(Debug, Clone)]
pub struct Key {
    pub private: PathBuf,
    pub public: String,
}

/// `age-keygen -o DIR/NAME`.
pub fn age_key(dir: &Path, name: &str) -> Key {
    let private = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&private)
        .output()
        .expect("age-keygen is installed (Debian package age)");
    assert!(out.status.success(), "age-keygen failed: {out:?}");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&private)
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(public.starts_with("age1"), "{public}");
    Key { private, public }
}

/// `ssh-keygen -t KIND -f DIR/NAME` with an optional passphrase.
pub fn ssh_key(dir: &Path, name: &str, kind: &str, passphrase: &str) -> Key {
    let private = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args([
        "-q",
        "-t",
        kind,
        "-N",
        passphrase,
        "-C",
        &format!("{name}@test"),
    ]);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    let out = cmd
        .arg("-f")
        .arg(&private)
        .output()
        .expect("ssh-keygen is installed");
    assert!(out.status.success(), "ssh-keygen failed: {out:?}");
    let public = fs::read_to_string(private.with_extension("pub"))
        .or_else(|_| fs::read_to_string(format!("{}.pub", private.display())))
        .unwrap()
        .trim()
        .to_string();
    Key { private, public }
}

/// Identity sources that use exactly this key (and nothing from the real home).
pub fn ids(key: &Key) -> IdentitySources {
    IdentitySources {
        identity_flag: Some(key.private.clone()),
        ..IdentitySources::none()
    }
}

/// Identity sources with only a home directory.
pub fn ids_home(home: &Path) -> IdentitySources {
    IdentitySources {
        home: Some(home.to_path_buf()),
        ..IdentitySources::none()
    }
}

/// Writes `DIR/NAME.recipients` for these keys and `DIR/NAME` encrypted to them.
pub fn make_secrets(dir: &Path, name: &str, text: &str, keys: &[&Key]) -> PathBuf {
    let path = dir.join(name);
    let mut list = RecipientsFile::new(RecipientsFile::path_for(&path), name);
    for (i, k) in keys.iter().enumerate() {
        list.add(
            k.public.parse::<RecipientKey>().unwrap(),
            Some(&format!("key {i}")),
        )
        .unwrap();
    }
    list.save().unwrap();
    SecretsFile::new(&path)
        .write(text.as_bytes(), &EncryptionMode::Recipients)
        .unwrap();
    path
}

/// A passphrase-encrypted file.
pub fn make_passphrase_secrets(dir: &Path, name: &str, text: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    SecretsFile::new(&path)
        .write(
            text.as_bytes(),
            &EncryptionMode::Passphrase(SecretString::from(passphrase)),
        )
        .unwrap();
    path
}

/// An executable shell script.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.push(p.clone());
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Decrypts with the reference CLI: `age -d -i KEY FILE`.
pub fn age_decrypt(key: &Key, file: &Path) -> std::process::Output {
    Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key.private)
        .arg(file)
        .output()
        .unwrap()
}
