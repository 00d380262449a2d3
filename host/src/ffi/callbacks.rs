//! The `extern "C"` functions the host hands to plugins. Each one runs inside [`guard`], so a
//! bug here can never unwind into plugin code.

use super::crash::{CallDescription, Callee};
use crate::hook::{EditKind, EditTarget, HeaderEdit, ResponseEdit, checked_edit};
use crate::message::Response;
use plugin_api::abi::{
    PLUGIN_INVALID_ARGUMENT, PLUGIN_OK, PluginBytes, PluginErrorSink, PluginHeaderEditor,
    PluginLogLevel, PluginResponse, PluginResponseEditor, PluginRoute, PluginRouteSink,
    PluginStatus, PluginStr,
};
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs a callback body, turning a panic (a host bug) into `PLUGIN_INVALID_ARGUMENT`.
fn guard(f: impl FnOnce() -> PluginStatus) -> PluginStatus {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        // Dropping a payload can itself panic, which would abort here: leak it instead.
        std::mem::forget(payload);
        PLUGIN_INVALID_ARGUMENT
    })
}

/// Borrows the bytes a plugin passed, or `None` if `ptr` is NULL with a non-zero length.
///
/// # Safety
/// Unless NULL, `ptr` must point to `len` readable bytes for `'a`, as the header requires of
/// every (pointer, length) pair a plugin passes.
pub(super) unsafe fn plugin_bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        Some(&[])
    } else if ptr.is_null() {
        None
    } else {
        // SAFETY: non-null, and the caller guarantees `len` readable bytes for 'a.
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    }
}

/// Borrows a `PluginStr` a plugin passed, if it is a valid (pointer, length) pair of UTF-8.
///
/// # Safety
/// As for [`plugin_bytes`].
pub(super) unsafe fn plugin_str<'a>(s: PluginStr) -> Option<&'a str> {
    // SAFETY: forwarded to the caller.
    std::str::from_utf8(unsafe { plugin_bytes(s.ptr, s.len) }?).ok()
}

/// The host-owned slot behind a `PluginErrorSink`: the last message the plugin reported.
#[derive(Default)]
pub(super) struct ErrorSlot(pub(super) Option<String>);

impl ErrorSlot {
    /// A sink writing into this slot; valid while the slot is neither moved nor dropped.
    pub(super) fn sink(&mut self) -> PluginErrorSink {
        PluginErrorSink {
            ctx: (self as *mut Self).cast(),
            set: error_set,
        }
    }

    /// The message, or a note that the plugin gave none.
    pub(super) fn take(&mut self) -> String {
        self.0
            .take()
            .unwrap_or_else(|| "the plugin gave no reason".to_owned())
    }
}

unsafe extern "C" fn error_set(ctx: *mut c_void, message: PluginStr) -> PluginStatus {
    guard(|| {
        // SAFETY: `ctx` is the `ErrorSlot` of the sink, alive and not otherwise borrowed during
        // the plugin call it was passed to; the plugin passes a valid string per the header.
        let (slot, message) = unsafe { (&mut *ctx.cast::<ErrorSlot>(), plugin_str(message)) };
        match message {
            Some(message) => {
                slot.0 = Some(message.to_owned());
                PLUGIN_OK
            }
            None => PLUGIN_INVALID_ARGUMENT,
        }
    })
}

/// What `PluginHost::ctx` points to: the names a log line is tagged with, and the instance's
/// log rate limit.
pub(super) struct LogContext {
    pub(super) plugin: String,
    pub(super) instance: String,
    pub(super) limiter: std::sync::Arc<crate::pluginlog::LogLimiter>,
}

pub(super) unsafe extern "C" fn log(ctx: *const c_void, level: PluginLogLevel, message: PluginStr) {
    guard(|| {
        // SAFETY: `ctx` is the instance's `LogContext`, which lives until the library is unloaded,
        // and the plugin passes a valid (pointer, length) pair per the header.
        let (ctx, bytes) = unsafe {
            (
                &*ctx.cast::<LogContext>(),
                plugin_bytes(message.ptr, message.len).unwrap_or(b"<NULL message>"),
            )
        };
        crate::pluginlog::message(&ctx.limiter, level, &ctx.plugin, &ctx.instance, bytes);
        PLUGIN_OK
    });
}

