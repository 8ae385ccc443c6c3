//! The lab's typed errors; each message says what to do next.

use std::path::PathBuf;

/// Result with the lab's error.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// A program the lab needs that is not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingProgram {
    /// Program looked up on PATH (and /usr/sbin, /sbin).
    pub program: &'static str,
    /// Debian package that ships it.
    pub package: &'static str,
}

/// Everything that can go wrong in the lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// Programs are missing; the message names the Debian packages and the apt command.
    #[error("{}", missing_message(.missing, *.bookworm))]
    MissingPrerequisites {
        missing: Vec<MissingProgram>,
        /// The host is Debian 12, where qemu-system-x86 must come from bookworm-backports.
        bookworm: bool,
    },

    /// Building the base image needs root (debootstrap, device nodes, file ownership).
    #[error(
        "building the lab's base image needs root (debootstrap creates device nodes and root-owned files): \
         run `provision lab image` once as root with the same PROVISION_CACHE_DIR, then `lab up` works as any user"
    )]
    NeedsRoot,

    /// LAB.toml is malformed or inconsistent.
    #[error("{}", spec_message(.source_name, *.line, *.column, .message))]
    Spec {
        /// File name, or "<embedded default>" / "<command line>".
        source_name: String,
        /// 1-based line and column when known.
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    /// A file operation failed. (The cause is in the message, not a `source()`, so that
    /// `{:#}` chains do not print it twice.)
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },

    /// An external program failed.
    #[error("`{command}` failed ({status}){}{}", stderr_tail(.stderr), hint_suffix(.hint))]
    Command {
        command: String,
        status: String,
        stderr: String,
        hint: String,
    },

    /// `lab up` on a lab whose VMs are still running.
    #[error(
        "lab `{name}` is already up in {}: use it, or run `provision lab down --dir {}` first",
        .dir.display(), .dir.display()
    )]
    AlreadyUp { name: String, dir: PathBuf },

    /// No lab state in the directory.
    #[error("no lab in {}: start one with `provision lab up`", .dir.display())]
    NotFound { dir: PathBuf },

    /// Another `provision lab` command holds the lab's lock.
    #[error(
        "another `provision lab` command is using {} (lock {}): wait for it to finish",
        .dir.display(), .lock.display()
    )]
    Busy { dir: PathBuf, lock: PathBuf },

    /// The named VM is not in the lab.
    #[error("no VM `{name}` in this lab (it has: {})", .known.join(", "))]
    UnknownVm { name: String, known: Vec<String> },

    /// `lab add` with a name already taken.
    #[error("the lab already has a VM named `{name}`: choose another name")]
    VmExists { name: String },

    /// qemu refused to start a VM.
    #[error("qemu could not start VM `{vm}`: {detail} (qemu's messages: {})", .log.display())]
    VmStart {
        vm: String,
        detail: String,
        log: PathBuf,
    },

    /// A VM's qemu process exited while booting.
    #[error("VM `{vm}` stopped while booting: see its console log {}", .console.display())]
    VmDied { vm: String, console: PathBuf },

    /// sshd did not answer in time.
    #[error(
        "VM `{vm}`'s sshd did not answer on 127.0.0.1:{port} within {secs} s: see its console log {} \
         (under TCG a loaded machine boots slower: raise --boot-timeout)",
        .console.display()
    )]
    BootTimeout {
        vm: String,
        port: u16,
        secs: u64,
        console: PathBuf,
    },

    /// Host keys could not be collected.
    #[error("could not collect VM `{vm}`'s SSH host keys: {detail} (console log {})", .console.display())]
    HostKeys {
        vm: String,
        detail: String,
        console: PathBuf,
    },

    /// sshd answered but the lab key was refused or ssh failed.
    #[error("cannot log in to VM `{vm}` with the lab key: {detail} (console log {})", .console.display())]
    SshLogin {
        vm: String,
        detail: String,
        console: PathBuf,
    },

    /// A fixed SSH port is taken.
    #[error(
        "port 127.0.0.1:{port} is in use: choose another ssh_port_base in LAB.toml or leave it out to pick free ports"
    )]
    PortInUse { port: u16 },

    /// A process the lab started (a VM's qemu, the package cache) would not die.
    #[error("{what} (pid {pid}) is still running after SIGKILL: kill it by hand")]
    Unkillable { what: String, pid: u32 },

    /// The lab's state file is unreadable.
    #[error("lab state {} is unreadable ({message}): `provision lab down --dir {}` removes what is left",
        .path.display(), .dir.display())]
    State {
        path: PathBuf,
        dir: PathBuf,
        message: String,
    },

    /// A path the lab cannot use.
    #[error("cannot use path {}: {reason}", .path.display())]
    BadPath { path: PathBuf, reason: String },

    /// No home directory to put state or cache in.
    #[error("cannot find a directory for {what}: set HOME, {env}, or pass --dir")]
    NoHome {
        what: &'static str,
        env: &'static str,
    },

    /// The image cache cannot be written (read-only, permissions).
    #[error(
        "cannot write the lab's image cache at {}: {detail}; make it writable, or point PROVISION_CACHE_DIR (or --cache-dir) at a writable directory",
        .path.display()
    )]
    CacheDir { path: PathBuf, detail: String },

    /// Not enough free space for a layer build; nothing was written.
    #[error(
        "not enough space in {} to build a lab image layer: {need_mib} MiB needed, {free_mib} MiB free; free space there or point PROVISION_CACHE_DIR (or --cache-dir) elsewhere",
        .path.display()
    )]
    NoSpace {
        path: PathBuf,
        need_mib: u64,
        free_mib: u64,
    },

    /// Making a layer failed in the builder VM.
    #[error("building the lab's {layer} image layer failed: {detail}")]
    LayerBuild { layer: String, detail: String },

    /// `lab up` failed after creating state; wraps the cause and says where the logs are.
    #[error(
        "{cause}\n  lab state and console logs are in {}{}; remove everything with `provision lab down --dir {}`",
        .dir.display(),
        if *.stopped { " (its VMs were stopped)" } else { " (its VMs are still running)" },
        .dir.display()
    )]
    Up {
        dir: PathBuf,
        stopped: bool,
        cause: Box<LabError>,
    },
}

