//! `serve`'s reloads: on SIGHUP, and with `--watch` when the configuration or a plugin file
//! changes. One thread runs them one at a time, off the async workers (a reload loads libraries,
//! starts plugins and waits for the old router to drain); requests that arrive during one
//! coalesce into one more. A reload reads the configuration again, starts what changed
//! ([`Deployment::reload`]), swaps the new router in, lets the requests on the old one finish
//! (at most the grace period), then stops what was removed or replaced, in reverse order.

use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use parking_lot::{Condvar, Mutex};
use plugin_host::config::PluginEntry;
use plugin_host::limits::WATCH_DEBOUNCE;
use plugin_host::server::PluginService;
use plugin_host::{Deployment, Error, ErrorKind};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Reads the configuration: its entries, or why they cannot be read (naming FILE:LINE).
pub type Read = Box<dyn Fn() -> Result<Vec<PluginEntry>, Box<dyn std::error::Error>> + Send>;

/// What to read again at each reload, and where it lives.
pub struct Source {
    /// Reads the configuration.
    pub read: Read,
    /// The configuration file, or the plugin folder.
    pub path: PathBuf,
    /// Whether `path` is a plugin folder (any library added to it counts).
    pub folder: bool,
}

/// Asks for reloads; cheap to clone.
#[derive(Clone, Default)]
pub struct Trigger(Arc<(Mutex<Pending>, Condvar)>);

#[derive(Default)]
struct Pending {
    /// A reload was asked for since the last one started.
    asked: bool,
    /// The host is shutting down: no reload starts any more.
    closing: bool,
}

impl Trigger {
    /// Asks for a reload: one more runs after the one running, if any.
    pub fn reload(&self) {
        let (pending, wake) = &*self.0;
        pending.lock().asked = true;
        wake.notify_one();
    }

    /// Starts no reload from now on.
    pub fn close(&self) {
        let (pending, wake) = &*self.0;
        pending.lock().closing = true;
        wake.notify_one();
    }

    /// Waits for a request; false once closing.
    fn next(&self) -> bool {
        let (pending, wake) = &*self.0;
        let mut pending = pending.lock();
        while !pending.asked && !pending.closing {
            wake.wait(&mut pending);
        }
        pending.asked = false;
        !pending.closing
    }
}

/// The thread that runs the reloads; it owns the deployment while the host serves.
pub struct Reloader {
    trigger: Trigger,
    thread: JoinHandle<()>,
    deployment: Arc<Mutex<Deployment>>,
}

impl Reloader {
    /// Starts the reload thread, which runs a reload each time `trigger` asks, swapping the
    /// router of `service` and draining the old one for at most `grace`. With `watch`, changes
    /// to the configuration or to a file of the deployment's entries ask for a reload. If the
    /// thread cannot start, the deployment comes back with the error, for its plugins to be
    /// stopped.
    pub fn start(
        source: Source,
        deployment: Deployment,
        (service, grace): (PluginService, Duration),
        trigger: Trigger,
        mut watch: Option<Watch>,
    ) -> Result<Self, Box<(std::io::Error, Deployment)>> {
        if let Some(watch) = &mut watch {
            watch.refresh(deployment.entries());
        }
        let deployment = Arc::new(Mutex::new(deployment));
        let asked = trigger.clone();
        let owned = Arc::clone(&deployment);
        let spawned = std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || {
                while asked.next() {
                    let mut deployment = owned.lock();
                    let read = reload(&source, &mut deployment, &service, grace);
                    // After a failure, both what runs and what was read: a fix to either counts.
                    if let Some(watch) = &mut watch {
                        watch.refresh(deployment.entries().chain(read.iter().flatten()));
                    }
                }
            });
        match spawned {
            Ok(thread) => Ok(Self {
                trigger,
                thread,
                deployment,
            }),
            // The thread's closure, and its clone of the deployment, are gone with it.
            Err(error) => Err(Box::new((error, unwrap(deployment)))),
        }
    }

    /// Starts no more reloads, waits for the one running, if any, and gives the deployment back.
    pub fn stop(self) -> Deployment {
        self.trigger.close();
        self.thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        unwrap(self.deployment)
    }
}

/// The deployment, once the reload thread is gone.
fn unwrap(deployment: Arc<Mutex<Deployment>>) -> Deployment {
    match Arc::try_unwrap(deployment) {
        Ok(deployment) => deployment.into_inner(),
        Err(_) => unreachable!("the reload thread, which held the other reference, has ended"),
    }
}

