//! The safe Rust SDK: implement [`Plugin`], then export it with [`export_plugin!`](crate::export_plugin).

use crate::abi::{
    PLUGIN_LOG_DEBUG, PLUGIN_LOG_ERROR, PLUGIN_LOG_INFO, PLUGIN_LOG_TRACE, PLUGIN_LOG_WARN,
    PLUGIN_OK, PluginBytes, PluginConnection, PluginHost, PluginHttpHeader, PluginLogLevel,
    PluginRequest, PluginResponse, PluginRoute, PluginRouteSink, PluginStatus, PluginStr,
};
use crate::hooks::{Connection, ConnectionStats, Hooks, RequestHook, ResponseHook, Verdict};
use crate::raw;
use serde::de::DeserializeOwned;
use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;

/// A plugin's error: a message that the host reports together with the plugin's name.
///
/// Like `anyhow::Error`, any `std::error::Error` converts into it with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with the given message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Self::msg(error)
    }
}

/// The result type of every SDK call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The configuration type of a plugin that takes none: accepts any JSON and ignores it.
pub type NoConfig = serde::de::IgnoredAny;

/// A route handler: a plain function of the plugin that answers one request.
///
/// It runs concurrently on many threads, so it only gets `&P`; keep mutable state behind
/// atomics or locks.
pub type Handler<P> = fn(&P, &Request<'_>, &mut Response<'_>) -> Result<()>;

