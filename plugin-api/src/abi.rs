//! The stable C ABI: every `#[repr(C)]` type, constant and function-pointer signature that
//! crosses the boundary between the host and a plugin.
//!
//! `include/plugin_api.h` is generated from this file by cbindgen, so the doc comments here are
//! the C programmer's contract. Each function pointer states who owns what, how long it lives,
//! and which threads may call it, with one of these tags:
//!
//! - `[any-thread, serialized]`: called from any host thread, never concurrently with another
//!   call on the same instance.
//! - `[thread-safe]`: may be called from several threads at once, also for the same instance.
//! - `[in-call]`: a host callback that is valid only during the plugin function it was passed
//!   to, and only on the thread that made that call; it must not be stored.
//!
//! Rules that hold for the whole ABI:
//!
//! 1. **Versioning.** A plugin states the ABI major and minor it was built for in its
//!    descriptor. The host loads it only if the major is equal to its own and the minor is lower
//!    or equal. The ABI evolves append-only: a new minor only appends fields at the end of a
//!    struct (never reorders, removes or retypes one); a changed signature gets a new name.
//!    Structs written by the plugin (`PluginDescriptor`, `PluginRoute`) carry their own size, and
//!    the host treats every field beyond that size as absent. Structs written by the host are
//!    always at least as new as the plugin, so a plugin may read every field it knows.
//!    History: 1.0, the first; 1.1 appended the hooks (`on_request`, `on_response`,
//!    `on_connect`, `on_disconnect`) to `PluginDescriptor`, with the structs they take and the
//!    statuses `PLUGIN_RESPOND` and `PLUGIN_REFUSE`. A 1.0 plugin loads unchanged and has no
//!    hooks.
//! 2. **Strings and bytes** cross as (pointer, length) pairs. A `PluginStr` is UTF-8 and not
//!    NUL-terminated; `ptr` may be NULL only when `len` is 0.
//! 3. **Ownership.** Memory is freed only by the side that allocated it. Data that the plugin
//!    hands to the host (names, routes, messages, response bytes) is copied by the host before
//!    the call returns, except the descriptor, which must stay valid and unchanged for as long as
//!    the library is loaded. Data the host hands to the plugin is borrowed for the duration of the
//!    call, except `PluginHost`, which lives until the library is unloaded.
//! 4. **No unwinding.** Neither a C++ exception nor a Rust panic may leave any function of the
//!    plugin; the Rust SDK catches panics and returns `PLUGIN_PANICKED`.
//! 5. **Instances are opaque.** The `void *instance` a plugin's `create` returns is only passed
//!    back to that plugin's own functions; the host never dereferences it.

use abi_stable::StableAbi;
use std::ffi::c_void;

/// The value of `PluginAbiHeader::magic` ("PLUG" read as a big-endian 32-bit integer).
pub const PLUGIN_ABI_MAGIC: u32 = 0x504C_5547;
/// The ABI major version: bumped only by a change that breaks existing plugins.
pub const PLUGIN_ABI_MAJOR: u16 = 1;
/// The ABI minor version: bumped when fields are appended to a struct.
pub const PLUGIN_ABI_MINOR: u16 = 1;

/// The result of every fallible call across the boundary. Values other than the ones defined
/// here are treated by the host as `PLUGIN_ERROR`.
pub type PluginStatus = i32;
/// The call succeeded.
pub const PLUGIN_OK: PluginStatus = 0;
/// The call failed; the reason should have been reported through the `PluginErrorSink`.
pub const PLUGIN_ERROR: PluginStatus = 1;
/// The plugin caught a panic (or a C++ exception) that would otherwise have unwound out of the
/// call. The host reports it; after a handler panic it takes the instance out of service (its
/// routes answer 503 without reaching it) unless configured to keep serving.
pub const PLUGIN_PANICKED: PluginStatus = 2;
/// Returned by host callbacks when an argument breaks this header's rules (a NULL pointer with a
/// non-zero length, a string that is not UTF-8, an invalid HTTP status or header name).
pub const PLUGIN_INVALID_ARGUMENT: PluginStatus = 3;

/// Returned by `on_request` (ABI 1.1): answer the request now with what the hook wrote through
/// its `respond` writer. Neither the later `on_request` hooks nor the route are called.
pub const PLUGIN_RESPOND: PluginStatus = 4;
/// Returned by `on_connect` (ABI 1.1): refuse the connection. The host closes it before reading
/// a request from it; the reason set through the error sink, if any, goes to the log.
pub const PLUGIN_REFUSE: PluginStatus = 5;

