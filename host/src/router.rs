//! One router over the routes of many plugins, backed by `matchit`.

use crate::error::{Error, ErrorKind};
use crate::hook::{HookScope, RequestVerdict};
use crate::message::{Request, Response};
use crate::pacing::Pacing;
use crate::plugin::{HookAnswer, HookCall, Instance, Lease};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// The routes of a set of started plugins, matched by path pattern then by method.
///
/// Patterns have literal segments, named parameters (`/greet/{name}`) and an optional final
/// catch-all (`/files/{*rest}`). While a router lives, the plugins it serves cannot be stopped:
/// drop it first.
pub struct Router {
    matcher: matchit::Router<usize>,
    paths: Vec<PathRoutes>,
    leases: Vec<Lease>,
    /// The instances with request or response hooks, in registration order.
    hooks: Vec<HookTarget>,
}

/// An instance whose `on_request` or `on_response` hook sees requests.
pub(crate) struct HookTarget {
    /// An index into `Router::leases`.
    lease: usize,
    /// The paths its hooks see; `None`: every path.
    scope: Option<Arc<HookScope>>,
    /// Where an HTTP server runs its in-process hook calls (see `crate::pacing`).
    pub(crate) pacing: Pacing,
}

impl HookTarget {
    /// Whether its hooks see a request for `path`.
    #[inline]
    fn sees(&self, path: &str) -> bool {
        self.scope.as_ref().is_none_or(|scope| scope.sees(path))
    }
}

/// How the steps of an exchange run when one of them may have to wait (see
/// [`Router::exchange`]): as an HTTP server runs them, on the blocking pool or awaited from a
/// child process, each with its deadline.
pub(crate) trait Steps {
    /// What ends an exchange at once, passing no further hook: a server's answer about a
    /// failed hook.
    type Stop;

    /// Calls a hook of the instance of hook target number `index` (see
    /// [`Router::hook_target`]).
    fn hook(
        &self,
        index: usize,
        call: HookCall<'_, '_>,
    ) -> impl Future<Output = Result<HookAnswer, Self::Stop>>;

    /// Answers the request with its route (or, for a server, a 404 or 405).
    fn route(&self, request: &Request<'_>) -> impl Future<Output = Result<Response, Self::Stop>>;

    /// The stop of a hook whose answer the host cannot apply.
    fn stop(&self, error: Error) -> Self::Stop;
}

/// How the steps of an exchange run when each is a call that returns its answer on this
/// thread (see [`Router::exchange_now`]): for [`Router::dispatch`], and for an HTTP server's
/// exchange that runs inline or as one job on the blocking pool. The same as [`Steps`], without
/// a future: a chain of in-process hooks costs its calls and nothing else.
pub(crate) trait StepsNow {
    /// What ends an exchange at once, passing no further hook: an error, or a server's answer
    /// about a failed hook.
    type Stop;

    /// Calls a hook of the instance of hook target number `index` (see
    /// [`Router::hook_target`]).
    fn hook(&self, index: usize, call: HookCall<'_, '_>) -> Result<HookAnswer, Self::Stop>;

