//! Redaction of known secret values from any text that leaves the process (logs, diffs, JSON
//! events, error messages), in every encoding they travel in, and [`Redacted`]: the type
//! output is built from, so text that skipped redaction does not type-check.

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

/// Encoded forms shorter than this are not matched: a 5-character run of base64 or hex
/// occurs by chance in ordinary output (hashes, ids) and would garble it.
pub const MIN_ENCODED_CHARS: usize = 6;

/// Replaces every occurrence of known secret values with [`REDACTED`].
///
/// Cheap to clone (shared), `Send + Sync`; the default (empty) redactor changes nothing.
/// Besides each value, it also matches the value's JSON-escaped and Rust-`Debug`-escaped forms
/// (how it appears inside JSON events and `{:?}` logs), the lines of multi-line values, and the
/// value as it appears inside base64 (standard and URL-safe alphabets, at each of the three
/// byte offsets a value can start at within encoded data), hex (either case) and
/// percent-encoding (URLs, form bodies).
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
            if value.chars().count() >= MIN_SECRET_CHARS {
                for encoded in encoded_forms(value.as_bytes()) {
                    add(&encoded, MIN_ENCODED_CHARS);
                }
            }
        }
        Self::from_needles(needles)
    }

    /// This redactor plus more values (secrets learnt during a run, such as join tokens).
    pub fn with_values<'a>(&self, values: impl IntoIterator<Item = &'a str>) -> Redactor {
        self.merged(&Redactor::new(values))
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
        let shaped = shaped(hay);
        let Some(inner) = &self.inner else {
            return shaped;
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
        if shaped.is_empty() {
            return ranges;
        }
        ranges.extend(shaped);
        ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
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

    /// `text` redacted, as the type every output is built from.
    pub fn clean(&self, text: &str) -> Redacted {
        Redacted(self.redact(text).into_owned())
    }
}

/// Secrets known by their shape rather than their value, because the process sees them before
/// anything could declare them: Docker prints a new swarm's worker join token in the output of
/// `docker swarm init`, and an unlock key in that of `swarm init --autolock` or `swarm
/// unlock-key`. The prefix stays readable; the rest is hidden.
pub const SHAPED_PREFIXES: &[&str] = &["SWMTKN-1-", "SWMKEY-1-"];

/// The ranges of shaped secrets in `hay`: after each prefix, the run of token characters.
fn shaped(hay: &[u8]) -> Vec<(usize, usize)> {
    let token = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'/' | b'=');
    let mut out = Vec::new();
    for prefix in SHAPED_PREFIXES {
        let p = prefix.as_bytes();
        let mut from = 0;
        while let Some(at) = hay[from..].windows(p.len()).position(|w| w == p) {
            let start = from + at + p.len();
            let len = hay[start..].iter().take_while(|&&b| token(b)).count();
            if len >= MIN_ENCODED_CHARS {
                out.push((start, start + len));
            }
            from = start + len;
        }
    }
    out.sort_unstable();
    out
}

/// How `value` looks inside encoded data, as the runs of encoded characters that depend on
/// the value's bytes alone (wiped on drop).
///
/// In base64 a value starting at byte offset 1 or 2 of a 3-byte group shares its first
/// character(s) with the bytes before it, and its last with the bytes after it; those mixed
/// characters are left out, the rest is matched for each of the three offsets.
fn encoded_forms(value: &[u8]) -> Vec<Zeroizing<String>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut data = Zeroizing::new(vec![0u8; offset]);
        data.extend_from_slice(value);
        // Characters of 6 bits: the first that starts at or after the value's first bit, up to
        // the last that ends at or before its last bit.
        let start = (offset * 8).div_ceil(6);
        let end = (data.len() * 8) / 6;
        if end <= start {
            continue;
        }
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = Zeroizing::new(engine.encode(&*data));
            out.push(Zeroizing::new(encoded[start..end].to_string()));
        }
    }
    let hex = Zeroizing::new(hex::encode(value));
    out.push(Zeroizing::new(hex.to_ascii_uppercase()));
    out.push(hex);
    // RFC 3986: everything but unreserved characters is escaped, in either hex case; forms
    // write a space as `+`.
    const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let url = Zeroizing::new(percent_encoding::percent_encode(value, ESCAPED).to_string());
    if url.as_bytes() != value {
        out.push(Zeroizing::new(lower_escapes(&url)));
        out.push(Zeroizing::new(url.replace("%20", "+")));
        out.push(url);
    }
    out
}