/// The severity of a log message sent through `PluginHost::log`.
pub type PluginLogLevel = u32;
/// Something failed.
pub const PLUGIN_LOG_ERROR: PluginLogLevel = 1;
/// Something looks wrong but the plugin carries on.
pub const PLUGIN_LOG_WARN: PluginLogLevel = 2;
/// Normal operational messages.
pub const PLUGIN_LOG_INFO: PluginLogLevel = 3;
/// Detail useful when debugging.
pub const PLUGIN_LOG_DEBUG: PluginLogLevel = 4;
/// Very verbose detail.
pub const PLUGIN_LOG_TRACE: PluginLogLevel = 5;

/// A borrowed UTF-8 string: `len` bytes at `ptr`, not NUL-terminated. `ptr` may be NULL only
/// when `len` is 0. Who owns the bytes and how long they live is stated where it is used.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginStr {
    /// The first byte, or NULL for an empty string.
    pub ptr: *const u8,
    /// The number of bytes (not characters).
    pub len: usize,
}

/// Borrowed bytes: `len` bytes at `ptr`, with no encoding. `ptr` may be NULL only when `len`
/// is 0. Who owns the bytes and how long they live is stated where it is used.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginBytes {
    /// The first byte, or NULL when empty.
    pub ptr: *const u8,
    /// The number of bytes.
    pub len: usize,
}

/// The fixed header that starts `PluginDescriptor` and `PluginHost`. The host checks a plugin's
/// header before it reads anything else from the descriptor, in this order: magic, major,
/// minor, size.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginAbiHeader {
    /// Always `PLUGIN_ABI_MAGIC`.
    pub magic: u32,
    /// `PLUGIN_ABI_MAJOR` of the header the struct was built with.
    pub abi_major: u16,
    /// `PLUGIN_ABI_MINOR` of the header the struct was built with.
    pub abi_minor: u16,
    /// `sizeof` the whole struct this header starts (not of the header alone).
    pub struct_size: u32,
    /// Must be zero (the host refuses a descriptor where it is not, so that a later minor can
    /// give it a meaning).
    pub reserved: u32,
}

/// Where a plugin reports why a call failed. Host-owned. The reason is for the host's log and
/// its operator, never for a client (see `PluginRoute::handler`).
///
/// `[in-call]`: valid only during the call it was passed to, on that thread.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginErrorSink {
    /// Host-owned context; pass it back to `set` unchanged.
    pub ctx: *mut c_void,
    /// Records `message` as the reason for the failure. The host copies the message before
    /// returning; a later call replaces an earlier one. Returns `PLUGIN_INVALID_ARGUMENT` if
    /// the message is not UTF-8.
    pub set: unsafe extern "C" fn(ctx: *mut c_void, message: PluginStr) -> PluginStatus,
}

/// The host services handed to each instance by `create`: a versioned vtable, so that a plugin
/// never links against symbols of the host.
///
/// Lifetime: the struct and everything it points to stay valid from the start of `create` until
/// the library is unloaded, which is after `destroy` returned for every instance (and also when
/// `create` fails): the plugin may keep the pointer anywhere its own code can run.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginHost {
    /// The host's ABI version. Entries appended by a later minor are present only when
    /// `header.abi_minor` is at least that minor.
    pub header: PluginAbiHeader,
    /// Host-owned context for this instance; pass it back unchanged.
    pub ctx: *const c_void,
    /// Writes `message` to the host's log at `level` (a `PLUGIN_LOG_*` value), tagged with the
    /// plugin's and the instance's names.
    ///
    /// `[thread-safe]`, from any thread, also one the plugin started, until the library is
    /// unloaded. The host copies the message before returning. Never fails: a message that is
    /// not UTF-8 is logged with replacement characters, and a level that is not a
    /// `PLUGIN_LOG_*` value is logged as `PLUGIN_LOG_TRACE` (hidden by the default filter).
    pub log: unsafe extern "C" fn(ctx: *const c_void, level: PluginLogLevel, message: PluginStr),
}

