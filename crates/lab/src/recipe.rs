//! The base image's recipe as data: debootstrap suite, mirror and packages, and every file the lab
//! writes into or removes from the root file system. Its hash keys the image cache.

use sha2::{Digest, Sha256};

/// Debian mirror debootstrap uses unless PROVISION_LAB_MIRROR says otherwise.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Env var naming another mirror (e.g. a local apt cache on 127.0.0.1).
pub const ENV_MIRROR: &str = "PROVISION_LAB_MIRROR";
/// Debian release of the VMs.
pub const SUITE: &str = "bookworm";
/// Size of the VMs' root file system (sparse: unused space costs nothing).
pub const IMAGE_SIZE_MIB: u32 = 8192;

/// Bumped whenever the build steps change in a way the recipe text does not show.
const RECIPE_FORMAT: u32 = 2;

/// Packages on top of minbase: a bootable, SSH-reachable server and nothing the playbook
/// installs (no docker, no NFS).
pub const PACKAGES: [&str; 10] = [
    "systemd-sysv",
    "udev",
    "openssh-server",
    "linux-image-amd64",
    "initramfs-tools",
    "iproute2",
    "ifupdown",
    "isc-dhcp-client",
    "sudo",
    "ca-certificates",
];

/// dpkg settings of the lab's images only: no fsync per file, no docs or man pages.
const LAB_DPKG_CFG: &str = "# provision lab only: faster package installs under emulation.\n\
force-unsafe-io\n\
path-exclude=/usr/share/man/*\n\
path-exclude=/usr/share/doc/*\n\
path-include=/usr/share/doc/*/copyright\n\
path-exclude=/usr/share/info/*\n";

const INIT_SCRIPT: &str = include_str!("../files/provision-lab-init.sh");
const INIT_UNIT: &str = include_str!("../files/provision-lab-init.service");

/// What goes at a path in the root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A regular file with its mode.
    File { text: String, mode: u32 },
    /// A symbolic link to the target.
    Symlink(String),
}

/// One path written into the root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeFile {
    /// Absolute path inside the VM.
    pub path: &'static str,
    pub content: Content,
}

/// Paths removed from the root file system (a `*` matches within the last component).
pub const REMOVALS: [&str; 4] = [
    // Every VM makes its own host keys at first boot.
    "/etc/ssh/ssh_host_*",
    "/var/lib/dbus/machine-id",
    // Downloaded .deb files: only size.
    "/var/cache/apt/archives/*.deb",
    // debootstrap's own log directory, if a step left it.
    "/debootstrap",
];

/// How the base image is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub suite: String,
    /// Mirror debootstrap downloads from (as seen from the host).
    pub mirror: String,
    pub packages: Vec<String>,
    pub image_size_mib: u32,
}

impl Recipe {
    /// The standard recipe; `mirror` None means PROVISION_LAB_MIRROR, else deb.debian.org.
    pub fn new(mirror: Option<&str>) -> Recipe {
        let env = std::env::var(ENV_MIRROR)
            .ok()
            .filter(|m| !m.trim().is_empty());
        let mirror = mirror
            .map(str::to_string)
            .or(env)
            .unwrap_or_else(|| DEFAULT_MIRROR.into());
        Recipe {
            suite: SUITE.into(),
            mirror: mirror.trim().trim_end_matches('/').to_string(),
            packages: PACKAGES.iter().map(|s| s.to_string()).collect(),
            image_size_mib: IMAGE_SIZE_MIB,
        }
    }

    /// The mirror as the VMs reach it: qemu's NAT shows the host's loopback as 10.0.2.2.
    pub fn guest_mirror(&self) -> String {
        let Some((scheme, rest)) = self.mirror.split_once("://") else {
            return self.mirror.clone();
        };
        let host_end = rest.find([':', '/']).unwrap_or(rest.len());
        let host = &rest[..host_end];
        if host == "localhost" || host.starts_with("127.") {
            format!("{scheme}://10.0.2.2{}", &rest[host_end..])
        } else {
            self.mirror.clone()
        }
    }

