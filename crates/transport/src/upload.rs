//! Atomic, idempotent file upload built from two shell commands: a check
//! (hash + attributes) and a write that streams content through stdin.

use crate::Transport;
use crate::command::{Command, Output, Stdin};
use crate::error::TransportError;
use crate::shell::quote;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Where the content comes from. Files are streamed, never read whole.
#[derive(Debug)]
pub enum UploadSource {
    Bytes(zeroize::Zeroizing<Vec<u8>>),
    File(PathBuf),
}

#[derive(Debug)]
pub struct Upload {
    pub dest: String,
    pub source: UploadSource,
    /// Octal mode such as 0o600; None keeps the current file's mode, or 0644 for a new file.
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

impl Upload {
    pub fn bytes(dest: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Upload {
            dest: dest.into(),
            source: UploadSource::Bytes(zeroize::Zeroizing::new(data.into())),
            mode: None,
            owner: None,
            group: None,
        }
    }

    pub fn file(dest: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Upload {
            dest: dest.into(),
            source: UploadSource::File(path.into()),
            mode: None,
            owner: None,
            group: None,
        }
    }

    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    pub fn owner(mut self, owner: impl Into<String>, group: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self.group = Some(group.into());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOutcome {
    /// Content and attributes already matched: nothing was transferred.
    Unchanged,
    /// The file was written (or its mode/owner fixed).
    Written,
}

/// What the check command found at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub sha256: String,
}

/// One round trip: `absent`, or `MODE OWNER GROUP` then the content hash.
pub fn check_command(dest: &str) -> String {
    let d = quote(dest);
    format!(
        "if [ -f {d} ]; then stat -c '%a %U %G' -- {d} && sha256sum < {d}; else echo absent; fi"
    )
}

/// Parses the output of [`check_command`]; None when the file is absent.
pub fn parse_check(stdout: &str) -> Result<Option<RemoteFile>, String> {
    let mut lines = stdout.lines();
    let first = lines.next().ok_or("empty answer")?;
    if first.trim() == "absent" {
        return Ok(None);
    }
    let mut f = first.split_whitespace();
    let (Some(mode), Some(owner), Some(group)) = (f.next(), f.next(), f.next()) else {
        return Err(format!("unexpected stat output `{first}`"));
    };
    let mode = u32::from_str_radix(mode, 8).map_err(|_| format!("unexpected mode `{mode}`"))?;
    let sha = lines
        .next()
        .and_then(|l| l.split_whitespace().next())
        .ok_or("missing sha256sum output")?;
    Ok(Some(RemoteFile {
        mode,
        owner: owner.into(),
        group: group.into(),
        sha256: sha.into(),
    }))
}

/// The write command: stream stdin into a temp file next to `dest`, verify its
/// hash, set attributes, then rename over `dest` (atomic on one filesystem).
/// A failed or interrupted upload leaves `dest` as it was and removes the temp file.
pub fn write_command(
    dest: &str,
    sha256: &str,
    mode: u32,
    owner: Option<&str>,
    group: Option<&str>,
) -> String {
    let d = quote(dest);
    let mut s = format!(
        "set -e; d={d}; t=$(mktemp \"$(dirname \"$d\")/.$(basename \"$d\").provision-XXXXXX\"); trap 'rm -f \"$t\"' EXIT; \
         cat > \"$t\"; [ \"$(sha256sum < \"$t\" | cut -d' ' -f1)\" = {sha256} ] || {{ echo 'content arrived damaged (sha256 mismatch)' >&2; exit 1; }}; \
         chmod {mode:o} \"$t\"; "
    );
    if let Some(chown) = chown_spec(owner, group) {
        s.push_str(&format!("chown {} \"$t\"; ", quote(&chown)));
    }
    s.push_str("mv -f \"$t\" \"$d\"; trap - EXIT");
    s
}

/// Fixes only mode/owner when the content already matches.
pub fn attrs_command(dest: &str, mode: u32, owner: Option<&str>, group: Option<&str>) -> String {
    let d = quote(dest);
    let mut s = format!("chmod {mode:o} {d}");
    if let Some(chown) = chown_spec(owner, group) {
        s.push_str(&format!(" && chown {} {d}", quote(&chown)));
    }
    s
}

fn chown_spec(owner: Option<&str>, group: Option<&str>) -> Option<String> {
    match (owner, group) {
        (Some(o), Some(g)) => Some(format!("{o}:{g}")),
        (Some(o), None) => Some(o.to_string()),
        (None, Some(g)) => Some(format!(":{g}")),
        (None, None) => None,
    }
}

/// Hex sha256 of the content, streaming files in 64 KiB chunks.
pub async fn local_sha256(source: &UploadSource) -> std::io::Result<String> {
    let mut h = Sha256::new();
    match source {
        UploadSource::Bytes(b) => h.update(b.as_slice()),
        UploadSource::File(p) => {
            use tokio::io::AsyncReadExt;
            let mut f = tokio::fs::File::open(p).await?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = f.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn upload_err(t: &(impl Transport + ?Sized), dest: &str, reason: String) -> TransportError {
    TransportError::Upload {
        host: t.host().to_string(),
        path: dest.to_string(),
        reason,
    }
}

fn failed(t: &(impl Transport + ?Sized), dest: &str, out: &Output) -> TransportError {
    upload_err(
        t,
        dest,
        format!("{}: {}", out.describe_exit(), out.stderr_str().trim()),
    )
}

/// The generic upload every transport gets: check, then write only if needed.
pub async fn upload_via_commands<T: Transport + ?Sized>(
    t: &T,
    up: Upload,
) -> Result<UploadOutcome, TransportError> {
    let local_io = |e: std::io::Error| match &up.source {
        UploadSource::File(p) => TransportError::LocalIo {
            path: p.clone(),
            source: e,
        },
        UploadSource::Bytes(_) => upload_err(t, &up.dest, e.to_string()),
    };
    let sha = local_sha256(&up.source).await.map_err(local_io)?;
    let out = t.run(Command::new(check_command(&up.dest))).await?;
    if !out.success() {
        return Err(failed(t, &up.dest, &out));
    }
    let remote = parse_check(&out.stdout_str()).map_err(|r| upload_err(t, &up.dest, r))?;
    let mode = up.mode.or(remote.as_ref().map(|r| r.mode)).unwrap_or(0o644);
    let (owner, group) = (up.owner.as_deref(), up.group.as_deref());
    if let Some(r) = &remote
        && r.sha256 == sha
    {
        {
            let attrs_ok = r.mode == mode
                && owner.is_none_or(|o| o == r.owner)
                && group.is_none_or(|g| g == r.group);
            if attrs_ok {
                return Ok(UploadOutcome::Unchanged);
            }
            let out = t
                .run(Command::new(attrs_command(&up.dest, mode, owner, group)))
                .await?;
            return if out.success() {
                Ok(UploadOutcome::Written)
            } else {
                Err(failed(t, &up.dest, &out))
            };
        }
    }
    let stdin = match &up.source {
        UploadSource::Bytes(b) => Stdin::Bytes(b.clone()),
        UploadSource::File(p) => {
            Stdin::Stream(Box::pin(tokio::fs::File::open(p).await.map_err(local_io)?))
        }
    };
    let out = t
        .run(Command::new(write_command(&up.dest, &sha, mode, owner, group)).stdin(stdin))
        .await?;
    if out.success() {
        Ok(UploadOutcome::Written)
    } else {
        Err(failed(t, &up.dest, &out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_command_is_exact() {
        assert_eq!(
            check_command("/etc/my file"),
            "if [ -f '/etc/my file' ]; then stat -c '%a %U %G' -- '/etc/my file' && sha256sum < '/etc/my file'; else echo absent; fi"
        );
    }

    #[test]
    fn parse_check_output() {
        assert_eq!(parse_check("absent\n").unwrap(), None);
        assert_eq!(
            parse_check("600 root docker\nabc123  -\n").unwrap(),
            Some(RemoteFile {
                mode: 0o600,
                owner: "root".into(),
                group: "docker".into(),
                sha256: "abc123".into()
            })
        );
        assert!(parse_check("").is_err());
        assert!(parse_check("rwx root root\nx -\n").is_err());
    }

    #[test]
    fn write_command_is_exact() {
        assert_eq!(
            write_command("/etc/a.conf", "ff", 0o640, Some("root"), Some("adm")),
            "set -e; d=/etc/a.conf; t=$(mktemp \"$(dirname \"$d\")/.$(basename \"$d\").provision-XXXXXX\"); trap 'rm -f \"$t\"' EXIT; \
             cat > \"$t\"; [ \"$(sha256sum < \"$t\" | cut -d' ' -f1)\" = ff ] || { echo 'content arrived damaged (sha256 mismatch)' >&2; exit 1; }; \
             chmod 640 \"$t\"; chown root:adm \"$t\"; mv -f \"$t\" \"$d\"; trap - EXIT"
        );
    }

    #[test]
    fn attrs_command_is_exact() {
        assert_eq!(
            attrs_command("/x", 0o600, None, Some("docker")),
            "chmod 600 /x && chown :docker /x"
        );
        assert_eq!(attrs_command("/x", 0o755, None, None), "chmod 755 /x");
    }

    #[tokio::test]
    async fn sha_of_bytes_and_file_agree() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        let a = local_sha256(&UploadSource::Bytes(zeroize::Zeroizing::new(
            b"hello\n".to_vec(),
        )))
        .await
        .unwrap();
        let b = local_sha256(&UploadSource::File(p)).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }
}