/// One HTTP header of a request: a name and its raw value.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginHttpHeader {
    /// The header name (the host's HTTP server passes names in lower case; compare them
    /// case-insensitively).
    pub name: PluginStr,
    /// The value as received; not necessarily UTF-8.
    pub value: PluginBytes,
}

/// One path parameter: the name from the route pattern and the matched text, percent-decoded.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginParam {
    /// The parameter name, without braces (`name` for `/greet/{name}`).
    pub name: PluginStr,
    /// The matched part of the path (for a catch-all, the rest of the path), percent-decoded
    /// once (`ada%20l` is `ada l`; `+` stays `+`). It never holds a NUL byte or a `..` segment
    /// (split on `/` and `\`): the host answers such requests 400 without calling the plugin.
    /// It may still hold `/`, `\` or a leading `/` (from `%2F`): join it under a root of your
    /// own and refuse absolute results.
    pub value: PluginStr,
}

/// A read-only view of an HTTP request.
///
/// Host-owned: the struct and everything it points to are borrowed for the duration of the
/// handler call and must not be used after it returns. Every `PluginStr` in it is valid UTF-8.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginRequest {
    /// The method, upper-case (`GET`). A `HEAD` request to a path with a `GET` route but no
    /// `HEAD` route reaches the `GET` handler as `GET`; the server drops the body it writes.
    pub method: PluginStr,
    /// The path, without the query (`/greet/ada`), with its `.` and `..` segments removed
    /// (RFC 3986 §5.2.4) and otherwise still percent-encoded.
    pub path: PluginStr,
    /// The query string without the `?`; empty when there is none.
    pub query: PluginStr,
    /// `header_count` headers, in the order received.
    pub headers: *const PluginHttpHeader,
    /// The number of entries at `headers`.
    pub header_count: usize,
    /// `param_count` path parameters, in the order they appear in the pattern.
    pub params: *const PluginParam,
    /// The number of entries at `params`.
    pub param_count: usize,
    /// The request body.
    pub body: PluginBytes,
}

/// The host's writer for a handler's response. The status is 200 until `set_status` is called.
///
/// `[in-call]`: valid only during the handler call it was passed to, on that thread. Every
/// function copies its arguments before returning.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginResponse {
    /// Host-owned context; pass it back unchanged.
    pub ctx: *mut c_void,
    /// Sets the HTTP status, a final one: any number from 200 to 999 (a later call replaces
    /// an earlier one). A status without a standard reason phrase (299, 599) goes out with the
    /// placeholder phrase `<none>`, which clients ignore. Returns `PLUGIN_INVALID_ARGUMENT` otherwise (1xx statuses are the server's
    /// business).
    pub set_status: unsafe extern "C" fn(ctx: *mut c_void, status: u16) -> PluginStatus,
    /// Appends a header. The name must be an HTTP token (letters, digits and ``!#$%&'*+-.^_`|~``;
    /// the host lower-cases it) and the value must contain no control character other than tab,
    /// and the response may not hold more headers than an HTTP message may (thousands);
    /// otherwise `PLUGIN_INVALID_ARGUMENT`. Headers that frame the message (`content-length`,
    /// `transfer-encoding`, `connection`, `upgrade`, `te`, `trailer`) are refused the same way:
    /// the server sets them from the body.
    pub add_header:
        unsafe extern "C" fn(ctx: *mut c_void, name: PluginStr, value: PluginBytes) -> PluginStatus,
    /// Appends `data` to the body.
    pub write_body: unsafe extern "C" fn(ctx: *mut c_void, data: PluginBytes) -> PluginStatus,
}

/// A client's connection, as hooks see it (ABI 1.1).
///
/// Host-owned, borrowed for the duration of the hook call. Addresses are written as
/// `IP:PORT` (`127.0.0.1:50412`, `[::1]:50412`); both are empty when the request did not come
/// through a socket (an application that calls the router itself).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginConnection {
    /// The client's address.
    pub client: PluginStr,
    /// The host's address the client connected to.
    pub local: PluginStr,
}

/// What a connection did, given to `on_disconnect` once it closed (ABI 1.1).
///
/// Host-owned, borrowed for the duration of the call.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginConnectionStats {
    /// The addresses, as in `on_connect`.
    pub connection: PluginConnection,
    /// The number of requests received on the connection (each one is answered, unless the
    /// connection broke first).
    pub requests: u64,
    /// The bytes read from the client.
    pub bytes_in: u64,
    /// The bytes written to the client.
    pub bytes_out: u64,
    /// How long the connection was open, in microseconds.
    pub duration_us: u64,
}

