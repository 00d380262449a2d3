//! A running configuration, and its reload: load, create and start only what changed, build the
//! new router, and say what to stop once it serves.
//!
//! An entry is unchanged when it says the same thing as one that runs (every setting, wherever
//! in the file it is written) and its file has the same content (SHA-256): the library, or a
//! program's `exec` file. An unchanged entry keeps its running instance; any other is created
//! and started anew, before anything is stopped. A library is loaded from a private copy of its
//! content (see [`Loader`]), so a new version of a file, even written over in place, loads as
//! new code.
//!
//! Unloading a Rust, Go or C++ library has no sound form (a thread-local destructor or a
//! runtime may run its code after `dlclose`), so a [`Deployment`] keeps every version of an
//! in-process library it loaded mapped while it lives; a reload back to a version seen before
//! uses it again. How many of them no running plugin uses is bounded by
//! [`RETAINED_LIBRARIES`](crate::limits::RETAINED_LIBRARIES). A plugin run isolated (in a
//! child process) leaves nothing behind: its process ends when it is stopped.
//!
//! An in-process instance is never stopped under a running call: one that a reload retired
//! while a call still ran in it (past the drain's grace) stays started, off every router, until
//! a later reload or the host's end stops it ([`Deployment::stop_retired`],
//! [`Deployment::stop_pending`]).

use crate::config::{LibraryVersion, Loader, PluginEntry, Run};
use crate::error::{Error, ErrorKind};
use crate::plugin::{Instance, State};
use crate::registry::Registry;
use crate::router::Router;
use std::collections::HashSet;
use std::fmt;

/// The plugins of a configuration, running, with every library version loaded for them.
///
/// [`reload`](Self::reload) takes the whole configuration, the first time as after every
/// change. A host swaps the router it returns in (if any), lets the requests on the old router
/// finish, drops the old router, then stops [`Reload::retired`] with
/// [`stop_retired`](Self::stop_retired), and what earlier reloads could not stop with
/// [`stop_pending`](Self::stop_pending). At the end, the host stops
/// [`registry`](Self::registry) with [`Registry::close_and_stop_all`], then the pending ones.
pub struct Deployment {
    loader: Loader,
    /// What runs, in configuration order; `registry` holds the same instances.
    running: Vec<Running>,
    registry: Registry,
    /// The most library versions no running plugin uses that may stay loaded.
    retained_limit: usize,
    /// Retired in-process instances whose `stop` was refused because a call still ran in them:
    /// out of every router, started until a later attempt stops them.
    pending: Vec<Instance>,
}

/// An entry that runs, with its file's version when it was loaded and its instance.
struct Running {
    entry: PluginEntry,
    content: Option<LibraryVersion>,
    instance: Instance,
}

/// What a successful [`Deployment::reload`] did.
pub struct Reload {
    /// The router of the new set, in the configuration's order; serve it from now on. `None`
    /// when nothing changed, not even the order: the router serving goes on serving (a new one
    /// would start its routes' pacing and metric handles over).
    pub router: Option<Router>,
    /// The instances the new set no longer has (removed or replaced), in the old order: stop
    /// them once the old router is drained and dropped ([`Deployment::stop_retired`]).
    pub retired: Registry,
    /// The names of the instances created for entries new to the configuration.
    pub added: Vec<String>,
    /// The names of the instances created anew for an entry of a name that ran before.
    pub replaced: Vec<String>,
    /// The names of the instances the new configuration no longer has.
    pub removed: Vec<String>,
    /// The names of the instances that go on running as they were.
    pub kept: Vec<String>,
    /// Whether the entries kept are all there is, in a new order (routes and hooks follow it).
    pub reordered: bool,
}

impl Reload {
    /// The instance names that this reload added or replaced: the instances it started.
    pub fn started(&self) -> impl Iterator<Item = &str> {
        self.added.iter().chain(&self.replaced).map(String::as_str)
    }

