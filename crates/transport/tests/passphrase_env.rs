//! Tier 2: an encrypted key unlocked by $PROVISION_SSH_PASSPHRASE (its own test
//! binary, because it sets a process-wide environment variable).

use provision_testkit::{Sshd, keygen};
use provision_transport::{Command, ConnectOptions, HostKeyPolicy, SshPool, Target, Transport};

#[tokio::test]
async fn passphrase_from_environment() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "enc", "ecdsa", "from the env");
    sshd.authorize(&key);
    // SAFETY: the only test in this binary; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROVISION_SSH_PASSPHRASE", "from the env") };
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, sshd.known_hosts_line()).unwrap();
    let mut o = ConnectOptions::new(kh);
    o.extra_known_hosts = vec![];
    o.agent_socket = None;
    o.policy = HostKeyPolicy::Strict;
    let t = Target {
        name: "h".into(),
        address: "127.0.0.1".into(),
        port: Some(sshd.port),
        user: Some("root".into()),
        identity: Some(key.private.clone()),
        ..Default::default()
    };
    let s = SshPool::new(o).unwrap().session(&t).await.unwrap();
    assert_eq!(
        s.run(Command::new("echo unlocked"))
            .await
            .unwrap()
            .stdout_str(),
        "unlocked\n"
    );
}
