//! OpenSSH known_hosts files: parsing (hashed `|1|` entries, `[host]:port`, wildcards,
//! negation, markers), verification with line numbers, and safe concurrent appends.

use crate::error::TransportError;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use russh::keys::{Algorithm, HashAlg, PublicKey};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The name OpenSSH looks up: `host` on port 22 (an IPv6 address as is), `[host]:port` otherwise.
pub fn host_id(host: &str, port: u16) -> String {
    let host = crate::addr::host_of(host);
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// SHA256 fingerprint as OpenSSH prints it (`SHA256:...`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Marker {
    CertAuthority,
    Revoked,
}

#[derive(Debug, Clone)]
enum Patterns {
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    List(Vec<String>),
}

#[derive(Debug, Clone)]
struct Entry {
    file: PathBuf,
    line: usize,
    marker: Option<Marker>,
    patterns: Patterns,
    key: PublicKey,
}

/// Result of checking a presented host key.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Known,
    Unknown,
    /// The host is pinned to another key (of the same type, or only of other types).
    Changed {
        file: PathBuf,
        line: usize,
        known_fingerprint: String,
    },
    Revoked {
        file: PathBuf,
        line: usize,
    },
}

impl Verdict {
    /// The error that refuses `key` for host `label` (named so in messages): for a changed or
    /// revoked key; None when the verdict lets the connection go on (known) or is the
    /// policy's to decide (unknown).
    pub fn refusal(self, label: &str, key: &PublicKey) -> Option<TransportError> {
        match self {
            Verdict::Known | Verdict::Unknown => None,
            Verdict::Changed {
                file,
                line,
                known_fingerprint,
            } => Some(TransportError::HostKeyChanged {
                host: label.to_string(),
                file,
                line,
                known_fingerprint,
                presented_fingerprint: fingerprint(key),
            }),
            Verdict::Revoked { file, line } => Some(TransportError::HostKeyRevoked {
                host: label.to_string(),
                fingerprint: fingerprint(key),
                file,
                line,
            }),
        }
    }
}

/// All entries of one or more known_hosts files, in lookup order.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

