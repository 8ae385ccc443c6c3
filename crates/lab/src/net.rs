//! Loopback ports for the lab (SSH forwards, the private network's multicast port) and the check
//! that a VM's sshd answers.

use std::collections::HashSet;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// Whether 127.0.0.1:port can be bound for TCP now.
pub fn tcp_port_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A TCP port free on 127.0.0.1, not in `taken` (the kernel picks; a race with other programs
/// remains, and qemu's refusal to start is retried by the caller).
pub fn free_tcp_port(taken: &HashSet<u16>) -> std::io::Result<u16> {
    for _ in 0..64 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free TCP port on 127.0.0.1"))
}

/// A UDP port for the lab's multicast group. qemu binds group:port with SO_REUSEADDR, so our
/// plain wildcard bind fails while any running lab uses the port: labs never share a segment.
pub fn free_mcast_port(taken: &HashSet<u16>) -> std::io::Result<u16> {
    for _ in 0..64 {
        let port = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?
            .local_addr()?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free UDP port"))
}

/// Whether an SSH server answers on 127.0.0.1:port: qemu's forward accepts connections before
/// the guest listens, so only the `SSH-2.0` banner proves sshd is up.
pub fn ssh_answers(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    if stream.set_read_timeout(Some(timeout)).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 8 {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    buf.starts_with(b"SSH-2.0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn banner_check_needs_ssh_banner() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n").unwrap();
            let (s, _) = listener.accept().unwrap();
            drop(s); // like qemu's forward with no guest listener: accept, then close
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"HTTP/1.1 400 Bad\r\n").unwrap();
        });
        assert!(ssh_answers(port, Duration::from_secs(5)));
        assert!(!ssh_answers(port, Duration::from_secs(5)));
        assert!(!ssh_answers(port, Duration::from_secs(5)));
        server.join().unwrap();
        let unused = free_tcp_port(&HashSet::new()).unwrap();
        assert!(!ssh_answers(unused, Duration::from_millis(500)));
    }

    #[test]
    fn ports_are_free_and_avoid_taken() {
        let p = free_tcp_port(&HashSet::new()).unwrap();
        assert!(tcp_port_free(p));
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        assert!(!tcp_port_free(held.local_addr().unwrap().port()));
        let taken: HashSet<u16> = [p].into();
        assert_ne!(free_tcp_port(&taken).unwrap(), p);
        let m = free_mcast_port(&HashSet::new()).unwrap();
        assert!(m > 0);
    }
}