/// The host's editor of the request's headers, handed to `on_request` (ABI 1.1). Changes are
/// seen by the hooks after this one and by the route's handler; the request's method, path,
/// query and body cannot be changed.
///
/// `[in-call]`: valid only during the `on_request` call it was passed to, on that thread. Every
/// function copies its arguments before returning. Names follow `PluginResponse::add_header`'s
/// rules (an HTTP token, lower-cased by the host) and values contain no control character other
/// than tab; otherwise the function returns `PLUGIN_INVALID_ARGUMENT` and changes nothing.
/// `content-length`, `transfer-encoding`, `connection`, `upgrade`, `te`, `trailer` and `host`
/// are refused the same way: they describe the message the client sent.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginHeaderEditor {
    /// Host-owned context; pass it back unchanged.
    pub ctx: *mut c_void,
    /// Appends a header, after any of the same name.
    pub add:
        unsafe extern "C" fn(ctx: *mut c_void, name: PluginStr, value: PluginBytes) -> PluginStatus,
    /// Replaces every header called `name` with one header of this value.
    pub set:
        unsafe extern "C" fn(ctx: *mut c_void, name: PluginStr, value: PluginBytes) -> PluginStatus,
    /// Removes every header called `name` (none is not an error).
    pub remove: unsafe extern "C" fn(ctx: *mut c_void, name: PluginStr) -> PluginStatus,
}

/// A read-only view of the response on its way to the client, handed to `on_response`
/// (ABI 1.1): what the route's handler, an `on_request` hook or the host (a 404, a 405) answered,
/// with the changes of the `on_response` hooks that ran before this one.
///
/// Host-owned, borrowed for the duration of the hook call. It does not change while the hook
/// runs: the hook's changes through `PluginResponseEditor` are applied when it returns.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginResponseView {
    /// The HTTP status.
    pub status: u16,
    /// `header_count` headers; names in lower case.
    pub headers: *const PluginHttpHeader,
    /// The number of entries at `headers`.
    pub header_count: usize,
    /// The body.
    pub body: PluginBytes,
}

/// The host's editor of the response, handed to `on_response` (ABI 1.1). The changes are
/// applied when the hook returns `PLUGIN_OK`, and dropped if it fails.
///
/// `[in-call]`: valid only during the `on_response` call it was passed to, on that thread.
/// Every function copies its arguments before returning. Statuses, names and values follow
/// `PluginResponse`'s rules, and are refused with `PLUGIN_INVALID_ARGUMENT` the same way.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginResponseEditor {
    /// Host-owned context; pass it back unchanged.
    pub ctx: *mut c_void,
    /// Replaces the status (200 to 999).
    pub set_status: unsafe extern "C" fn(ctx: *mut c_void, status: u16) -> PluginStatus,
    /// Appends a header, after any of the same name.
    pub add_header:
        unsafe extern "C" fn(ctx: *mut c_void, name: PluginStr, value: PluginBytes) -> PluginStatus,
    /// Replaces every header called `name` with one header of this value.
    pub set_header:
        unsafe extern "C" fn(ctx: *mut c_void, name: PluginStr, value: PluginBytes) -> PluginStatus,
    /// Removes every header called `name` (none is not an error).
    pub remove_header: unsafe extern "C" fn(ctx: *mut c_void, name: PluginStr) -> PluginStatus,
    /// Replaces the whole body with `data` (a later call replaces an earlier one).
    pub set_body: unsafe extern "C" fn(ctx: *mut c_void, data: PluginBytes) -> PluginStatus,
}

