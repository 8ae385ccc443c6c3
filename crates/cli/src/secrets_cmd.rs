//! `provision secrets ...`: thin CLI layer over the provision-secrets crate.

use std::path::{Path, PathBuf};

use crate::exit::ok_or_failed;
use clap::{Args, Subcommand};
use provision_secrets::{self as secrets, EditOutcome, IdentitySources, SecretsError};

#[derive(Args, Debug, Clone)]
pub struct IdentityArg {
    /// Private key to decrypt with (age identity file or ssh private key). Also looked in:
    /// $PROVISION_IDENTITY, ~/.config/provision/keys.txt, ~/.ssh/id_ed25519, ~/.ssh/id_rsa.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    identity: Option<PathBuf>,
}

impl IdentityArg {
    fn sources(&self) -> IdentitySources {
        IdentitySources::from_env(self.identity.clone())
    }
}

#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Create a key pair if you have none, a recipients file and an encrypted secrets file.
    ///
    /// On an existing secrets file, only makes sure you have a key and prints your public key
    /// to send to a teammate who can decrypt it.
    Init {
        /// The secrets file to create.
        #[arg(default_value = "secrets.age")]
        file: PathBuf,
        /// Also encrypt to this public key (age1..., ssh-ed25519/ssh-rsa, or a .pub file); repeatable.
        #[arg(short = 'r', long = "recipient", value_name = "KEY")]
        recipients: Vec<String>,
        /// Encrypt with a passphrase instead of keys (single user); read from
        /// $PROVISION_SECRETS_PASSPHRASE or asked on the terminal.
        #[arg(long, conflicts_with = "recipients")]
        passphrase: bool,
        #[command(flatten)]
        id: IdentityArg,
    },
    /// Edit in $VISUAL / $EDITOR; saved re-encrypted to every recipient.
    Edit {
        file: PathBuf,
        /// Write even though the recipients file changed since the file was last written
        /// (check the keys it names first).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        id: IdentityArg,
    },
    /// Print the decrypted TOML.
    View {
        file: PathBuf,
        #[command(flatten)]
        id: IdentityArg,
    },
    /// Set KEY (dotted, e.g. db.password) to a value read from stdin, never from arguments.
    Set {
        file: PathBuf,
        key: String,
        /// Keep the trailing newline of the value read from stdin.
        #[arg(long)]
        keep_newline: bool,
        /// Write even though the recipients file changed since the file was last written
        /// (check the keys it names first).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        id: IdentityArg,
    },
    /// Remove KEY (dotted).
    Rm {
        file: PathBuf,
        key: String,
        /// Write even though the recipients file changed since the file was last written
        /// (check the keys it names first).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        id: IdentityArg,
    },
    /// Manage who can decrypt a secrets file (FILE.recipients next to it).
    #[command(subcommand)]
    Recipients(RecipientsCommand),
    /// Re-encrypt secrets files to their current recipients (default: every *.age file here).
    Rotate {
        files: Vec<PathBuf>,
        /// Re-encrypt to recipients files that changed since the last write (the usual reason
        /// to rotate after editing them by hand); without it those files are skipped, naming
        /// the keys.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        id: IdentityArg,
    },
    /// Create every secret the playbook declares that is missing from the cluster's secrets
    /// file: random values from the OS, never printed; existing values are kept.
    Generate {
        /// The cluster file (its `secrets` names the file; its playbook declares the secrets).
        cluster: PathBuf,
        /// Read the declarations from this playbook instead of the one the cluster file names.
        #[arg(long)]
        playbook: Option<PathBuf>,
        /// Write even though the recipients file changed since the file was last written
        /// (check the keys it names first).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        id: IdentityArg,
    },
    /// Print the decrypted TOML for `git diff` (opt in through .gitattributes, see the README).
    Textconv {
        file: PathBuf,
        #[command(flatten)]
        id: IdentityArg,
    },
}

#[derive(Subcommand)]
pub enum RecipientsCommand {
    /// Add a public key (age1..., ssh-ed25519/ssh-rsa key, or a .pub file) and re-encrypt.
    Add {
        file: PathBuf,
        key: String,
        /// A name written as a comment above the key.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        id: IdentityArg,
    },
    /// Remove a key (by key, ssh comment or name) and re-encrypt without it.
    Remove {
        file: PathBuf,
        key: String,
        #[command(flatten)]
        id: IdentityArg,
    },
    /// List the keys of the recipients file.
    List { file: PathBuf },
}

pub fn run(cmd: SecretsCommand) -> anyhow::Result<u8> {
    if let SecretsCommand::Generate {
        cluster,
        playbook,
        yes,
        id,
    } = cmd
    {
        return generate(&cluster, playbook.as_deref(), yes, &id.sources());
    }
    execute(cmd).or_else(crate::exit::secrets)
}

