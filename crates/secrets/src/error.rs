//! Typed errors of the secrets crate; every message says what to do next and never holds a secret.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong with a secrets file.
///
/// Messages are meant to be shown to people as they are: lower-case, naming the file, and ending
/// with the next step. None of them includes a secret value or a line of decrypted text.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{} does not exist; create it with `provision secrets init {}`", .path.display(), .path.display())]
    NotFound { path: PathBuf },

    #[error("{} already exists; edit it with `provision secrets edit {}`", .path.display(), .path.display())]
    AlreadyExists { path: PathBuf },

    #[error("cannot {action} {}: {source}; check the path and its permissions", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{} is not an age-encrypted file (it should start with `-----BEGIN AGE ENCRYPTED FILE-----`); if it holds plaintext secrets, move them out of the repository and create an encrypted file with `provision secrets init`",
        .path.display()
    )]
    NotAgeFile { path: PathBuf },

    #[error(
        "{} is corrupted or truncated ({detail}); it was left untouched: restore it from version control (`git checkout -- {}`) or from a backup",
        .path.display(), .path.display()
    )]
    Corrupt { path: PathBuf, detail: String },

    #[error("{0}")]
    NoIdentity(Box<NoIdentityError>),

    #[error(
        "{} is encrypted with a passphrase and none was given: set {} or run in a terminal to be prompted",
        .path.display(), crate::ENV_PASSPHRASE
    )]
    NoPassphrase { path: PathBuf },

    #[error("wrong passphrase for {}; try again (check {} if it is set)", .path.display(), crate::ENV_PASSPHRASE)]
    WrongPassphrase { path: PathBuf },

    #[error(
        "{} needs more work to decrypt than this machine allows (scrypt work factor {required}); re-encrypt it on a faster machine with `provision secrets rotate`",
        .path.display()
    )]
    ExcessiveWork { path: PathBuf, required: u8 },

    #[error("cannot decrypt the ssh key {place}: {reason}")]
    SshKey { place: String, reason: String },

    #[error("identity file {}: {reason}", .path.display())]
    IdentityFile { path: PathBuf, reason: String },

    #[error(
        "{} decrypts to text that is not valid TOML ({message} at line {line}, column {column}); fix it with `provision secrets edit {}`",
        .path.display(), .path.display()
    )]
    InvalidToml {
        path: PathBuf,
        message: String,
        line: usize,
        column: usize,
    },

    #[error("{} decrypts to bytes that are not UTF-8 text; restore it from version control", .path.display())]
    NotUtf8 { path: PathBuf },

    #[error(
        "{}: {} shorter than {} characters, too short to be told apart from ordinary text, so provision could not hide {} in its output; set a longer value (`provision secrets set {} NAME`, or `provision secrets edit {}`), or move a value that is not secret to the inventory's vars",
        .path.display(), short_list(.values), crate::secrets::MIN_VALUE_CHARS,
        if .values.len() == 1 { "it" } else { "them" }, .path.display(), .path.display()
    )]
    TooShort {
        path: PathBuf,
        values: Vec<crate::secrets::ShortValue>,
    },

    #[error(
        "no recipients file {}: create it with the public keys that may decrypt, one per line (`provision secrets init` does this for a new secrets file)",
        .path.display()
    )]
    NoRecipientsFile { path: PathBuf },

    #[error("{} lists no recipients; add one with `provision secrets recipients add`", .path.display())]
    NoRecipients { path: PathBuf },

    #[error("{}:{line}: {reason}; fix or remove that line", .path.display())]
    BadRecipientLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("`{input}` is not a recipient: {reason}")]
    BadRecipient { input: String, reason: String },

    #[error("{key} is already a recipient in {}", .path.display())]
    RecipientExists { path: PathBuf, key: String },

    #[error("no recipient matching `{query}` in {}; list them with `provision secrets recipients list`", .path.display())]
    RecipientNotFound { path: PathBuf, query: String },

    #[error("`{query}` matches {count} recipients in {}; give the full public key instead", .path.display())]
    RecipientAmbiguous {
        path: PathBuf,
        query: String,
        count: usize,
    },

    #[error(
        "{} is encrypted with a passphrase, not to recipients; to share it, create a recipients-based file with `provision secrets init` and copy the values over",
        .path.display()
    )]
    PassphraseMode { path: PathBuf },

    #[error("{key} is the last recipient of {}; add another one first, or nobody could decrypt it", .path.display())]
    LastRecipient { path: PathBuf, key: String },

    #[error("cannot encrypt {}: {reason}", .path.display())]
    Encrypt { path: PathBuf, reason: String },

    #[error("`{key}` is not a valid key: {reason}; use a dotted TOML key such as `db.password`")]
    BadKey { key: String, reason: String },

    #[error("no key `{key}` in {}; see the keys with `provision secrets view`", .path.display())]
    KeyNotFound { path: PathBuf, key: String },

    #[error("`{key}` in {} is not a table, so `{full}` cannot be set inside it; pick another key or remove `{key}` first", .path.display())]
    NotATable {
        path: PathBuf,
        key: String,
        full: String,
    },

    #[error(
        "cannot create a private directory for the plaintext: {reason}; the secrets file was not changed"
    )]
    TempDir { reason: String },

    #[error(
        "cannot start the editor `{editor}`: {source}; set $VISUAL or $EDITOR to an installed editor"
    )]
    EditorStart {
        editor: String,
        #[source]
        source: io::Error,
    },

    #[error("the editor `{editor}` failed ({status}); {} left unchanged and the plaintext copy removed", .path.display())]
    EditorFailed {
        editor: String,
        status: String,
        path: PathBuf,
    },

    #[error("the edit still is not valid TOML and the editor was closed without changes; {} left unchanged and your edits discarded", .path.display())]
    EditAbandoned { path: PathBuf },

    #[error("cannot read random bytes from the operating system: {0}")]
    Random(String),

    #[error(
        "the recipients of {} changed since it was last written ({drift}); nothing was written\n  hint: check that every added key is one you trust, then confirm with `provision secrets rotate --yes {}` (or pass --yes), or put the recipients file back",
        .path.display(), .path.display()
    )]
    RecipientsChanged { path: PathBuf, drift: String },

    #[error("interrupted by {}; {} left unchanged and the plaintext copy removed", signal_name(*.signal), .path.display())]
    Interrupted { path: PathBuf, signal: i32 },

    #[error("no secrets files given and no *.age file in {}; name the files to re-encrypt", .dir.display())]
    NoFiles { dir: PathBuf },

    #[error(
        "no home directory ($HOME is unset); pass --identity FILE or set {}",
        crate::ENV_IDENTITY
    )]
    NoHome,
}

