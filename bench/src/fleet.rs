//! Local test hosts for the side-by-side benchmarks: one real OpenSSH `sshd` per host,
//! each in its own mount, UTS and PID namespaces (`unshare`), listening on its own
//! loopback address (`127.77.X.Y`, one port for all).
//!
//! Per host: a private tmpfs over `/srv` (the playbooks work under `/srv/bench`), its own
//! hostname, its own process table (a daemon started by a playbook dies with its host).
//! Packages (`/var/lib/dpkg`) and the rest of the filesystem are this machine's, shared
//! read-mostly. Killing a host's `unshare` with SIGKILL kills its whole PID namespace,
//! and every `unshare` gets SIGKILL when the benchmark process dies (PR_SET_PDEATHSIG),
//! so no sshd outlives a run, even one that panicked or was interrupted.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the hosts are made.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// The port every host's sshd listens on (each on its own 127.77.X.Y address).
    pub port: u16,
    /// Bind an empty file over `/root/.bashrc` inside each host: remote commands no
    /// longer pay this machine's `pyenv init` (about 0.1 s of CPU each), which on a
    /// 2-core machine that also runs all the targets would dominate a 1000-host run.
    pub light_shell: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            port: 40022,
            light_shell: false,
        }
    }
}

/// One prepared host (keys and config written; started by [`Fleet::start`]).
#[derive(Clone, Debug)]
pub struct HostSpec {
    pub name: String,
    pub addr: String,
    pub port: u16,
    /// `type base64` of its ed25519 host key.
    pub host_key: String,
    /// 10.77.X.Y, the host's "private_ip" variable in the playbooks.
    pub private_ip: String,
    pub dir: PathBuf,
}

impl HostSpec {
    pub fn known_hosts_line(&self) -> String {
        format!("[{}]:{} {}\n", self.addr, self.port, self.host_key)
    }
}

pub struct Fleet {
    pub dir: PathBuf,
    pub hosts: Vec<HostSpec>,
    /// The client key (ed25519, no passphrase) every tool logs in with.
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    opts: FleetOptions,
    running: Vec<Child>,
}

/// The loopback address of host `i` (0-based): 127.77.0.1, ... 127.77.0.250, 127.77.1.1, ...
pub fn host_addr(i: usize) -> String {
    format!("127.77.{}.{}", i / 250, i % 250 + 1)
}

