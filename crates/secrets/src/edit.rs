//! `secrets edit`: decrypt into a private temp file, run the user's editor, re-encrypt, and
//! remove the plaintext on every way out (success, error, editor failure, Ctrl-C, SIGTERM).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::{IdentitySources, Secrets, SecretsError, SecretsFile};

/// Environment variable that overrides where the private plaintext directory is created.
pub const ENV_TMPDIR: &str = "PROVISION_SECRETS_TMPDIR";

/// Marks the lines of the parse-error block put at the top of the file; they are stripped
/// before the text is parsed again.
const ERROR_MARK: &str = "#! ";

/// How `edit` runs.
#[derive(Debug, Clone)]
pub struct EditOptions {
    /// The editor command, as in `$EDITOR` (may hold arguments: `code --wait`); run by `sh -c`
    /// with the file path as its last argument.
    pub editor: String,
    /// Where to create the private directory (memory-backed only); `None` picks
    /// `$XDG_RUNTIME_DIR`, else `/dev/shm`.
    pub tmp_root: Option<PathBuf>,
    /// Called with short progress notes for the user (never holding secret text).
    pub notice: fn(&str),
    /// Save even though the recipients file changed since the last write (`--yes`).
    pub confirm_recipients: bool,
}

impl EditOptions {
    /// `$VISUAL`, else `$EDITOR`, else `vi`; `$PROVISION_SECRETS_TMPDIR`; notices to `notice`
    /// (the caller prints: a library does not).
    pub fn from_env(notice: fn(&str)) -> Self {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        EditOptions {
            editor: var("VISUAL")
                .or_else(|| var("EDITOR"))
                .unwrap_or_else(|| "vi".into()),
            tmp_root: var(ENV_TMPDIR).map(PathBuf::from),
            notice,
            confirm_recipients: false,
        }
    }
}

/// What `edit` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOutcome {
    /// Nothing changed: the file on disk was not touched (byte-identical).
    Unchanged,
    /// The edit was encrypted to the file's recipients and the file replaced.
    Saved,
}

/// Edits a secrets file in the user's editor.
pub fn edit(
    path: &Path,
    ids: &IdentitySources,
    opts: &EditOptions,
) -> Result<EditOutcome, SecretsError> {
    let file = SecretsFile::new(path);
    // Signals keep their default effect while decrypting: Ctrl-C at a passphrase prompt must
    // end the command at once, and nothing is on disk yet.
    let decrypted = file.decrypt(ids)?;
    // Refuse before the user spends time editing, not after.
    file.check_encryptable(decrypted.mode())?;
    decrypted.require_confirmed(&file, opts.confirm_recipients)?;
    // Before the plaintext file exists, so a signal from here on leads to the cleanup below.
    let signals = SignalGuard::install();

    let original = decrypted.text().as_bytes();
    let private = PrivateDir::create(opts.tmp_root.as_deref(), path)?;
    private.write(original)?;
    // What the editor was last given; equal to the result means "closed without changes".
    let mut shown = Zeroizing::new(original.to_vec());
    let mut error_shown = false;
    loop {
        run_editor(&opts.editor, private.file(), &signals, path)?;
        let edited = Zeroizing::new(
            fs::read(private.file())
                .map_err(|e| SecretsError::io("read the edited", private.file(), e))?,
        );
        let content = if error_shown {
            strip_error_block(&edited)
        } else {
            &edited[..]
        };
        if content == original {
            return Ok(EditOutcome::Unchanged);
        }
        let parsed = match std::str::from_utf8(content) {
            Ok(text) => Secrets::parse(path, text)
                .map(drop)
                .and_then(|()| crate::check_value_lengths(path, text)),
            Err(_) => Err(SecretsError::NotUtf8 {
                path: path.to_path_buf(),
            }),
        };
        match parsed {
            Ok(()) => {
                signals.check(path)?;
                file.write_confirmed(content, &decrypted, opts.confirm_recipients)?;
                return Ok(EditOutcome::Saved);
            }
            Err(err) => {
                // Closed without touching the error, or wrote the very text refused last time
                // (an editor script, or saving again unchanged): no loop, the user gave up.
                let same_again = error_shown && content == strip_error_block(&shown);
                if error_shown && (edited[..] == shown[..] || same_again) {
                    return Err(SecretsError::EditAbandoned {
                        path: path.to_path_buf(),
                    });
                }
                let (block, notice) = error_block(&err);
                let mut next = Zeroizing::new(block.into_bytes());
                next.extend_from_slice(content);
                private.write(&next)?;
                shown = next;
                error_shown = true;
                (opts.notice)(&format!(
                    "{notice}; reopening the editor with the error at the top"
                ));
            }
        }
    }
}