impl SecretsError {
    /// The exit code a command line should end with: 128 + signal for an interrupted edit (the
    /// shell convention), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            SecretsError::Interrupted { signal, .. } => u8::try_from(128 + signal).unwrap_or(1),
            _ => 1,
        }
    }

    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        SecretsError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// "`a` (line 2, 3 characters) and `b` (line 4, 5 characters) are", never the values.
fn short_list(values: &[crate::secrets::ShortValue]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| match v.line {
            Some(line) => format!("`{}` (line {line}, {} characters)", v.name, v.chars),
            None => format!("`{}` ({} characters)", v.name, v.chars),
        })
        .collect();
    let verb = if items.len() == 1 { "is" } else { "are" };
    match items.split_last() {
        Some((last, [])) => format!("{last} {verb}"),
        Some((last, rest)) => format!("{} and {last} {verb}", rest.join(", ")),
        None => String::new(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP (terminal closed)",
        _ => "a signal",
    }
}

/// No available identity could decrypt a file: says who the file was encrypted to and where
/// identities were looked for, so the user knows which key is missing.
#[derive(Debug)]
pub struct NoIdentityError {
    /// The secrets file.
    pub path: PathBuf,
    /// Recipient stanza types found in the file's header, one per recipient (`X25519`,
    /// `ssh-ed25519`, ...). age does not store x25519 public keys in the file, only the type.
    pub stanza_types: Vec<String>,
    /// The recipients file next to the secrets file and the keys it lists (shortened), or None
    /// when there is no such file.
    pub listed: Option<(PathBuf, Vec<String>)>,
    /// Every place identities were looked for, with what was found there.
    pub looked: Vec<LookedAt>,
}

impl fmt::Display for NoIdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no identity can decrypt {}: it was encrypted to ",
            self.path.display()
        )?;
        let n = self.stanza_types.len();
        write!(f, "{n} recipient{}", if n == 1 { "" } else { "s" })?;
        if n > 0 {
            write!(f, " ({})", count_types(&self.stanza_types))?;
        }
        match &self.listed {
            Some((path, keys)) if !keys.is_empty() => {
                write!(f, "; {} lists: {}", file_name(path), keys.join(", "))?
            }
            Some((path, _)) => write!(f, "; {} lists no keys", file_name(path))?,
            None => write!(f, "; there is no recipients file next to it")?,
        }
        write!(f, "; looked in: ")?;
        for (i, looked) in self.looked.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{looked}")?;
        }
        write!(
            f,
            "; pass the right key with --identity FILE, or send your public key to a teammate who can decrypt it so they run `provision secrets recipients add {} YOUR_PUBLIC_KEY`",
            self.path.display()
        )
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// "2 X25519, 1 ssh-ed25519" in the order first seen.
fn count_types(types: &[String]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for t in types {
        match counts.iter_mut().find(|(name, _)| name == t) {
            Some((_, c)) => *c += 1,
            None => counts.push((t, 1)),
        }
    }
    counts
        .iter()
        .map(|(name, c)| format!("{c} {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One place where identities were looked for, e.g. `~/.ssh/id_ed25519 (not a recipient)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookedAt {
    /// How the place is shown: `--identity`, `$PROVISION_IDENTITY`, `~/.ssh/id_rsa`, ...
    pub place: String,
    pub status: LookStatus,
}

impl fmt::Display for LookedAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.place, self.status)
    }
}

/// What was found at a place where identities are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookStatus {
    /// The `--identity` flag was not given.
    NotGiven,
    /// The environment variable is not set.
    Unset,
    /// The file does not exist.
    Missing,
    /// Identities were read; whether they could decrypt is not known yet.
    Loaded,
    /// Identities were read and none of them is a recipient of the file.
    NotARecipient,
    /// A passphrase-protected ssh key that is not a recipient of the file (so not asked for).
    ProtectedNotARecipient,
    /// The file could not be read or parsed.
    Invalid(String),
    /// A key type age cannot use.
    Unsupported(String),
}

impl fmt::Display for LookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookStatus::NotGiven => write!(f, "not given"),
            LookStatus::Unset => write!(f, "unset"),
            LookStatus::Missing => write!(f, "missing"),
            LookStatus::Loaded => write!(f, "loaded"),
            LookStatus::NotARecipient => write!(f, "not a recipient"),
            LookStatus::ProtectedNotARecipient => {
                write!(f, "passphrase-protected, not a recipient")
            }
            LookStatus::Invalid(reason) => write!(f, "unusable: {reason}"),
            LookStatus::Unsupported(reason) => write!(f, "unsupported: {reason}"),
        }
    }
}
