//! What a remote command is (a POSIX sh script plus stdin) and what it returns.

use crate::shell::quote;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncRead;

/// How long the host's `timeout` waits after its TERM before it sends KILL.
pub const KILL_AFTER: Duration = Duration::from_secs(5);

/// How a script runs on a host: `sh -c SCRIPT`, and with a deadline under coreutils' `timeout`,
/// so that a command past it is stopped on the host itself (TERM to its whole process group,
/// KILL [`KILL_AFTER`] later) instead of running on after provision gave up on it; closing the
/// SSH channel would not signal it. `timeout` exits 124 (137 after KILL) when it stopped it.
/// The script's own EXIT trap still runs when it is stopped (sh runs none on a signal it does
/// not trap): a backup that stopped Docker starts it again.
pub fn sh_c(script: &str, deadline: Option<Duration>) -> String {
    match deadline {
        None => format!("sh -c {}", quote(script)),
        Some(d) => format!(
            "timeout -k {} {} sh -c {}",
            KILL_AFTER.as_secs(),
            seconds(d),
            quote(&format!("trap 'exit 143' TERM; {script}"))
        ),
    }
}

/// Seconds as `timeout` reads them: whole, or with milliseconds.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{}.{:03}", d.as_secs(), d.subsec_millis())
    }
}

/// True when a command run by [`sh_c`] with `deadline` was stopped by it: `timeout`'s exit
/// status, after at least the deadline (a script may exit 124 on its own, earlier).
pub fn stopped_by_deadline(
    exit_status: Option<u32>,
    deadline: Duration,
    elapsed: Duration,
) -> bool {
    matches!(exit_status, Some(124 | 137)) && elapsed >= deadline
}

/// Data fed to a remote command's standard input.
///
/// Secrets and file contents travel here, never in the command line, so they
/// never show up in any process listing on either side.
#[derive(Default)]
pub enum Stdin {
    /// No input: the remote side sees end-of-file at once.
    #[default]
    Empty,
    /// A small buffer, wiped from memory when dropped.
    Bytes(zeroize::Zeroizing<Vec<u8>>),
    /// A stream read in chunks (large uploads are never held in memory).
    Stream(Pin<Box<dyn AsyncRead + Send>>),
}

impl Stdin {
    pub fn bytes(data: impl Into<Vec<u8>>) -> Self {
        Stdin::Bytes(zeroize::Zeroizing::new(data.into()))
    }
}

impl fmt::Debug for Stdin {
    // Never print stdin: it may hold a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stdin::Empty => f.write_str("Empty"),
            Stdin::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Stdin::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// A piece of a streamed command's output, as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// Where a streamed command's output goes (`provision logs --follow`, `exec`,
/// backups): chunks are sent as they arrive instead of being collected.
pub type OutputSink = tokio::sync::mpsc::UnboundedSender<Chunk>;

/// A command to run on a host: a POSIX `sh` script, its stdin and an optional timeout.
///
/// The script runs under `sh -c` whatever the user's login shell is, and under
/// `sudo` when the host's connection is configured to become root.
#[derive(Debug, Default)]
pub struct Command {
    pub script: String,
    pub stdin: Stdin,
    /// None = wait as long as it takes (package installs can take minutes).
    pub timeout: Option<Duration>,
    /// When set, output is streamed here and the returned [`Output`] has empty
    /// stdout and stderr.
    pub output_to: Option<OutputSink>,
    /// When set, kept up to date with the last complete line the command printed so far (the
    /// heartbeat of a long step shows it). Not fed for streamed commands (`output_to`).
    pub tail: Option<Tail>,
}

impl Command {
    pub fn new(script: impl Into<String>) -> Self {
        Command {
            script: script.into(),
            ..Default::default()
        }
    }

    pub fn stdin(mut self, stdin: Stdin) -> Self {
        self.stdin = stdin;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Streams the output to `sink` as it arrives.
    pub fn stream_to(mut self, sink: OutputSink) -> Self {
        self.output_to = Some(sink);
        self
    }

    /// Keeps `tail` up to date with the last complete line printed so far.
    pub fn tail(mut self, tail: Tail) -> Self {
        self.tail = Some(tail);
        self
    }
}

/// The last complete, non-blank line a running command printed so far, on stdout or stderr,
/// whichever came last: the transport feeds it as output arrives, the runner's heartbeat reads
/// it. Only whole lines: a line still being printed could end in the first part of a secret,
/// which redaction cannot recognise. Clones share the line.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<Option<Vec<u8>>>>);

impl Tail {
    /// The line (lossily decoded; trailing `\r` and blanks removed), if one was printed yet.
    pub fn last_line(&self) -> Option<String> {
        let line = self.0.lock().unwrap_or_else(|e| e.into_inner());
        line.as_ref()
            .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
    }

    fn set(&self, line: &[u8]) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(line.to_vec());
    }
}

impl fmt::Debug for Tail {
    // Never print the line: it is command output, and may hold a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tail")
    }
}

