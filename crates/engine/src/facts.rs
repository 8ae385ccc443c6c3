//! Batched fact gathering: the fact commands of several steps for one host run
//! in one round trip, each in its own subshell, separated by unique markers.

use crate::step::Facts;

/// Builds one script running each `(key, command)` in a subshell, printing a
/// start marker, its stdout, and an end marker with its exit status.
/// `nonce` makes the markers impossible to forge from command output.
pub fn batch_script(nonce: &str, commands: &[(usize, String)]) -> String {
    let mut s = String::new();
    for (key, cmd) in commands {
        s.push_str(&format!("echo '<<pv-{nonce} {key}>>'; ( {cmd}\n) </dev/null; printf '\\n<<pv-{nonce}-end {key} %s>>\\n' \"$?\"\n"));
    }
    s
}

/// Splits the batch output back into per-key facts. Keys whose section is
/// missing (the batch died half-way) are absent from the result.
pub fn parse_batch(nonce: &str, stdout: &str) -> Vec<(usize, Facts)> {
    let start = format!("<<pv-{nonce} ");
    let end = format!("\n<<pv-{nonce}-end ");
    let mut out = Vec::new();
    let mut rest = stdout;
    while let Some(i) = rest.find(&start) {
        let after = &rest[i + start.len()..];
        let Some(close) = after.find(">>\n") else {
            break;
        };
        let Ok(key) = after[..close].parse::<usize>() else {
            break;
        };
        let body_start = &after[close + 3..];
        let Some(j) = body_start.find(&end) else {
            break;
        };
        let body = &body_start[..j];
        let tail = &body_start[j + end.len()..];
        let Some(close2) = tail.find(">>") else { break };
        let mut parts = tail[..close2].split_whitespace();
        let (Some(k2), Some(code)) = (parts.next(), parts.next()) else {
            break;
        };
        if k2.parse::<usize>().ok() != Some(key) {
            break;
        }
        out.push((
            key,
            Facts {
                stdout: body.to_string(),
                exit_status: code.parse().ok(),
                ..Default::default()
            },
        ));
        rest = &tail[close2..];
    }
    out
}

/// The inverse of [`batch_script`], for fakes: the nonce and each `(key, command)`.
pub fn split_batch_script(script: &str) -> Option<(String, Vec<(usize, String)>)> {
    let mut nonce = None;
    let mut cmds = Vec::new();
    for part in script.split("echo '<<pv-").skip(1) {
        let (head, rest) = part.split_once(">>'; ( ")?;
        let (n, key) = head.split_once(' ')?;
        nonce.get_or_insert_with(|| n.to_string());
        let cmd = rest.split_once("\n) </dev/null;")?.0;
        cmds.push((key.parse().ok()?, cmd.to_string()));
    }
    Some((nonce?, cmds))
}

/// Answers a batched fact script as a host would, with `answer(command)` giving
/// each section's stdout and exit status (for fakes in unit tests).
pub fn answer_batch(script: &str, answer: impl Fn(&str) -> (String, u32)) -> String {
    let Some((nonce, cmds)) = split_batch_script(script) else {
        return String::new();
    };
    let mut out = String::new();
    for (key, cmd) in cmds {
        let (stdout, code) = answer(&cmd);
        out.push_str(&format!(
            "<<pv-{nonce} {key}>>\n{stdout}\n<<pv-{nonce}-end {key} {code}>>\n"
        ));
    }
    out
}

/// A random-enough nonce for one run (not a secret; only needs to be unpredictable
/// to command output).
pub fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_exact() {
        assert_eq!(
            batch_script(
                "n1",
                &[(0, "cat /etc/hostname".into()), (3, "exit 2".into())]
            ),
            "echo '<<pv-n1 0>>'; ( cat /etc/hostname\n) </dev/null; printf '\\n<<pv-n1-end 0 %s>>\\n' \"$?\"\n\
             echo '<<pv-n1 3>>'; ( exit 2\n) </dev/null; printf '\\n<<pv-n1-end 3 %s>>\\n' \"$?\"\n"
        );
    }

    #[test]
    fn parses_sections_with_and_without_trailing_newline() {
        let out =
            "<<pv-n1 0>>\nweb-1\n\n<<pv-n1-end 0 0>>\n<<pv-n1 3>>\nno newline\n<<pv-n1-end 3 2>>\n";
        assert_eq!(
            parse_batch("n1", out),
            vec![
                (
                    0,
                    Facts {
                        stdout: "web-1\n".into(),
                        exit_status: Some(0),
                        ..Default::default()
                    }
                ),
                (
                    3,
                    Facts {
                        stdout: "no newline".into(),
                        exit_status: Some(2),
                        ..Default::default()
                    }
                )
            ]
        );
    }

    #[test]
    fn truncated_output_keeps_complete_sections_only() {
        let out = "<<pv-n 0>>\na\n\n<<pv-n-end 0 0>>\n<<pv-n 1>>\npartial";
        assert_eq!(
            parse_batch("n", out),
            vec![(
                0,
                Facts {
                    stdout: "a\n".into(),
                    exit_status: Some(0),
                    ..Default::default()
                }
            )]
        );
    }

    #[test]
    fn answer_batch_round_trips() {
        let script = batch_script("q", &[(0, "cat /a".into()), (2, "echo 'x'".into())]);
        let (nonce, cmds) = split_batch_script(&script).unwrap();
        assert_eq!(nonce, "q");
        assert_eq!(
            cmds,
            vec![(0, "cat /a".to_string()), (2, "echo 'x'".to_string())]
        );
        let out = answer_batch(&script, |c| (format!("{c}\n"), 0));
        assert_eq!(
            parse_batch("q", &out),
            vec![(0, Facts::new("cat /a\n")), (2, Facts::new("echo 'x'\n"))]
        );
    }

    #[test]
    fn batch_runs_in_a_real_shell() {
        let script = batch_script(
            "zz",
            &[
                (1, "echo one; echo two".into()),
                (2, "exit 7".into()),
                (5, "printf x".into()),
            ],
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let parsed = parse_batch("zz", &String::from_utf8(out.stdout).unwrap());
        assert_eq!(
            parsed,
            vec![
                (
                    1,
                    Facts {
                        stdout: "one\ntwo\n".into(),
                        exit_status: Some(0),
                        ..Default::default()
                    }
                ),
                (
                    2,
                    Facts {
                        stdout: "".into(),
                        exit_status: Some(7),
                        ..Default::default()
                    }
                ),
                (
                    5,
                    Facts {
                        stdout: "x".into(),
                        exit_status: Some(0),
                        ..Default::default()
                    }
                ),
            ]
        );
    }
}