    /// Answers the request with its route (or, for a server, a 404 or 405).
    fn route(&self, request: &Request<'_>) -> Result<Response, Self::Stop>;

    /// The stop of a hook whose answer the host cannot apply.
    fn stop(&self, error: Error) -> Self::Stop;
}

/// The body of [`Router::exchange`] and [`Router::exchange_now`], written once: `$step` is
/// `awaited` or `returned`, which say how a step's answer is had.
macro_rules! exchange {
    ($router:expr, $steps:expr, $request:expr, $step:ident) => {{
        let (router, steps, request) = ($router, $steps, $request);
        let mut edited: Option<http::HeaderMap> = None;
        let mut passed = router.hooks.len();
        let mut answered = None;
        for (index, target) in router.hooks.iter().enumerate() {
            if !target.sees(request.path) || !router.hook_lease(target).hooks().on_request {
                continue;
            }
            let view = edited.as_ref().map(|headers| request.with_headers(headers));
            let current = view.as_ref().unwrap_or(request);
            let HookAnswer::Request(verdict) =
                $step!(steps.hook(index, HookCall::Request(current)))?
            else {
                unreachable!("an on_request call is answered by a request verdict")
            };
            match verdict {
                RequestVerdict::Continue(edits) if edits.is_empty() => {}
                RequestVerdict::Continue(edits) => {
                    let headers = edited.get_or_insert_with(|| request.header_map());
                    for edit in edits {
                        edit.apply(headers)
                            .map_err(|e| steps.stop(router.hook_error(target, "on_request", e)))?;
                    }
                }
                RequestVerdict::Respond(response) => {
                    answered = Some(*response);
                    passed = index;
                    break;
                }
            }
        }
        let view = edited.as_ref().map(|headers| request.with_headers(headers));
        let current = view.as_ref().unwrap_or(request);
        let mut response = match answered {
            Some(response) => response,
            None => $step!(steps.route(current))?,
        };
        for (index, target) in router.hooks[..passed].iter().enumerate().rev() {
            if !target.sees(request.path) || !router.hook_lease(target).hooks().on_response {
                continue;
            }
            let call = HookCall::Response(current, &response);
            let HookAnswer::Response(edit) = $step!(steps.hook(index, call))? else {
                unreachable!("an on_response call is answered by a response edit")
            };
            edit.apply(&mut response)
                .map_err(|e| steps.stop(router.hook_error(target, "on_response", e)))?;
        }
        Ok(response)
    }};
}

/// A step of [`Router::exchange`]: its future, awaited.
macro_rules! awaited {
    ($step:expr) => {
        $step.await
    };
}

/// A step of [`Router::exchange_now`]: its answer, returned.
macro_rules! returned {
    ($step:expr) => {
        $step
    };
}

/// The methods served at one path pattern.
struct PathRoutes {
    pattern: String,
    methods: Vec<Target>,
}

/// One route: an index into `Router::leases` and into that lease's routes.
struct Target {
    method: String,
    lease: usize,
    route: usize,
    /// The route's number, in the order of [`Router::routes`] (see [`RouteMatch::id`]).
    id: usize,
    /// Where an HTTP server runs the route's calls, and the evidence for it.
    pacing: Pacing,
}

/// A route as listed by [`Router::routes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The method.
    pub method: String,
    /// The path pattern.
    pub path: String,
    /// The name of the instance that serves it.
    pub plugin: String,
}

/// The result of [`Router::lookup`].
pub enum Lookup<'r, 'p> {
    /// A route matches the method and the path.
    Found(RouteMatch<'r, 'p>),
    /// Routes match the path, but none with this method; these methods would be allowed.
    MethodNotAllowed(Vec<&'r str>),
    /// No route matches the path.
    NotFound,
}

/// A matched route and its path parameters.
pub struct RouteMatch<'r, 'p> {
    lease: &'r Lease,
    target: &'r Target,
    pattern: &'r str,
    params: matchit::Params<'r, 'p>,
}

impl<'r, 'p> RouteMatch<'r, 'p> {
    /// The name of the instance that serves the route.
    pub fn plugin(&self) -> &'r str {
        self.lease.instance().name()
    }

    /// The route's path pattern.
    pub fn pattern(&self) -> &'r str {
        self.pattern
    }

