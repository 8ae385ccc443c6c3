//! Pure builders of every external command the lab runs (qemu, qemu-img, debootstrap, mkfs.ext4,
//! ssh-keygen, ssh, ssh-keyscan, umount), as argv vectors tested as exact values.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::Path;

/// Multicast group of the private network; each lab has its own port on it.
pub const MCAST_GROUP: &str = "230.0.0.1";

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn strs(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// How qemu runs the guest CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// Software emulation, multi-threaded; slower, works everywhere.
    Tcg,
}

impl Accel {
    /// qemu's flags for this accelerator. Under KVM `-cpu max` is the host's features (`-cpu host`
    /// aborts on some hosts). Under TCG the plain `qemu64` model: measured on one ready VM it cut
    /// 300 forks from 3.2-4.5 s to 2.5 s and file-heavy work by 15-30% against `-cpu max`, whose
    /// extra features TCG emulates slowly (bench/README.md, "TCG tuning").
    pub fn qemu_args(self) -> Vec<String> {
        let (accel, cpu) = match self {
            Accel::Kvm => ("kvm", "max"),
            Accel::Tcg => ("tcg,thread=multi", "qemu64"),
        };
        ["-accel", accel, "-cpu", cpu].map(String::from).into()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Everything that makes one VM's qemu command line.
#[derive(Debug, Clone)]
pub struct QemuVm<'a> {
    /// Shown in `ps`; also identifies the process as this lab's.
    pub name: String,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Kernel command line (see `kernel_cmdline`).
    pub append: String,
    /// The VM's qcow2 overlay.
    pub disk: &'a Path,
    /// Host port forwarded from 127.0.0.1 to the VM's port 22.
    pub ssh_port: u16,
    /// Port of the lab's multicast group: the private network.
    pub mcast_port: u16,
    /// MAC of the private NIC; unique within the lab.
    pub private_mac: String,
    pub console: &'a Path,
    pub pidfile: &'a Path,
}

/// qemu-system-x86_64 for one daemonized VM: management NIC (user-mode NAT with the SSH
/// forward) first so it is eth0, private NIC (multicast over loopback) second so it is eth1.
pub fn qemu(vm: &QemuVm) -> Vec<String> {
    let mut argv = strs(&["qemu-system-x86_64", "-name"]);
    argv.push(vm.name.clone());
    argv.extend(vm.accel.qemu_args());
    argv.extend([
        "-m".into(),
        vm.memory_mib.to_string(),
        "-smp".into(),
        vm.cpus.to_string(),
        "-kernel".into(),
        p(vm.kernel),
        "-initrd".into(),
        p(vm.initrd),
        "-append".into(),
        vm.append.clone(),
        "-drive".into(),
        format!("file={},if=virtio,format=qcow2", p(vm.disk)),
        "-netdev".into(),
        format!("user,id=n0,hostfwd=tcp:127.0.0.1:{}-:22", vm.ssh_port),
        // romfile= (empty): no iPXE option ROM; the VMs boot their kernel directly.
        "-device".into(),
        "virtio-net-pci,netdev=n0,romfile=".into(),
        "-netdev".into(),
        format!(
            "socket,id=n1,mcast={MCAST_GROUP}:{},localaddr=127.0.0.1",
            vm.mcast_port
        ),
        "-device".into(),
        format!("virtio-net-pci,netdev=n1,mac={},romfile=", vm.private_mac),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        format!("file:{}", p(vm.console)),
        "-daemonize".into(),
        "-pidfile".into(),
        p(vm.pidfile),
    ]);
    argv
}

/// Kernel command line: the root disk, console on the serial port (the console log), classic
/// interface names (eth0/eth1), and what the first-boot unit applies: the private address
/// and the lab's public key (`type:base64`, no space, so it stays one parameter).
pub fn kernel_cmdline(
    ip: Ipv4Addr,
    prefix: u8,
    key_type: &str,
    key_base64: &str,
    apt_proxy: Option<&str>,
) -> String {
    let mut line = format!(
        "root=/dev/vda rw console=ttyS0 net.ifnames=0 lab.ip={ip}/{prefix} lab.sshkey={key_type}:{key_base64}"
    );
    // provision-lab-init.sh points apt at it (or removes a proxy an earlier boot had).
    if let Some(url) = apt_proxy {
        line.push_str(" lab.aptproxy=");
        line.push_str(url);
    }
    line
}

/// MAC of the private NIC, from the private address so it is unique within the lab.
pub fn private_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("52:54:00:aa:{:02x}:{:02x}", o[2], o[3])
}

/// A copy-on-write overlay over the cached base image.
pub fn qemu_img_overlay(base: &Path, overlay: &Path) -> Vec<String> {
    let mut argv = strs(&["qemu-img", "create", "-q", "-f", "qcow2", "-b"]);
    argv.extend([p(base), "-F".into(), "qcow2".into(), p(overlay)]);
    argv
}

