//! The lab's package cache: one apt-cacher-ng per cache root, started when a lab boots VMs and
//! stopped when no lab uses it, so each Debian package is downloaded once per machine.
//!
//! It listens on 127.0.0.1 only; VMs reach it as 10.0.2.2 through qemu's NAT, and their apt
//! uses it through `lab.aptproxy=` on the kernel command line (provision-lab-init.sh). Labs
//! register in `users/`; the last one to stop its VMs stops the proxy. The cache is a speed-up:
//! when apt-cacher-ng is missing or will not start, VMs download directly and the lab says so.

use crate::error::{LabError, Result};
use crate::prereq::find_program;
use crate::process;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The caching proxy, from Debian's package of the same name.
pub const PROGRAM: &str = "apt-cacher-ng";

/// Ports tried for the proxy. apt-cacher-ng 3.7 fails to bind ports above 32767 ("Error resolving
/// address for binding"), so the range stays below; its own default 3142 is left to a system one.
const PORTS: std::ops::RangeInclusive<u16> = 23142..=32767;

/// How long a started proxy has to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The package cache of one cache root: `<cache_root>/apt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptCache {
    pub dir: PathBuf,
}

/// The running proxy, as recorded in `proxy.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proxy {
    pub pid: u32,
    pub port: u16,
}

impl AptCache {
    pub fn new(cache_root: &Path) -> AptCache {
        AptCache {
            dir: cache_root.join("apt"),
        }
    }