/// The comment block shown above the text when it cannot be saved, and a short notice for the
/// terminal. Neither quotes the text. Line numbers count the block's lines, as the editor
/// shows the file with it.
fn error_block(err: &SecretsError) -> (String, String) {
    const BLOCK_LINES: usize = 3;
    let (problem, notice) = match err {
        SecretsError::InvalidToml {
            message,
            line,
            column,
            ..
        } => {
            let where_ = format!("line {}, column {column}", line + BLOCK_LINES);
            (
                format!(
                    "this is not valid TOML: {} (at {where_} of this file)",
                    message.replace(['\n', '\r'], " ")
                ),
                format!("the edit is not valid TOML ({where_})"),
            )
        }
        SecretsError::TooShort { values, .. } => {
            let list: Vec<String> = values
                .iter()
                .map(|v| match v.line {
                    Some(l) => format!(
                        "`{}` (line {}, {} characters)",
                        v.name,
                        l + BLOCK_LINES,
                        v.chars
                    ),
                    None => format!("`{}` ({} characters)", v.name, v.chars),
                })
                .collect();
            (
                format!(
                    "secrets need at least {} characters (shorter ones cannot be hidden in output): {}",
                    crate::MIN_VALUE_CHARS,
                    list.join(", ")
                ),
                format!(
                    "the edit has values shorter than {} characters: {}",
                    crate::MIN_VALUE_CHARS,
                    list.join(", ")
                ),
            )
        }
        _ => (
            "the file is not UTF-8 text".to_string(),
            "the edit is not UTF-8 text".to_string(),
        ),
    };
    let block = format!(
        "{ERROR_MARK}provision: not saved, {problem}\n\
         {ERROR_MARK}fix it and save; these `#!` lines are removed automatically.\n\
         {ERROR_MARK}to give up, close the editor without saving: the secrets file stays as it was.\n"
    );
    debug_assert_eq!(block.lines().count(), BLOCK_LINES);
    (block, notice)
}

fn strip_error_block(text: &[u8]) -> &[u8] {
    let mut rest = text;
    while rest.starts_with(ERROR_MARK.as_bytes()) {
        rest = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => &rest[i + 1..],
            None => &[],
        };
    }
    rest
}

