//! The SDK's side of the hooks (ABI 1.1): what a plugin names in [`Plugin::HOOKS`], and the
//! values its hook methods get. See [`Plugin`]'s docs for when the hooks run.
//!
//! [`Plugin`]: crate::Plugin
//! [`Plugin::HOOKS`]: crate::Plugin::HOOKS

use crate::abi::{
    PluginConnection, PluginConnectionStats, PluginHeaderEditor, PluginResponse,
    PluginResponseEditor, PluginResponseView,
};
use crate::raw;
use crate::sdk::{self, Response, Result};
use std::time::Duration;

/// The hooks a plugin has, as [`Plugin::HOOKS`](crate::Plugin::HOOKS) names them: the SDK puts
/// a hook into the plugin's descriptor only when its flag is set.
///
/// ```
/// use plugin_api::Hooks;
///
/// const HOOKS: Hooks = Hooks { on_request: true, on_response: true, ..Hooks::NONE };
/// assert!(!HOOKS.on_connect);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hooks {
    /// [`Plugin::on_request`](crate::Plugin::on_request) is called.
    pub on_request: bool,
    /// [`Plugin::on_response`](crate::Plugin::on_response) is called.
    pub on_response: bool,
    /// [`Plugin::on_connect`](crate::Plugin::on_connect) is called.
    pub on_connect: bool,
    /// [`Plugin::on_disconnect`](crate::Plugin::on_disconnect) is called.
    pub on_disconnect: bool,
}

/// The two sets most plugins start from. (A Rust-only type: kept out of the C header with
/// the annotation below.)
///
/// cbindgen:ignore
impl Hooks {
    /// No hooks: the plugin only has routes (the default of `Plugin::HOOKS`).
    pub const NONE: Hooks = Hooks {
        on_request: false,
        on_response: false,
        on_connect: false,
        on_disconnect: false,
    };

    /// All four hooks.
    pub const ALL: Hooks = Hooks {
        on_request: true,
        on_response: true,
        on_connect: true,
        on_disconnect: true,
    };
}

/// What an `on_connect` hook decides about a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve the connection (the other plugins' `on_connect` hooks may still refuse it).
    Accept,
    /// Close the connection before a request is read from it; no later `on_connect` hook runs.
    Refuse,
}

/// What an `on_request` hook may do with the request: change its headers, or answer it.
pub struct RequestHook<'a> {
    editor: &'a PluginHeaderEditor,
    response: Response<'a>,
    responds: bool,
}

impl<'a> RequestHook<'a> {
    pub(crate) fn new(editor: &'a PluginHeaderEditor, respond: &'a PluginResponse) -> Self {
        Self {
            editor,
            response: Response::new(respond),
            responds: false,
        }
    }

    /// Whether the hook answered the request ([`respond`](Self::respond)).
    pub(crate) fn responds(&self) -> bool {
        self.responds
    }

    /// Appends a request header, after any of the same name. The later hooks and the route
    /// see it. The host refuses an invalid name or value and the headers that describe the
    /// message (`content-length`, `host`, ...): see `PluginHeaderEditor` in the ABI.
    pub fn add_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<&mut Self> {
        // SAFETY: the editor is valid for this hook call, on this thread ([in-call]).
        unsafe { sdk::header_call(self.editor.add, self.editor.ctx, name, value.as_ref()) }?;
        Ok(self)
    }

    /// Replaces every request header called `name` with one header of this value (or adds it).
    /// Refused as [`add_header`](Self::add_header) is.
    pub fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<&mut Self> {
        // SAFETY: as in `add_header`.
        unsafe { sdk::header_call(self.editor.set, self.editor.ctx, name, value.as_ref()) }?;
        Ok(self)
    }

    /// Removes every request header called `name` (none is not an error).
    pub fn remove_header(&mut self, name: &str) -> Result<&mut Self> {
        // SAFETY: as in `add_header`; the host copies the name before it returns.
        let code = unsafe { (self.editor.remove)(self.editor.ctx, raw::plugin_str(name)) };
        sdk::check(code, || {
            format!("the host refused to remove the header `{name}`")
        })?;
        Ok(self)
    }

    /// Answers the request now with `status`, and returns the writer for the rest of the
    /// answer (headers and body, as in a handler). When the hook returns `Ok`, this answer goes
    /// to the client: no later `on_request` hook and no route runs, and only the `on_response`
    /// hooks of the plugins registered before this one see it. When the hook returns an error,
    /// the request fails as it would without this call.
    pub fn respond(&mut self, status: u16) -> Result<&mut Response<'a>> {
        self.response.status(status)?;
        self.responds = true;
        Ok(&mut self.response)
    }
}

/// What an `on_response` hook sees of the response, and may change.
///
/// The getters show the response as it was when the hook started (with the changes of the
/// `on_response` hooks that ran before this one); the changes made through the setters apply
/// when the hook returns `Ok`, and are dropped when it fails.
pub struct ResponseHook<'a> {
    view: &'a PluginResponseView,
    editor: &'a PluginResponseEditor,
}

