//! A live plugin instance: the opaque pointer `create` returned, and the calls on it.
//!
//! The methods that call into the plugin are `unsafe fn`s whose `# Safety` sections restate the
//! header's threading rules; `crate::plugin` upholds them with its lifecycle lock and leases.

use super::callbacks::{ErrorSlot, RouteCollector};
use super::crash::{self, CallDescription, Callee};
use super::descriptor::Descriptor;
use crate::error::{Error, ErrorKind, PluginText};
use crate::hook::{
    ConnectVerdict, Connection, ConnectionStats, HookSet, RequestVerdict, ResponseEdit,
};
use crate::message::{Request, Response};
use crate::pluginlog::LogLimiter;
use plugin_api::abi::{
    PLUGIN_ERROR, PLUGIN_OK, PLUGIN_PANICKED, PLUGIN_REFUSE, PLUGIN_RESPOND, PluginBytes,
    PluginConnection, PluginConnectionStats, PluginErrorSink, PluginHeaderEditor, PluginHost,
    PluginHttpHeader, PluginParam, PluginRequest, PluginResponse, PluginResponseEditor,
    PluginResponseView, PluginRouteSink, PluginStatus, PluginStr,
};
use std::borrow::Cow;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::Arc;

pub(crate) use super::callbacks::RouteDef;

pub(super) type CreateFn = unsafe extern "C" fn(
    *const PluginHost,
    PluginStr,
    *mut *mut c_void,
    *const PluginErrorSink,
) -> PluginStatus;
pub(super) type LifecycleFn =
    unsafe extern "C" fn(*mut c_void, *const PluginErrorSink) -> PluginStatus;
pub(super) type DestroyFn = unsafe extern "C" fn(*mut c_void);
pub(super) type RoutesFn = unsafe extern "C" fn(
    *mut c_void,
    *const PluginRouteSink,
    *const PluginErrorSink,
) -> PluginStatus;
pub(super) type HandlerFn = unsafe extern "C" fn(
    *mut c_void,
    *mut c_void,
    *const PluginRequest,
    *const PluginResponse,
    *const PluginErrorSink,
) -> PluginStatus;

pub(super) type OnRequestFn = unsafe extern "C" fn(
    *mut c_void,
    *const PluginRequest,
    *const PluginConnection,
    *const PluginHeaderEditor,
    *const PluginResponse,
    *const PluginErrorSink,
) -> PluginStatus;
pub(super) type OnResponseFn = unsafe extern "C" fn(
    *mut c_void,
    *const PluginRequest,
    *const PluginConnection,
    *const PluginResponseView,
    *const PluginResponseEditor,
    *const PluginErrorSink,
) -> PluginStatus;
pub(super) type OnConnectFn = unsafe extern "C" fn(
    *mut c_void,
    *const PluginConnection,
    *const PluginErrorSink,
) -> PluginStatus;
pub(super) type OnDisconnectFn = unsafe extern "C" fn(*mut c_void, *const PluginConnectionStats);

/// A descriptor's hook functions (ABI 1.1), each absent when NULL.
#[derive(Clone, Copy, Default)]
pub(crate) struct HookFns {
    pub(super) on_request: Option<OnRequestFn>,
    pub(super) on_response: Option<OnResponseFn>,
    pub(super) on_connect: Option<OnConnectFn>,
    pub(super) on_disconnect: Option<OnDisconnectFn>,
}

impl HookFns {
    /// Which hooks there are.
    pub(crate) fn set(&self) -> HookSet {
        HookSet {
            on_request: self.on_request.is_some(),
            on_response: self.on_response.is_some(),
            on_connect: self.on_connect.is_some(),
            on_disconnect: self.on_disconnect.is_some(),
        }
    }
}

/// What a crash line says of a call to each hook of an instance, made once when it is created.
struct HookCalls {
    on_request: CallDescription,
    on_response: CallDescription,
    on_connect: CallDescription,
    on_disconnect: CallDescription,
}