/// Runs the editor and waits for it, watching for signals: on SIGINT/SIGTERM/SIGHUP the editor
/// is stopped and `Interrupted` returned (the caller's guards then remove the plaintext).
fn run_editor(
    editor: &str,
    file: &Path,
    signals: &SignalGuard,
    path: &Path,
) -> Result<(), SecretsError> {
    signals.check(path)?;
    let mut child = Command::new("sh")
        .arg("-c")
        // `exec` so the editor is our child: its own status (and signals) reach us, not a shell's.
        .arg(format!("exec {editor} \"$@\""))
        .arg(editor)
        .arg(file)
        .spawn()
        .map_err(|source| SecretsError::EditorStart {
            editor: editor.to_string(),
            source,
        })?;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| SecretsError::io("wait for the editor of", path, e))?
        {
            break status;
        }
        if let Some(signal) = signals.pending() {
            stop(&mut child);
            return Err(SecretsError::Interrupted {
                path: path.to_path_buf(),
                signal,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    signals.check(path)?;
    if status.success() {
        Ok(())
    } else {
        Err(SecretsError::EditorFailed {
            editor: editor.to_string(),
            status: describe(status),
            path: path.to_path_buf(),
        })
    }
}

/// SIGTERM first so a terminal editor can restore the terminal, SIGKILL if it lingers.
fn stop(child: &mut std::process::Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet (no reuse possible).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Whether `dir` is on a file system kept in memory (tmpfs, ramfs).
fn is_memory_backed(dir: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs(2) with a NUL-terminated path and a zeroed out-struct it fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let kind = st.f_type as i64;
    kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
}

/// A 0700 directory holding the 0600 plaintext file; removed (after overwriting the file) on
/// drop, whatever the exit path. Editor swap and backup files made next to the file go with it.
struct PrivateDir {
    /// Held for its drop, which removes the directory.
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl PrivateDir {
    fn create(root: Option<&Path>, secrets_path: &Path) -> Result<Self, SecretsError> {
        // Memory-backed only: the plaintext must never reach a disk (swap aside), where
        // deleting a file does not erase it.
        let candidates: Vec<PathBuf> = match root {
            Some(r) => vec![r.to_path_buf()],
            None => {
                let mut c = Vec::new();
                if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
                    c.push(PathBuf::from(xdg));
                }
                c.push(PathBuf::from("/dev/shm"));
                c
            }
        };
        let mut problems = Vec::new();
        for candidate in candidates {
            if !candidate.is_dir() {
                problems.push(format!("{} is not a directory", candidate.display()));
                continue;
            }
            if !is_memory_backed(&candidate) {
                problems.push(format!(
                    "{} is not memory-backed (tmpfs)",
                    candidate.display()
                ));
                continue;
            }
            match tempfile::Builder::new()
                .prefix("provision-secrets-")
                .permissions(fs::Permissions::from_mode(0o700))
                .tempdir_in(&candidate)
            {
                Ok(dir) => {
                    // The umask can only clear bits, but check rather than trust.
                    let mode = fs::metadata(dir.path())
                        .map(|m| m.permissions().mode())
                        .unwrap_or(0o777);
                    if mode & 0o077 != 0 {
                        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
                            .map_err(|e| SecretsError::TempDir {
                                reason: format!(
                                    "cannot make {} private: {e}",
                                    dir.path().display()
                                ),
                            })?;
                    }
                    let stem = secrets_path
                        .file_stem()
                        .map(|s| {
                            s.to_string_lossy().replace(
                                |c: char| {
                                    !c.is_ascii_alphanumeric() && c != '-' && c != '_' && c != '.'
                                },
                                "_",
                            )
                        })
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "secrets".into());
                    // `.toml` so editors highlight it.
                    let file = dir.path().join(format!("{stem}.toml"));
                    return Ok(PrivateDir { _dir: dir, file });
                }
                Err(e) => problems.push(format!("{}: {e}", candidate.display())),
            }
        }
        Err(SecretsError::TempDir {
            reason: format!(
                "no memory-backed directory for the plaintext copy ({}): set {ENV_TMPDIR} or XDG_RUNTIME_DIR to a directory on tmpfs",
                problems.join("; ")
            ),
        })
    }

    fn file(&self) -> &Path {
        &self.file
    }

    /// (Re)writes the plaintext file, mode 0600.
    fn write(&self, bytes: &[u8]) -> Result<(), SecretsError> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.file)
            .map_err(|e| SecretsError::io("write the plaintext copy", &self.file, e))?;
        // An editor may have replaced the file with one of looser mode.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .and_then(|()| f.write_all(bytes))
            .map_err(|e| SecretsError::io("write the plaintext copy", &self.file, e))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // Best effort: overwrite before unlinking (meaningful on tmpfs, harmless elsewhere).
        if let Ok(meta) = fs::metadata(&self.file)
            && let Ok(mut f) = fs::OpenOptions::new().write(true).open(&self.file)
        {
            let zeros = vec![0u8; usize::try_from(meta.len()).unwrap_or(0)];
            let _ = f.write_all(&zeros).and_then(|()| f.sync_all());
        }
        // Then `self._dir` is dropped: TempDir removes the directory and everything in it.
    }
}