fn execute(cmd: SecretsCommand) -> Result<u8, SecretsError> {
    match cmd {
        SecretsCommand::Init {
            file,
            recipients,
            passphrase,
            id,
        } => init(&file, &recipients, passphrase, &id.sources()),
        SecretsCommand::Edit { file, yes, id } => {
            let opts = secrets::EditOptions {
                confirm_recipients: yes,
                ..secrets::EditOptions::from_env(crate::term::err_line)
            };
            let outcome = secrets::edit(&file, &id.sources(), &opts)?;
            match outcome {
                EditOutcome::Unchanged => {
                    say!("no changes; {} left untouched", file.display())
                }
                EditOutcome::Saved => say!("saved {}", file.display()),
            }
            Ok(0)
        }
        SecretsCommand::Generate { .. } => unreachable!("handled by run"),
        SecretsCommand::View { file, id } | SecretsCommand::Textconv { file, id } => {
            let decrypted = secrets::view(&file, &id.sources())?;
            crate::term::secret_to_stdout(decrypted.text().as_bytes());
            Ok(0)
        }
        SecretsCommand::Set {
            file,
            key,
            keep_newline,
            yes,
            id,
        } => {
            // Decrypt first: no point typing a secret into a file you cannot open, or one
            // that would not be written (changed recipients), and a passphrase is asked for once.
            let sf = secrets::SecretsFile::new(&file);
            let decrypted = sf.decrypt(&id.sources())?;
            decrypted.require_confirmed(&sf, yes)?;
            let value = secrets::read_value(&format!("value for {key}: "), keep_newline)?;
            let outcome = secrets::set_decrypted(&file, &decrypted, &key, &value, yes)?;
            let verb = match outcome {
                secrets::SetOutcome::Added => "added",
                secrets::SetOutcome::Replaced => "updated",
            };
            say!("{verb} {key} in {}", file.display());
            Ok(0)
        }
        SecretsCommand::Rm { file, key, yes, id } => {
            secrets::remove(&file, &id.sources(), &key, yes)?;
            say!("removed {key} from {}", file.display());
            Ok(0)
        }
        SecretsCommand::Recipients(RecipientsCommand::Add {
            file,
            key,
            name,
            id,
        }) => {
            let key = secrets::resolve_recipient_arg(&key)?;
            let change = secrets::recipients_add(&file, &id.sources(), key, name.as_deref())?;
            say!(
                "added {}; {} re-encrypted to {}",
                change.key.short(),
                file.display(),
                count_recipients(change.recipients)
            );
            Ok(0)
        }
        SecretsCommand::Recipients(RecipientsCommand::Remove { file, key, id }) => {
            let change = secrets::recipients_remove(&file, &id.sources(), &key)?;
            say!(
                "removed {}; {} re-encrypted to {}",
                change.key.short(),
                file.display(),
                count_recipients(change.recipients)
            );
            say!(
                "note: that key could read earlier versions (they are in version control): change the secret values themselves"
            );
            if !change.still_readable {
                say!(
                    "warning: your own keys can no longer decrypt {}",
                    file.display()
                );
            }
            Ok(0)
        }
        SecretsCommand::Recipients(RecipientsCommand::List { file }) => {
            let mut out = String::new();
            for key in secrets::recipients_list(&file)? {
                out.push_str(&key.line());
                out.push('\n');
            }
            crate::term::out(&out);
            Ok(0)
        }
        SecretsCommand::Rotate { files, yes, id } => {
            let files = if files.is_empty() {
                secrets::find_secrets_files(Path::new("."))?
            } else {
                files
            };
            let report = secrets::rotate(&files, &id.sources(), yes)?;
            for done in &report.rotated {
                match (done.recipients, &done.backup_of) {
                    (Some(n), Some(src)) if src != &done.path => say!(
                        "re-encrypted {} (binary: a backup) to {} of {}",
                        done.path.display(),
                        count_recipients(n),
                        src.display()
                    ),
                    (Some(n), _) => say!(
                        "re-encrypted {} to {}",
                        done.path.display(),
                        count_recipients(n)
                    ),
                    (None, _) => {
                        say!("re-encrypted {} with its passphrase", done.path.display())
                    }
                }
            }
            for (path, why) in &report.skipped {
                say!("skipped {}: {why}", path.display());
            }
            // Not everything is re-encrypted: a person must look at what was skipped.
            Ok(ok_or_failed(report.skipped.is_empty()))
        }
    }
}

