//! Factories (validated descriptors) and instances with their lifecycle state machine.

use crate::error::{Error, ErrorKind, PluginText};
use crate::ffi::{Descriptor, RawInstance, RouteDef};
use crate::gate::{self, Gate};
use crate::hook::{
    ConnectVerdict, Connection, ConnectionStats, HookScope, HookSet, RequestVerdict, ResponseEdit,
};
use crate::inspect::{self, Inspection};
use crate::message::{Request, Response};
use crate::process::{ChildState, Mode, Remote, RouteSpec};
use crate::trust;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A plugin ready to create instances: a loaded library's validated descriptor, or a plugin
/// type compiled into the application. Cheap to clone; keeps the library loaded.
#[derive(Clone)]
pub struct Factory {
    descriptor: Arc<Descriptor>,
    inspection: Option<Inspection>,
}

/// How [`Factory::load_with`] treats a file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The SHA-256 the file must have, in hex.
    pub sha256: Option<String>,
    /// Load a file even if it, or a folder above it, could be written by someone other than
    /// its owner and root (a warning is logged).
    pub allow_insecure_permissions: bool,
}

impl Factory {
    /// Loads the plugin library at `path`: opens it, calls `plugin_factory` and validates the
    /// descriptor (magic, ABI version, size, Rust type layout, required functions, name).
    ///
    /// Loading a library runs its initialisers: only load files you trust (see the README's
    /// security model).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Loads the plugin library at `path`, after checking, in this order and before any of
    /// its code runs: the permissions of the file and of the folders above it (unless
    /// `options` allow insecure ones, which logs a warning), that it is a regular file, its
    /// SHA-256 if `options` pin one, and its contents (a shared library for this architecture,
    /// exporting `plugin_factory`, with an acceptable ABI mark if it has one). A pinned file is
    /// loaded from a private copy of the very bytes that were hashed and inspected.
    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self, Error> {
        let path = path.as_ref();
        let (resolved, checked) = check_file(path, options)?;
        if options.sha256.is_some() {
            return Self::load_copy(path, checked);
        }
        Ok(Self {
            descriptor: Arc::new(Descriptor::load(&resolved, path)?),
            inspection: Some(checked.inspection),
        })
    }

    /// Loads `bytes`, the content of the plugin file `path` that the host read and checked
    /// (for a worker, which gets it from the host rather than from the file), after checking
    /// them again as [`load_with`](Self::load_with) does, but for the file's permissions: the
    /// SHA-256 pin of `options`, and the contents. `path` names the plugin in messages and
    /// crash lines.
    pub(crate) fn load_content(
        path: &Path,
        bytes: Vec<u8>,
        options: &LoadOptions,
    ) -> Result<Self, Error> {
        let checked =
            check_bytes(bytes, options).map_err(|kind| Error::new(kind).with_file(Some(path)))?;
        Self::load_copy(path, checked)
    }

    /// Loads a private copy of the `checked` content of the plugin file `path`.
    fn load_copy(path: &Path, checked: Checked) -> Result<Self, Error> {
        let copy = trust::PrivateCopy::new(&checked.bytes, path)
            .map_err(|kind| Error::new(kind).with_file(Some(path)))?;
        Ok(Self {
            descriptor: Arc::new(Descriptor::load(copy.path(), path)?),
            inspection: Some(checked.inspection),
        })
    }

    /// A factory for `P`, a plugin compiled into the application. It goes through the same
    /// ABI and checks as a loaded plugin, so built-in and loaded plugins behave alike.
    pub fn builtin<P: plugin_api::Plugin>() -> Result<Self, Error> {
        Ok(Self {
            descriptor: Arc::new(Descriptor::builtin::<P>()?),
            inspection: None,
        })
    }

    /// What inspecting the file found, or `None` for a built-in plugin.
    pub fn inspection(&self) -> Option<&Inspection> {
        self.inspection.as_ref()
    }

    /// The plugin's name, from its descriptor.
    pub fn name(&self) -> &str {
        &self.descriptor.name
    }

    /// The plugin's version, from its descriptor.
    pub fn version(&self) -> &str {
        &self.descriptor.version
    }

    /// The library file, or `None` for a built-in plugin.
    pub fn file(&self) -> Option<&Path> {
        self.descriptor.file.as_deref()
    }

    /// The ABI version (major, minor) the plugin was built for.
    pub fn abi_version(&self) -> (u16, u16) {
        self.descriptor.abi
    }

