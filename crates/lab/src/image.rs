//! The cached base image: built once per recipe with debootstrap in a temporary directory that is
//! renamed into place at the end (a crash leaves no half image), under a lock (two `lab up` at
//! once build it once).

use crate::argv;
use crate::error::{LabError, Result};
use crate::prereq;
use crate::process::{run, run_logged};
use crate::recipe::{Content, REMOVALS, Recipe};
use crate::spec::LayerName;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// A built image layer (the bare base, or a layer made from it): `base.qcow2`, the kernel and
/// initrd it boots with, the text it is keyed on, and `layer.json`, the marker written last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub dir: PathBuf,
}

/// The marker of a complete layer: every file with its size. Written after everything else,
/// checked before every use, so a half-written or truncated layer is rebuilt, never booted.
pub const MARKER: &str = "layer.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// `bare` or the name of the layer built on it.
    pub layer: LayerName,
    /// The directory name: the layer's key.
    pub key: String,
    /// Seconds since the epoch when the build finished.
    pub built_at: u64,
    /// Every file of the layer (but the marker) and its size in bytes.
    pub files: Vec<(String, u64)>,
}

impl Image {
    pub fn qcow2(&self) -> PathBuf {
        self.dir.join("base.qcow2")
    }
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
    /// The marker, when present, readable and true of the files on disk.
    pub fn marker(&self) -> Option<Marker> {
        let text = fs::read_to_string(self.dir.join(MARKER)).ok()?;
        let m: Marker = serde_json::from_str(&text).ok()?;
        let needed = ["base.qcow2", "vmlinuz", "initrd.img"];
        let listed = |n: &str| m.files.iter().any(|(f, _)| f == n);
        if !needed.iter().all(|n| listed(n)) {
            return None;
        }
        let sizes_hold = m.files.iter().all(|(name, size)| {
            fs::metadata(self.dir.join(name)).is_ok_and(|md| md.is_file() && md.len() == *size)
        });
        sizes_hold.then_some(m)
    }
    pub(crate) fn complete(&self) -> bool {
        self.marker().is_some()
    }
}

/// Where the image of `recipe` lives under the cache root (whether built or not).
pub fn image_for(recipe: &Recipe, cache_root: &Path) -> Image {
    Image {
        dir: images_dir(cache_root).join(recipe.hash()),
    }
}

/// The directory every layer lives in.
pub fn images_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("images")
}

/// Whether the image of `recipe` is already built.
pub fn is_cached(recipe: &Recipe, cache_root: &Path) -> bool {
    image_for(recipe, cache_root).complete()
}

/// Free space a base image build needs (debootstrap's tree, the raw image, the qcow2).
pub const BASE_BUILD_MIB: u64 = 4096;

/// Returns the cached image of `recipe`, building it first if needed (needs root).
pub fn ensure(recipe: &Recipe, cache_root: &Path, progress: &dyn Fn(&str)) -> Result<Image> {
    let image = image_for(recipe, cache_root);
    if image.complete() {
        return Ok(image);
    }
    prereq::check(&prereq::BUILD_PROGRAMS)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::NeedsRoot);
    }
    let what = Build {
        layer: LayerName::Bare,
        key: recipe.hash(),
        need_mib: BASE_BUILD_MIB,
        describe: format!(
            "the base image {} with debootstrap from {} (a few minutes, once per recipe)",
            recipe.hash(),
            recipe.mirror
        ),
    };
    ensure_with(&what, cache_root, progress, &|tmp| {
        build(recipe, tmp, progress)
    })
}

/// What a layer build is: its name, key (directory name) and the free space it needs.
pub(crate) struct Build {
    pub layer: LayerName,
    pub key: String,
    pub need_mib: u64,
    pub describe: String,
}

