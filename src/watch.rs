//! The config file watcher: a cancellable background task that reloads the
//! config when the file changes on disk.
//!
//! Editors and Kubernetes rarely write a file in place: vim and VS Code save
//! by writing a temporary file and renaming it over the old one, and a
//! ConfigMap volume swaps a `..data` symlink to a fresh directory. A watch on
//! the file itself dies with the first rename, so we watch the file's
//! *parent directory* (plus the directory of the file's resolved target when
//! it is a symlink elsewhere) and keep only events that name the config file
//! or a `..data` swap. Events are debounced (a save is several events), the
//! watch is re-armed after every batch (picking up a replaced directory or a
//! new symlink target), and nothing here ever ends the task except the stop
//! token: a broken edit, a watch error or a briefly missing file is logged
//! and the watcher carries on.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::App;

/// Quiet time after the last relevant event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// Upper bound on how long a stream of events can postpone a reload.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// How long a file that vanished (mid-rename) may stay missing before the
/// reload is attempted anyway and reported as a failure.
const MISSING_GRACE: Duration = Duration::from_secs(1);
/// Pause before retrying a watch that could not be set up.
const RETRY: Duration = Duration::from_secs(1);

/// Why a watch could not be set up (logged, then retried).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot start a file watcher: {0}")]
    Init(#[source] notify::Error),
    #[error("cannot watch directory {dir}: {source}")]
    Watch { dir: PathBuf, source: notify::Error },
}

/// What to watch for one config path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Targets {
    /// Directories to watch, non-recursively.
    dirs: Vec<PathBuf>,
    /// Paths whose events matter: the config path, its symlink target, and
    /// the ConfigMap `..data` link beside the config path.
    paths: Vec<PathBuf>,
}

impl Targets {
    fn for_path(config: &Path) -> Targets {
        let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
        let dir = config.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let mut t = Targets { dirs: vec![dir.clone()], paths: vec![config.clone(), dir.join("..data")] };
        // A symlink to a file in another directory: watch that one too, so
        // in-place edits of the target are seen.
        if let Ok(real) = std::fs::canonicalize(&config) {
            if let Some(real_dir) = real.parent() {
                let canonical_dir = std::fs::canonicalize(&dir).unwrap_or(dir);
                if real_dir != canonical_dir {
                    t.dirs.push(real_dir.to_path_buf());
                }
            }
            if real != config {
                t.paths.push(real);
            }
        }
        t
    }

    fn is_relevant(&self, event: &Event) -> bool {
        use notify::event::{AccessKind, AccessMode};
        let kind_matters = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        kind_matters && event.paths.iter().any(|p| self.paths.iter().any(|t| t == p))
    }
}

/// Start the watcher task for `path`; it runs until `stop` is cancelled.
pub fn spawn(app: Arc<App>, path: PathBuf, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(app, path, stop))
}

/// Signals from the notify thread: an event batch or a watch error.
type Signal = notify::Result<Event>;

fn arm(targets: &Targets, tx: &mpsc::Sender<Signal>) -> Result<RecommendedWatcher, WatchError> {
    let tx = tx.clone();
    // Runs on notify's thread. A full channel already holds a pending
    // "something changed", so dropping the surplus loses nothing.
    let mut watcher = notify::recommended_watcher(move |res: Signal| {
        let _ = tx.try_send(res);
    })
    .map_err(WatchError::Init)?;
    let mut dirs = targets.dirs.iter();
    if let Some(main) = dirs.next() {
        watcher
            .watch(main, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch { dir: main.clone(), source })?;
    }
    for extra in dirs {
        if let Err(e) = watcher.watch(extra, RecursiveMode::NonRecursive) {
            tracing::debug!(dir = %extra.display(), error = %e, "cannot watch the config symlink target's directory");
        }
    }
    Ok(watcher)
}