/// A route's `user_data`: opaque to the host, which only hands it back to the handler.
#[derive(Clone, Copy)]
pub(crate) struct UserData(pub(super) *mut c_void);

// SAFETY: the host never dereferences `user_data`; it only passes it to the route's handler,
// which the header makes [thread-safe].
unsafe impl Send for UserData {}
// SAFETY: as for `Send`.
unsafe impl Sync for UserData {}

/// Request headers, kept in the ABI's form from the start so that a dispatch passes them to
/// the plugin as they are.
#[derive(Debug, Clone, Default)]
pub(crate) struct Headers<'a> {
    raw: Vec<PluginHttpHeader>,
    borrowed: PhantomData<&'a [u8]>,
}

// SAFETY: the raw pointers are shared borrows of `'a` data (`&str` and `&[u8]`, which are Send
// and Sync); nothing writes through them.
unsafe impl Send for Headers<'_> {}
// SAFETY: as for `Send`.
unsafe impl Sync for Headers<'_> {}

impl<'a> Headers<'a> {
    /// Appends a header; the strings stay borrowed for `'a`.
    pub(crate) fn push(&mut self, name: &'a str, value: &'a [u8]) {
        self.raw.push(PluginHttpHeader {
            name: as_plugin_str(name),
            value: as_plugin_bytes(value),
        });
    }

    /// The headers, as they were pushed.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        self.raw.iter().map(|header| {
            // SAFETY: every entry was made by `push` from a `&'a str` and a `&'a [u8]`, which
            // stay borrowed (and unchanged) for `'a`: the pointers and lengths are theirs.
            unsafe {
                (
                    std::str::from_utf8_unchecked(raw_slice(header.name.ptr, header.name.len)),
                    raw_slice(header.value.ptr, header.value.len),
                )
            }
        })
    }

    /// Makes room for `additional` more headers.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.raw.reserve(additional);
    }

    fn as_raw(&self) -> &[PluginHttpHeader] {
        &self.raw
    }
}

/// The bytes of a (pointer, length) pair made from a slice.
///
/// # Safety
/// `ptr` and `len` must come from a slice that is still borrowed for `'a`.
unsafe fn raw_slice<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    // SAFETY: the caller guarantees a live slice; an empty one may have a dangling pointer,
    // which `from_raw_parts` accepts when it is non-null and aligned (slices' always are).
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// A `&str` as a `PluginStr` borrowed for the duration of a call.
fn as_plugin_str(s: &str) -> PluginStr {
    PluginStr {
        ptr: s.as_ptr(),
        len: s.len(),
    }
}

fn as_plugin_bytes(b: &[u8]) -> PluginBytes {
    PluginBytes {
        ptr: b.as_ptr(),
        len: b.len(),
    }
}

/// One instance of a plugin. Dropping it calls `destroy`, then releases the descriptor (and
/// with the last reference, the library).
pub(crate) struct RawInstance {
    ptr: *mut c_void,
    /// The instance's name.
    pub(crate) name: String,
    descriptor: Arc<Descriptor>,
    /// The rate limit of what it logs.
    pub(crate) log: Arc<LogLimiter>,
    /// The crash descriptions of its hook calls; `None` when it has no hook.
    hook_calls: Option<Box<HookCalls>>,
}

// SAFETY: the instance pointer is only passed back to the plugin: handlers are [thread-safe]
// by the header, and lifecycle calls are `unsafe fn`s whose callers serialize them.
unsafe impl Send for RawInstance {}
// SAFETY: as for `Send`.
unsafe impl Sync for RawInstance {}

