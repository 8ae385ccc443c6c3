//! age encryption and decryption of whole files (armored), with errors that explain who can
//! decrypt and where keys were looked for.

use std::cell::RefCell;
use std::io::{BufRead as _, Write as _};
use std::path::Path;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age_core::format::{FileKey, Stanza};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::SecretsError;
use crate::error::{LookStatus, NoIdentityError};
use crate::identity::{AnyIdentity, IdentitySources};
use crate::recipients::{RecipientKey, RecipientsFile};

/// How a file is (to be) encrypted.
#[derive(Clone)]
pub enum EncryptionMode {
    /// To the public keys of the recipients file next to it.
    Recipients,
    /// With this passphrase (age's scrypt mode), for a single user.
    Passphrase(SecretString),
}

impl std::fmt::Debug for EncryptionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncryptionMode::Recipients => write!(f, "Recipients"),
            EncryptionMode::Passphrase(_) => write!(f, "Passphrase(***)"),
        }
    }
}

/// What to encrypt to, resolved.
pub(crate) enum Target<'a> {
    Keys(&'a [RecipientKey]),
    Passphrase(&'a SecretString),
}

/// Encrypts `plaintext` into an armored age file.
pub(crate) fn encrypt(
    path: &Path,
    plaintext: &[u8],
    target: Target<'_>,
) -> Result<Vec<u8>, SecretsError> {
    let fail = |reason: String| SecretsError::Encrypt {
        path: path.to_path_buf(),
        reason,
    };
    let encryptor = match target {
        Target::Keys(keys) => {
            let recipients: Vec<Box<dyn age::Recipient>> =
                keys.iter().map(|k| k.to_age()).collect();
            age::Encryptor::with_recipients(recipients.iter().map(|r| r.as_ref()))
                .map_err(|e| fail(e.to_string()))?
        }
        Target::Passphrase(p) => age::Encryptor::with_user_passphrase(p.clone()),
    };
    let mut out = Vec::with_capacity(plaintext.len() * 2 + 512);
    let io = |e: std::io::Error| fail(e.to_string());
    let armored = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor).map_err(io)?;
    let mut writer = encryptor.wrap_output(armored).map_err(io)?;
    writer.write_all(plaintext).map_err(io)?;
    writer.finish().and_then(|a| a.finish()).map_err(io)?;
    Ok(out)
}

/// The recipient stanzas of a file's header (grease stanzas left out).
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) stanzas: Vec<(String, Vec<String>)>,
}

impl Header {
    pub(crate) fn types(&self) -> Vec<String> {
        self.stanzas.iter().map(|(t, _)| t.clone()).collect()
    }

    /// Whether an ssh key with this tag is one of the recipients.
    fn has_ssh_tag(&self, tag: &str) -> bool {
        self.stanzas
            .iter()
            .any(|(t, args)| t.starts_with("ssh-") && args.first().map(String::as_str) == Some(tag))
    }
}

/// Reads the header of an age file (armored or binary) without decrypting anything.
pub(crate) fn read_header(path: &Path, bytes: &[u8]) -> Result<Header, SecretsError> {
    let start = bytes.trim_ascii_start();
    if !(start.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
        || start.starts_with(b"age-encryption.org/"))
    {
        return Err(SecretsError::NotAgeFile {
            path: path.to_path_buf(),
        });
    }
    let corrupt = |detail: String| SecretsError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let mut reader = ArmoredReader::new(bytes);
    let mut line = String::new();
    let mut stanzas = Vec::new();
    let mut first = true;
    // A real header has a handful of lines; the bound stops a damaged file from being read whole.
    for _ in 0..10_000 {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| corrupt(format!("cannot read the header: {e}")))?;
        if n == 0 {
            return Err(corrupt("the header ends early".into()));
        }
        let l = line.trim_end_matches('\n');
        if first {
            if l != "age-encryption.org/v1" {
                return Err(corrupt(format!(
                    "unknown format version `{}`",
                    l.chars().take(40).collect::<String>()
                )));
            }
            first = false;
        } else if let Some(rest) = l.strip_prefix("-> ") {
            let mut parts = rest.split(' ').map(str::to_string);
            if let Some(tag) = parts.next()
                && !tag.ends_with("-grease")
            {
                stanzas.push((tag, parts.collect()));
            }
        } else if l.starts_with("---") {
            return Ok(Header { stanzas });
        }
    }
    Err(corrupt("the header does not end".into()))
}