/// The cache protocol around any build step: lock, re-check, clear crashed builds and layers
/// whose marker is missing or false, check free space, build into a temporary directory, write
/// the marker last, rename into place. `build` fills the directory it is given.
pub(crate) fn ensure_with(
    what: &Build,
    cache_root: &Path,
    progress: &dyn Fn(&str),
    build: &dyn Fn(&Path) -> Result<()>,
) -> Result<Image> {
    let images = images_dir(cache_root);
    let image = Image {
        dir: images.join(&what.key),
    };
    fs::create_dir_all(&images).map_err(|e| LabError::CacheDir {
        path: images.clone(),
        detail: e.to_string(),
    })?;
    let key = &what.key;
    let lock_path = images.join(format!("{key}.lock"));
    let lock = fs::File::create(&lock_path).map_err(|e| LabError::CacheDir {
        path: lock_path.clone(),
        detail: e.to_string(),
    })?;
    if lock.try_lock().is_err() {
        progress(&format!(
            "another process is building the same {} layer: waiting for it",
            what.layer
        ));
        lock.lock()
            .map_err(|e| LabError::io(format!("cannot lock {}", lock_path.display()), e))?;
    }
    // The other process may have finished it while we waited.
    if image.complete() {
        return Ok(image);
    }
    // Under the lock nobody else builds this key: leftovers are from crashed builds.
    let prefix = format!(".build-{key}-");
    if let Ok(entries) = fs::read_dir(&images) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                progress(&format!(
                    "removing an interrupted build: {}",
                    e.path().display()
                ));
                remove_build_dir(&e.path())?;
            }
        }
    }
    if image.dir.exists() {
        progress(&format!(
            "discarding {}: its marker {MARKER} is missing or does not match its files",
            image.dir.display()
        ));
        remove_build_dir(&image.dir)?;
    }
    check_space(&images, what.need_mib)?;
    let tmp = images.join(format!("{prefix}{}", std::process::id()));
    progress(&format!("building {}", what.describe));
    let started = std::time::Instant::now();
    let built = build(&tmp)
        .and_then(|()| write_marker(&tmp, what))
        .and_then(|()| {
            fs::rename(&tmp, &image.dir).map_err(|e| {
                LabError::io(
                    format!("cannot move {} to {}", tmp.display(), image.dir.display()),
                    e,
                )
            })
        });
    if let Err(e) = built {
        let _ = remove_build_dir(&tmp);
        return Err(e);
    }
    progress(&format!(
        "{} layer ready in {} s: {}",
        what.layer,
        started.elapsed().as_secs(),
        image.dir.display()
    ));
    drop(lock);
    Ok(image)
}

/// Lists every regular file of a finished build with its size, synced, then the marker.
fn write_marker(dir: &Path, what: &Build) -> Result<()> {
    let mut files = Vec::new();
    let entries =
        fs::read_dir(dir).map_err(|e| LabError::io(format!("cannot read {}", dir.display()), e))?;
    for e in entries.flatten() {
        let md = e
            .metadata()
            .map_err(|err| LabError::io(format!("cannot stat {}", e.path().display()), err))?;
        if md.is_file() {
            // On disk before the marker says so (a power cut must not leave a marked hole).
            fs::File::open(e.path())
                .and_then(|f| f.sync_all())
                .map_err(|err| LabError::io(format!("cannot sync {}", e.path().display()), err))?;
            files.push((e.file_name().to_string_lossy().into_owned(), md.len()));
        }
    }
    files.sort();
    let marker = Marker {
        layer: what.layer,
        key: what.key.clone(),
        built_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        files,
    };
    let text = serde_json::to_string_pretty(&marker).expect("marker serializes") + "\n";
    let path = dir.join(MARKER);
    fs::write(&path, text)
        .and_then(|()| fs::File::open(&path).and_then(|f| f.sync_all()))
        .map_err(|e| LabError::CacheDir {
            path: path.clone(),
            detail: e.to_string(),
        })
}

/// Refuses to start a build that cannot fit: names the directory and both figures.
fn check_space(dir: &Path, need_mib: u64) -> Result<()> {
    match free_mib(dir) {
        Some(free) => space_verdict(dir, free, need_mib),
        None => Ok(()),
    }
}

