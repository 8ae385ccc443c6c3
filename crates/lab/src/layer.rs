//! Image layers on top of the bare base: the "ready" layer is a bare VM that provision's own
//! steps made swarm-ready (Docker, NFS packages), its identity wiped, its disk kept. Keyed by
//! the base image, the playbook, the code of the steps it uses and the wipe script, so nothing
//! stale is ever booted; listed and pruned with `provision lab images`.

use crate::accel::AccelChoice;
use crate::error::{LabError, Result};
use crate::image::{self, Build, Image, Marker};
use crate::inventory::{self, InventoryHost};
use crate::process::{self, run};
use crate::recipe::Recipe;
use crate::spec::{LabSpec, LayerName, Role, Subnet, VmSpec};
use crate::{Lab, Progress, UpOptions, argv};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs before the disk is kept: removes the builder's identity (part of the layer's key).
pub const WIPE_SCRIPT: &str = include_str!("../files/provision-lab-wipe.sh");

/// Bumped when the build procedure changes in a way the key's other parts do not show.
const LAYER_FORMAT: u32 = 1;

/// Free space a ready-layer build needs (the builder's overlay and the flattened disk).
pub const READY_BUILD_MIB: u64 = 8192;

/// The builder VM: alone on the machine, so it gets both cores.
const BUILDER_MEMORY_MIB: u32 = 2048;
const BUILDER_CPUS: u32 = 2;

/// Runs the playbook on the builder: given the builder's cluster.toml (which names the
/// playbook), returns Err with what went wrong. The CLI and the tests run `provision run`.
pub type Provisioner = Arc<dyn Fn(&Path) -> std::result::Result<(), String> + Send + Sync>;

/// How to make the ready layer.
#[derive(Clone)]
pub struct ReadyLayer {
    /// The playbook that turns a bare VM into a swarm-ready one.
    pub playbook: String,
    /// Digest of the code of the steps the playbook uses, and of `files`.
    pub code_digest: String,
    /// Files the playbook reads (`src` paths relative to it): (name, text), written beside it.
    pub files: Vec<(String, String)>,
    pub provision: Provisioner,
}

impl fmt::Debug for ReadyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadyLayer")
            .field("code_digest", &self.code_digest)
            .finish_non_exhaustive()
    }
}

impl ReadyLayer {
    /// The ready layer made by running `bin run CLUSTER` (the `provision` binary) on the builder.
    pub fn with_binary(
        playbook: &str,
        files: &[(&str, &str)],
        code_digest: String,
        bin: PathBuf,
    ) -> ReadyLayer {
        let provision: Provisioner = Arc::new(move |cluster: &Path| {
            let out = std::process::Command::new(&bin)
                .arg("run")
                .arg(cluster)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
            if out.status.success() {
                return Ok(());
            }
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = text.trim_end().lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            Err(format!(
                "`{} run {}` exited with {}:\n{tail}",
                bin.display(),
                cluster.display(),
                out.status
            ))
        });
        ReadyLayer {
            playbook: playbook.to_string(),
            files: files
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            code_digest,
            provision,
        }
    }
}

/// The builder's inventory (its vars are part of what the playbook does, so of the key).
fn builder_inventory(identity: &Path, port: u16) -> String {
    let host = InventoryHost {
        name: "builder".into(),
        port,
        private_ip: Subnet::parse(crate::spec::DEFAULT_SUBNET)
            .expect("default subnet")
            .host(0)
            .expect("first host"),
        roles: vec![Role::Manager],
    };
    let text = inventory::cluster_toml("layer-build", identity, true, &[host]);
    text.replacen("\n\n[ssh]", "\nplaybook = \"ready.toml\"\n\n[ssh]", 1)
}

