//! The recipients file next to a secrets file: who can read it, one public key per line.
//!
//! The format is the one `age -R` reads (blank lines and `#` comments ignored, x25519 keys alone
//! on their line, ssh keys in authorized_keys form with their comment), so the reference CLI can
//! encrypt to the same people: `age -a -R secrets.recipients`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::SecretsError;
use crate::atomic::write_atomic;

/// The kind of an age recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientKind {
    X25519,
    SshEd25519,
    SshRsa,
}

impl RecipientKind {
    /// The stanza type age writes in a file's header for this kind.
    pub fn stanza_type(self) -> &'static str {
        match self {
            RecipientKind::X25519 => "X25519",
            RecipientKind::SshEd25519 => "ssh-ed25519",
            RecipientKind::SshRsa => "ssh-rsa",
        }
    }
}

/// One public key that a secrets file is encrypted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientKey {
    kind: RecipientKind,
    /// Canonical form: `age1...`, or `ssh-ed25519 BASE64` without the comment.
    key: String,
    /// The ssh key's comment (`alice@laptop`), if any.
    comment: Option<String>,
}

impl RecipientKey {
    pub fn kind(&self) -> RecipientKind {
        self.kind
    }

    /// The public key without comment.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The ssh key comment, if any.
    pub fn comment(&self) -> Option<&str> {
        self.comment.as_deref()
    }

    /// The line written to a recipients file.
    pub fn line(&self) -> String {
        match &self.comment {
            Some(c) => format!("{} {c}", self.key),
            None => self.key.clone(),
        }
    }

    /// A short form for messages: `age1qyqs…3f9x`, `ssh-ed25519 …Xy9z alice@laptop`.
    pub fn short(&self) -> String {
        let tail = |s: &str| {
            let chars: Vec<char> = s.chars().collect();
            chars[chars.len().saturating_sub(6)..]
                .iter()
                .collect::<String>()
        };
        let base = match self.kind {
            RecipientKind::X25519 => format!("{}…{}", &self.key[..8], tail(&self.key)),
            _ => {
                let (ty, b64) = self.key.split_once(' ').unwrap_or(("ssh", &self.key));
                format!("{ty} …{}", tail(b64))
            }
        };
        match &self.comment {
            Some(c) => format!("{base} {c}"),
            None => base,
        }
    }

    /// `SHA256:` and the unpadded base64 of the SHA-256 of the key (without comment), as
    /// recorded in a secrets file and shown when recipients change.
    pub fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(Sha256::digest(self.key.as_bytes()))
        )
    }

    /// Whether two entries are the same key (comments ignored).
    pub fn same_key(&self, other: &RecipientKey) -> bool {
        self.key == other.key
    }

    /// The age recipient to encrypt to.
    pub(crate) fn to_age(&self) -> Box<dyn age::Recipient> {
        // Both parses succeeded when this value was built, from the same text.
        match self.kind {
            RecipientKind::X25519 => {
                Box::new(age::x25519::Recipient::from_str(&self.key).expect("validated x25519 key"))
            }
            _ => Box::new(age::ssh::Recipient::from_str(&self.key).expect("validated ssh key")),
        }
    }

    /// For ssh keys, the 4-byte tag age writes in the stanza (base64 of the SHA-256 prefix of
    /// the public key blob), which lets us tell whether a file was encrypted to this key.
    pub(crate) fn ssh_tag(&self) -> Option<String> {
        let (_, b64) = self.key.split_once(' ')?;
        let blob = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        Some(ssh_tag_of_blob(&blob))
    }
}

pub(crate) fn ssh_tag_of_blob(blob: &[u8]) -> String {
    let digest = Sha256::digest(blob);
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(&digest[..4])
}

impl fmt::Display for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

impl FromStr for RecipientKey {
    type Err = String;

