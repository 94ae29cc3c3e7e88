//! Where the upgrade socket and the pid file live (control plane, at start).
//!
//! Pingora's defaults are fixed names under `/tmp`, where another local user could create them
//! first. modelgate's default is a private runtime directory: `$RUNTIME_DIRECTORY` (systemd's
//! `RuntimeDirectory=`), else `$XDG_RUNTIME_DIR/modelgate`, else `/tmp/modelgate-<uid>`; created
//! mode 0700 and checked to belong to us.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::config::ServerSettings;

/// Resolved `server.upgrade_sock` and `server.pid_file`.
#[derive(Debug, Clone)]
pub struct RuntimePaths {
    pub upgrade_sock: PathBuf,
    pub pid_file: PathBuf,
}

/// Resolve the configured or default paths and make sure their directories exist and are
/// private. Problems are returned as messages for the log; they only matter for upgrades and
/// daemon mode, so they do not stop the gateway.
pub fn resolve(server: &ServerSettings) -> (RuntimePaths, Vec<String>) {
    let mut problems = Vec::new();
    let default_dir = default_dir();
    let upgrade_sock = absolute(
        server
            .upgrade_sock
            .clone()
            .unwrap_or_else(|| default_dir.join("upgrade.sock")),
    );
    let pid_file = absolute(
        server
            .pid_file
            .clone()
            .unwrap_or_else(|| default_dir.join("modelgate.pid")),
    );
    for p in [&upgrade_sock, &pid_file] {
        if let Some(dir) = p.parent() {
            if let Err(e) = ensure_private_dir(dir) {
                problems.push(format!("{}: {e}", dir.display()));
            }
        }
    }
    problems.dedup();
    (
        RuntimePaths {
            upgrade_sock,
            pid_file,
        },
        problems,
    )
}

fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may list several, separated by ':'; the first is ours.
        if let Some(first) = dir.to_string_lossy().split(':').next() {
            if !first.is_empty() {
                return PathBuf::from(first);
            }
        }
    }
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR") {
        if !xdg.is_empty() {
            return PathBuf::from(xdg).join("modelgate");
        }
    }
    PathBuf::from(format!("/tmp/modelgate-{}", nix::unistd::geteuid()))
}

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

/// Create `dir` (0700) if missing; complain if it is writable by others or not ours.
fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create: {e}"))?;
        return Ok(());
    }
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    let mode = meta.permissions().mode();
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "owned by uid {}, not by us (uid {me}); another user could take over the upgrade socket",
            meta.uid()
        ));
    }
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err("world-writable without the sticky bit; use a private directory".into());
    }
    if mode & 0o022 != 0 {
        warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o7777), "upgrade socket / pid file directory is writable by others; prefer a private (0700) directory");
    }
    Ok(())
}