/// Everything the ready layer is keyed on, as text (kept as `layer.txt` beside the disk).
pub fn ready_key_text(base: &Recipe, playbook: &str, code_digest: &str) -> String {
    format!(
        "layer ready\nformat {LAYER_FORMAT}\nbase {}\ncode {code_digest}\nbuilder {BUILDER_MEMORY_MIB} MiB {BUILDER_CPUS} cpus\n\
         --- inventory\n{}--- playbook\n{playbook}\n--- wipe\n{WIPE_SCRIPT}",
        base.hash(),
        builder_inventory(Path::new("/lab/id_ed25519"), 22)
    )
}

/// The ready layer's directory name: `ready-` and 16 hex digits of the key text's SHA-256.
pub fn ready_key(base: &Recipe, playbook: &str, code_digest: &str) -> String {
    let digest = Sha256::digest(ready_key_text(base, playbook, code_digest).as_bytes());
    let hex = hex::encode(&digest[..8]);
    format!("ready-{hex}")
}

/// The cached ready layer, built first (from the cached base) when missing or incomplete.
pub fn ensure_ready(
    base_recipe: &Recipe,
    base: &Image,
    ready: &ReadyLayer,
    cache_root: &Path,
    accel: AccelChoice,
    progress: &Progress,
) -> Result<Image> {
    let key = ready_key(base_recipe, &ready.playbook, &ready.code_digest);
    let what = Build {
        layer: LayerName::Ready,
        key: key.clone(),
        need_mib: READY_BUILD_MIB,
        describe: format!(
            "the ready layer {key}: a VM from the base image, provisioned by provision itself, identity wiped (minutes, once per key)"
        ),
    };
    image::ensure_with(&what, cache_root, &|m| progress.say(m), &|tmp| {
        build_ready(base_recipe, base, ready, cache_root, accel, progress, tmp)
    })
}