/// One route a plugin serves: a method, a path pattern and the handler that answers it.
///
/// Filled in by the plugin and passed to `PluginRouteSink::add`, which copies `method` and
/// `path`; `handler` and `user_data` must stay valid until `destroy` returns for the instance.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginRoute {
    /// `sizeof(PluginRoute)` as the plugin was compiled; fields beyond it are absent.
    pub struct_size: u32,
    /// An HTTP method token in upper case (`GET`, `POST`, ...).
    pub method: PluginStr,
    /// A path pattern: literal segments, named parameters (`/greet/{name}`: one whole segment,
    /// never empty) and an optional final catch-all (`/files/{*rest}`: the rest of the path,
    /// one or more characters, so `/files/` alone does not match). A parameter is passed to the
    /// handler under the name between the braces, without the `*` (`rest`). `{{` and `}}` are
    /// literal braces.
    pub path: PluginStr,
    /// Answers a request.
    ///
    /// `[thread-safe]`: called concurrently from many threads, only after `start` returned
    /// `PLUGIN_OK` and never once `stop` has been called. `instance` is the value `create`
    /// produced, `user_data` the value of this route. `request`, `response` and `error` are
    /// borrowed for the call. Returns `PLUGIN_OK`, or `PLUGIN_ERROR` with a reason set through
    /// `error`, or `PLUGIN_PANICKED`.
    ///
    /// What a client sees of a failure is the status, the plugin's name and the kind of
    /// failure, the same whether the plugin runs in the host's process or isolated: after
    /// `PLUGIN_ERROR` the client gets 500 with ``{"error": "plugin `NAME`: the handler for GET
    /// /path failed", "plugin": "NAME", "kind": "failed"}``, after `PLUGIN_PANICKED` 500 with
    /// ``"the handler panicked during GET /path"`` and `"kind": "panicked"`. The reason set through `error` goes to the host's log only,
    /// never to the client: it may say what a client must not learn. To show a client a
    /// message, return `PLUGIN_OK` with a status and a body of your own (`set_status`,
    /// `write_body`).
    pub handler: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            user_data: *mut c_void,
            request: *const PluginRequest,
            response: *const PluginResponse,
            error: *const PluginErrorSink,
        ) -> PluginStatus,
    >,
    /// Plugin-owned data passed back to `handler`; the host never dereferences it.
    pub user_data: *mut c_void,
}

/// Where a plugin adds its routes. Host-owned.
///
/// `[in-call]`: valid only during the `routes` call it was passed to, on that thread.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginRouteSink {
    /// Host-owned context; pass it back unchanged.
    pub ctx: *mut c_void,
    /// Adds one route. The host copies `*route` (and the strings it points to) before
    /// returning.
    ///
    /// Returns `PLUGIN_INVALID_ARGUMENT`, and keeps nothing of the route, for: a NULL route; a
    /// `struct_size` smaller than ABI 1.0's `PluginRoute`; a method that is not an upper-case
    /// HTTP token (`GET` is accepted, `get` is refused); a path that is not UTF-8 or does not
    /// start with `/`; a pattern that does not parse (an unclosed `{`, an empty name, a
    /// catch-all that is not last); a parameter name used twice (`/p/{a}/{a}`); a NULL
    /// handler. After a refusal the host fails the whole `routes` call with the first refusal's
    /// reason, even if the plugin carries on and returns `PLUGIN_OK`: a plugin never serves with
    /// a route missing. Two routes of one plugin, or of two plugins, that match the same
    /// requests with the same method are a conflict the host reports when it builds its router.
    pub add: unsafe extern "C" fn(ctx: *mut c_void, route: *const PluginRoute) -> PluginStatus,
}