/// Arm a watch, retrying until it works or `stop` fires.
async fn arm_until_ok(path: &Path, tx: &mpsc::Sender<Signal>, stop: &CancellationToken) -> Option<RecommendedWatcher> {
    loop {
        let targets = Targets::for_path(path);
        match arm(&targets, tx) {
            Ok(w) => return Some(w),
            Err(e) => tracing::error!(error = %e, "config watch failed; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

async fn run(app: Arc<App>, path: PathBuf, stop: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<Signal>(64);
    // Dropping the watcher ends its watch, so it is held for the loop's life.
    let Some(mut _watch) = arm_until_ok(&path, &tx, &stop).await else { return };
    let mut last_seen = fingerprint(&path).await;
    tracing::info!(path = %path.display(), "watching config file for changes");
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            s = rx.recv() => s,
        };
        let Some(first) = first else { return };
        let mut relevant = is_relevant(&path, &first);
        let mut broken = first.is_err();
        // Debounce: wait for a quiet spell, bounded by MAX_DELAY.
        let deadline = tokio::time::Instant::now() + MAX_DELAY;
        loop {
            let quiet = tokio::time::sleep(DEBOUNCE);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = quiet => break,
                s = rx.recv() => match s {
                    Some(s) => {
                        relevant |= is_relevant(&path, &s);
                        broken |= s.is_err();
                    }
                    None => return,
                },
            }
        }
        if relevant {
            if !wait_for_file(&path, &stop).await {
                return;
            }
            let now = fingerprint(&path).await;
            // Unchanged since the watcher's last reload, and nothing (a
            // SIGHUP while the file was away) failed since: nothing to do.
            if now.is_some() && now == last_seen && app.last_reload().ok {
                tracing::debug!("config file touched but unchanged; not reloading");
            } else {
                tracing::info!(path = %path.display(), "config file changed: reloading");
                // Success and failure are both logged, counted and recorded
                // by `App::reload`; the watcher carries on either way.
                let _ = app.reload().await;
                last_seen = now;
            }
        }
        if relevant || broken {
            // Re-arm: a new watcher before dropping the old one, so no
            // window without a watch; picks up a replaced directory or a
            // changed symlink target.
            let Some(next) = arm_until_ok(&path, &tx, &stop).await else { return };
            _watch = next;
        }
    }
}

fn is_relevant(path: &Path, signal: &Signal) -> bool {
    match signal {
        Ok(event) => Targets::for_path(path).is_relevant(event),
        Err(e) => {
            tracing::warn!(error = %e, "config watch reported an error; re-arming");
            false
        }
    }
}

/// Wait up to [`MISSING_GRACE`] for a file that is mid-rename to appear.
/// Returns false only when `stop` fired.
async fn wait_for_file(path: &Path, stop: &CancellationToken) -> bool {
    let deadline = tokio::time::Instant::now() + MISSING_GRACE;
    while !tokio::fs::try_exists(path).await.unwrap_or(false) && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    true
}

/// A cheap content fingerprint, to skip reloads for saves that changed
/// nothing. `None` when the file cannot be read.
async fn fingerprint(path: &Path) -> Option<u64> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    fn ev(kind: EventKind, p: &Path) -> Event {
        Event::new(kind).add_path(p.to_path_buf())
    }

    #[test]
    fn only_the_config_file_and_configmap_swaps_are_relevant() {
        let t = Targets::for_path(Path::new("/nonexistent/dir/rampart.toml"));
        let dir = Path::new("/nonexistent/dir");
        assert!(t.is_relevant(&ev(EventKind::Modify(ModifyKind::Any), &dir.join("rampart.toml"))));
        assert!(t.is_relevant(&ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &dir.join("rampart.toml"))));
        assert!(t.is_relevant(&ev(EventKind::Create(CreateKind::Any), &dir.join("..data"))));
        assert!(!t.is_relevant(&ev(EventKind::Create(CreateKind::Any), &dir.join(".rampart.toml.swp"))));
        assert!(!t.is_relevant(&ev(EventKind::Modify(ModifyKind::Any), &dir.join("other.toml"))));
        assert!(!t.is_relevant(&ev(
            EventKind::Access(notify::event::AccessKind::Open(notify::event::AccessMode::Any)),
            &dir.join("rampart.toml")
        )));
    }

    #[test]
    fn a_relative_path_is_watched_through_an_absolute_directory() {
        let t = Targets::for_path(Path::new("rampart.toml"));
        assert!(t.dirs[0].is_absolute());
        assert!(t.paths[0].ends_with("rampart.toml"));
    }
}
