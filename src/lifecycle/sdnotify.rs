//! systemd's `sd_notify` protocol: one datagram to `$NOTIFY_SOCKET` (control plane).
//!
//! With `Type=notify`, `READY=1` tells systemd the gateway is up; after a binary upgrade the new
//! process also sends `MAINPID=` so systemd follows it (`NotifyAccess=all`). Without
//! `NOTIFY_SOCKET` every call is a no-op.

use std::os::unix::net::UnixDatagram;

/// Send `state` (e.g. `"READY=1"`); errors are returned for logging, never fatal.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}