    /// Whether it changed anything: an instance added, replaced or removed, or the order.
    pub fn changed(&self) -> bool {
        self.reordered
            || !(self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty())
    }
}

impl fmt::Debug for Reload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reload")
            .field("added", &self.added)
            .field("replaced", &self.replaced)
            .field("removed", &self.removed)
            .field("kept", &self.kept)
            .field("reordered", &self.reordered)
            .finish_non_exhaustive()
    }
}

/// `added a, b; replaced c; removed d; kept e`, leaving out what is empty; `reordered; kept
/// ...` when only the order changed; `nothing changed; kept ...` when nothing did.
impl fmt::Display for Reload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let only = if !self.changed() {
            Some("nothing changed")
        } else if self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty() {
            Some("reordered")
        } else {
            None
        };
        if let Some(only) = only {
            f.write_str(only)?;
        }
        let mut first = only.is_none();
        for (what, names) in [
            ("added", &self.added),
            ("replaced", &self.replaced),
            ("removed", &self.removed),
            ("kept", &self.kept),
        ] {
            if names.is_empty() {
                continue;
            }
            let names = names.join(", ");
            match first {
                true => write!(f, "{what} {names}")?,
                false => write!(f, "; {what} {names}")?,
            }
            first = false;
        }
        Ok(())
    }
}

impl Deployment {
    /// Nothing running yet; `allow_insecure_permissions` is passed on to the [`Loader`].
    pub fn new(allow_insecure_permissions: bool) -> Self {
        Self {
            loader: Loader::new(allow_insecure_permissions),
            running: Vec::new(),
            registry: Registry::new(),
            retained_limit: crate::limits::RETAINED_LIBRARIES,
            pending: Vec::new(),
        }
    }

    /// Sets how many library versions that no running plugin uses may stay loaded (default
    /// [`RETAINED_LIBRARIES`](crate::limits::RETAINED_LIBRARIES)).
    pub fn with_retained_limit(mut self, limit: usize) -> Self {
        self.retained_limit = limit;
        self
    }

    /// The running instances, in configuration order.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The entries that run, in configuration order.
    pub fn entries(&self) -> impl Iterator<Item = &PluginEntry> {
        self.running.iter().map(|running| &running.entry)
    }

    /// How many loaded library versions no running plugin uses: old code that stays mapped
    /// (versions loaded for a reload that failed included: see [`Loader`]).
    pub fn retained(&self) -> usize {
        let in_use = self
            .running
            .iter()
            .filter(|r| matches!(r.entry.run, Run::InProcess))
            .filter_map(|r| r.content.as_ref());
        self.unused(in_use)
    }