fn build_ready(
    base_recipe: &Recipe,
    base: &Image,
    ready: &ReadyLayer,
    cache_root: &Path,
    accel: AccelChoice,
    progress: &Progress,
    tmp: &Path,
) -> Result<()> {
    fs::create_dir_all(tmp)
        .map_err(|e| LabError::io(format!("cannot create {}", tmp.display()), e))?;
    let spec = LabSpec {
        name: "layer-build".into(),
        vms: vec![VmSpec {
            name: "builder".into(),
            roles: vec![Role::Manager],
            memory_mib: BUILDER_MEMORY_MIB,
            cpus: BUILDER_CPUS,
        }],
        subnet: Subnet::parse(crate::spec::DEFAULT_SUBNET).expect("default subnet"),
        ssh_port_base: None,
        layer: LayerName::Bare,
    };
    let builder_dir = tmp.join("builder");
    let opts = UpOptions {
        dir: Some(builder_dir.clone()),
        cache_dir: Some(cache_root.to_path_buf()),
        mirror: Some(base_recipe.mirror.clone()),
        accel: Some(accel),
        boot_timeout: Duration::from_secs(900),
        keep_on_failure: false,
        progress: progress.clone(),
        ready: None,
    };
    let mut lab = Lab::up(&spec, &opts)?;
    // Whatever happens, the builder's qemu does not outlive this function.
    lab.set_drop_policy(crate::DropPolicy {
        on_success: crate::OnDrop::Down,
        on_panic: crate::OnDrop::Down,
    });
    let port = lab.vm("builder")?.ssh_port;
    let write = |name: &str, text: &str| {
        let p = builder_dir.join(name);
        fs::write(&p, text).map_err(|e| LabError::io(format!("cannot write {}", p.display()), e))
    };
    write("ready.toml", &ready.playbook)?;
    for (name, text) in &ready.files {
        write(name, text)?;
    }
    write(
        "cluster.toml",
        &builder_inventory(&lab.identity_path(), port),
    )?;
    let started = Instant::now();
    progress.say("ready layer: running the playbook on the builder VM");
    (ready.provision)(&lab.cluster_toml_path()).map_err(|detail| LabError::LayerBuild {
        layer: LayerName::Ready.to_string(),
        detail,
    })?;
    progress.say(&format!(
        "ready layer: provisioned in {} s; wiping the builder's identity",
        started.elapsed().as_secs()
    ));
    // The script ends by powering the VM off (its host keys are gone: no new SSH session),
    // so the session may be cut before its exit status arrives: its last line tells.
    let out = lab.ssh("builder", WIPE_SCRIPT)?;
    if !String::from_utf8_lossy(&out.stdout).contains("provision-lab-wipe: done") {
        return Err(LabError::LayerBuild {
            layer: LayerName::Ready.to_string(),
            detail: format!(
                "the wipe script failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let pidfile = builder_dir.join("builder.pid");
    let deadline = Instant::now() + Duration::from_secs(180);
    while process::live_qemu(&pidfile).is_some() {
        if Instant::now() > deadline {
            return Err(LabError::LayerBuild {
                layer: LayerName::Ready.to_string(),
                detail: "the builder VM did not power off within 180 s".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // One self-contained disk: the layer does not depend on the base staying in the cache.
    run(
        &argv::qemu_img_flatten(&builder_dir.join("builder.qcow2"), &tmp.join("base.qcow2")),
        "",
    )?;
    for (from, to) in [(base.kernel(), "vmlinuz"), (base.initrd(), "initrd.img")] {
        fs::copy(&from, tmp.join(to))
            .map_err(|e| LabError::io(format!("cannot copy {}", from.display()), e))?;
    }
    write_text(
        &tmp.join("layer.txt"),
        &ready_key_text(base_recipe, &ready.playbook, &ready.code_digest),
    )?;
    lab.down()?;
    let _ = fs::remove_dir_all(&builder_dir);
    Ok(())
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|e| LabError::io(format!("cannot write {}", path.display()), e))
}

/// One cached layer, for `provision lab images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub dir: PathBuf,
    /// The directory name.
    pub key: String,
    /// `bare` or `ready`; None (shown as `incomplete`) when the marker is missing or false.
    pub layer: Option<LayerName>,
    pub bytes: u64,
    /// Seconds since the build finished (None when incomplete).
    pub age_secs: Option<u64>,
}

/// Every layer directory and interrupted build in the cache.
pub fn list(cache_root: &Path) -> Result<Vec<LayerInfo>> {
    let dir = image::images_dir(cache_root);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LabError::io(format!("cannot read {}", dir.display()), e)),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if !path.is_dir() {
            continue;
        }
        let key = e.file_name().to_string_lossy().into_owned();
        let img = Image { dir: path.clone() };
        let marker: Option<Marker> = img.marker();
        out.push(LayerInfo {
            bytes: dir_bytes(&path),
            layer: marker.as_ref().map(|m| m.layer),
            age_secs: marker.as_ref().map(|m| now.saturating_sub(m.built_at)),
            key,
            dir: path,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Allocated bytes below a directory (qcow2 files are sparse: their length overstates).
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

/// Which layers `--prune` removes: everything but `keep` (the current keys and the layers
/// labs still boot from), and never a layer whose build lock is held right now.
pub fn prune_plan<'a>(layers: &'a [LayerInfo], keep: &[String]) -> Vec<&'a LayerInfo> {
    layers.iter().filter(|l| !keep.contains(&l.key)).collect()
}

/// Removes the given layers, each under its build lock (a build in progress is skipped).
pub fn prune(cache_root: &Path, doomed: &[&LayerInfo]) -> Result<Vec<PathBuf>> {
    let images = image::images_dir(cache_root);
    let mut removed = Vec::new();
    for l in doomed {
        let key = l.key.trim_start_matches(".build-");
        let key = key
            .rsplit_once('-')
            .filter(|_| l.key.starts_with(".build-"))
            .map_or(key, |k| k.0);
        let lock_path = images.join(format!("{key}.lock"));
        let lock = fs::File::create(&lock_path)
            .map_err(|e| LabError::io(format!("cannot create {}", lock_path.display()), e))?;
        if lock.try_lock().is_err() {
            continue;
        }
        image::remove_build_dir(&l.dir)?;
        let _ = fs::remove_file(&lock_path);
        removed.push(l.dir.clone());
    }
    Ok(removed)
}

/// Human-readable size.
pub fn human_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b as f64 >= 1024.0 * MIB {
        format!("{:.1} GiB", b as f64 / (1024.0 * MIB))
    } else {
        format!("{:.0} MiB", b as f64 / MIB)
    }
}

/// Human-readable age.
pub fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::DEFAULT_MIRROR;

    #[test]
    fn the_key_follows_the_code_the_playbook_the_base_and_the_wipe() {
        let base = Recipe::new(Some(DEFAULT_MIRROR));
        let k = ready_key(&base, "playbook", "code-1");
        assert!(k.starts_with("ready-") && k.len() == 22, "{k}");
        assert_eq!(k, ready_key(&base, "playbook", "code-1"));
        // A change to a contributing step's code (its digest) is a new layer.
        assert_ne!(k, ready_key(&base, "playbook", "code-2"));
        assert_ne!(k, ready_key(&base, "playbook 2", "code-1"));
        let mut other = base.clone();
        other.packages.push("vim".into());
        assert_ne!(k, ready_key(&other, "playbook", "code-1"));
        let text = ready_key_text(&base, "playbook", "code-1");
        assert!(text.contains(WIPE_SCRIPT));
        assert!(text.contains(&format!("base {}", base.hash())));
        assert!(text.contains("docker_source = \"distro\""), "{text}");
        assert!(text.contains("playbook = \"ready.toml\""), "{text}");
    }

    #[test]
    fn the_wipe_removes_every_identity() {
        for must in [
            ": >/etc/machine-id",
            "/etc/ssh/ssh_host_*",
            "/var/lib/dhcp/*.leases",
            "/root/.ssh/authorized_keys",
            "/var/lib/docker/swarm",
            "/var/lib/docker/engine-id",
            "echo debian >/etc/hostname",
            "rm -rf /var/log/journal/*",
            "systemctl disable --now docker.service docker.socket nfs-server.service",
            "systemctl --no-block poweroff",
        ] {
            assert!(WIPE_SCRIPT.contains(must), "{must}");
        }
    }

    fn layer(key: &str) -> LayerInfo {
        LayerInfo {
            dir: PathBuf::from("/c/images").join(key),
            key: key.into(),
            layer: Some(LayerName::Ready),
            bytes: 0,
            age_secs: Some(1),
        }
    }

    #[test]
    fn prune_keeps_the_current_and_used_layers() {
        let all = [
            layer("0123456789abcdef"),
            layer("ready-aaaa"),
            layer("ready-bbbb"),
            layer(".build-ready-cccc-42"),
        ];
        let keep = ["0123456789abcdef".to_string(), "ready-bbbb".to_string()];
        let plan: Vec<&str> = prune_plan(&all, &keep)
            .iter()
            .map(|l| l.key.as_str())
            .collect();
        assert_eq!(plan, ["ready-aaaa", ".build-ready-cccc-42"]);
    }

    #[test]
    fn prune_skips_a_layer_being_built() {
        let cache = tempfile::tempdir().unwrap();
        let images = image::images_dir(cache.path());
        fs::create_dir_all(images.join("ready-aaaa")).unwrap();
        fs::create_dir_all(images.join("ready-bbbb")).unwrap();
        let held = fs::File::create(images.join("ready-bbbb.lock")).unwrap();
        held.lock().unwrap();
        let layers = list(cache.path()).unwrap();
        assert_eq!(layers.len(), 2);
        assert!(layers.iter().all(|l| l.layer.is_none()));
        let plan = prune_plan(&layers, &[]);
        let removed = prune(cache.path(), &plan).unwrap();
        assert_eq!(removed, [images.join("ready-aaaa")]);
        assert!(images.join("ready-bbbb").exists());
    }

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(human_bytes(300 * 1024 * 1024), "300 MiB");
        assert_eq!(human_age(59), "59 s");
        assert_eq!(human_age(600), "10 min");
        assert_eq!(human_age(3 * 86400), "3 days");
    }
}
