//! The `provision secrets` operations other than edit: init, view, set, rm, recipients, rotate.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

use crate::crypto::EncryptionMode;
use crate::identity::generate_key_file;
use crate::recipients::{RecipientKey, RecipientsFile};
use crate::{Decrypted, IdentitySources, Secrets, SecretsError, SecretsFile};

/// What a new secrets file holds: nothing. (A comment template would end up attached to the
/// first value by TOML editing, and be deleted with it.)
pub const NEW_FILE_TEXT: &str = "";

/// Options of [`init`].
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// More people to encrypt to, besides the user's own key.
    pub recipients: Vec<RecipientKey>,
    /// Encrypt with a passphrase instead (single user, no recipients file).
    pub passphrase: bool,
}

/// What [`init`] did.
#[derive(Debug, Clone, Default)]
pub struct InitReport {
    /// A key pair was created here because the user had none.
    pub created_key: Option<PathBuf>,
    /// The user's public key (to hand to teammates), and where its private half is.
    pub own_key: Option<(String, RecipientKey)>,
    /// The recipients file was created (false: it existed, or passphrase mode).
    pub created_recipients: bool,
    /// The secrets file was created (false: it existed and was left alone).
    pub created_file: bool,
    /// How many recipients the new file is encrypted to (0 for passphrase mode).
    pub recipients: usize,
}