    /// The path parameters, in pattern order.
    #[inline]
    pub fn params(&self) -> impl Iterator<Item = (&'r str, &'p str)> + '_ {
        self.params.iter()
    }

    /// The instance that serves the route.
    pub(crate) fn instance(&self) -> &'r Instance {
        self.lease.instance()
    }

    /// The route's number: its index in [`Router::routes`], for tables kept beside the router
    /// (the metrics' handles).
    pub(crate) fn id(&self) -> usize {
        self.target.id
    }

    /// Where the route's calls run (see `crate::pacing`).
    pub(crate) fn pacing(&self) -> &'r Pacing {
        &self.target.pacing
    }

    /// Calls the route's handler. `request` should be the one that was matched. A call to a
    /// plugin in a child process waits for its answer.
    pub fn call(&self, request: &Request<'_>) -> Result<Response, Error> {
        self.lease.handle(self.target.route, request, &self.params)
    }

    /// Whether the route's calls are answered asynchronously (its plugin runs in a child
    /// process), so that a server awaits them rather than run them on a thread.
    pub(crate) fn awaits(&self) -> bool {
        self.lease.is_remote()
    }

    /// For a route whose calls are answered asynchronously: sends the call, which the caller
    /// awaits for at most `deadline` (the plugin's process may skip it after that), and returns
    /// the answer to await. `None` otherwise.
    pub(crate) fn call_async<'s>(
        &'s self,
        request: &Request<'_>,
        deadline: std::time::Duration,
    ) -> Option<impl Future<Output = Result<Response, Error>> + Send + 's> {
        self.lease
            .remote_call(self.target.route, request, &self.params, deadline)
    }
}

/// Checks a route when a plugin declares it (through the ABI's `add`, or a process plugin's
/// list), so that a bad one is refused at once with a reason naming it: an upper-case HTTP
/// token for the method, and a path pattern that starts with `/` (see [`check_pattern`]).
pub(crate) fn check_route(method: &str, path: &str) -> Result<(), String> {
    let token = !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token || method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "a route whose method `{}` is not an upper-case HTTP token (such as GET)",
            method.escape_debug()
        ));
    }
    if !path.starts_with('/') {
        return Err(format!(
            "a {method} route whose path does not start with `/`"
        ));
    }
    check_pattern(path).map_err(|reason| format!("the route {method} {path}, but {reason}"))
}

/// Checks a route pattern when a plugin adds it: the syntax of `matchit` (`{name}`, a final
/// `{*name}`, `{{` and `}}` for literal braces), and no parameter name used twice
/// (`/probe/{a}/{a}` would hide one value).
fn check_pattern(pattern: &str) -> Result<(), String> {
    matchit::Router::new()
        .insert(pattern, ())
        .map_err(|e| format!("it is not a valid pattern: {e}"))?;
    let mut names: Vec<&str> = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find(['{', '}']) {
        let (brace, after) = (&rest[open..=open], &rest[open + 1..]);
        if let Some(escaped) = after.strip_prefix(brace) {
            rest = escaped;
            continue;
        }
        // matchit accepted the pattern, so this is `{` and a `}` closes it.
        let Some((name, after)) = after.split_once('}') else {
            break;
        };
        let name = name.trim_start_matches('*');
        if names.contains(&name) {
            return Err(format!("the parameter `{name}` appears twice"));
        }
        names.push(name);
        rest = after;
    }
    Ok(())
}

impl Router {
    /// Collects the routes of `instances`, in order. Each must be started.
    pub(crate) fn build(instances: &[Instance]) -> Result<Self, Error> {
        let mut router = Router {
            matcher: matchit::Router::new(),
            paths: Vec::new(),
            leases: Vec::with_capacity(instances.len()),
            hooks: Vec::new(),
        };
        let mut by_pattern: HashMap<String, usize> = HashMap::new();
        let mut id = 0;
        for instance in instances {
            let lease = instance.lease()?;
            let index = router.leases.len();
            for (route, def) in lease.routes().iter().enumerate() {
                let target = Target {
                    method: def.method.clone(),
                    lease: index,
                    route,
                    id,
                    pacing: Pacing::default(),
                };
                id += 1;
                router.insert(&mut by_pattern, instance, &def.path, target)?;
            }
            let hooks = lease.hooks();
            if hooks.on_request || hooks.on_response {
                router.hooks.push(HookTarget {
                    lease: index,
                    scope: instance.hook_scope(),
                    pacing: Pacing::default(),
                });
            }
            router.leases.push(lease);
        }
        Ok(router)
    }