    /// The hooks the plugin has (none for a plugin built against ABI 1.0).
    pub fn hooks(&self) -> HookSet {
        self.descriptor.hooks.set()
    }

    /// Creates an instance called `name` with the given JSON configuration (use
    /// `serde_json::json!({})` for none). Several instances of one factory may coexist.
    pub fn create(&self, name: &str, config: &serde_json::Value) -> Result<Instance, Error> {
        let raw = RawInstance::create(self.descriptor.clone(), name, &config.to_string())?;
        Ok(Instance::new(Backend::InProcess(raw)))
    }
}

/// Where an instance's plugin code runs: the one seam between in-process and isolated
/// plugins. Both kinds have the same lifecycle (start, which lists the routes, and stop) and
/// the same calls; the router and the server see only [`Instance`] and [`Lease`], and learn
/// from [`Lease::remote_call`] whether a call has to be awaited.
enum Backend {
    /// In this process, through the C ABI: calls are synchronous function calls.
    InProcess(RawInstance),
    /// In a supervised child process: calls are messages, answered asynchronously.
    Process(Arc<Remote>),
}

impl Backend {
    /// Starts the instance and lists its routes: their patterns, and for an in-process
    /// instance the copied definitions its handlers are called through.
    ///
    /// # Safety
    /// No other lifecycle call on the instance may run concurrently, and it never started.
    unsafe fn start(&self) -> Result<(Vec<RouteSpec>, Vec<RouteDef>), Error> {
        match self {
            Backend::InProcess(raw) => {
                // SAFETY: the caller's promise.
                unsafe { raw.start() }?;
                // SAFETY: as above; `start` succeeded and no handler can run yet.
                match unsafe { raw.routes() } {
                    Ok(defs) => {
                        let specs = defs
                            .iter()
                            .map(|d| RouteSpec {
                                method: d.method.clone(),
                                path: d.path.clone(),
                            })
                            .collect();
                        Ok((specs, defs))
                    }
                    Err(e) => {
                        // SAFETY: as above; the instance started and was not stopped.
                        if let Err(stop) = unsafe { raw.stop() } {
                            tracing::error!("{stop}");
                        }
                        Err(e)
                    }
                }
            }
            Backend::Process(remote) => {
                let specs = remote.start()?;
                for spec in &specs {
                    if let Err(reason) = crate::router::check_route(&spec.method, &spec.path) {
                        let error = Error::new(ErrorKind::RoutesFailed {
                            reason: format!("the plugin listed {reason}").into(),
                        });
                        let _ = remote.stop();
                        return Err(error
                            .with_file(Some(&remote.file))
                            .with_plugin(&remote.instance));
                    }
                }
                Ok((specs, Vec::new()))
            }
        }
    }

    /// Stops the instance.
    ///
    /// # Safety
    /// No other lifecycle call and no handler may run concurrently, and it started and was not
    /// stopped.
    unsafe fn stop(&self) -> Result<(), Error> {
        match self {
            // SAFETY: the caller's promise.
            Backend::InProcess(raw) => unsafe { raw.stop() },
            Backend::Process(remote) => remote.stop(),
        }
    }
}

impl Instance {
    fn new(backend: Backend) -> Self {
        Instance {
            inner: Arc::new(Inner {
                backend,
                state: Mutex::new(State::Created),
                routes: OnceLock::new(),
                leases: AtomicUsize::new(0),
                poisoned: OnceLock::new(),
                keep_serving_after_panic: AtomicBool::new(false),
                overdue_total: AtomicU64::new(0),
                overdue_running: AtomicIsize::new(0),
                handler_timeout_us: AtomicU64::new(0),
                hook_scope: Mutex::new(None),
            }),
        }
    }

    /// An instance whose plugin runs in the child process of `remote`.
    pub(crate) fn remote(remote: Arc<Remote>) -> Self {
        Self::new(Backend::Process(remote))
    }
}

/// What the checks before loading read of a plugin file.
pub(crate) struct Checked {
    /// The bytes that were hashed and inspected.
    pub(crate) bytes: Vec<u8>,
    /// What inspecting them found.
    pub(crate) inspection: Inspection,
}