/// What a plugin is: returned by `plugin_factory`, owned by the plugin, and required to stay
/// valid and unchanged for as long as the library is loaded (a `static const` object).
///
/// Required function pointers: `create` and `destroy`. The others may be NULL.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginDescriptor {
    /// `{ PLUGIN_ABI_MAGIC, PLUGIN_ABI_MAJOR, PLUGIN_ABI_MINOR, sizeof(PluginDescriptor), 0 }`.
    pub header: PluginAbiHeader,
    /// The plugin's name: non-empty UTF-8, at most 128 bytes, no control characters and no
    /// Unicode line or direction marks (U+2028, U+2029, U+061C, U+200E, U+200F, U+202A to
    /// U+202E, U+2066 to U+2069).
    pub name: PluginStr,
    /// The plugin's version, free-form UTF-8 (for example `1.2.0`), at most 128 bytes; may be
    /// empty.
    pub version: PluginStr,
    /// Set by the Rust SDK to the type layout abi_stable computed for this struct, which the
    /// host checks against its own. C and C++ plugins must set it to NULL.
    pub rust_layout: *const c_void,
    /// Creates an instance.
    ///
    /// `[any-thread]`: may run concurrently with calls on other instances. `host` stays valid
    /// until the library is unloaded. `config` is the instance's configuration as a JSON
    /// document (UTF-8), borrowed for the call: the `[plugin.config]` table of its entry, or
    /// `{}` when it has none. A plugin that refuses its configuration should say so with a
    /// reason starting `invalid configuration at `KEY.PATH`: ` (or `invalid configuration: `
    /// when no key is to blame): the host then points at the value's line in its configuration
    /// file. On success the plugin stores its instance
    /// pointer (any value, NULL included) in `*out_instance` and returns `PLUGIN_OK`; on
    /// failure it returns `PLUGIN_ERROR` with a reason set through `error`, and `destroy` is not
    /// called.
    pub create: Option<
        unsafe extern "C" fn(
            host: *const PluginHost,
            config: PluginStr,
            out_instance: *mut *mut c_void,
            error: *const PluginErrorSink,
        ) -> PluginStatus,
    >,
    /// Starts an instance: called once, before any handler.
    ///
    /// `[any-thread, serialized]`. Returns `PLUGIN_OK` or `PLUGIN_ERROR` with a reason set
    /// through `error` (borrowed for the call). NULL means there is nothing to start.
    pub start: Option<
        unsafe extern "C" fn(instance: *mut c_void, error: *const PluginErrorSink) -> PluginStatus,
    >,
    /// Stops a started instance: called at most once, after the last handler call has returned.
    ///
    /// `[any-thread, serialized]`. Returns `PLUGIN_OK` or `PLUGIN_ERROR` with a reason set
    /// through `error` (borrowed for the call). NULL means there is nothing to stop.
    pub stop: Option<
        unsafe extern "C" fn(instance: *mut c_void, error: *const PluginErrorSink) -> PluginStatus,
    >,
    /// Frees an instance and everything it owns. Called exactly once per successful `create`,
    /// last of all calls on that instance.
    ///
    /// `[any-thread, serialized]`. Must not fail.
    pub destroy: Option<unsafe extern "C" fn(instance: *mut c_void)>,
    /// Lists the instance's routes by calling `sink->add` once per route. Called once, right
    /// after `start` returned `PLUGIN_OK` and before any handler; if it fails, `stop` is called.
    ///
    /// `[any-thread, serialized]`. `sink` and `error` are borrowed for the call. Returns
    /// `PLUGIN_OK`, or `PLUGIN_ERROR` with a reason set through `error`. NULL means no routes.
    pub routes: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            sink: *const PluginRouteSink,
            error: *const PluginErrorSink,
        ) -> PluginStatus,
    >,
    // ABI 1.1: the hooks. A plugin built against 1.0 has none (its `struct_size` ends above).
    // A plugin may have routes, hooks, or both; each hook may be NULL.
    /// Sees every request before its route (ABI 1.1): the hooks of all plugins run in the
    /// order the plugins were registered, each seeing the header changes of those before it.
    /// A plugin's configuration entry may limit its hooks to some paths (`hook_paths`).
    ///
    /// `[thread-safe]`, as a handler: called concurrently from many threads, only after
    /// `start` returned `PLUGIN_OK` and never once `stop` has been called. `request` (its
    /// `params` are empty: no route has matched yet), `connection`, `headers`, `respond` and
    /// `error` are borrowed for the call. Returns:
    ///
    /// - `PLUGIN_OK`: go on, with the header changes made through `headers` (anything written
    ///   through `respond` is dropped);
    /// - `PLUGIN_RESPOND`: answer now with the status, headers and body written through
    ///   `respond` (200 and an empty body if nothing was): no later `on_request` hook and no
    ///   route runs, and only the `on_response` hooks of the plugins registered before this one
    ///   see the answer;
    /// - `PLUGIN_ERROR` (reason through `error`) or `PLUGIN_PANICKED`: the request fails closed,
    ///   as a failed handler: 500 naming the plugin, the reason to the log only, and after a
    ///   panic the plugin is out of service (its hooks and routes answer 503) unless its entry
    ///   keeps it serving. A hook that returns past its deadline (the plugin's handler
    ///   deadline) gets its request 504. No other hook runs after a failure.
    pub on_request: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            request: *const PluginRequest,
            connection: *const PluginConnection,
            headers: *const PluginHeaderEditor,
            respond: *const PluginResponse,
            error: *const PluginErrorSink,
        ) -> PluginStatus,
    >,
    /// Sees every response on its way to the client (ABI 1.1): the hooks of all plugins run in
    /// the reverse order of registration (the last registered sees the response first), for
    /// answers of routes, of `on_request` hooks, and the host's 404 and 405.
    ///
    /// `[thread-safe]`, as `on_request`. `request` is the request as the route saw it, or as it
    /// stood when an `on_request` hook answered or the host found no route (the header changes
    /// of the `on_request` hooks that ran applied; `params` empty). `request`, `connection`,
    /// `response`, `edit` and `error` are borrowed for the call. Returns `PLUGIN_OK` (the
    /// changes made through `edit` apply), or fails as `on_request` does.
    pub on_response: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            request: *const PluginRequest,
            connection: *const PluginConnection,
            response: *const PluginResponseView,
            edit: *const PluginResponseEditor,
            error: *const PluginErrorSink,
        ) -> PluginStatus,
    >,
    /// Sees every new connection before a request is read from it (ABI 1.1), in the order the
    /// plugins were registered, up to the first that refuses it.
    ///
    /// `[thread-safe]`, as `on_request`. `connection` and `error` are borrowed for the call.
    /// Returns `PLUGIN_OK` to accept the connection, `PLUGIN_REFUSE` to close it (a reason set
    /// through `error` goes to the log). A failure, a panic or a call past the deadline refuses
    /// it too (fail closed). While the plugin is out of service (after a panic, or while its
    /// process restarts) the hook is not called: the connection is accepted, and its requests
    /// answer 503 naming the plugin (and close it), except `/healthz`, so that the host stays
    /// reachable to say why.
    pub on_connect: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            connection: *const PluginConnection,
            error: *const PluginErrorSink,
        ) -> PluginStatus,
    >,
    /// Told what a connection did once it closed (ABI 1.1), for every connection that was
    /// accepted (no `on_connect` hook refused it).
    ///
    /// `[thread-safe]`, as `on_request`, but called on a host thread apart from the requests:
    /// it never delays a response. Calls are queued, at most 1024 at a time for all plugins;
    /// past that they are dropped and counted in the log. `stats` is borrowed for the call.
    pub on_disconnect:
        Option<unsafe extern "C" fn(instance: *mut c_void, stats: *const PluginConnectionStats)>,
}

