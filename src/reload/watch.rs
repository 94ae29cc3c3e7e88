//! Watching the config file for changes (control plane).
//!
//! The watch is on the file's directory, not the file: tools that write a new file and rename
//! it over the old one (editors, `mv`, Ansible, Kubernetes ConfigMap volumes, which swap a
//! `..data` symlink) replace the inode, and a watch on the old inode would go silent. When the
//! path is a symlink, the directory of its target is watched as well. Access events (including
//! the ones our own reads cause) are ignored; everything else that touches the file's name, its
//! target's name or a `..`-prefixed entry wakes the reloader, which compares the file's sha256
//! with the config in force before doing anything.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// A live watch; dropping it stops watching.
pub struct FileWatch {
    _watcher: RecommendedWatcher,
    /// One message per burst of relevant events (the channel holds one; more coalesce).
    pub events: mpsc::Receiver<()>,
}

/// Start watching `path`.
pub fn watch(path: &Path) -> notify::Result<FileWatch> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut names: HashSet<OsString> = HashSet::new();
    let mut add = |p: &Path| {
        if let (Some(dir), Some(name)) = (p.parent(), p.file_name()) {
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
            names.insert(name.to_os_string());
        }
    };
    add(&path);
    if let Ok(target) = std::fs::canonicalize(&path) {
        add(&target);
    }
    let (tx, rx) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else {
            // A watcher error (e.g. queue overflow) may hide a change: check the file.
            let _ = tx.try_send(());
            return;
        };
        if relevant(&event, &names) {
            // Full channel = a check is already pending; it will see this change too.
            let _ = tx.try_send(());
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(FileWatch {
        _watcher: watcher,
        events: rx,
    })
}

fn relevant(event: &notify::Event, names: &HashSet<OsString>) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| names.contains(n) || n.to_str().is_some_and(|s| s.starts_with("..")))
    })
}