/// A route as the host keeps it once copied out of the plugin.
pub(crate) struct RouteDef {
    /// The method.
    pub(crate) method: String,
    /// The path pattern.
    pub(crate) path: String,
    pub(super) handler: super::instance::HandlerFn,
    pub(super) user_data: super::instance::UserData,
    /// What a crash line says of a call to the handler.
    pub(super) description: CallDescription,
}

/// The host-owned state behind a `PluginRouteSink`.
pub(super) struct RouteCollector {
    pub(super) routes: Vec<RouteDef>,
    pub(super) error: Option<String>,
    /// The instance whose routes are collected, for their crash descriptions.
    pub(super) callee: Callee,
}

impl RouteCollector {
    /// An empty collector of the routes of `callee`.
    pub(super) fn new(callee: Callee) -> Self {
        Self {
            routes: Vec::new(),
            error: None,
            callee,
        }
    }

    /// A sink adding to this collector; valid while it is neither moved nor dropped.
    pub(super) fn sink(&mut self) -> PluginRouteSink {
        PluginRouteSink {
            ctx: (self as *mut Self).cast(),
            add: route_add,
        }
    }
}

/// The size of `PluginRoute` in ABI 1.0: the least a plugin may pass.
const ROUTE_SIZE_1_0: usize = size_of::<PluginRoute>();

unsafe extern "C" fn route_add(ctx: *mut c_void, route: *const PluginRoute) -> PluginStatus {
    guard(|| {
        // SAFETY: `ctx` is the `RouteCollector` of the sink, alive and not otherwise borrowed
        // during the `routes` call.
        let collector = unsafe { &mut *ctx.cast::<RouteCollector>() };
        // SAFETY: the plugin passes NULL or a valid `PluginRoute` of at least its
        // `struct_size`, which is read before any other field.
        let result = unsafe { read_route(route, &collector.callee) };
        match result {
            Ok(def) => {
                collector.routes.push(def);
                PLUGIN_OK
            }
            Err(reason) => {
                collector.error.get_or_insert(reason);
                PLUGIN_INVALID_ARGUMENT
            }
        }
    })
}

/// Copies and checks the route at `route`, a route of `callee`.
///
/// # Safety
/// `route` must be NULL or point to a readable `PluginRoute` of at least `struct_size` bytes
/// whose strings are valid (pointer, length) pairs.
unsafe fn read_route(route: *const PluginRoute, callee: &Callee) -> Result<RouteDef, String> {
    if route.is_null() || !route.is_aligned() {
        return Err("a NULL or misaligned route pointer".to_owned());
    }
    // SAFETY: non-null and aligned; the plugin guarantees `struct_size` is readable.
    let size = unsafe { (*route).struct_size } as usize;
    if size < ROUTE_SIZE_1_0 {
        return Err(format!(
            "a route whose struct_size is {size}, less than the {ROUTE_SIZE_1_0} bytes of ABI 1.0"
        ));
    }
    // SAFETY: the plugin guarantees `size` readable bytes at `route`.
    let route = unsafe { super::read_sized(route, size) };
    // SAFETY: the plugin passes valid (pointer, length) pairs.
    let (method, path) = unsafe { (plugin_str(route.method), plugin_str(route.path)) };
    let method = method.unwrap_or("\u{FFFD}");
    let path = path.ok_or_else(|| format!("a {method} route whose path is not UTF-8"))?;
    crate::router::check_route(method, path)?;
    let handler = route
        .handler
        .ok_or_else(|| format!("the route {method} {path} has a NULL handler"))?;
    Ok(RouteDef {
        method: method.to_owned(),
        path: path.to_owned(),
        handler,
        user_data: super::instance::UserData(route.user_data),
        description: callee.call(&format!("{method} {path}")),
    })
}

