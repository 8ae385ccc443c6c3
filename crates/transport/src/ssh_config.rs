//! A reader for the parts of `~/.ssh/config` provision honours: HostName, User, Port,
//! IdentityFile and ProxyJump, with OpenSSH's "first value wins" and Host pattern rules.

use crate::error::TransportError;
use crate::known_hosts::glob_match;
use std::path::{Path, PathBuf};

/// What the config says about one host alias. Every field is optional: the
/// inventory's values take precedence, then these, then built-in defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    /// Raw ProxyJump value: `[user@]host[:port]`, comma-separated hops, or `none`.
    pub proxy_jump: Option<String>,
}

#[derive(Debug, Clone)]
struct Block {
    patterns: Vec<String>,
    /// (keyword lower-cased, argument, line)
    options: Vec<(String, String)>,
}

/// A parsed config: blocks in file order (Includes expanded in place).
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    blocks: Vec<Block>,
}

impl SshConfig {
    /// Reads `~/.ssh/config` if it exists; a missing file is an empty config.
    pub fn load_default() -> Result<Self, TransportError> {
        match home_dir() {
            Some(home) => Self::load(&home.join(".ssh/config")),
            None => Ok(Self::default()),
        }
    }

    pub fn load(path: &Path) -> Result<Self, TransportError> {
        let mut cfg = SshConfig {
            blocks: vec![Block {
                patterns: vec!["*".into()],
                options: vec![],
            }],
        };
        cfg.read_file(path, 0)?;
        Ok(cfg)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, TransportError> {
        let mut cfg = SshConfig {
            blocks: vec![Block {
                patterns: vec!["*".into()],
                options: vec![],
            }],
        };
        cfg.parse_into(text, path, 0)?;
        Ok(cfg)
    }

    fn read_file(&mut self, path: &Path, depth: usize) -> Result<(), TransportError> {
        match std::fs::read_to_string(path) {
            Ok(text) => self.parse_into(&text, path, depth),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(TransportError::LocalIo {
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    fn parse_into(&mut self, text: &str, path: &Path, depth: usize) -> Result<(), TransportError> {
        let err = |line: usize, reason: String| TransportError::SshConfig {
            path: path.to_path_buf(),
            line,
            reason,
        };
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, arg) = split_keyword(line)
                .ok_or_else(|| err(line_no, format!("cannot parse `{line}`")))?;
            let key = key.to_ascii_lowercase();
            match key.as_str() {
                "host" => {
                    let patterns = split_args(&arg);
                    if patterns.is_empty() {
                        return Err(err(line_no, "Host needs at least one pattern".into()));
                    }
                    self.blocks.push(Block {
                        patterns,
                        options: vec![],
                    });
                }
                // Match criteria (exec, canonical, ...) cannot be evaluated faithfully
                // here; its options are ignored rather than applied to the wrong hosts.
                "match" => self.blocks.push(Block {
                    patterns: vec![],
                    options: vec![],
                }),
                "include" => {
                    if depth > 8 {
                        return Err(err(line_no, "Include nested too deeply".into()));
                    }
                    for pat in split_args(&arg) {
                        for file in expand_include(&pat) {
                            self.read_file(&file, depth + 1)?;
                        }
                    }
                }
                _ => {
                    if key == "port" && arg.parse::<u16>().is_err() {
                        return Err(err(
                            line_no,
                            format!("Port `{arg}` is not a number between 1 and 65535"),
                        ));
                    }
                    if let Some(b) = self.blocks.last_mut() {
                        b.options.push((key, unquote(&arg)));
                    }
                }
            }
        }
        Ok(())
    }

    /// The settings that apply to `alias`, with `%h`, `%d`, `%r`, `%u` and `~` expanded in paths.
    pub fn resolve(&self, alias: &str) -> HostSettings {
        let mut s = HostSettings::default();
        for block in self
            .blocks
            .iter()
            .filter(|b| host_matches(&b.patterns, alias))
        {
            for (key, arg) in &block.options {
                match key.as_str() {
                    "hostname" if s.host_name.is_none() => s.host_name = Some(arg.clone()),
                    "user" if s.user.is_none() => s.user = Some(arg.clone()),
                    "port" if s.port.is_none() => s.port = arg.parse().ok(),
                    "proxyjump" if s.proxy_jump.is_none() => s.proxy_jump = Some(arg.clone()),
                    "identityfile" => s.identity_files.push(PathBuf::from(arg)),
                    _ => {}
                }
            }
        }
        let host = s.host_name.clone().unwrap_or_else(|| alias.to_string());
        if let Some(h) = &s.host_name {
            s.host_name = Some(h.replace("%h", alias));
        }
        let remote_user = s.user.clone().unwrap_or_else(local_user);
        s.identity_files = s
            .identity_files
            .iter()
            .map(|p| PathBuf::from(expand_tokens(&p.to_string_lossy(), &host, &remote_user)))
            .collect();
        s
    }
}

fn host_matches(patterns: &[String], alias: &str) -> bool {
    let mut positive = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if glob_match(neg, alias) {
                return false;
            }
        } else if glob_match(p, alias) {
            positive = true;
        }
    }
    positive
}

fn split_keyword(line: &str) -> Option<(String, String)> {
    let idx = line.find(|c: char| c.is_whitespace() || c == '=')?;
    let key = &line[..idx];
    let rest = line[idx..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    Some((key.to_string(), rest.to_string()))
}

fn split_args(arg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in arg.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn unquote(arg: &str) -> String {
    arg.strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .unwrap_or(arg)
        .to_string()
}

fn expand_include(pattern: &str) -> Vec<PathBuf> {
    let mut path = PathBuf::from(expand_tilde(pattern));
    if path.is_relative()
        && let Some(home) = home_dir()
    {
        path = home.join(".ssh").join(path);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![path];
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| glob_match(&name, &n.to_string_lossy()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

pub(crate) fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into())
}

/// `~/x` to `$HOME/x`.
pub fn expand_tilde(p: &str) -> String {
    match (p.strip_prefix("~/"), home_dir()) {
        (Some(rest), Some(home)) => home.join(rest).to_string_lossy().into_owned(),
        _ if p == "~" => home_dir()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.into()),
        _ => p.to_string(),
    }
}

fn expand_tokens(p: &str, host: &str, remote_user: &str) -> String {
    let home = home_dir()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let p = expand_tilde(p);
    let mut out = String::new();
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('d') => out.push_str(&home),
            Some('r') => out.push_str(remote_user),
            Some('u') => out.push_str(&local_user()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// One ProxyJump hop: `[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// Parses a ProxyJump value into hops (first hop first). `none` means no jump.
pub fn parse_proxy_jump(value: &str) -> Result<Vec<Jump>, String> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(vec![]);
    }
    value
        .split(',')
        .map(|hop| {
            let hop = hop.trim().trim_start_matches("ssh://");
            let (user, rest) = match hop.rsplit_once('@') {
                Some((u, r)) => (Some(u.to_string()), r),
                None => (None, hop),
            };
            let (host, port) = if let Some(r) = rest.strip_prefix('[') {
                let (h, after) = r
                    .split_once(']')
                    .ok_or_else(|| format!("unclosed `[` in ProxyJump hop `{hop}`"))?;
                (h.to_string(), after.strip_prefix(':'))
            } else if rest.parse::<std::net::Ipv6Addr>().is_ok() {
                // An IPv6 address without brackets has no port (OpenSSH needs `[addr]:port`).
                (rest.to_string(), None)
            } else {
                match rest.rsplit_once(':') {
                    Some((h, p)) => (h.to_string(), Some(p)),
                    None => (rest.to_string(), None),
                }
            };
            let port = port
                .map(|p| {
                    p.parse::<u16>()
                        .map_err(|_| format!("bad port `{p}` in ProxyJump hop `{hop}`"))
                })
                .transpose()?;
            if host.is_empty() {
                return Err(format!("empty host in ProxyJump hop `{hop}`"));
            }
            Ok(Jump { user, host, port })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> SshConfig {
        SshConfig::parse(text, Path::new("config")).unwrap()
    }

    #[test]
    fn first_value_wins_and_identity_files_accumulate() {
        let c = cfg(
            "Host web-*\n  HostName 10.0.0.%h\n  User deploy\n  IdentityFile /k1\n\nHost *\n  User root\n  Port 2222\n  IdentityFile=/k2\n",
        );
        let s = c.resolve("web-1");
        assert_eq!(s.host_name.as_deref(), Some("10.0.0.web-1"));
        assert_eq!(s.user.as_deref(), Some("deploy"));
        assert_eq!(s.port, Some(2222));
        assert_eq!(
            s.identity_files,
            vec![PathBuf::from("/k1"), PathBuf::from("/k2")]
        );
        let s = c.resolve("db");
        assert_eq!(s.user.as_deref(), Some("root"));
        assert_eq!(s.host_name, None);
    }

    #[test]
    fn negated_patterns_and_match_blocks() {
        let c = cfg(
            "Host * !bastion\n ProxyJump admin@bastion:2200\nMatch exec true\n User nobody\nHost \"quoted\"\n Port 1\n",
        );
        assert_eq!(
            c.resolve("app").proxy_jump.as_deref(),
            Some("admin@bastion:2200")
        );
        assert_eq!(c.resolve("bastion").proxy_jump, None);
        assert_eq!(c.resolve("app").user, None, "Match blocks are not applied");
        assert_eq!(c.resolve("quoted").port, Some(1));
    }

    #[test]
    fn tokens_in_identity_file() {
        let c = cfg("Host h\n User bob\n IdentityFile %d/.ssh/%r@%h\n");
        let home = home_dir().unwrap();
        assert_eq!(c.resolve("h").identity_files, vec![home.join(".ssh/bob@h")]);
    }

    #[test]
    fn bad_port_names_the_line() {
        let e = SshConfig::parse("Host a\n  Port ssh\n", Path::new("/cfg")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/cfg:2: Port `ssh` is not a number between 1 and 65535"
        );
    }

    #[test]
    fn proxy_jump_hops() {
        assert_eq!(
            parse_proxy_jump("a@b:2200,[::1]:22,c").unwrap(),
            vec![
                Jump {
                    user: Some("a".into()),
                    host: "b".into(),
                    port: Some(2200)
                },
                Jump {
                    user: None,
                    host: "::1".into(),
                    port: Some(22)
                },
                Jump {
                    user: None,
                    host: "c".into(),
                    port: None
                },
            ]
        );
        assert_eq!(parse_proxy_jump("none").unwrap(), vec![]);
        assert!(parse_proxy_jump("h:x").is_err());
        // A bare IPv6 address is a host, not `fd00:` on port 1.
        assert_eq!(
            parse_proxy_jump("admin@fd00::1").unwrap(),
            vec![Jump {
                user: Some("admin".into()),
                host: "fd00::1".into(),
                port: None
            }]
        );
    }
}
