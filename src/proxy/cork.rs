//! `TCP_CORK` on an upstream socket while a request whose body is already in hand is written
//! (request path).
//!
//! Pingora's upstream stream is unbuffered: the request header and each body piece are separate
//! `send`s, so a small request leaves as two packets, and on loopback or a LAN each packet wakes
//! the backend and costs the whole TCP transmit/receive path. Corked, the kernel holds partial
//! segments until the cork is pulled, and header + body leave as one packet (what nginx's
//! `writev` does). Only for bodies already fully read: the kernel holds a corked partial segment
//! up to 200 ms, which would delay a body still streaming from a slow client.
//!
//! Must not outlive the socket it corks; failures are ignored (corking is only an optimisation).

use std::os::fd::RawFd;

/// Corks the socket on creation and uncorks it on [`Cork::release`] or drop.
#[derive(Debug)]
pub struct Cork {
    fd: Option<RawFd>,
}

impl Cork {
    /// Cork `fd` (a TCP socket that stays open for the guard's lifetime).
    pub fn new(fd: RawFd) -> Cork {
        Cork {
            fd: set(fd, true).then_some(fd),
        }
    }

    /// Uncork now: the held bytes leave at once.
    pub fn release(mut self) {
        if let Some(fd) = self.fd.take() {
            set(fd, false);
        }
    }
}

impl Drop for Cork {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            set(fd, false);
        }
    }
}

/// Set `TCP_CORK` on `fd`; whether it worked.
fn set(fd: RawFd, on: bool) -> bool {
    let value: nix::libc::c_int = on.into();
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local; the fd is open (the
    // caller owns the socket for the guard's lifetime), and a wrong fd only yields an error.
    let rc = unsafe {
        nix::libc::setsockopt(
            fd,
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_CORK,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn corked_writes_arrive_whole_after_release() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let cork = Cork::new(client.as_raw_fd());
        assert!(cork.fd.is_some(), "TCP_CORK is available on TCP sockets");
        client.write_all(b"head ").unwrap();
        client.write_all(b"body").unwrap();
        cork.release();
        let mut got = [0u8; 9];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"head body");
    }

    #[test]
    fn a_non_socket_is_left_alone() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let cork = Cork::new(file.as_raw_fd());
        assert!(cork.fd.is_none());
    }
}