    /// Parses `age1...` or an ssh public key line (`ssh-ed25519 AAAA... comment`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.starts_with("age1") {
            if s.split_whitespace().count() != 1 {
                return Err(
                    "an age key must be alone on its line (put a name in a `#` comment above it)"
                        .into(),
                );
            }
            let parsed = age::x25519::Recipient::from_str(s)
                .map_err(|e| format!("invalid age public key: {e}"))?;
            return Ok(RecipientKey {
                kind: RecipientKind::X25519,
                key: parsed.to_string(),
                comment: None,
            });
        }
        if s.starts_with("AGE-SECRET-KEY-") {
            // Never echo it back: this is a private key pasted by mistake.
            return Err("this is a private key, not a public one; give the `age1...` public key (`age-keygen -y KEYFILE` prints it)".into());
        }
        let mut parts = s.split_whitespace();
        let (ty, b64) = match (parts.next(), parts.next()) {
            (Some(ty), Some(b64)) => (ty, b64),
            _ => {
                return Err(
                    "expected an `age1...` key or an ssh public key (`ssh-ed25519 AAAA...`)".into(),
                );
            }
        };
        let kind = match ty {
            "ssh-ed25519" => RecipientKind::SshEd25519,
            "ssh-rsa" => RecipientKind::SshRsa,
            other if other.starts_with("-----BEGIN") => {
                return Err("this is a private key, not a public one; give the `.pub` file".into());
            }
            other => {
                return Err(format!(
                    "unsupported key type `{other}`: use an age key (age-keygen), ssh-ed25519 or ssh-rsa"
                ));
            }
        };
        let canonical = format!("{ty} {b64}");
        match age::ssh::Recipient::from_str(&canonical) {
            Ok(_) => {}
            Err(age::ssh::ParseRecipientKeyError::RsaModulusTooSmall) => {
                return Err("ssh-rsa key shorter than 2048 bits".into());
            }
            Err(age::ssh::ParseRecipientKeyError::RsaModulusTooLarge) => {
                return Err("ssh-rsa key longer than age supports".into());
            }
            Err(_) => return Err(format!("invalid {ty} public key")),
        }
        let comment: Vec<&str> = parts.collect();
        Ok(RecipientKey {
            kind,
            key: canonical,
            comment: (!comment.is_empty()).then(|| comment.join(" ")),
        })
    }
}

#[derive(Debug, Clone)]
enum Line {
    /// A blank or comment line, kept as written.
    Text(String),
    Key(RecipientKey),
}

/// A parsed recipients file, keeping comments and layout so edits are minimal.
#[derive(Debug, Clone)]
pub struct RecipientsFile {
    path: PathBuf,
    lines: Vec<Line>,
}

impl RecipientsFile {
    /// `secrets.age` -> `secrets.recipients`, in the same directory.
    pub fn path_for(secrets: &Path) -> PathBuf {
        secrets.with_extension("recipients")
    }

    /// A new file with a header comment and no keys yet.
    pub fn new(path: impl Into<PathBuf>, about: &str) -> Self {
        let lines = vec![
            Line::Text(format!("# Who can decrypt {about}: one public key per line.")),
            Line::Text(
                "# age keys (age1...) alone on their line; ssh-ed25519 / ssh-rsa keys as in authorized_keys."
                    .into(),
            ),
            Line::Text(
                "# After changing this file run `provision secrets rotate` to re-encrypt.".into(),
            ),
            Line::Text(String::new()),
        ];
        RecipientsFile {
            path: path.into(),
            lines,
        }
    }