/// What the host passes to `plugin_factory`.
///
/// Host-owned, borrowed for the duration of the `plugin_factory` call.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct PluginFactoryArgs {
    /// The host's ABI version. A plugin may refuse to load into a host that is too old.
    pub header: PluginAbiHeader,
    /// Where the factory reports why it returns NULL.
    pub error: PluginErrorSink,
}

/// The signature of the one symbol every plugin exports, `plugin_factory`.
///
/// `[any-thread]`: called when the host loads the library, possibly more than once per process
/// (never concurrently with itself); it must return the same descriptor every time, or NULL to
/// refuse loading, with a reason set through `args->error`. It must not call back into the host
/// other than through `args->error`.
pub type PluginFactoryFn =
    unsafe extern "C" fn(args: *const PluginFactoryArgs) -> *const PluginDescriptor;

/// The name of the symbol every plugin exports.
pub const PLUGIN_FACTORY_SYMBOL: &str = "plugin_factory";

/// A plugin's ABI version as plain data, exported as the symbol `plugin_abi_mark`, so that the
/// host can read it from the file and refuse an incompatible plugin before loading it (loading
/// runs the library's initialisers). C and C++ plugins emit it with `PLUGIN_ABI_MARK;` at file
/// scope; the Rust SDK's `export_plugin!` emits it. A plugin without it is still loaded, and its
/// version is then checked from the descriptor after loading.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginAbiMark {
    /// Always `PLUGIN_ABI_MAGIC`.
    pub magic: u32,
    /// `PLUGIN_ABI_MAJOR` of the header the plugin was built with.
    pub abi_major: u16,
    /// `PLUGIN_ABI_MINOR` of the header the plugin was built with.
    pub abi_minor: u16,
}

impl PluginAbiMark {
    /// The mark of this version of the ABI.
    pub const fn current() -> Self {
        Self {
            magic: PLUGIN_ABI_MAGIC,
            abi_major: PLUGIN_ABI_MAJOR,
            abi_minor: PLUGIN_ABI_MINOR,
        }
    }
}

/// The name of the data symbol holding a plugin's `PluginAbiMark`.
pub const PLUGIN_ABI_MARK_SYMBOL: &str = "plugin_abi_mark";
