//! Tier 2: the transport against real OpenSSH sshd processes on 127.0.0.1.

use provision_testkit::{KeyPair, SUDO_PASSWORD, Sshd, SshdOptions, ensure_sudo_users, keygen};
use provision_transport::known_hosts;
use provision_transport::ssh_config::SshConfig;
use provision_transport::{
    Become, Command, ConnectOptions, HostKeyPolicy, SshPool, Stdin, Target, Transport,
    TransportError, Upload, UploadOutcome,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

struct Env {
    sshd: Sshd,
    key: KeyPair,
    dir: tempfile::TempDir,
}

fn env_with(opts: SshdOptions, kind: &str) -> Env {
    let sshd = Sshd::start_with(opts);
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "user", kind, "");
    sshd.authorize(&key);
    Env { sshd, key, dir }
}

fn env() -> Env {
    env_with(SshdOptions::default(), "ed25519")
}

impl Env {
    fn known_hosts(&self) -> std::path::PathBuf {
        self.dir.path().join("known_hosts")
    }

    fn pin_host_key(&self) {
        std::fs::write(self.known_hosts(), self.sshd.known_hosts_line()).unwrap();
    }

    fn opts(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new(self.known_hosts());
        o.extra_known_hosts = vec![];
        o.agent_socket = None;
        o.policy = HostKeyPolicy::Strict;
        o.connect_timeout = Duration::from_secs(5);
        o
    }

    fn target(&self, user: &str) -> Target {
        Target {
            name: "node-1".into(),
            address: "127.0.0.1".into(),
            port: Some(self.sshd.port),
            user: Some(user.into()),
            identity: Some(self.key.private.clone()),
            ..Default::default()
        }
    }

    async fn session(&self, user: &str) -> Arc<provision_transport::SshSession> {
        self.pin_host_key();
        let pool = SshPool::new(self.opts()).unwrap();
        pool.session(&self.target(user)).await.unwrap()
    }
}

async fn run(t: &dyn Transport, script: &str) -> String {
    let out = t.run(Command::new(script)).await.unwrap();
    assert!(
        out.success(),
        "{script}: {} {}",
        out.describe_exit(),
        out.stderr_str()
    );
    out.stdout_str()
}

#[tokio::test]
async fn key_types_ed25519_ecdsa_rsa() {
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let e = env_with(SshdOptions::default(), kind);
        let s = e.session("root").await;
        assert_eq!(
            run(&*s, "echo hello from $(id -un)").await,
            "hello from root\n",
            "key type {kind}"
        );
    }
}

#[tokio::test]
async fn rsa_signs_with_sha2_never_sha1() {
    // A server that accepts exactly one RSA signature algorithm: logging in
    // proves we used it (SHA-1 `ssh-rsa` is refused by OpenSSH >= 8.8 anyway).
    for alg in ["rsa-sha2-512", "rsa-sha2-256"] {
        let opts = SshdOptions {
            extra_config: format!("PubkeyAcceptedAlgorithms {alg}"),
            ..Default::default()
        };
        let e = env_with(opts, "rsa");
        let s = e.session("root").await;
        assert_eq!(run(&*s, "echo rsa").await, "rsa\n", "with {alg}");
    }
}