impl Response {
    /// A writer into this response; valid while it is neither moved nor dropped.
    pub(super) fn writer(&mut self) -> PluginResponse {
        PluginResponse {
            ctx: (self as *mut Self).cast(),
            set_status: response_set_status,
            add_header: response_add_header,
            write_body: response_write_body,
        }
    }
}

/// # Safety
/// `ctx` must be the context of a writer made by [`Response::writer`], during the handler call.
unsafe fn response<'a>(ctx: *mut c_void) -> &'a mut Response {
    // SAFETY: the writer's context is a `Response` owned by the dispatching frame, which is
    // neither moved nor otherwise borrowed during the handler call.
    unsafe { &mut *ctx.cast::<Response>() }
}

unsafe extern "C" fn response_set_status(ctx: *mut c_void, status: u16) -> PluginStatus {
    guard(|| {
        if !(200..=999).contains(&status) {
            return PLUGIN_INVALID_ARGUMENT;
        }
        // SAFETY: called by the plugin with the writer's context during the handler call.
        unsafe { response(ctx) }.status = status;
        PLUGIN_OK
    })
}

unsafe extern "C" fn response_add_header(
    ctx: *mut c_void,
    name: PluginStr,
    value: PluginBytes,
) -> PluginStatus {
    guard(|| {
        // SAFETY: the plugin passes valid (pointer, length) pairs per the header.
        let (name, value) = unsafe {
            (
                plugin_bytes(name.ptr, name.len),
                plugin_bytes(value.ptr, value.len),
            )
        };
        match name
            .zip(value)
            .and_then(|(n, v)| crate::message::checked_header(n, v))
        {
            // SAFETY: called by the plugin with the writer's context during the handler.
            Some((name, value)) => match unsafe { response(ctx) }.headers.try_append(name, value) {
                Ok(_) => PLUGIN_OK,
                // More headers than a message may have.
                Err(_) => PLUGIN_INVALID_ARGUMENT,
            },
            None => PLUGIN_INVALID_ARGUMENT,
        }
    })
}

unsafe extern "C" fn response_write_body(ctx: *mut c_void, data: PluginBytes) -> PluginStatus {
    guard(|| {
        // SAFETY: the plugin passes a valid (pointer, length) pair per the header.
        match unsafe { plugin_bytes(data.ptr, data.len) } {
            Some(data) => {
                // SAFETY: called by the plugin with the writer's context during the handler.
                unsafe { response(ctx) }.body.extend_from_slice(data);
                PLUGIN_OK
            }
            None => PLUGIN_INVALID_ARGUMENT,
        }
    })
}

/// The host-owned state behind a header editor: the changes a hook asked for, in order.
pub(super) trait Edits {
    /// Which headers the changes are for.
    const TARGET: EditTarget;
    /// Records one checked change.
    fn record(&mut self, edit: HeaderEdit);
}

impl Edits for Vec<HeaderEdit> {
    const TARGET: EditTarget = EditTarget::Request;
    fn record(&mut self, edit: HeaderEdit) {
        self.push(edit);
    }
}

impl Edits for ResponseEdit {
    const TARGET: EditTarget = EditTarget::Response;
    fn record(&mut self, edit: HeaderEdit) {
        self.headers.push(edit);
    }
}

/// An editor of a request's headers (for `on_request`) recording the changes into `edits`;
/// valid while `edits` is neither moved nor dropped.
pub(super) fn header_editor(edits: &mut Vec<HeaderEdit>) -> PluginHeaderEditor {
    PluginHeaderEditor {
        ctx: (edits as *mut Vec<HeaderEdit>).cast(),
        add: header_add::<Vec<HeaderEdit>>,
        set: header_set::<Vec<HeaderEdit>>,
        remove: header_remove::<Vec<HeaderEdit>>,
    }
}