/// Stops the instances that earlier reloads retired but could not stop, since a call still ran
/// in them ([`Deployment::stop_pending`]), and logs each one stopped. At a reload, one still
/// busy stays pending quietly; `at_shutdown`, it is an error. Returns the errors.
pub fn stop_pending(deployment: &mut Deployment, at_shutdown: bool) -> Vec<Error> {
    let mut errors = Vec::new();
    for (name, outcome) in deployment.stop_pending() {
        match outcome {
            Ok(()) => tracing::info!(
                plugin = name.as_str(),
                "stopped {name}, which a reload retired while a call still ran in it, now that \
                 the call has returned"
            ),
            Err(error) if !at_shutdown && matches!(error.kind(), ErrorKind::Busy { .. }) => {
                tracing::debug!(plugin = name.as_str(), "still busy: {error}");
            }
            Err(error) => errors.push(error),
        }
    }
    errors
}

/// What one reload did, as it is reported.
enum Outcome {
    /// It succeeded: what it did, and the instances it started (added or replaced).
    Done {
        summary: String,
        started: Vec<String>,
    },
    /// It failed and changed nothing: why, and the plugin the failure names, if any.
    Failed {
        message: String,
        plugin: Option<String>,
    },
}

/// Reports the outcome of one reload: one line in the log, and the reload counters of the
/// service's metrics, if it keeps them.
fn report(outcome: &Outcome, service: &PluginService) {
    match outcome {
        Outcome::Done { summary, started } => {
            tracing::info!(started = started.len(), "reload: {summary}");
            if let Some(metrics) = service.metrics() {
                let started: Vec<&str> = started.iter().map(String::as_str).collect();
                metrics.reloaded(true, &started);
            }
        }
        Outcome::Failed { message, plugin } => {
            tracing::error!(
                plugin = plugin.as_deref().unwrap_or("-"),
                "reload failed: {message}; the running plugins keep serving"
            );
            if let Some(metrics) = service.metrics() {
                metrics.reloaded(false, plugin.as_deref().as_slice());
            }
        }
    }
}

/// Runs one reload and reports it; the entries it read, when it could read them. First, it
/// stops what earlier reloads could not (their calls may have returned since).
fn reload(
    source: &Source,
    deployment: &mut Deployment,
    service: &PluginService,
    grace: Duration,
) -> Option<Vec<PluginEntry>> {
    for error in stop_pending(deployment, false) {
        tracing::error!("reload: {error}");
    }
    let entries = match (source.read)() {
        Ok(entries) => entries,
        Err(error) => {
            let failed = Outcome::Failed {
                message: error.to_string(),
                plugin: None,
            };
            report(&failed, service);
            return None;
        }
    };
    let reload = match deployment.reload(&entries) {
        Ok(reload) => reload,
        Err(error) => {
            let failed = Outcome::Failed {
                message: error.to_string(),
                plugin: error.plugin().map(str::to_owned),
            };
            report(&failed, service);
            return Some(entries);
        }
    };
    let summary = match deployment.retained() {
        0 => reload.to_string(),
        old => format!("{reload} ({old} old library version(s) stay loaded)"),
    };
    let started = reload.started().map(str::to_owned).collect();
    // Nothing changed, not even the order: the router serving goes on.
    if let Some(router) = reload.router {
        // New requests take the new router at once; those running finish on the old one, which
        // is dropped before what only it served is stopped (its leases keep them started).
        let drained = service.replace_router(router).drain(grace);
        let mut busy = Vec::new();
        for error in deployment.stop_retired(&reload.retired) {
            if matches!(error.kind(), ErrorKind::Busy { .. }) {
                busy.push(error.plugin().unwrap_or("-").to_owned());
                tracing::warn!(
                    "reload: {error}; it stays started, out of service, until its call returns, \
                     and is stopped at the next reload or when the host stops (raise --grace to \
                     let calls finish within a reload)"
                );
            } else {
                tracing::error!("reload: {error}");
            }
        }
        if !drained {
            let still = match busy.is_empty() {
                true => "none in a plugin it retired that runs in this process".to_owned(),
                false => format!(
                    "in {}, left started until their calls return",
                    busy.join(", ")
                ),
            };
            tracing::warn!(
                "reload: requests still ran on the old router after {grace:?} ({still}); raise \
                 --grace to give them longer"
            );
        }
    }
    report(&Outcome::Done { summary, started }, service);
    Some(entries)
}