    /// The VMs' APT sources: the mirror's release and updates, plus security when the mirror is
    /// Debian's own (a local mirror often lacks it, and a failing source breaks apt-get update).
    pub fn sources_list(&self) -> String {
        let m = self.guest_mirror();
        let s = &self.suite;
        let mut text = format!("deb {m} {s} main\ndeb {m} {s}-updates main\n");
        if self.mirror == DEFAULT_MIRROR {
            text.push_str(&format!(
                "deb http://deb.debian.org/debian-security {s}-security main\n"
            ));
        }
        text
    }

    /// Every file the lab puts into the root file system after debootstrap.
    pub fn files(&self) -> Vec<RecipeFile> {
        let file = |path, text: &str, mode| RecipeFile {
            path,
            content: Content::File {
                text: text.to_string(),
                mode,
            },
        };
        vec![
            // Generic: the playbook sets the real host name.
            file("/etc/hostname", "debian\n", 0o644),
            file(
                "/etc/hosts",
                "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
                0o644,
            ),
            file(
                "/etc/fstab",
                "/dev/vda / ext4 rw,errors=remount-ro 0 1\n",
                0o644,
            ),
            // eth0 is qemu's NAT (management, internet); eth1 comes from the first-boot unit.
            file(
                "/etc/network/interfaces",
                "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n\n\
                 source /etc/network/interfaces.d/*\n",
                0o644,
            ),
            // qemu's NAT DNS; dhclient rewrites it with the same address.
            file("/etc/resolv.conf", "nameserver 10.0.2.3\n", 0o644),
            file("/etc/apt/sources.list", &self.sources_list(), 0o644),
            file(
                "/etc/ssh/sshd_config.d/provision-lab.conf",
                "# provision lab: root logs in with the lab's key only.\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
                0o644,
            ),
            // Empty, not absent: systemd makes a new machine-id at each VM's first boot.
            file("/etc/machine-id", "", 0o444),
            file("/usr/local/sbin/provision-lab-init", INIT_SCRIPT, 0o755),
            file(
                "/etc/systemd/system/provision-lab-init.service",
                INIT_UNIT,
                0o644,
            ),
            RecipeFile {
                path: "/etc/systemd/system/multi-user.target.wants/provision-lab-init.service",
                content: Content::Symlink("/etc/systemd/system/provision-lab-init.service".into()),
            },
            // Lab-only speed-ups (never on real servers): under TCG every fsync, man page and
            // initramfs rebuild costs seconds to minutes.
            file("/etc/dpkg/dpkg.cfg.d/provision-lab", LAB_DPKG_CFG, 0o644),
            // The VMs boot the kernel and initrd kept beside the image, never the ones in /boot.
            file(
                "/etc/initramfs-tools/update-initramfs.conf",
                "# provision lab: VMs boot the initrd kept beside the image.\nupdate_initramfs=no\nbackup_initramfs=no\n",
                0o644,
            ),
            file(
                "/etc/apt/apt.conf.d/99provision-lab",
                "// provision lab: no translations to download.\nAcquire::Languages \"none\";\n",
                0o644,
            ),
            // No unattended apt run holding the dpkg lock in the middle of a test.
            RecipeFile {
                path: "/etc/systemd/system/apt-daily.timer",
                content: Content::Symlink("/dev/null".into()),
            },
            RecipeFile {
                path: "/etc/systemd/system/apt-daily-upgrade.timer",
                content: Content::Symlink("/dev/null".into()),
            },
        ]
    }

