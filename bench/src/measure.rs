//! Runs a control process (provision, ansible-playbook, pyinfra) and measures it:
//! wall time, user + system CPU and peak RSS from `wait4` (its own and that of every
//! descendant it waited for; the RSS is the largest single process), plus, optionally,
//! the peak summed RSS of its whole process group sampled every 250 ms (Ansible's forks
//! are separate processes: the largest one alone would understate it).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub wall: Duration,
    pub user: Duration,
    pub sys: Duration,
    /// ru_maxrss: the largest single process of the tree, KiB.
    pub max_rss_kb: u64,
    /// Peak of the summed RSS of the process group (sampled), KiB; 0 when not sampled.
    pub group_rss_kb: u64,
    /// Peak number of open file descriptors of the control process itself (sampled).
    pub peak_fds: u64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// /proc/loadavg's 1-minute figure when the run started (other work on the machine).
    pub load_before: f64,
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

impl Measured {
    pub fn cpu(&self) -> Duration {
        self.user + self.sys
    }
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }
    pub fn status_text(&self) -> String {
        if self.timed_out {
            "timed out".into()
        } else if let Some(c) = self.exit_code {
            format!("exit {c}")
        } else {
            format!("signal {}", self.signal.unwrap_or(0))
        }
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "wall_s": self.wall.as_secs_f64(),
            "cpu_s": self.cpu().as_secs_f64(),
            "user_s": self.user.as_secs_f64(),
            "sys_s": self.sys.as_secs_f64(),
            "max_rss_mb": self.max_rss_kb as f64 / 1024.0,
            "group_rss_peak_mb": self.group_rss_kb as f64 / 1024.0,
            "peak_fds": self.peak_fds,
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "loadavg_1m_before": self.load_before,
        })
    }
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// Summed RSS (KiB) of every process whose process group is `pgid`.
pub fn group_rss_kb(pgid: i32) -> u64 {
    let page_kb = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } / 1024) as u64;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After "pid (comm) ": state ppid pgrp ... rss is field 24 of stat, index 21 here.
        if f.len() > 21 && f[2].parse::<i32>().ok() == Some(pgid) {
            total += f[21].parse::<u64>().unwrap_or(0) * page_kb;
        }
    }
    total
}

/// Runs `cmd` in its own process group with stdout and stderr to `log`, kills the
/// group after `timeout`, and measures it.
pub fn run(cmd: &mut Command, timeout: Duration, log: &Path, sample_group: bool) -> Measured {
    let f = std::fs::File::create(log).unwrap();
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    let load_before = loadavg();
    let start = Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id() as i32;
    drop(child); // reaped below with wait4, which also returns its rusage
    let mut m = Measured {
        load_before,
        ..Default::default()
    };
    let mut last_sample = Instant::now() - Duration::from_secs(1);
    loop {
        let mut status = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall on our own child, valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            m.wall = start.elapsed();
            m.user = tv(ru.ru_utime);
            m.sys = tv(ru.ru_stime);
            m.max_rss_kb = ru.ru_maxrss as u64;
            if libc::WIFEXITED(status) {
                m.exit_code = Some(libc::WEXITSTATUS(status));
            } else if libc::WIFSIGNALED(status) {
                m.signal = Some(libc::WTERMSIG(status));
            }
            // Whatever the group left behind (a timed-out tool's workers) goes too.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            return m;
        }
        if r < 0 {
            panic!("wait4: {}", std::io::Error::last_os_error());
        }
        if last_sample.elapsed() >= Duration::from_millis(250) {
            last_sample = Instant::now();
            if sample_group {
                m.group_rss_kb = m.group_rss_kb.max(group_rss_kb(pid));
            }
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count() as u64)
                .unwrap_or(0);
            m.peak_fds = m.peak_fds.max(fds);
        }
        if !m.timed_out && start.elapsed() > timeout {
            m.timed_out = true;
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The OpenSSH floor: `n` parallel `ssh HOST true`, started at once. Returns the wall
/// time, the summed CPU of the ssh processes, the largest RSS and how many failed.
#[allow(clippy::zombie_processes)] // each child is reaped below with wait4 (for its rusage)
pub fn parallel_ssh(argvs: &[Vec<String>]) -> (Measured, usize) {
    let load_before = loadavg();
    let start = Instant::now();
    let pids: Vec<i32> = argvs
        .iter()
        .map(|a| {
            let c = Command::new("ssh")
                .args(a)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("ssh");
            c.id() as i32
        })
        .collect();
    let mut m = Measured {
        load_before,
        ..Default::default()
    };
    let mut failed = 0;
    for pid in pids {
        let mut status = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall on our own child, valid out-pointers.
        unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        m.user += tv(ru.ru_utime);
        m.sys += tv(ru.ru_stime);
        m.max_rss_kb = m.max_rss_kb.max(ru.ru_maxrss as u64);
        m.group_rss_kb += ru.ru_maxrss as u64;
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed += 1;
        }
    }
    m.wall = start.elapsed();
    m.exit_code = Some(if failed == 0 { 0 } else { 1 });
    (m, failed)
}