/// Sets up a secrets file: a key pair if the user has none, a recipients file listing the
/// user's key (and `opts.recipients`), and an encrypted file without values. An existing
/// secrets file is never overwritten: then only the key is ensured and reported, which is what a
/// new teammate needs to ask for access.
pub fn init(
    path: &Path,
    ids: &IdentitySources,
    opts: &InitOptions,
) -> Result<InitReport, SecretsError> {
    let file = SecretsFile::new(path);
    let mut report = InitReport::default();
    if opts.passphrase {
        if path.exists() {
            return Err(SecretsError::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        let passphrase = ids.new_passphrase(path)?;
        file.write(
            NEW_FILE_TEXT.as_bytes(),
            &EncryptionMode::Passphrase(passphrase),
        )?;
        report.created_file = true;
        return Ok(report);
    }

    // A --identity naming a file that does not exist yet is where the new key goes.
    let flag_missing = ids.identity_flag.as_ref().is_some_and(|p| !p.exists());
    let loaded = if flag_missing {
        None
    } else {
        Some(ids.load()?)
    };
    let own = match loaded
        .as_ref()
        .and_then(|l| l.any().then(|| l.first_public()).flatten())
    {
        Some(own) => own,
        None => {
            let key_path = ids.new_key_path()?;
            let public = generate_key_file(&key_path)?;
            report.created_key = Some(key_path.clone());
            (ids.pretty(&key_path), public)
        }
    };
    report.own_key = Some(own.clone());
    if path.exists() {
        return Ok(report);
    }

    let recipients_path = file.recipients_path();
    let mut recipients = match RecipientsFile::load_optional(&recipients_path)? {
        Some(existing) => existing,
        None => {
            report.created_recipients = true;
            let about = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            RecipientsFile::new(&recipients_path, &about)
        }
    };
    let label = std::env::var("USER").ok().filter(|u| !u.is_empty());
    let label = label.map(|u| format!("{u} (created by provision secrets init)"));
    for (key, name) in std::iter::once((own.1.clone(), label))
        .chain(opts.recipients.iter().map(|k| (k.clone(), None)))
    {
        if !recipients.keys().iter().any(|k| k.same_key(&key)) {
            recipients.add(key, name.as_deref())?;
        }
    }
    let keys = recipients.require_keys()?;
    let encrypted = crate::crypto::encrypt(
        path,
        &crate::file::with_record(NEW_FILE_TEXT.as_bytes(), &keys),
        crate::crypto::Target::Keys(&keys),
    )?;
    // Recipients first: a secrets file must never exist without the list of who can read it.
    recipients.save()?;
    crate::atomic::write_atomic(path, &encrypted, 0o644)?;
    report.created_file = true;
    report.recipients = keys.len();
    Ok(report)
}

/// The decrypted text, exactly as stored (for `view` and git's `textconv`).
pub fn view(path: &Path, ids: &IdentitySources) -> Result<Decrypted, SecretsError> {
    SecretsFile::new(path).decrypt(ids)
}

/// Whether [`set`] added a new key or replaced a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    Added,
    Replaced,
}

/// Sets `key` (dotted: `db.password`, TOML quoting allowed: `a."b.c"`) to a string value,
/// keeping the rest of the file (comments, order) as it is. `confirm`: write even though the
/// recipients file changed since the last write (see [`SecretsFile::write_confirmed`]).
pub fn set(
    path: &Path,
    ids: &IdentitySources,
    key: &str,
    value: &SecretString,
    confirm: bool,
) -> Result<SetOutcome, SecretsError> {
    let decrypted = SecretsFile::new(path).decrypt(ids)?;
    set_decrypted(path, &decrypted, key, value, confirm)
}

/// [`set`] on a file already decrypted (so a command line can decrypt, then read the value,
/// asking for a passphrase only once).
pub fn set_decrypted(
    path: &Path,
    decrypted: &Decrypted,
    key: &str,
    value: &SecretString,
    confirm: bool,
) -> Result<SetOutcome, SecretsError> {
    let outcomes = set_all_decrypted(path, decrypted, &[(key, value)], confirm)?;
    Ok(outcomes[0])
}

/// Sets every `(key, value)` of `values` in one write (one re-encryption), keeping the rest of
/// the file as [`set`] does; nothing is written unless every key and value is valid.
pub fn set_all_decrypted(
    path: &Path,
    decrypted: &Decrypted,
    values: &[(&str, &SecretString)],
    confirm: bool,
) -> Result<Vec<SetOutcome>, SecretsError> {
    let file = SecretsFile::new(path);
    let mut doc = parse_for_update(path, decrypted.text())?;
    let was_empty = doc.as_table().is_empty();
    if was_empty {
        doc = toml_edit::DocumentMut::new();
    }
    let mut outcomes = Vec::with_capacity(values.len());
    for (key, value) in values {
        outcomes.push(set_in(path, &mut doc, key, value)?);
    }
    let text = if was_empty {
        // toml_edit keeps the comments of a file without values as trailing text, so the new
        // value would land above them; keep the original text on top instead.
        let original = decrypted.text();
        let rendered = Zeroizing::new(doc.to_string());
        // Sized up front: a reallocation would leave a copy of the secrets behind unwiped.
        let mut t = Zeroizing::new(String::with_capacity(original.len() + 1 + rendered.len()));
        t.push_str(original);
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t.push_str(&rendered);
        t
    } else {
        Zeroizing::new(doc.to_string())
    };
    drop(doc);
    Secrets::parse(path, &text)?;
    file.write_confirmed(text.as_bytes(), decrypted, confirm)?;
    Ok(outcomes)
}

/// Sets one dotted `key` to `value` inside `doc`.
fn set_in(
    path: &Path,
    doc: &mut toml_edit::DocumentMut,
    key: &str,
    value: &SecretString,
) -> Result<SetOutcome, SecretsError> {
    let keys = parse_key(key)?;
    let (last, parents) = keys.split_last().expect("at least one key part");
    let mut table: &mut dyn toml_edit::TableLike = doc.as_table_mut();
    for (i, part) in parents.iter().enumerate() {
        let name = part.get();
        let item = table.entry(name).or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            // Implicit: no empty `[a]` header is written for a table holding only a subtable.
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        });
        table = item
            .as_table_like_mut()
            .ok_or_else(|| SecretsError::NotATable {
                path: path.to_path_buf(),
                key: dotted(&keys[..=i]),
                full: key.to_string(),
            })?;
    }
    if table.get(last.get()).is_some_and(|i| i.is_table_like()) {
        return Err(SecretsError::BadKey {
            key: key.to_string(),
            reason: format!(
                "it is a table in {}; set a key inside it, or `provision secrets rm` it first",
                path.display()
            ),
        });
    }
    // After the key's checks: a wrong key is the first thing to fix.
    let chars = value.expose_secret().chars().count();
    if chars < crate::MIN_VALUE_CHARS {
        return Err(SecretsError::TooShort {
            path: path.to_path_buf(),
            values: vec![crate::ShortValue {
                name: key.to_string(),
                line: None,
                chars,
            }],
        });
    }
    let mut new_value = toml_edit::Value::from(value.expose_secret());
    Ok(match table.get_mut(last.get()) {
        // Replace in place: `insert` would also drop the comments around the old entry.
        Some(toml_edit::Item::Value(old)) => {
            *new_value.decor_mut() = old.decor().clone();
            *old = new_value;
            SetOutcome::Replaced
        }
        _ => {
            table.insert(last.get(), toml_edit::Item::Value(new_value));
            SetOutcome::Added
        }
    })
}

