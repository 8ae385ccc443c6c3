//! Which playbook a cluster runs (the one its inventory names, or the built-in one) and that
//! playbook compiled against the loaded cluster: shared by `run`, `check-config` and
//! `secrets generate`.

use crate::cluster::Loaded;
use crate::exit::{config_error, config_failure};
use anyhow::{Context, Result};
use provision_engine::diagnostic::ConfigError;
use provision_engine::inventory::{Inventory, InventoryRules};
use provision_engine::playbook_file::PlaybookFile;
use provision_playbook::compile::{FactsSource, SecretsView};
use provision_playbook::select::Selection;
use std::path::{Path, PathBuf};

/// Where the built-in playbook's files are read from when the inventory names no playbook.
#[derive(Clone, Copy)]
pub enum Builtin<'a> {
    /// `.provision/builtin/` next to the cluster file, where users can read them (`run`).
    NextToCluster,
    /// A private scratch directory (`check-config`, which writes nothing next to the cluster).
    Scratch(&'a Path),
}

/// The inventory's playbook, or the built-in swarm playbook.
pub fn playbook_path(inv: &Inventory, builtin: Builtin<'_>) -> Result<PathBuf> {
    match (&inv.playbook, builtin) {
        (Some(p), _) => Ok(p.clone()),
        (None, Builtin::NextToCluster) => {
            crate::builtin::materialize(&inv.dir).with_context(|| {
                format!(
                    "cannot write the built-in playbook under {}",
                    inv.dir.display()
                )
            })
        }
        (None, Builtin::Scratch(dir)) => crate::builtin::write_into(dir)
            .with_context(|| format!("cannot write the built-in playbook under {}", dir.display())),
    }
}

/// Configuration diagnostics as bad input; those in a scratch copy of the built-in files name
/// them as built-in.
pub fn errors(builtin: Builtin<'_>) -> impl Fn(ConfigError) -> anyhow::Error + Copy + '_ {
    move |e| match builtin {
        Builtin::Scratch(dir) => config_error(crate::builtin::name_builtin_files(e, dir)),
        Builtin::NextToCluster => config_error(e),
    }
}

/// The cluster's playbook file, read and checked (steps, secrets declarations), with the files
/// it includes; `include = "builtin:swarm"` reads the built-in playbook from where `builtin`
/// says.
pub fn load(inv: &Inventory, builtin: Builtin<'_>) -> Result<PlaybookFile> {
    let pb_path = playbook_path(inv, builtin)?;
    let builtins = |name: &str| -> std::result::Result<PathBuf, String> {
        if !crate::builtin::NAMES.contains(&name) {
            let prefix = provision_engine::playbook_file::BUILTIN_PREFIX;
            if let Some(m) = provision_engine::diagnostic::did_you_mean(name, crate::builtin::NAMES)
            {
                return Err(format!("did you mean `{prefix}{m}`?"));
            }
            return Err(format!(
                "built-in playbooks: {}",
                crate::builtin::NAMES
                    .iter()
                    .map(|n| format!("{}{n}", provision_engine::playbook_file::BUILTIN_PREFIX))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let written = match builtin {
            Builtin::NextToCluster => crate::builtin::materialize(&inv.dir),
            Builtin::Scratch(dir) => crate::builtin::write_into(dir),
        };
        written.map_err(|e| format!("cannot write the built-in playbook: {e}"))
    };
    PlaybookFile::load_with(&pb_path, &provision_playbook::known_steps(), &builtins)
        .map_err(errors(builtin))
}

/// The cluster's playbook compiled: every step for every host, checked before any connection.
pub fn compile(loaded: &Loaded, builtin: Builtin<'_>) -> Result<provision_playbook::Compiled> {
    compile_file(loaded, builtin, FactsSource::Placeholders).map(|(_, compiled)| compiled)
}

/// The cluster's playbook compiled whole (a bad step is an error whatever is chosen), then only
/// the steps `selection` chooses kept; a selection that does not fit the playbook is bad input.
pub fn compile_chosen(
    loaded: &Loaded,
    builtin: Builtin<'_>,
    selection: &Selection,
) -> Result<(PlaybookFile, provision_playbook::Compiled)> {
    compile_chosen_with_facts(loaded, builtin, selection, FactsSource::Placeholders)
}

/// [`compile_chosen`] with `facts.*` from `facts` (a run's second compile, once it gathered
/// them; its warnings were shown by the first).
pub fn compile_chosen_with_facts(
    loaded: &Loaded,
    builtin: Builtin<'_>,
    selection: &Selection,
    facts: FactsSource<'_>,
) -> Result<(PlaybookFile, provision_playbook::Compiled)> {
    let (pb, mut compiled) = compile_file(loaded, builtin, facts)?;
    let runs = selection
        .decide(&pb)
        .map_err(|e| config_failure(e.to_string()))?;
    compiled.retain_chosen(&runs);
    Ok((pb, compiled))
}

fn compile_file(
    loaded: &Loaded,
    builtin: Builtin<'_>,
    facts: FactsSource<'_>,
) -> Result<(PlaybookFile, provision_playbook::Compiled)> {
    let pb = load(&loaded.inv, builtin)?;
    let config_error = errors(builtin);
    let redactor = loaded.redactor.clone();
    let contains = move |t: &str| redactor.contains_secret(t.as_bytes());
    let view = SecretsView {
        table: loaded.secrets.table(),
        contains_secret: &contains,
    };
    if pb
        .steps
        .iter()
        .any(|s| provision_playbook::registry::cluster_step(&s.uses).is_some())
    {
        // A swarm needs managers and private addresses: check the inventory for that too.
        let rules = InventoryRules {
            require_manager: true,
            require_private_ip: true,
        };
        Inventory::load(&loaded.inv.path, &rules).map_err(config_error)?;
    }
    let compiled = provision_playbook::compile::compile_with_facts(&loaded.inv, &pb, &view, facts)
        .map_err(config_error)?;
    // The inventory's warnings were shown by `load`; the steps' follow them (once a run).
    if let FactsSource::Placeholders = facts {
        for w in compiled.warnings.iter().skip(loaded.inv.warnings.len()) {
            say!("{w}");
        }
    }
    Ok((pb, compiled))
}