    /// The cache of the default cache root (PROVISION_CACHE_DIR, else ~/.cache/provision).
    pub fn default_root() -> Result<AptCache> {
        Ok(AptCache::new(&crate::paths::cache_root(None)?))
    }
    fn conf_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }
    /// The downloaded packages and indexes (remove the directory to clear the cache).
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }
    fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }
    fn pidfile(&self) -> PathBuf {
        self.dir.join("run/pid")
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("run/socket")
    }
    fn state_file(&self) -> PathBuf {
        self.dir.join("proxy.json")
    }
    fn users_dir(&self) -> PathBuf {
        self.dir.join("users")
    }
    fn lock_file(&self) -> PathBuf {
        self.dir.join("proxy.lock")
    }

    /// The proxy of this cache if it runs (its pid checked to be ours).
    pub fn running(&self) -> Option<Proxy> {
        let text = fs::read_to_string(self.state_file()).ok()?;
        let proxy: Proxy = serde_json::from_str(&text).ok()?;
        let ours = process::pid_alive(proxy.pid)
            && process::has_arg(proxy.pid, pidfile_arg(&self.pidfile()).as_bytes());
        ours.then_some(proxy)
    }

    /// The lab directories registered as users of the proxy.
    pub fn users(&self) -> Vec<PathBuf> {
        let mut users: Vec<PathBuf> = fs::read_dir(self.users_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .map(|s| PathBuf::from(s.trim_end_matches('\n')))
            .collect();
        users.sort();
        users
    }

    /// Whether `lab_dir` has let go of the cache: not registered, and the proxy stopped if no
    /// lab is left (every registered lab is one still in use after a release).
    pub fn released_by(&self, lab_dir: &Path) -> bool {
        let users = self.users();
        !users.iter().any(|u| u == lab_dir) && (!users.is_empty() || self.running().is_none())
    }

    fn user_file(&self, lab_dir: &Path) -> PathBuf {
        let digest = Sha256::digest(lab_dir.as_os_str().as_encoded_bytes());
        let hex = hex::encode(&digest[..8]);
        self.users_dir().join(hex)
    }

    fn lock(&self) -> Result<fs::File> {
        for d in [self.dir.clone(), self.users_dir(), self.dir.join("run")] {
            fs::create_dir_all(&d)
                .map_err(|e| LabError::io(format!("cannot create {}", d.display()), e))?;
        }
        let path = self.lock_file();
        let f = fs::File::create(&path)
            .map_err(|e| LabError::io(format!("cannot create {}", path.display()), e))?;
        // Blocking: starting or stopping the proxy takes a moment, and every lab waits its turn.
        f.lock()
            .map_err(|e| LabError::io(format!("cannot lock {}", path.display()), e))?;
        Ok(f)
    }

    /// Registers `lab_dir` as a user and returns the proxy's port, starting the proxy if needed.
    /// None when apt-cacher-ng is not installed (VMs then download directly).
    pub fn acquire(&self, lab_dir: &Path) -> Result<Option<u16>> {
        if find_program(PROGRAM).is_none() {
            return Ok(None);
        }
        let _lock = self.lock()?;
        let user = self.user_file(lab_dir);
        fs::write(&user, format!("{}\n", lab_dir.display()))
            .map_err(|e| LabError::io(format!("cannot write {}", user.display()), e))?;
        if let Some(p) = self.running() {
            return Ok(Some(p.port));
        }
        // The same port as last time when it is free: VMs that were stopped keep working.
        let last = fs::read_to_string(self.state_file())
            .ok()
            .and_then(|t| serde_json::from_str::<Proxy>(&t).ok())
            .map(|p| p.port);
        let port = last
            .into_iter()
            .chain(PORTS)
            .find(|&p| crate::net::tcp_port_free(p))
            .ok_or_else(|| {
                LabError::io(
                    "cannot start the package cache",
                    std::io::Error::other(format!(
                        "no free TCP port in {}-{}",
                        PORTS.start(),
                        PORTS.end()
                    )),
                )
            })?;
        let proxy = self.start(port)?;
        let text = serde_json::to_string(&proxy).expect("proxy state serializes");
        fs::write(self.state_file(), text + "\n").map_err(|e| {
            LabError::io(format!("cannot write {}", self.state_file().display()), e)
        })?;
        Ok(Some(port))
    }

    fn start(&self, port: u16) -> Result<Proxy> {
        for d in [self.conf_dir(), self.cache_dir(), self.log_dir()] {
            fs::create_dir_all(&d)
                .map_err(|e| LabError::io(format!("cannot create {}", d.display()), e))?;
        }
        // Everything is on the command line; the file only has to exist so no system-wide
        // configuration (/etc/apt-cacher-ng) is read.
        let conf = self.conf_dir().join("acng.conf");
        fs::write(
            &conf,
            "# settings: on the command line the lab starts it with\n",
        )
        .map_err(|e| LabError::io(format!("cannot write {}", conf.display()), e))?;
        let _ = fs::remove_file(self.pidfile());
        let argv = proxy_argv(self, port);
        let log = self.log_dir().join("start.log");
        // Daemonizes: the parent returns once the child runs; its stdio must not be our pipes.
        process::run_logged(
            &argv,
            &log,
            "the package cache is optional: remove apt-cacher-ng to run without it",
        )?;
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            let pid = process::read_pidfile(&self.pidfile());
            if let Some(pid) = pid
                && TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
            {
                return Ok(Proxy { pid, port });
            }
            if Instant::now() > deadline {
                let detail = fs::read_to_string(&log).unwrap_or_default();
                return Err(LabError::Command {
                    command: process::display_argv(&argv),
                    status: "no answer".into(),
                    stderr: format!("127.0.0.1:{port} did not accept connections; {detail}"),
                    hint: format!("see the logs in {}", self.log_dir().display()),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Unregisters every user whose lab no longer runs (`in_use` false), `lab_dir` included,
    /// and stops the proxy when none is left. Returns whether it stopped the proxy.
    pub fn release(&self, lab_dir: &Path, in_use: &dyn Fn(&Path) -> bool) -> Result<bool> {
        if !self.dir.is_dir() {
            return Ok(false);
        }
        let _lock = self.lock()?;
        let users = self.users();
        let (stale, keep) = decide_release(&users, lab_dir, in_use);
        for dir in &stale {
            let _ = fs::remove_file(self.user_file(dir));
        }
        if keep {
            return Ok(false);
        }
        let Some(proxy) = self.running() else {
            return Ok(false);
        };
        process::kill_and_wait(proxy.pid, "the lab's package cache (apt-cacher-ng)")?;
        let _ = fs::remove_file(self.pidfile());
        let _ = fs::remove_file(self.socket());
        Ok(true)
    }
}

/// Which registered labs to drop (the releasing lab and every lab not in use) and whether the
/// proxy must keep running for the rest.
pub fn decide_release(
    users: &[PathBuf],
    releasing: &Path,
    in_use: &dyn Fn(&Path) -> bool,
) -> (Vec<PathBuf>, bool) {
    let (stale, live): (Vec<PathBuf>, Vec<PathBuf>) = users
        .iter()
        .cloned()
        .partition(|u| u == releasing || !in_use(u));
    (stale, !live.is_empty())
}

fn pidfile_arg(pidfile: &Path) -> String {
    format!("PidFile={}", pidfile.display())
}

/// apt-cacher-ng's argv: daemonized, bound to loopback, every path under the cache's directory.
pub fn proxy_argv(cache: &AptCache, port: u16) -> Vec<String> {
    let d = |p: PathBuf| p.display().to_string();
    vec![
        PROGRAM.into(),
        "-c".into(),
        d(cache.conf_dir()),
        "ForeGround=0".into(),
        format!("Port={port}"),
        "BindAddress=127.0.0.1".into(),
        format!("SocketPath={}", d(cache.socket())),
        format!("CacheDir={}", d(cache.cache_dir())),
        format!("LogDir={}", d(cache.log_dir())),
        pidfile_arg(&cache.pidfile()),
    ]
}

/// The proxy as a VM's apt sees it (qemu's NAT shows the host's loopback as 10.0.2.2).
pub fn guest_url(port: u16) -> String {
    format!("http://10.0.2.2:{port}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_argv_is_exact() {
        let c = AptCache::new(Path::new("/c"));
        assert_eq!(
            proxy_argv(&c, 23142),
            [
                "apt-cacher-ng",
                "-c",
                "/c/apt/conf",
                "ForeGround=0",
                "Port=23142",
                "BindAddress=127.0.0.1",
                "SocketPath=/c/apt/run/socket",
                "CacheDir=/c/apt/cache",
                "LogDir=/c/apt/log",
                "PidFile=/c/apt/run/pid",
            ]
        );
        assert_eq!(guest_url(23142), "http://10.0.2.2:23142/");
    }

    #[test]
    fn the_last_lab_in_use_keeps_the_proxy() {
        let users: Vec<PathBuf> = ["/l/a", "/l/b", "/l/c"].map(PathBuf::from).into();
        // b still has VMs; a releases; c's VMs died.
        let in_use = |p: &Path| p == Path::new("/l/b");
        let (stale, keep) = decide_release(&users, Path::new("/l/a"), &in_use);
        assert_eq!(stale, [PathBuf::from("/l/a"), PathBuf::from("/l/c")]);
        assert!(keep);
        // b releases in its turn: nobody is left.
        let users = vec![PathBuf::from("/l/b")];
        let (stale, keep) = decide_release(&users, Path::new("/l/b"), &|_| true);
        assert_eq!(stale, [PathBuf::from("/l/b")]);
        assert!(!keep);
        // A lab that never registered (no apt-cacher-ng then) stops nobody else's proxy.
        let (stale, keep) = decide_release(&users, Path::new("/l/x"), &|_| true);
        assert!(stale.is_empty());
        assert!(keep);
    }

    #[test]
    fn release_without_a_cache_does_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let c = AptCache::new(tmp.path());
        assert!(!c.release(Path::new("/l/a"), &|_| false).unwrap());
        assert!(!c.dir.exists(), "release created the cache directory");
        assert_eq!(c.running(), None);
        assert!(c.users().is_empty());
    }

    /// The real proxy, when installed: started once for two labs, stopped by the last.
    #[test]
    fn proxy_starts_once_and_stops_with_its_last_user() {
        if find_program(PROGRAM).is_none() {
            eprintln!("skipped: {PROGRAM} is not installed (scripts/install-lab-deps.sh)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let c = AptCache::new(tmp.path());
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let port = c.acquire(&a).unwrap().expect("a port");
        let proxy = c.running().expect("proxy runs");
        assert_eq!(proxy.port, port);
        assert!(PORTS.contains(&port));
        assert_eq!(c.acquire(&b).unwrap(), Some(port), "second lab shares it");
        assert_eq!(c.running(), Some(proxy), "not restarted");
        assert_eq!(c.users(), [a.clone(), b.clone()]);
        assert!(!c.released_by(&a));
        // a goes down while b runs: the proxy stays.
        assert!(!c.release(&a, &|p| p == b).unwrap());
        assert_eq!(c.users(), std::slice::from_ref(&b));
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok());
        // b goes down: the proxy is gone.
        assert!(c.release(&b, &|_| false).unwrap());
        assert!(c.users().is_empty());
        assert_eq!(c.running(), None);
        assert!(!process::pid_alive(proxy.pid));
        assert!(c.released_by(&a) && c.released_by(&b));
        // Started again for a new lab, on the same port when it is free.
        assert_eq!(c.acquire(&a).unwrap(), Some(port));
        assert!(c.release(&a, &|_| false).unwrap());
    }
}
