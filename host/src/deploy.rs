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

use crate::config::{LibraryVersion, Loader, PluginEntry, Run};
use crate::error::{Error, ErrorKind};
use crate::plugin::Instance;
use crate::registry::Registry;
use crate::router::Router;
use std::collections::HashSet;
use std::fmt;

/// The plugins of a configuration, running, with every library version loaded for them.
///
/// [`reload`](Self::reload) takes the whole configuration, the first time as after every
/// change. A host swaps the router it returns in, lets the requests on the old router finish,
/// drops the old router, then stops [`Reload::retired`] (reverse order, with
/// [`Registry::close_and_stop_all`]). At the end, the host stops
/// [`registry`](Self::registry) the same way.
pub struct Deployment {
    loader: Loader,
    /// What runs, in configuration order; `registry` holds the same instances.
    running: Vec<Running>,
    registry: Registry,
    /// The most library versions no running plugin uses that may stay loaded.
    retained_limit: usize,
}

/// An entry that runs, with its file's version when it was loaded and its instance.
struct Running {
    entry: PluginEntry,
    content: Option<LibraryVersion>,
    instance: Instance,
}

/// What a successful [`Deployment::reload`] did.
pub struct Reload {
    /// The router of the new set, in the configuration's order; serve it from now on.
    pub router: Router,
    /// The instances the new set no longer has (removed or replaced), in the old order: stop
    /// them, in reverse, once the old router is drained and dropped
    /// ([`Registry::close_and_stop_all`]).
    pub retired: Registry,
    /// The names of the instances created for entries new to the configuration.
    pub added: Vec<String>,
    /// The names of the instances created anew for an entry of a name that ran before.
    pub replaced: Vec<String>,
    /// The names of the instances the new configuration no longer has.
    pub removed: Vec<String>,
    /// The names of the instances that go on running as they were.
    pub kept: Vec<String>,
}

impl Reload {
    /// The instance names that this reload added or replaced: the instances it started.
    pub fn started(&self) -> impl Iterator<Item = &str> {
        self.added.iter().chain(&self.replaced).map(String::as_str)
    }

    /// Whether it changed anything.
    pub fn changed(&self) -> bool {
        !(self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty())
    }
}

impl fmt::Debug for Reload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reload")
            .field("added", &self.added)
            .field("replaced", &self.replaced)
            .field("removed", &self.removed)
            .field("kept", &self.kept)
            .finish_non_exhaustive()
    }
}

/// `added a, b; replaced c; removed d; kept e`, leaving out what is empty, or `nothing
/// changed (kept ...)`.
impl fmt::Display for Reload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.changed() {
            f.write_str("nothing changed")?;
        }
        let mut first = self.changed();
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

    /// How many loaded library versions no running plugin uses: old code that stays mapped.
    pub fn retained(&self) -> usize {
        let in_use: HashSet<&LibraryVersion> = self
            .running
            .iter()
            .filter(|r| matches!(r.entry.run, Run::InProcess))
            .filter_map(|r| r.content.as_ref())
            .collect();
        self.loader
            .versions()
            .filter(|v| !in_use.contains(v))
            .count()
    }

    /// Makes `entries` (the whole configuration, read again) the running set: loads, creates
    /// and starts, in order, every entry that does not match a running one by its settings and
    /// its file's content, and builds the router of the new set (routes and hooks in the
    /// order of `entries`). Running instances that match keep running, whatever their place.
    ///
    /// If anything fails (a file refused, a `create` or `start` failing, two instances of one
    /// name, two routes in conflict, one library version too many), the instances this call
    /// started are stopped again in reverse order and nothing changes: the error names the
    /// entry's file and line (for entries from a configuration file) and the plugin.
    pub fn reload(&mut self, entries: &[PluginEntry]) -> Result<Reload, Error> {
        let contents = entries
            .iter()
            .map(PluginEntry::content)
            .collect::<Result<Vec<_>, _>>()?;
        self.check_retained(entries, &contents)?;
        // Each entry's running match, if any; a running instance matches one entry at most.
        let mut taken = vec![false; self.running.len()];
        let sha = |content: &Option<LibraryVersion>| content.as_ref().map(|(_, sha)| sha.clone());
        let matches: Vec<Option<Instance>> = entries
            .iter()
            .zip(&contents)
            .map(|(entry, content)| {
                // The same settings and the same content (wherever a link leads).
                let at = (0..self.running.len()).find(|&at| {
                    let running = &self.running[at];
                    !taken[at]
                        && same(&running.entry, entry)
                        && sha(&running.content) == sha(content)
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
            router,
            retired,
            added: Vec::new(),
            replaced: Vec::new(),
            removed: Vec::new(),
            kept: Vec::new(),
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
        let in_use: HashSet<_> = libraries().map(|(_, v)| v).collect();
        let retained = self
            .loader
            .versions()
            .filter(|v| !in_use.contains(v))
            .count();
        if retained <= self.retained_limit {
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
