//! POSIX shell quoting: the one way every command string in provision is assembled.

use std::borrow::Cow;

/// Quotes `s` for a POSIX shell so that it is passed as exactly one word.
///
/// Strings made only of characters that no shell treats specially are left as
/// they are (readable logs); everything else is wrapped in single quotes, with
/// embedded single quotes written as `'\''`.
pub fn quote(s: &str) -> Cow<'_, str> {
    let safe = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b'/' | b':' | b'=' | b'+' | b'@' | b',' | b'%')
        })
        // A leading '=' or '~' could be expanded by some shells (zsh, tilde).
        && !s.starts_with('=');
    if safe {
        Cow::Borrowed(s)
    } else {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('\'');
        for c in s.chars() {
            if c == '\'' {
                out.push_str("'\\''");
            } else {
                out.push(c);
            }
        }
        out.push('\'');
        Cow::Owned(out)
    }
}

/// Joins words into one command line, quoting each.
pub fn join<I, S>(words: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for (i, w) in words.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&quote(w.as_ref()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_readable() {
        assert_eq!(quote("/var/lib/docker"), "/var/lib/docker");
        assert_eq!(quote("node.labels.zone=a"), "node.labels.zone=a");
    }

    #[test]
    fn special_characters_are_single_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("~root"), "'~root'");
        assert_eq!(quote("=cmd"), "'=cmd'");
        assert_eq!(quote("a\nb"), "'a\nb'");
    }

    #[test]
    fn join_quotes_each_word() {
        assert_eq!(
            join(["docker", "node", "update", "--label-add", "a b=c"]),
            "docker node update --label-add 'a b=c'"
        );
    }

    #[test]
    fn quoted_strings_survive_a_real_shell() {
        for s in [
            "it's", "a\"b", "$HOME", "`id`", "a\\b", "\n", "*", "x;y", "ünï", "-n",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s, "for {s:?}");
        }
    }
}
