//! `provision lab ...`: thin CLI layer over the provision-lab crate.

use crate::exit::EXIT_DEGRADED;
use anyhow::Context;
use clap::{Args, Subcommand};
use provision_lab::{
    AccelChoice, Lab, LabSpec, LayerName, Progress, Role, UpOptions, VmSpec, VmStatus, image,
    layer, paths, recipe::Recipe,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand)]
pub enum LabCommand {
    /// Boot a lab of bare Debian VMs and write its cluster.toml.
    ///
    /// Without LAB.toml: storage-1, manager-1 and worker-1, or the topology given by
    /// --storage/--managers/--workers.
    Up(UpArgs),
    /// Show each VM: qemu pid, SSH port, private IP, whether sshd answers (exit 3 if any is down).
    Status(Target),
    /// Stop the lab's VMs and remove its state (keeps the cached base image); works on a lab
    /// that failed half-way.
    Down(Target),
    /// Log in to a VM as root with OpenSSH, or run a command there (after `--`).
    Ssh {
        /// VM name, e.g. manager-1.
        vm: String,
        #[command(flatten)]
        target: Target,
        /// Command to run instead of a login shell.
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Power a VM off (like pulling its plug; its disk stays): rehearse a lost node or quorum.
    Stop {
        /// VM name, e.g. manager-2.
        vm: String,
        #[command(flatten)]
        target: Target,
    },
    /// Boot a stopped VM again from its own disk: the server comes back.
    Start {
        vm: String,
        /// Seconds the VM has for its sshd to answer.
        #[arg(long, default_value_t = 900)]
        boot_timeout: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Add a VM to a running lab and rewrite its cluster.toml and known_hosts.
    Add {
        /// Name of the new VM, e.g. worker-2.
        name: String,
        /// Role of the new VM (repeat for several): storage, manager, worker, lb.
        #[arg(long = "role", required = true, value_parser = one_of(Role::ALL.map(Role::as_str), Role::parse))]
        roles: Vec<Role>,
        /// Memory in MiB.
        #[arg(long, default_value_t = provision_lab::spec::DEFAULT_MEMORY_MIB)]
        memory: u32,
        #[arg(long, default_value_t = provision_lab::spec::DEFAULT_CPUS)]
        cpus: u32,
        /// Seconds the VM has for its sshd to answer.
        #[arg(long, default_value_t = 300)]
        boot_timeout: u64,
        /// Image layer the new VM starts from (default: the lab's own); `ready` for a node
        /// joining a swarm whose subject is not the install.
        #[arg(long, value_parser = one_of(LayerName::ALL.map(LayerName::as_str), LayerName::parse))]
        layer: Option<LayerName>,
        #[command(flatten)]
        target: Target,
    },
    /// List the cached image layers (key, layer, size, age, whether current or in use), or
    /// remove those no lab uses and no current build would pick (--prune).
    Images {
        /// Remove every layer that is neither current nor used by a lab in the state directory.
        #[arg(long)]
        prune: bool,
        /// Cache root (layers live in DIR/images/).
        #[arg(long, env = paths::ENV_CACHE_DIR)]
        cache_dir: Option<PathBuf>,
    },
    /// Build the cached base image only (needs root; `lab up` does it when needed).
    Image {
        /// Debian mirror (default $PROVISION_LAB_MIRROR, else http://deb.debian.org/debian).
        #[arg(long)]
        mirror: Option<String>,
        /// Cache root (images go to DIR/images/<recipe-hash>/).
        #[arg(long, env = paths::ENV_CACHE_DIR)]
        cache_dir: Option<PathBuf>,
    },
}

/// Which lab a command acts on.
#[derive(Args)]
pub struct Target {
    /// Lab name: its state is in $XDG_STATE_HOME/provision/labs/NAME.
    #[arg(long = "lab", default_value = "lab")]
    lab: String,
    /// The lab's state directory (overrides --lab).
    #[arg(long, env = paths::ENV_LAB_DIR)]
    dir: Option<PathBuf>,
}

impl Target {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        Ok(paths::lab_dir(self.dir.as_deref(), &self.lab)?)
    }
}

#[derive(Args)]
pub struct UpArgs {
    /// LAB.toml describing the lab (see crates/lab/README.md).
    file: Option<PathBuf>,
    /// Storage (NFS) hosts of a generated topology (default 1 when any count is given).
    #[arg(long, conflicts_with = "file")]
    storage: Option<u32>,
    /// Managers of a generated topology (default 1 when any count is given).
    #[arg(long, conflicts_with = "file")]
    managers: Option<u32>,
    /// Workers of a generated topology (default 1 when any count is given).
    #[arg(long, conflicts_with = "file")]
    workers: Option<u32>,
    /// Memory of every VM in MiB (default: LAB.toml's, else 1536).
    #[arg(long)]
    memory: Option<u32>,
    /// CPUs of every VM (default: LAB.toml's, else 1).
    #[arg(long)]
    cpus: Option<u32>,
    /// Lab name (default: LAB.toml's, else "lab").
    #[arg(long = "lab")]
    lab: Option<String>,
    /// State directory (default $XDG_STATE_HOME/provision/labs/NAME).
    #[arg(long, env = paths::ENV_LAB_DIR)]
    dir: Option<PathBuf>,
    /// Cache root for base images.
    #[arg(long, env = paths::ENV_CACHE_DIR)]
    cache_dir: Option<PathBuf>,
    /// Debian mirror for building the base image (default $PROVISION_LAB_MIRROR, else deb.debian.org).
    #[arg(long)]
    mirror: Option<String>,
    /// kvm, tcg or auto (probe KVM, fall back to TCG).
    #[arg(long, env = provision_lab::accel::ENV_ACCEL, value_parser = one_of(["auto", "kvm", "tcg"], |s| AccelChoice::parse(s).ok()))]
    accel: Option<AccelChoice>,
    /// Seconds each VM has for its sshd to answer.
    #[arg(long, default_value_t = 300)]
    boot_timeout: u64,
    /// Leave the VMs running if `up` fails (default: stop them, keep their console logs).
    #[arg(long)]
    keep_on_failure: bool,
    /// Image layer the VMs start from: bare (Debian only) or ready (Docker and NFS packages
    /// installed by provision's own steps; built once per key). Default: LAB.toml's `layer`,
    /// else bare.
    #[arg(long, value_parser = one_of(LayerName::ALL.map(LayerName::as_str), LayerName::parse))]
    layer: Option<LayerName>,
}

/// A closed set of names parsed to its type: clap checks the name (and words the refusal with
/// the possible values), so `parse` always succeeds.
fn one_of<T: Clone + Send + Sync + 'static, const N: usize>(
    names: [&'static str; N],
    parse: fn(&str) -> Option<T>,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(names)
        .map(move |name: String| parse(&name).expect("clap accepted only the possible values"))
}

/// The ready layer as this binary makes it: its own `run` with the built-in ready playbook.
pub fn ready_layer() -> anyhow::Result<provision_lab::ReadyLayer> {
    let bin = std::env::current_exe().context("cannot find the provision binary")?;
    Ok(provision_lab::ReadyLayer::with_binary(
        provision_playbook::lab_ready::PLAYBOOK,
        provision_playbook::lab_ready::FILES,
        provision_playbook::lab_ready::code_digest(),
        bin,
    ))
}

pub fn run(cmd: LabCommand) -> anyhow::Result<u8> {
    match cmd {
        LabCommand::Up(args) => up(args),
        LabCommand::Status(target) => {
            let lab = Lab::open(&target.resolve()?)?;
            let status = lab.status();
            crate::term::out(&render_status(&lab, &status));
            let healthy = status.iter().all(|s| s.pid.is_some() && s.ssh_answering);
            Ok(if healthy { 0 } else { EXIT_DEGRADED })
        }
        LabCommand::Down(target) => {
            let dir = target.resolve()?;
            let report = provision_lab::down_dir(&dir)?;
            if !report.stopped.is_empty() {
                show!("stopped {}", report.stopped.join(", "));
            }
            if report.removed_dir {
                show!("removed {}", dir.display());
            } else {
                show!(
                    "removed the lab's files; {} holds other files and stays",
                    dir.display()
                );
            }
            Ok(0)
        }
        LabCommand::Ssh { vm, target, cmd } => {
            let lab = Lab::open(&target.resolve()?)?;
            let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let argv = lab.ssh_argv(&vm, &cmd)?;
            exec(&argv)
        }
        LabCommand::Stop { vm, target } => {
            let mut lab = Lab::open(&target.resolve()?)?;
            lab.stop_vm(&vm)?;
            say!("{vm}: powered off (disk kept; `provision lab start {vm}` boots it again)");
            Ok(0)
        }
        LabCommand::Start {
            vm,
            boot_timeout,
            target,
        } => {
            let mut lab = Lab::open(&target.resolve()?)?;
            lab.start_vm(&vm, std::time::Duration::from_secs(boot_timeout))?;
            say!("{vm}: up");
            Ok(0)
        }
        LabCommand::Add {
            name,
            roles,
            memory,
            cpus,
            boot_timeout,
            layer,
            target,
        } => {
            let mut lab = Lab::open(&target.resolve()?)?;
            lab.set_progress(progress());
            let spec = VmSpec {
                name,
                roles,
                memory_mib: memory,
                cpus,
            };
            let timeout = Duration::from_secs(boot_timeout);
            let vm = match layer {
                Some(l @ LayerName::Ready) => {
                    lab.add_vm_from(&spec, timeout, l, Some(&ready_layer()?))?
                }
                Some(l) => lab.add_vm_from(&spec, timeout, l, None)?,
                None => lab.add_vm(&spec, timeout)?,
            }
            .clone();
            show!(
                "added {} (ssh port {}, private ip {}); rewrote {}",
                vm.name,
                vm.ssh_port,
                vm.private_ip,
                lab.cluster_toml_path().display()
            );
            Ok(0)
        }
        LabCommand::Images { prune, cache_dir } => images(prune, cache_dir.as_deref()),
        LabCommand::Image { mirror, cache_dir } => {
            let root = paths::cache_root(cache_dir.as_deref())?;
            let progress = progress();
            let img = image::ensure(&Recipe::new(mirror.as_deref()), &root, &|m| progress.say(m))?;
            show!("{}", img.dir.display());
            Ok(0)
        }
    }
}

fn up(args: UpArgs) -> anyhow::Result<u8> {
    let spec = match &args.file {
        Some(file) => LabSpec::from_file(file)?,
        None if args.storage.is_some() || args.managers.is_some() || args.workers.is_some() => {
            LabSpec::topology(
                args.lab.as_deref().unwrap_or("lab"),
                args.storage.unwrap_or(1),
                args.managers.unwrap_or(1),
                args.workers.unwrap_or(1),
            )?
        }
        None => LabSpec::default_lab(),
    };
    let mut spec = spec.with_resources(args.memory, args.cpus);
    if let Some(name) = &args.lab {
        spec.name = name.clone();
    }
    if let Some(layer) = args.layer {
        spec.layer = layer;
    }
    spec.validate("command line")?;
    let opts = UpOptions {
        dir: args.dir.clone(),
        cache_dir: args.cache_dir.clone(),
        mirror: args.mirror.clone(),
        accel: args.accel,
        boot_timeout: Duration::from_secs(args.boot_timeout),
        keep_on_failure: args.keep_on_failure,
        progress: progress(),
        ready: Some(ready_layer()?),
    };
    let lab = Lab::up(&spec, &opts)?;
    crate::term::out(&render_status(&lab, &lab.status()));
    let hint = target_hint(&lab, args.dir.is_some())?;
    show!("cluster.toml: {}", lab.cluster_toml_path().display());
    if let Some(first) = lab.vms().first() {
        show!("log in:       provision lab ssh {}{hint}", first.name);
    }
    show!("bring down:   provision lab down{hint}");
    Ok(0)
}

/// `lab images [--prune]`: the layers in the cache, which are current, which labs use them.
fn images(prune: bool, cache_dir: Option<&Path>) -> anyhow::Result<u8> {
    let root = paths::cache_root(cache_dir)?;
    let layers = layer::list(&root)?;
    let recipe = Recipe::new(None);
    let current = [
        recipe.hash(),
        layer::ready_key(
            &recipe,
            provision_playbook::lab_ready::PLAYBOOK,
            &provision_playbook::lab_ready::code_digest(),
        ),
    ];
    let used = labs_using_layers();
    let mut keep: Vec<String> = current.to_vec();
    keep.extend(used.iter().map(|(key, _)| key.clone()));
    if prune {
        let plan = layer::prune_plan(&layers, &keep);
        let removed = layer::prune(&root, &plan)?;
        for dir in &removed {
            show!("removed {}", dir.display());
        }
        let freed: u64 = plan
            .iter()
            .filter(|l| removed.contains(&l.dir))
            .map(|l| l.bytes)
            .sum();
        show!(
            "{} layer(s) removed, {} freed; {} kept",
            removed.len(),
            layer::human_bytes(freed),
            layers.len() - removed.len()
        );
        return Ok(0);
    }
    show!("image layers in {}", image::images_dir(&root).display());
    let rows: Vec<[String; 5]> = layers
        .iter()
        .map(|l| {
            let mut notes = Vec::new();
            if current.contains(&l.key) {
                notes.push("current".to_string());
            }
            let labs: Vec<&str> = used
                .iter()
                .filter(|(k, _)| *k == l.key)
                .map(|(_, lab)| lab.as_str())
                .collect();
            if !labs.is_empty() {
                notes.push(format!("used by {}", labs.join(", ")));
            }
            if notes.is_empty() {
                notes.push("unreferenced (--prune removes it)".into());
            }
            [
                l.key.clone(),
                l.layer.map_or("incomplete".into(), |l| l.to_string()),
                layer::human_bytes(l.bytes),
                l.age_secs.map_or("-".into(), layer::human_age),
                notes.join("; "),
            ]
        })
        .collect();
    crate::term::out(&table(&["KEY", "LAYER", "SIZE", "AGE", "STATE"], &rows));
    Ok(0)
}

/// (layer key, lab name) for every lab in the default state directory.
fn labs_using_layers() -> Vec<(String, String)> {
    let Some(labs_dir) = paths::lab_dir(None, "lab")
        .ok()
        .and_then(|d| d.parent().map(Path::to_path_buf))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(labs_dir).into_iter().flatten().flatten() {
        if let Ok(lab) = Lab::open(&e.path()) {
            for key in lab.image_dirs().iter().filter_map(|d| d.file_name()) {
                out.push((key.to_string_lossy().into_owned(), lab.name().to_string()));
            }
        }
    }
    out
}

/// The flags that name this lab again in later commands.
fn target_hint(lab: &Lab, explicit_dir: bool) -> anyhow::Result<String> {
    let default = paths::lab_dir(None, lab.name()).ok();
    if explicit_dir || default.as_deref() != Some(lab.dir()) {
        Ok(format!(" --dir {}", lab.dir().display()))
    } else if lab.name() != "lab" {
        Ok(format!(" --lab {}", lab.name()))
    } else {
        Ok(String::new())
    }
}

/// The status table.
fn render_status(lab: &Lab, status: &[VmStatus]) -> String {
    let mut out = format!(
        "lab `{}` in {} ({})\n",
        lab.name(),
        lab.dir().display(),
        lab.accel().as_str()
    );
    let rows: Vec<[String; 6]> = status
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.ssh_port.to_string(),
                s.private_ip.to_string(),
                if s.ssh_answering { "answering" } else { "no" }.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["VM", "ROLES", "PID", "SSH PORT", "PRIVATE IP", "SSHD"],
        &rows,
    ));
    out
}

/// A header and its rows as one table.
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut all = vec![header.map(String::from).to_vec()];
    all.extend(rows.iter().map(|r| r.to_vec()));
    crate::render::table(&all)
}

/// Replaces this process with ssh so the terminal, signals and exit code are ssh's own.
fn exec(argv: &[String]) -> anyhow::Result<u8> {
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(err).with_context(|| format!("cannot run {}", Path::new(&argv[0]).display()))
}

/// The lab's progress lines (`lab: ...`), through the binary's terminal output.
fn progress() -> Progress {
    Progress::new(|m| crate::term::err_line(&format!("lab: {m}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let rows = [[
            "manager-1".to_string(),
            "manager,lb".into(),
            "4242".into(),
            "22201".into(),
            "10.10.0.12".into(),
            "answering".into(),
        ]];
        assert_eq!(
            table(
                &["VM", "ROLES", "PID", "SSH PORT", "PRIVATE IP", "SSHD"],
                &rows
            ),
            "VM         ROLES       PID   SSH PORT  PRIVATE IP  SSHD\n\
             manager-1  manager,lb  4242  22201     10.10.0.12  answering\n"
        );
    }
}
