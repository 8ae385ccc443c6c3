//! A secrets file on disk: read and decrypt it, encrypt and replace it atomically.

use std::fs;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::atomic::write_atomic;
use crate::crypto::{self, EncryptionMode, Target};
use crate::recipients::RecipientsFile;
use crate::{IdentitySources, Secrets, SecretsError};

/// A secrets file: TOML encrypted as a whole with age (armored).
#[derive(Debug, Clone)]
pub struct SecretsFile {
    path: PathBuf,
}

/// The last line of the plaintext of a file encrypted to recipients: the fingerprints of the
/// keys it was encrypted to, so a later write can tell whether the recipients file changed
/// since (a key slipped in) and ask for confirmation. Removed from the text on decryption.
const RECIPIENTS_MARK: &str = "# provision: encrypted to ";

/// The decrypted text of a secrets file and how it was encrypted (so it can be written back
/// the same way).
pub struct Decrypted {
    text: Zeroizing<String>,
    mode: EncryptionMode,
    /// Fingerprints of the recipients of the last write (None: a file written before they
    /// were recorded, or a passphrase file).
    recorded: Option<Vec<String>>,
}

/// How the recipients file differs from the recipients of the last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientsDrift {
    /// Keys in the recipients file the file was not encrypted to (short form and fingerprint).
    pub added: Vec<String>,
    /// Fingerprints of keys it was encrypted to that are no longer listed.
    pub removed: Vec<String>,
}