pub(crate) fn space_verdict(dir: &Path, free_mib: u64, need_mib: u64) -> Result<()> {
    if free_mib < need_mib {
        return Err(LabError::NoSpace {
            path: dir.to_path_buf(),
            need_mib,
            free_mib,
        });
    }
    Ok(())
}

/// Free MiB for an unprivileged writer on the file system holding `dir`.
pub(crate) fn free_mib(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64) / (1024 * 1024))
}

fn build(recipe: &Recipe, tmp: &Path, progress: &dyn Fn(&str)) -> Result<()> {
    fs::create_dir_all(tmp)
        .map_err(|e| LabError::io(format!("cannot create {}", tmp.display()), e))?;
    let rootfs = tmp.join("rootfs");
    let packages: Vec<&str> = recipe.packages.iter().map(String::as_str).collect();
    run_logged(
        &argv::debootstrap(&recipe.suite, &packages, &rootfs, &recipe.mirror),
        &tmp.join("debootstrap.log"),
        &format!(
            "check that {} is reachable, or set PROVISION_LAB_MIRROR to a Debian mirror you can reach",
            recipe.mirror
        ),
    )?;
    progress("debootstrap done; writing the lab's files and the disk image");
    apply_files(recipe, &rootfs)?;
    let (kernel, initrd) = find_kernel(&rootfs)?;
    copy_readable(&kernel, &tmp.join("vmlinuz"))?;
    copy_readable(&initrd, &tmp.join("initrd.img"))?;
    let raw = tmp.join("base.raw");
    run(&argv::mkfs_ext4(&rootfs, &raw, recipe.image_size_mib), "")?;
    run(&argv::qemu_img_convert(&raw, &tmp.join("base.qcow2")), "")?;
    fs::remove_file(&raw)
        .map_err(|e| LabError::io(format!("cannot remove {}", raw.display()), e))?;
    remove_build_dir(&rootfs)?;
    let recipe_txt = tmp.join("recipe.txt");
    fs::write(&recipe_txt, recipe.text())
        .map_err(|e| LabError::io(format!("cannot write {}", recipe_txt.display()), e))?;
    Ok(())
}

/// Writes the recipe's files into `rootfs` and removes what it says to remove.
pub(crate) fn apply_files(recipe: &Recipe, rootfs: &Path) -> Result<()> {
    for f in recipe.files() {
        let dest = safe_join(rootfs, f.path)?;
        let parent = dest.parent().expect("joined path has a parent");
        fs::create_dir_all(parent)
            .map_err(|e| LabError::io(format!("cannot create {}", parent.display()), e))?;
        // Replace, never write through: debootstrap may have left a symlink (resolv.conf).
        if dest.symlink_metadata().is_ok() {
            fs::remove_file(&dest)
                .map_err(|e| LabError::io(format!("cannot replace {}", dest.display()), e))?;
        }
        match &f.content {
            Content::File { text, mode } => {
                use std::os::unix::fs::PermissionsExt;
                fs::write(&dest, text)
                    .map_err(|e| LabError::io(format!("cannot write {}", dest.display()), e))?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(*mode))
                    .map_err(|e| LabError::io(format!("cannot chmod {}", dest.display()), e))?;
            }
            Content::Symlink(target) => std::os::unix::fs::symlink(target, &dest)
                .map_err(|e| LabError::io(format!("cannot link {}", dest.display()), e))?,
        }
    }
    for pattern in REMOVALS {
        for path in expand(rootfs, pattern)? {
            let meta = path.symlink_metadata();
            let res = match meta {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
                Ok(_) => fs::remove_file(&path),
                Err(_) => continue,
            };
            res.map_err(|e| LabError::io(format!("cannot remove {}", path.display()), e))?;
        }
    }
    Ok(())
}

