//! The one way the binary writes to the terminal: every line is cleaned by the process's
//! redactor (the values of every secrets file and password this process has read) before it
//! leaves, so no output path can skip redaction. `clippy.toml` forbids `print!`, `eprintln!`
//! and friends, and `std::io::stdout`/`stderr`, everywhere else: a new path cannot forget it.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

use provision_secrets::{Redacted, Redactor};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};

/// Everything the process knows to be secret, merged as files are decrypted and as day-2
/// operations learn values (shared with their `Cluster`).
pub fn known() -> Arc<Mutex<Redactor>> {
    static KNOWN: OnceLock<Arc<Mutex<Redactor>>> = OnceLock::new();
    KNOWN
        .get_or_init(|| Arc::new(Mutex::new(Redactor::empty())))
        .clone()
}

/// Adds `r`'s values to what every later output line is cleaned of.
pub fn learn(r: &Redactor) {
    let k = known();
    let mut all = k.lock().unwrap_or_else(|e| e.into_inner());
    *all = all.merged(r);
}

/// `text` cleaned of every known secret.
pub fn clean(text: &str) -> Redacted {
    let k = known();
    let all = k.lock().unwrap_or_else(|e| e.into_inner());
    all.clean(text)
}

/// Writes `text` (cleaned) to stdout as is.
pub fn out(text: &str) {
    write_stdout(clean(text).as_bytes());
}

/// A closed pipe (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(bytes).and_then(|()| o.flush());
}

/// Writes `text` (cleaned) to stderr as is.
pub fn err(text: &str) {
    let _ = std::io::stderr().write_all(clean(text).as_bytes());
}

/// One line on stdout.
pub fn out_line(text: &str) {
    out(&format!("{text}\n"));
}

/// One line on stderr.
pub fn err_line(text: &str) {
    err(&format!("{text}\n"));
}

/// The decrypted bytes a person asked for (`provision secrets view`, git's `textconv`): the
/// one output that is the secret itself, so the one that is not cleaned.
pub fn secret_to_stdout(bytes: &[u8]) {
    write_stdout(bytes);
}

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A writer for code that renders into `impl Write` (help text, event lines, streamed
/// command output): whole lines are cleaned, so a secret split across writes is still found;
/// a partial line waits for its end or a flush.
pub struct Cleaning<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

/// [`Cleaning`] onto stdout.
pub fn stdout() -> Cleaning<std::io::Stdout> {
    Cleaning::new(std::io::stdout())
}

/// [`Cleaning`] onto stderr.
pub fn stderr() -> Cleaning<std::io::Stderr> {
    Cleaning::new(std::io::stderr())
}

impl<W: Write> Cleaning<W> {
    pub fn new(inner: W) -> Self {
        Cleaning {
            inner,
            pending: Vec::new(),
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        let text = clean(&String::from_utf8_lossy(bytes));
        // A closed pipe (`| head`) is not an error.
        let _ = self
            .inner
            .write_all(text.as_bytes())
            .and_then(|()| self.inner.flush());
    }
}

impl<W: Write> Write for Cleaning<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') {
            let lines: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&lines);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest);
        }
        Ok(())
    }
}

impl<W: Write> Drop for Cleaning<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// `eprintln!` through [`err_line`].
macro_rules! say {
    ($($arg:tt)*) => { $crate::term::err_line(&format!($($arg)*)) };
}

/// `println!` through [`out_line`].
macro_rules! show {
    ($($arg:tt)*) => { $crate::term::out_line(&format!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_cleaned_of_what_the_process_learnt() {
        let before = clean("token tok-4c1d-9f2e-learnt").into_string();
        assert_eq!(before, "token tok-4c1d-9f2e-learnt");
        learn(&Redactor::new(["tok-4c1d-9f2e-learnt"]));
        let after = clean("token tok-4c1d-9f2e-learnt").into_string();
        assert!(!after.contains("tok-4c1d-9f2e-learnt"), "{after}");
        // Learning more keeps what was learnt before.
        learn(&Redactor::new(["second-9a8b7c6d5e"]));
        let both = clean("tok-4c1d-9f2e-learnt second-9a8b7c6d5e").into_string();
        assert!(
            !both.contains("tok-4c1d") && !both.contains("second-9a8b"),
            "{both}"
        );
        // What a day-2 operation learns through the shared redactor is hidden here too.
        let shared = known();
        let more = shared.lock().unwrap().with_values(["unlock-77aa88bb99cc"]);
        *shared.lock().unwrap() = more;
        assert!(!clean("key unlock-77aa88bb99cc").contains("unlock-77aa"));
    }

    #[test]
    fn a_writer_cleans_secrets_split_across_writes() {
        learn(&Redactor::new(["hunter2-secret-value"]));
        let mut out = Vec::new();
        {
            let mut w = Cleaning::new(&mut out);
            w.write_all(b"password=hunter2-se").unwrap();
            w.write_all(b"cret-value\nnext").unwrap();
        }
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("hunter2"), "{s}");
        assert!(
            s.ends_with("\nnext"),
            "the partial line is written on drop: {s}"
        );
    }
}