    /// How many loaded library versions are not among `in_use`.
    fn unused<'a>(&self, in_use: impl Iterator<Item = &'a LibraryVersion>) -> usize {
        let in_use: HashSet<&LibraryVersion> = in_use.collect();
        self.loader
            .versions()
            .filter(|v| !in_use.contains(v))
            .count()
    }

    /// Stops `retired` (the instances a reload retired, once its old router is drained and
    /// dropped), in reverse order, with [`Registry::close_and_stop_all`]; returns its errors.
    /// An in-process instance that a call still runs in is not stopped
    /// ([`ErrorKind::Busy`]): it stays started, out of every router, until its call returns,
    /// and is kept here for [`stop_pending`](Self::stop_pending) to stop later.
    pub fn stop_retired(&mut self, retired: &Registry) -> Vec<Error> {
        let errors = retired
            .close_and_stop_all()
            .err()
            .map_or_else(Vec::new, |errors| errors.0);
        let busy = retired
            .instances()
            .into_iter()
            .filter(|instance| instance.state() == State::Started);
        self.pending.extend(busy);
        errors
    }

    /// Stops again, newest first, the retired instances that [`stop_retired`](Self::stop_retired)
    /// could not stop; the name and outcome of each. One whose call still runs stays pending
    /// (its outcome is [`ErrorKind::Busy`]); the others leave the list, stopped or failed. A
    /// host calls this at each reload, and at its end, after stopping the
    /// [`registry`](Self::registry).
    pub fn stop_pending(&mut self) -> Vec<(String, Result<(), Error>)> {
        let mut outcomes = Vec::new();
        let mut still = Vec::new();
        for instance in self.pending.drain(..).rev() {
            let outcome = instance.close_and_stop();
            outcomes.push((instance.name().to_owned(), outcome));
            if instance.state() == State::Started {
                still.push(instance);
            }
        }
        still.reverse();
        self.pending = still;
        outcomes
    }

    /// Makes `entries` (the whole configuration, read again) the running set: loads, creates
    /// and starts, in order, every entry that does not match a running one by its settings and
    /// its file's content, and builds the router of the new set (routes and hooks in the
    /// order of `entries`). Running instances that match keep running, whatever their place.
    ///
    /// When every entry matches the running one at its place, nothing is built: the reload has
    /// no router ([`Reload::router`]), and the one serving goes on.
    ///
    /// If anything fails (a file refused, a `create` or `start` failing, two instances of one
    /// name, two routes in conflict, one library version too many, a new version of a Go
    /// library), the instances this call started are stopped again in reverse order and
    /// nothing changes (but for the library versions it loaded, which stay mapped: see
    /// [`Loader`]): the error names the entry's file and line (for entries from a
    /// configuration file) and the plugin.
    pub fn reload(&mut self, entries: &[PluginEntry]) -> Result<Reload, Error> {
        let contents = entries
            .iter()
            .map(PluginEntry::content)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(unchanged) = self.unchanged(entries, &contents) {
            return Ok(unchanged);
        }
        self.check_retained(entries, &contents)?;
        // Each entry's running match, if any; a running instance matches one entry at most.
        let mut taken = vec![false; self.running.len()];
        let matches: Vec<Option<Instance>> = entries
            .iter()
            .zip(&contents)
            .map(|(entry, content)| {
                // The same settings and the same content.
                let at = (0..self.running.len()).find(|&at| {
                    let running = &self.running[at];
                    !taken[at]
                        && same(&running.entry, entry)
                        && same_content(&running.content, content)
                })?;
                taken[at] = true;
                Some(self.running[at].instance.clone())
            })
            .collect();
        let mut started = Vec::new();
        let built = self.build(entries, &contents, &matches, &mut started);
        let (registry, router) = match built {
            Ok(built) => built,
            Err(error) => {
                for instance in started.iter().rev() {
                    if let Err(stop) = instance.stop() {
                        tracing::error!("stopping what a failed reload started: {stop}");
                    }
                }
                return Err(error);
            }
        };
        let retired = Registry::new();
        let mut removed = Vec::new();
        let gone = self.running.iter().zip(taken).filter(|(_, taken)| !taken);
        for (running, _) in gone {
            removed.push(running.instance.name().to_owned());
            // Names are unique in the old set.
            let _ = retired.register(running.instance.clone());
        }
        let mut reload = Reload {
            router: Some(router),
            retired,
            added: Vec::new(),
            replaced: Vec::new(),
            removed: Vec::new(),
            kept: Vec::new(),
            reordered: false,
        };
        for (instance, kept) in registry.instances().iter().zip(&matches) {
            let name = instance.name().to_owned();
            if kept.is_some() {
                reload.kept.push(name);
            } else if let Some(at) = removed.iter().position(|n| *n == name) {
                reload.replaced.push(removed.remove(at));
            } else {
                reload.added.push(name);
            }
        }
        reload.removed = removed;
        // Not every entry is at its place (see `unchanged`): if none was added, replaced or
        // removed, they were moved.
        reload.reordered = !reload.changed();
        self.running = entries
            .iter()
            .zip(contents)
            .zip(registry.instances())
            .map(|((entry, content), instance)| Running {
                entry: entry.clone(),
                content,
                instance,
            })
            .collect();
        self.registry = registry;
        Ok(reload)
    }

    /// The reload of `entries` (whose files' versions are `contents`) when each is the running
    /// one at its place, the same settings and content: it keeps them all, and builds nothing.
    fn unchanged(
        &mut self,
        entries: &[PluginEntry],
        contents: &[Option<LibraryVersion>],
    ) -> Option<Reload> {
        let same_places =
            entries.len() == self.running.len()
                && self.running.iter().zip(entries).zip(contents).all(
                    |((running, entry), content)| {
                        same(&running.entry, entry) && same_content(&running.content, content)
                    },
                );
        if !same_places {
            return None;
        }
        // Where each is written may have moved: errors point at the new places.
        for (running, entry) in self.running.iter_mut().zip(entries) {
            running.entry = entry.clone();
        }
        Some(Reload {
            router: None,
            retired: Registry::new(),
            added: Vec::new(),
            replaced: Vec::new(),
            removed: Vec::new(),
            kept: self
                .running
                .iter()
                .map(|r| r.instance.name().to_owned())
                .collect(),
            reordered: false,
        })
    }

    /// The registry and router of `entries`, whose files' versions are `contents` and running
    /// matches `matches`: creates and starts the others in order, adding each started one to
    /// `started`.
    fn build(
        &mut self,
        entries: &[PluginEntry],
        contents: &[Option<LibraryVersion>],
        matches: &[Option<Instance>],
        started: &mut Vec<Instance>,
    ) -> Result<(Registry, Router), Error> {
        let registry = Registry::new();
        for ((entry, content), kept) in entries.iter().zip(contents).zip(matches) {
            let instance = match kept {
                Some(instance) => instance.clone(),
                None => {
                    let instance = self.loader.instantiate_version(entry, content.clone())?;
                    instance.start().map_err(|e| entry.locate(e))?;
                    started.push(instance.clone());
                    instance
                }
            };
            registry.register(instance).map_err(|e| entry.locate(e))?;
        }
        let router = registry.router().map_err(|error| {
            // A conflict names the plugin whose route came second: point at its entry.
            let named = error.plugin().map(str::to_owned);
            let entry = registry
                .instances()
                .iter()
                .position(|i| Some(i.name()) == named.as_deref())
                .map(|at| &entries[at]);
            match entry {
                Some(entry) => entry.locate(error),
                None => error,
            }
        })?;
        Ok((registry, router))
    }

    /// Refuses a reload that would load a library version while more than the limit of
    /// versions no plugin of `entries` uses stay loaded.
    fn check_retained(
        &self,
        entries: &[PluginEntry],
        contents: &[Option<LibraryVersion>],
    ) -> Result<(), Error> {
        let libraries = || {
            entries
                .iter()
                .zip(contents)
                .filter(|(entry, _)| matches!(entry.run, Run::InProcess))
                .filter_map(|(entry, content)| Some((entry, content.as_ref()?)))
        };
        let Some((first_new, _)) = libraries().find(|(_, v)| !self.loader.has(v)) else {
            return Ok(());
        };
        if self.unused(libraries().map(|(_, v)| v)) <= self.retained_limit {
            return Ok(());
        }
        let error = Error::new(ErrorKind::TooManyLibraries {
            limit: self.retained_limit,
        });
        Err(first_new.locate(error.with_file(Some(&first_new.path))))
    }
}

/// Whether two entries say the same thing, wherever they are written.
fn same(a: &PluginEntry, b: &PluginEntry) -> bool {
    let bare = |entry: &PluginEntry| PluginEntry {
        source: None,
        ..entry.clone()
    };
    bare(a) == bare(b)
}

/// Whether two versions of entries' files have the same content, wherever a link leads.
fn same_content(a: &Option<LibraryVersion>, b: &Option<LibraryVersion>) -> bool {
    a.as_ref().map(|(_, sha)| sha) == b.as_ref().map(|(_, sha)| sha)
}
