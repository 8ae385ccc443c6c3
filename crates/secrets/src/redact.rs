//! Redaction of known secret values from any text that leaves the process (logs, diffs, JSON
//! events, error messages).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// What a secret value is replaced with.
pub const REDACTED: &str = "***";

/// Values shorter than this (in characters) are not redacted. Replacing every `on`, `80` or `a`
/// would garble unrelated output, and the pattern of stars would itself reveal the value; a
/// secret that short cannot be protected by redaction anyway (it can be guessed).
pub const MIN_SECRET_CHARS: usize = 4;

/// Lines of a multi-line value (a PEM key, a JSON credential) are also redacted on their own,
/// because diffs and line-based logs show them one by one; short lines (`}`, `-----`) are not,
/// as they are structure rather than secret material.
pub const MIN_FRAGMENT_CHARS: usize = 8;

/// Replaces every occurrence of known secret values with [`REDACTED`].
///
/// Cheap to clone (shared), `Send + Sync`; the default (empty) redactor changes nothing.
/// Besides each value, it also matches the value's JSON-escaped and Rust-`Debug`-escaped forms
/// (how it appears inside JSON events and `{:?}` logs) and the lines of multi-line values.
/// Every byte covered by any match is hidden, so overlapping secrets leak no fragment.
/// The patterns are wiped from memory when the last clone is dropped.
#[derive(Clone, Default)]
pub struct Redactor {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// Longest first, deduplicated.
    needles: Vec<Zeroizing<Vec<u8>>>,
    /// For each first byte, the indices of the needles starting with it (longest first).
    by_first: Vec<Vec<usize>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.inner.as_ref().map_or(0, |i| i.needles.len());
        write!(f, "Redactor {{ patterns: {n} }}")
    }
}

