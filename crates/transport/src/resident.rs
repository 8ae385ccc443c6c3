//! A resident remote `sh` on its own channel: commands without stdin are written
//! to it, so a command costs one fork on the host instead of a new channel and a
//! new login shell (which reads ~/.bashrc every time).

use crate::command::sh_c;
use crate::command::{Lines, Output, Tail};
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use std::time::Duration;

/// Why a resident shell could not answer; it is discarded after any of these.
#[derive(Debug)]
pub(crate) enum ResidentError {
    /// The channel closed (or the connection died) before the command finished.
    Closed,
    Send(String),
}

pub(crate) struct Resident {
    tx: ChannelWriteHalf<Msg>,
    rx: ChannelReadHalf,
    nonce: String,
}

/// The text written to the resident shell for one command. The script runs in
/// its own `sh -c` (quoted, so nothing in it can confuse the resident shell),
/// with stdin from /dev/null (under `timeout` when it has a deadline: [`sh_c`]); then both
/// streams get an end marker.
pub(crate) fn framed(nonce: &str, script: &str, deadline: Option<Duration>) -> String {
    format!(
        "{} </dev/null; printf '\\n<<pv-{nonce}-rc %s>>\\n' \"$?\"; printf '\\n<<pv-{nonce}-err>>\\n' >&2\n",
        sh_c(script, deadline)
    )
}

/// If `buf` ends with the stdout marker, the exit status and the output before it.
pub(crate) fn split_stdout<'a>(nonce: &str, buf: &'a [u8]) -> Option<(u32, &'a [u8])> {
    let text = buf.strip_suffix(b">>\n")?;
    let marker = format!("\n<<pv-{nonce}-rc ");
    let pos = find_last(text, marker.as_bytes())?;
    let code = std::str::from_utf8(&text[pos + marker.len()..])
        .ok()?
        .parse()
        .ok()?;
    Some((code, &buf[..pos]))
}

/// If `buf` ends with the stderr marker, the output before it.
pub(crate) fn split_stderr<'a>(nonce: &str, buf: &'a [u8]) -> Option<&'a [u8]> {
    buf.strip_suffix(format!("\n<<pv-{nonce}-err>>\n").as_bytes())
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

impl Resident {
    pub(crate) fn new(tx: ChannelWriteHalf<Msg>, rx: ChannelReadHalf, nonce: String) -> Self {
        Resident { tx, rx, nonce }
    }

    /// Runs one command. On error the caller must drop this resident.
    pub(crate) async fn run(
        &mut self,
        script: &str,
        deadline: Option<Duration>,
        tail: Option<&Tail>,
    ) -> Result<Output, ResidentError> {
        let line = framed(&self.nonce, script, deadline);
        self.tx
            .data_bytes(line.into_bytes())
            .await
            .map_err(|e| ResidentError::Send(e.to_string()))?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (mut code, mut err_done) = (None, false);
        // The tail sees output only until its end marker is complete: a marker still arriving
        // is an incomplete line, so it never shows.
        let (mut out_lines, mut err_lines) = (Lines::default(), Lines::default());
        while code.is_none() || !err_done {
            match self.rx.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    out.extend_from_slice(&data);
                    if let Some((c, body)) = split_stdout(&self.nonce, &out) {
                        let n = body.len();
                        out.truncate(n);
                        code = Some(c);
                    } else if code.is_none() {
                        out_lines.feed(&out, tail);
                    }
                }
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    err.extend_from_slice(&data);
                    if let Some(body) = split_stderr(&self.nonce, &err) {
                        let n = body.len();
                        err.truncate(n);
                        err_done = true;
                    } else if !err_done {
                        err_lines.feed(&err, tail);
                    }
                }
                Some(
                    ChannelMsg::ExitStatus { .. }
                    | ChannelMsg::ExitSignal { .. }
                    | ChannelMsg::Eof
                    | ChannelMsg::Close,
                )
                | None => {
                    return Err(ResidentError::Closed);
                }
                Some(_) => {}
            }
        }
        Ok(Output {
            exit_status: code,
            exit_signal: None,
            stdout: out,
            stderr: err,
        })
    }

    pub(crate) async fn close(self) {
        let _ = self.tx.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_is_exact() {
        assert_eq!(
            framed("n", "echo 'a'", None),
            "sh -c 'echo '\\''a'\\''' </dev/null; printf '\\n<<pv-n-rc %s>>\\n' \"$?\"; printf '\\n<<pv-n-err>>\\n' >&2\n"
        );
    }

    #[test]
    fn markers_split_output() {
        assert_eq!(
            split_stdout("n", b"hi\n\n<<pv-n-rc 3>>\n"),
            Some((3, &b"hi\n"[..]))
        );
        assert_eq!(
            split_stdout("n", b"no newline\n<<pv-n-rc 0>>\n"),
            Some((0, &b"no newline"[..]))
        );
        assert_eq!(split_stdout("n", b"partial\n<<pv-n-rc 0>"), None);
        assert_eq!(split_stdout("n", b"\n<<pv-other-rc 0>>\n"), None);
        assert_eq!(
            split_stderr("n", b"warn\n\n<<pv-n-err>>\n"),
            Some(&b"warn\n"[..])
        );
        assert_eq!(split_stderr("n", b"warn"), None);
    }

    #[test]
    fn a_resident_sh_answers_framed_commands() {
        use std::io::{BufRead, Read, Write};
        use std::process::{Command, Stdio};
        // The same protocol against a local sh: exit codes, streams, quoting, isolation.
        let mut sh = Command::new("sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = sh.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(sh.stdout.take().unwrap());
        for (script, expect_out, expect_code) in [
            ("echo one; exit 4", "one\n", 4),
            ("cd /tmp; X=1; printf \"it's $X\"", "it's 1", 0),
            ("pwd | grep -c '^/tmp$'; echo $X", "0\n\n", 0),
            ("exit", "", 0),
        ] {
            stdin
                .write_all(framed("t", script, None).as_bytes())
                .unwrap();
            let mut buf = Vec::new();
            loop {
                let mut line = Vec::new();
                stdout.read_until(b'\n', &mut line).unwrap();
                buf.extend_from_slice(&line);
                if let Some((code, body)) = split_stdout("t", &buf) {
                    assert_eq!(String::from_utf8_lossy(body), expect_out, "{script}");
                    assert_eq!(code, expect_code, "{script}");
                    break;
                }
            }
        }
        drop(stdin);
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        assert!(sh.wait().unwrap().success());
    }
}