/// The checks of [`Factory::load_with`] that run before any of the file's code: permissions
/// (unless `options` allow insecure ones, which logs a warning), a regular file, the SHA-256
/// pin, and the inspection of its contents. Returns the resolved path and what was read.
pub(crate) fn check_file(path: &Path, options: &LoadOptions) -> Result<(PathBuf, Checked), Error> {
    let fail = |kind| Error::new(kind).with_file(Some(path));
    let resolved = trust::resolve(path).map_err(fail)?;
    match trust::check_permissions(path, &resolved) {
        Ok(()) => {}
        Err(kind @ ErrorKind::InsecurePermissions { .. }) if options.allow_insecure_permissions => {
            tracing::warn!("loading anyway, as allowed: {}", fail(kind));
        }
        Err(kind) => return Err(fail(kind)),
    }
    let bytes = trust::read(&resolved).map_err(fail)?;
    Ok((resolved, check_bytes(bytes, options).map_err(fail)?))
}

/// The checks of a plugin's content: its SHA-256 if `options` pin one, then its inspection.
fn check_bytes(bytes: Vec<u8>, options: &LoadOptions) -> Result<Checked, ErrorKind> {
    if let Some(expected) = &options.sha256 {
        trust::verify_sha256(&bytes, expected)?;
    }
    let inspection = inspect::inspect(&bytes)?;
    Ok(Checked { bytes, inspection })
}

/// Where an instance is in its life. Before it, the plugin is *loaded*: a [`Factory`], its file
/// inspected and its descriptor validated. Calls that do not fit the state (start twice, stop
/// before start) are refused before they reach the plugin, and a handler can only run while the
/// instance is `Started` (a router holds it there: `stop` is refused while one lives). A
/// started instance whose handler panicked is *poisoned* ([`Instance::poisoned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `create` succeeded; it may be started.
    Created,
    /// `start` (and `routes`) succeeded; handlers may run.
    Started,
    /// `stop` succeeded.
    Stopped,
    /// `start`, `routes` or `stop` failed; the instance is out of service.
    Failed,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Started => "started",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

/// A named instance of a plugin. Cheap to clone (all clones are the same instance); the plugin's
/// `destroy` runs when the last clone, and the last router using it, is dropped.
#[derive(Clone)]
pub struct Instance {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// The lifecycle lock: every call into the plugin other than a handler holds it, which is
    /// how the header's "serialized" rule is kept.
    state: Mutex<State>,
    /// The routes listed right after `start`, and their gates.
    routes: OnceLock<Routes>,
    /// How many routers serve this instance; `stop` is refused while any does.
    leases: AtomicUsize,
    /// The message of the first handler panic, once one happened (unless kept serving).
    poisoned: OnceLock<PluginText>,
    /// Whether handlers keep being called after one panicked.
    keep_serving_after_panic: AtomicBool,
    /// How many calls ever ran past their deadline.
    overdue_total: AtomicU64,
    /// How many calls are running past their deadline now (signed: a call may report its end
    /// a moment before the server reports that it gave up on it).
    overdue_running: AtomicIsize,
    /// The instance's own deadline for a handler call, in microseconds; 0 for the server's.
    handler_timeout_us: AtomicU64,
    /// The paths its request and response hooks see; `None`: every path.
    hook_scope: Mutex<Option<Arc<HookScope>>>,
}

/// An instance's routes, each with the gate its calls pass.
#[derive(Clone)]
struct Routes {
    specs: Arc<[RouteSpec]>,
    /// An in-process instance's routes, as its handlers are called; empty for a process.
    defs: Arc<[RouteDef]>,
    /// One gate per route, then the gate of the hooks' calls.
    gates: Arc<[Gate]>,
}

impl Routes {
    /// The gate every hook call passes.
    fn hook_gate(&self) -> &Gate {
        &self.gates[self.specs.len()]
    }
}

impl Instance {
    /// Whether `other` is this very instance (a clone of it), not merely one of the same name.
    pub(crate) fn same(&self, other: &Instance) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The instance's name (unique in a [`Registry`](crate::Registry)).
    pub fn name(&self) -> &str {
        match &self.inner.backend {
            Backend::InProcess(raw) => &raw.name,
            Backend::Process(remote) => &remote.instance,
        }
    }

    /// The plugin's name, from its descriptor.
    pub fn plugin_name(&self) -> &str {
        match &self.inner.backend {
            Backend::InProcess(raw) => &raw.descriptor().name,
            Backend::Process(remote) => &remote.plugin,
        }
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        match &self.inner.backend {
            Backend::InProcess(raw) => &raw.descriptor().version,
            Backend::Process(remote) => &remote.version,
        }
    }