impl<'a> ResponseHook<'a> {
    pub(crate) fn new(view: &'a PluginResponseView, editor: &'a PluginResponseEditor) -> Self {
        Self { view, editor }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.view.status
    }

    /// The headers as (lower-case name, raw value) pairs.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        // SAFETY: the host guarantees `header_count` headers with UTF-8 names, borrowed for the
        // call ('a).
        unsafe { sdk::headers(self.view.headers, self.view.header_count) }
    }

    /// The value of the first header called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        sdk::find_header(self.headers(), name)
    }

    /// The body.
    pub fn body(&self) -> &'a [u8] {
        // SAFETY: the host guarantees the body, borrowed for the call ('a).
        unsafe { raw::host_bytes(self.view.body) }
    }

    /// Replaces the status (200 to 999).
    pub fn set_status(&mut self, status: u16) -> Result<&mut Self> {
        // SAFETY: the editor is valid for this hook call, on this thread ([in-call]).
        let code = unsafe { (self.editor.set_status)(self.editor.ctx, status) };
        sdk::check(code, || format!("the host refused HTTP status {status}"))?;
        Ok(self)
    }

    /// Appends a header, after any of the same name. The host refuses an invalid name or value
    /// and the headers that frame the message, as in a handler's [`Response::header`].
    pub fn add_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<&mut Self> {
        let (add, ctx) = (self.editor.add_header, self.editor.ctx);
        // SAFETY: as in `set_status`.
        unsafe { sdk::header_call(add, ctx, name, value.as_ref()) }?;
        Ok(self)
    }

    /// Replaces every header called `name` with one header of this value (or adds it).
    pub fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<&mut Self> {
        let (set, ctx) = (self.editor.set_header, self.editor.ctx);
        // SAFETY: as in `set_status`.
        unsafe { sdk::header_call(set, ctx, name, value.as_ref()) }?;
        Ok(self)
    }

    /// Removes every header called `name` (none is not an error).
    pub fn remove_header(&mut self, name: &str) -> Result<&mut Self> {
        // SAFETY: as in `set_status`; the host copies the name before it returns.
        let code = unsafe { (self.editor.remove_header)(self.editor.ctx, raw::plugin_str(name)) };
        sdk::check(code, || {
            format!("the host refused to remove the header `{name}`")
        })?;
        Ok(self)
    }

    /// Replaces the whole body (a later call replaces an earlier one).
    pub fn set_body(&mut self, body: impl AsRef<[u8]>) -> Result<&mut Self> {
        // SAFETY: as in `set_status`; the host copies the bytes before it returns.
        let code =
            unsafe { (self.editor.set_body)(self.editor.ctx, raw::plugin_bytes(body.as_ref())) };
        sdk::check(code, || "the host refused the body".to_owned())?;
        Ok(self)
    }
}

/// A client's connection, as `on_connect` sees it.
pub struct Connection<'a> {
    raw: &'a PluginConnection,
}

impl<'a> Connection<'a> {
    pub(crate) fn new(raw: &'a PluginConnection) -> Self {
        Self { raw }
    }

    /// The client's address, `IP:PORT` (`127.0.0.1:50412`, `[::1]:50412`); empty when the
    /// connection is not a socket.
    pub fn client(&self) -> &'a str {
        // SAFETY: the host hands the connection, borrowed for the call ('a), with UTF-8 strings.
        unsafe { raw::host_str(self.raw.client) }
    }

    /// The host's address the client connected to, `IP:PORT`; empty when the connection is not
    /// a socket.
    pub fn local(&self) -> &'a str {
        // SAFETY: as in `client`.
        unsafe { raw::host_str(self.raw.local) }
    }
}

/// What a connection did, as `on_disconnect` is told once it closed.
pub struct ConnectionStats<'a> {
    raw: &'a PluginConnectionStats,
}

impl<'a> ConnectionStats<'a> {
    pub(crate) fn new(raw: &'a PluginConnectionStats) -> Self {
        Self { raw }
    }

    /// The client's address, as [`Connection::client`].
    pub fn client(&self) -> &'a str {
        Connection::new(&self.raw.connection).client()
    }

    /// The host's address, as [`Connection::local`].
    pub fn local(&self) -> &'a str {
        Connection::new(&self.raw.connection).local()
    }

    /// The number of requests received on the connection (each one is answered, unless the
    /// connection broke first).
    pub fn requests(&self) -> u64 {
        self.raw.requests
    }

    /// The bytes read from the client.
    pub fn bytes_in(&self) -> u64 {
        self.raw.bytes_in
    }

    /// The bytes written to the client.
    pub fn bytes_out(&self) -> u64 {
        self.raw.bytes_out
    }

    /// How long the connection was open (to the microsecond).
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.raw.duration_us)
    }
}