impl RawInstance {
    /// Calls the plugin's `create` with `config` (a JSON document).
    pub(crate) fn create(
        descriptor: Arc<Descriptor>,
        name: &str,
        config: &str,
    ) -> Result<Self, Error> {
        // The default limit until the instance's own is set (its `create` logs within it).
        let log = LogLimiter::new(name, crate::LogLimit::default());
        let services = descriptor.services_for(name, Arc::clone(&log));
        let mut slot = ErrorSlot::default();
        let mut ptr = std::ptr::null_mut();
        let call = Callee::instance(name, &descriptor).call("create");
        let status = crash::during(&call, || {
            // SAFETY: `create` comes from a validated descriptor whose library `descriptor`
            // keeps loaded; `services` lives as long as the library, and the config,
            // out-pointer and error sink outlive the call. `create` is [any-thread].
            unsafe { (descriptor.create)(services, as_plugin_str(config), &mut ptr, &slot.sink()) }
        });
        let error = |kind| {
            Error::new(kind)
                .with_file(descriptor.file.as_deref())
                .with_plugin(name)
        };
        check(status, &mut slot, "create", |reason| {
            ErrorKind::CreateFailed { reason }
        })
        .map_err(error)?;
        let hook_calls = descriptor.hooks.set().any().then(|| {
            let callee = Callee::instance(name, &descriptor);
            Box::new(HookCalls {
                on_request: callee.call("on_request"),
                on_response: callee.call("on_response"),
                on_connect: callee.call("on_connect"),
                on_disconnect: callee.call("on_disconnect"),
            })
        });
        Ok(Self {
            ptr,
            name: name.to_owned(),
            descriptor,
            log,
            hook_calls,
        })
    }

    /// The hooks the instance's plugin has.
    pub(crate) fn hooks(&self) -> HookSet {
        self.descriptor.hooks.set()
    }

    /// The crash descriptions of the hook calls; only called for a plugin that has hooks.
    fn hook_calls(&self) -> &HookCalls {
        self.hook_calls
            .as_deref()
            .expect("an instance whose plugin has hooks describes their calls")
    }

    /// The descriptor this instance was created from.
    pub(crate) fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    fn error(&self, kind: ErrorKind) -> Error {
        Error::new(kind)
            .with_file(self.descriptor.file.as_deref())
            .with_plugin(&self.name)
    }

    fn lifecycle(
        &self,
        f: Option<LifecycleFn>,
        call: &str,
        kind: fn(PluginText) -> ErrorKind,
    ) -> Result<(), Error> {
        let Some(f) = f else { return Ok(()) };
        let mut slot = ErrorSlot::default();
        let description = Callee::instance(&self.name, &self.descriptor).call(call);
        let status = crash::during(&description, || {
            // SAFETY: the caller (`start` / `stop`) guarantees the threading rule; the instance
            // pointer is the one `create` produced and the sink outlives the call.
            unsafe { f(self.ptr, &slot.sink()) }
        });
        check(status, &mut slot, call, kind).map_err(|k| self.error(k))
    }

    /// Calls `start`.
    ///
    /// # Safety
    /// No other call on this instance may run concurrently, and it must not have been started.
    pub(crate) unsafe fn start(&self) -> Result<(), Error> {
        self.lifecycle(self.descriptor.start, "start", |reason| {
            ErrorKind::StartFailed { reason }
        })
    }

    /// Calls `stop`.
    ///
    /// # Safety
    /// No other call on this instance may run concurrently (no handler either), and it must
    /// have been started and not stopped.
    pub(crate) unsafe fn stop(&self) -> Result<(), Error> {
        self.lifecycle(self.descriptor.stop, "stop", |reason| {
            ErrorKind::StopFailed { reason }
        })
    }