    /// The library file (or a plugin program), or `None` for a built-in plugin.
    pub fn file(&self) -> Option<&Path> {
        match &self.inner.backend {
            Backend::InProcess(raw) => raw.descriptor().file.as_deref(),
            Backend::Process(remote) => Some(&remote.file),
        }
    }

    /// For a plugin in a child process: whether it is an isolated library or a program, the
    /// child's process id (while one runs) and its state. `None` for an in-process plugin.
    pub fn process(&self) -> Option<(Mode, Option<u32>, ChildState)> {
        match &self.inner.backend {
            Backend::InProcess(_) => None,
            Backend::Process(remote) => Some((remote.mode, remote.pid(), remote.state())),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        *self.inner.state.lock()
    }

    /// The message of the panic that put the instance out of service: after a handler panics,
    /// the instance is poisoned and its routes answer with [`ErrorKind::Poisoned`] without
    /// reaching it (an HTTP server answers 503), unless it keeps serving after panics.
    pub fn poisoned(&self) -> Option<&str> {
        self.inner.poisoned.get().map(PluginText::as_str)
    }

    /// How many calls ever ran past their deadline (an HTTP server answers them 504), and how
    /// many calls are running now that no client waits for any more (past their deadline, or
    /// whose client went away): a call cannot be cancelled, so it runs to its end on its
    /// thread, and its result is discarded.
    pub fn calls_past_deadline(&self) -> (u64, usize) {
        let running = self.inner.overdue_running.load(Ordering::Relaxed);
        (
            self.inner.overdue_total.load(Ordering::Relaxed),
            usize::try_from(running).unwrap_or(0),
        )
    }

    /// The hooks the instance has: its plugin's (a library's descriptor, or what a process
    /// listed).
    pub fn hooks(&self) -> HookSet {
        match &self.inner.backend {
            Backend::InProcess(raw) => raw.hooks(),
            Backend::Process(remote) => remote.hooks(),
        }
    }

    /// Limits the paths the instance's `on_request` and `on_response` hooks see to those that
    /// match one of `patterns` (route patterns: `/api/{*rest}`, `/admin`); an empty list means
    /// every path again. Routers built from now on apply it.
    pub fn set_hook_paths(&self, patterns: &[String]) -> Result<(), Error> {
        let scope = if patterns.is_empty() {
            None
        } else {
            let scope = HookScope::new(patterns)
                .map_err(|reason| self.error(ErrorKind::InvalidHookPaths { reason }))?;
            Some(Arc::new(scope))
        };
        *self.inner.hook_scope.lock() = scope;
        Ok(())
    }

    /// The paths the instance's request and response hooks see (`None`: every path).
    pub(crate) fn hook_scope(&self) -> Option<Arc<HookScope>> {
        self.inner.hook_scope.lock().clone()
    }

    /// Sets how long a handler call of this instance may run before an HTTP server answers its
    /// client 504 (`None`: the server's default).
    pub fn set_handler_timeout(&self, timeout: Option<Duration>) {
        let us = timeout.map_or(0, |t| {
            u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1)
        });
        self.inner.handler_timeout_us.store(us, Ordering::Relaxed);
    }

