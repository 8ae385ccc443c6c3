//! VM host keys: read from the serial console (printed by the first-boot unit, so nothing is
//! trusted on first use), or from ssh-keyscan as a fallback; written as OpenSSH known_hosts.

use base64::Engine;
use serde::{Deserialize, Serialize};

const KEY_MARKER: &str = "provision-lab-hostkey: ";
const DONE_MARKER: &str = "provision-lab-hostkeys-done: ";

/// One public host key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    /// e.g. `ssh-ed25519`.
    pub key_type: String,
    /// The key blob, base64 as in OpenSSH files.
    pub base64: String,
}

impl HostKey {
    /// A key whose blob decodes to its own type followed by the fields of that type, nothing
    /// more or less: a line cut or garbled on the console fails.
    pub fn parse(key_type: &str, b64: &str) -> Option<HostKey> {
        let blob = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        let mut fields = Vec::new();
        let mut rest = &blob[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            fields.push(rest.get(4..4 + len)?);
            rest = &rest[4 + len..];
        }
        let expected = match key_type {
            "ssh-ed25519" => Some(2),
            t if t.starts_with("ecdsa-sha2-") => Some(3),
            "ssh-rsa" => Some(3),
            _ => None,
        };
        let count_ok = expected.map_or(fields.len() >= 2, |n| fields.len() == n);
        (count_ok && fields[0] == key_type.as_bytes()).then(|| HostKey {
            key_type: key_type.to_string(),
            base64: b64.to_string(),
        })
    }
}

/// The host keys of the last complete block on a console log: key lines, then a count line. A
/// block counts only if its last `count` key lines all check out (kernel messages may interleave,
/// and an earlier boot may have been cut off mid-block).
pub fn from_console(console: &str) -> Result<Vec<HostKey>, String> {
    let mut lines: Vec<Option<HostKey>> = Vec::new();
    let mut complete: Option<Vec<HostKey>> = None;
    let mut seen_any = false;
    for raw in console.split('\n') {
        let line = raw.trim_end_matches('\r');
        if let Some(at) = line.find(KEY_MARKER) {
            seen_any = true;
            let mut parts = line[at + KEY_MARKER.len()..].split_whitespace();
            lines.push(match (parts.next(), parts.next()) {
                (Some(t), Some(b)) => HostKey::parse(t, b),
                _ => None,
            });
        } else if let Some(at) = line.find(DONE_MARKER) {
            seen_any = true;
            let n: usize = line[at + DONE_MARKER.len()..].trim().parse().unwrap_or(0);
            if n > 0 && n <= lines.len() {
                let block: Option<Vec<HostKey>> =
                    lines[lines.len() - n..].iter().cloned().collect();
                let unique = block.as_ref().is_some_and(|b| {
                    b.iter()
                        .enumerate()
                        .all(|(i, k)| b[..i].iter().all(|o| o.key_type != k.key_type))
                });
                complete = block.filter(|_| unique);
            } else {
                complete = None;
            }
            lines.clear();
        }
    }
    match complete {
        Some(keys) => Ok(keys),
        None if seen_any => {
            Err("the host-key lines on the console are garbled or incomplete".into())
        }
        None => {
            Err("the VM printed no host keys on its console (did the first-boot unit run?)".into())
        }
    }
}

/// Keys from `ssh-keyscan` output (`host type base64` lines; comments skipped).
pub fn from_keyscan(output: &str) -> Vec<HostKey> {
    output
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (_host, t, b) = (parts.next()?, parts.next()?, parts.next()?);
            HostKey::parse(t, b)
        })
        .collect()
}