    /// The recipe as text: what the image cache is keyed on, and `recipe.txt` in the image dir.
    pub fn text(&self) -> String {
        let mut t = format!(
            "format {RECIPE_FORMAT}\nsuite {}\nmirror {}\npackages {}\nimage_size_mib {}\n",
            self.suite,
            self.mirror,
            self.packages.join(","),
            self.image_size_mib
        );
        for f in self.files() {
            match &f.content {
                Content::File { text, mode } => t.push_str(&format!(
                    "file {} {:o} {}\n{text}\n",
                    f.path,
                    mode,
                    text.len()
                )),
                Content::Symlink(target) => t.push_str(&format!("symlink {} {target}\n", f.path)),
            }
        }
        for r in REMOVALS {
            t.push_str(&format!("remove {r}\n"));
        }
        t
    }

    /// First 16 hex digits of the SHA-256 of `text()`: the image's cache directory name.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.text().as_bytes());
        hex::encode(&digest[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(mirror: &str) -> Recipe {
        Recipe::new(Some(mirror))
    }

    #[test]
    fn guest_mirror_rewrites_loopback_only() {
        assert_eq!(
            recipe("http://127.0.0.1:3142/debian").guest_mirror(),
            "http://10.0.2.2:3142/debian"
        );
        assert_eq!(
            recipe("http://localhost/debian/").guest_mirror(),
            "http://10.0.2.2/debian"
        );
        assert_eq!(recipe(DEFAULT_MIRROR).guest_mirror(), DEFAULT_MIRROR);
        assert_eq!(
            recipe("http://mirror.example/debian").guest_mirror(),
            "http://mirror.example/debian"
        );
    }

    #[test]
    fn sources_list() {
        assert_eq!(
            recipe(DEFAULT_MIRROR).sources_list(),
            "deb http://deb.debian.org/debian bookworm main\n\
             deb http://deb.debian.org/debian bookworm-updates main\n\
             deb http://deb.debian.org/debian-security bookworm-security main\n"
        );
        assert_eq!(
            recipe("http://127.0.0.1:3142/debian").sources_list(),
            "deb http://10.0.2.2:3142/debian bookworm main\ndeb http://10.0.2.2:3142/debian bookworm-updates main\n"
        );
    }

    #[test]
    fn image_is_bare_and_generic() {
        let r = recipe(DEFAULT_MIRROR);
        assert!(
            !r.packages
                .iter()
                .any(|p| p.contains("docker") || p.contains("nfs"))
        );
        let files = r.files();
        let get = |path: &str| {
            files
                .iter()
                .find(|f| f.path == path)
                .map(|f| f.content.clone())
        };
        assert_eq!(
            get("/etc/machine-id"),
            Some(Content::File {
                text: String::new(),
                mode: 0o444
            })
        );
        assert_eq!(
            get("/etc/hostname"),
            Some(Content::File {
                text: "debian\n".into(),
                mode: 0o644
            })
        );
        assert!(REMOVALS.contains(&"/etc/ssh/ssh_host_*"));
        // No key of any lab in the image: the key comes on each VM's kernel command line.
        assert!(!r.text().contains("ssh-ed25519 AAAA"));
        assert!(
            r.text()
                .contains("ExecStart=/usr/local/sbin/provision-lab-init")
        );
    }

    #[test]
    fn init_unit_runs_before_network_and_sshd() {
        assert!(INIT_UNIT.contains("Before=network-pre.target networking.service ssh.service"));
        assert!(
            INIT_SCRIPT.contains("ssh-keygen -q -t \"$t\" -N '' -f \"/etc/ssh/ssh_host_${t}_key\"")
        );
        assert!(INIT_SCRIPT.contains("lab.ip=*"));
    }

    #[test]
    fn hash_follows_the_recipe() {
        let a = recipe(DEFAULT_MIRROR);
        assert_eq!(a.hash().len(), 16);
        assert!(a.hash().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a.hash(), recipe(DEFAULT_MIRROR).hash());
        assert_eq!(a.hash(), recipe("http://deb.debian.org/debian/").hash());
        assert_ne!(a.hash(), recipe("http://127.0.0.1:3142/debian").hash());
        let mut b = a.clone();
        b.packages.push("vim".into());
        assert_ne!(a.hash(), b.hash());
    }
}
