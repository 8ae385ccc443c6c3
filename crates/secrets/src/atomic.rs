//! Replacing a file atomically: the one way secrets and recipients files are written, so a
//! crash or a full disk never leaves one half-written.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::SecretsError;

/// Replaces `path` atomically: writes `NAME.tmp-XXXXXX` in the same directory, fsyncs it,
/// renames it over `path`, then fsyncs the directory. The original is never partially written;
/// on failure the temporary file is removed. An existing file keeps its permissions; a new one
/// gets `new_mode`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], new_mode: u32) -> Result<(), SecretsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "secrets".into());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{name}.tmp-"))
        .rand_bytes(6)
        .tempfile_in(&dir)
        .map_err(|e| SecretsError::io("create a temporary file in", &dir, e))?;
    let permissions = match fs::metadata(path) {
        Ok(meta) => meta.permissions(),
        Err(_) => fs::Permissions::from_mode(new_mode),
    };
    let write = |f: &mut fs::File| -> std::io::Result<()> {
        f.write_all(bytes)?;
        f.set_permissions(permissions)?;
        f.sync_all()
    };
    write(tmp.as_file_mut()).map_err(|e| SecretsError::io("write", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| SecretsError::io("replace", path, e.error))?;
    // Make the rename itself durable; failing to sync a directory is not worth failing for.
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