/// Removes `key` (dotted) from the file.
pub fn remove(
    path: &Path,
    ids: &IdentitySources,
    key: &str,
    confirm: bool,
) -> Result<(), SecretsError> {
    let file = SecretsFile::new(path);
    let decrypted = file.decrypt(ids)?;
    let mut doc = parse_for_update(path, decrypted.text())?;
    let keys = parse_key(key)?;
    let not_found = || SecretsError::KeyNotFound {
        path: path.to_path_buf(),
        key: key.to_string(),
    };
    remove_path(doc.as_table_mut(), &keys).ok_or_else(not_found)?;
    let text = Zeroizing::new(doc.to_string());
    drop(doc);
    Secrets::parse(path, &text)?;
    file.write_confirmed(text.as_bytes(), &decrypted, confirm)
}

/// Removes the value at `keys`, then the parent tables this left empty (a `[db]` header with
/// nothing under it is noise). None if there is no such key.
fn remove_path(table: &mut dyn toml_edit::TableLike, keys: &[toml_edit::Key]) -> Option<()> {
    let (first, rest) = keys.split_first()?;
    if rest.is_empty() {
        return table.remove(first.get()).map(drop);
    }
    let child = table.get_mut(first.get())?.as_table_like_mut()?;
    remove_path(child, rest)?;
    if child.is_empty() {
        table.remove(first.get());
    }
    Some(())
}

fn parse_for_update(path: &Path, text: &str) -> Result<toml_edit::DocumentMut, SecretsError> {
    // Validate with the same parser as everything else, for the same (text-free) error.
    Secrets::parse(path, text)?;
    text.parse::<toml_edit::DocumentMut>()
        .map_err(|_| SecretsError::InvalidToml {
            path: path.to_path_buf(),
            message: "cannot be edited in place".into(),
            line: 1,
            column: 1,
        })
}

/// A dotted key (`db.password`, TOML quoting allowed) split into its parts.
fn parse_key(key: &str) -> Result<Vec<toml_edit::Key>, SecretsError> {
    let keys = toml_edit::Key::parse(key).map_err(|e| SecretsError::BadKey {
        key: key.to_string(),
        reason: e.message().trim().to_string(),
    })?;
    if keys.is_empty() {
        return Err(SecretsError::BadKey {
            key: key.to_string(),
            reason: "empty".into(),
        });
    }
    Ok(keys)
}

fn dotted(keys: &[toml_edit::Key]) -> String {
    keys.iter().map(|k| k.get()).collect::<Vec<_>>().join(".")
}

/// What a change of recipients did.
#[derive(Debug, Clone)]
pub struct RecipientsChange {
    /// The key added or removed.
    pub key: RecipientKey,
    /// How many recipients the file is now encrypted to.
    pub recipients: usize,
    /// Whether the identities used for this command can still decrypt the file (false after a
    /// user removed their own key).
    pub still_readable: bool,
}

/// Adds a recipient to the recipients file and re-encrypts the secrets file to all of them.
pub fn recipients_add(
    path: &Path,
    ids: &IdentitySources,
    key: RecipientKey,
    name: Option<&str>,
) -> Result<RecipientsChange, SecretsError> {
    change_recipients(path, ids, |list| {
        list.add(key.clone(), name)?;
        Ok(key.clone())
    })
}

/// Removes a recipient (by public key, ssh comment or `# name` label) and re-encrypts the
/// secrets file so the removed key can no longer decrypt this version of it.
pub fn recipients_remove(
    path: &Path,
    ids: &IdentitySources,
    query: &str,
) -> Result<RecipientsChange, SecretsError> {
    change_recipients(path, ids, |list| list.remove(query))
}