/// A decrypted file: its plaintext and how it was encrypted.
pub(crate) struct Plain {
    pub(crate) bytes: Zeroizing<Vec<u8>>,
    pub(crate) mode: EncryptionMode,
}

fn decryptor<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<age::Decryptor<ArmoredReader<std::io::BufReader<&'a [u8]>>>, SecretsError> {
    age::Decryptor::new_buffered(ArmoredReader::new(bytes)).map_err(|e| map_decrypt_error(path, e))
}

fn map_decrypt_error(path: &Path, e: age::DecryptError) -> SecretsError {
    let corrupt = |detail: &str| SecretsError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    match e {
        age::DecryptError::InvalidHeader => corrupt("invalid header"),
        age::DecryptError::InvalidMac => corrupt("the header was modified (MAC mismatch)"),
        age::DecryptError::DecryptionFailed => corrupt("the encrypted data does not authenticate"),
        age::DecryptError::UnknownFormat => corrupt("unknown age format version"),
        age::DecryptError::Io(io) => SecretsError::Corrupt {
            path: path.to_path_buf(),
            detail: io.to_string(),
        },
        age::DecryptError::ExcessiveWork { required, .. } => SecretsError::ExcessiveWork {
            path: path.to_path_buf(),
            required,
        },
        other => corrupt(&other.to_string()),
    }
}

fn read_all(
    path: &Path,
    mut reader: impl std::io::Read,
) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    let mut out = Zeroizing::new(Vec::new());
    reader
        .read_to_end(&mut out)
        .map_err(|e| SecretsError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("the encrypted data is truncated or damaged: {e}"),
        })?;
    Ok(out)
}