#[tokio::test]
async fn output_streams_and_exit_status_are_separate() {
    let e = env();
    let s = e.session("root").await;
    let out = s
        .run(Command::new("echo out; echo err >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "out\n");
    assert_eq!(out.stderr_str(), "err\n");
    assert_eq!(out.exit_status, Some(3));
    // The script runs under sh -c, whatever the quoting inside.
    assert_eq!(
        run(&*s, "printf '%s|' \"a b\" 'it'\\''s'").await,
        "a b|it's|"
    );
}

#[tokio::test]
async fn encrypted_key_needs_a_passphrase() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "enc", "ed25519", "open sesame");
    sshd.authorize(&key);
    let e = Env { sshd, key, dir };
    e.pin_host_key();
    let pool = SshPool::new(e.opts()).unwrap();
    let err = pool
        .session(&e.target("root"))
        .await
        .err()
        .expect("no passphrase: must fail");
    assert!(matches!(err, TransportError::KeyEncrypted { .. }), "{err}");
    assert!(
        err.to_string().contains("PROVISION_SSH_PASSPHRASE"),
        "error says what to do: {err}"
    );

    let mut o = e.opts();
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = asked.clone();
    o.passphrase_prompt = Some(Arc::new(move |_p: &Path| {
        a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(Zeroizing::new("open sesame".to_string()))
    }));
    let pool = SshPool::new(o).unwrap();
    let s = pool.session(&e.target("root")).await.unwrap();
    assert_eq!(run(&*s, "echo in").await, "in\n");
    // A second host with the same key does not ask again (keys are cached per run).
    let mut t2 = e.target("root");
    t2.name = "node-2".into();
    pool.session(&t2).await.unwrap();
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn ssh_agent_authentication() {
    let e = env();
    e.pin_host_key();
    let sock = e.dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    provision_testkit::run(
        std::process::Command::new("ssh-add")
            .env("SSH_AUTH_SOCK", &sock)
            .arg(&e.key.private),
    );
    // The key file is gone: only the agent can sign.
    std::fs::remove_file(&e.key.private).unwrap();
    let mut o = e.opts();
    o.agent_socket = Some(sock);
    let pool = SshPool::new(o).unwrap();
    let mut t = e.target("root");
    t.identity = None;
    let res = pool.session(&t).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    let s = res.unwrap();
    assert_eq!(run(&*s, "echo agent").await, "agent\n");
}

#[tokio::test]
async fn unknown_host_strict_refuses_accept_new_records() {
    let e = env();
    let pool = SshPool::new(e.opts()).unwrap();
    let err = pool
        .session(&e.target("root"))
        .await
        .err()
        .expect("strict must refuse an unknown key");
    assert!(
        matches!(err, TransportError::HostKeyUnknown { .. }),
        "{err}"
    );
    assert!(!e.known_hosts().exists(), "strict never writes known_hosts");

    let mut o = e.opts();
    o.policy = HostKeyPolicy::AcceptNew;
    let pool = SshPool::new(o).unwrap();
    run(&*pool.session(&e.target("root")).await.unwrap(), "true").await;
    let recorded = std::fs::read_to_string(e.known_hosts()).unwrap();
    assert_eq!(recorded, e.sshd.known_hosts_line());
    // Pinned now: strict accepts it.
    let pool = SshPool::new(e.opts()).unwrap();
    run(&*pool.session(&e.target("root")).await.unwrap(), "true").await;
}

#[tokio::test]
async fn accept_new_never_trusts_a_second_key_for_a_host_in_one_run() {
    let mut e = env();
    let mut o = e.opts();
    o.policy = HostKeyPolicy::AcceptNew;
    let pool = SshPool::new(o).unwrap();
    run(&*pool.session(&e.target("root")).await.unwrap(), "true").await;
    let trusted = pool.newly_trusted();
    assert_eq!(trusted.len(), 1, "{trusted:?}");
    assert!(trusted[0].fingerprint.starts_with("SHA256:"), "{trusted:?}");
    assert_eq!(trusted[0].file, e.known_hosts());
    // The server is replaced at the same address and port by one with another key (a
    // reinstalled machine, or someone in the middle). The session already open stays on the
    // old server (sshd serves each connection from its own process).
    let port = e.sshd.port;
    e.sshd.kill();
    let other = Sshd::start_with(SshdOptions {
        port: Some(port),
        ..Default::default()
    });
    other.authorize(&e.key);
    // A second path to the same host:port in this run (another inventory name for it):
    // a new connection, and the key it meets is not the one recorded a moment ago.
    let mut second = e.target("root");
    second.name = "same-host-other-name".into();
    let err = pool
        .session(&second)
        .await
        .err()
        .expect("a second key for one host:port must be refused");
    assert!(
        matches!(err, TransportError::HostKeyChanged { line: 1, .. }),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(e.known_hosts())
            .unwrap()
            .lines()
            .count(),
        1,
        "the second key is not recorded"
    );
    assert_eq!(pool.newly_trusted().len(), 1);
}

#[tokio::test]
async fn accept_new_is_safe_with_many_hosts_at_once() {
    let servers: Vec<Sshd> = (0..6).map(|_| Sshd::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "user", "ed25519", "");
    let kh = dir.path().join("known_hosts");
    let mut o = ConnectOptions::new(kh.clone());
    o.extra_known_hosts = vec![];
    o.agent_socket = None;
    o.policy = HostKeyPolicy::AcceptNew;
    let pool = Arc::new(SshPool::new(o).unwrap());
    let mut tasks = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        s.authorize(&key);
        let t = Target {
            name: format!("h{i}"),
            address: "127.0.0.1".into(),
            port: Some(s.port),
            user: Some("root".into()),
            identity: Some(key.private.clone()),
            ..Default::default()
        };
        let pool = pool.clone();
        tasks.push(tokio::spawn(
            async move { pool.session(&t).await.map(|_| ()) },
        ));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let text = std::fs::read_to_string(&kh).unwrap();
    let mut expected: Vec<String> = servers.iter().map(|s| s.known_hosts_line()).collect();
    let mut got: Vec<String> = text.lines().map(|l| format!("{l}\n")).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "one intact line per host");
}

