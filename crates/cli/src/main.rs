//! The `provision` command line: parses arguments and hands each command group to its module
//! (`run_cmd`, `facts_cmd`, `ops_cmd`, `secrets_cmd`, `lab_cmd`); `cluster` opens a cluster for them,
//! `exit` maps what they return to the process's exit code.

#[macro_use]
mod term;
mod ansible;
mod builtin;
mod cluster;
mod exit;
mod facts_cmd;
mod lab_cmd;
mod ops_cmd;
mod playbook;
mod render;
mod run_cmd;
mod secrets_cmd;
mod state_dir;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "provision",
    version,
    about = "Bare Linux servers to a production Docker Swarm, over SSH alone"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the cluster's playbook: every step on its hosts, in order, idempotently.
    Run(run_cmd::RunArgs),
    /// Validate the inventory, playbook, templates and secrets offline.
    CheckConfig(run_cmd::CheckConfigArgs),
    /// Run an ad-hoc command on hosts in parallel and print the output per host.
    Shell(run_cmd::ShellArgs),
    /// Show what each step reads on each host and what it would decide (changes nothing).
    Facts(facts_cmd::FactsArgs),
    /// Manage age-encrypted secrets files.
    #[command(subcommand)]
    Secrets(secrets_cmd::SecretsCommand),
    /// Local lab of real Debian VMs to rehearse a cluster.
    #[command(subcommand)]
    Lab(lab_cmd::LabCommand),
    #[command(flatten)]
    Ops(ops_cmd::OpsCommand),
    /// Convert an Ansible playbook (and inventory) to provision TOML; names what it cannot.
    ImportAnsible(ansible::ImportArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

/// One SSH connection per host stays open for the whole run: lift the soft
/// limit on open files (often 1024) to the hard limit so that large fleets do
/// not fail with EMFILE.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> ExitCode {
    raise_nofile_limit();
    // A panic's message leaves the process too: through the same redaction as the rest.
    std::panic::set_hook(Box::new(|info| {
        term::err_line(&format!(
            "provision: internal error: {info}\n  hint: this is a bug; please report it with the command you ran"
        ))
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run_cmd::run(a),
        Command::CheckConfig(a) => run_cmd::check_config(a),
        Command::Shell(a) => run_cmd::shell(a),
        Command::Facts(a) => facts_cmd::facts(a),
        Command::ImportAnsible(a) => ansible::run(a),
        Command::Secrets(cmd) => secrets_cmd::run(cmd),
        Command::Lab(cmd) => lab_cmd::run(cmd),
        Command::Ops(cmd) => ops_cmd::run(cmd),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "provision", &mut term::stdout());
            Ok(0)
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut term::stdout())
            .map(|_| 0)
            .map_err(Into::into),
    };
    exit::finish(result)
}