/// known_hosts lines for a VM reached at 127.0.0.1:port (OpenSSH's `[host]:port` form).
pub fn known_hosts_lines(port: u16, keys: &[HostKey]) -> String {
    keys.iter()
        .map(|k| format!("[127.0.0.1]:{port} {} {}\n", k.key_type, k.base64))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A syntactically real key blob of the given type (length-prefixed type name, then data).
    pub(crate) fn blob(key_type: &str, fill: u8) -> String {
        let mut b = (key_type.len() as u32).to_be_bytes().to_vec();
        b.extend(key_type.as_bytes());
        // ed25519: one 32-byte field; ECDSA and RSA: two fields.
        let extra = if key_type == "ssh-ed25519" { 1 } else { 2 };
        for _ in 0..extra {
            b.extend([0, 0, 0, 32]);
            b.extend([fill; 32]);
        }
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn parses_the_last_complete_block_between_kernel_noise() {
        let ed = blob("ssh-ed25519", 1);
        let ec = blob("ecdsa-sha2-nistp256", 2);
        let console = format!(
            "[    1.0] random: crng init done\r\n\
             \r\nprovision-lab-hostkey: ssh-ed25519 {old}\r\n\
             [   9.9] reboot\r\n\
             \r\nprovision-lab-hostkey: ecdsa-sha2-nistp256 {ec}\r\n\
             [   12.3] virtio_net virtio1 eth1: renamed\r\n\
             \r\nprovision-lab-hostkey: ssh-ed25519 {ed}\r\n\
             \r\nprovision-lab-hostkeys-done: 2\r\n\
             [  OK  ] Started ssh.service\r\n",
            old = blob("ssh-ed25519", 9)
        );
        let keys = from_console(&console).unwrap();
        assert_eq!(
            keys,
            [
                HostKey {
                    key_type: "ecdsa-sha2-nistp256".into(),
                    base64: ec
                },
                HostKey {
                    key_type: "ssh-ed25519".into(),
                    base64: ed
                }
            ]
        );
    }

    #[test]
    fn garbled_or_missing_blocks_are_errors() {
        let ed = blob("ssh-ed25519", 1);
        // Blob cut short by interleaved output: the count no longer matches.
        let garbled = format!(
            "provision-lab-hostkey: ssh-ed25519 {}\nprovision-lab-hostkeys-done: 1\n",
            &ed[..20]
        );
        assert!(from_console(&garbled).unwrap_err().contains("garbled"));
        // Type on the line differs from the type inside the blob.
        let mismatch =
            format!("provision-lab-hostkey: ssh-rsa {ed}\nprovision-lab-hostkeys-done: 1\n");
        assert!(from_console(&mismatch).is_err());
        assert!(
            from_console("[ 0.0] Linux version\n")
                .unwrap_err()
                .contains("no host keys")
        );
        let unfinished = format!("provision-lab-hostkey: ssh-ed25519 {ed}\n");
        assert!(from_console(&unfinished).is_err());
        // A garbled line inside the counted block spoils it.
        let ec = blob("ecdsa-sha2-nistp256", 2);
        let mid = format!(
            "provision-lab-hostkey: ssh-ed25519 {ed}\nprovision-lab-hostkey: ecdsa-sha2-nistp256 {}\n\
             provision-lab-hostkeys-done: 2\n",
            &ec[..30]
        );
        assert!(from_console(&mid).is_err());
        // The last boot's block wins, even when it is broken: no fallback to an older one.
        let older_good = format!(
            "provision-lab-hostkey: ssh-ed25519 {ed}\nprovision-lab-hostkeys-done: 1\n{mid}"
        );
        assert!(from_console(&older_good).is_err());
    }

    #[test]
    fn keyscan_and_known_hosts() {
        let ed = blob("ssh-ed25519", 3);
        let out = format!(
            "# 127.0.0.1:22201 SSH-2.0-OpenSSH_9.2p1\n[127.0.0.1]:22201 ssh-ed25519 {ed}\n"
        );
        let keys = from_keyscan(&out);
        assert_eq!(keys.len(), 1);
        assert_eq!(
            known_hosts_lines(22201, &keys),
            format!("[127.0.0.1]:22201 ssh-ed25519 {ed}\n")
        );
    }
}