#[tokio::test]
async fn changed_host_key_is_refused_naming_file_line_and_fingerprints() {
    let e = env();
    let other = keygen(e.dir.path(), "impostor", "ed25519", "");
    let other_key = other
        .public_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(
        e.known_hosts(),
        format!("# pinned\n[127.0.0.1]:{} {}\n", e.sshd.port, other_key),
    )
    .unwrap();
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let mut o = e.opts();
        o.policy = policy;
        let pool = SshPool::new(o).unwrap();
        let err = pool
            .session(&e.target("root"))
            .await
            .err()
            .expect("changed key must be refused");
        let TransportError::HostKeyChanged {
            host,
            file,
            line,
            known_fingerprint,
            presented_fingerprint,
        } = &err
        else {
            panic!("expected HostKeyChanged, got {err}")
        };
        assert_eq!(host, "node-1");
        assert_eq!(file, &e.known_hosts());
        assert_eq!(*line, 2);
        let pinned = fp(&other_key);
        let real = fp(&e.sshd.host_keys[0]);
        assert_eq!(known_fingerprint, &pinned);
        assert_eq!(presented_fingerprint, &real);
        let msg = err.to_string();
        assert!(
            msg.contains(&pinned) && msg.contains(&real) && msg.contains(":2"),
            "{msg}"
        );
    }
    // Nothing ran: the server never saw an authentication, so no command either.
    let log = e.sshd.log();
    assert!(
        !log.contains("Accepted publickey"),
        "no login may happen:\n{log}"
    );
    assert_eq!(
        std::fs::read_to_string(e.known_hosts())
            .unwrap()
            .lines()
            .count(),
        2,
        "accept-new never overwrites a pin"
    );
}

fn fp(key_line: &str) -> String {
    known_hosts::fingerprint(&russh::keys::PublicKey::from_openssh(key_line).unwrap())
}

#[tokio::test]
async fn hashed_and_rsa_only_known_hosts_entries_from_openssh() {
    let e = env_with(
        SshdOptions {
            host_key_types: vec!["ed25519", "rsa"],
            ..Default::default()
        },
        "ed25519",
    );
    // Real hashed entries from ssh-keyscan -H, RSA only: we must ask for RSA and match.
    let scanned = provision_testkit::run(std::process::Command::new("ssh-keyscan").args([
        "-H",
        "-t",
        "rsa",
        "-p",
        &e.sshd.port.to_string(),
        "127.0.0.1",
    ]));
    assert!(scanned.starts_with("|1|"), "{scanned}");
    std::fs::write(e.known_hosts(), &scanned).unwrap();
    let pool = SshPool::new(e.opts()).unwrap();
    let s = pool.session(&e.target("root")).await.unwrap();
    assert_eq!(run(&*s, "echo ok").await, "ok\n");
}