fn change_recipients(
    path: &Path,
    ids: &IdentitySources,
    change: impl FnOnce(&mut RecipientsFile) -> Result<RecipientKey, SecretsError>,
) -> Result<RecipientsChange, SecretsError> {
    let file = SecretsFile::new(path);
    let decrypted = file.decrypt(ids)?;
    if let EncryptionMode::Passphrase(_) = decrypted.mode() {
        return Err(SecretsError::PassphraseMode {
            path: path.to_path_buf(),
        });
    }
    let recipients_path = file.recipients_path();
    // Without the list, re-encrypting would drop every recipient not named in this command
    // (age files do not record x25519 public keys), so it must exist.
    let mut list = RecipientsFile::load(&recipients_path)?;
    let key = change(&mut list)?;
    let keys = list.require_keys()?;
    // This command is the confirmation of the new list: it is recorded as is.
    let encrypted = crate::crypto::encrypt(
        path,
        &crate::file::with_record(decrypted.text().as_bytes(), &keys),
        crate::crypto::Target::Keys(&keys),
    )?;
    // Checked without prompting: only informs the caller.
    let mut quiet = ids.clone();
    quiet.prompt = false;
    let still_readable = file.decrypt_bytes(&encrypted, &quiet).is_ok();
    crate::atomic::write_atomic(path, &encrypted, 0o644)?;
    list.save()?;
    Ok(RecipientsChange {
        key,
        recipients: keys.len(),
        still_readable,
    })
}

/// The keys of the recipients file next to a secrets file.
pub fn recipients_list(path: &Path) -> Result<Vec<RecipientKey>, SecretsError> {
    let list = RecipientsFile::load(&RecipientsFile::path_for(path))?;
    Ok(list.keys().into_iter().cloned().collect())
}

/// One file `rotate` re-encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub path: PathBuf,
    /// Recipients it is now encrypted to; `None` for a passphrase file (re-encrypted with the
    /// same passphrase and a fresh file key).
    pub recipients: Option<usize>,
    /// A swarm backup (binary), re-encrypted to the recipients of `recipients_from`.
    pub backup_of: Option<PathBuf>,
}

/// What `rotate` did: every file is either re-encrypted or named with why it was not.
#[derive(Debug, Default)]
pub struct RotateReport {
    pub rotated: Vec<Rotated>,
    pub skipped: Vec<(PathBuf, String)>,
}

