//! Where private keys come from (`--identity`, `$PROVISION_IDENTITY`, keys.txt, ~/.ssh) and how
//! they are loaded; also passphrases and new key pairs.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

use crate::error::{LookStatus, LookedAt};
use crate::recipients::RecipientKey;
use crate::{ENV_IDENTITY, ENV_PASSPHRASE, SecretsError};

/// Where to look for identities and passphrases. Built from the environment by the command line
/// ([`IdentitySources::from_env`]) or explicitly (tests, the engine).
#[derive(Clone)]
pub struct IdentitySources {
    /// `--identity FILE`: an age identity file or an ssh private key.
    pub identity_flag: Option<PathBuf>,
    /// `$PROVISION_IDENTITY`: same, from the environment.
    pub identity_env: Option<PathBuf>,
    /// The home directory, for `~/.config/provision/keys.txt`, `~/.ssh/id_ed25519`, `~/.ssh/id_rsa`.
    pub home: Option<PathBuf>,
    /// Passphrase for passphrase-encrypted files (`$PROVISION_SECRETS_PASSPHRASE`).
    pub passphrase: Option<SecretString>,
    /// Whether passphrases may be asked for on the terminal (/dev/tty).
    pub prompt: bool,
}

impl fmt::Debug for IdentitySources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySources")
            .field("identity_flag", &self.identity_flag)
            .field("identity_env", &self.identity_env)
            .field("home", &self.home)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "***"))
            .field("prompt", &self.prompt)
            .finish()
    }
}

impl IdentitySources {
    /// The standard sources: the `--identity` flag, `$PROVISION_IDENTITY`, `$HOME`,
    /// `$PROVISION_SECRETS_PASSPHRASE`, and prompting on the terminal.
    pub fn from_env(identity_flag: Option<PathBuf>) -> Self {
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        IdentitySources {
            identity_flag,
            identity_env: non_empty(ENV_IDENTITY).map(PathBuf::from),
            home: non_empty("HOME").map(PathBuf::from),
            passphrase: std::env::var(ENV_PASSPHRASE)
                .ok()
                .filter(|p| !p.is_empty())
                .map(SecretString::from),
            prompt: true,
        }
    }

    /// No sources at all and no prompting; fill in the fields you need.
    pub fn none() -> Self {
        IdentitySources {
            identity_flag: None,
            identity_env: None,
            home: None,
            passphrase: None,
            prompt: false,
        }
    }

    /// `~/.config/provision/keys.txt`, where `init` creates a key when the user has none.
    pub fn default_key_path(&self) -> Option<PathBuf> {
        self.home
            .as_ref()
            .map(|h| h.join(".config").join("provision").join("keys.txt"))
    }

    /// Where a new key is written: the first of `--identity`, `$PROVISION_IDENTITY` and the
    /// default key path.
    pub fn new_key_path(&self) -> Result<PathBuf, SecretsError> {
        self.identity_flag
            .clone()
            .or_else(|| self.identity_env.clone())
            .or_else(|| self.default_key_path())
            .ok_or(SecretsError::NoHome)
    }

    /// Shows a path under the home directory as `~/...`.
    pub(crate) fn pretty(&self, path: &Path) -> String {
        if let Some(home) = &self.home
            && let Ok(rest) = path.strip_prefix(home)
        {
            return format!("~/{}", rest.display());
        }
        path.display().to_string()
    }

    /// Loads every identity that can be found, in order, recording what was found where.
    pub(crate) fn load(&self) -> Result<Loaded, SecretsError> {
        let mut loaded = Loaded::default();
        match &self.identity_flag {
            Some(path) => {
                // The user named this file: a typo must not silently fall back to other keys.
                if !path.exists() {
                    return Err(SecretsError::IdentityFile {
                        path: path.clone(),
                        reason: "does not exist (given with --identity); check the path".into(),
                    });
                }
                loaded.push_file(format!("--identity {}", path.display()), path, false);
            }
            None => loaded.push_status("--identity".into(), LookStatus::NotGiven),
        }
        match &self.identity_env {
            Some(path) => {
                loaded.push_file(format!("${ENV_IDENTITY}={}", path.display()), path, false)
            }
            None => loaded.push_status(format!("${ENV_IDENTITY}"), LookStatus::Unset),
        }
        match &self.home {
            Some(home) => {
                let keys = home.join(".config/provision/keys.txt");
                loaded.push_file(self.pretty(&keys), &keys, false);
                for name in ["id_ed25519", "id_rsa"] {
                    let p = home.join(".ssh").join(name);
                    loaded.push_file(self.pretty(&p), &p, true);
                }
            }
            None => loaded.push_status("~ ($HOME unset)".into(), LookStatus::Unset),
        }
        Ok(loaded)
    }

    /// The passphrase for a passphrase-encrypted file: the configured one, else a prompt.
    pub(crate) fn passphrase_for(&self, path: &Path) -> Result<SecretString, SecretsError> {
        if let Some(p) = &self.passphrase {
            return Ok(p.clone());
        }
        if self.prompt
            && let Ok(p) =
                rpassword::prompt_password(format!("passphrase for {}: ", path.display()))
        {
            return Ok(SecretString::from(p));
        }
        Err(SecretsError::NoPassphrase {
            path: path.to_path_buf(),
        })
    }