/// `%2F` as `%2f`: both are valid and both are seen.
fn lower_escapes(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3).unwrap_or(&rest[i..]);
        out.push_str(&esc.to_ascii_lowercase());
        rest = &rest[i + esc.len()..];
    }
    out.push_str(rest);
    out
}

/// Text that has been through a [`Redactor`]: events, logs, diffs, recaps and error messages
/// are built from it, so a path that forgot redaction does not compile.
///
/// Made only by [`Redactor::clean`], or by [`Redacted::literal`] for text written in the code.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Redacted(String);

impl Redacted {
    /// Text written in the program itself (a fixed message), which holds no secret.
    pub fn literal(text: &'static str) -> Redacted {
        Redacted(text.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every line longer than `max` characters cut to `max` and `...`. Only redacted text can be
    /// shortened: cutting first could split a secret so that no part of it matches any more.
    pub fn shortened(&self, max: usize) -> Redacted {
        let lines: Vec<String> = self
            .0
            .split('\n')
            .map(|l| match l.char_indices().nth(max) {
                Some((at, _)) => format!("{}...", &l[..at]),
                None => l.to_string(),
            })
            .collect();
        Redacted(lines.join("\n"))
    }

    /// Pieces of redacted text joined: still redacted (the separator is the program's).
    pub fn join(parts: &[Redacted], sep: &'static str) -> Redacted {
        Redacted(
            parts
                .iter()
                .map(|p| p.0.as_str())
                .collect::<Vec<_>>()
                .join(sep),
        )
    }
}

impl std::ops::Deref for Redacted {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`: widths and alignment (`{:<20}`) apply as to a str.
        f.pad(&self.0)
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl PartialEq<str> for Redacted {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Redacted {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret across the cut: redacting the whole line first hides all of it; cutting first
    /// would have left a prefix that no longer matches the secret.
    #[test]
    fn text_is_redacted_whole_then_shortened() {
        let secret = "tok-0123456789abcdefghij";
        let r = Redactor::new([secret]);
        let line = format!("{}{secret} and more text after it", "x".repeat(190));
        let out = r.clean(&line).shortened(200);
        assert_eq!(out.as_str(), format!("{}*** and mo...", "x".repeat(190)));
        let cut_first: String = line.chars().take(200).collect();
        assert!(r.clean(&cut_first).contains("tok-01234"));
        assert_eq!(r.clean("a\nb").shortened(1).as_str(), "a\nb");
        assert_eq!(r.clean("abc\nd").shortened(2).as_str(), "ab...\nd");
    }

    #[test]
    fn empty_is_a_no_op_and_borrows() {
        let r = Redactor::empty();
        assert!(r.is_empty());
        assert!(matches!(r.redact("hello"), Cow::Borrowed("hello")));
        let r = Redactor::new(["", "ab", "on"]);
        assert!(r.is_empty(), "too-short values are ignored");
        assert_eq!(r.redact("on and on"), "on and on");
    }

    /// As `docker swarm init` printed it on the lab (token from a swarm that no longer exists):
    /// the run log held it before the steps could learn it from the facts.
    #[test]
    fn docker_join_tokens_and_unlock_keys_are_hidden_by_their_shape() {
        let init = "To add a worker to this swarm, run the following command:\n\n    docker swarm join --token SWMTKN-1-27m31gnzbehlcwkp792dglj2ydat4yf6u1o3xm21b356cpj5c4-04wy8421thepp5dk7m3as7le2 [fd00:10::11]:2377\n";
        for r in [Redactor::empty(), Redactor::new(["s3cret-pw"])] {
            assert_eq!(
                r.redact(init),
                "To add a worker to this swarm, run the following command:\n\n    docker swarm join --token SWMTKN-1-*** [fd00:10::11]:2377\n"
            );
            assert_eq!(
                r.redact("key SWMKEY-1-7c3B9vYQnKq0q2vJ8x4mN6zF1aPp+R/wE5tLd3hUo9s= s3cret-pw"),
                if r.is_empty() {
                    "key SWMKEY-1-*** s3cret-pw"
                } else {
                    "key SWMKEY-1-*** ***"
                }
            );
            assert!(r.contains_secret(init.as_bytes()));
        }
        // The bare prefix (documentation, a grep) is not a secret.
        assert_eq!(Redactor::empty().redact("SWMTKN-1-"), "SWMTKN-1-");
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

    /// The encoded characters that depend on the secret's bytes alone, found independently of
    /// the code under test: character i of base64 covers bits 6i..6i+6.
    fn pure_runs(encoded: &str, start_byte: usize, len: usize) -> String {
        encoded
            .char_indices()
            .filter(|(i, _)| 6 * i / 8 >= start_byte && (6 * i + 5) / 8 < start_byte + len)
            .map(|(_, c)| c)
            .collect()
    }

    #[test]
    fn base64_at_every_offset_in_both_alphabets() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        // ~ and ? put '+' '/' (standard) or '-' '_' (URL-safe) into the encoding.
        let secret = "db-pass~?>word-42";
        let r = Redactor::new([secret]);
        for prefix_len in 0..7 {
            let prefix = "p".repeat(prefix_len);
            let text = format!("{prefix}{secret}\ntrailing text");
            for engine in [&STANDARD, &URL_SAFE] {
                let encoded = engine.encode(&text);
                let pure = pure_runs(&encoded, prefix_len, secret.len());
                assert!(pure.len() >= 20, "{pure}");
                let out = r.redact(&encoded);
                assert!(out.contains(REDACTED), "offset {prefix_len}: {out}");
                // No window of 6 characters that only the secret determines is left.
                for w in pure.as_bytes().windows(MIN_ENCODED_CHARS) {
                    let w = std::str::from_utf8(w).unwrap();
                    assert!(!out.contains(w), "offset {prefix_len}: {w} in {out}");
                }
            }
        }
    }

    #[test]
    fn hex_and_url_encodings() {
        let secret = "p@ss w/rd:42";
        let r = Redactor::new([secret]);
        let hex_lower: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        let hex_upper = hex_lower.to_uppercase();
        for text in [
            format!("sha={hex_lower}!"),
            format!("dump {hex_upper}"),
            "https://u:p%40ss%20w%2Frd%3A42@proxy:3142/".to_string(),
            "https://u:p%40ss%20w%2frd%3a42@proxy:3142/".to_string(),
            "password=p%40ss+w%2Frd%3A42&x=1".to_string(),
        ] {
            let out = r.redact(&text);
            assert!(out.contains(REDACTED), "{text} -> {out}");
            for piece in ["40ss", "2F", "2f", "3A", "3a", "7373"] {
                assert!(!out.contains(piece), "{text} -> {out}");
            }
        }
        // Ordinary hex and base64 that merely share a few characters are left alone.
        let r = Redactor::new(["hunter22-secret"]);
        let hash = "0d7b4e9d2b0c4d0e1c0b6a3f1d0f5c7e";
        assert_eq!(r.redact(hash), hash);
    }

    #[test]
    fn clean_makes_redacted_text() {
        let r = Redactor::new(["s3cret-pw"]);
        let c = r.clean("pw=s3cret-pw");
        assert_eq!(c, "pw=***");
        assert_eq!(c.to_string(), "pw=***");
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"pw=***\"");
        let joined = Redacted::join(&[c, Redacted::literal("ok")], "; ");
        assert_eq!(joined.as_str(), "pw=***; ok");
        let more = r.with_values(["join-token-xyz"]);
        assert_eq!(more.redact("s3cret-pw join-token-xyz"), "*** ***");
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
