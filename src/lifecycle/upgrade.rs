//! Binary upgrade guards (control plane).
//!
//! Pingora hands the listening sockets over a unix socket on which the *new* process listens
//! (it binds `server.upgrade_sock` during bootstrap and waits about five seconds). Before the old
//! process lets Pingora try the hand-off, it checks in `/proc/net/unix` that a listener is
//! really waiting there; without one, a stray `SIGQUIT` would otherwise shut the old process
//! down with nobody to take over. The check does not connect, so it does not consume the new
//! process's single accept.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `__SO_ACCEPTCON` in `/proc/net/unix`'s Flags column: the socket is listening.
const SO_ACCEPTCON: u32 = 0x0001_0000;

/// Whether some process listens on the unix socket at `path` right now (Linux).
pub fn listener_waiting(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    listed_as_listening(&table, path)
}

fn listed_as_listening(table: &str, path: &Path) -> bool {
    let want = path.to_string_lossy();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path
        fields.len() >= 8
            && fields[7..].join(" ") == want
            && u32::from_str_radix(fields[3], 16).is_ok_and(|f| f & SO_ACCEPTCON != 0)
    })
}

/// The command that starts this binary again as an upgrading process.
#[derive(Debug, Clone)]
pub struct SelfCommand {
    /// The executable path as resolved at start: the file an upgrade replaces on disk.
    pub exe: PathBuf,
    /// Our arguments (without argv\[0\]).
    pub args: Vec<OsString>,
}

impl SelfCommand {
    /// Capture at start, before anything can replace the binary.
    pub fn capture() -> Option<SelfCommand> {
        let exe = std::env::current_exe().ok()?;
        Some(SelfCommand {
            exe,
            args: std::env::args_os().skip(1).collect(),
        })
    }

    /// Start the new binary with the same arguments plus `--upgrade`.
    pub fn spawn_successor(&self) -> std::io::Result<Child> {
        let mut args = self.args.clone();
        if !args.iter().any(|a| a == "-u" || a == "--upgrade") {
            args.push("--upgrade".into());
        }
        Command::new(&self.exe)
            .args(&args)
            .stdin(Stdio::null())
            .spawn()
    }
}

/// Wait until `child` listens on `sock` (hand over) or fails. A child that exits 0 may have
/// daemonised (its own child takes over), so only a failing exit aborts early.
pub fn wait_for_successor(child: &mut Child, sock: &Path, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if listener_waiting(sock) {
            return Ok(());
        }
        match child.try_wait() {
            Ok(Some(status)) if !status.success() => {
                return Err(format!(
                    "new process exited with {status} before taking over"
                ));
            }
            Err(e) => return Err(format!("cannot watch the new process: {e}")),
            _ => {}
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "new process did not wait on {} within {limit:?}; stopped it",
                sock.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 1234 /run/modelgate/upgrade.sock
0000000000000000: 00000003 00000000 00000000 0001 03 1235 /run/other.sock
0000000000000000: 00000002 00000000 00010000 0001 01 1236 /run/with space.sock
";

    #[test]
    fn finds_listening_sockets_only() {
        assert!(listed_as_listening(
            TABLE,
            Path::new("/run/modelgate/upgrade.sock")
        ));
        assert!(listed_as_listening(
            TABLE,
            Path::new("/run/with space.sock")
        ));
        assert!(!listed_as_listening(TABLE, Path::new("/run/other.sock")));
        assert!(!listed_as_listening(
            TABLE,
            Path::new("/run/modelgate/upgrade")
        ));
    }

    #[test]
    fn a_real_listener_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.sock");
        assert!(!listener_waiting(&path));
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(listener_waiting(&path));
        drop(l);
        assert!(!listener_waiting(&path));
    }
}