#[tokio::test]
async fn wrong_user_key_is_an_auth_error_naming_the_key() {
    let e = env();
    e.pin_host_key();
    let stranger = keygen(e.dir.path(), "stranger", "ed25519", "");
    let pool = SshPool::new(e.opts()).unwrap();
    let mut t = e.target("root");
    t.identity = Some(stranger.private.clone());
    let err = pool.session(&t).await.err().expect("unauthorized key");
    assert!(matches!(err, TransportError::AuthFailed { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&stranger.private.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn fifty_concurrent_commands_share_one_connection() {
    let e = env();
    let s = e.session("root").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = s.clone();
        let script = format!("a=$(date +%s%N); sleep 0.3; b=$(date +%s%N); echo {i} $a $b");
        tasks.push(tokio::spawn(
            async move { s.run(Command::new(script)).await },
        ));
    }
    let mut spans = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let out = t.await.unwrap().unwrap();
        let f: Vec<u128> = out
            .stdout_str()
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(f[0], i as u128);
        spans.push((f[1], f[2]));
    }
    // Measured on the host, so machine load does not make this flaky: commands
    // overlapped, but never more than the channel cap (8, below MaxSessions 10).
    let max_overlap = spans
        .iter()
        .map(|(a, _)| spans.iter().filter(|(s, e)| s <= a && a < e).count())
        .max()
        .unwrap();
    assert!(max_overlap >= 2, "commands ran one after another");
    assert!(
        max_overlap <= 8,
        "{max_overlap} commands at once: the cap is 8"
    );
    assert_eq!(
        e.sshd.log().matches("Accepted publickey").count(),
        1,
        "one connection for everything"
    );
}

#[tokio::test]
async fn several_megabytes_of_stdin() {
    let e = env();
    let s = e.session("root").await;
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = provision_transport::upload::local_sha256(
        &provision_transport::UploadSource::Bytes(Zeroizing::new(data.clone())),
    )
    .await
    .unwrap();
    let out = s
        .run(Command::new("sha256sum | cut -d' ' -f1").stdin(Stdin::bytes(data)))
        .await
        .unwrap();
    assert_eq!(out.stdout_str().trim(), expected);
}

#[tokio::test]
async fn upload_is_atomic_and_detects_unchanged() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let e = env();
    let s = e.session("root").await;
    let remote_dir = tempfile::tempdir().unwrap();
    let dest = remote_dir.path().join("big.bin");
    let dest_s = dest.to_string_lossy().to_string();
    let src = e.dir.path().join("src.bin");
    let data: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    assert_eq!(
        s.upload(Upload::file(&dest_s, &src).mode(0o640))
            .await
            .unwrap(),
        UploadOutcome::Written
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(mode(&dest), 0o640);
    assert_eq!(
        s.upload(Upload::file(&dest_s, &src).mode(0o640))
            .await
            .unwrap(),
        UploadOutcome::Unchanged
    );
    let up = Upload::file(&dest_s, &src)
        .mode(0o600)
        .owner("root", "root");
    assert_eq!(s.upload(up).await.unwrap(), UploadOutcome::Written);
    assert_eq!(mode(&dest), 0o600);

    // A transfer that arrives damaged leaves the old file intact and no temp file behind.
    let inode_before = std::fs::metadata(&dest).unwrap().ino();
    let broken = provision_transport::upload::write_command(&dest_s, "0000", 0o644, None, None);
    let out = s
        .run(Command::new(broken).stdin(Stdin::bytes(b"partial".to_vec())))
        .await
        .unwrap();
    assert!(!out.success());
    assert!(out.stderr_str().contains("damaged"), "{}", out.stderr_str());
    assert_eq!(std::fs::read(&dest).unwrap(), data, "old content kept");
    assert_eq!(std::fs::metadata(&dest).unwrap().ino(), inode_before);
    let leftovers: Vec<_> = std::fs::read_dir(remote_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("big.bin")],
        "no temp files left"
    );

    // A real change replaces the file by rename (new inode), never in place.
    std::fs::write(&src, b"small now").unwrap();
    assert_eq!(
        s.upload(Upload::file(&dest_s, &src)).await.unwrap(),
        UploadOutcome::Written
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"small now");
    assert_ne!(std::fs::metadata(&dest).unwrap().ino(), inode_before);
    assert_eq!(mode(&dest), 0o600, "mode kept when not given");
}

#[tokio::test]
async fn sudo_without_and_with_password() {
    ensure_sudo_users();
    let e = env();
    e.pin_host_key();
    let pool = SshPool::new(e.opts()).unwrap();
    let password = |p: &str| Some(Arc::new(Zeroizing::new(p.to_string())));

    let mut t = e.target("pv-nopw");
    t.become_ = Become::Sudo { password: None };
    let s = pool.session(&t).await.unwrap();
    assert_eq!(run(&*s, "id -u").await, "0\n");

    let mut t = e.target("pv-pw");
    t.name = "pw-host".into();
    t.become_ = Become::Sudo {
        password: password(SUDO_PASSWORD),
    };
    let s = pool.session(&t).await.unwrap();
    assert_eq!(run(&*s, "id -u").await, "0\n");
    // The command's own stdin arrives intact after the password line sudo consumed.
    let out = s
        .run(Command::new("cat").stdin(Stdin::bytes("payload\n")))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "payload\n");
    // The password is never in argv: look at every process while one runs.
    let ps = s
        .run(Command::new("ps -eo args"))
        .await
        .unwrap()
        .stdout_str();
    assert!(ps.contains("ps -eo args"), "{ps}");
    assert!(!ps.contains(SUDO_PASSWORD), "password leaked into argv");

    let mut t = e.target("pv-pw");
    t.name = "nopass-host".into();
    t.become_ = Become::Sudo { password: None };
    let s = pool.session(&t).await.unwrap();
    let err = s.run(Command::new("id -u")).await.unwrap_err();
    assert!(
        matches!(err, TransportError::SudoPasswordRequired { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("sudo_password"),
        "says what to do: {err}"
    );

    let mut t = e.target("pv-pw");
    t.name = "badpass-host".into();
    t.become_ = Become::Sudo {
        password: password("wrong"),
    };
    let s = pool.session(&t).await.unwrap();
    let err = s.run(Command::new("id -u")).await.unwrap_err();
    assert!(
        matches!(err, TransportError::SudoPasswordRejected { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn command_timeout_leaves_connection_usable() {
    let e = env();
    let s = e.session("root").await;
    let start = Instant::now();
    let marker = e.dir.path().join("late");
    let err = s
        .run(
            Command::new(format!("sleep 3 && touch {}", marker.display()))
                .timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::CommandTimeout { stopped: true, .. }),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the timeout fired late: {:?}",
        start.elapsed()
    );
    assert_eq!(run(&*s, "echo still here").await, "still here\n");
    // The host stopped the command: it never reaches its `touch`.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!marker.exists(), "the command ran on after its timeout");
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test]
async fn sshd_killed_mid_command_is_connection_lost() {
    let mut e = env();
    let s = e.session("root").await;
    let pidfile = e.dir.path().join("session.pid");
    let script = format!("echo $PPID > {}; sleep 60", pidfile.display());
    let s2 = s.clone();
    let task = tokio::spawn(async move { s2.run(Command::new(script)).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&pidfile)
        .map(|s| s.trim().is_empty())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "command did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Kill the listener and this connection's sshd processes (the session's
    // parent and the monitors above it, up to the listener).
    let mut pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut victims = vec![pid];
    while let Some(ppid) = parent_of(pid) {
        if ppid as u32 == e.sshd.pid() || ppid <= 1 {
            break;
        }
        victims.push(ppid);
        pid = ppid;
    }
    e.sshd.kill();
    for v in victims {
        // SAFETY: plain kill(2) on pids this test's sshd spawned.
        unsafe { kill(v, 9) };
    }
    let start = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("no hang")
        .unwrap();
    let err = res.unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectionLost { .. }),
        "{err}"
    );
    assert!(err.is_unreachable());
    assert!(start.elapsed() < Duration::from_secs(10));
    let err = s.run(Command::new("true")).await.unwrap_err();
    assert!(err.is_unreachable(), "later commands fail fast: {err}");
}

#[tokio::test]
async fn proxy_jump_through_a_bastion() {
    let target = env();
    let bastion = Sshd::start_with(SshdOptions {
        extra_config: "LogLevel DEBUG1".into(),
        ..Default::default()
    });
    bastion.authorize(&target.key);
    std::fs::write(
        target.known_hosts(),
        format!(
            "{}{}",
            target.sshd.known_hosts_line(),
            bastion.known_hosts_line()
        ),
    )
    .unwrap();
    let pool = SshPool::new(target.opts()).unwrap();
    let mut t = target.target("root");
    t.proxy_jump = Some(format!("root@127.0.0.1:{}", bastion.port));
    let s = pool.session(&t).await.unwrap();
    assert_eq!(run(&*s, "echo through").await, "through\n");
    let log = bastion.log();
    assert!(
        log.contains("direct-tcpip") && log.contains(&target.sshd.port.to_string()),
        "the bastion must forward:\n{log}"
    );
}

#[tokio::test]
async fn ssh_config_supplies_hostname_port_user_identity() {
    let e = env();
    e.pin_host_key();
    let cfg = format!(
        "Host lab-node\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n",
        e.sshd.port,
        e.key.private.display()
    );
    let mut o = e.opts();
    o.ssh_config = Arc::new(SshConfig::parse(&cfg, Path::new("config")).unwrap());
    o.default_user = "nobody".into();
    let pool = SshPool::new(o).unwrap();
    let t = Target {
        name: "lab-node".into(),
        ..Default::default()
    };
    let s = pool.session(&t).await.unwrap();
    assert_eq!(run(&*s, "id -un").await, "root\n");
}

#[tokio::test]
async fn connect_retries_until_a_booting_host_answers() {
    let e = env();
    e.pin_host_key();
    // A port that is closed now and starts relaying to the real sshd 1.5 s later.
    let late_port = provision_testkit::free_port();
    let t = Target {
        port: Some(late_port),
        ..e.target("root")
    };

    let start = Instant::now();
    let err = SshPool::new(e.opts())
        .unwrap()
        .session(&t)
        .await
        .err()
        .expect("nothing listens yet");
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "no retry by default"
    );

    let sshd_port = e.sshd.port;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let l = std::net::TcpListener::bind(("127.0.0.1", late_port)).unwrap();
        let (a, _) = l.accept().unwrap();
        let b = std::net::TcpStream::connect(("127.0.0.1", sshd_port)).unwrap();
        let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        std::thread::spawn(move || std::io::copy(&mut &a2, &mut &b2));
        let _ = std::io::copy(&mut &b, &mut &a);
    });
    // The relayed host answers under its real key, pinned for the late port too.
    let kh_line = format!("[127.0.0.1]:{late_port} {}\n", e.sshd.host_keys[0]);
    std::fs::write(e.known_hosts(), kh_line).unwrap();
    let mut o = e.opts();
    o.retry_for = Duration::from_secs(20);
    let start = Instant::now();
    let s = SshPool::new(o).unwrap().session(&t).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(1400));
    assert_eq!(run(&*s, "echo up").await, "up\n");
}