/// The signal that interrupted an edit (0 = none). Written by the handler: a plain atomic store
/// is async-signal-safe.
static PENDING: AtomicI32 = AtomicI32::new(0);

/// Installed handlers and the dispositions they replaced, shared by concurrent edits.
static INSTALLED: Mutex<(usize, Vec<(libc::c_int, libc::sigaction)>)> = Mutex::new((0, Vec::new()));

const WATCHED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(signal: libc::c_int) {
    PENDING.store(signal, Ordering::SeqCst);
}

/// Catches SIGINT/SIGTERM/SIGHUP while an edit runs, so they end the edit through the normal
/// cleanup instead of killing the process with the plaintext on disk. Restores the previous
/// dispositions when the last guard is dropped. Signals the user had set to be ignored (e.g.
/// SIGHUP under nohup) stay ignored.
struct SignalGuard;

impl SignalGuard {
    fn install() -> Self {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        if installed.0 == 0 {
            PENDING.store(0, Ordering::SeqCst);
            for signal in WATCHED {
                // SAFETY: sigaction(2) with zero-initialised structs (a valid "empty" value for
                // this plain C struct) and a handler that only does an atomic store.
                unsafe {
                    let mut old: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(signal, std::ptr::null(), &mut old) != 0
                        || old.sa_sigaction == libc::SIG_IGN
                    {
                        continue;
                    }
                    let mut new: libc::sigaction = std::mem::zeroed();
                    new.sa_sigaction =
                        on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                    libc::sigemptyset(&mut new.sa_mask);
                    new.sa_flags = libc::SA_RESTART;
                    if libc::sigaction(signal, &new, std::ptr::null_mut()) == 0 {
                        installed.1.push((signal, old));
                    }
                }
            }
        }
        installed.0 += 1;
        SignalGuard
    }

    fn pending(&self) -> Option<i32> {
        match PENDING.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    fn check(&self, path: &Path) -> Result<(), SecretsError> {
        match self.pending() {
            Some(signal) => Err(SecretsError::Interrupted {
                path: path.to_path_buf(),
                signal,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        installed.0 -= 1;
        if installed.0 == 0 {
            for (signal, old) in installed.1.drain(..) {
                // SAFETY: restores the disposition saved by `install`.
                unsafe {
                    libc::sigaction(signal, &old, std::ptr::null_mut());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_block_is_stripped_and_keeps_position_hint() {
        let err = Secrets::parse(Path::new("s.age"), "a = 1\nb = \n").unwrap_err();
        let (block, where_) = error_block(&err);
        assert!(where_.contains("line 5"), "{where_}");
        let mut text = block.into_bytes();
        text.extend_from_slice(b"a = 1\n");
        assert_eq!(strip_error_block(&text), b"a = 1\n");
        assert_eq!(strip_error_block(b"#! x"), b"");
        assert_eq!(strip_error_block(b"# normal\n"), b"# normal\n");
    }

    #[test]
    fn private_dir_is_0700_file_0600_and_removed() {
        let root = tempfile::tempdir_in("/dev/shm").unwrap();
        assert!(is_memory_backed(root.path()));
        assert!(!is_memory_backed(Path::new("/proc")));
        let file;
        {
            let dir = PrivateDir::create(Some(root.path()), Path::new("x/prod.age")).unwrap();
            dir.write(b"k = 'v'\n").unwrap();
            file = dir.file().to_path_buf();
            assert_eq!(file.file_name().unwrap(), "prod.toml");
            let dmode = fs::metadata(file.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            let fmode = fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(dmode & 0o777, 0o700);
            assert_eq!(fmode & 0o777, 0o600);
        }
        assert!(!file.exists());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