/// `rootfs` + an absolute in-VM path, refusing to pass through a symlink (which could point
/// at the host's own files, since the links are absolute inside the VM).
pub(crate) fn safe_join(rootfs: &Path, vm_path: &str) -> Result<PathBuf> {
    let mut out = rootfs.to_path_buf();
    for c in Path::new(vm_path).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(part) => {
                if out != rootfs
                    && out
                        .symlink_metadata()
                        .is_ok_and(|m| m.file_type().is_symlink())
                {
                    return Err(LabError::BadPath {
                        path: out,
                        reason: format!("a symlink in the image on the way to {vm_path}"),
                    });
                }
                out.push(part);
            }
            _ => {
                return Err(LabError::BadPath {
                    path: PathBuf::from(vm_path),
                    reason: "recipe paths are absolute and plain".into(),
                });
            }
        }
    }
    Ok(out)
}

/// Paths matching a pattern whose last component may hold one `*`.
fn expand(rootfs: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    let dir = safe_join(rootfs, if dir.is_empty() { "/" } else { dir })?;
    let Some((pre, post)) = name.split_once('*') else {
        return Ok(vec![dir.join(name)]);
    };
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.len() >= pre.len() + post.len() && n.starts_with(pre) && n.ends_with(post) {
                found.push(e.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The kernel and its initrd in /boot (debootstrap installs exactly one).
pub(crate) fn find_kernel(rootfs: &Path) -> Result<(PathBuf, PathBuf)> {
    let boot = rootfs.join("boot");
    let mut kernels = expand(rootfs, "/boot/vmlinuz-*")?;
    kernels.sort();
    let Some(kernel) = kernels.pop() else {
        return Err(LabError::BadPath {
            path: boot,
            reason: "debootstrap installed no kernel (linux-image-amd64)".into(),
        });
    };
    let version = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    let initrd = boot.join(format!("initrd.img-{version}"));
    if !initrd.is_file() {
        return Err(LabError::BadPath {
            path: initrd,
            reason: "no initrd for the kernel (initramfs-tools failed?)".into(),
        });
    }
    Ok((kernel, initrd))
}

fn copy_readable(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::copy(from, to).map_err(|e| LabError::io(format!("cannot copy {}", from.display()), e))?;
    // Readable by all: VMs may be booted by users other than the one who built the cache.
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))
        .map_err(|e| LabError::io(format!("cannot chmod {}", to.display()), e))
}

/// Removes a build directory, first detaching mounts an interrupted debootstrap left inside it
/// (removing through a mounted /proc or /dev would reach the host's).
pub(crate) fn remove_build_dir(dir: &Path) -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut inside = mounts_under(&mounts, dir);
    inside.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for m in &inside {
        run(
            &argv::umount_lazy(m),
            "unmount it by hand, then remove the directory",
        )?;
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LabError::io(format!("cannot remove {}", dir.display()), e)),
    }
}

