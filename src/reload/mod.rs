//! Hot reload (control plane): re-read the config file, validate it with the same code as
//! `--test`, build a new immutable snapshot and swap it in.
//!
//! Triggers are `SIGHUP` and changes of the file ([`watch`]). Requests already running keep the
//! snapshot they loaded, so streams started before a reload finish on their old pool; backends
//! that stay keep their health (see [`crate::state::Snapshot::build_from`]). A rejected file
//! changes nothing: the error is logged with its field paths and shown by `GET /config`.
//! The state publisher applies it under its build lock (discovery builds there too) and parks
//! the replaced snapshot until no request holds it.

pub mod diff;
pub mod service;
pub mod watch;

use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::config::{self, Config, ConfigError, ServerSettings};
use crate::logging::LogFormat;
use crate::state::{Publisher, Snapshot};

pub use service::ReloadService;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `SIGHUP`: always re-read and apply (re-resolves backend host names too).
    Signal,
    /// The file changed on disk: applied only if its bytes differ from the config in force.
    FileChange,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChange => "file change",
        }
    }
}

/// Result of one reload attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new snapshot is in force with this generation.
    Applied(u64),
    /// The file's bytes equal the config in force; nothing to do.
    Unchanged,
    /// The file was rejected; the old config keeps serving.
    Rejected(String),
}

/// Settings read once at start; a reload that changes them is logged as needing an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSettings {
    pub listen: std::net::SocketAddr,
    pub admin_listen: std::net::SocketAddr,
    pub server: ServerSettings,
    pub log_format: LogFormat,
}

impl BootSettings {
    pub fn of(config: &Config) -> Self {
        BootSettings {
            listen: config.listen,
            admin_listen: config.admin_listen,
            server: config.server.clone(),
            log_format: config.log.format,
        }
    }
}

/// Re-read and apply the config file. Blocking (file read and host name resolution): call it
/// from a blocking thread, never from the request path.
pub fn reload(publisher: &Publisher, boot: &BootSettings, trigger: Trigger) -> Outcome {
    let path = publisher.path();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            let message = ConfigError::Io {
                path: path.display().to_string(),
                message: e.to_string(),
            }
            .to_string();
            return reject(publisher, trigger, message);
        }
    };
    let current = publisher.snapshot();
    if trigger == Trigger::FileChange
        && format!("{:x}", Sha256::digest(&bytes)) == current.config_sha256
    {
        return Outcome::Unchanged;
    }
    let config = match config::parse_at(&bytes, path.parent()) {
        Ok(c) => c,
        Err(e) => return reject(publisher, trigger, e.to_string()),
    };
    drop(current);
    warn_needs_upgrade(boot, &BootSettings::of(&config));
    let (sha256, level) = (config.sha256.clone(), config.log.level.clone());
    // Under the build lock (discovery publishes too), with the addresses discovered so far.
    let mut generation = 0;
    let mut changes = String::new();
    publisher.apply_config(config, |expanded, current| {
        generation = current.generation + 1;
        changes = diff::describe(current, expanded);
        Snapshot::build_from(expanded, generation, Some(current))
    });
    crate::metrics::record_reload(true);
    crate::logging::set_level(&level);
    info!(
        generation,
        sha256 = %sha256,
        trigger = trigger.as_str(),
        changes = %changes,
        "config reloaded"
    );
    Outcome::Applied(generation)
}

fn reject(publisher: &Publisher, trigger: Trigger, message: String) -> Outcome {
    crate::metrics::record_reload(false);
    error!(
        trigger = trigger.as_str(),
        path = %publisher.path().display(),
        "config reload rejected; the previous config keeps serving:\n{message}"
    );
    publisher.reject(message.clone());
    Outcome::Rejected(message)
}

/// Listener addresses and `server:` settings are bound at start; say so when a reload changes
/// them instead of silently ignoring the change.
fn warn_needs_upgrade(boot: &BootSettings, new: &BootSettings) {
    if boot.listen != new.listen {
        warn!(running = %boot.listen, configured = %new.listen, "`listen` changed: it takes effect only after a binary upgrade (-u) or restart");
    }
    if boot.admin_listen != new.admin_listen {
        warn!(running = %boot.admin_listen, configured = %new.admin_listen, "`admin.listen` changed: it takes effect only after a binary upgrade (-u) or restart");
    }
    if boot.server.upgrade_sock != new.server.upgrade_sock {
        warn!("`server.upgrade_sock` changed: the running process hands over on the old path, so this takes a restart");
    }
    if boot.server.threads != new.server.threads
        || boot.server.grace_period != new.server.grace_period
        || boot.server.pid_file != new.server.pid_file
    {
        warn!("`server:` settings changed: they take effect only after a binary upgrade (-u) or restart");
    }
    if boot.log_format != new.log_format {
        warn!("`log.format` changed: it takes effect only after a binary upgrade (-u) or restart");
    }
}

#[cfg(test)]
mod tests;
