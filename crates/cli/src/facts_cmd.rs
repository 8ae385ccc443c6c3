//! `provision facts`: what each step of the playbook reads on each host (its fact command's
//! output, cleaned of secrets) and what it would decide from it, without changing anything.
//! `--save DIR` keeps the outputs as files: how the steps' parser fixtures are captured from
//! real hosts (`crates/playbook/tests/fixtures/facts/`).

use crate::cluster::{load, runtime};
use crate::exit::ok_or_failed;
use crate::playbook::{Builtin, compile};
use anyhow::{Context, Result};
use provision_engine::step::{Check, Facts};
use provision_transport::{Command, Transport};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// As long as a run gives a fact command.
const GATHER_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(clap::Args, Debug)]
pub struct FactsArgs {
    pub cluster: PathBuf,
    /// Only the steps whose name contains this (repeatable).
    #[arg(long)]
    pub step: Vec<String>,
    /// Only these hosts (names, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub host: Vec<String>,
    /// Also write each output to DIR/NN-STEP/HOST.json (the step's name, the host, the
    /// command, its exit status and output, secrets hidden).
    #[arg(long)]
    pub save: Option<PathBuf>,
    #[arg(long, env = "PROVISION_IDENTITY")]
    pub identity: Option<PathBuf>,
}

/// `NN-step-name`: the directory of a step's captures, in playbook order.
fn step_dir(index: usize, title: &str) -> String {
    let words: Vec<String> = title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    format!("{:02}-{}", index + 1, words.join("-"))
}

fn decision(check: &Result<Check, provision_engine::step::StepError>) -> String {
    match check {
        Ok(Check::Ok(why)) => format!("nothing to do: {why}"),
        Ok(Check::Change(changes)) => format!(
            "would change: {}",
            changes
                .iter()
                .map(|c| c.summary.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("error: {e}"),
    }
}

fn save(dir: &Path, index: usize, title: &str, host: &str, cmd: &str, f: &Facts) -> Result<()> {
    let dir = dir.join(step_dir(index, title));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Cleaned here, before the file: a join token gathered from a manager never reaches it.
    let command = crate::term::clean(cmd);
    let stdout = crate::term::clean(&f.stdout);
    // As pyinfra keeps its fact fixtures: JSON, one file each.
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "step": title,
        "host": host,
        "command": command.as_str(),
        "exit_status": f.exit_status,
        "stdout": stdout.as_str(),
    }))? + "\n";
    let path = dir.join(format!("{host}.json"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

pub fn facts(args: FactsArgs) -> Result<u8> {
    let loaded = load(&args.cluster, args.identity.clone(), None)?;
    // Reads only: the built-in playbook from a scratch directory, as check-config.
    let scratch = tempfile::Builder::new()
        .prefix("provision-facts-")
        .tempdir()
        .context("cannot create a scratch directory for the built-in playbook")?;
    let compiled = compile(&loaded, Builtin::Scratch(scratch.path()))?;
    let (pool, targets) = loaded.connect()?;
    let wanted = |h: &str| args.host.is_empty() || args.host.iter().any(|w| w == h);
    let rt = runtime()?;
    let mut failed = 0;
    for (index, step) in compiled.steps.iter().enumerate() {
        let title = step.title();
        if !args.step.is_empty() && !args.step.iter().any(|s| title.contains(s.as_str())) {
            continue;
        }
        let mut hosts = step.targets();
        hosts.extend(step.fact_hosts());
        hosts.sort();
        hosts.dedup();
        let gathered: Vec<(String, String, Result<Facts, String>)> = rt.block_on(async {
            let futs = hosts.iter().filter(|h| wanted(h)).filter_map(|h| {
                let cmd = step.gather(h)?;
                // A step that runs `on` another host for `h` reads that host.
                let at = step.delegate(h).unwrap_or(h);
                let target = targets.iter().find(|t| t.name == at)?.clone();
                let pool = pool.clone();
                Some(async move {
                    let res = match pool.session(&target).await {
                        Ok(s) => s
                            .run(Command::new(cmd.clone()).timeout(GATHER_TIMEOUT))
                            .await
                            .map(|o| Facts {
                                stdout: o.stdout_str().to_string(),
                                exit_status: o.exit_status,
                                ..Default::default()
                            })
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    (h.clone(), cmd, res)
                })
            });
            futures::future::join_all(futs).await
        });
        // What the step declares secret in its facts (join tokens) is hidden from here on.
        for (h, _, res) in &gathered {
            if let Ok(f) = res {
                let secret = step.secret_values(h, f);
                if !secret.is_empty() {
                    crate::term::learn(&provision_secrets::Redactor::new(
                        secret.iter().map(String::as_str),
                    ));
                }
            }
        }
        let facts: BTreeMap<String, Facts> = gathered
            .iter()
            .filter_map(|(h, _, r)| Some((h.clone(), r.as_ref().ok()?.clone())))
            .collect();
        let plan = step.plan(&facts);
        show!("== {title}");
        for (h, cmd, res) in &gathered {
            match res {
                Ok(f) => {
                    let on = step
                        .delegate(h)
                        .map(|d| format!(" (on {d})"))
                        .unwrap_or_default();
                    show!(
                        "-- {h}{on} (exit {})",
                        f.exit_status.map_or("?".to_string(), |c| c.to_string())
                    );
                    crate::term::out(&f.stdout);
                    if !f.stdout.ends_with('\n') && !f.stdout.is_empty() {
                        show!("");
                    }
                    if let Some(c) = plan.hosts.get(h) {
                        show!("   {}", decision(c));
                    }
                    if let Some(dir) = &args.save {
                        save(dir, index, title, h, cmd, f)?;
                    }
                }
                Err(e) => {
                    failed += 1;
                    show!("-- {h} (error)\n{e}");
                }
            }
        }
    }
    if let Some(dir) = &args.save {
        say!("saved under {}", dir.display());
    }
    Ok(ok_or_failed(failed == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_are_filed_by_step_number_and_name() {
        assert_eq!(step_dir(0, "swap file"), "01-swap-file");
        assert_eq!(
            step_dir(11, "appwrite tls: certificate"),
            "12-appwrite-tls-certificate"
        );
    }
}