/// A plugin written in safe Rust.
///
/// The host calls `create` once per configured instance, then `start`, `routes`, the route
/// handlers (concurrently), and finally `stop`; the instance is dropped after that. Every call is
/// wrapped by the SDK so that a panic becomes an error status in the host, never an unwind
/// across the boundary.
///
/// # Hooks
///
/// Besides its routes, a plugin may act on every request, response and connection of the host
/// (ABI 1.1): implement the hook methods and name them in [`HOOKS`](Self::HOOKS). Only the
/// hooks named there are wired into the descriptor; the host never calls the others, so a
/// plugin without hooks costs nothing per request.
///
/// - Order: for a request, the `on_request` hooks of all plugins run in the order the plugins
///   were registered, then the route's handler, then the `on_response` hooks in the reverse
///   order (an onion: the first registered sees the response last). A hook that answers the
///   request itself ([`RequestHook::respond`]) ends the chain: no later `on_request` hook and
///   no route runs, and only the `on_response` hooks of the plugins registered before it see
///   the answer. `on_connect` hooks run in registry order when a client connects, before any
///   request is read, up to the first that refuses; `on_disconnect` once it closed.
/// - Threads: like handlers, hooks run concurrently on many threads (they only get `&self`),
///   only between `start` and `stop`. `on_disconnect` runs on a host thread apart from the
///   requests and never delays a response; the host may drop its calls when too many queue up.
/// - Failures: a hook that returns an error or panics fails the request closed (the client gets
///   500 naming the plugin; the message goes to the host's log only), and after a panic the
///   plugin is taken out of service, as after a handler panic. A hook past the plugin's
///   handler deadline gets its request 504. A failing `on_connect` refuses the connection.
/// - Scope: the plugin's entry in the host's configuration may limit `on_request` and
///   `on_response` to some paths (`hook_paths`); they see every path otherwise.
///
/// ```
/// use plugin_api::{Hooks, Host, NoConfig, Plugin, Request, RequestHook, Result, Routes};
///
/// /// Refuses every request without an `x-api-key` header.
/// struct KeyCheck;
///
/// impl Plugin for KeyCheck {
///     const NAME: &'static str = "key-check";
///     const VERSION: &'static str = "1.0.0";
///     const HOOKS: Hooks = Hooks { on_request: true, ..Hooks::NONE };
///     type Config = NoConfig;
///
///     fn create(_: NoConfig, _: Host) -> Result<Self> {
///         Ok(KeyCheck)
///     }
///
///     fn routes(&self, _: &mut Routes<'_, Self>) -> Result<()> {
///         Ok(())
///     }
///
///     fn on_request(&self, request: &Request<'_>, hook: &mut RequestHook<'_>) -> Result<()> {
///         if request.header("x-api-key").is_none() {
///             hook.respond(401)?
///                 .header("www-authenticate", "ApiKey")?
///                 .text("an API key is required")?;
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Plugin: Send + Sync + Sized + 'static {
    /// The plugin's name: non-empty, at most 128 bytes, no control characters.
    const NAME: &'static str;
    /// The plugin's version, usually `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// The instance configuration, deserialized with serde from the JSON the host passes
    /// (the `config` table of the plugin's entry; `{}` when there is none). Use [`NoConfig`]
    /// for a plugin without configuration.
    type Config: DeserializeOwned;

    /// The hooks the plugin has: the SDK wires only these into the descriptor and leaves the
    /// others NULL, so the host never calls them. The default is none. A hook method that is
    /// implemented but not named here is never called.
    const HOOKS: Hooks = Hooks::NONE;

    /// Creates an instance. `host` gives access to host services for the instance's life.
    fn create(config: Self::Config, host: Host) -> Result<Self>;

    /// Called once before any handler. The default does nothing.
    fn start(&self) -> Result<()> {
        Ok(())
    }

    /// Called once after the last handler has returned, if `start` succeeded. A host that ends
    /// abnormally may drop a started instance without calling it. The default does nothing.
    fn stop(&self) -> Result<()> {
        Ok(())
    }

    /// Declares the instance's routes.
    fn routes(&self, routes: &mut Routes<'_, Self>) -> Result<()>;

    /// Sees every request before its route, with no path parameters (no route has matched
    /// yet); [`Request::client`] and [`Request::local`] give the connection's addresses. Through
    /// `hook` it may change the request's headers, which the later hooks and the route see, or
    /// answer the request itself with [`RequestHook::respond`]. Called only if
    /// [`HOOKS`](Self::HOOKS) names it; see the trait's docs for the order and threads. The
    /// default does nothing.
    #[allow(unused_variables)]
    fn on_request(&self, request: &Request<'_>, hook: &mut RequestHook<'_>) -> Result<()> {
        Ok(())
    }

    /// Sees every response on its way to the client (of a route, of an `on_request` hook, or
    /// the host's 404 and 405) and may change its status, headers and body through `response`.
    /// `request` is the request as the route saw it. Called only if [`HOOKS`](Self::HOOKS)
    /// names it; see the trait's docs for the order and threads. The default does nothing.
    #[allow(unused_variables)]
    fn on_response(&self, request: &Request<'_>, response: &mut ResponseHook<'_>) -> Result<()> {
        Ok(())
    }

    /// Decides whether a new connection is served, before any request is read from it. An
    /// error refuses it too (fail closed). Called only if [`HOOKS`](Self::HOOKS) names it. The
    /// default accepts.
    #[allow(unused_variables)]
    fn on_connect(&self, connection: &Connection<'_>) -> Result<Verdict> {
        Ok(Verdict::Accept)
    }

    /// Told what a connection did once it closed, for every connection no `on_connect` hook
    /// refused. It runs apart from the requests and cannot fail: a panic is caught and
    /// dropped. Called only if [`HOOKS`](Self::HOOKS) names it. The default does nothing.
    #[allow(unused_variables)]
    fn on_disconnect(&self, stats: &ConnectionStats<'_>) {}
}

/// The host services of one instance (logging, for now). The host keeps them valid until the
/// plugin's library is unloaded, so a `Host` may be kept and used anywhere (a global, another
/// thread) for as long as the plugin's code runs.
#[derive(Clone, Copy)]
pub struct Host {
    raw: &'static PluginHost,
}

// SAFETY: the header makes `PluginHost::log` [thread-safe] and keeps the vtable alive until the
// library is unloaded, after which none of this library's code, this `Host` included, runs.
unsafe impl Send for Host {}
// SAFETY: as for `Send`; `Host` only exposes `log`, which is [thread-safe].
unsafe impl Sync for Host {}

impl Host {
    /// Wraps the host's vtable.
    ///
    /// # Safety
    /// `raw` must be NULL or point to a `PluginHost` that stays valid until the library is
    /// unloaded, as the header guarantees for the pointer passed to `create`.
    pub(crate) unsafe fn from_raw(raw: *const PluginHost) -> Option<Self> {
        // SAFETY: valid until the library is unloaded (caller), which is `'static` from the
        // point of view of any code in the library.
        unsafe { raw.as_ref() }.map(|raw| Self { raw })
    }

    /// Logs `message` at `level` (one of the `PLUGIN_LOG_*` constants) in the host's log,
    /// tagged with the instance's name.
    pub fn log(&self, level: PluginLogLevel, message: &str) {
        // SAFETY: `ctx` and `log` come from a valid `PluginHost`; `log` is [thread-safe] and
        // copies the message before it returns.
        unsafe { (self.raw.log)(self.raw.ctx, level, raw::plugin_str(message)) }
    }

    /// Logs at error level.
    pub fn error(&self, message: &str) {
        self.log(PLUGIN_LOG_ERROR, message);
    }

    /// Logs at warning level.
    pub fn warn(&self, message: &str) {
        self.log(PLUGIN_LOG_WARN, message);
    }

    /// Logs at info level.
    pub fn info(&self, message: &str) {
        self.log(PLUGIN_LOG_INFO, message);
    }

    /// Logs at debug level.
    pub fn debug(&self, message: &str) {
        self.log(PLUGIN_LOG_DEBUG, message);
    }

    /// Logs at trace level.
    pub fn trace(&self, message: &str) {
        self.log(PLUGIN_LOG_TRACE, message);
    }
}

/// A read-only view of the request a handler or a hook sees.
pub struct Request<'a> {
    raw: &'a PluginRequest,
    /// The connection, handed to hooks only.
    connection: Option<&'a PluginConnection>,
}