    fn insert(
        &mut self,
        by_pattern: &mut HashMap<String, usize>,
        instance: &Instance,
        pattern: &str,
        target: Target,
    ) -> Result<(), Error> {
        let error = |kind| {
            Error::new(kind)
                .with_file(instance.file())
                .with_plugin(instance.name())
        };
        let route = format!("{} {pattern}", target.method);
        if let Some(&index) = by_pattern.get(pattern) {
            let methods = &self.paths[index].methods;
            if let Some(existing) = methods.iter().find(|t| t.method == target.method) {
                return Err(error(ErrorKind::RouteConflict {
                    existing: route.clone(),
                    route,
                    other: self.leases_name(existing.lease, instance),
                }));
            }
            self.paths[index].methods.push(target);
            return Ok(());
        }
        let index = self.paths.len();
        match self.matcher.insert(pattern, index) {
            Ok(()) => {}
            Err(matchit::InsertError::Conflict { with }) => {
                // `with` is matchit's spelling of the pattern, which differs from the stored
                // one when the pattern has escaped braces.
                let (existing, other) = match by_pattern.get(&with) {
                    Some(&index) => {
                        let first = &self.paths[index].methods[0];
                        let other = self.leases_name(first.lease, instance);
                        (format!("{} {with}", first.method), other)
                    }
                    None => (with, "(unknown)".to_owned()),
                };
                return Err(error(ErrorKind::RouteConflict {
                    route,
                    existing,
                    other,
                }));
            }
            Err(e) => {
                return Err(error(ErrorKind::RoutesFailed {
                    reason: format!("invalid path pattern in {route}: {e}").into(),
                }));
            }
        }
        by_pattern.insert(pattern.to_owned(), index);
        self.paths.push(PathRoutes {
            pattern: pattern.to_owned(),
            methods: vec![target],
        });
        Ok(())
    }

    /// The name of the instance of lease `index`, which may be `current` (not pushed yet).
    fn leases_name(&self, index: usize, current: &Instance) -> String {
        self.leases
            .get(index)
            .map_or(current.name(), |l| l.instance().name())
            .to_owned()
    }

    /// Whether an instance it serves has hooks of any kind.
    pub(crate) fn has_hooks(&self) -> bool {
        !self.hooks.is_empty() || self.connection_hooks().next().is_some()
    }

    /// Whether an instance it serves has an `on_disconnect` hook.
    pub(crate) fn has_disconnect_hooks(&self) -> bool {
        self.connection_hooks()
            .any(|(_, lease)| lease.hooks().on_disconnect)
    }

    /// Whether a request for `path` (normalized) passes request or response hooks.
    #[inline]
    pub(crate) fn hooks_see(&self, path: &str) -> bool {
        self.hooks.iter().any(|hook| hook.sees(path))
    }

    /// Whether every hook a request for `path` passes has earned to run inline: it is in this
    /// process, and its calls are fast (see `crate::pacing`).
    pub(crate) fn hooks_inline(&self, path: &str) -> bool {
        self.hooks_local(path)
            && self
                .hooks
                .iter()
                .filter(|hook| hook.sees(path))
                .all(|hook| hook.pacing.inline())
    }

    /// Whether every hook a request for `path` passes is in this process.
    pub(crate) fn hooks_local(&self, path: &str) -> bool {
        self.hooks
            .iter()
            .filter(|hook| hook.sees(path))
            .all(|hook| !self.hook_lease(hook).is_remote())
    }

    /// The instance of the first hook a request for `path` passes.
    pub(crate) fn first_hook(&self, path: &str) -> Option<&Instance> {
        self.hook_instances(path).next()
    }

    /// The instances of the hooks a request for `path` passes, in registration order.
    pub(crate) fn hook_instances(&self, path: &str) -> impl Iterator<Item = &Instance> {
        self.hooks
            .iter()
            .filter(move |hook| hook.sees(path))
            .map(|hook| self.hook_lease(hook).instance())
    }

    /// The lease of a hook target.
    pub(crate) fn hook_lease(&self, target: &HookTarget) -> &Lease {
        &self.leases[target.lease]
    }