    /// A new passphrase for `init --passphrase`: the configured one, else asked twice.
    pub(crate) fn new_passphrase(&self, path: &Path) -> Result<SecretString, SecretsError> {
        if let Some(p) = &self.passphrase {
            return Ok(p.clone());
        }
        let no = || SecretsError::NoPassphrase {
            path: path.to_path_buf(),
        };
        if !self.prompt {
            return Err(no());
        }
        let first = Zeroizing::new(
            rpassword::prompt_password(format!("new passphrase for {}: ", path.display()))
                .map_err(|_| no())?,
        );
        let second = Zeroizing::new(rpassword::prompt_password("repeat it: ").map_err(|_| no())?);
        if first.is_empty() || *first != *second {
            return Err(SecretsError::Encrypt {
                path: path.to_path_buf(),
                reason: "the passphrases were empty or did not match; run the command again".into(),
            });
        }
        Ok(SecretString::from(first.to_string()))
    }
}

/// A private key that was read from a source.
pub(crate) enum AnyIdentity {
    X25519(Box<age::x25519::Identity>),
    Ssh(Box<age::ssh::Identity>),
}

impl AnyIdentity {
    /// The matching public key.
    pub(crate) fn public(&self) -> Option<RecipientKey> {
        match self {
            AnyIdentity::X25519(i) => RecipientKey::from_str(&i.to_public().to_string()).ok(),
            AnyIdentity::Ssh(i) => {
                let r = age::ssh::Recipient::try_from((**i).clone()).ok()?;
                RecipientKey::from_str(&r.to_string()).ok()
            }
        }
    }
}

/// One place identities were looked for, and what it held.
pub(crate) struct Source {
    pub(crate) looked: LookedAt,
    pub(crate) identities: Vec<AnyIdentity>,
}

/// Everything [`IdentitySources::load`] found.
#[derive(Default)]
pub(crate) struct Loaded {
    pub(crate) sources: Vec<Source>,
}

impl Loaded {
    fn push_status(&mut self, place: String, status: LookStatus) {
        self.sources.push(Source {
            looked: LookedAt { place, status },
            identities: Vec::new(),
        });
    }

    fn push_file(&mut self, place: String, path: &Path, ssh_only: bool) {
        let (status, identities) = match read_identity_file(path, ssh_only) {
            Ok(None) => (LookStatus::Missing, Vec::new()),
            Ok(Some(ids)) => (LookStatus::Loaded, ids),
            Err(Unusable::Invalid(reason)) => (LookStatus::Invalid(reason), Vec::new()),
            Err(Unusable::Unsupported(reason)) => (LookStatus::Unsupported(reason), Vec::new()),
        };
        self.sources.push(Source {
            looked: LookedAt { place, status },
            identities,
        });
    }

    /// Whether any identity at all was found.
    pub(crate) fn any(&self) -> bool {
        self.sources.iter().any(|s| !s.identities.is_empty())
    }

    /// The public key of the first identity found (the user's own key).
    pub(crate) fn first_public(&self) -> Option<(String, RecipientKey)> {
        self.sources.iter().find_map(|s| {
            s.identities
                .iter()
                .find_map(|i| i.public())
                .map(|k| (s.looked.place.clone(), k))
        })
    }
}

enum Unusable {
    Invalid(String),
    Unsupported(String),
}

/// Reads an age identity file or an ssh private key. `Ok(None)` when the file does not exist.
fn read_identity_file(path: &Path, ssh_only: bool) -> Result<Option<Vec<AnyIdentity>>, Unusable> {
    let text = match fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Unusable::Invalid(e.to_string())),
    };
    let is_pem = text.windows(10).take(4096).any(|w| w == b"-----BEGIN");
    if is_pem || ssh_only {
        return match age::ssh::Identity::from_buffer(&text[..], Some(path.display().to_string())) {
            Ok(age::ssh::Identity::Unsupported(k)) => Err(Unusable::Unsupported(unsupported(&k))),
            Ok(id) => Ok(Some(vec![AnyIdentity::Ssh(Box::new(id))])),
            Err(_) => Err(Unusable::Invalid(
                "not an ssh private key age can read".into(),
            )),
        };
    }
    let text = std::str::from_utf8(&text)
        .map_err(|_| Unusable::Invalid("not a text file of age keys".into()))?;
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with("AGE-PLUGIN-") {
            return Err(Unusable::Unsupported(format!(
                "line {}: age plugin identities are not supported",
                n + 1
            )));
        }
        // The line number only: the line itself is a private key.
        let id = age::x25519::Identity::from_str(line)
            .map_err(|_| Unusable::Invalid(format!("line {} is not an age secret key", n + 1)))?;
        ids.push(AnyIdentity::X25519(Box::new(id)));
    }
    if ids.is_empty() {
        return Err(Unusable::Invalid("holds no key".into()));
    }
    Ok(Some(ids))
}

fn unsupported(key: &age::ssh::UnsupportedKey) -> String {
    use age::ssh::UnsupportedKey as U;
    match key {
        U::EncryptedPem => {
            "passphrase-protected PEM key; convert it with `ssh-keygen -p -o -f FILE`".into()
        }
        U::EncryptedSsh(cipher) => format!("encrypted with cipher {cipher}"),
        U::Hardware(ty) => format!("hardware key {ty}"),
        U::Type(ty) => format!("key type {ty}"),
    }
}

/// Creates a new age key pair at `path` (directory 0700, file 0600, never overwriting) and
/// returns its public key.
pub fn generate_key_file(path: &Path) -> Result<RecipientKey, SecretsError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| SecretsError::io("create directory", dir, e))?;
    }
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    let secret = identity.to_string();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SecretsError::io("create", path, e))?;
    let body = Zeroizing::new(format!(
        "# age key created by `provision secrets init`; keep it private and backed up.\n# public key: {public}\n{}\n",
        secret.expose_secret()
    ));
    file.write_all(body.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| SecretsError::io("write", path, e))?;
    Ok(RecipientKey::from_str(&public).expect("freshly generated key parses"))
}
