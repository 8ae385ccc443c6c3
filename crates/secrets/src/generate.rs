//! Random secret values from the operating system's random source, in a chosen alphabet.

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::SecretsError;

/// The characters a generated secret is made of. Every alphabet is safe unquoted in `.env`
/// files, URLs and shell words, so a generated value can go anywhere a template puts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// `0-9a-f`: 4 bits per character (keys that programs read as hex).
    Hex,
    /// `A-Za-z0-9`: about 5.95 bits per character (passwords).
    Alnum,
    /// `A-Za-z0-9-_`: 6 bits per character.
    Base64Url,
}

impl Alphabet {
    /// The names playbooks use, in the order help texts list them.
    pub const NAMES: &[&str] = &["alnum", "hex", "base64url"];

    pub fn parse(name: &str) -> Option<Alphabet> {
        match name {
            "hex" => Some(Alphabet::Hex),
            "alnum" => Some(Alphabet::Alnum),
            "base64url" => Some(Alphabet::Base64Url),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Alphabet::Hex => "hex",
            Alphabet::Alnum => "alnum",
            Alphabet::Base64Url => "base64url",
        }
    }

    fn chars(self) -> &'static [u8] {
        match self {
            Alphabet::Hex => b"0123456789abcdef",
            Alphabet::Alnum => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            Alphabet::Base64Url => {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            }
        }
    }
}

/// A new random value of `length` characters of `alphabet`. Each character is drawn uniformly
/// (bytes at or above the largest multiple of the alphabet's size are drawn again, so no
/// character is more likely than another).
pub fn generate(length: usize, alphabet: Alphabet) -> Result<SecretString, SecretsError> {
    let chars = alphabet.chars();
    let n = chars.len();
    let limit = 256 - 256 % n;
    let mut out = Zeroizing::new(String::with_capacity(length));
    let mut raw = Zeroizing::new(vec![0u8; length.max(16)]);
    while out.len() < length {
        getrandom::fill(&mut raw).map_err(|e| SecretsError::Random(e.to_string()))?;
        for &b in raw.iter() {
            if out.len() == length {
                break;
            }
            if usize::from(b) < limit {
                out.push(char::from(chars[usize::from(b) % n]));
            }
        }
    }
    Ok(SecretString::from(out.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn values_have_the_length_and_only_the_characters_asked_for() {
        for alphabet in Alphabet::NAMES.iter().map(|n| Alphabet::parse(n).unwrap()) {
            for length in [1, 16, 64, 300] {
                let v = generate(length, alphabet).unwrap();
                let v = v.expose_secret();
                assert_eq!(v.len(), length, "{alphabet:?}");
                assert!(
                    v.bytes().all(|c| alphabet.chars().contains(&c)),
                    "{alphabet:?}: {v}"
                );
            }
            assert_eq!(Alphabet::parse(alphabet.name()), Some(alphabet));
        }
        assert_eq!(Alphabet::parse("base64"), None);
    }

    /// Two values are never the same, and over many characters every one of the alphabet
    /// turns up (a generator stuck on a subset would fail this).
    #[test]
    fn values_differ_and_use_the_whole_alphabet() {
        let a = generate(64, Alphabet::Alnum).unwrap();
        let b = generate(64, Alphabet::Alnum).unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        let many = generate(20_000, Alphabet::Base64Url).unwrap();
        for c in Alphabet::Base64Url.chars() {
            assert!(
                many.expose_secret().as_bytes().contains(c),
                "{}",
                *c as char
            );
        }
    }
}
