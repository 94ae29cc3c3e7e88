//! Hot reload (control plane): re-read the config file, validate it with the same code as
//! `--test`, build a new immutable snapshot and swap it in.
//!
//! Triggers are `SIGHUP` and changes of the file ([`watch`]). Requests already running keep the
//! snapshot they loaded, so streams started before a reload finish on their old pool; backends
//! that stay keep their health (see [`crate::state::Snapshot::build_from`]). A rejected file
//! changes nothing: the error is logged with its field paths and shown by `GET /config`.
//! Replaced snapshots are parked here and dropped by the control plane once no request holds
//! them, so freeing a large snapshot never lands on a request thread.

pub mod diff;
pub mod service;
pub mod watch;

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::config::{self, ConfigError};
use crate::control::{BootSettings, Control};
use crate::state::Snapshot;

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

/// Replaced snapshots waiting until no request holds them.
#[derive(Debug, Default)]
pub struct Graveyard(Mutex<Vec<Arc<Snapshot>>>);

impl Graveyard {
    /// Park a replaced snapshot.
    pub fn bury(&self, snapshot: Arc<Snapshot>) {
        if let Ok(mut list) = self.0.lock() {
            list.push(snapshot);
        }
        self.prune();
    }

    /// Drop every parked snapshot no request holds any more.
    pub fn prune(&self) {
        let dead: Vec<Arc<Snapshot>> = match self.0.lock() {
            Ok(mut list) => {
                let (dead, live) = list.drain(..).partition(|s| Arc::strong_count(s) == 1);
                *list = live;
                dead
            }
            Err(_) => Vec::new(),
        };
        drop(dead); // outside the lock
    }

    /// Snapshots still parked (tests and `/status`).
    pub fn len(&self) -> usize {
        self.0.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Whether nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Re-read and apply the config file. Blocking (file read and host name resolution): call it
/// from a blocking thread, never from the request path.
pub fn reload(control: &Control, graveyard: &Graveyard, trigger: Trigger) -> Outcome {
    let path = &control.config_path;
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            let message = ConfigError::Io {
                path: path.display().to_string(),
                message: e.to_string(),
            }
            .to_string();
            return reject(control, trigger, message);
        }
    };
    let current = control.state.load_full();
    if trigger == Trigger::FileChange
        && format!("{:x}", Sha256::digest(&bytes)) == current.config_sha256
    {
        return Outcome::Unchanged;
    }
    let config = match config::parse_at(&bytes, path.parent()) {
        Ok(c) => c,
        Err(e) => return reject(control, trigger, e.to_string()),
    };
    drop(current);
    warn_needs_upgrade(&control.boot, &BootSettings::of(&config));
    let (sha256, level) = (config.sha256.clone(), config.log.level.clone());
    // Under the build lock (discovery publishes too), with the addresses discovered so far.
    let mut generation = 0;
    let mut changes = String::new();
    let old = control
        .discovery
        .publish_config(control, config, |expanded, current| {
            generation = current.generation + 1;
            changes = diff::describe(current, expanded);
            Snapshot::build_from(expanded, generation, Some(current))
        });
    graveyard.bury(old);
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

fn reject(control: &Control, trigger: Trigger, message: String) -> Outcome {
    crate::metrics::record_reload(false);
    error!(
        trigger = trigger.as_str(),
        path = %control.config_path.display(),
        "config reload rejected; the previous config keeps serving:\n{message}"
    );
    control.reject(message.clone());
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
