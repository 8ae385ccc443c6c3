//! A lab: its VMs under qemu and its one state directory; up, add, status, stop and down.

use crate::accel::{self, Accel, AccelChoice};
use crate::aptcache::{self, AptCache};
use crate::argv::{self, QemuVm};
use crate::error::{LabError, Result};
use crate::hostkeys::{self, HostKey};
use crate::image::{self, Image};
use crate::inventory::{self, InventoryHost};
use crate::layer::{self, ReadyLayer};
use crate::net;
use crate::paths;
use crate::prereq;
use crate::process::{self, command, run};
use crate::recipe::Recipe;
use crate::spec::{LabSpec, LayerName, Role, Subnet, VmSpec};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lab's state file in its directory.
pub const STATE_FILE: &str = "lab.json";
const LOCK_FILE: &str = ".lock";
const KEY_FILE: &str = "id_ed25519";
const STATE_FORMAT: u32 = 1;

/// Default time a VM has for its sshd to answer (TCG on a busy 2-core machine is slow).
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// One VM of a running (or half-started) lab, as recorded in `lab.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub name: String,
    pub roles: Vec<Role>,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Forwarded from 127.0.0.1 to the VM's port 22.
    pub ssh_port: u16,
    /// Address on the lab's private network (eth1).
    pub private_ip: Ipv4Addr,
    /// MAC of the private NIC.
    pub mac: String,
    /// Host keys, once collected.
    #[serde(default)]
    pub host_keys: Vec<HostKey>,
    /// `console` (pinned from the serial console) or `keyscan` (trusted on first use).
    #[serde(default)]
    pub host_keys_from: String,
    /// The layer this VM boots from when it is not the lab's (a VM added from another layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LabState {
    format: u32,
    name: String,
    subnet: String,
    mcast_port: u16,
    image_dir: PathBuf,
    /// The layer `image_dir` holds (labs from before layers booted the bare image).
    #[serde(default)]
    layer: LayerName,
    accel: Accel,
    vms: Vec<Vm>,
    /// The package cache the VMs use ([`AptCache`]'s directory; labs from before it have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    apt_cache: Option<PathBuf>,
}

/// Where progress lines go (stderr by default; tests may silence or collect them).
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(&str) + Send + Sync>);

impl Progress {
    /// Lines prefixed `lab: ` on stderr.
    pub fn stderr() -> Progress {
        Progress(Arc::new(|m| eprintln!("lab: {m}")))
    }
    /// No output.
    pub fn quiet() -> Progress {
        Progress(Arc::new(|_| {}))
    }
    /// A custom sink.
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(f))
    }
    /// Sends one progress line.
    pub fn say(&self, msg: &str) {
        (self.0)(msg)
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::stderr()
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// How `Lab::up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// State directory; None: $PROVISION_LAB_DIR, else the XDG state dir for the lab's name.
    pub dir: Option<PathBuf>,
    /// Cache root; None: $PROVISION_CACHE_DIR, else the XDG cache dir.
    pub cache_dir: Option<PathBuf>,
    /// Debian mirror for the image build; None: $PROVISION_LAB_MIRROR, else deb.debian.org.
    pub mirror: Option<String>,
    /// Accelerator; None: $PROVISION_LAB_ACCEL, else probe.
    pub accel: Option<AccelChoice>,
    /// How long each VM has for its sshd to answer.
    pub boot_timeout: Duration,
    /// Leave the VMs running when `up` fails (default: stop them, keep their console logs).
    pub keep_on_failure: bool,
    pub progress: Progress,
    /// How to build the ready layer when the spec asks for it and it is not cached yet.
    pub ready: Option<ReadyLayer>,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            dir: None,
            cache_dir: None,
            mirror: None,
            accel: None,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            keep_on_failure: false,
            progress: Progress::stderr(),
            ready: None,
        }
    }
}

/// What dropping a `Lab` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrop {
    /// Nothing: the VMs keep running.
    Keep,
    /// Stop the VMs, keep the directory (console logs, state).
    Stop,
    /// Stop the VMs and remove the directory (the image cache stays).
    Down,
}

/// What dropping a `Lab` does, normally and while a panic unwinds (a failing test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropPolicy {
    pub on_success: OnDrop,
    pub on_panic: OnDrop,
}

impl DropPolicy {
    /// Nothing happens on drop (the default; the CLI's labs outlive the command).
    pub const KEEP: DropPolicy = DropPolicy {
        on_success: OnDrop::Keep,
        on_panic: OnDrop::Keep,
    };

    /// For tests: gone after a passing test; after a panic, VMs stopped and the directory with
    /// the console logs kept, its path printed.
    pub const TEST: DropPolicy = DropPolicy {
        on_success: OnDrop::Down,
        on_panic: OnDrop::Stop,
    };
}

/// One VM's live state, for `lab status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStatus {
    pub name: String,
    pub roles: Vec<Role>,
    /// qemu's pid when it is running.
    pub pid: Option<u32>,
    pub ssh_port: u16,
    pub private_ip: Ipv4Addr,
    /// sshd sent its banner just now.
    pub ssh_answering: bool,
}

/// What `down` did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DownReport {
    /// VMs whose qemu was stopped.
    pub stopped: Vec<String>,
    /// Whether the directory itself is gone (it stays if it holds files that are not the lab's).
    pub removed_dir: bool,
}

