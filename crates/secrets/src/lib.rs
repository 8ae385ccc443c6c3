//! Secrets for provision: TOML files encrypted as a whole with age (armored, readable by the
//! reference `age` CLI), edited safely, exposed to templates as `secrets.NAME`, and redacted
//! from every output.
//!
//! - [`SecretsFile::load`] decrypts and parses a file for a run; [`Secrets`] serializes as a
//!   table for the template engine and gives a [`Redactor`] for every output path.
//! - [`IdentitySources`] says where private keys are looked for: `--identity`,
//!   `$PROVISION_IDENTITY`, `~/.config/provision/keys.txt`, `~/.ssh/id_ed25519`, `~/.ssh/id_rsa`.
//! - [`edit()`], [`init`], [`set`], [`remove`], [`recipients_add`], [`recipients_remove`],
//!   [`rotate`] implement the `provision secrets` commands.

mod atomic;
mod crypto;
mod edit;
mod error;
mod file;
mod generate;
mod identity;
mod ops;
mod recipients;
mod redact;
mod secrets;

pub use crypto::EncryptionMode;
pub use edit::{ENV_TMPDIR, EditOptions, EditOutcome, edit};
pub use error::{LookStatus, LookedAt, NoIdentityError, SecretsError};
pub use file::{Decrypted, SecretsFile};
pub use generate::{Alphabet, generate};
pub use identity::{IdentitySources, generate_key_file};
pub use ops::{
    InitOptions, InitReport, NEW_FILE_TEXT, RecipientsChange, RotateReport, Rotated, SetOutcome,
    find_secrets_files, generate_value, init, read_value, recipients_add, recipients_list,
    recipients_remove, remove, rotate, set, set_all_decrypted, set_decrypted, view,
};
pub use recipients::{RecipientKey, RecipientKind, RecipientsFile, resolve_recipient_arg};
pub use redact::{
    MIN_ENCODED_CHARS, MIN_FRAGMENT_CHARS, MIN_SECRET_CHARS, REDACTED, Redacted, Redactor,
};
pub use secrets::{MIN_VALUE_CHARS, Secrets, ShortValue, check_value_lengths, short_values};

/// Re-exported so callers can build and read secret strings without depending on secrecy themselves.
pub use secrecy::{ExposeSecret, SecretString};

/// Path of an identity file (age keys or an ssh private key), tried after `--identity`.
pub const ENV_IDENTITY: &str = "PROVISION_IDENTITY";

/// Passphrase for passphrase-encrypted files (instead of the terminal prompt).
pub const ENV_PASSPHRASE: &str = "PROVISION_SECRETS_PASSPHRASE";