fn init(
    file: &Path,
    recipients: &[String],
    passphrase: bool,
    ids: &IdentitySources,
) -> Result<u8, SecretsError> {
    let recipients = recipients
        .iter()
        .map(|r| secrets::resolve_recipient_arg(r))
        .collect::<Result<Vec<_>, _>>()?;
    let report = secrets::init(
        file,
        ids,
        &secrets::InitOptions {
            recipients,
            passphrase,
        },
    )?;
    if let Some(key_path) = &report.created_key {
        say!(
            "created a key pair in {} (keep it private and backed up: without it you cannot decrypt)",
            key_path.display()
        );
    }
    if let Some((place, key)) = &report.own_key {
        say!("your public key ({place}): {}", key.line());
    }
    if report.created_recipients {
        say!(
            "created {}",
            secrets::RecipientsFile::path_for(file).display()
        );
    }
    if report.created_file {
        if passphrase {
            say!("created {} (passphrase-encrypted)", file.display());
        } else {
            say!(
                "created {} (encrypted to {})",
                file.display(),
                count_recipients(report.recipients)
            );
        }
        say!(
            "add values with `provision secrets edit {}` or `provision secrets set {} NAME`",
            file.display(),
            file.display()
        );
    } else if let Some((_, key)) = &report.own_key {
        say!(
            "{} already exists and was left unchanged; to get access, ask a teammate who can decrypt it to run:\n  provision secrets recipients add {} '{}'",
            file.display(),
            file.display(),
            key.line()
        );
    }
    Ok(0)
}

/// `secrets generate`: the declared secrets this inventory needs, the missing generated ones
/// made in one write. Exit 0 when every required secret is set afterwards, 1 when some must be
/// set by a person (each named with its command).
fn generate(
    cluster: &Path,
    playbook: Option<&Path>,
    confirm: bool,
    ids: &IdentitySources,
) -> anyhow::Result<u8> {
    use crate::playbook::Builtin;
    use anyhow::Context as _;
    use provision_playbook::declared_secrets::{self, State};

    let inv = crate::cluster::inventory(cluster, playbook)?;
    let Some(file) = inv.secrets.clone() else {
        anyhow::bail!(
            "{} names no secrets file\n  hint: add secrets = \"secrets.age\" to it, run `provision secrets init secrets.age` next to it, then run this again",
            cluster.display()
        );
    };
    if !file.exists() {
        anyhow::bail!(
            "{} does not exist\n  hint: create it with `provision secrets init {}`, then run this again",
            file.display(),
            file.display()
        );
    }
    let sf = secrets::SecretsFile::new(&file);
    let decrypted = sf.decrypt(ids).map_err(|e| anyhow::anyhow!("{e}"))?;
    let current =
        secrets::Secrets::parse(&file, decrypted.text()).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The declarations only: the built-in playbook is read from a scratch directory, nothing
    // is written next to the cluster file.
    let scratch = tempfile::Builder::new()
        .prefix("provision-generate-")
        .tempdir()
        .context("cannot create a scratch directory for the built-in playbook")?;
    let builtin = Builtin::Scratch(scratch.path());
    let pb = crate::playbook::load(&inv, builtin)?;
    let needed = declared_secrets::needed(&inv, &pb, current.table()).map_err(|diagnostics| {
        crate::playbook::errors(builtin)(provision_engine::diagnostic::ConfigError { diagnostics })
    })?;

    let mut made = Vec::new();
    let mut by_hand = Vec::new();
    for (spec, state) in &needed {
        match (state, spec.generate) {
            (State::Present, _) => {}
            (State::NotAString, _) => anyhow::bail!(
                "`{}` in {} is not a string, so it cannot be kept or replaced\n  hint: fix it with `provision secrets edit {}`",
                spec.name,
                file.display(),
                file.display()
            ),
            (State::Missing, Some((length, alphabet))) => {
                made.push((
                    spec,
                    length,
                    alphabet,
                    secrets::generate(length, alphabet).map_err(|e| anyhow::anyhow!("{e}"))?,
                ));
            }
            (State::Missing, None) if spec.required => by_hand.push(spec),
            (State::Missing, None) => {}
        }
    }
    if made.is_empty() {
        say!(
            "nothing to generate: the {} generated secret(s) this cluster needs are in {}",
            needed.iter().filter(|(s, _)| s.generate.is_some()).count(),
            file.display()
        );
    } else {
        let values: Vec<(&str, &secrets::SecretString)> = made
            .iter()
            .map(|(s, _, _, v)| (s.name.as_str(), v))
            .collect();
        secrets::set_all_decrypted(&file, &decrypted, &values, confirm)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (spec, length, alphabet, _) in &made {
            say!(
                "generated {} ({length} random {} characters)",
                spec.name,
                alphabet.name()
            );
        }
        say!(
            "{} written ({} new, existing values kept)",
            file.display(),
            made.len()
        );
    }
    for spec in &by_hand {
        say!(
            "error: required secret `{}` cannot be generated: set it with `provision secrets set {} {}`",
            spec.name,
            file.display(),
            spec.name
        );
    }
    Ok(ok_or_failed(by_hand.is_empty()))
}

fn count_recipients(n: usize) -> String {
    format!("{n} recipient{}", if n == 1 { "" } else { "s" })
}
