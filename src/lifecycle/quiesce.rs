//! Stop accepting right after the listening sockets were handed to a new process (control plane).
//!
//! Pingora keeps the old process accepting for five more seconds after the hand-off and then, in
//! one step, stops accepting and drops every connection still waiting for its first request
//! header. A client whose connection the old process accepted a moment before that step, and
//! whose request bytes had not arrived yet, loses its request. Here the old process stops
//! accepting as soon as the hand-off is done, so during those five seconds every new connection
//! goes to the new process and the ones the old process already accepted have time to deliver
//! their request, which is then served to the end.
//!
//! The sockets are shared with the new process and must stay open, so they cannot be closed or
//! shut down. Instead each listening descriptor number of ours is pointed (`dup2`) at an idle
//! non-blocking listener: our accept loop keeps its descriptor number but gets `EAGAIN` from now
//! on, while the real socket lives on in the new process.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::sys::socket::{getsockname, getsockopt, sockopt, SockaddrStorage};

/// Point every listening socket of ours bound to one of `addrs` at an idle listener. Returns
/// how many were switched.
pub fn stop_accepting(addrs: &[SocketAddr]) -> std::io::Result<usize> {
    let idle = std::net::TcpListener::bind("127.0.0.1:0")?;
    idle.set_nonblocking(true)?;
    let mut switched = 0;
    for fd in listening_fds(addrs)? {
        // SAFETY: dup2 atomically makes descriptor `fd` refer to the idle listener; `fd` stays
        // a valid, open descriptor for its owner (the accept loop), which only ever calls
        // accept on it. The original listening socket stays open in the new process.
        let rc = unsafe { nix::libc::dup2(idle.as_raw_fd(), fd) };
        if rc == fd {
            switched += 1;
        }
    }
    // `idle` itself can close: the dup'ed descriptors keep the idle listener alive.
    Ok(switched)
}

/// Our descriptors that are listening sockets bound to one of `addrs`.
fn listening_fds(addrs: &[SocketAddr]) -> std::io::Result<Vec<RawFd>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: only borrowed for two syscalls that read socket state. If the descriptor was
        // closed (or reused) meanwhile, they fail or describe another file, and the checks
        // below skip it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if !getsockopt(&borrowed, sockopt::AcceptConn).unwrap_or(false) {
            continue;
        }
        let Ok(name) = getsockname::<SockaddrStorage>(fd) else {
            continue;
        };
        let addr = if let Some(v4) = name.as_sockaddr_in() {
            SocketAddr::from((v4.ip(), v4.port()))
        } else if let Some(v6) = name.as_sockaddr_in6() {
            SocketAddr::from((v6.ip(), v6.port()))
        } else {
            continue;
        };
        if addrs.contains(&addr) {
            out.push(fd);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_descriptors_on_the_address_are_switched_and_others_are_not() {
        let real = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = real.local_addr().unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other_addr = other.local_addr().unwrap();
        assert_eq!(stop_accepting(&[addr]).unwrap(), 1);
        // Our descriptor now names the idle listener (another port, never connected to) and
        // accepting on it would block; the other listener is untouched.
        let now = real.local_addr().unwrap();
        assert_ne!(now, addr);
        real.set_nonblocking(true).unwrap();
        assert_eq!(
            real.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        assert_eq!(other.local_addr().unwrap(), other_addr);
    }
}