    /// Calls `routes` and returns the copied routes.
    ///
    /// # Safety
    /// No other lifecycle call on this instance may run concurrently.
    pub(crate) unsafe fn routes(&self) -> Result<Vec<RouteDef>, Error> {
        let Some(routes) = self.descriptor.routes else {
            return Ok(Vec::new());
        };
        let mut collector = RouteCollector::new(Callee::instance(&self.name, &self.descriptor));
        let mut slot = ErrorSlot::default();
        let description = collector.callee.call("routes");
        let status = crash::during(&description, || {
            // SAFETY: the caller guarantees the threading rule; the sinks outlive the call.
            unsafe { routes(self.ptr, &collector.sink(), &slot.sink()) }
        });
        let failed = |reason| ErrorKind::RoutesFailed { reason };
        if let Some(reason) = collector.error.take() {
            return Err(self.error(failed(format!("the plugin passed {reason}").into())));
        }
        check(status, &mut slot, "routes", failed).map_err(|k| self.error(k))?;
        Ok(collector.routes)
    }

    /// Calls a route's handler with `request` and the matched path `params`.
    ///
    /// # Safety
    /// `route` must come from this instance's `routes`, and the instance must be started and
    /// not stopped for the whole call (`stop` must not run concurrently).
    pub(crate) unsafe fn handle(
        &self,
        route: &RouteDef,
        request: &Request<'_>,
        params: &matchit::Params<'_, '_>,
    ) -> Result<Response, Error> {
        // Up to four parameters live on the stack, unset until written; more (rare) go to the
        // heap. A route without parameters (the common case) skips all of it.
        // Values are percent-decoded; those that had escapes live in `decoded` until the call
        // returns (a `String`'s bytes stay put when the vector grows).
        const INLINE: usize = 4;
        let mut inline = [MaybeUninit::<PluginParam>::uninit(); INLINE];
        let mut heap = Vec::new();
        let mut decoded: Vec<String> = Vec::new();
        let mut param = |name: &str, value: &str| -> Result<PluginParam, Error> {
            let value = match crate::path::decode_param(value).map_err(|e| {
                self.error(ErrorKind::BadPath {
                    reason: e.to_string(),
                })
            })? {
                Cow::Borrowed(value) => as_plugin_str(value),
                Cow::Owned(value) => {
                    decoded.push(value);
                    as_plugin_str(decoded.last().expect("just pushed"))
                }
            };
            Ok(PluginParam {
                name: as_plugin_str(name),
                value,
            })
        };
        let count = params.len();
        if count > INLINE {
            for (name, value) in params.iter() {
                heap.push(param(name, value)?);
            }
        } else if count > 0 {
            for (slot, (name, value)) in inline.iter_mut().zip(params.iter()) {
                slot.write(param(name, value)?);
            }
        }
        let (params_ptr, param_count) = if count > INLINE {
            (heap.as_ptr(), heap.len())
        } else {
            // The first `count` entries were written just above.
            (inline.as_ptr().cast::<PluginParam>(), count)
        };
        let raw = raw_request(request, params_ptr, param_count);
        let mut response = Response::default();
        let mut slot = ErrorSlot::default();
        let status = crash::during(&route.description, || {
            // SAFETY: the caller guarantees the instance is started and not stopping; the
            // handler is [thread-safe]. The request (and the arrays and strings it points to),
            // the writer and the sink all outlive the call.
            unsafe {
                (route.handler)(
                    self.ptr,
                    route.user_data.0,
                    &raw,
                    &response.writer(),
                    &slot.sink(),
                )
            }
        });
        if status == PLUGIN_OK {
            return Ok(response);
        }
        let call = format!("{} {}", route.method, route.path);
        let kind = |reason| ErrorKind::HandlerFailed {
            route: call.clone(),
            reason,
        };
        Err(self.error(failure(status, &mut slot, &call, kind)))
    }
}