impl LabError {
    /// Wraps an io::Error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io {
            context: context.into(),
            error: source,
        }
    }

    /// A LAB.toml error with an optional position.
    pub(crate) fn spec(
        source_name: &str,
        pos: Option<(usize, usize)>,
        message: impl Into<String>,
    ) -> Self {
        LabError::Spec {
            source_name: source_name.to_string(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            message: message.into(),
        }
    }
}

fn missing_message(missing: &[MissingProgram], bookworm: bool) -> String {
    let programs: Vec<String> = missing
        .iter()
        .map(|m| format!("{} (package {})", m.program, m.package))
        .collect();
    let mut packages: Vec<&str> = missing.iter().map(|m| m.package).collect();
    packages.dedup();
    let mut msg = format!(
        "the lab needs programs that are not installed: {}\n  install them as root: apt-get install {}",
        programs.join(", "),
        packages.join(" ")
    );
    if bookworm && packages.contains(&"qemu-system-x86") {
        msg.push_str(
            "\n  on Debian 12 (bookworm) take qemu from backports (bookworm's conflicts with qemu-utils from backports): \
             add a bookworm-backports apt source, apt-get update, then apt-get install -t bookworm-backports qemu-system-x86 qemu-utils",
        );
    }
    msg.push_str("\n  or run scripts/install-lab-deps.sh as root, which does all of this");
    msg
}

fn spec_message(
    source_name: &str,
    line: Option<usize>,
    column: Option<usize>,
    message: &str,
) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{source_name}:{l}:{c}: {message}"),
        _ => format!("{source_name}: {message}"),
    }
}

fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    // The last lines carry the cause; debootstrap and apt print pages before it.
    let tail = &lines[lines.len().saturating_sub(15)..];
    format!(":\n    {}", tail.join("\n    "))
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("\n  {hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_prerequisites_names_packages_and_apt_command() {
        let err = LabError::MissingPrerequisites {
            missing: vec![
                MissingProgram {
                    program: "qemu-system-x86_64",
                    package: "qemu-system-x86",
                },
                MissingProgram {
                    program: "debootstrap",
                    package: "debootstrap",
                },
            ],
            bookworm: true,
        };
        let msg = err.to_string();
        assert!(msg.starts_with(
            "the lab needs programs that are not installed: qemu-system-x86_64 (package qemu-system-x86), \
             debootstrap (package debootstrap)\n  install them as root: apt-get install qemu-system-x86 debootstrap\n"
        ));
        assert!(msg.contains("apt-get install -t bookworm-backports qemu-system-x86 qemu-utils"));
        assert!(msg.ends_with("scripts/install-lab-deps.sh as root, which does all of this"));
    }

    #[test]
    fn no_backports_note_off_bookworm() {
        let err = LabError::MissingPrerequisites {
            missing: vec![MissingProgram {
                program: "qemu-system-x86_64",
                package: "qemu-system-x86",
            }],
            bookworm: false,
        };
        assert!(!err.to_string().contains("backports"));
    }

    #[test]
    fn spec_error_has_file_line_column() {
        let err = LabError::spec("lab.toml", Some((3, 9)), "unknown role `db`");
        assert_eq!(err.to_string(), "lab.toml:3:9: unknown role `db`");
        let err = LabError::spec("lab.toml", None, "no VMs");
        assert_eq!(err.to_string(), "lab.toml: no VMs");
    }

    #[test]
    fn command_error_keeps_the_last_stderr_lines() {
        let stderr: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let err = LabError::Command {
            command: "debootstrap x".into(),
            status: "exit status: 1".into(),
            stderr,
            hint: "check the mirror".into(),
        };
        let msg = err.to_string();
        assert!(msg.starts_with("`debootstrap x` failed (exit status: 1):\n    line 6\n"));
        assert!(!msg.contains("line 5\n"));
        assert!(msg.ends_with("line 20\n  check the mirror"));
    }

    #[test]
    fn up_error_says_where_logs_are() {
        let err = LabError::Up {
            dir: PathBuf::from("/s/lab"),
            stopped: true,
            cause: Box::new(LabError::VmDied {
                vm: "worker-1".into(),
                console: PathBuf::from("/s/lab/worker-1.console"),
            }),
        };
        assert_eq!(
            err.to_string(),
            "VM `worker-1` stopped while booting: see its console log /s/lab/worker-1.console\n  \
             lab state and console logs are in /s/lab (its VMs were stopped); \
             remove everything with `provision lab down --dir /s/lab`"
        );
    }
}