    /// The instance's own handler deadline, if it has one (see
    /// [`set_handler_timeout`](Self::set_handler_timeout)).
    pub fn handler_timeout(&self) -> Option<Duration> {
        match self.inner.handler_timeout_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Sets the rate limit of what the instance logs, from now on: its log callback, or its
    /// child's `log` messages and output lines together. Past it, lines are dropped and
    /// counted, and the count is reported (see [`LogLimit`](crate::LogLimit)).
    pub fn set_log_limit(&self, limit: crate::LogLimit) {
        self.log_limiter().set_limit(limit);
    }

    /// The rate limit of what the instance logs.
    pub fn log_limit(&self) -> crate::LogLimit {
        self.log_limiter().limit()
    }

    /// How many lines the instance logged that its rate limit dropped, since it was created.
    pub fn log_lines_dropped(&self) -> u64 {
        self.log_limiter().dropped_total()
    }

    /// For a plugin in a child process: how many times a new child replaced one that ended
    /// after a crash (a quarantined plugin is replaced by a reload instead). `None` in process.
    pub fn restarts(&self) -> Option<u64> {
        match &self.inner.backend {
            Backend::InProcess(_) => None,
            Backend::Process(remote) => Some(remote.restarts()),
        }
    }

    fn log_limiter(&self) -> &crate::pluginlog::LogLimiter {
        match &self.inner.backend {
            Backend::InProcess(raw) => &raw.log,
            Backend::Process(remote) => &remote.log,
        }
    }

    /// Records a call that ran past its deadline.
    pub(crate) fn deadline_missed(&self) {
        self.inner.overdue_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that a running call has nobody waiting for it any more.
    pub(crate) fn call_abandoned(&self) {
        self.inner.overdue_running.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that a call counted by [`call_abandoned`](Self::call_abandoned) returned.
    pub(crate) fn abandoned_call_returned(&self) {
        self.inner.overdue_running.fetch_sub(1, Ordering::Relaxed);
    }

    /// Keeps calling the instance's handlers after one panicked (off by default: a panic may
    /// have left the plugin's state inconsistent, so the host fails closed).
    pub fn keep_serving_after_panic(&self, keep: bool) {
        self.inner
            .keep_serving_after_panic
            .store(keep, Ordering::Relaxed);
    }

    fn error(&self, kind: ErrorKind) -> Error {
        Error::new(kind)
            .with_file(self.file())
            .with_plugin(self.name())
    }

    fn invalid_state(&self, action: &'static str, state: State) -> Error {
        self.error(ErrorKind::InvalidState {
            action,
            state: state.as_str(),
        })
    }

    /// Starts the instance, then lists its routes. Refused unless it is `Created`. If listing
    /// the routes fails, the instance is stopped again and the error returned.
    pub fn start(&self) -> Result<(), Error> {
        let mut state = self.inner.state.lock();
        if *state != State::Created {
            return Err(self.invalid_state("start", *state));
        }
        *state = State::Failed;
        // SAFETY: the lifecycle lock is held, so no other call on the instance runs (no handler
        // either: leases require `Started`), and the state was `Created`, so it never started.
        let (specs, defs) = unsafe { self.inner.backend.start() }?;
        // One more than the routes: the gate of the hooks.
        let gates = (0..=specs.len()).map(|_| Gate::new()).collect();
        let routes = Routes {
            specs: specs.into(),
            defs: defs.into(),
            gates,
        };
        // `start` runs once (the state was `Created`), so this is the only `set`.
        let _ = self.inner.routes.set(routes);
        *state = State::Started;
        Ok(())
    }

    /// Stops the instance. Refused unless it is `Started`, and while a router serves it.
    pub fn stop(&self) -> Result<(), Error> {
        let mut state = self.inner.state.lock();
        if *state != State::Started {
            return Err(self.invalid_state("stop", *state));
        }
        let routers = self.inner.leases.load(Ordering::Acquire);
        if routers > 0 {
            return Err(self.error(ErrorKind::InUse { routers }));
        }
        // SAFETY: the lifecycle lock is held and no lease exists, so no handler runs or can
        // start (leases are taken under this lock and require `Started`); it started, and the
        // state moves away from `Started` below, so it is stopped at most once.
        let result = unsafe { self.inner.backend.stop() };
        *state = if result.is_ok() {
            State::Stopped
        } else {
            State::Failed
        };
        result
    }

    /// Stops the instance even while routers serve it. Its routes are closed first: from then
    /// on, calls through any router fail with [`ErrorKind::Closed`] without reaching the
    /// plugin. An in-process instance is stopped only if none of its handlers is running:
    /// otherwise it stays started and the error ([`ErrorKind::Busy`]) names the routes whose
    /// calls are running — a handler is never stopped under. An instance in a child process is
    /// stopped whatever runs in it (`stop`, then SIGTERM, then SIGKILL: see
    /// [`ProcessOptions::stop_timeout`](crate::process::ProcessOptions)), since ending a
    /// process is always safe for the host; the calls still waiting for it fail. This is how a
    /// server stops what it safely can once its grace period is over.
    pub fn close_and_stop(&self) -> Result<(), Error> {
        let mut state = self.inner.state.lock();
        if *state != State::Started {
            return Err(self.invalid_state("stop", *state));
        }
        if let Some(routes) = self.inner.routes.get() {
            let busy: Vec<(String, usize)> = routes
                .specs
                .iter()
                .map(|def| format!("{} {}", def.method, def.path))
                .chain(["its hooks".to_owned()])
                .zip(gate::close(&routes.gates))
                .filter(|(_, running)| *running > 0)
                .collect();
            if let Backend::Process(remote) = &self.inner.backend {
                if !busy.is_empty() {
                    let calls: usize = busy.iter().map(|(_, running)| running).sum();
                    tracing::warn!(
                        plugin = self.name(),
                        "stopping the plugin process with {calls} call(s) still waiting for it \
                         (to {}): they fail",
                        busy.iter()
                            .map(|(route, _)| route.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                return Self::stopped(&mut state, remote.stop());
            }
            if !busy.is_empty() {
                let routes = busy.into_iter().map(|(route, _)| route).collect();
                return Err(self.error(ErrorKind::Busy { routes }));
            }
        }
        // SAFETY: the lifecycle lock is held; every route is closed and none had a call
        // running, so no handler runs or can start (`Lease::handle` passes the gate first);
        // the state is `Started` and moves away from it below, so it is stopped at most once.
        let result = unsafe { self.inner.backend.stop() };
        Self::stopped(&mut state, result)
    }

    /// Records the outcome of `stop` in `state` (held locked) and returns it.
    fn stopped(state: &mut State, result: Result<(), Error>) -> Result<(), Error> {
        *state = if result.is_ok() {
            State::Stopped
        } else {
            State::Failed
        };
        result
    }

    /// A lease that keeps the instance started while a router serves it.
    pub(crate) fn lease(&self) -> Result<Lease, Error> {
        let state = self.inner.state.lock();
        if *state != State::Started {
            return Err(self.invalid_state("route requests to", *state));
        }
        self.inner.leases.fetch_add(1, Ordering::AcqRel);
        let routes = self.inner.routes.get().cloned().unwrap_or_else(|| Routes {
            specs: Arc::new([]),
            defs: Arc::new([]),
            gates: Arc::new([Gate::new()]),
        });
        Ok(Lease {
            routes,
            hooks: self.hooks(),
            instance: self.clone(),
        })
    }
}

/// Proof that an instance is started and stays so: `Instance::stop` is refused while a lease
/// lives. Routers hold one per instance they serve.
pub(crate) struct Lease {
    instance: Instance,
    routes: Routes,
    /// The instance's hooks.
    hooks: HookSet,
}

/// A call of a hook, with what the hook sees.
pub(crate) enum HookCall<'a, 'r> {
    /// `on_request`: the request, with the header changes of the hooks before.
    Request(&'a Request<'r>),
    /// `on_response`: the request as the route saw it, and the response so far.
    Response(&'a Request<'r>, &'a Response),
    /// `on_connect`: a new connection.
    Connect(&'a Connection),
}

impl HookCall<'_, '_> {
    /// The hook's name.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            HookCall::Request(_) => "on_request",
            HookCall::Response(..) => "on_response",
            HookCall::Connect(_) => "on_connect",
        }
    }
}

/// What a hook answered; the variant matches the [`HookCall`].
#[derive(Debug)]
pub(crate) enum HookAnswer {
    /// From `on_request`.
    Request(RequestVerdict),
    /// From `on_response`.
    Response(ResponseEdit),
    /// From `on_connect`.
    Connect(ConnectVerdict),
}

impl Lease {
    /// The instance.
    pub(crate) fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The routes the instance listed when it started.
    pub(crate) fn routes(&self) -> &[RouteSpec] {
        &self.routes.specs
    }

    /// Calls the handler of route number `route` (an index into [`Lease::routes`]); a call to
    /// a child process is waited for, at most the instance's handler timeout (30 s without
    /// one).
    pub(crate) fn handle(
        &self,
        route: usize,
        request: &Request<'_>,
        params: &matchit::Params<'_, '_>,
    ) -> Result<Response, Error> {
        let inner = &self.instance.inner;
        self.admit()?;
        let Some(_entered) = self.routes.gates[route].enter() else {
            return Err(self.instance.error(ErrorKind::Closed));
        };
        let result = match &inner.backend {
            // SAFETY: the route comes from this instance's `routes`; the lease proves the
            // instance started, and it is not stopped while the call runs: `stop` is refused
            // while a lease lives, and `close_and_stop` closes the gate the call passed and
            // stops only when no call is inside.
            Backend::InProcess(raw) => unsafe {
                raw.handle(&self.routes.defs[route], request, params)
            },
            Backend::Process(remote) => self.handle_remote(remote, route, request, params),
        };
        self.observe(&result);
        result
    }

    /// [`handle`](Self::handle) for an instance in a child process: sends the call and waits
    /// for its answer. Kept out of line, off the in-process request path.
    #[cold]
    #[inline(never)]
    fn handle_remote(
        &self,
        remote: &Remote,
        route: usize,
        request: &Request<'_>,
        params: &matchit::Params<'_, '_>,
    ) -> Result<Response, Error> {
        let timeout = self
            .instance
            .handler_timeout()
            .unwrap_or(crate::limits::DEFAULT_HANDLER_TIMEOUT);
        decoded(&self.instance, params)
            .and_then(|params| remote.call_blocking(route, request, &params, timeout))
    }

    /// For an instance in a child process: sends the call of route number `route` and returns
    /// its answer to await (a call to a child never blocks the caller's thread), at most for
    /// `deadline`, which the call carries. `None` for an in-process instance, whose calls go
    /// through [`handle`](Self::handle).
    pub(crate) fn remote_call<'l>(
        &'l self,
        route: usize,
        request: &Request<'_>,
        params: &matchit::Params<'_, '_>,
        deadline: std::time::Duration,
    ) -> Option<impl Future<Output = Result<Response, Error>> + Send + 'l> {
        let Backend::Process(remote) = &self.instance.inner.backend else {
            return None;
        };
        let sent = self.admit().and_then(|()| {
            let entered = self.routes.gates[route]
                .enter_counted()
                .ok_or_else(|| self.instance.error(ErrorKind::Closed))?;
            let params = decoded(&self.instance, params)?;
            Ok((entered, remote.call(route, request, &params, deadline)))
        });
        Some(async move {
            let (_entered, call) = sent?;
            let result = call.await;
            self.observe(&result);
            result
        })
    }

    /// The instance's hooks.
    pub(crate) fn hooks(&self) -> HookSet {
        self.hooks
    }

    /// Calls a hook of the instance and waits for its answer: an in-process hook is a function
    /// call, a hook in a child process a message whose answer is waited for at most the
    /// instance's handler timeout (30 s without one). The hook's call passes the instance's
    /// admission (not poisoned) and hook gate, as a handler's does.
    pub(crate) fn hook(&self, call: HookCall<'_, '_>) -> Result<HookAnswer, Error> {
        self.admit()?;
        let Some(_entered) = self.routes.hook_gate().enter() else {
            return Err(self.instance.error(ErrorKind::Closed));
        };
        let result = match &self.instance.inner.backend {
            // SAFETY: the lease proves the instance started, and it is not stopped while the
            // call runs: the call passed the hook gate, which `close_and_stop` closes and waits
            // empty before it stops the instance (as for a handler).
            Backend::InProcess(raw) => unsafe { in_process_hook(raw, call) },
            Backend::Process(remote) => {
                let timeout = self
                    .instance
                    .handler_timeout()
                    .unwrap_or(crate::limits::DEFAULT_HANDLER_TIMEOUT);
                let hook = call.name();
                crate::block::on(remote_hook(remote, call, timeout), Some(timeout)).unwrap_or_else(
                    || {
                        Err(self.instance.error(ErrorKind::HookFailed {
                            hook,
                            reason: format!("no answer within {timeout:?}").into(),
                        }))
                    },
                )
            }
        };
        self.observe(&result);
        result
    }

    /// For an instance in a child process: sends a hook call and returns its answer to await,
    /// for at most `deadline`, which the call carries. `None` for an in-process instance, whose
    /// hooks go through [`hook`](Self::hook).
    pub(crate) fn hook_async<'l>(
        &'l self,
        call: HookCall<'_, '_>,
        deadline: std::time::Duration,
    ) -> Option<impl Future<Output = Result<HookAnswer, Error>> + Send + 'l> {
        let Backend::Process(remote) = &self.instance.inner.backend else {
            return None;
        };
        let sent = self.admit().and_then(|()| {
            let entered = self
                .routes
                .hook_gate()
                .enter_counted()
                .ok_or_else(|| self.instance.error(ErrorKind::Closed))?;
            Ok((entered, remote_hook(remote, call, deadline)))
        });
        Some(async move {
            let (_entered, answer) = sent?;
            let result = answer.await;
            self.observe(&result);
            result
        })
    }

    /// Tells the instance's `on_disconnect` hook what a connection did (a message to a child
    /// process is sent without waiting). Skipped when the instance is poisoned or closing.
    pub(crate) fn on_disconnect(&self, stats: &ConnectionStats) {
        if self.admit().is_err() {
            return;
        }
        let Some(_entered) = self.routes.hook_gate().enter() else {
            return;
        };
        match &self.instance.inner.backend {
            // SAFETY: as in `hook`.
            Backend::InProcess(raw) => unsafe { raw.on_disconnect(stats) },
            Backend::Process(remote) => remote.on_disconnect(stats),
        }
    }

    /// Whether the instance's calls are messages to a child process, answered asynchronously
    /// (see [`remote_call`](Self::remote_call)).
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self.instance.inner.backend, Backend::Process(_))
    }