/// An editor of a response (for `on_response`) recording the changes into `changes`; valid
/// while `changes` is neither moved nor dropped.
pub(super) fn response_editor(changes: &mut ResponseEdit) -> PluginResponseEditor {
    PluginResponseEditor {
        ctx: (changes as *mut ResponseEdit).cast(),
        set_status: edit_status,
        add_header: header_add::<ResponseEdit>,
        set_header: header_set::<ResponseEdit>,
        remove_header: header_remove::<ResponseEdit>,
        set_body: edit_body,
    }
}

/// Checks a header change a hook passed and records it into the editor's state.
///
/// # Safety
/// `ctx` must be the context of an editor made by [`header_editor`] (for `E = Vec<HeaderEdit>`)
/// or [`response_editor`] (for `E = ResponseEdit`), during the hook call; the name and value
/// must be valid (pointer, length) pairs, as the header requires.
unsafe fn edit<E: Edits>(
    ctx: *mut c_void,
    kind: EditKind,
    name: PluginStr,
    value: PluginBytes,
) -> PluginStatus {
    // SAFETY: forwarded to the caller.
    let (name, value) = unsafe {
        (
            plugin_bytes(name.ptr, name.len),
            plugin_bytes(value.ptr, value.len),
        )
    };
    match name
        .zip(value)
        .and_then(|(name, value)| checked_edit(E::TARGET, kind, name, value))
    {
        Some(edit) => {
            // SAFETY: the editor's context is an `E` owned by the calling frame, neither moved
            // nor otherwise borrowed during the hook call (caller).
            unsafe { &mut *ctx.cast::<E>() }.record(edit);
            PLUGIN_OK
        }
        None => PLUGIN_INVALID_ARGUMENT,
    }
}

unsafe extern "C" fn header_add<E: Edits>(
    ctx: *mut c_void,
    name: PluginStr,
    value: PluginBytes,
) -> PluginStatus {
    // SAFETY: called by the plugin with its editor's context and valid pairs, in the hook.
    guard(|| unsafe { edit::<E>(ctx, EditKind::Add, name, value) })
}

unsafe extern "C" fn header_set<E: Edits>(
    ctx: *mut c_void,
    name: PluginStr,
    value: PluginBytes,
) -> PluginStatus {
    // SAFETY: as in `header_add`.
    guard(|| unsafe { edit::<E>(ctx, EditKind::Set, name, value) })
}

unsafe extern "C" fn header_remove<E: Edits>(ctx: *mut c_void, name: PluginStr) -> PluginStatus {
    let none = PluginBytes {
        ptr: std::ptr::null(),
        len: 0,
    };
    // SAFETY: as in `header_add`.
    guard(|| unsafe { edit::<E>(ctx, EditKind::Remove, name, none) })
}

/// # Safety
/// `ctx` must be the context of an editor made by [`response_editor`], during the hook call.
unsafe fn response_edit<'a>(ctx: *mut c_void) -> &'a mut ResponseEdit {
    // SAFETY: the editor's context is a `ResponseEdit` owned by the calling frame, neither moved
    // nor otherwise borrowed during the hook call.
    unsafe { &mut *ctx.cast::<ResponseEdit>() }
}

unsafe extern "C" fn edit_status(ctx: *mut c_void, status: u16) -> PluginStatus {
    guard(|| {
        if !(200..=999).contains(&status) {
            return PLUGIN_INVALID_ARGUMENT;
        }
        // SAFETY: called by the plugin with the editor's context during the hook call.
        unsafe { response_edit(ctx) }.status = Some(status);
        PLUGIN_OK
    })
}

unsafe extern "C" fn edit_body(ctx: *mut c_void, data: PluginBytes) -> PluginStatus {
    guard(|| {
        // SAFETY: the plugin passes a valid (pointer, length) pair per the header.
        match unsafe { plugin_bytes(data.ptr, data.len) } {
            Some(data) => {
                // SAFETY: called by the plugin with the editor's context during the hook call.
                unsafe { response_edit(ctx) }.body = Some(data.to_vec());
                PLUGIN_OK
            }
            None => PLUGIN_INVALID_ARGUMENT,
        }
    })
}
