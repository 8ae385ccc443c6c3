//! Helpers shared by the built-in steps: parameter types and validation (file
//! modes, paths, user names), sha256, base64 decoding of gathered content, and
//! parsing of `stat` lines.

use crate::ctx::{self, ParamError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
// The engine's fact helpers, under the names the steps have always used.
pub use provision_engine::fact::{Sections, sections, unexpected as bad_facts};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

/// Deserializes a step's `with` table like [`registry::params`], naming the key
/// in serde's type, value and variant errors, which only name the value
/// ("invalid type: integer `3`, expected a boolean", "unknown variant `presnt`").
pub fn params<T: serde::de::DeserializeOwned>(
    with: &toml::Table,
    known: &[&str],
) -> Result<T, ParamError> {
    ctx::params::<T>(with, known).map_err(|mut e| {
        if e.key.is_none() {
            let culprit = |v: &toml::Value| match v {
                toml::Value::String(s)
                    if e.message.starts_with(&format!("unknown variant `{s}`")) =>
                {
                    true
                }
                _ => ["invalid type", "invalid value"]
                    .iter()
                    .any(|what| e.message.starts_with(&format!("{what}: {}", describe(v)))),
            };
            // Named only when exactly one value fits the message.
            let mut culprits = with.iter().filter(|(_, v)| culprit(v));
            if let (Some((k, _)), None) = (culprits.next(), culprits.next()) {
                e.message = format!("`{k}`: {}", e.message);
                e.key = Some(k.clone());
            }
        }
        e
    })
}

/// A TOML value as serde names it in "invalid type" messages.
fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("string {s:?}"),
        toml::Value::Integer(i) => format!("integer `{i}`"),
        toml::Value::Float(f) => format!("floating point `{f}`"),
        toml::Value::Boolean(b) => format!("boolean `{b}`"),
        toml::Value::Array(_) => "sequence".to_string(),
        toml::Value::Table(_) => "map".to_string(),
        toml::Value::Datetime(_) => "datetime".to_string(),
    }
}

