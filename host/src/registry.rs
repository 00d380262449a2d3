//! The two registries: named factories, and named instances in insertion order.

use crate::error::{Error, ErrorKind, Errors};
use crate::plugin::{Factory, Instance, State};
use crate::router::Router;
use indexmap::IndexMap;
use parking_lot::RwLock;
use std::path::Path;

/// Factories by name. Each factory can create any number of instances, each with its own name
/// and configuration.
#[derive(Default)]
pub struct FactoryRegistry {
    factories: RwLock<IndexMap<String, Factory>>,
}

impl FactoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `factory` under `name`; a name already taken is an error.
    pub fn register(&self, name: &str, factory: Factory) -> Result<(), Error> {
        let mut factories = self.factories.write();
        if factories.contains_key(name) {
            return Err(Error::new(ErrorKind::Duplicate {
                what: "factory",
                name: name.to_owned(),
            })
            .with_file(factory.file())
            .with_plugin(factory.name()));
        }
        factories.insert(name.to_owned(), factory);
        Ok(())
    }

    /// Loads the library at `path` and registers it under the plugin's own name.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Factory, Error> {
        let factory = Factory::load(path)?;
        self.register(factory.name(), factory.clone())?;
        Ok(factory)
    }

    /// The factory registered as `name`.
    pub fn get(&self, name: &str) -> Option<Factory> {
        self.factories.read().get(name).cloned()
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> Vec<String> {
        self.factories.read().keys().cloned().collect()
    }

    /// Creates an instance called `instance` of the factory `factory`, with `config`.
    pub fn create(
        &self,
        factory: &str,
        instance: &str,
        config: &serde_json::Value,
    ) -> Result<Instance, Error> {
        let found = self.get(factory).ok_or_else(|| {
            Error::new(ErrorKind::Unknown {
                what: "factory",
                name: factory.to_owned(),
            })
        })?;
        found.create(instance, config)
    }
}

/// For an instance in a child process, runs its [`Instance::close_and_stop`] on a thread of
/// `scope`; `None` for an in-process instance, or when no thread could be started.
fn stop_on_thread<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    instance: &'s Instance,
) -> Option<std::thread::ScopedJoinHandle<'s, Result<(), Error>>> {
    instance.process()?;
    std::thread::Builder::new()
        .name(format!("stop:{}", instance.name().replace('\0', "")))
        .spawn_scoped(scope, || instance.close_and_stop())
        .map_err(|e| {
            tracing::warn!(
                "cannot start a thread to stop plugin `{}` ({e}): it is stopped in turn with the \
                 in-process plugins",
                instance.name()
            );
        })
        .ok()
}

/// Instances by name, in insertion order: started in that order, stopped in reverse, and routed
/// in that order. Built-in and loaded plugins register alike.
#[derive(Default)]
pub struct Registry {
    instances: RwLock<IndexMap<String, Instance>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `instance` under its name; a name already taken is an error.
    pub fn register(&self, instance: Instance) -> Result<(), Error> {
        let mut instances = self.instances.write();
        if instances.contains_key(instance.name()) {
            return Err(Error::new(ErrorKind::Duplicate {
                what: "plugin",
                name: instance.name().to_owned(),
            })
            .with_file(instance.file())
            .with_plugin(instance.name()));
        }
        instances.insert(instance.name().to_owned(), instance);
        Ok(())
    }

    /// Removes the instance `name` and returns it (keeping the others' order).
    pub fn unregister(&self, name: &str) -> Result<Instance, Error> {
        self.instances.write().shift_remove(name).ok_or_else(|| {
            Error::new(ErrorKind::Unknown {
                what: "plugin",
                name: name.to_owned(),
            })
        })
    }

    /// The instance `name`.
    pub fn get(&self, name: &str) -> Option<Instance> {
        self.instances.read().get(name).cloned()
    }

    /// The names, in insertion order.
    pub fn names(&self) -> Vec<String> {
        self.instances.read().keys().cloned().collect()
    }

    /// The instances, in insertion order.
    pub fn instances(&self) -> Vec<Instance> {
        self.instances.read().values().cloned().collect()
    }

    /// Starts every `Created` instance in insertion order. If one fails, the instances this
    /// call started are stopped again in reverse order, and every error (the start failure
    /// first, then any stop failure) is returned.
    pub fn start_all(&self) -> Result<(), Errors> {
        let mut started = Vec::new();
        for instance in self.instances() {
            if instance.state() != State::Created {
                continue;
            }
            if let Err(e) = instance.start() {
                let mut errors = vec![e];
                errors.extend(
                    started
                        .iter()
                        .rev()
                        .filter_map(|i: &Instance| i.stop().err()),
                );
                return Err(Errors(errors));
            }
            started.push(instance);
        }
        Ok(())
    }

    /// Stops every `Started` instance in reverse insertion order, and returns every error.
    pub fn stop_all(&self) -> Result<(), Errors> {
        self.stop_each(Instance::stop)
    }

    /// Stops every `Started` instance with [`Instance::close_and_stop`]: unlike
    /// [`stop_all`](Self::stop_all), an instance stops even while routers still hold it. An
    /// in-process instance whose handler is running stays started and is reported with
    /// [`ErrorKind::Busy`](crate::ErrorKind::Busy), naming the routes; an instance in a child
    /// process is stopped whatever runs in it (its process is ended within its stop timeout,
    /// and the calls waiting for it fail). Returns every error, in reverse insertion order.
    /// A server calls this once its grace period is over.
    ///
    /// In-process instances stop in reverse insertion order, on this thread. Instances in child
    /// processes stop together, each on a thread of its own (started in reverse insertion
    /// order), since a busy child can take its whole stop timeout and SIGTERM's grace to end:
    /// the whole takes at most the longest of them, not their sum.
    pub fn close_and_stop_all(&self) -> Result<(), Errors> {
        let started: Vec<Instance> = self
            .instances()
            .into_iter()
            .rev()
            .filter(|i| i.state() == State::Started)
            .collect();
        let results: Vec<Result<(), Error>> = std::thread::scope(|scope| {
            // Each child's stop sequence on a thread of its own, all started first...
            let threads: Vec<_> = started
                .iter()
                .map(|instance| stop_on_thread(scope, instance))
                .collect();
            // ...then the in-process instances (and a child whose thread did not start), in turn.
            let mut results: Vec<_> = started
                .iter()
                .zip(&threads)
                .map(|(instance, thread)| thread.is_none().then(|| instance.close_and_stop()))
                .collect();
            for (result, thread) in results.iter_mut().zip(threads) {
                if let Some(thread) = thread {
                    let stopped = thread.join();
                    *result =
                        Some(stopped.unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
                }
            }
            results.into_iter().flatten().collect()
        });
        let errors: Vec<Error> = results.into_iter().filter_map(Result::err).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Errors(errors))
        }
    }

    /// Calls `stop` on every `Started` instance in reverse insertion order; every error.
    fn stop_each(&self, stop: fn(&Instance) -> Result<(), Error>) -> Result<(), Errors> {
        let errors: Vec<Error> = self
            .instances()
            .iter()
            .rev()
            .filter(|i| i.state() == State::Started)
            .filter_map(|i| stop(i).err())
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Errors(errors))
        }
    }

    /// A router serving the routes of every started instance, collected in insertion order.
    /// While it lives, those instances cannot be stopped.
    pub fn router(&self) -> Result<Router, Error> {
        let started: Vec<Instance> = self
            .instances()
            .into_iter()
            .filter(|i| i.state() == State::Started)
            .collect();
        Router::build(&started)
    }
}