/// Finds the complete lines of one growing output buffer for a [`Tail`], scanning each byte
/// once (a long line without a newline is not scanned again at every chunk).
#[derive(Debug, Default)]
pub(crate) struct Lines {
    /// Where the line being printed starts.
    start: usize,
    /// How far the buffer was scanned for newlines.
    scanned: usize,
}

impl Lines {
    /// Called after `buf` grew: the last non-blank line completed since the previous call.
    pub(crate) fn last_new<'a>(&mut self, buf: &'a [u8]) -> Option<&'a [u8]> {
        let from = self.scanned.min(buf.len());
        self.scanned = buf.len();
        let end = from + buf[from..].iter().rposition(|&b| b == b'\n')?;
        let first = self.start.min(end);
        self.start = end + 1;
        buf[first..end]
            .split(|&b| b == b'\n')
            .rev()
            .find(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
    }

    /// [`Lines::last_new`], into `tail` when there is one.
    pub(crate) fn feed(&mut self, buf: &[u8], tail: Option<&Tail>) {
        if let Some(t) = tail
            && let Some(line) = self.last_new(buf)
        {
            t.set(line);
        }
    }
}

/// What a finished command returned. A non-zero exit is not a transport error:
/// the caller decides what it means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// None when the command was killed by a signal.
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        Output {
            exit_status: Some(0),
            stdout: stdout.into(),
            ..Default::default()
        }
    }

    pub fn failed(status: u32, stderr: impl Into<Vec<u8>>) -> Self {
        Output {
            exit_status: Some(status),
            stderr: stderr.into(),
            ..Default::default()
        }
    }

    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// "exit status 3" or "killed by signal TERM", for messages.
    pub fn describe_exit(&self) -> String {
        match (&self.exit_status, &self.exit_signal) {
            (Some(s), _) => format!("exit status {s}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "no exit status".to_string(),
        }
    }
}

#[cfg(test)]
mod tail_tests {
    use super::*;

    /// Only complete lines count, blank ones are passed over, and each byte is scanned once.
    #[test]
    fn the_tail_is_the_last_complete_non_blank_line() {
        let tail = Tail::default();
        let mut lines = Lines::default();
        let mut buf = b"first li".to_vec();
        lines.feed(&buf, Some(&tail));
        assert_eq!(tail.last_line(), None, "no line is complete yet");
        buf.extend_from_slice(b"ne\nsecond\n\n  \nhalf-a-sec");
        lines.feed(&buf, Some(&tail));
        assert_eq!(tail.last_line().as_deref(), Some("second"));
        buf.extend_from_slice(b"ret");
        lines.feed(&buf, Some(&tail));
        assert_eq!(tail.last_line().as_deref(), Some("second"), "still partial");
        buf.extend_from_slice(b" done\r\n");
        lines.feed(&buf, Some(&tail));
        assert_eq!(tail.last_line().as_deref(), Some("half-a-secret done"));
        assert_eq!(format!("{tail:?}"), "Tail", "Debug never shows output");
        let mut fresh = Lines::default();
        assert_eq!(fresh.last_new(b"\n\n"), None);
        assert_eq!(fresh.last_new(b"\n\nx\n"), Some(&b"x"[..]));
    }
}

#[cfg(test)]
mod deadline_tests {
    use super::*;

    #[test]
    fn a_deadline_runs_the_script_under_timeout() {
        assert_eq!(sh_c("echo 'a'", None), "sh -c 'echo '\\''a'\\'''");
        assert_eq!(
            sh_c("sleep 9", Some(Duration::from_millis(2500))),
            "timeout -k 5 2.500 sh -c 'trap '\\''exit 143'\\'' TERM; sleep 9'"
        );
        assert_eq!(
            sh_c("true", Some(Duration::from_secs(300))),
            "timeout -k 5 300 sh -c 'trap '\\''exit 143'\\'' TERM; true'"
        );
    }

    /// In a real shell: stopped at the deadline with timeout's status, its EXIT trap run (a
    /// backup that stopped Docker starts it again), the rest of it never run.
    #[test]
    fn a_stopped_script_runs_its_exit_trap_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (trap, late) = (dir.path().join("trap"), dir.path().join("late"));
        let script = format!(
            "trap 'touch {}' EXIT; sleep 5; touch {}",
            trap.display(),
            late.display()
        );
        let started = std::time::Instant::now();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(sh_c(&script, Some(Duration::from_millis(500))))
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(out.status.code(), Some(124));
        assert!(stopped_by_deadline(
            Some(124),
            Duration::from_millis(500),
            elapsed
        ));
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
        assert!(trap.exists(), "the EXIT trap did not run");
        assert!(!late.exists());
        // Exiting 124 by itself, early, is not being stopped.
        assert!(!stopped_by_deadline(
            Some(124),
            Duration::from_secs(5),
            Duration::from_millis(10)
        ));
    }
}
