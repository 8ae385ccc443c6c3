//! Leak checks: finds a secret in text in any form output could carry it in (plain, base64 at
//! every byte offset in both alphabets, hex, percent-encoding). Written apart from the
//! redactor, so a test does not reuse the code it checks.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

/// Every form of `secret` found in `text`, described (empty: no leak).
///
/// Base64: for each offset 0-2 the secret can start at, the characters that encode only the
/// secret's bits (character i covers bits 6i..6i+6) must not appear as a run of 6 or more.
pub fn leaks(text: &str, secret: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut check = |form: &str, what: String| {
        if !form.is_empty() && text.contains(form) {
            found.push(format!("{what}: {form}"));
        }
    };
    check(secret, "plain".into());
    for offset in 0..3 {
        let mut data = vec![b'x'; offset];
        data.extend_from_slice(secret.as_bytes());
        for (name, engine) in [("base64", &STANDARD), ("base64url", &URL_SAFE)] {
            let encoded = engine.encode(&data);
            let own: String = encoded
                .char_indices()
                .filter(|(i, _)| 6 * i / 8 >= offset && (6 * i + 5) / 8 < offset + secret.len())
                .map(|(_, c)| c)
                .collect();
            for w in own.as_bytes().windows(6) {
                let w = std::str::from_utf8(w).unwrap();
                check(w, format!("{name} at offset {offset}"));
            }
        }
    }
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    check(&hex, "hex".into());
    check(&hex.to_uppercase(), "HEX".into());
    let url: String = secret
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    if url != secret {
        check(&url, "percent-encoded".into());
    }
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_form_and_nothing_in_clean_text() {
        let s = "tok-7f3a9c-very-secret";
        assert!(leaks("nothing here", s).is_empty());
        assert_eq!(leaks(&format!("a {s} b"), s), vec![format!("plain: {s}")]);
        for prefix in ["", "a", "ab", "abc"] {
            let b64 = STANDARD.encode(format!("{prefix}{s}\n"));
            assert!(
                leaks(&b64, s).iter().any(|l| l.starts_with("base64 at")),
                "{prefix:?}"
            );
        }
        let hex: String = s.bytes().map(|b| format!("{b:02X}")).collect();
        assert_eq!(leaks(&hex, s), vec![format!("HEX: {hex}")]);
        assert_eq!(
            leaks("p%40ss%2Fx", "p@ss/x"),
            vec!["percent-encoded: p%40ss%2Fx"]
        );
    }
}