/// Re-encrypts every file to its current recipients (with a fresh file key): secrets files,
/// and swarm backups (binary age files, re-encrypted byte for byte to the recipients of the
/// secrets file in the same directory). All files are decrypted before any is written; one that
/// cannot be decrypted (or whose recipients cannot be told) is skipped and named with the
/// reason, the others are rotated. Files keep their permissions.
/// `confirm`: the recipients files may have changed since the files were last written (the
/// usual reason to rotate); without it such a file is skipped, naming the keys.
pub fn rotate(
    paths: &[PathBuf],
    ids: &IdentitySources,
    confirm: bool,
) -> Result<RotateReport, SecretsError> {
    enum Kind {
        Text(Decrypted),
        Binary(Zeroizing<Vec<u8>>),
    }
    let mut report = RotateReport::default();
    let mut opened = Vec::new();
    for path in paths {
        let file = SecretsFile::new(path);
        let bytes = match file.read_encrypted() {
            Ok(b) => b,
            Err(e) => {
                report.skipped.push((path.clone(), e.to_string()));
                continue;
            }
        };
        match file.decrypt_bytes(&bytes, ids) {
            Ok(d) => match Secrets::parse(path, d.text()) {
                Ok(_) => opened.push((path.clone(), Kind::Text(d))),
                Err(e) => report.skipped.push((path.clone(), e.to_string())),
            },
            Err(SecretsError::NotUtf8 { .. }) => match file.decrypt_binary(&bytes, ids) {
                Ok(b) => opened.push((path.clone(), Kind::Binary(b))),
                Err(e) => report.skipped.push((path.clone(), e.to_string())),
            },
            Err(e) => report.skipped.push((path.clone(), e.to_string())),
        }
    }
    // Binary files (backups) are encrypted to the secrets' recipients: those of the one
    // secrets file of the same directory.
    let secrets_in = |dir: Option<&Path>| -> Vec<PathBuf> {
        opened
            .iter()
            .filter(|(p, k)| matches!(k, Kind::Text(_)) && p.parent() == dir)
            .map(|(p, _)| p.clone())
            .collect()
    };
    let mut plans = Vec::new();
    for (path, kind) in &opened {
        let file = SecretsFile::new(path);
        let planned = match kind {
            Kind::Text(d) => d
                .require_confirmed(&file, confirm)
                .and_then(|()| file.encrypt_text(d.text().as_bytes(), d.mode()))
                .and_then(|enc| {
                    let recipients = match d.mode() {
                        EncryptionMode::Recipients => Some(recipients_list(path)?.len()),
                        EncryptionMode::Passphrase(_) => None,
                    };
                    Ok((enc, recipients, None))
                })
                .map_err(|e| e.to_string()),
            Kind::Binary(plain) => {
                let own = file.recipients_path();
                let source = if own.exists() {
                    Some(path.clone())
                } else {
                    match secrets_in(path.parent()).as_slice() {
                        [one] => Some(one.clone()),
                        _ => None,
                    }
                };
                match source {
                    None => Err(format!(
                        "it is binary (a swarm backup?) and whose recipients it belongs to cannot be told: rotate it together with exactly one secrets file of {}",
                        path.parent().unwrap_or(Path::new(".")).display()
                    )),
                    Some(src) => SecretsFile::new(&src)
                        .encrypt(plain, &EncryptionMode::Recipients)
                        .and_then(|enc| {
                            let n = recipients_list(&src)?.len();
                            Ok((enc, Some(n), Some(src)))
                        })
                        .map_err(|e| e.to_string()),
                }
            }
        };
        match planned {
            Ok((enc, recipients, backup_of)) => {
                plans.push((path.clone(), enc, recipients, backup_of))
            }
            Err(e) => report.skipped.push((path.clone(), e)),
        }
    }
    for (path, encrypted, recipients, backup_of) in plans {
        crate::atomic::write_atomic(&path, &encrypted, 0o644)?;
        report.rotated.push(Rotated {
            path,
            recipients,
            backup_of,
        });
    }
    Ok(report)
}

/// The `*.age` files directly in `dir`, sorted (what `rotate` does without arguments).
pub fn find_secrets_files(dir: &Path) -> Result<Vec<PathBuf>, SecretsError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SecretsError::io("list", dir, e))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "age"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(SecretsError::NoFiles {
            dir: dir.to_path_buf(),
        });
    }
    Ok(found)
}

/// A new random secret of `bytes` bytes of entropy, as hex (valid in any file format and
/// 2 x `bytes` characters long).
pub fn generate_value(bytes: usize) -> Result<SecretString, SecretsError> {
    crate::generate(bytes * 2, crate::Alphabet::Hex)
}

/// Reads a secret value for `set`: from the terminal without echo when stdin is one, else all
/// of stdin. One trailing newline is dropped (what `echo` and heredocs add) unless
/// `keep_newline`.
pub fn read_value(prompt: &str, keep_newline: bool) -> Result<SecretString, SecretsError> {
    use std::io::{IsTerminal as _, Read as _};
    let stdin = std::io::stdin();
    let stdin_path = Path::new("<stdin>");
    let value = if stdin.is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password(prompt)
                .map_err(|e| SecretsError::io("read a value from", stdin_path, e))?,
        )
    } else {
        let mut buf = Zeroizing::new(String::new());
        stdin
            .lock()
            .read_to_string(&mut buf)
            .map_err(|e| SecretsError::io("read a value from", stdin_path, e))?;
        buf
    };
    let mut end = value.len();
    if !keep_newline {
        if value.ends_with("\r\n") {
            end -= 2;
        } else if value.ends_with('\n') {
            end -= 1;
        }
    }
    // Copied into an exactly sized secret box; `value` wipes its whole buffer on drop.
    Ok(SecretString::from(&value[..end]))
}