#[tokio::test]
async fn stdin_less_commands_reuse_one_resident_shell() {
    let e = env();
    let s = e.session("root").await;
    for i in 0..20u32 {
        let out = s
            .run(Command::new(format!(
                "echo {i}; echo err{i} >&2; exit $(({i} % 3))"
            )))
            .await
            .unwrap();
        assert_eq!(out.stdout_str(), format!("{i}\n"));
        assert_eq!(out.stderr_str(), format!("err{i}\n"));
        assert_eq!(out.exit_status, Some(i % 3));
    }
    let out = s
        .run(Command::new("echo a; echo b >&2; exit 7"))
        .await
        .unwrap();
    assert_eq!(
        (
            out.stdout_str().as_str(),
            out.stderr_str().as_str(),
            out.exit_status
        ),
        ("a\n", "b\n", Some(7))
    );
    let sessions = e.sshd.log().matches("Starting session").count();
    assert_eq!(
        sessions,
        1,
        "one channel served every command:\n{}",
        e.sshd.log()
    );
}

#[tokio::test]
async fn exec_channels_when_resident_shell_is_off() {
    let e = env();
    e.pin_host_key();
    let mut o = e.opts();
    o.resident_shell = false;
    let s = SshPool::new(o)
        .unwrap()
        .session(&e.target("root"))
        .await
        .unwrap();
    for _ in 0..3 {
        let out = s
            .run(Command::new("echo out; echo err >&2; exit 3"))
            .await
            .unwrap();
        assert_eq!(
            (
                out.stdout_str().as_str(),
                out.stderr_str().as_str(),
                out.exit_status
            ),
            ("out\n", "err\n", Some(3))
        );
    }
    assert_eq!(
        e.sshd.log().matches("Starting session").count(),
        3,
        "a channel per command"
    );
}