impl RawInstance {
    /// Calls the `on_request` hook, if the plugin has one (otherwise: go on, unchanged).
    ///
    /// # Safety
    /// As for [`handle`](Self::handle): the instance is started and not stopped for the whole
    /// call. Hooks are [thread-safe].
    pub(crate) unsafe fn on_request(&self, request: &Request<'_>) -> Result<RequestVerdict, Error> {
        let Some(hook) = self.descriptor.hooks.on_request else {
            return Ok(RequestVerdict::Continue(Vec::new()));
        };
        let raw = raw_request(request, std::ptr::null(), 0);
        let connection = raw_connection(request.connection);
        let mut edits = Vec::new();
        let mut response = Response::default();
        let mut slot = ErrorSlot::default();
        let status = crash::during(&self.hook_calls().on_request, || {
            // SAFETY: the caller's promise; the request view (and what it points to), the
            // connection, the editor and writer with the state behind them, and the sink all
            // outlive the call.
            unsafe {
                hook(
                    self.ptr,
                    &raw,
                    &connection,
                    &super::callbacks::header_editor(&mut edits),
                    &response.writer(),
                    &slot.sink(),
                )
            }
        });
        match status {
            PLUGIN_OK => Ok(RequestVerdict::Continue(edits)),
            PLUGIN_RESPOND => Ok(RequestVerdict::Respond(Box::new(response))),
            other => Err(self.hook_failure("on_request", other, &mut slot)),
        }
    }

    /// Calls the `on_response` hook, if the plugin has one (otherwise: no change).
    ///
    /// # Safety
    /// As for [`on_request`](Self::on_request).
    pub(crate) unsafe fn on_response(
        &self,
        request: &Request<'_>,
        response: &Response,
    ) -> Result<ResponseEdit, Error> {
        let Some(hook) = self.descriptor.hooks.on_response else {
            return Ok(ResponseEdit::default());
        };
        let raw = raw_request(request, std::ptr::null(), 0);
        let connection = raw_connection(request.connection);
        // Up to eight headers live on the stack, unset until written; more go to the heap.
        const INLINE: usize = 8;
        let mut inline = [MaybeUninit::<PluginHttpHeader>::uninit(); INLINE];
        let mut heap = Vec::new();
        let views = response
            .headers
            .iter()
            .map(|(name, value)| PluginHttpHeader {
                name: as_plugin_str(name.as_str()),
                value: as_plugin_bytes(value.as_bytes()),
            });
        let count = response.headers.len();
        let headers = if count > INLINE {
            heap.extend(views);
            heap.as_ptr()
        } else {
            for (slot, header) in inline.iter_mut().zip(views) {
                slot.write(header);
            }
            // The first `count` entries were written just above.
            inline.as_ptr().cast::<PluginHttpHeader>()
        };
        let view = PluginResponseView {
            status: response.status,
            headers,
            header_count: count,
            body: as_plugin_bytes(&response.body),
        };
        let mut edit = ResponseEdit::default();
        let mut slot = ErrorSlot::default();
        let status = crash::during(&self.hook_calls().on_response, || {
            // SAFETY: as in `on_request`; the view's headers (the first `count` entries of
            // `inline` or `heap`, written above) and body borrow `response`, and all outlive the
            // call.
            unsafe {
                hook(
                    self.ptr,
                    &raw,
                    &connection,
                    &view,
                    &super::callbacks::response_editor(&mut edit),
                    &slot.sink(),
                )
            }
        });
        match status {
            PLUGIN_OK => Ok(edit),
            other => Err(self.hook_failure("on_response", other, &mut slot)),
        }
    }

    /// Calls the `on_connect` hook, if the plugin has one (otherwise: accept).
    ///
    /// # Safety
    /// As for [`on_request`](Self::on_request).
    pub(crate) unsafe fn on_connect(
        &self,
        connection: &Connection,
    ) -> Result<ConnectVerdict, Error> {
        let Some(hook) = self.descriptor.hooks.on_connect else {
            return Ok(ConnectVerdict::Accept);
        };
        let raw = raw_connection(Some(connection));
        let mut slot = ErrorSlot::default();
        let status = crash::during(&self.hook_calls().on_connect, || {
            // SAFETY: as in `on_request`.
            unsafe { hook(self.ptr, &raw, &slot.sink()) }
        });
        match status {
            PLUGIN_OK => Ok(ConnectVerdict::Accept),
            PLUGIN_REFUSE => Ok(ConnectVerdict::Refuse(slot.0.take())),
            other => Err(self.hook_failure("on_connect", other, &mut slot)),
        }
    }