/// A file mode parameter, written as an octal string ("0644").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Mode {
    /// No permission for group or others: what files holding secrets need.
    pub fn is_private(self) -> bool {
        self.0 & 0o077 == 0
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// Parses "0644", "644", "2775" or "0o644" as an octal mode.
pub fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    // 5 digits only with a leading 0 (the explicit "clear setgid" form of GNU chmod).
    let len_ok = matches!(digits.len(), 3 | 4) || (digits.len() == 5 && digits.starts_with('0'));
    if !len_ok {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an octal mode string such as \"0644\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Mode, E> {
                parse_mode(s).map(Mode).ok_or_else(|| {
                    E::custom(format!(
                        "invalid `mode` \"{s}\": write it as an octal string such as \"0644\""
                    ))
                })
            }
            fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<Mode, E> {
                // TOML has no octal literals with a leading 0: 644 would be decimal.
                Err(E::custom(format!(
                    "`mode` must be a string: write mode = \"0{i}\" (a bare number is not read as octal)"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list parameter that may also be written as a single string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = List;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<List, E> {
                Ok(List(vec![s.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(List(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `present` or `absent`: the `state` of the steps that put a thing in place or remove it.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}

/// A ParamError for `key` with a help text.
pub fn bad(key: &str, message: impl Into<String>, help: impl Into<String>) -> ParamError {
    ParamError::new(Some(key), message).help(help)
}

/// An absolute, normalized path (no `.`/`..` components, no trailing slash).
pub fn abs_path(key: &str, p: &str) -> Result<String, ParamError> {
    if !p.starts_with('/') {
        return Err(bad(
            key,
            format!("`{key}` must be an absolute path, got \"{p}\""),
            format!("write {key} = \"/{}\"", p.trim_start_matches("./")),
        ));
    }
    if p.contains(['\0', '\n']) {
        return Err(bad(
            key,
            format!("`{key}` contains a newline or NUL byte"),
            "remove it",
        ));
    }
    if p.split('/').any(|c| c == "." || c == "..") {
        return Err(bad(
            key,
            format!("`{key}` \"{p}\" contains `.` or `..`"),
            "write the path without them",
        ));
    }
    let trimmed = p.trim_end_matches('/');
    let mut out = String::with_capacity(trimmed.len());
    for c in trimmed.split('/').filter(|c| !c.is_empty()) {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// An optional `owner` or `group` parameter: a name or a numeric id, checked.
pub fn account(key: &str, name: Option<String>) -> Result<Option<String>, ParamError> {
    name.map(|n| account_name(key, &n, true)).transpose()
}

/// Refuses parameters that do not go together: a ParamError for `key` unless `ok`.
pub fn require(ok: bool, key: &str, message: &str, help: &str) -> Result<(), ParamError> {
    if ok {
        Ok(())
    } else {
        Err(bad(key, message, help))
    }
}

/// A user or group name as Debian's useradd accepts it by default, or a numeric id.
pub fn account_name(key: &str, s: &str, allow_numeric: bool) -> Result<String, ParamError> {
    if allow_numeric && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b[1..].iter().enumerate().all(|(i, &c)| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == b'_'
                || c == b'-'
                || (c == b'$' && i == b.len() - 2)
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(bad(
            key,
            format!("`{key}` \"{s}\" is not a valid user or group name"),
            "names start with a lower-case letter or `_`, then lower-case letters, digits, `_` or `-` (at most 32)",
        ))
    }
}

/// Lower-case hex sha256, as `sha256sum` prints it.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Decodes standard base64 (as `base64 -w0` prints it); whitespace is ignored.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let clean: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    STANDARD.decode(clean).ok()
}

/// Standard base64 with padding, as `base64 -w0` prints it.
pub fn base64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Mode, owner and group of a file or directory as `stat -c '%a %U %G %u %g %s'` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs {
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

/// The stat format string matching [`parse_attrs`].
pub const STAT_FORMAT: &str = "%a %U %G %u %g %s";

pub fn parse_attrs(s: &str) -> Option<Attrs> {
    let f: Vec<&str> = s.split_whitespace().collect();
    let [mode, owner, group, uid, gid, size] = f.as_slice() else {
        return None;
    };
    Some(Attrs {
        mode: u32::from_str_radix(mode, 8).ok()?,
        owner: owner.to_string(),
        group: group.to_string(),
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        size: size.parse().ok()?,
    })
}

impl Attrs {
    /// Whether `want` (a name or a numeric id) is the owner.
    pub fn owner_is(&self, want: &str) -> bool {
        want == self.owner || want.parse::<u32>().ok() == Some(self.uid)
    }

    pub fn group_is(&self, want: &str) -> bool {
        want == self.group || want.parse::<u32>().ok() == Some(self.gid)
    }

    /// The owner as chown should be given it: the name, or the id when the
    /// name is unknown (stat prints UNKNOWN).
    pub fn owner_spec(&self) -> String {
        if self.owner == "UNKNOWN" {
            self.uid.to_string()
        } else {
            self.owner.clone()
        }
    }

    pub fn group_spec(&self) -> String {
        if self.group == "UNKNOWN" {
            self.gid.to_string()
        } else {
            self.group.clone()
        }
    }
}

/// `owner:group`, `owner` or `:group` for chown.
pub fn chown_spec(owner: Option<&str>, group: Option<&str>) -> Option<String> {
    match (owner, group) {
        (Some(o), Some(g)) => Some(format!("{o}:{g}")),
        (Some(o), None) => Some(o.to_string()),
        (None, Some(g)) => Some(format!(":{g}")),
        (None, None) => None,
    }
}

/// The first line of a script, shortened for summaries.
pub fn short(script: &str) -> String {
    let first = script.trim().lines().next().unwrap_or("");
    let multi = script.trim().lines().nth(1).is_some();
    let mut s: String = first.chars().take(60).collect();
    if multi || first.chars().count() > 60 {
        s.push('…');
    }
    s
}

/// An integer parameter that may also arrive as a string: values written as
/// templates (`"{{ vars.swappiness }}"`) are rendered to strings. The empty
/// string (`| default('')`) means unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Num(pub Option<i64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<Num, E> {
                Ok(Num(Some(i)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Num, E> {
                let t = s.trim();
                if t.is_empty() {
                    return Ok(Num(None));
                }
                t.parse()
                    .map(|i| Num(Some(i)))
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean parameter that may also arrive as the string "true" or "false"
/// (a rendered template).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Flag, E> {
                Ok(Flag(b))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Flag, E> {
                match s.trim() {
                    "true" => Ok(Flag(true)),
                    "false" => Ok(Flag(false)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A string parameter where the empty string (a template rendering
/// `| default('')`) means unset.
pub fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use provision_engine::step::Facts;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("644"), Some(0o644));
        assert_eq!(parse_mode("2775"), Some(0o2775));
        assert_eq!(parse_mode("0o600"), Some(0o600));
        assert_eq!(parse_mode("00755"), Some(0o755));
        assert_eq!(parse_mode("0999"), None);
        assert_eq!(parse_mode("rw-r--r--"), None);
        assert_eq!(parse_mode("64"), None);
        assert_eq!(Mode(0o644).to_string(), "0644");
        assert!(Mode(0o600).is_private() && Mode(0o400).is_private() && !Mode(0o640).is_private());
    }

    #[test]
    fn paths() {
        assert_eq!(abs_path("p", "/opt/app/").unwrap(), "/opt/app");
        assert_eq!(abs_path("p", "//opt//app").unwrap(), "/opt/app");
        assert_eq!(abs_path("p", "/").unwrap(), "/");
        let e = abs_path("path", "opt/app").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("path"));
        assert_eq!(e.help.as_deref(), Some("write path = \"/opt/app\""));
        assert!(abs_path("p", "/opt/../etc").is_err());
        assert!(abs_path("p", "/a\nb").is_err());
    }

    #[test]
    fn account_names() {
        for ok in ["deploy", "_apt", "www-data", "user1", "machine$"] {
            assert!(account_name("name", ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Deploy",
            "-x",
            "a b",
            "1abc",
            "a$b",
            "x;rm",
            &"a".repeat(33),
        ] {
            assert!(account_name("name", bad, false).is_err(), "{bad}");
        }
        assert!(account_name("owner", "1000", true).is_ok());
        assert!(account_name("name", "1000", false).is_err());
    }

    #[test]
    fn base64_round_trip() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            b"\0\xff\x10binary",
        ] {
            let enc = base64_encode(data);
            assert_eq!(base64_decode(&enc).unwrap(), data, "{enc}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_decode("Zm9v\nYg==\n").unwrap(), b"foob");
        assert_eq!(base64_decode("Zm9"), None);
        assert_eq!(base64_decode("Zm=v"), None);
        assert_eq!(base64_decode("Zg==Zg=="), None);
        assert_eq!(base64_decode("Z!9v"), None);
    }

    #[test]
    fn base64_matches_coreutils() {
        let data: Vec<u8> = (0..=255u8).chain(b"hello\n".iter().copied()).collect();
        let mut child = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&data).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text, base64_encode(&data));
        assert_eq!(base64_decode(&text).unwrap(), data);
    }

    #[test]
    fn sha256_matches_sha256sum() {
        assert_eq!(
            sha256_hex(b"hello\n"),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }

    #[test]
    fn stat_lines() {
        assert_eq!(
            parse_attrs("644 root root 0 0 1234").unwrap(),
            Attrs {
                mode: 0o644,
                owner: "root".into(),
                group: "root".into(),
                uid: 0,
                gid: 0,
                size: 1234
            }
        );
        let a = parse_attrs("2775 UNKNOWN www-data 1005 33 4096").unwrap();
        assert_eq!(a.mode, 0o2775);
        assert_eq!(a.owner_spec(), "1005");
        assert_eq!(a.group_spec(), "www-data");
        assert!(
            a.owner_is("1005") && a.group_is("33") && a.group_is("www-data") && !a.owner_is("root")
        );
        assert_eq!(parse_attrs("644 root root"), None);
        assert_eq!(parse_attrs("rw root root 0 0 1"), None);
    }

    #[test]
    fn shortened_scripts() {
        assert_eq!(short("echo hi"), "echo hi");
        assert_eq!(short("  set -e\n  make install\n"), "set -e…");
        assert_eq!(short(&"x".repeat(70)), format!("{}…", "x".repeat(60)));
    }

    #[test]
    fn list_accepts_one_or_many() {
        #[derive(Deserialize)]
        struct P {
            l: List,
        }
        let p: P = toml::from_str("l = \"a\"").unwrap();
        assert_eq!(p.l, List(vec!["a".into()]));
        let p: P = toml::from_str("l = [\"a\", \"b\"]").unwrap();
        assert_eq!(p.l.0, vec!["a", "b"]);
        assert!(toml::from_str::<P>("l = 3").is_err());
    }

    #[test]
    fn numbers_and_flags_accept_rendered_strings() {
        #[derive(Deserialize)]
        struct P {
            n: Option<Num>,
            f: Option<Flag>,
        }
        let p: P = toml::from_str("n = 10\nf = true").unwrap();
        assert_eq!((p.n, p.f), (Some(Num(Some(10))), Some(Flag(true))));
        let p: P = toml::from_str("n = \" 10 \"\nf = \"false\"").unwrap();
        assert_eq!((p.n, p.f), (Some(Num(Some(10))), Some(Flag(false))));
        let p: P = toml::from_str("n = \"\"").unwrap();
        assert_eq!(p.n, Some(Num(None)));
        assert!(toml::from_str::<P>("n = \"ten\"").is_err());
        assert!(toml::from_str::<P>("f = \"yes\"").is_err());
        assert_eq!(non_empty(Some(" ".into())), None);
        assert_eq!(non_empty(Some("a".into())).as_deref(), Some("a"));
    }

    #[test]
    fn sections_split_back() {
        let cmd = sections(&[("a", "echo x=1".into()), ("b", "printf 'y=2'".into())]);
        assert_eq!(cmd, "echo '--- a'; echo x=1; echo '--- b'; printf 'y=2'");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        let s = Sections::parse(&Facts::new(String::from_utf8(out.stdout).unwrap()));
        assert_eq!(s.get("a").unwrap().stdout, "x=1\n");
        assert_eq!(s.get("b").unwrap().kv().get("y"), Some(&"2"));
        let e = s.get("c").unwrap_err();
        assert!(e.message.starts_with("unexpected `c` fact output"), "{e}");
    }
}