/// A lab of VMs.
#[derive(Debug)]
pub struct Lab {
    dir: PathBuf,
    state: LabState,
    drop_policy: DropPolicy,
    progress: Progress,
}

/// A held lock on a lab directory; released when dropped.
struct DirLock(#[allow(dead_code)] fs::File);

fn lock_dir(dir: &Path) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    let f = fs::File::create(&path)
        .map_err(|e| LabError::io(format!("cannot create {}", path.display()), e))?;
    match f.try_lock() {
        Ok(()) => Ok(DirLock(f)),
        Err(fs::TryLockError::WouldBlock) => Err(LabError::Busy {
            dir: dir.to_path_buf(),
            lock: path,
        }),
        Err(fs::TryLockError::Error(e)) => {
            Err(LabError::io(format!("cannot lock {}", path.display()), e))
        }
    }
}

/// Writes a file through a temporary name, so readers never see half of it.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let name = path.file_name().expect("file path").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    fs::write(&tmp, text)
        .map_err(|e| LabError::io(format!("cannot write {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| LabError::io(format!("cannot write {}", path.display()), e))
}

impl Lab {
    /// Brings a lab up: checks prerequisites, builds or reuses the base image, boots every VM,
    /// waits for sshd, pins host keys, and writes `cluster.toml` and `known_hosts`.
    pub fn up(spec: &LabSpec, opts: &UpOptions) -> Result<Lab> {
        spec.validate("lab spec")?;
        prereq::check(&prereq::BOOT_PROGRAMS)?;
        let dir = paths::lab_dir(opts.dir.as_deref(), &spec.name)?;
        let cache_root = paths::cache_root(opts.cache_dir.as_deref())?;
        let choice = match opts.accel {
            Some(c) => c,
            None => AccelChoice::from_env()?,
        };
        let recipe = Recipe::new(opts.mirror.as_deref());
        if !image::is_cached(&recipe, &cache_root) {
            prereq::check(&prereq::BUILD_PROGRAMS)?;
        }
        create_private_dir(&dir)?;
        let _lock = lock_dir(&dir)?;
        if live_vms_in(&dir).next().is_some() {
            return Err(LabError::AlreadyUp {
                name: spec.name.clone(),
                dir,
            });
        }
        // Leftovers of an earlier lab here (stopped or failed) would confuse the new one.
        remove_lab_files(&dir)?;
        if let Some(base) = spec.ssh_port_base {
            for i in 0..spec.vms.len() as u16 {
                if !net::tcp_port_free(base + i) {
                    return Err(LabError::PortInUse { port: base + i });
                }
            }
        }
        let progress = opts.progress.clone();
        let base = image::ensure(&recipe, &cache_root, &|m| progress.say(m))?;
        let accel = accel::resolve(choice, &base.kernel(), &cache_root, &|m| progress.say(m));
        let image = layer_image(
            spec.layer,
            (&recipe, base),
            opts.ready.as_ref(),
            &cache_root,
            accel,
            &progress,
            "provision lab up --layer ready",
        )?;

        let key = dir.join(KEY_FILE);
        run(
            &argv::ssh_keygen(&key, &format!("provision-lab-{}", spec.name)),
            "",
        )?;
        let mcast_port = net::free_mcast_port(&HashSet::new())
            .map_err(|e| LabError::io("cannot find a free UDP port", e))?;
        let mut taken = HashSet::new();
        let mut vms = Vec::new();
        for (i, v) in spec.vms.iter().enumerate() {
            let port = match spec.ssh_port_base {
                Some(base) => base + i as u16,
                None => net::free_tcp_port(&taken)
                    .map_err(|e| LabError::io("cannot find a free TCP port", e))?,
            };
            taken.insert(port);
            let ip = spec
                .subnet
                .host(i as u32)
                .expect("spec checked that VMs fit the subnet");
            vms.push(new_vm(v, port, ip));
        }
        let mut lab = Lab {
            dir,
            state: LabState {
                format: STATE_FORMAT,
                name: spec.name.clone(),
                subnet: spec.subnet.to_string(),
                mcast_port,
                image_dir: image.dir.clone(),
                layer: spec.layer,
                accel,
                vms,
                apt_cache: Some(AptCache::new(&cache_root).dir),
            },
            drop_policy: DropPolicy::KEEP,
            progress,
        };
        // State first: a lab that fails from here on can be brought down.
        lab.save()?;
        let all: Vec<usize> = (0..lab.state.vms.len()).collect();
        let booted = lab
            .boot(&all, opts.boot_timeout, spec.ssh_port_base.is_none(), true)
            .and_then(|()| lab.write_inventory());
        if let Err(e) = booted {
            let stopped = !opts.keep_on_failure;
            if stopped {
                let _ = lab.stop();
            }
            return Err(LabError::Up {
                dir: lab.dir.clone(),
                stopped,
                cause: Box::new(e),
            });
        }
        Ok(lab)
    }

    /// Opens the lab whose state is in `dir` (running or not).
    pub fn open(dir: &Path) -> Result<Lab> {
        let dir = paths::absolute(dir)?;
        let state = load_state(&dir)?;
        Ok(Lab {
            dir,
            state,
            drop_policy: DropPolicy::KEEP,
            progress: Progress::stderr(),
        })
    }

    /// Sets what dropping this value does (see `DropPolicy::TEST`).
    pub fn set_drop_policy(&mut self, policy: DropPolicy) {
        self.drop_policy = policy;
    }

    /// Sets where progress lines go.
    pub fn set_progress(&mut self, progress: Progress) {
        self.progress = progress;
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }
    /// The state directory (console logs, keys, inventory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The image layer this lab's VMs boot from, and its directory in the cache.
    pub fn layer(&self) -> (LayerName, &Path) {
        (self.state.layer, &self.state.image_dir)
    }

    /// Every layer directory a VM of this lab boots from: the lab's, then those of VMs added
    /// from another layer (what `lab images --prune` must keep).
    pub fn image_dirs(&self) -> Vec<&Path> {
        let mut dirs = vec![self.state.image_dir.as_path()];
        for d in self.state.vms.iter().filter_map(|v| v.image_dir.as_deref()) {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        dirs
    }

    pub fn accel(&self) -> Accel {
        self.state.accel
    }
    pub fn vms(&self) -> &[Vm] {
        &self.state.vms
    }
    /// A VM by name.
    pub fn vm(&self, name: &str) -> Result<&Vm> {
        self.state
            .vms
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| LabError::UnknownVm {
                name: name.to_string(),
                known: self.state.vms.iter().map(|v| v.name.clone()).collect(),
            })
    }
    pub fn cluster_toml_path(&self) -> PathBuf {
        self.dir.join("cluster.toml")
    }
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    /// The lab's private key (ed25519, no passphrase).
    pub fn identity_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }
    /// The serial console log of a VM: kernel, systemd, first-boot output.
    pub fn console_log(&self, vm: &str) -> PathBuf {
        self.dir.join(format!("{vm}.console"))
    }
    fn pidfile(&self, vm: &str) -> PathBuf {
        self.dir.join(format!("{vm}.pid"))
    }

    /// OpenSSH argv to run `cmd` on a VM as root (no `cmd`: an interactive login).
    pub fn ssh_argv(&self, vm: &str, cmd: &[&str]) -> Result<Vec<String>> {
        let v = self.vm(vm)?;
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        Ok(argv::ssh(
            &self.identity_path(),
            &self.known_hosts_path(),
            v.ssh_port,
            &cmd,
        ))
    }

    /// Runs a shell command on a VM with OpenSSH and returns its output, whatever its exit status.
    pub fn ssh(&self, vm: &str, cmd: &str) -> Result<Output> {
        let argv = self.ssh_argv(vm, &[cmd])?;
        command(&argv)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LabError::io("cannot run ssh", e))
    }

    /// Live state of every VM.
    pub fn status(&self) -> Vec<VmStatus> {
        self.state
            .vms
            .iter()
            .map(|v| {
                let pid = process::live_qemu(&self.pidfile(&v.name));
                VmStatus {
                    name: v.name.clone(),
                    roles: v.roles.clone(),
                    pid,
                    ssh_port: v.ssh_port,
                    private_ip: v.private_ip,
                    ssh_answering: pid.is_some()
                        && net::ssh_answers(v.ssh_port, Duration::from_secs(3)),
                }
            })
            .collect()
    }

    /// Adds a VM to the running lab, boots it, and rewrites `cluster.toml` and `known_hosts`.
    pub fn add_vm(&mut self, spec: &VmSpec, boot_timeout: Duration) -> Result<&Vm> {
        self.add_vm_on(spec, boot_timeout, None)
    }

    /// [`Lab::add_vm`] from a given layer whatever the lab's own (built first when missing;
    /// the ready layer needs `ready`): e.g. a node joining an existing swarm from the ready
    /// layer in a lab whose subject is the bare install.
    pub fn add_vm_from(
        &mut self,
        spec: &VmSpec,
        boot_timeout: Duration,
        layer: LayerName,
        ready: Option<&ReadyLayer>,
    ) -> Result<&Vm> {
        if layer == self.state.layer {
            return self.add_vm(spec, boot_timeout);
        }
        spec.validate("lab add")?;
        let recipe = Recipe::new(None);
        let cache_root = paths::cache_root(None)?;
        let progress = self.progress.clone();
        let base = image::ensure(&recipe, &cache_root, &|m| progress.say(m))?;
        let image = layer_image(
            layer,
            (&recipe, base),
            ready,
            &cache_root,
            self.state.accel,
            &progress,
            "provision lab add --layer ready",
        )?;
        self.add_vm_on(spec, boot_timeout, Some(image.dir))
    }

    fn add_vm_on(
        &mut self,
        spec: &VmSpec,
        boot_timeout: Duration,
        image_dir: Option<PathBuf>,
    ) -> Result<&Vm> {
        spec.validate("lab add")?;
        prereq::check(&prereq::BOOT_PROGRAMS)?;
        let _lock = lock_dir(&self.dir)?;
        if self.state.vms.iter().any(|v| v.name == spec.name) {
            return Err(LabError::VmExists {
                name: spec.name.clone(),
            });
        }
        let image = Image {
            dir: image_dir
                .clone()
                .unwrap_or_else(|| self.state.image_dir.clone()),
        };
        if !image.qcow2().is_file() {
            return Err(LabError::BadPath {
                path: image.dir,
                reason:
                    "the lab's base image is gone from the cache: bring the lab down and up again"
                        .into(),
            });
        }
        let subnet = self.subnet()?;
        let next = self
            .state
            .vms
            .iter()
            .filter_map(|v| subnet.index_of(v.private_ip))
            .max()
            .map_or(0, |i| i + 1);
        let ip = subnet.host(next).ok_or_else(|| {
            LabError::spec(
                "lab add",
                None,
                format!("subnet {subnet} has no address left for another VM"),
            )
        })?;
        let taken: HashSet<u16> = self.state.vms.iter().map(|v| v.ssh_port).collect();
        let port = net::free_tcp_port(&taken)
            .map_err(|e| LabError::io("cannot find a free TCP port", e))?;
        let mut vm = new_vm(spec, port, ip);
        vm.image_dir = image_dir;
        self.state.vms.push(vm);
        let idx = self.state.vms.len() - 1;
        self.save()?;
        let booted = self
            .boot(&[idx], boot_timeout, true, true)
            .and_then(|()| self.write_inventory());
        if let Err(e) = booted {
            // The new VM goes; the lab as it was stays up, and the console log stays for reading.
            let vm = self.state.vms.remove(idx);
            if let Some(pid) = process::live_qemu(&self.pidfile(&vm.name)) {
                let _ = process::kill_and_wait(pid, &format!("qemu of VM `{}`", vm.name));
            }
            let _ = fs::remove_file(self.dir.join(format!("{}.qcow2", vm.name)));
            self.save()?;
            return Err(LabError::Up {
                dir: self.dir.clone(),
                stopped: true,
                cause: Box::new(e),
            });
        }
        Ok(&self.state.vms[idx])
    }

    /// Powers one VM off (qemu killed: like pulling the plug); its disk stays for [`Lab::start_vm`].
    pub fn stop_vm(&mut self, name: &str) -> Result<()> {
        self.vm(name)?;
        if let Some(pid) = process::live_qemu(&self.pidfile(name)) {
            process::kill_and_wait(pid, &format!("qemu of VM `{name}`"))?;
        }
        Ok(())
    }

    /// Boots a VM stopped by [`Lab::stop_vm`] again, from its own disk: a server coming back.
    pub fn start_vm(&mut self, name: &str, boot_timeout: Duration) -> Result<()> {
        self.start_vms(&[name], boot_timeout)
    }

    /// Boots several stopped VMs again at once (one boot round, as servers coming back
    /// together); running ones are left alone.
    pub fn start_vms(&mut self, names: &[&str], boot_timeout: Duration) -> Result<()> {
        let mut idxs = Vec::new();
        for name in names {
            self.vm(name)?;
            if process::live_qemu(&self.pidfile(name)).is_none() {
                idxs.extend(self.state.vms.iter().position(|v| v.name == *name));
            }
        }
        if idxs.is_empty() {
            return Ok(());
        }
        self.boot(&idxs, boot_timeout, false, false)
    }

    /// Stops every VM (qemu killed and checked gone); keeps the directory and its console logs.
    pub fn stop(&mut self) -> Result<Vec<String>> {
        stop_vms(&self.dir)
    }

    /// Stops the VMs and removes the lab's files (the base-image cache stays).
    pub fn down(mut self) -> Result<DownReport> {
        self.drop_policy = DropPolicy::KEEP;
        down_dir(&self.dir)
    }

    fn subnet(&self) -> Result<Subnet> {
        Subnet::parse(&self.state.subnet).map_err(|m| LabError::State {
            path: self.dir.join(STATE_FILE),
            dir: self.dir.clone(),
            message: m,
        })
    }

    fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.state).expect("lab state serializes");
        write_atomic(&self.dir.join(STATE_FILE), &(text + "\n"))
    }

    /// Starts the given VMs, waits for their sshd, collects host keys, checks the key login.
    fn boot(
        &mut self,
        idxs: &[usize],
        timeout: Duration,
        auto_ports: bool,
        fresh: bool,
    ) -> Result<()> {
        let key = read_public_key(&self.identity_path())?;
        let subnet = self.subnet()?;
        let apt_proxy = self.apt_proxy();
        let started = Instant::now();
        for &i in idxs {
            let mut attempts = 0;
            let image = Image {
                dir: self.state.vms[i]
                    .image_dir
                    .clone()
                    .unwrap_or_else(|| self.state.image_dir.clone()),
            };
            loop {
                match self.launch_vm(
                    i,
                    &image,
                    &key,
                    subnet.prefix(),
                    fresh,
                    apt_proxy.as_deref(),
                ) {
                    Ok(()) => break,
                    // Someone took the auto-picked port between our check and qemu's bind.
                    Err(LabError::VmStart { detail, .. })
                        if auto_ports && attempts < 3 && detail.contains("forwarding") =>
                    {
                        attempts += 1;
                        let taken: HashSet<u16> =
                            self.state.vms.iter().map(|v| v.ssh_port).collect();
                        self.state.vms[i].ssh_port = net::free_tcp_port(&taken)
                            .map_err(|e| LabError::io("cannot find a free TCP port", e))?;
                        self.save()?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let names: Vec<&str> = idxs
            .iter()
            .map(|&i| self.state.vms[i].name.as_str())
            .collect();
        self.progress.say(&format!(
            "booting {} under {} (console logs in {})",
            names.join(", "),
            self.state.accel.as_str(),
            self.dir.display()
        ));
        let deadline = started + timeout;
        let results: Vec<Result<(Vec<HostKey>, String)>> = std::thread::scope(|s| {
            let handles: Vec<_> = idxs
                .iter()
                .map(|&i| {
                    let this = &*self;
                    s.spawn(move || this.await_vm(&this.state.vms[i], deadline, timeout, started))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("VM wait thread does not panic"))
                .collect()
        });
        let mut first_err = None;
        for (&i, r) in idxs.iter().zip(results) {
            match r {
                Ok((keys, from)) => {
                    self.state.vms[i].host_keys = keys;
                    self.state.vms[i].host_keys_from = from;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.save()?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The package cache's URL for the VMs, the proxy started if needed; None (said why) when
    /// the VMs download directly.
    fn apt_proxy(&self) -> Option<String> {
        let cache = AptCache {
            dir: self.state.apt_cache.clone()?,
        };
        match cache.acquire(&self.dir) {
            Ok(Some(port)) => Some(aptcache::guest_url(port)),
            Ok(None) => {
                self.progress.say(&format!(
                    "{} is not installed: the VMs download packages directly (scripts/install-lab-deps.sh installs it)",
                    aptcache::PROGRAM
                ));
                None
            }
            Err(e) => {
                self.progress.say(&format!(
                    "the package cache did not start, the VMs download packages directly: {e}"
                ));
                None
            }
        }
    }

    /// Starts qemu for a VM: on a new disk (`fresh`), or on the disk it had.
    fn launch_vm(
        &self,
        i: usize,
        image: &Image,
        key: &(String, String),
        prefix: u8,
        fresh: bool,
        apt_proxy: Option<&str>,
    ) -> Result<()> {
        let vm = &self.state.vms[i];
        let overlay = self.dir.join(format!("{}.qcow2", vm.name));
        let console = self.console_log(&vm.name);
        let pidfile = self.pidfile(&vm.name);
        let log = self.dir.join(format!("{}.qemu.log", vm.name));
        let keep_disk = !fresh && overlay.is_file();
        for old in [&overlay, &console, &pidfile, &log] {
            if !(keep_disk && old == &overlay) {
                let _ = fs::remove_file(old);
            }
        }
        if !keep_disk {
            run(&argv::qemu_img_overlay(&image.qcow2(), &overlay), "")?;
        }
        let kernel = image.kernel();
        let initrd = image.initrd();
        let argv = argv::qemu(&QemuVm {
            name: format!("provision-lab:{}:{}", self.state.name, vm.name),
            accel: self.state.accel,
            memory_mib: vm.memory_mib,
            cpus: vm.cpus,
            kernel: &kernel,
            initrd: &initrd,
            append: argv::kernel_cmdline(vm.private_ip, prefix, &key.0, &key.1, apt_proxy),
            disk: &overlay,
            ssh_port: vm.ssh_port,
            mcast_port: self.state.mcast_port,
            private_mac: vm.mac.clone(),
            console: &console,
            pidfile: &pidfile,
        });
        let out = fs::File::create(&log)
            .map_err(|e| LabError::io(format!("cannot create {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| LabError::io(format!("cannot open {}", log.display()), e))?;
        // With -daemonize the command returns once the VM runs; errors before that land in the log.
        let status = command(&argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(|e| LabError::io("cannot run qemu-system-x86_64", e))?;
        if !status.success() {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let detail = text
                .trim()
                .lines()
                .last()
                .unwrap_or("no message")
                .to_string();
            return Err(LabError::VmStart {
                vm: vm.name.clone(),
                detail: format!("{status}: {detail}"),
                log,
            });
        }
        Ok(())
    }

    /// Waits for one VM's sshd, then reads its host keys and logs in once with the lab key.
    fn await_vm(
        &self,
        vm: &Vm,
        deadline: Instant,
        timeout: Duration,
        started: Instant,
    ) -> Result<(Vec<HostKey>, String)> {
        let console = self.console_log(&vm.name);
        let pidfile = self.pidfile(&vm.name);
        loop {
            if net::ssh_answers(vm.ssh_port, Duration::from_secs(3)) {
                break;
            }
            if process::live_qemu(&pidfile).is_none() {
                return Err(LabError::VmDied {
                    vm: vm.name.clone(),
                    console,
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::BootTimeout {
                    vm: vm.name.clone(),
                    port: vm.ssh_port,
                    secs: timeout.as_secs(),
                    console,
                });
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        self.progress.say(&format!(
            "{}: sshd answered after {} s",
            vm.name,
            started.elapsed().as_secs()
        ));
        let text = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
        let (keys, from) = match hostkeys::from_console(&text) {
            Ok(keys) => (keys, "console"),
            Err(why) => {
                self.progress.say(&format!(
                    "{}: {why}; falling back to ssh-keyscan on loopback (trust on first use)",
                    vm.name
                ));
                // sshd answering its banner may still be too slow for a key exchange (seen on
                // the lab under TCG, 4 VMs booting on 2 cores): a few tries, 5 s apart.
                let mut keys = Vec::new();
                let mut last = String::from("found none");
                for attempt in 1..=3 {
                    if attempt > 1 {
                        std::thread::sleep(Duration::from_secs(5));
                    }
                    match run(&argv::ssh_keyscan(vm.ssh_port), "") {
                        Ok(out) => {
                            keys = hostkeys::from_keyscan(&String::from_utf8_lossy(&out.stdout))
                        }
                        Err(e) => last = e.to_string(),
                    }
                    if !keys.is_empty() {
                        break;
                    }
                }
                if keys.is_empty() {
                    return Err(LabError::HostKeys {
                        vm: vm.name.clone(),
                        detail: format!("{why}; ssh-keyscan (3 tries): {last}"),
                        console,
                    });
                }
                (keys, "keyscan")
            }
        };
        // A throw-away known_hosts with this VM's keys: the real file is written once all are in.
        let kh = self.dir.join(format!(".{}.known_hosts", vm.name));
        fs::write(&kh, hostkeys::known_hosts_lines(vm.ssh_port, &keys))
            .map_err(|e| LabError::io(format!("cannot write {}", kh.display()), e))?;
        let argv = argv::ssh(&self.identity_path(), &kh, vm.ssh_port, &["true".into()]);
        let mut last = String::new();
        let mut ok = false;
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_secs(2));
            }
            match run(&argv, "") {
                Ok(_) => {
                    ok = true;
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let _ = fs::remove_file(&kh);
        if !ok {
            return Err(LabError::SshLogin {
                vm: vm.name.clone(),
                detail: last,
                console,
            });
        }
        Ok((keys, from.to_string()))
    }

    /// Writes known_hosts and cluster.toml from the state.
    fn write_inventory(&self) -> Result<()> {
        let mut kh = String::new();
        for v in &self.state.vms {
            kh.push_str(&hostkeys::known_hosts_lines(v.ssh_port, &v.host_keys));
        }
        write_atomic(&self.known_hosts_path(), &kh)?;
        let strict = self.state.vms.iter().all(|v| !v.host_keys.is_empty());
        let hosts: Vec<InventoryHost> = self
            .state
            .vms
            .iter()
            .map(|v| InventoryHost {
                name: v.name.clone(),
                port: v.ssh_port,
                private_ip: v.private_ip,
                roles: v.roles.clone(),
            })
            .collect();
        write_atomic(
            &self.cluster_toml_path(),
            &inventory::cluster_toml(&self.state.name, &self.identity_path(), strict, &hosts),
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let action = if panicking {
            self.drop_policy.on_panic
        } else {
            self.drop_policy.on_success
        };
        let dir = self.dir.display().to_string();
        match action {
            OnDrop::Keep => {
                if panicking {
                    eprintln!(
                        "lab `{}` left running; state and console logs in {dir} (remove with `provision lab down --dir {dir}`)",
                        self.state.name
                    );
                }
            }
            OnDrop::Stop => {
                if let Err(e) = stop_vms(&self.dir) {
                    eprintln!("lab `{}`: stopping its VMs failed: {e}", self.state.name);
                }
                eprintln!(
                    "lab `{}` stopped; console logs kept in {dir} (remove with `provision lab down --dir {dir}`)",
                    self.state.name
                );
            }
            OnDrop::Down => {
                if let Err(e) = down_dir(&self.dir) {
                    eprintln!(
                        "lab `{}`: down failed: {e} (state in {dir})",
                        self.state.name
                    );
                }
            }
        }
    }
}

/// The image VMs of `layer` boot from: the base as it is, or the ready layer built on it when
/// the cache lacks it (which needs `ready`; `command` is the one that can build it otherwise).
fn layer_image(
    layer: LayerName,
    (recipe, base): (&Recipe, Image),
    ready: Option<&ReadyLayer>,
    cache_root: &Path,
    accel: Accel,
    progress: &Progress,
    command: &str,
) -> Result<Image> {
    match layer {
        LayerName::Bare => Ok(base),
        LayerName::Ready => {
            let ready = ready.ok_or(LabError::LayerBuild {
                layer: LayerName::Ready.to_string(),
                detail: format!(
                    "this caller cannot build it (no provisioner given): `{command}` can"
                ),
            })?;
            layer::ensure_ready(
                recipe,
                &base,
                ready,
                cache_root,
                AccelChoice::Force(accel),
                progress,
            )
        }
    }
}

fn new_vm(spec: &VmSpec, port: u16, ip: Ipv4Addr) -> Vm {
    Vm {
        name: spec.name.clone(),
        roles: spec.roles.clone(),
        memory_mib: spec.memory_mib,
        cpus: spec.cpus,
        ssh_port: port,
        private_ip: ip,
        mac: argv::private_mac(ip),
        host_keys: Vec::new(),
        host_keys_from: String::new(),
        image_dir: None,
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)
        .map_err(|e| LabError::io(format!("cannot create {}", dir.display()), e))?;
    // The lab's private key lives here.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| LabError::io(format!("cannot chmod {}", dir.display()), e))
}

fn load_state(dir: &Path) -> Result<LabState> {
    let path = dir.join(STATE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LabError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(LabError::io(format!("cannot read {}", path.display()), e)),
    };
    let state: LabState = serde_json::from_str(&text).map_err(|e| LabError::State {
        path: path.clone(),
        dir: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    if state.format != STATE_FORMAT {
        return Err(LabError::State {
            path,
            dir: dir.to_path_buf(),
            message: format!("format {} is not {STATE_FORMAT}", state.format),
        });
    }
    Ok(state)
}

/// Reads `type base64 comment` from a .pub file.
fn read_public_key(path: &Path) -> Result<(String, String)> {
    let pub_path = path.with_extension("pub");
    let text = fs::read_to_string(&pub_path)
        .map_err(|e| LabError::io(format!("cannot read {}", pub_path.display()), e))?;
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(t), Some(b)) => Ok((t.to_string(), b.to_string())),
        _ => Err(LabError::BadPath {
            path: pub_path,
            reason: "not an OpenSSH public key".into(),
        }),
    }
}

/// (vm name, pid) of every live qemu started from a pidfile in `dir`.
fn live_vms_in(dir: &Path) -> impl Iterator<Item = (String, u32)> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "pid")
                && let Some(pid) = process::live_qemu(&path)
            {
                let vm = path
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                found.push((vm, pid));
            }
        }
    }
    found.sort();
    found.into_iter()
}

/// Stops every VM of the lab in `dir`, then lets go of the package cache.
fn stop_vms(dir: &Path) -> Result<Vec<String>> {
    let mut stopped = Vec::new();
    for (vm, pid) in live_vms_in(dir) {
        process::kill_and_wait(pid, &format!("qemu of VM `{vm}`"))?;
        stopped.push(vm);
    }
    release_apt_cache(dir)?;
    Ok(stopped)
}

/// Unregisters the lab from its package cache; the last lab to go stops the proxy.
fn release_apt_cache(dir: &Path) -> Result<()> {
    let Some(cache) = load_state(dir).ok().and_then(|s| s.apt_cache) else {
        return Ok(());
    };
    AptCache { dir: cache }.release(dir, &lab_in_use)?;
    Ok(())
}

/// Whether a lab still needs the package cache: it has live VMs, or a command holds its lock
/// (a `lab up` that registered and is about to boot).
fn lab_in_use(dir: &Path) -> bool {
    if live_vms_in(dir).next().is_some() {
        return true;
    }
    let Ok(f) = fs::File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock))
}

/// Whether a file name is one the lab writes in its directory.
pub(crate) fn is_lab_file(name: &str) -> bool {
    const FIXED: [&str; 6] = [
        STATE_FILE,
        "cluster.toml",
        "known_hosts",
        KEY_FILE,
        "id_ed25519.pub",
        LOCK_FILE,
    ];
    const SUFFIXES: [&str; 6] = [
        ".qcow2",
        ".pid",
        ".console",
        ".qemu.log",
        ".known_hosts",
        ".tmp",
    ];
    FIXED.contains(&name) || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Removes the lab's own files from `dir` (not the lock, which the caller holds).
fn remove_lab_files(dir: &Path) -> Result<()> {
    let entries =
        fs::read_dir(dir).map_err(|e| LabError::io(format!("cannot read {}", dir.display()), e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != LOCK_FILE && is_lab_file(&name) {
            fs::remove_file(e.path()).map_err(|err| {
                LabError::io(format!("cannot remove {}", e.path().display()), err)
            })?;
        }
    }
    Ok(())
}

/// Brings down the lab in `dir`, however far it got: kills its qemu processes (checked gone),
/// removes its files, and the directory if nothing else is in it. The image cache stays.
pub fn down_dir(dir: &Path) -> Result<DownReport> {
    let dir = paths::absolute(dir)?;
    let has_lab = fs::read_dir(&dir).is_ok_and(|mut it| {
        it.any(|e| {
            e.is_ok_and(|e| {
                e.file_name() == STATE_FILE || e.path().extension().is_some_and(|x| x == "pid")
            })
        })
    });
    if !has_lab {
        return Err(LabError::NotFound { dir });
    }
    let lock = lock_dir(&dir)?;
    let stopped = stop_vms(&dir)?;
    remove_lab_files(&dir)?;
    drop(lock);
    let _ = fs::remove_file(dir.join(LOCK_FILE));
    let removed_dir = fs::remove_dir(&dir).is_ok();
    Ok(DownReport {
        stopped,
        removed_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_files_are_recognized() {
        for f in [
            "lab.json",
            "cluster.toml",
            "known_hosts",
            "id_ed25519",
            "id_ed25519.pub",
            "worker-1.qcow2",
            "worker-1.console",
            "worker-1.pid",
            "worker-1.qemu.log",
            ".worker-1.known_hosts",
            ".lab.json.tmp",
        ] {
            assert!(is_lab_file(f), "{f}");
        }
        for f in ["notes.txt", "LAB.toml", "id_rsa"] {
            assert!(!is_lab_file(f), "{f}");
        }
    }

    fn sample_state(dir: &Path) -> LabState {
        LabState {
            format: STATE_FORMAT,
            name: "t".into(),
            subnet: "10.10.0.0/24".into(),
            mcast_port: 40000,
            image_dir: dir.join("img"),
            layer: LayerName::Bare,
            accel: Accel::Tcg,
            vms: vec![new_vm(
                &VmSpec::new("manager-1", vec![Role::Manager]),
                22201,
                Ipv4Addr::new(10, 10, 0, 12),
            )],
            apt_cache: Some(dir.join("cache/apt")),
        }
    }

    #[test]
    fn state_round_trip_and_inventory_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = sample_state(dir.path());
        state.vms[0].host_keys = vec![HostKey {
            key_type: "ssh-ed25519".into(),
            base64: crate::hostkeys::tests::blob("ssh-ed25519", 7),
        }];
        let lab = Lab {
            dir: dir.path().to_path_buf(),
            state,
            drop_policy: DropPolicy::KEEP,
            progress: Progress::quiet(),
        };
        lab.save().unwrap();
        lab.write_inventory().unwrap();
        let opened = Lab::open(dir.path()).unwrap();
        assert_eq!(opened.vms(), lab.vms());
        assert_eq!(opened.vm("manager-1").unwrap().mac, "52:54:00:aa:00:0c");
        let err = opened.vm("nope").unwrap_err().to_string();
        assert_eq!(err, "no VM `nope` in this lab (it has: manager-1)");
        let kh = fs::read_to_string(lab.known_hosts_path()).unwrap();
        assert_eq!(
            kh,
            format!(
                "[127.0.0.1]:22201 ssh-ed25519 {}\n",
                crate::hostkeys::tests::blob("ssh-ed25519", 7)
            )
        );
        let ct = fs::read_to_string(lab.cluster_toml_path()).unwrap();
        assert!(ct.contains("host_key_policy = \"strict\"\n"));
        assert!(ct.contains(&format!(
            "identity = \"{}/id_ed25519\"\n",
            dir.path().display()
        )));
        assert!(ct.contains("name = \"manager-1\"\naddress = \"127.0.0.1\"\nport = 22201\nprivate_ip = \"10.10.0.12\"\n"));
        let argv = opened.ssh_argv("manager-1", &["hostname"]).unwrap();
        assert_eq!(
            argv[argv.len() - 5..],
            ["-p", "22201", "root@127.0.0.1", "--", "hostname"]
        );
    }

    #[test]
    fn a_vm_added_from_another_layer_keeps_it_across_saves_and_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = sample_state(dir.path());
        let mut added = new_vm(
            &VmSpec::new("worker-2", vec![Role::Worker]),
            22202,
            Ipv4Addr::new(10, 10, 0, 13),
        );
        added.image_dir = Some(dir.path().join("ready-0123"));
        state.vms.push(added);
        let lab = Lab {
            dir: dir.path().to_path_buf(),
            state,
            drop_policy: DropPolicy::KEEP,
            progress: Progress::quiet(),
        };
        lab.save().unwrap();
        let text = fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        // Only the added VM records its own layer: lab.json of VMs on the lab's layer is as before.
        assert_eq!(text.matches("\"image_dir\"").count(), 2, "{text}");
        let opened = Lab::open(dir.path()).unwrap();
        assert_eq!(opened.vms(), lab.vms());
        assert_eq!(
            opened.image_dirs(),
            [dir.path().join("img"), dir.path().join("ready-0123")]
        );
        // A lab.json from before the field reads as every VM on the lab's layer.
        let old = text.replace(
            &format!(
                ",\n      \"image_dir\": {}",
                serde_json::to_string(&dir.path().join("ready-0123")).unwrap()
            ),
            "",
        );
        assert_ne!(old, text);
        fs::write(dir.path().join(STATE_FILE), old).unwrap();
        let opened = Lab::open(dir.path()).unwrap();
        assert_eq!(opened.image_dirs(), [dir.path().join("img")]);
    }

    #[test]
    fn open_and_down_report_missing_labs() {
        let dir = tempfile::tempdir().unwrap();
        let err = Lab::open(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "no lab in {}: start one with `provision lab up`",
                dir.path().display()
            )
        );
        assert!(matches!(
            down_dir(dir.path()),
            Err(LabError::NotFound { .. })
        ));
        fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let err = Lab::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is unreadable"), "{err}");
    }

    #[test]
    fn down_of_a_half_failed_lab_kills_and_removes_only_lab_files() {
        let dir = tempfile::tempdir().unwrap();
        let lab_dir = dir.path().join("lab");
        fs::create_dir(&lab_dir).unwrap();
        // What a failed `up` leaves: a VM process with a pidfile, a console log, a key; no state.
        let pidfile = lab_dir.join("worker-1.pid");
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 60", "qemu"])
            .arg(&pidfile)
            .spawn()
            .unwrap();
        fs::write(&pidfile, format!("{}\n", child.id())).unwrap();
        crate::process::tests::wait_for_exec(child.id(), &pidfile);
        fs::write(lab_dir.join("worker-1.console"), "boot...").unwrap();
        fs::write(lab_dir.join(KEY_FILE), "key").unwrap();
        let reaper = std::thread::spawn(move || child.wait());
        let report = down_dir(&lab_dir).unwrap();
        reaper.join().unwrap().unwrap();
        assert_eq!(
            report,
            DownReport {
                stopped: vec!["worker-1".into()],
                removed_dir: true
            }
        );
        assert!(!lab_dir.exists());

        // A directory with the user's own files keeps them.
        fs::create_dir(&lab_dir).unwrap();
        fs::write(lab_dir.join(STATE_FILE), "{}").unwrap();
        fs::write(lab_dir.join("LAB.toml"), "mine").unwrap();
        let report = down_dir(&lab_dir).unwrap();
        assert!(!report.removed_dir);
        assert!(lab_dir.join("LAB.toml").exists());
        assert!(!lab_dir.join(STATE_FILE).exists());
    }

    #[test]
    fn a_held_lock_makes_commands_busy() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_dir(dir.path()).unwrap();
        let err = lock_dir(dir.path()).err().unwrap();
        assert!(matches!(err, LabError::Busy { .. }), "{err}");
    }

    #[test]
    fn drop_policy_down_removes_the_lab() {
        let dir = tempfile::tempdir().unwrap();
        let lab_dir = dir.path().join("lab");
        fs::create_dir(&lab_dir).unwrap();
        let lab = Lab {
            dir: lab_dir.clone(),
            state: sample_state(dir.path()),
            drop_policy: DropPolicy::KEEP,
            progress: Progress::quiet(),
        };
        lab.save().unwrap();
        drop(lab);
        assert!(lab_dir.join(STATE_FILE).exists(), "KEEP leaves the lab");
        let mut lab = Lab::open(&lab_dir).unwrap();
        lab.set_drop_policy(DropPolicy::TEST);
        drop(lab);
        assert!(!lab_dir.exists(), "TEST downs the lab on success");
    }
}