/// A command's `Tail` follows its output while it runs, on a resident shell and on a channel of
/// its own alike: the last whole line of stdout or stderr, never the line still being printed,
/// never the resident shell's end marker; the output itself is unchanged.
#[tokio::test]
async fn a_running_commands_tail_is_its_last_whole_line() {
    let e = env();
    e.pin_host_key();
    for resident in [true, false] {
        let mut o = e.opts();
        o.resident_shell = resident;
        let s = SshPool::new(o)
            .unwrap()
            .session(&e.target("root"))
            .await
            .unwrap();
        let tail = provision_transport::Tail::default();
        let cmd = Command::new("echo a; sleep 0.2; echo b >&2; printf half; sleep 3; echo end")
            .tail(tail.clone());
        let running = tokio::spawn(async move { s.run(cmd).await });
        let start = Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < Duration::from_millis(2500) {
            let now = tail.last_line();
            if seen.last() != Some(&now) {
                seen.push(now);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let out = running.await.unwrap().unwrap();
        assert_eq!(out.stdout_str(), "a\nhalfend\n", "resident {resident}");
        let seen: Vec<Option<&str>> = seen.iter().map(|l| l.as_deref()).collect();
        assert!(
            seen.ends_with(&[Some("b")]) && !seen.contains(&Some("half")),
            "resident {resident}: {seen:?}"
        );
        let last = tail.last_line().unwrap();
        assert!(
            ["b", "halfend"].contains(&last.as_str()),
            "resident {resident}: {last}"
        );
    }
}
