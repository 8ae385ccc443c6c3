//! Test support for tier 2: real OpenSSH `sshd` processes on 127.0.0.1 ports (or on
//! `::1` inside a network namespace of the test's own, [`Netns`]) with throw-away host
//! keys, user keys and config, plus local users for sudo tests, and leak checks for
//! secrets in every encoding ([`leaks`]), and the local shell as a host for step tests
//! ([`local`]).
//!
//! Everything lives in a temp directory removed on drop; each sshd is killed on drop.

pub mod leaks;
pub mod local;
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A key pair made by `ssh-keygen` in a temp dir.
pub struct KeyPair {
    pub private: PathBuf,
    pub public_line: String,
}

/// Runs a program and panics with its stderr when it fails: test setup must not fail silently.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ssh-keygen -t KIND` into `dir/name`, optionally with a passphrase.
pub fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str) -> KeyPair {
    let private = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", name, "-f"])
        .arg(&private);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run(&mut cmd);
    let public_line = fs::read_to_string(private.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();
    KeyPair {
        private,
        public_line,
    }
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sshd_path() -> PathBuf {
    for p in ["/usr/sbin/sshd", "/usr/local/sbin/sshd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "sshd not found: install it with `apt-get install openssh-server` (the test command .ci/run does)"
    );
}

/// One real sshd listening on 127.0.0.1, in the foreground, logging to a file.
pub struct Sshd {
    pub port: u16,
    /// The address it listens on.
    pub listen: &'static str,
    netns: Option<String>,
    pub dir: tempfile::TempDir,
    /// Host keys as `type base64` (one per key type served).
    pub host_keys: Vec<String>,
    pub authorized_keys: PathBuf,
    child: Option<Child>,
}

/// Options for [`Sshd::start_with`].
#[derive(Clone)]
pub struct SshdOptions {
    pub host_key_types: Vec<&'static str>,
    /// Extra sshd_config lines, placed first so they win (sshd keeps the first value).
    /// `LogLevel DEBUG1` also sends debug lines to the client's stderr: use it only
    /// on servers whose command output is not checked (a bastion).
    pub extra_config: String,
    /// Listen on this port (a server that replaces another at its address); default: a free one.
    pub port: Option<u16>,
    /// Listen address; `::1` needs a [`Netns`] (the network rule allows only 127.0.0.0/8
    /// on this machine's own interfaces).
    pub listen: &'static str,
    /// Run sshd inside this network namespace ([`Netns::name`]).
    pub netns: Option<String>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            host_key_types: vec!["ed25519"],
            extra_config: String::new(),
            port: None,
            listen: "127.0.0.1",
            netns: None,
        }
    }
}

impl Sshd {
    pub fn start() -> Sshd {
        Self::start_with(SshdOptions::default())
    }

    pub fn start_with(opts: SshdOptions) -> Sshd {
        // sshd refuses to start without its privilege-separation directory.
        let _ = fs::create_dir_all("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("provision-sshd-")
            .tempdir()
            .unwrap();
        let mut host_keys = Vec::new();
        let mut host_key_lines = String::new();
        for kind in &opts.host_key_types {
            let k = keygen(dir.path(), &format!("host_{kind}"), kind, "");
            host_keys.push(
                k.public_line
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            host_key_lines.push_str(&format!("HostKey {}\n", k.private.display()));
        }
        let authorized_keys = dir.path().join("authorized_keys");
        fs::write(&authorized_keys, "").unwrap();
        fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let port = opts.port.unwrap_or_else(free_port);
        let config = format!(
            "{extra}\nPort {port}\nListenAddress {listen}\n{host_key_lines}AuthorizedKeysFile {ak}\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
             UsePAM no\nPidFile {dir}/sshd.pid\nPrintMotd no\nLogLevel VERBOSE\nMaxStartups 200:30:400\nSubsystem sftp internal-sftp\n",
            ak = authorized_keys.display(),
            dir = dir.path().display(),
            extra = opts.extra_config,
            listen = opts.listen,
        );
        let config_path = dir.path().join("sshd_config");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("sshd.log")).unwrap();
        let mut cmd = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(sshd_path());
                c
            }
            None => Command::new(sshd_path()),
        };
        let child = cmd
            .args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd {
            port,
            listen: opts.listen,
            netns: opts.netns,
            dir,
            host_keys,
            authorized_keys,
            child: Some(child),
        };
        sshd.wait_ready();
        sshd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // Inside a namespace this process cannot connect: sshd says when it listens.
            let ready = match self.netns {
                Some(_) => self.log().contains("Server listening on"),
                None => TcpStream::connect((self.listen, self.port)).is_ok(),
            };
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("sshd exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "sshd did not listen on port {} within 10 s: {}",
            self.port,
            self.log()
        );
    }

    /// Allows `key` to log in as any user.
    pub fn authorize(&self, key: &KeyPair) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys)
            .unwrap();
        writeln!(f, "{}", key.public_line).unwrap();
    }

    /// A known_hosts line for this server with its first host key.
    pub fn known_hosts_line(&self) -> String {
        format!("[{}]:{} {}\n", self.listen, self.port, self.host_keys[0])
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Kills the listening sshd (established sessions live on in their own processes).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A network namespace of the test's own (needs root and iproute2), with its loopback up
/// (127.0.0.1 and ::1); removed on drop. Run programs inside it with [`Netns::command`].
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create() -> Netns {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "provision-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        run(ns.command("ip").args(["link", "set", "lo", "up"]));
        ns
    }

    /// `program` run inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Local users for sudo tests, created once per machine (needs root):
/// `pv-nopw` may sudo without a password, `pv-pw` with password [`SUDO_PASSWORD`],
/// `pv-nosudo` has no sudo rights.
pub const SUDO_PASSWORD: &str = "correct horse battery staple";

pub fn ensure_sudo_users() {
    let lock = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/tmp/provision-test-users.lock")
        .unwrap();
    lock_file(&lock);
    for user in ["pv-nopw", "pv-pw", "pv-nosudo"] {
        let exists = Command::new("id")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        if !exists {
            run(Command::new("useradd").args(["-m", "-s", "/bin/sh", user]));
        }
    }
    // sshd with UsePAM=no refuses accounts whose password field is locked ("!").
    run(Command::new("usermod").args(["-p", "*", "pv-nopw"]));
    run(Command::new("usermod").args(["-p", "*", "pv-nosudo"]));
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    chpasswd
        .stdin
        .take()
        .unwrap()
        .write_all(format!("pv-pw:{SUDO_PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(chpasswd.wait().unwrap().success());
    let sudoers = "pv-nopw ALL=(ALL) NOPASSWD: ALL\npv-pw ALL=(ALL) ALL\n";
    fs::create_dir_all("/etc/sudoers.d").unwrap();
    fs::write("/etc/sudoers.d/provision-tests", sudoers).unwrap();
    fs::set_permissions(
        "/etc/sudoers.d/provision-tests",
        fs::Permissions::from_mode(0o440),
    )
    .unwrap();
}

fn lock_file(f: &fs::File) {
    use std::os::fd::AsRawFd;
    unsafe extern "C" {
        fn flock(fd: i32, operation: i32) -> i32;
    }
    // SAFETY: flock on a descriptor that `f` keeps open; released on close.
    assert_eq!(unsafe { flock(f.as_raw_fd(), 2) }, 0, "flock");
}