    /// Calls the `on_disconnect` hook, if the plugin has one.
    ///
    /// # Safety
    /// As for [`on_request`](Self::on_request).
    pub(crate) unsafe fn on_disconnect(&self, stats: &ConnectionStats) {
        let Some(hook) = self.descriptor.hooks.on_disconnect else {
            return;
        };
        let raw = PluginConnectionStats {
            connection: raw_connection(Some(&stats.connection)),
            requests: stats.requests,
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
            duration_us: u64::try_from(stats.duration.as_micros()).unwrap_or(u64::MAX),
        };
        crash::during(&self.hook_calls().on_disconnect, || {
            // SAFETY: as in `on_request`; the statistics outlive the call.
            unsafe { hook(self.ptr, &raw) }
        });
    }

    /// The error of a hook that returned `status`, other than its successes.
    fn hook_failure(
        &self,
        hook: &'static str,
        status: PluginStatus,
        slot: &mut ErrorSlot,
    ) -> Error {
        let call = crate::hook::hook_call(hook);
        self.error(failure(status, slot, &call, |reason| {
            ErrorKind::HookFailed { hook, reason }
        }))
    }
}

/// The view of `request` a plugin gets, with `param_count` parameters at `params`.
fn raw_request(
    request: &Request<'_>,
    params: *const PluginParam,
    param_count: usize,
) -> PluginRequest {
    let headers = request.headers.as_raw();
    PluginRequest {
        method: as_plugin_str(request.method),
        path: as_plugin_str(request.path),
        query: as_plugin_str(request.query),
        headers: headers.as_ptr(),
        header_count: headers.len(),
        params,
        param_count,
        body: as_plugin_bytes(request.body),
    }
}

/// The view of a connection a hook gets: empty addresses when the request came through no
/// socket.
fn raw_connection(connection: Option<&Connection>) -> PluginConnection {
    let (client, local) = connection.map_or(("", ""), |c| (c.client.as_str(), c.local.as_str()));
    PluginConnection {
        client: as_plugin_str(client),
        local: as_plugin_str(local),
    }
}

impl Drop for RawInstance {
    fn drop(&mut self) {
        let description = Callee::instance(&self.name, &self.descriptor).call("destroy");
        crash::during(&description, || {
            // SAFETY: `drop` has exclusive access, so no other call runs; `destroy` is called
            // exactly once, last, with the pointer `create` produced.
            unsafe { (self.descriptor.destroy)(self.ptr) }
        });
        // The library's log context keeps the limiter until the library is unloaded: the
        // instance's last lines dropped are reported now, when it ends.
        self.log.report_now();
    }
}

/// Maps a plugin's status to a result, taking the reason from its error sink.
fn check(
    status: PluginStatus,
    slot: &mut ErrorSlot,
    call: &str,
    kind: impl FnOnce(PluginText) -> ErrorKind,
) -> Result<(), ErrorKind> {
    match status {
        PLUGIN_OK => Ok(()),
        _ => Err(failure(status, slot, call, kind)),
    }
}

/// The error for a status other than `PLUGIN_OK`.
fn failure(
    status: PluginStatus,
    slot: &mut ErrorSlot,
    call: &str,
    kind: impl FnOnce(PluginText) -> ErrorKind,
) -> ErrorKind {
    match status {
        PLUGIN_PANICKED => ErrorKind::Panicked {
            call: call.to_owned(),
            message: slot.take().into(),
        },
        PLUGIN_ERROR => kind(slot.take().into()),
        other => kind(format!("unknown status {other}: {}", slot.take()).into()),
    }
}