impl Redactor {
    /// A redactor for these values (and their escaped forms and lines, see the type docs).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut add = |s: &str, min: usize| {
            if s.chars().count() >= min {
                needles.push(Zeroizing::new(s.as_bytes().to_vec()));
            }
        };
        for value in values {
            add(value, MIN_SECRET_CHARS);
            if value.contains('\n') {
                for line in value.lines() {
                    add(line.trim(), MIN_FRAGMENT_CHARS);
                }
            }
            if let Ok(json) = serde_json::to_string(value).map(Zeroizing::new) {
                add(&json[1..json.len() - 1], MIN_SECRET_CHARS);
            }
            let debug = Zeroizing::new(format!("{value:?}"));
            add(&debug[1..debug.len() - 1], MIN_SECRET_CHARS);
        }
        Self::from_needles(needles)
    }

    fn from_needles(mut needles: Vec<Zeroizing<Vec<u8>>>) -> Self {
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        if needles.is_empty() {
            return Redactor::default();
        }
        let mut by_first = vec![Vec::new(); 256];
        for (i, n) in needles.iter().enumerate() {
            by_first[usize::from(n[0])].push(i);
        }
        Redactor {
            inner: Some(Arc::new(Inner { needles, by_first })),
        }
    }

    /// A redactor with no values: changes nothing.
    pub fn empty() -> Self {
        Redactor::default()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// A redactor for the values of both (e.g. a secrets file and a become password).
    pub fn merged(&self, other: &Redactor) -> Redactor {
        let needles = [self, other]
            .iter()
            .filter_map(|r| r.inner.as_ref())
            .flat_map(|i| i.needles.iter().cloned())
            .collect();
        Self::from_needles(needles)
    }

    /// The covered byte ranges, merged, in order.
    fn matches(&self, hay: &[u8]) -> Vec<(usize, usize)> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for i in 0..hay.len() {
            // Longest first: the first needle that matches here covers the most.
            let hit = inner.by_first[usize::from(hay[i])]
                .iter()
                .map(|&n| &inner.needles[n])
                .find(|n| hay[i..].starts_with(n));
            if let Some(n) = hit {
                let end = i + n.len();
                match ranges.last_mut() {
                    Some(last) if i <= last.1 => last.1 = last.1.max(end),
                    _ => ranges.push((i, end)),
                }
            }
        }
        ranges
    }

    fn apply(hay: &[u8], ranges: &[(usize, usize)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(hay.len());
        let mut last = 0;
        for &(start, end) in ranges {
            out.extend_from_slice(&hay[last..start]);
            out.extend_from_slice(REDACTED.as_bytes());
            last = end;
        }
        out.extend_from_slice(&hay[last..]);
        out
    }

    /// `text` with every known secret replaced by `***`; borrowed when nothing matched.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let ranges = self.matches(text.as_bytes());
        if ranges.is_empty() {
            return Cow::Borrowed(text);
        }
        // Needles are whole UTF-8 strings, so every range starts and ends on a char boundary
        // and the result is UTF-8; the lossy path is only a guard.
        match String::from_utf8(Self::apply(text.as_bytes(), &ranges)) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    /// Same for bytes (command output that may not be UTF-8).
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let ranges = self.matches(bytes);
        if ranges.is_empty() {
            Cow::Borrowed(bytes)
        } else {
            Cow::Owned(Self::apply(bytes, &ranges))
        }
    }

    /// Whether `bytes` holds any known secret (for checks and tests).
    pub fn contains_secret(&self, bytes: &[u8]) -> bool {
        !self.matches(bytes).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_a_no_op_and_borrows() {
        let r = Redactor::empty();
        assert!(r.is_empty());
        assert!(matches!(r.redact("hello"), Cow::Borrowed("hello")));
        let r = Redactor::new(["", "ab", "on"]);
        assert!(r.is_empty(), "too-short values are ignored");
        assert_eq!(r.redact("on and on"), "on and on");
    }

    #[test]
    fn replaces_every_occurrence() {
        let r = Redactor::new(["s3cret-pw", "tok-1234"]);
        assert_eq!(
            r.redact("a=s3cret-pw b=tok-1234 c=s3cret-pw."),
            "a=*** b=*** c=***."
        );
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn overlapping_secrets_leak_no_fragment() {
        let r = Redactor::new(["abcd", "bcdefgh"]);
        assert_eq!(r.redact("xabcdefghy"), "x***y");
        let r = Redactor::new(["password", "pass"]);
        assert_eq!(r.redact("password pass"), "*** ***");
    }

    #[test]
    fn escaped_forms_and_lines_of_multiline_values() {
        let pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\nAASCBKcwggSjAgEAAoIBAQC7\n-----END KEY-----";
        let r = Redactor::new([pem, "quote\"d-value"]);
        // As JSON (event streams) and Debug (logs).
        let json = serde_json::to_string(&serde_json::json!({ "v": pem })).unwrap();
        assert!(!r.redact(&json).contains("MIIEvQ"), "{}", r.redact(&json));
        assert_eq!(r.redact(&format!("{:?}", "quote\"d-value")), "\"***\"");
        // A diff shows the lines one by one.
        let diff = "+MIIEvQIBADANBgkqhkiG9w0BAQEF\n+AASCBKcwggSjAgEAAoIBAQC7\n";
        assert_eq!(r.redact(diff), "+***\n+***\n");
    }

    #[test]
    fn numbers_utf8_and_bytes() {
        let r = Redactor::new(["12345", "pässwörd"]);
        assert_eq!(r.redact("port 12345, pw pässwörd!"), "port ***, pw ***!");
        let bytes = b"\xff\xfe12345\xff";
        assert_eq!(r.redact_bytes(bytes).as_ref(), b"\xff\xfe***\xff");
        assert!(r.contains_secret(b"x12345"));
        assert!(!r.contains_secret(b"1234"));
    }

    #[test]
    fn merged_and_send_sync_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Redactor>();
        let a = Redactor::new(["alpha-secret"]);
        let b = Redactor::new(["beta-secret"]);
        let m = a.merged(&b);
        assert_eq!(m.redact("alpha-secret beta-secret"), "*** ***");
        assert!(a.merged(&Redactor::empty()).redact("beta-secret") == "beta-secret");
        let c = m.clone();
        drop(m);
        assert_eq!(c.redact("alpha-secret"), "***");
    }
}