impl<'a> Request<'a> {
    /// The request a handler sees.
    pub(crate) fn new(raw: &'a PluginRequest) -> Self {
        Self {
            raw,
            connection: None,
        }
    }

    /// The request a hook sees, with the connection it came on.
    pub(crate) fn with_connection(
        raw: &'a PluginRequest,
        connection: &'a PluginConnection,
    ) -> Self {
        Self {
            raw,
            connection: Some(connection),
        }
    }

    /// The method, upper-case.
    pub fn method(&self) -> &'a str {
        // SAFETY: the host hands a valid request, borrowed for 'a, whose strings are UTF-8.
        unsafe { raw::host_str(self.raw.method) }
    }

    /// The path, without the query string: dot segments removed, otherwise percent-encoded.
    pub fn path(&self) -> &'a str {
        // SAFETY: as in `method`.
        unsafe { raw::host_str(self.raw.path) }
    }

    /// The query string without `?`, empty when there is none.
    pub fn query(&self) -> &'a str {
        // SAFETY: as in `method`.
        unsafe { raw::host_str(self.raw.query) }
    }

    /// The body.
    pub fn body(&self) -> &'a [u8] {
        // SAFETY: as in `method`.
        unsafe { raw::host_bytes(self.raw.body) }
    }

    /// The headers as (lower-case name, raw value) pairs, in the order received (in a hook
    /// and a route: with the changes of the `on_request` hooks before it).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        // SAFETY: the host guarantees `header_count` entries at `headers`, borrowed for 'a,
        // with UTF-8 names.
        unsafe { headers(self.raw.headers, self.raw.header_count) }
    }

    /// The value of the first header called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        find_header(self.headers(), name)
    }

    /// The client's address (`IP:PORT`), in a hook; `None` in a route's handler, and when the
    /// request did not come through a socket.
    pub fn client(&self) -> Option<&'a str> {
        // SAFETY: as in `method`; the connection is borrowed for 'a as well.
        self.connection
            .map(|c| unsafe { raw::host_str(c.client) })
            .filter(|s| !s.is_empty())
    }

    /// The host's address the client connected to (`IP:PORT`), in a hook; `None` in a route's
    /// handler, and when the request did not come through a socket.
    pub fn local(&self) -> Option<&'a str> {
        // SAFETY: as in `client`.
        self.connection
            .map(|c| unsafe { raw::host_str(c.local) })
            .filter(|s| !s.is_empty())
    }

    /// The path parameters as (name, value) pairs, in pattern order; values percent-decoded,
    /// never holding a `..` segment (see `PluginParam` in the ABI).
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        // SAFETY: the host guarantees `param_count` entries at `params`, borrowed for 'a.
        let params = unsafe { raw::host_slice(self.raw.params, self.raw.param_count) };
        // SAFETY: as in `method`.
        params
            .iter()
            .map(|p| unsafe { (raw::host_str(p.name), raw::host_str(p.value)) })
    }

    /// The value of the path parameter `name` (`{name}` in the route pattern).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The first value of the query parameter `name`, as written (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query().split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }
}

/// The writer for a handler's response; the status is 200 until set.
pub struct Response<'a> {
    raw: &'a PluginResponse,
}

impl<'a> Response<'a> {
    pub(crate) fn new(raw: &'a PluginResponse) -> Self {
        Self { raw }
    }

    /// Sets the HTTP status.
    pub fn status(&mut self, status: u16) -> Result<&mut Self> {
        // SAFETY: the writer is valid for this handler call, on this thread.
        let code = unsafe { (self.raw.set_status)(self.raw.ctx, status) };
        check(code, || format!("the host refused HTTP status {status}"))?;
        Ok(self)
    }

    /// Appends a header.
    pub fn header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<&mut Self> {
        // SAFETY: as in `status`.
        unsafe { header_call(self.raw.add_header, self.raw.ctx, name, value.as_ref()) }?;
        Ok(self)
    }

    /// Appends bytes to the body.
    pub fn write(&mut self, data: impl AsRef<[u8]>) -> Result<&mut Self> {
        // SAFETY: as in `status`; the host copies the bytes before it returns.
        let code = unsafe { (self.raw.write_body)(self.raw.ctx, raw::plugin_bytes(data.as_ref())) };
        check(code, || "the host refused the body".to_owned())?;
        Ok(self)
    }