/// Raw ext4 image to qcow2 (sparse, so the cache holds only what the files need).
/// Flattens an overlay and its backing chain into one standalone qcow2 (a layer's disk).
pub fn qemu_img_flatten(overlay: &Path, out: &Path) -> Vec<String> {
    let mut argv = strs(&["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2"]);
    argv.extend([p(overlay), p(out)]);
    argv
}

pub fn qemu_img_convert(raw: &Path, qcow2: &Path) -> Vec<String> {
    let mut argv = strs(&["qemu-img", "convert", "-f", "raw", "-O", "qcow2"]);
    argv.extend([p(raw), p(qcow2)]);
    argv
}

/// debootstrap of a minimal Debian into `rootfs`.
pub fn debootstrap(suite: &str, packages: &[&str], rootfs: &Path, mirror: &str) -> Vec<String> {
    let mut argv = strs(&["debootstrap", "--variant=minbase"]);
    argv.push(format!("--include={}", packages.join(",")));
    argv.extend([suite.to_string(), p(rootfs), mirror.to_string()]);
    argv
}

/// An ext4 file system image filled from a directory (no loop mount needed).
pub fn mkfs_ext4(rootfs: &Path, image: &Path, size_mib: u32) -> Vec<String> {
    let mut argv = strs(&["mkfs.ext4", "-F", "-q", "-L", "provision-lab", "-d"]);
    argv.extend([p(rootfs), p(image), format!("{size_mib}M")]);
    argv
}