/// Watches the configuration (or the plugin folder) and the files of the entries: their
/// folders, without recursion, since editors and builds replace a file by renaming another
/// over it.
pub struct Watch {
    debouncer: Debouncer<RecommendedWatcher>,
    /// The folders watched.
    folders: BTreeSet<PathBuf>,
    /// The files whose changes count, with what they were when last seen, and the plugin folder,
    /// if any, a change of any file in which counts.
    files: Arc<Mutex<Seen>>,
    /// The configuration file, or the plugin folder.
    source: PathBuf,
    folder: bool,
}

impl Watch {
    /// A watcher that asks `trigger` for a reload when a file it watches changes; it watches
    /// `source` once [`refresh`](Self::refresh)ed.
    pub fn new(source: &Source, trigger: Trigger) -> std::io::Result<Self> {
        let files = Arc::new(Mutex::new((BTreeMap::new(), None)));
        let seen = Arc::clone(&files);
        let debouncer = new_debouncer(WATCH_DEBOUNCE, move |events: DebounceEventResult| {
            let events = match events {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!("--watch: {error}");
                    return;
                }
            };
            // The watcher reports reads too (a reload opens every file it compares): only a
            // file that is not what it was when last seen counts.
            let relevant = {
                let mut seen = seen.lock();
                let (files, folder) = &mut *seen;
                let mut changed = false;
                for event in &events {
                    let path = &event.path;
                    if files.contains_key(path) || folder.as_deref() == path.parent() {
                        let now = stamp(path);
                        changed |= files.insert(path.clone(), now) != Some(now);
                    }
                }
                changed
            };
            if relevant {
                trigger.reload();
            }
        })
        .map_err(std::io::Error::other)?;
        Ok(Self {
            debouncer,
            folders: BTreeSet::new(),
            files,
            source: absolute(&source.path),
            folder: source.folder,
        })
    }

    /// Watches the source and the files of `entries`, and no more.
    fn refresh<'a>(&mut self, entries: impl IntoIterator<Item = &'a PluginEntry>) {
        let mut files = BTreeMap::new();
        let mut add = |path: &Path| {
            let path = absolute(path);
            files.insert(path.clone(), stamp(&path));
            // A link's target changes without the link.
            if let Ok(resolved) = std::fs::canonicalize(&path) {
                files.insert(resolved.clone(), stamp(&resolved));
            }
        };
        if !self.folder {
            add(&self.source);
        }
        // A `command` is looked up on PATH: there is no file of its own to watch.
        for file in entries.into_iter().filter_map(PluginEntry::file) {
            add(file);
        }
        let mut folders: BTreeSet<PathBuf> = files
            .keys()
            .filter_map(|file| file.parent().map(Path::to_path_buf))
            .collect();
        if self.folder {
            folders.insert(self.source.clone());
            let listed = std::fs::read_dir(&self.source)
                .into_iter()
                .flatten()
                .flatten();
            for entry in listed {
                files.insert(entry.path(), stamp(&entry.path()));
            }
        }
        let watcher = self.debouncer.watcher();
        for gone in self.folders.difference(&folders) {
            let _ = watcher.unwatch(gone);
        }
        // A folder that cannot be watched now is tried again at the next refresh.
        let mut watched: BTreeSet<PathBuf> = self.folders.intersection(&folders).cloned().collect();
        for new in folders.difference(&self.folders) {
            match watcher.watch(new, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(new.clone());
                }
                Err(error) => tracing::warn!("--watch: cannot watch {}: {error}", new.display()),
            }
        }
        self.folders = watched;
        *self.files.lock() = (files, self.folder.then(|| self.source.clone()));
    }
}

/// The watched files, with what each was when last seen, and the plugin folder, if any.
type Seen = (BTreeMap<PathBuf, Option<Stamp>>, Option<PathBuf>);

/// What a watched file is: its size, modification time and inode; `None` when it is missing.
type Stamp = (u64, Option<std::time::SystemTime>, u64);

/// The [`Stamp`] of `path` now.
fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.len(), meta.modified().ok(), inode))
}

/// `path` made absolute, as the watcher reports paths.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