/// Decrypts an age file read into memory.
pub(crate) fn decrypt(
    path: &Path,
    bytes: &[u8],
    ids: &IdentitySources,
) -> Result<Plain, SecretsError> {
    let header = read_header(path, bytes)?;
    let dec = decryptor(path, bytes)?;
    if dec.is_scrypt() {
        let passphrase = ids.passphrase_for(path)?;
        let identity = age::scrypt::Identity::new(passphrase.clone());
        let reader = dec
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => {
                    SecretsError::WrongPassphrase {
                        path: path.to_path_buf(),
                    }
                }
                other => map_decrypt_error(path, other),
            })?;
        let bytes = read_all(path, reader)?;
        return Ok(Plain {
            bytes,
            mode: EncryptionMode::Passphrase(passphrase),
        });
    }

    let mut loaded = ids.load()?;
    // First pass: keys usable without a passphrase.
    let plain: Vec<&dyn age::Identity> = loaded
        .sources
        .iter()
        .flat_map(|s| s.identities.iter())
        .filter_map(|i| match i {
            AnyIdentity::X25519(x) => Some(x.as_ref() as &dyn age::Identity),
            AnyIdentity::Ssh(s) if matches!(**s, age::ssh::Identity::Unencrypted(_)) => {
                Some(s.as_ref() as &dyn age::Identity)
            }
            AnyIdentity::Ssh(_) => None,
        })
        .collect();
    match dec.decrypt(plain.into_iter()) {
        Ok(reader) => {
            return Ok(Plain {
                bytes: read_all(path, reader)?,
                mode: EncryptionMode::Recipients,
            });
        }
        Err(age::DecryptError::NoMatchingKeys) => {}
        Err(e) => return Err(map_decrypt_error(path, e)),
    }

    // Second pass: passphrase-protected ssh keys that the file was encrypted to. Only those
    // are asked for, so a protected key that is not a recipient never prompts.
    let mut prompting = Vec::new();
    for source in &mut loaded.sources {
        let mut is_recipient = false;
        let mut protected = false;
        for identity in &source.identities {
            if let AnyIdentity::Ssh(s) = identity
                && let age::ssh::Identity::Encrypted(_) = **s
            {
                protected = true;
                if let Some(tag) = identity.public().and_then(|k| k.ssh_tag())
                    && header.has_ssh_tag(&tag)
                {
                    is_recipient = true;
                    prompting.push(PromptingSsh {
                        identity: (**s).clone(),
                        tag,
                        place: source.looked.place.clone(),
                        prompt: ids.prompt,
                        failure: RefCell::new(None),
                    });
                }
            }
        }
        if matches!(source.looked.status, LookStatus::Loaded) && !is_recipient {
            source.looked.status = if protected {
                LookStatus::ProtectedNotARecipient
            } else {
                LookStatus::NotARecipient
            };
        }
    }
    if !prompting.is_empty() {
        let dec = decryptor(path, bytes)?;
        match dec.decrypt(prompting.iter().map(|p| p as &dyn age::Identity)) {
            Ok(reader) => {
                return Ok(Plain {
                    bytes: read_all(path, reader)?,
                    mode: EncryptionMode::Recipients,
                });
            }
            Err(age::DecryptError::KeyDecryptionFailed) => {
                let place = prompting[0].place.clone();
                return Err(SecretsError::SshKey {
                    place,
                    reason: "wrong passphrase; try again".into(),
                });
            }
            Err(age::DecryptError::NoMatchingKeys) => {
                if let Some(p) = prompting.iter().find(|p| p.failure.borrow().is_some()) {
                    return Err(SecretsError::SshKey {
                        place: p.place.clone(),
                        reason: p.failure.borrow().clone().unwrap_or_default(),
                    });
                }
            }
            Err(e) => return Err(map_decrypt_error(path, e)),
        }
    }

    let recipients_path = RecipientsFile::path_for(path);
    let listed = RecipientsFile::load_optional(&recipients_path)
        .ok()
        .flatten()
        .map(|f| {
            (
                recipients_path.clone(),
                f.keys().iter().map(|k| k.short()).collect(),
            )
        });
    Err(SecretsError::NoIdentity(Box::new(NoIdentityError {
        path: path.to_path_buf(),
        stanza_types: header.types(),
        listed,
        looked: loaded.sources.into_iter().map(|s| s.looked).collect(),
    })))
}

/// A passphrase-protected ssh key that asks for its passphrase on the terminal, only for
/// stanzas addressed to it.
struct PromptingSsh {
    identity: age::ssh::Identity,
    tag: String,
    place: String,
    prompt: bool,
    failure: RefCell<Option<String>>,
}

impl age::Identity for PromptingSsh {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        if !(stanza.tag.starts_with("ssh-") && stanza.args.first() == Some(&self.tag)) {
            return None;
        }
        let age::ssh::Identity::Encrypted(key) = &self.identity else {
            return None;
        };
        if !self.prompt {
            *self.failure.borrow_mut() =
                Some("it is passphrase-protected and prompting is off; use an unprotected key with --identity".into());
            return None;
        }
        let passphrase = match rpassword::prompt_password(format!(
            "passphrase for {}: ",
            self.place
        )) {
            Ok(p) => SecretString::from(p),
            Err(e) => {
                *self.failure.borrow_mut() = Some(format!(
                    "it is passphrase-protected and there is no terminal to ask ({e}); use an unprotected key with --identity"
                ));
                return None;
            }
        };
        match key.decrypt(passphrase) {
            Ok(unlocked) => age::ssh::Identity::from(unlocked).unwrap_stanza(stanza),
            Err(e) => Some(Err(e)),
        }
    }
}