impl std::fmt::Display for RecipientsDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!("added {}", self.added.join(", ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", self.removed.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// `text` with the record of `keys` as its last line.
pub(crate) fn with_record(text: &[u8], keys: &[crate::RecipientKey]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(text.to_vec());
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    let fps: Vec<String> = keys.iter().map(|k| k.fingerprint()).collect();
    out.extend_from_slice(format!("{RECIPIENTS_MARK}{}\n", fps.join(" ")).as_bytes());
    out
}

/// The text without its record line, and the fingerprints it records.
fn split_record(text: &str) -> (&str, Option<Vec<String>>) {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let (head, last) = match body.rfind('\n') {
        Some(i) => (&text[..i + 1], &body[i + 1..]),
        None => ("", body),
    };
    match last.strip_prefix(RECIPIENTS_MARK) {
        Some(fps) => (
            head,
            Some(fps.split_whitespace().map(str::to_string).collect()),
        ),
        None => (text, None),
    }
}

impl std::fmt::Debug for Decrypted {
    /// Never the text: only its size and the mode.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted")
            .field("bytes", &self.text.len())
            .field("mode", &self.mode)
            .finish()
    }
}

impl Decrypted {
    /// The TOML text, exactly as it was encrypted (comments included).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn mode(&self) -> &EncryptionMode {
        &self.mode
    }

    /// How the recipients file of `file` differs from the recipients this text was last
    /// encrypted to; None when they are the same, or nothing was recorded (passphrase files,
    /// files written before recipients were recorded).
    pub fn drift(&self, file: &SecretsFile) -> Result<Option<RecipientsDrift>, SecretsError> {
        let (Some(recorded), EncryptionMode::Recipients) = (&self.recorded, &self.mode) else {
            return Ok(None);
        };
        let keys = RecipientsFile::load(&file.recipients_path())?.require_keys()?;
        let added: Vec<String> = keys
            .iter()
            .filter(|k| !recorded.contains(&k.fingerprint()))
            .map(|k| format!("{} ({})", k.short(), k.fingerprint()))
            .collect();
        let current: Vec<String> = keys.iter().map(|k| k.fingerprint()).collect();
        let removed: Vec<String> = recorded
            .iter()
            .filter(|fp| !current.contains(fp))
            .cloned()
            .collect();
        Ok(
            (!added.is_empty() || !removed.is_empty())
                .then_some(RecipientsDrift { added, removed }),
        )
    }

    /// Refuses ([`SecretsError::RecipientsChanged`], naming the keys) a write to `file` while
    /// its recipients differ from those of the last write, unless `confirm` (`--yes`). The one
    /// check every writer makes, before its own work when that work is costly (an edit).
    pub fn require_confirmed(&self, file: &SecretsFile, confirm: bool) -> Result<(), SecretsError> {
        match self.drift(file)? {
            Some(drift) if !confirm => Err(SecretsError::RecipientsChanged {
                path: file.path.clone(),
                drift: drift.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

impl SecretsFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SecretsFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recipients file next to it: `secrets.age` -> `secrets.recipients`.
    pub fn recipients_path(&self) -> PathBuf {
        RecipientsFile::path_for(&self.path)
    }

    /// Decrypts and parses a secrets file: what a run uses.
    pub fn load(path: impl AsRef<Path>, ids: &IdentitySources) -> Result<Secrets, SecretsError> {
        let file = SecretsFile::new(path.as_ref());
        let decrypted = file.decrypt(ids)?;
        let mut secrets = Secrets::parse(file.path(), decrypted.text())?;
        crate::check_value_lengths(file.path(), decrypted.text())?;
        // Reading goes on (a run must not stop for it), but the change is told.
        let drift = decrypted.drift(&file).ok().flatten();
        secrets.set_recipients_drift(drift.map(|d| d.to_string()));
        Ok(secrets)
    }

    /// The encrypted bytes as they are on disk.
    pub fn read_encrypted(&self) -> Result<Vec<u8>, SecretsError> {
        fs::read(&self.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SecretsError::NotFound {
                    path: self.path.clone(),
                }
            } else {
                SecretsError::io("read", &self.path, e)
            }
        })
    }

    /// Decrypts the file (the text must be UTF-8; it is not parsed here).
    pub fn decrypt(&self, ids: &IdentitySources) -> Result<Decrypted, SecretsError> {
        let bytes = self.read_encrypted()?;
        self.decrypt_bytes(&bytes, ids)
    }

    /// Decrypts bytes that were read from this file (or are meant for it).
    pub fn decrypt_bytes(
        &self,
        bytes: &[u8],
        ids: &IdentitySources,
    ) -> Result<Decrypted, SecretsError> {
        let plain = crypto::decrypt(&self.path, bytes, ids)?;
        let full = match String::from_utf8(plain.bytes.to_vec()) {
            Ok(t) => Zeroizing::new(t),
            Err(e) => {
                // The failed conversion hands the bytes back; wipe them too.
                drop(Zeroizing::new(e.into_bytes()));
                return Err(SecretsError::NotUtf8 {
                    path: self.path.clone(),
                });
            }
        };
        let (text, recorded) = split_record(&full);
        Ok(Decrypted {
            text: Zeroizing::new(text.to_string()),
            mode: plain.mode,
            recorded,
        })
    }

    /// Decrypts binary data encrypted for this file's recipients (a swarm backup):
    /// the plaintext stays in memory and is wiped when dropped.
    pub fn decrypt_binary(
        &self,
        bytes: &[u8],
        ids: &IdentitySources,
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        Ok(crypto::decrypt(&self.path, bytes, ids)?.bytes)
    }

    /// Encrypts `text` the way `mode` says: to the keys of the recipients file, or with the
    /// passphrase.
    pub fn encrypt(&self, text: &[u8], mode: &EncryptionMode) -> Result<Vec<u8>, SecretsError> {
        match mode {
            EncryptionMode::Recipients => {
                let keys = RecipientsFile::load(&self.recipients_path())?.require_keys()?;
                crypto::encrypt(&self.path, text, Target::Keys(&keys))
            }
            EncryptionMode::Passphrase(p) => {
                crypto::encrypt(&self.path, text, Target::Passphrase(p))
            }
        }
    }

    /// Checks that `mode` can encrypt (the recipients file exists and lists keys), before a
    /// user spends time on an edit.
    pub fn check_encryptable(&self, mode: &EncryptionMode) -> Result<(), SecretsError> {
        match mode {
            EncryptionMode::Recipients => {
                RecipientsFile::load(&self.recipients_path())?.require_keys()?;
                Ok(())
            }
            EncryptionMode::Passphrase(_) => Ok(()),
        }
    }

    /// Encrypts secrets `text` the way `mode` says, recording the recipients (see
    /// [`Decrypted::drift`]).
    pub fn encrypt_text(
        &self,
        text: &[u8],
        mode: &EncryptionMode,
    ) -> Result<Vec<u8>, SecretsError> {
        match mode {
            EncryptionMode::Recipients => {
                let keys = RecipientsFile::load(&self.recipients_path())?.require_keys()?;
                crypto::encrypt(&self.path, &with_record(text, &keys), Target::Keys(&keys))
            }
            EncryptionMode::Passphrase(_) => self.encrypt(text, mode),
        }
    }

    /// Encrypts `text` and replaces the file atomically.
    pub fn write(&self, text: &[u8], mode: &EncryptionMode) -> Result<(), SecretsError> {
        let encrypted = self.encrypt_text(text, mode)?;
        write_atomic(&self.path, &encrypted, 0o644)
    }

    /// Writes new text for a file decrypted as `decrypted`: refused when the recipients file
    /// changed since the last write (a key added or removed by hand, or slipped in) unless
    /// `confirm` (`--yes`), naming the keys.
    pub fn write_confirmed(
        &self,
        text: &[u8],
        decrypted: &Decrypted,
        confirm: bool,
    ) -> Result<(), SecretsError> {
        decrypted.require_confirmed(self, confirm)?;
        self.write(text, decrypted.mode())
    }
}