    /// Refuses a call to a poisoned instance.
    fn admit(&self) -> Result<(), Error> {
        match self.instance.inner.poisoned.get() {
            Some(message) => Err(self.instance.error(ErrorKind::Poisoned {
                message: message.clone(),
            })),
            None => Ok(()),
        }
    }

    /// Poisons the instance after a handler or hook panic, unless it keeps serving after panics.
    fn observe<T>(&self, result: &Result<T, Error>) {
        let inner = &self.instance.inner;
        if let Err(error) = result
            && let ErrorKind::Panicked { message, .. } = error.kind()
            && !inner.keep_serving_after_panic.load(Ordering::Relaxed)
        {
            let _ = inner.poisoned.set(message.clone());
        }
    }
}

/// Calls an in-process instance's hook.
///
/// # Safety
/// As for [`RawInstance::on_request`]: the instance is started and not stopped during the call.
unsafe fn in_process_hook(raw: &RawInstance, call: HookCall<'_, '_>) -> Result<HookAnswer, Error> {
    // SAFETY: forwarded to the caller.
    unsafe {
        match call {
            HookCall::Request(request) => raw.on_request(request).map(HookAnswer::Request),
            HookCall::Response(request, response) => {
                raw.on_response(request, response).map(HookAnswer::Response)
            }
            HookCall::Connect(connection) => raw.on_connect(connection).map(HookAnswer::Connect),
        }
    }
}