    /// The hook target number `index`, in registration order.
    pub(crate) fn hook_target(&self, index: usize) -> &HookTarget {
        &self.hooks[index]
    }

    /// The instance name of every hook target, by number.
    pub(crate) fn hook_plugins(&self) -> impl Iterator<Item = &str> {
        self.hooks
            .iter()
            .map(|hook| self.hook_lease(hook).instance().name())
    }

    /// The leases of instances with `on_connect` or `on_disconnect` hooks, in registration
    /// order.
    pub(crate) fn connection_hooks(&self) -> impl Iterator<Item = (usize, &Lease)> {
        self.leases.iter().enumerate().filter(|(_, lease)| {
            let hooks = lease.hooks();
            hooks.on_connect || hooks.on_disconnect
        })
    }

    /// The lease number `index` (as [`connection_hooks`](Self::connection_hooks) numbers them).
    pub(crate) fn lease(&self, index: usize) -> &Lease {
        &self.leases[index]
    }

    /// Runs one request through the hooks and its route, with `steps` running each call:
    ///
    /// 1. the `on_request` hooks whose scope sees the path, in registration order, each seeing
    ///    the header changes of those before; the first that answers ends this part;
    /// 2. the route (unless a hook answered), with the changed headers;
    /// 3. the `on_response` hooks of the instances the request passed on its way in (all, or
    ///    those registered before the one that answered), in reverse order: an onion, like
    ///    tower's layers.
    ///
    /// A step that stops (a failed hook) ends the exchange with its `Stop`, which no further
    /// hook sees.
    pub(crate) async fn exchange<S: Steps>(
        &self,
        steps: &S,
        request: &Request<'_>,
    ) -> Result<Response, S::Stop> {
        exchange!(self, steps, request, awaited)
    }

    /// [`exchange`](Self::exchange), with steps that each return their answer on this thread.
    pub(crate) fn exchange_now<S: StepsNow>(
        &self,
        steps: &S,
        request: &Request<'_>,
    ) -> Result<Response, S::Stop> {
        exchange!(self, steps, request, returned)
    }

    /// The error of a hook of `target` whose answer cannot be applied.
    fn hook_error(&self, target: &HookTarget, hook: &'static str, reason: impl ToString) -> Error {
        let instance = self.hook_lease(target).instance();
        Error::new(ErrorKind::HookFailed {
            hook,
            reason: reason.to_string().into(),
        })
        .with_file(instance.file())
        .with_plugin(instance.name())
    }

    /// The names of the instances this router serves, in registration order.
    pub fn plugins(&self) -> Vec<&str> {
        self.leases.iter().map(|l| l.instance().name()).collect()
    }

    /// The hooks of the instances this router serves, in registration order (the order of
    /// [`plugins`](Self::plugins)).
    pub fn hook_sets(&self) -> Vec<crate::HookSet> {
        self.leases.iter().map(Lease::hooks).collect()
    }