    /// Reads and validates the file; a missing file is `NoRecipientsFile`.
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SecretsError::NoRecipientsFile {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(SecretsError::io("read", path, e)),
        };
        Self::parse(path, &text)
    }

    /// Like [`RecipientsFile::load`] but a missing file is `None`.
    pub fn load_optional(path: &Path) -> Result<Option<Self>, SecretsError> {
        match Self::load(path) {
            Ok(f) => Ok(Some(f)),
            Err(SecretsError::NoRecipientsFile { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Parses the text of a recipients file; `path` is used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SecretsError> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                lines.push(Line::Text(raw.to_string()));
                continue;
            }
            let key = RecipientKey::from_str(trimmed).map_err(|reason| {
                SecretsError::BadRecipientLine {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason,
                }
            })?;
            lines.push(Line::Key(key));
        }
        Ok(RecipientsFile {
            path: path.to_path_buf(),
            lines,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys, in file order.
    pub fn keys(&self) -> Vec<&RecipientKey> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                Line::Key(k) => Some(k),
                Line::Text(_) => None,
            })
            .collect()
    }

    /// The keys, or `NoRecipients` if there are none (nothing could be encrypted).
    pub fn require_keys(&self) -> Result<Vec<RecipientKey>, SecretsError> {
        let keys: Vec<RecipientKey> = self.keys().into_iter().cloned().collect();
        if keys.is_empty() {
            return Err(SecretsError::NoRecipients {
                path: self.path.clone(),
            });
        }
        Ok(keys)
    }

    /// The label of the key at `index`: a one-line `# name` comment right above it.
    fn label_of(&self, index: usize) -> Option<&str> {
        if !self.is_label_line(index) {
            return None;
        }
        match &self.lines[index - 1] {
            Line::Text(t) => Some(t.trim().trim_start_matches('#').trim()),
            Line::Key(_) => None,
        }
    }

    /// Whether the line above the key at `index` is a one-line label comment: a comment that is
    /// preceded by a blank line, a key or the start of the file (so not part of a longer block).
    fn is_label_line(&self, index: usize) -> bool {
        if index == 0 {
            return false;
        }
        let is_comment =
            matches!(&self.lines[index - 1], Line::Text(t) if t.trim().starts_with('#'));
        if !is_comment {
            return false;
        }
        index == 1
            || match &self.lines[index - 2] {
                Line::Key(_) => true,
                Line::Text(t) => t.trim().is_empty(),
            }
    }

    /// Adds a key, with an optional `# name` label line above it.
    pub fn add(&mut self, key: RecipientKey, name: Option<&str>) -> Result<(), SecretsError> {
        if self.keys().iter().any(|k| k.same_key(&key)) {
            return Err(SecretsError::RecipientExists {
                path: self.path.clone(),
                key: key.short(),
            });
        }
        if let Some(name) = name {
            let name = name.replace(['\n', '\r'], " ");
            self.lines.push(Line::Text(format!("# {name}")));
        }
        self.lines.push(Line::Key(key));
        Ok(())
    }

    /// Removes the key matching `query`: a public key, an ssh comment or a `# name` label.
    /// Returns the removed key.
    pub fn remove(&mut self, query: &str) -> Result<RecipientKey, SecretsError> {
        let query = query.trim();
        let wanted = RecipientKey::from_str(query).ok();
        let matches: Vec<usize> = self
            .lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match l {
                Line::Key(k) => {
                    let hit = match &wanted {
                        Some(w) => k.same_key(w),
                        None => k.comment() == Some(query) || self.label_of(i) == Some(query),
                    };
                    hit.then_some(i)
                }
                Line::Text(_) => None,
            })
            .collect();
        let index = match matches.as_slice() {
            [] => {
                return Err(SecretsError::RecipientNotFound {
                    path: self.path.clone(),
                    query: query.to_string(),
                });
            }
            [one] => *one,
            many => {
                return Err(SecretsError::RecipientAmbiguous {
                    path: self.path.clone(),
                    query: query.to_string(),
                    count: many.len(),
                });
            }
        };
        let removed = match &self.lines[index] {
            Line::Key(k) => k.clone(),
            Line::Text(_) => unreachable!("index points at a key"),
        };
        if self.keys().len() == 1 {
            return Err(SecretsError::LastRecipient {
                path: self.path.clone(),
                key: removed.short(),
            });
        }
        let has_label = self.is_label_line(index);
        self.lines.remove(index);
        if has_label {
            self.lines.remove(index - 1);
        }
        Ok(removed)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Text(t) => out.push_str(t),
                Line::Key(k) => out.push_str(&k.line()),
            }
            out.push('\n');
        }
        out
    }

    /// Writes the file atomically (it holds only public keys, so mode 0644).
    pub fn save(&self) -> Result<(), SecretsError> {
        write_atomic(&self.path, self.render().as_bytes(), 0o644)
    }
}