/// The lab's own key pair: ed25519, no passphrase (it only opens the lab's VMs).
pub fn ssh_keygen(key: &Path, comment: &str) -> Vec<String> {
    let mut argv = strs(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C"]);
    argv.extend([comment.to_string(), "-f".into(), p(key)]);
    argv
}

/// OpenSSH to a lab VM: the lab key only, the lab's known_hosts only, strict checking, no prompts.
pub fn ssh(identity: &Path, known_hosts: &Path, port: u16, cmd: &[String]) -> Vec<String> {
    let mut argv = strs(&["ssh", "-i"]);
    argv.push(p(identity));
    for opt in [
        "IdentitiesOnly=yes".to_string(),
        format!("UserKnownHostsFile={}", p(known_hosts)),
        "GlobalKnownHostsFile=/dev/null".into(),
        "StrictHostKeyChecking=yes".into(),
        "BatchMode=yes".into(),
        "ConnectTimeout=30".into(),
        "LogLevel=ERROR".into(),
    ] {
        argv.extend(["-o".into(), opt]);
    }
    argv.extend(["-p".into(), port.to_string(), "root@127.0.0.1".into()]);
    if !cmd.is_empty() {
        // ssh parses options again after the destination: `--` keeps a command like `-x` a command.
        argv.push("--".into());
        argv.extend(cmd.iter().cloned());
    }
    argv
}

/// Fallback host-key collection over the network (trust on first use, on loopback).
pub fn ssh_keyscan(port: u16) -> Vec<String> {
    // 30 s: a VM booting under TCG beside others can take more than 10 s per key exchange.
    let mut argv = strs(&["ssh-keyscan", "-T", "30", "-p"]);
    argv.extend([port.to_string(), "127.0.0.1".into()]);
    argv
}

/// Boots the kernel alone under KVM until it panics for want of a root disk: exiting in time
/// proves KVM runs a guest here (on some hosts a KVM guest hangs without a word).
pub fn kvm_probe(kernel: &Path) -> Vec<String> {
    let mut argv = strs(&["qemu-system-x86_64"]);
    argv.extend(Accel::Kvm.qemu_args());
    argv.extend(strs(&[
        "-m",
        "256",
        "-smp",
        "1",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
    ]));
    argv.extend([
        p(kernel),
        "-append".into(),
        "console=ttyS0 panic=-1 root=/dev/provision-lab-probe".into(),
    ]);
    argv
}

/// Detaches a mount left behind by an interrupted debootstrap, so its directory can be removed.
pub fn umount_lazy(path: &Path) -> Vec<String> {
    vec!["umount".into(), "-l".into(), p(path)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_argv_is_exact() {
        let vm = QemuVm {
            name: "provision-lab:lab:manager-1".into(),
            accel: Accel::Tcg,
            memory_mib: 1536,
            cpus: 1,
            kernel: Path::new("/c/img/vmlinuz"),
            initrd: Path::new("/c/img/initrd.img"),
            append: "root=/dev/vda".into(),
            disk: Path::new("/s/manager-1.qcow2"),
            ssh_port: 22201,
            mcast_port: 41000,
            private_mac: "52:54:00:aa:00:0c".into(),
            console: Path::new("/s/manager-1.console"),
            pidfile: Path::new("/s/manager-1.pid"),
        };
        assert_eq!(
            qemu(&vm),
            [
                "qemu-system-x86_64",
                "-name",
                "provision-lab:lab:manager-1",
                "-accel",
                "tcg,thread=multi",
                "-cpu",
                "qemu64",
                "-m",
                "1536",
                "-smp",
                "1",
                "-kernel",
                "/c/img/vmlinuz",
                "-initrd",
                "/c/img/initrd.img",
                "-append",
                "root=/dev/vda",
                "-drive",
                "file=/s/manager-1.qcow2,if=virtio,format=qcow2",
                "-netdev",
                "user,id=n0,hostfwd=tcp:127.0.0.1:22201-:22",
                "-device",
                "virtio-net-pci,netdev=n0,romfile=",
                "-netdev",
                "socket,id=n1,mcast=230.0.0.1:41000,localaddr=127.0.0.1",
                "-device",
                "virtio-net-pci,netdev=n1,mac=52:54:00:aa:00:0c,romfile=",
                "-display",
                "none",
                "-serial",
                "file:/s/manager-1.console",
                "-daemonize",
                "-pidfile",
                "/s/manager-1.pid",
            ]
        );
        let kvm = QemuVm {
            accel: Accel::Kvm,
            ..vm
        };
        assert_eq!(qemu(&kvm)[3..7], ["-accel", "kvm", "-cpu", "max"]);
    }

    #[test]
    fn kernel_cmdline_and_mac() {
        assert_eq!(
            kernel_cmdline(
                Ipv4Addr::new(10, 10, 0, 11),
                24,
                "ssh-ed25519",
                "AAAAC3Nz",
                None
            ),
            "root=/dev/vda rw console=ttyS0 net.ifnames=0 lab.ip=10.10.0.11/24 lab.sshkey=ssh-ed25519:AAAAC3Nz"
        );
        assert_eq!(
            kernel_cmdline(
                Ipv4Addr::new(10, 10, 0, 11),
                24,
                "ssh-ed25519",
                "AAAAC3Nz",
                Some("http://10.0.2.2:23142/")
            ),
            "root=/dev/vda rw console=ttyS0 net.ifnames=0 lab.ip=10.10.0.11/24 lab.sshkey=ssh-ed25519:AAAAC3Nz lab.aptproxy=http://10.0.2.2:23142/"
        );
        assert_eq!(
            private_mac(Ipv4Addr::new(10, 10, 1, 11)),
            "52:54:00:aa:01:0b"
        );
    }

    #[test]
    fn image_commands() {
        assert_eq!(
            qemu_img_overlay(Path::new("/c/base.qcow2"), Path::new("/s/w.qcow2")),
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "/c/base.qcow2",
                "-F",
                "qcow2",
                "/s/w.qcow2"
            ]
        );
        assert_eq!(
            qemu_img_convert(Path::new("/t/base.raw"), Path::new("/t/base.qcow2")),
            [
                "qemu-img",
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "/t/base.raw",
                "/t/base.qcow2"
            ]
        );
        assert_eq!(
            debootstrap(
                "bookworm",
                &["systemd-sysv", "udev"],
                Path::new("/t/rootfs"),
                "http://deb.debian.org/debian"
            ),
            [
                "debootstrap",
                "--variant=minbase",
                "--include=systemd-sysv,udev",
                "bookworm",
                "/t/rootfs",
                "http://deb.debian.org/debian"
            ]
        );
        assert_eq!(
            mkfs_ext4(Path::new("/t/rootfs"), Path::new("/t/base.raw"), 4096),
            [
                "mkfs.ext4",
                "-F",
                "-q",
                "-L",
                "provision-lab",
                "-d",
                "/t/rootfs",
                "/t/base.raw",
                "4096M"
            ]
        );
        assert_eq!(
            umount_lazy(Path::new("/t/rootfs/proc")),
            ["umount", "-l", "/t/rootfs/proc"]
        );
    }

    #[test]
    fn ssh_commands() {
        assert_eq!(
            ssh_keygen(Path::new("/s/id_ed25519"), "provision-lab-lab"),
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "provision-lab-lab",
                "-f",
                "/s/id_ed25519"
            ]
        );
        let base = [
            "ssh",
            "-i",
            "/s/id_ed25519",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "UserKnownHostsFile=/s/known_hosts",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=30",
            "-o",
            "LogLevel=ERROR",
            "-p",
            "22201",
            "root@127.0.0.1",
        ];
        let id = Path::new("/s/id_ed25519");
        let kh = Path::new("/s/known_hosts");
        assert_eq!(ssh(id, kh, 22201, &[]), base);
        let with_cmd = ssh(id, kh, 22201, &["cat".into(), "/etc/machine-id".into()]);
        assert_eq!(with_cmd[..base.len()], base);
        assert_eq!(with_cmd[base.len()..], ["--", "cat", "/etc/machine-id"]);
        assert_eq!(
            ssh_keyscan(22201),
            ["ssh-keyscan", "-T", "30", "-p", "22201", "127.0.0.1"]
        );
    }

    #[test]
    fn kvm_probe_argv() {
        assert_eq!(
            kvm_probe(Path::new("/c/vmlinuz")),
            [
                "qemu-system-x86_64",
                "-accel",
                "kvm",
                "-cpu",
                "max",
                "-m",
                "256",
                "-smp",
                "1",
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
                "-serial",
                "stdio",
                "-kernel",
                "/c/vmlinuz",
                "-append",
                "console=ttyS0 panic=-1 root=/dev/provision-lab-probe"
            ]
        );
    }
}