/// Mount points at or below `dir`, from /proc/self/mounts text (octal escapes decoded).
pub(crate) fn mounts_under(mounts: &str, dir: &Path) -> Vec<PathBuf> {
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(dir))
        .collect()
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::DEFAULT_MIRROR;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn apply_files_writes_replaces_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc/ssh")).unwrap();
        fs::write(root.join("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        fs::write(root.join("etc/ssh/ssh_host_ed25519_key.pub"), "pub").unwrap();
        fs::write(root.join("etc/ssh/sshd_config"), "keep").unwrap();
        fs::write(root.join("etc/machine-id"), "0123456789abcdef\n").unwrap();
        // A symlink pointing outside must be replaced, not written through.
        let outside = dir.path().join("outside.conf");
        fs::write(&outside, "host's").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/resolv.conf")).unwrap();

        apply_files(&Recipe::new(Some(DEFAULT_MIRROR)), root).unwrap();

        assert_eq!(fs::read_to_string(root.join("etc/machine-id")).unwrap(), "");
        assert_eq!(
            fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "debian\n"
        );
        assert_eq!(
            fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
            "nameserver 10.0.2.3\n"
        );
        assert_eq!(fs::read_to_string(&outside).unwrap(), "host's");
        assert!(!root.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(!root.join("etc/ssh/ssh_host_ed25519_key.pub").exists());
        assert_eq!(
            fs::read_to_string(root.join("etc/ssh/sshd_config")).unwrap(),
            "keep"
        );
        let init = root.join("usr/local/sbin/provision-lab-init");
        assert_eq!(
            fs::metadata(&init).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let link =
            root.join("etc/systemd/system/multi-user.target.wants/provision-lab-init.service");
        assert_eq!(
            fs::read_link(link).unwrap(),
            PathBuf::from("/etc/systemd/system/provision-lab-init.service")
        );
    }

    #[test]
    fn safe_join_refuses_symlinked_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::os::unix::fs::symlink("/", root.join("etc")).unwrap();
        let err = safe_join(root, "/etc/hostname").unwrap_err().to_string();
        assert!(err.contains("a symlink in the image"), "{err}");
        assert_eq!(safe_join(root, "/usr/x").unwrap(), root.join("usr/x"));
        assert!(safe_join(root, "/usr/../etc").is_err());
    }

    #[test]
    fn finds_kernel_and_matching_initrd() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        fs::create_dir_all(&boot).unwrap();
        assert!(
            find_kernel(dir.path())
                .unwrap_err()
                .to_string()
                .contains("no kernel")
        );
        fs::write(boot.join("vmlinuz-6.1.0-50-amd64"), "k").unwrap();
        assert!(
            find_kernel(dir.path())
                .unwrap_err()
                .to_string()
                .contains("no initrd")
        );
        fs::write(boot.join("initrd.img-6.1.0-50-amd64"), "i").unwrap();
        let (k, i) = find_kernel(dir.path()).unwrap();
        assert_eq!(k, boot.join("vmlinuz-6.1.0-50-amd64"));
        assert_eq!(i, boot.join("initrd.img-6.1.0-50-amd64"));
    }

    #[test]
    fn mount_parsing() {
        let mounts = "proc /proc proc rw 0 0\n\
                      proc /c/images/.build-x-1/rootfs/proc proc rw 0 0\n\
                      tmpfs /c/images/.build-x-1/rootfs/my\\040dir tmpfs rw 0 0\n\
                      tmpfs /c/images/.build-x-10 tmpfs rw 0 0\n";
        assert_eq!(
            mounts_under(mounts, Path::new("/c/images/.build-x-1")),
            [
                PathBuf::from("/c/images/.build-x-1/rootfs/proc"),
                PathBuf::from("/c/images/.build-x-1/rootfs/my dir")
            ]
        );
    }

    /// A stand-in build: the files an image has, after a pause, counting calls.
    fn fake_build(tmp: &Path, calls: &std::sync::atomic::AtomicUsize) -> Result<()> {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(300));
        fs::create_dir_all(tmp).unwrap();
        for f in ["base.qcow2", "vmlinuz", "initrd.img", "recipe.txt"] {
            fs::write(tmp.join(f), f).unwrap();
        }
        Ok(())
    }

    fn bare(r: &Recipe) -> Build {
        Build {
            layer: LayerName::Bare,
            key: r.hash(),
            need_mib: 1,
            describe: "test".into(),
        }
    }

    #[test]
    fn truncated_or_unmarked_layers_are_rebuilt_not_used() {
        let cache = tempfile::tempdir().unwrap();
        let r = Recipe::new(Some(DEFAULT_MIRROR));
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let img =
            ensure_with(&bare(&r), cache.path(), &|_| {}, &|t| fake_build(t, &calls)).unwrap();
        let marker = img.marker().expect("marked");
        assert_eq!(marker.layer, LayerName::Bare);
        assert_eq!(marker.key, r.hash());
        assert_eq!(
            marker
                .files
                .iter()
                .map(|f| f.0.as_str())
                .collect::<Vec<_>>(),
            ["base.qcow2", "initrd.img", "recipe.txt", "vmlinuz"]
        );
        // A disk cut short (a full disk, a copy killed midway) no longer matches its marker.
        fs::write(img.qcow2(), "base").unwrap();
        assert!(!is_cached(&r, cache.path()));
        ensure_with(&bare(&r), cache.path(), &|_| {}, &|t| fake_build(t, &calls)).unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(fs::read_to_string(img.qcow2()).unwrap(), "base.qcow2");
        // Every file there but no marker: not a layer.
        fs::remove_file(img.dir.join(MARKER)).unwrap();
        assert!(!is_cached(&r, cache.path()));
        ensure_with(&bare(&r), cache.path(), &|_| {}, &|t| fake_build(t, &calls)).unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(is_cached(&r, cache.path()));
        // A marker that is not JSON is no marker either.
        fs::write(img.dir.join(MARKER), "{").unwrap();
        assert!(!is_cached(&r, cache.path()));
    }

    #[test]
    fn no_space_and_unwritable_caches_are_clear_errors() {
        let err = space_verdict(Path::new("/c/images"), 100, 4096)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "not enough space in /c/images to build a lab image layer: 4096 MiB needed, 100 MiB free; \
             free space there or point PROVISION_CACHE_DIR (or --cache-dir) elsewhere"
        );
        assert!(space_verdict(Path::new("/c"), 4096, 4096).is_ok());
        // A cache root below a regular file cannot be created: the error names the path,
        // and the build never ran.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let r = Recipe::new(Some(DEFAULT_MIRROR));
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let err = ensure_with(&bare(&r), &file, &|_| {}, &|t| fake_build(t, &calls))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "cannot write the lab's image cache at {}/images:",
                file.display()
            )),
            "{err}"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Too little space: refused before building, nothing left behind.
        let huge = Build {
            need_mib: u64::MAX / 2,
            ..bare(&r)
        };
        let err = ensure_with(&huge, dir.path(), &|_| {}, &|t| fake_build(t, &calls)).unwrap_err();
        assert!(matches!(err, LabError::NoSpace { .. }), "{err}");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        let left: Vec<_> = fs::read_dir(dir.path().join("images"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [format!("{}.lock", r.hash())]);
    }

    #[test]
    fn concurrent_ensures_build_once() {
        let cache = tempfile::tempdir().unwrap();
        let r = Recipe::new(Some(DEFAULT_MIRROR));
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let images: Vec<Image> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        ensure_with(&bare(&r), cache.path(), &|_| {}, &|t| fake_build(t, &calls))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        });
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(images.iter().all(|i| *i == image_for(&r, cache.path())));
        assert!(is_cached(&r, cache.path()));
    }

    #[test]
    fn failed_and_crashed_builds_leave_no_image() {
        let cache = tempfile::tempdir().unwrap();
        let r = Recipe::new(Some(DEFAULT_MIRROR));
        let images = cache.path().join("images");
        // A build that fails half-way: no image, no temporary directory left.
        let err = ensure_with(&bare(&r), cache.path(), &|_| {}, &|t| {
            fs::create_dir_all(t.join("rootfs")).unwrap();
            Err(LabError::NeedsRoot)
        });
        assert!(matches!(err, Err(LabError::NeedsRoot)));
        assert!(!is_cached(&r, cache.path()));
        let left: Vec<_> = fs::read_dir(&images)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [format!("{}.lock", r.hash())]);
        // What a killed process leaves behind is cleared by the next build.
        let crashed = images.join(format!(".build-{}-999999", r.hash()));
        fs::create_dir_all(crashed.join("rootfs/etc")).unwrap();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        ensure_with(&bare(&r), cache.path(), &|_| {}, &|t| fake_build(t, &calls)).unwrap();
        assert!(!crashed.exists());
        assert!(is_cached(&r, cache.path()));
    }

    #[test]
    fn image_dir_is_keyed_by_recipe_hash() {
        let r = Recipe::new(Some(DEFAULT_MIRROR));
        let img = image_for(&r, Path::new("/cache"));
        assert_eq!(
            img.dir,
            PathBuf::from(format!("/cache/images/{}", r.hash()))
        );
        assert_eq!(img.qcow2(), img.dir.join("base.qcow2"));
        assert!(!is_cached(&r, Path::new("/nonexistent")));
    }
}