fn keygen(path: &Path, comment: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen (apt-get install openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Fleet {
    /// Writes keys and sshd configs for `n` hosts under `dir` (nothing starts yet).
    pub fn prepare(dir: &Path, n: usize, opts: FleetOptions) -> Fleet {
        std::fs::create_dir_all(dir).unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let key = dir.join("id_ed25519");
        if !key.exists() {
            keygen(&key, "bench");
        }
        let authorized = dir.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized).unwrap();
        let empty = dir.join("empty-bashrc");
        std::fs::write(&empty, "").unwrap();

        // ssh-keygen per host, a few at a time.
        let specs: Vec<HostSpec> = std::thread::scope(|s| {
            let chunks: Vec<Vec<usize>> = (0..n)
                .collect::<Vec<_>>()
                .chunks(n.div_ceil(4).max(1))
                .map(|c| c.to_vec())
                .collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|idx| {
                    let opts = &opts;
                    let authorized = &authorized;
                    s.spawn(move || {
                        idx.into_iter()
                            .map(|i| prepare_host(dir, i, opts, authorized))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let known_hosts = dir.join("known_hosts");
        let mut f = std::fs::File::create(&known_hosts).unwrap();
        for h in &specs {
            f.write_all(h.known_hosts_line().as_bytes()).unwrap();
        }
        Fleet {
            dir: dir.to_path_buf(),
            hosts: specs,
            key,
            known_hosts,
            opts,
            running: Vec::new(),
        }
    }

    /// Starts the first `n` hosts, each fresh (empty /srv, hostname `fresh-NAME`), and
    /// waits until every sshd accepts connections.
    pub fn start(&mut self, n: usize) {
        assert!(self.running.is_empty(), "stop the fleet first");
        assert!(n <= self.hosts.len());
        for h in &self.hosts[..n] {
            let mut script = format!(
                "mount -t tmpfs -o size=32m,mode=0755 bench-{name} /srv && hostname fresh-{name}",
                name = h.name
            );
            if self.opts.light_shell {
                script.push_str(&format!(
                    " && mount --bind {} /root/.bashrc",
                    self.dir.join("empty-bashrc").display()
                ));
            }
            script.push_str(&format!(
                " && exec /usr/sbin/sshd -D -e -f {}",
                h.dir.join("sshd_config").display()
            ));
            let log = std::fs::File::create(h.dir.join("sshd.log")).unwrap();
            let mut cmd = Command::new("unshare");
            cmd.args([
                "--mount",
                "--uts",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
            // SAFETY: prctl is async-signal-safe; it only sets this child's death signal.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .expect("unshare (util-linux) and root are needed");
            self.running.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(60 + n as u64 / 10);
        for (i, h) in self.hosts[..n].iter().enumerate() {
            let sa: SocketAddr = format!("{}:{}", h.addr, h.port).parse().unwrap();
            loop {
                if TcpStream::connect_timeout(&sa, Duration::from_millis(500)).is_ok() {
                    break;
                }
                if let Ok(Some(st)) = self.running[i].try_wait() {
                    panic!(
                        "host {} exited with {st}: {}",
                        h.name,
                        std::fs::read_to_string(h.dir.join("sshd.log")).unwrap_or_default()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "host {} did not listen on {sa}",
                    h.name
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Kills every running host (its whole PID namespace) and waits for it.
    pub fn stop(&mut self) {
        for c in &mut self.running {
            let _ = c.kill();
        }
        let n = self.running.len();
        for mut c in self.running.drain(..) {
            let _ = c.wait();
        }
        // The sshd of a killed namespace dies a moment after its unshare: wait until
        // every address refuses connections, so that a restart cannot see the old one.
        let deadline = Instant::now() + Duration::from_secs(30);
        for h in &self.hosts[..n] {
            let sa: SocketAddr = format!("{}:{}", h.addr, h.port).parse().unwrap();
            while TcpStream::connect_timeout(&sa, Duration::from_millis(200)).is_ok()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// argv for `ssh` to host `i` with this fleet's key and known_hosts, host keys checked.
    pub fn ssh_argv(&self, i: usize, command: &str) -> Vec<String> {
        let h = &self.hosts[i];
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.key.display().to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "ControlMaster=no".into(),
            "-p".into(),
            h.port.to_string(),
            format!("root@{}", h.addr),
            command.into(),
        ]
    }

    /// Runs `command` on host `i` with OpenSSH and returns its stdout (None if it failed).
    pub fn ssh(&self, i: usize, command: &str) -> Option<String> {
        let out = Command::new("ssh")
            .args(self.ssh_argv(i, command))
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

fn prepare_host(dir: &Path, i: usize, opts: &FleetOptions, authorized: &Path) -> HostSpec {
    let name = format!("h{}", i + 1);
    let hdir = dir.join("hosts").join(&name);
    std::fs::create_dir_all(&hdir).unwrap();
    let hk = hdir.join("host_ed25519");
    let host_key = if hk.exists() {
        let p = std::fs::read_to_string(hk.with_extension("pub")).unwrap();
        p.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    } else {
        keygen(&hk, &name)
    };
    let addr = host_addr(i);
    let config = format!(
        "Port {port}\nListenAddress {addr}\nHostKey {hk}\nAuthorizedKeysFile {ak}\nStrictModes no\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
         PermitRootLogin prohibit-password\nUsePAM no\nPidFile none\nPrintMotd no\nLogLevel ERROR\n\
         Subsystem sftp internal-sftp\n",
        port = opts.port,
        hk = hk.display(),
        ak = authorized.display(),
    );
    std::fs::write(hdir.join("sshd_config"), config).unwrap();
    HostSpec {
        private_ip: format!("10.77.{}.{}", i / 250, i % 250 + 1),
        name,
        addr,
        port: opts.port,
        host_key,
        dir: hdir,
    }
}