/// Reads a recipient given on the command line: the key itself, or a file holding exactly one
/// public key (an ssh `.pub` file, or a recipients file with one key).
pub fn resolve_recipient_arg(arg: &str) -> Result<RecipientKey, SecretsError> {
    let trimmed = arg.trim();
    let looks_like_key = trimmed.starts_with("age1")
        || trimmed.starts_with("ssh-")
        || trimmed.starts_with("AGE-SECRET-KEY-");
    let path = Path::new(trimmed);
    if !looks_like_key && path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| SecretsError::io("read", path, e))?;
        if text.contains("PRIVATE KEY") || text.contains("AGE-SECRET-KEY-") {
            return Err(SecretsError::BadRecipient {
                input: trimmed.to_string(),
                reason: "this file holds a private key; give the public key (`.pub` file, or `age-keygen -y KEYFILE`)".into(),
            });
        }
        let file = RecipientsFile::parse(path, &text)?;
        let keys = file.keys();
        return match keys.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(SecretsError::BadRecipient {
                input: trimmed.to_string(),
                reason: format!("the file holds {} keys, expected exactly one", keys.len()),
            }),
        };
    }
    RecipientKey::from_str(trimmed).map_err(|reason| SecretsError::BadRecipient {
        // A pasted private key is never echoed back.
        input: if trimmed.starts_with("AGE-SECRET-KEY-") {
            "AGE-SECRET-KEY-…".into()
        } else {
            trimmed.chars().take(80).collect()
        },
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const X1: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    #[test]
    fn parses_age_and_rejects_private_keys() {
        let k = RecipientKey::from_str(X1).unwrap();
        assert_eq!(k.kind(), RecipientKind::X25519);
        assert_eq!(k.key(), X1);
        let err = RecipientKey::from_str("AGE-SECRET-KEY-1QQQQ").unwrap_err();
        assert!(err.contains("private key"), "{err}");
        let err = RecipientKey::from_str(&format!("{X1} # alice")).unwrap_err();
        assert!(err.contains("alone on its line"), "{err}");
    }

    #[test]
    fn remove_by_label_drops_the_label_line() {
        let mut f = RecipientsFile::new("/x/s.recipients", "s.age");
        f.add(RecipientKey::from_str(X1).unwrap(), Some("alice"))
            .unwrap();
        let x2 = age::x25519::Identity::generate().to_public().to_string();
        f.add(RecipientKey::from_str(&x2).unwrap(), Some("bob"))
            .unwrap();
        let before = f.render();
        assert!(before.contains("# alice\n") && before.contains("# bob\n"));
        let removed = f.remove("alice").unwrap();
        assert_eq!(removed.key(), X1);
        let after = f.render();
        assert!(!after.contains("alice"), "{after}");
        assert!(after.contains("# bob\n") && after.contains(&x2));
        // The header comment block stays.
        assert!(after.starts_with("# Who can decrypt s.age"));
        let err = f.remove(&x2).unwrap_err();
        assert!(matches!(err, SecretsError::LastRecipient { .. }), "{err}");
    }

    #[test]
    fn bad_line_is_reported_with_its_number() {
        let err = RecipientsFile::parse(Path::new("r"), "# c\n\nage1nope\n").unwrap_err();
        match err {
            SecretsError::BadRecipientLine { line, .. } => assert_eq!(line, 3),
            other => panic!("unexpected {other}"),
        }
    }
}