impl KnownHosts {
    /// Loads the files that exist; a missing file is simply empty. Lines that
    /// cannot be parsed (unsupported key types, garbage) are skipped like OpenSSH does.
    pub fn load(paths: &[PathBuf]) -> Result<Self, TransportError> {
        let mut kh = KnownHosts::default();
        for path in paths {
            match std::fs::read_to_string(path) {
                Ok(text) => kh.add_text(path, &text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(TransportError::KnownHosts {
                        path: path.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(kh)
    }

    pub fn add_text(&mut self, path: &Path, text: &str) {
        for (i, raw) in text.lines().enumerate() {
            if let Some(entry) = parse_line(path, i + 1, raw) {
                self.entries.push(entry);
            }
        }
    }

    fn matching<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| patterns_match(&e.patterns, id))
    }

    /// Checks `key` for `host:port`.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let id = host_id(host, port);
        let mut same_type: Option<&Entry> = None;
        let mut other_type: Option<&Entry> = None;
        let mut known = false;
        for e in self.matching(&id) {
            match e.marker {
                Some(Marker::Revoked) => {
                    if e.key.key_data() == key.key_data() {
                        return Verdict::Revoked {
                            file: e.file.clone(),
                            line: e.line,
                        };
                    }
                }
                Some(Marker::CertAuthority) => {}
                None => {
                    if e.key.key_data() == key.key_data() {
                        known = true;
                    } else if e.key.algorithm() == key.algorithm() {
                        same_type.get_or_insert(e);
                    } else {
                        other_type.get_or_insert(e);
                    }
                }
            }
        }
        // Revoked keys are checked over every entry first, so "known" is decided last.
        if known {
            return Verdict::Known;
        }
        match same_type.or(other_type) {
            Some(e) => Verdict::Changed {
                file: e.file.clone(),
                line: e.line,
                known_fingerprint: fingerprint(&e.key),
            },
            None => Verdict::Unknown,
        }
    }

    /// Key algorithms pinned for this host, so the client can ask the server
    /// for one of those first (what OpenSSH does too).
    pub fn known_algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let id = host_id(host, port);
        let mut algs: Vec<Algorithm> = Vec::new();
        for e in self.matching(&id).filter(|e| e.marker.is_none()) {
            let alg = e.key.algorithm();
            if !algs.contains(&alg) {
                algs.push(alg);
            }
        }
        algs
    }
}

fn parse_line(path: &Path, line: usize, raw: &str) -> Option<Entry> {
    let s = raw.trim();
    if s.is_empty() || s.starts_with('#') {
        return None;
    }
    let mut rest = s;
    let mut marker = None;
    if let Some(r) = rest.strip_prefix('@') {
        let (m, r2) = r.split_once(char::is_whitespace)?;
        marker = Some(match m {
            "cert-authority" => Marker::CertAuthority,
            "revoked" => Marker::Revoked,
            _ => return None,
        });
        rest = r2.trim_start();
    }
    let (hosts, key_text) = rest.split_once(char::is_whitespace)?;
    let patterns = if let Some(h) = hosts.strip_prefix("|1|") {
        let (salt, hash) = h.split_once('|')?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Patterns::Hashed {
            salt: b64.decode(salt).ok()?,
            hash: b64.decode(hash).ok()?,
        }
    } else {
        Patterns::List(hosts.split(',').map(str::to_string).collect())
    };
    let key = PublicKey::from_openssh(key_text.trim()).ok()?;
    Some(Entry {
        file: path.to_path_buf(),
        line,
        marker,
        patterns,
        key,
    })
}

fn patterns_match(patterns: &Patterns, id: &str) -> bool {
    match patterns {
        Patterns::Hashed { salt, hash } => {
            let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(id.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        Patterns::List(list) => {
            // OpenSSH: a negated match vetoes the whole line; otherwise any positive match.
            let mut positive = false;
            for p in list {
                if let Some(neg) = p.strip_prefix('!') {
                    if glob_match(neg, id) {
                        return false;
                    }
                } else if glob_match(p, id) {
                    positive = true;
                }
            }
            positive
        }
    }
}

/// `*` and `?` wildcards, case-insensitive, as in OpenSSH host patterns.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

// Serialises appends from the many connections of one run; O_APPEND plus a
// re-read under the lock keeps concurrent processes from duplicating lines.
static APPEND_LOCK: Mutex<()> = Mutex::new(());

/// Records `key` for `host:port` in `path` (accept-new), deciding on the file as it is now
/// (re-read under the lock): a key already there is not added twice (Ok(None)); a different
/// key recorded meanwhile for `host:port` (by this run through another path, or by another
/// process) makes this one a changed key, refused. Returns the line written. Creates the
/// file (0600) and its directory. `label` names the host in errors.
pub fn append(
    path: &Path,
    label: &str,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> Result<Option<String>, TransportError> {
    let io_err = |e: std::io::Error| TransportError::KnownHosts {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let _guard = APPEND_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?
    };
    lock_exclusive(&file).map_err(io_err)?;
    let existing = std::fs::read_to_string(path).map_err(io_err)?;
    let mut kh = KnownHosts::default();
    kh.add_text(path, &existing);
    match kh.check(host, port, key) {
        Verdict::Known => return Ok(None),
        Verdict::Unknown => {}
        refused => return Err(refused.refusal(label, key).expect("changed or revoked")),
    }
    let key_text = key.to_openssh().map_err(|e| TransportError::KnownHosts {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Drop the key's comment: known_hosts lines are "hosts type base64".
    let key_text = key_text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let entry = format!("{} {}\n", host_id(host, port), key_text);
    let mut line = String::new();
    if !existing.is_empty() && !existing.ends_with('\n') {
        line.push('\n');
    }
    line.push_str(&entry);
    file.write_all(line.as_bytes()).map_err(io_err)?;
    file.sync_data().map_err(io_err)?;
    Ok(Some(entry))
}

/// flock(2) so that two provision processes appending at once serialise too.
fn lock_exclusive(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    unsafe extern "C" {
        fn flock(fd: i32, operation: i32) -> i32;
    }
    const LOCK_EX: i32 = 2;
    // SAFETY: flock only reads the descriptor, which `file` keeps open; the lock
    // is released when the file is closed.
    let rc = unsafe { flock(file.as_raw_fd(), LOCK_EX) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJysKfxnOUs0X2qKdEdZrXYREIGL9wShSgP6LjDxbWIf";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID9J0YCQnVsXIYK6jy2a+t3mPE3IyInY9+3oBdrSWj8w";
    const EC: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBLl+9xAHZtloQVcK62buikJtQxHJ5oqjDMwCazz6tZPloxgryfr8NmFeVSJ1TmgheB8VlG1zc+Hi6xzbUOGQbQQ=";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn kh(text: &str) -> KnownHosts {
        let mut k = KnownHosts::default();
        k.add_text(Path::new("kh"), text);
        k
    }

    #[test]
    fn plain_and_bracketed_entries() {
        let k = kh(&format!(
            "# comment\n10.0.0.1 {ED}\n[127.0.0.1]:2222 {ED2}\n"
        ));
        assert_eq!(k.check("10.0.0.1", 22, &key(ED)), Verdict::Known);
        assert_eq!(k.check("127.0.0.1", 2222, &key(ED2)), Verdict::Known);
        assert_eq!(k.check("127.0.0.1", 22, &key(ED2)), Verdict::Unknown);
        assert_eq!(k.check("127.0.0.1", 2223, &key(ED2)), Verdict::Unknown);
    }

    #[test]
    fn ipv6_entries_as_openssh_writes_them() {
        // `ssh -p 2222 ::1` records `[::1]:2222`; on port 22 the bare address.
        assert_eq!(host_id("::1", 2222), "[::1]:2222");
        assert_eq!(host_id("fd00::1", 22), "fd00::1");
        assert_eq!(host_id("[fd00::1]", 22), "fd00::1");
        let k = kh(&format!("fd00::1 {ED}\n[::1]:2222 {ED2}\n"));
        assert_eq!(k.check("fd00::1", 22, &key(ED)), Verdict::Known);
        assert_eq!(k.check("::1", 2222, &key(ED2)), Verdict::Known);
        assert_eq!(k.check("::1", 22, &key(ED2)), Verdict::Unknown);
        assert!(matches!(
            k.check("fd00::1", 22, &key(ED2)),
            Verdict::Changed { line: 1, .. }
        ));
    }

    #[test]
    fn changed_key_names_file_and_line() {
        let k = kh(&format!("other {ED2}\n\n[h]:2200 {ED}\n"));
        match k.check("h", 2200, &key(ED2)) {
            Verdict::Changed {
                file,
                line,
                known_fingerprint,
            } => {
                assert_eq!(file, Path::new("kh"));
                assert_eq!(line, 3);
                assert_eq!(known_fingerprint, fingerprint(&key(ED)));
            }
            v => panic!("expected Changed, got {v:?}"),
        }
    }

    #[test]
    fn several_key_types_per_host() {
        let k = kh(&format!("h {EC}\nh {ED}\n"));
        assert_eq!(k.check("h", 22, &key(ED)), Verdict::Known);
        assert_eq!(k.check("h", 22, &key(EC)), Verdict::Known);
        assert_eq!(k.known_algorithms("h", 22).len(), 2);
        // Only an ECDSA key pinned, and an ed25519 key shows up: refused, not trusted.
        let k = kh(&format!("h {EC}\n"));
        assert!(matches!(
            k.check("h", 22, &key(ED)),
            Verdict::Changed { line: 1, .. }
        ));
    }

    #[test]
    fn hashed_entries_match() {
        // The `|1|salt|hmac` form `ssh-keygen -H` writes, for "[127.0.0.1]:2222".
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash = mac.finalize().into_bytes();
        let b64 = base64::engine::general_purpose::STANDARD;
        let line = format!("|1|{}|{} {ED}\n", b64.encode(salt), b64.encode(hash));
        let k = kh(&line);
        assert_eq!(k.check("127.0.0.1", 2222, &key(ED)), Verdict::Known);
        assert_eq!(k.check("127.0.0.1", 2223, &key(ED)), Verdict::Unknown);
        assert!(matches!(
            k.check("127.0.0.1", 2222, &key(ED2)),
            Verdict::Changed { .. }
        ));
    }

    #[test]
    fn wildcards_negation_and_markers() {
        let k = kh(&format!(
            "*.example.com,!bad.example.com {ED}\n@revoked * {ED2}\n@cert-authority * {EC}\n"
        ));
        assert_eq!(k.check("a.example.com", 22, &key(ED)), Verdict::Known);
        assert_eq!(k.check("bad.example.com", 22, &key(ED)), Verdict::Unknown);
        assert!(matches!(
            k.check("a.example.com", 22, &key(ED2)),
            Verdict::Revoked { line: 2, .. }
        ));
        // A CA line is not a pinned host key.
        assert_eq!(k.check("z", 22, &key(EC)), Verdict::Unknown);
    }

    #[test]
    fn glob() {
        assert!(glob_match("10.0.0.?", "10.0.0.7"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("web-*-a", "web-12-a"));
        assert!(!glob_match("web-*-a", "web-12-b"));
        assert!(glob_match("HOST", "host"));
    }

    #[test]
    fn append_is_idempotent_and_concurrent_safe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_hosts");
        let added = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    if append(&path, "h", "127.0.0.1", 2222, &key(ED))
                        .unwrap()
                        .is_some()
                    {
                        added.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(
            added.into_inner(),
            1,
            "one writer records it, the others find it"
        );
        append(&path, "h", "127.0.0.1", 2223, &key(ED2)).unwrap();
        // Another key for a host:port recorded meanwhile is a changed key, not a second pin.
        let e = append(&path, "h", "127.0.0.1", 2222, &key(ED2)).unwrap_err();
        assert!(
            matches!(e, TransportError::HostKeyChanged { line: 1, .. }),
            "{e}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("[127.0.0.1]:2222 {ED}\n[127.0.0.1]:2223 {ED2}\n"),
            "one line per host, whatever the concurrency"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