    /// Writes a `text/plain` body.
    pub fn text(&mut self, body: &str) -> Result<()> {
        self.header("content-type", "text/plain; charset=utf-8")?
            .write(body)?;
        Ok(())
    }

    /// Writes `value` as an `application/json` body.
    pub fn json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let body = serde_json::to_vec(value)?;
        self.header("content-type", "application/json")?
            .write(body)?;
        Ok(())
    }
}

/// Borrows `count` headers at `ptr` as (name, value) pairs.
///
/// # Safety
/// As for `raw::host_slice`, and every name must be UTF-8 and every (pointer, length) pair
/// valid for `'a`: what the header guarantees for the headers the host hands in.
pub(crate) unsafe fn headers<'a>(
    ptr: *const PluginHttpHeader,
    count: usize,
) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
    // SAFETY: forwarded to the caller.
    let headers = unsafe { raw::host_slice(ptr, count) };
    // SAFETY: forwarded to the caller.
    headers
        .iter()
        .map(|h| unsafe { (raw::host_str(h.name), raw::host_bytes(h.value)) })
}

/// The value of the first of `headers` called `name` (compared case-insensitively).
pub(crate) fn find_header<'a>(
    mut headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    name: &str,
) -> Option<&'a [u8]> {
    headers
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// A host function that takes a header name and value: `PluginResponse::add_header` and the
/// editors' `add` and `set`.
pub(crate) type HeaderFn =
    unsafe extern "C" fn(ctx: *mut c_void, name: PluginStr, value: PluginBytes) -> PluginStatus;

/// Calls `f` with `ctx` and the header `name: value`; an error names the header if the host
/// refuses it.
///
/// # Safety
/// `f` and `ctx` must come from one host struct that is valid for the current call, on this
/// thread (an `[in-call]` writer or editor). The host copies both arguments before it returns.
pub(crate) unsafe fn header_call(
    f: HeaderFn,
    ctx: *mut c_void,
    name: &str,
    value: &[u8],
) -> Result<()> {
    // SAFETY: forwarded to the caller; `name` and `value` outlive the call.
    let code = unsafe { f(ctx, raw::plugin_str(name), raw::plugin_bytes(value)) };
    check(code, || format!("the host refused the header `{name}`"))
}

/// `Ok` if the host answered `PLUGIN_OK`, otherwise the error `what` describes.
pub(crate) fn check(code: PluginStatus, what: impl FnOnce() -> String) -> Result<()> {
    if code == PLUGIN_OK {
        Ok(())
    } else {
        Err(Error::msg(what()))
    }
}

/// Collects an instance's routes; handed to [`Plugin::routes`].
pub struct Routes<'a, P> {
    sink: &'a PluginRouteSink,
    plugin: PhantomData<fn(&P)>,
}

impl<'a, P: Plugin> Routes<'a, P> {
    pub(crate) fn new(sink: &'a PluginRouteSink) -> Self {
        Self {
            sink,
            plugin: PhantomData,
        }
    }

    /// Adds a route for `method` (upper-case) and `path` (a pattern such as `/greet/{name}`
    /// or `/files/{*rest}`).
    pub fn route(&mut self, method: &str, path: &str, handler: Handler<P>) -> Result<&mut Self> {
        let route = PluginRoute {
            struct_size: size_of::<PluginRoute>() as u32,
            method: raw::plugin_str(method),
            path: raw::plugin_str(path),
            handler: Some(crate::export::handle::<P>),
            user_data: raw::handler_to_user_data(handler),
        };
        // SAFETY: the sink is valid during `routes`; the host copies the route before returning.
        let code = unsafe { (self.sink.add)(self.sink.ctx, &route) };
        check(code, || {
            format!("the host refused the route {method} {path}")
        })?;
        Ok(self)
    }

    /// Adds a `GET` route.
    pub fn get(&mut self, path: &str, handler: Handler<P>) -> Result<&mut Self> {
        self.route("GET", path, handler)
    }

    /// Adds a `POST` route.
    pub fn post(&mut self, path: &str, handler: Handler<P>) -> Result<&mut Self> {
        self.route("POST", path, handler)
    }

    /// Adds a `PUT` route.
    pub fn put(&mut self, path: &str, handler: Handler<P>) -> Result<&mut Self> {
        self.route("PUT", path, handler)
    }

    /// Adds a `DELETE` route.
    pub fn delete(&mut self, path: &str, handler: Handler<P>) -> Result<&mut Self> {
        self.route("DELETE", path, handler)
    }
}
