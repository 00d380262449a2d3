//! The safe Rust SDK: implement [`Plugin`], then export it with [`export_plugin!`](crate::export_plugin).

use crate::abi::{
    PLUGIN_LOG_DEBUG, PLUGIN_LOG_ERROR, PLUGIN_LOG_INFO, PLUGIN_LOG_TRACE, PLUGIN_LOG_WARN,
    PLUGIN_OK, PluginHost, PluginLogLevel, PluginRequest, PluginResponse, PluginRoute,
    PluginRouteSink, PluginStatus,
};
use crate::raw;
use serde::de::DeserializeOwned;
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
pub trait Plugin: Send + Sync + Sized + 'static {
    /// The plugin's name: non-empty, at most 128 bytes, no control characters.
    const NAME: &'static str;
    /// The plugin's version, usually `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// The instance configuration, deserialized with serde from the JSON the host passes
    /// (the `config` table of the plugin's entry; `{}` when there is none). Use [`NoConfig`]
    /// for a plugin without configuration.
    type Config: DeserializeOwned;

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

/// A read-only view of the request a handler answers.
pub struct Request<'a> {
    raw: &'a PluginRequest,
}

impl<'a> Request<'a> {
    pub(crate) fn new(raw: &'a PluginRequest) -> Self {
        Self { raw }
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

    /// The headers as (lower-case name, raw value) pairs, in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        // SAFETY: the host guarantees `header_count` entries at `headers`, borrowed for 'a.
        let headers = unsafe { raw::host_slice(self.raw.headers, self.raw.header_count) };
        // SAFETY: as in `method`.
        headers
            .iter()
            .map(|h| unsafe { (raw::host_str(h.name), raw::host_bytes(h.value)) })
    }

    /// The value of the first header called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
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
        let value = value.as_ref();
        // SAFETY: as in `status`; the host copies both arguments before it returns.
        let code = unsafe {
            (self.raw.add_header)(
                self.raw.ctx,
                raw::plugin_str(name),
                raw::plugin_bytes(value),
            )
        };
        check(code, || format!("the host refused the header `{name}`"))?;
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

fn check(code: PluginStatus, what: impl FnOnce() -> String) -> Result<()> {
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
