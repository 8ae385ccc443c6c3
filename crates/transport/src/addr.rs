//! A host beside a port or a path: IPv6 literals go in brackets (`[fd00::1]:2377`),
//! the one form OpenSSH's known_hosts, Docker, mount(8) and HAProxy all read.

use std::borrow::Cow;

/// `host`, or `[host]` when it is an IPv6 literal (it holds a `:`).
pub fn bracketed(host: &str) -> Cow<'_, str> {
    if host.contains(':') && !host.starts_with('[') {
        Cow::Owned(format!("[{host}]"))
    } else {
        Cow::Borrowed(host)
    }
}

/// `host:port`, IPv6 in brackets.
pub fn with_port(host: &str, port: u16) -> String {
    format!("{}:{port}", bracketed(host))
}

/// The host of `host:port` or `[v6]:port` (brackets removed); a text without a port
/// (an address alone, IPv6 too) is its own host.
pub fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h,
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_goes_in_brackets_and_comes_out_of_them() {
        assert_eq!(with_port("10.0.0.1", 2377), "10.0.0.1:2377");
        assert_eq!(with_port("fd00::1", 2377), "[fd00::1]:2377");
        assert_eq!(with_port("::1", 22), "[::1]:22");
        assert_eq!(with_port("web-1.example", 2222), "web-1.example:2222");
        assert_eq!(bracketed("[fd00::1]"), "[fd00::1]");
        assert_eq!(host_of("10.0.0.1:2377"), "10.0.0.1");
        assert_eq!(host_of("[fd00::1]:2377"), "fd00::1");
        assert_eq!(host_of("fd00::1"), "fd00::1");
        assert_eq!(host_of("fd00::2377"), "fd00::2377");
        assert_eq!(host_of("10.0.0.1"), "10.0.0.1");
        assert_eq!(host_of("[::1]"), "::1");
    }
}