/// Sends a hook call to a child process; the answer arrives through the returned future.
fn remote_hook<'s>(
    remote: &'s Remote,
    call: HookCall<'_, '_>,
    deadline: std::time::Duration,
) -> std::pin::Pin<Box<dyn Future<Output = Result<HookAnswer, Error>> + Send + 's>> {
    match call {
        HookCall::Request(request) => {
            let answer = remote.on_request(request, deadline);
            Box::pin(async move { answer.await.map(HookAnswer::Request) })
        }
        HookCall::Response(request, response) => {
            let answer = remote.on_response(request, response, deadline);
            Box::pin(async move { answer.await.map(HookAnswer::Response) })
        }
        HookCall::Connect(connection) => {
            let answer = remote.on_connect(connection, deadline);
            Box::pin(async move { answer.await.map(HookAnswer::Connect) })
        }
    }
}

/// The path parameters of a call to a child, percent-decoded as an in-process plugin gets them.
fn decoded(
    instance: &Instance,
    params: &matchit::Params<'_, '_>,
) -> Result<Vec<(String, String)>, Error> {
    params
        .iter()
        .map(|(name, value)| {
            let value = crate::path::decode_param(value).map_err(|e| {
                instance.error(ErrorKind::BadPath {
                    reason: e.to_string(),
                })
            })?;
            Ok((name.to_owned(), value.into_owned()))
        })
        .collect()
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.instance.inner.leases.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::{Host, NoConfig, Plugin, Result, Routes};

    struct Quiet;

    impl Plugin for Quiet {
        const NAME: &'static str = "quiet";
        const VERSION: &'static str = "1.0.0";
        type Config = NoConfig;

        fn create(_: NoConfig, _: Host) -> Result<Self> {
            Ok(Self)
        }

        fn routes(&self, _: &mut Routes<'_, Self>) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_lines_an_instance_dropped_are_reported_when_it_ends_not_when_its_library_does() {
        let factory = Factory::builtin::<Quiet>().unwrap();
        let instance = factory.create("quiet", &serde_json::json!({})).unwrap();
        instance.set_log_limit(crate::LogLimit { rate: 1, burst: 1 });
        let Backend::InProcess(raw) = &instance.inner.backend else {
            unreachable!("an in-process instance")
        };
        let limiter = Arc::clone(&raw.log);
        let admitted = (0..10).filter(|_| limiter.admit()).count();
        assert_eq!((admitted, limiter.unreported()), (1, 9));
        // The factory keeps the library, and with it the instance's log context.
        drop(instance);
        assert_eq!(limiter.unreported(), 0);
        drop(factory);
    }
}
