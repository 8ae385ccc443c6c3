//! Running external programs with readable failures, and finding, checking and killing the
//! daemonized qemu processes through their pidfiles.

use crate::error::{LabError, Result};
use crate::prereq::find_program;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Shell-like rendering of an argv for messages.
pub fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A Command for an argv, the program resolved also in /usr/sbin and /sbin.
pub fn command(argv: &[String]) -> Command {
    let program =
        find_program(&argv[0]).map_or_else(|| argv[0].clone().into(), |p| p.into_os_string());
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..]);
    cmd
}

/// Runs an argv to completion; a non-zero exit becomes `LabError::Command` with stderr and `hint`.
pub fn run(argv: &[String], hint: &str) -> Result<Output> {
    let out = command(argv)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::io(format!("cannot run `{}`", argv[0]), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(LabError::Command {
            command: display_argv(argv),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            hint: hint.to_string(),
        })
    }
}

/// Runs an argv with stdout and stderr going to `log` (long, chatty programs like debootstrap);
/// on failure the error carries the log's last lines.
pub fn run_logged(argv: &[String], log: &Path, hint: &str) -> Result<()> {
    let file = std::fs::File::create(log)
        .map_err(|e| LabError::io(format!("cannot create {}", log.display()), e))?;
    let file2 = file
        .try_clone()
        .map_err(|e| LabError::io(format!("cannot open {}", log.display()), e))?;
    let status = command(argv)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .status()
        .map_err(|e| LabError::io(format!("cannot run `{}`", argv[0]), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            command: display_argv(argv),
            status: status.to_string(),
            stderr: std::fs::read_to_string(log).unwrap_or_default(),
            hint: format!("{hint} (full output: {})", log.display()),
        })
    }
}

/// The pid in a qemu pidfile, if the file exists and holds one.
pub fn read_pidfile(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a process exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name in parentheses, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether `pid`'s command line has the argument `want`: guards against a recycled pid.
pub fn has_arg(pid: u32, want: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == want))
}

/// Whether `pid` is the qemu started with this pidfile: guards against a recycled pid.
pub fn is_lab_qemu(pid: u32, pidfile: &Path) -> bool {
    if has_arg(pid, pidfile.as_os_str().as_encoded_bytes()) {
        return true;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // The same file under another spelling (symlinked or relative directory).
    let Ok(real) = std::fs::canonicalize(pidfile) else {
        return false;
    };
    cmdline
        .split(|b| *b == 0)
        .filter(|arg| arg.ends_with(b".pid"))
        .filter_map(|arg| std::str::from_utf8(arg).ok())
        .filter_map(|arg| std::fs::canonicalize(arg).ok())
        .any(|p| p == real)
}

/// The live qemu of a VM, from its pidfile.
pub fn live_qemu(pidfile: &Path) -> Option<u32> {
    read_pidfile(pidfile).filter(|&pid| pid_alive(pid) && is_lab_qemu(pid, pidfile))
}

/// SIGTERM, wait, SIGKILL, wait; Ok once the process is gone. `what` names it in the error.
pub fn kill_and_wait(pid: u32, what: &str) -> Result<()> {
    for (signal, wait) in [
        (libc::SIGTERM, Duration::from_secs(10)),
        (libc::SIGKILL, Duration::from_secs(10)),
    ] {
        let Ok(raw) = libc::pid_t::try_from(pid) else {
            return Ok(());
        };
        // SAFETY: kill(2) with a pid read from our pidfile and checked to be our process.
        unsafe {
            libc::kill(raw, signal);
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if !pid_alive(pid) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Err(LabError::Unkillable {
        what: what.to_string(),
        pid,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let argv: Vec<String> = ["ssh-keygen", "-N", "", "-C", "a b", "it's"]
            .map(String::from)
            .into();
        assert_eq!(display_argv(&argv), r"ssh-keygen -N '' -C 'a b' 'it'\''s'");
    }

    #[test]
    fn run_reports_status_and_stderr() {
        let argv: Vec<String> = ["sh", "-c", "echo oops >&2; exit 3"]
            .map(String::from)
            .into();
        let err = run(&argv, "do this").unwrap_err().to_string();
        assert_eq!(
            err,
            "`sh -c 'echo oops >&2; exit 3'` failed (exit status: 3):\n    oops\n  do this"
        );
        let argv: Vec<String> = ["sh", "-c", "echo fine"].map(String::from).into();
        assert_eq!(run(&argv, "").unwrap().stdout, b"fine\n");
    }

    #[test]
    fn run_logged_keeps_output_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let argv: Vec<String> = ["sh", "-c", "echo out; echo err >&2; exit 1"]
            .map(String::from)
            .into();
        let err = run_logged(&argv, &log, "hint").unwrap_err().to_string();
        assert!(err.contains("out\n    err"), "{err}");
        assert!(
            err.contains(&format!("(full output: {})", log.display())),
            "{err}"
        );
    }

    /// A spawned child shows its own command line only once it has exec'd.
    pub(crate) fn wait_for_exec(pid: u32, pidfile: &Path) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_lab_qemu(pid, pidfile) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn pid_checks_and_kill() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("vm.pid");
        // A process whose command line carries the pidfile path, as qemu's does.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30", "sh"])
            .arg(&pidfile)
            .spawn()
            .unwrap();
        let pid = child.id();
        std::fs::write(&pidfile, format!("{pid}\n")).unwrap();
        wait_for_exec(pid, &pidfile);
        assert_eq!(read_pidfile(&pidfile), Some(pid));
        assert!(pid_alive(pid));
        assert!(is_lab_qemu(pid, &pidfile));
        assert!(!is_lab_qemu(pid, &dir.path().join("other.pid")));
        // Reached through a symlinked directory, it is still the same process's pidfile.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(is_lab_qemu(pid, &link.join("vm.pid")));
        assert_eq!(live_qemu(&pidfile), Some(pid));
        // Reap in a thread so the killed child does not linger as a zombie counted alive.
        let reaper = std::thread::spawn(move || child.wait());
        kill_and_wait(pid, "vm").unwrap();
        reaper.join().unwrap().unwrap();
        assert!(!pid_alive(pid));
        assert_eq!(live_qemu(&pidfile), None);
    }
}