    /// The instances this router serves, in registration order.
    pub(crate) fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.leases.iter().map(Lease::instance)
    }

    /// The names of the instances that are out of service after a handler panicked.
    pub fn poisoned(&self) -> Vec<&str> {
        self.leases
            .iter()
            .map(Lease::instance)
            .filter(|i| i.poisoned().is_some())
            .map(Instance::name)
            .collect()
    }

    /// Every route, in the order it was collected (a route's index here is its number, see
    /// [`RouteMatch::id`]).
    pub fn routes(&self) -> Vec<RouteInfo> {
        let mut routes: Vec<(usize, usize, RouteInfo)> = self
            .paths
            .iter()
            .flat_map(|p| {
                p.methods.iter().map(|t| {
                    let info = RouteInfo {
                        method: t.method.clone(),
                        path: p.pattern.clone(),
                        plugin: self.leases[t.lease].instance().name().to_owned(),
                    };
                    (t.lease, t.route, info)
                })
            })
            .collect();
        routes.sort_by_key(|(lease, route, _)| (*lease, *route));
        routes.into_iter().map(|(_, _, info)| info).collect()
    }

    /// The route for `method` among those at path pattern number `index`.
    #[inline]
    fn target(&self, index: usize, method: &str) -> Option<&Target> {
        self.paths[index]
            .methods
            .iter()
            .find(|t| t.method == method)
    }

    /// Finds the route for `method` and `path`, which should be normalized (dot segments
    /// removed, as `Router::dispatch` and the HTTP server do): this is the raw lookup.
    #[inline]
    pub fn lookup<'r, 'p>(&'r self, method: &str, path: &'p str) -> Lookup<'r, 'p> {
        let Ok(found) = self.matcher.at(path) else {
            return Lookup::NotFound;
        };
        let index = *found.value;
        match self.target(index, method) {
            Some(target) => Lookup::Found(RouteMatch {
                lease: &self.leases[target.lease],
                target,
                pattern: &self.paths[index].pattern,
                params: found.params,
            }),
            None => Lookup::MethodNotAllowed(
                self.paths[index]
                    .methods
                    .iter()
                    .map(|t| t.method.as_str())
                    .collect(),
            ),
        }
    }

    /// Looks up the request's route and calls its handler. This is the request path: it
    /// calls the handler where the match lives rather than building a [`Lookup`].
    ///
    /// The path's dot segments are removed first, and parameters reach the plugin
    /// percent-decoded; a path that climbs above `/` or a parameter that cannot be decoded
    /// safely is [`ErrorKind::BadPath`] (see `crate::path`).
    pub fn dispatch(&self, request: &Request<'_>) -> Result<Response, Error> {
        let path = crate::path::normalize(request.path)?;
        if let Cow::Owned(path) = &path {
            // Rare: the plugin sees the path that was routed.
            let normalized = Request {
                path,
                ..request.clone()
            };
            return self.dispatch_normalized(&normalized);
        }
        self.dispatch_normalized(request)
    }

    /// [`dispatch`](Self::dispatch) for a request whose path has no dot segment.
    #[inline]
    fn dispatch_normalized(&self, request: &Request<'_>) -> Result<Response, Error> {
        if self.hooks_see(request.path) {
            // Every step of `Direct` is a call that returns (a plugin in a child process is
            // waited for within its deadline).
            return self.exchange_now(&Direct(self), request);
        }
        self.route(request)
    }

    /// Calls the request's route, without hooks.
    #[inline]
    fn route(&self, request: &Request<'_>) -> Result<Response, Error> {
        if let Ok(found) = self.matcher.at(request.path)
            && let Some(target) = self.target(*found.value, request.method)
        {
            let lease = &self.leases[target.lease];
            return lease.handle(target.route, request, &found.params);
        }
        Err(self.miss(request))
    }

    /// The error for a request that matches no route.
    #[cold]
    fn miss(&self, request: &Request<'_>) -> Error {
        match self.lookup(request.method, request.path) {
            Lookup::MethodNotAllowed(allowed) => Error::new(ErrorKind::MethodNotAllowed {
                method: request.method.to_owned(),
                path: request.path.to_owned(),
                allowed: allowed.into_iter().map(str::to_owned).collect(),
            }),
            _ => Error::new(ErrorKind::RouteNotFound {
                path: request.path.to_owned(),
            }),
        }
    }
}

/// The steps of [`Router::dispatch`]: each call returns its answer (see [`Lease::hook`]), and a
/// failed hook or a request without a route is an error.
struct Direct<'r>(&'r Router);

impl StepsNow for Direct<'_> {
    type Stop = Error;

    fn hook(&self, index: usize, call: HookCall<'_, '_>) -> Result<HookAnswer, Error> {
        self.0.hook_lease(self.0.hook_target(index)).hook(call)
    }

    fn route(&self, request: &Request<'_>) -> Result<Response, Error> {
        self.0.route(request)
    }

    fn stop(&self, error: Error) -> Error {
        error
    }
}
