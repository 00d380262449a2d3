//! The SDK's hooks, driven through the descriptor as a host drives them: only the hooks a
//! plugin names are wired, each shim turns the hook's answer into the ABI's status, and what a
//! hook does reaches the host's writers and editors.

use plugin_api::abi::{
    PLUGIN_ERROR, PLUGIN_INVALID_ARGUMENT, PLUGIN_OK, PLUGIN_PANICKED, PLUGIN_REFUSE,
    PLUGIN_RESPOND, PluginAbiHeader, PluginBytes, PluginConnection, PluginConnectionStats,
    PluginDescriptor, PluginErrorSink, PluginHeaderEditor, PluginHost, PluginHttpHeader,
    PluginLogLevel, PluginRequest, PluginResponse, PluginResponseEditor, PluginResponseView,
    PluginRoute, PluginRouteSink, PluginStatus, PluginStr,
};
use plugin_api::export::StaticDescriptor;
use plugin_api::{
    ConnectionStats, Error, Hooks, Host, NoConfig, Plugin, Request, RequestHook, Response,
    ResponseHook, Result, Routes, Verdict,
};
use std::ffi::c_void;
use std::sync::Mutex;
use std::time::Duration;

/// A plugin with routes only.
struct Plain;

impl Plugin for Plain {
    const NAME: &'static str = "plain";
    const VERSION: &'static str = "1.0.0";
    type Config = NoConfig;

    fn create(_: NoConfig, _: Host) -> Result<Self> {
        Ok(Plain)
    }

    fn routes(&self, routes: &mut Routes<'_, Self>) -> Result<()> {
        routes.get("/plain", Self::addresses)?;
        Ok(())
    }
}

impl Plain {
    /// Answers what the request says of the connection: a handler sees none.
    fn addresses(&self, request: &Request<'_>, response: &mut Response<'_>) -> Result<()> {
        response.text(&format!("{:?} {:?}", request.client(), request.local()))
    }
}

/// A plugin with two of the four hooks.
struct Some2;

impl Plugin for Some2 {
    const NAME: &'static str = "some";
    const VERSION: &'static str = "1.0.0";
    const HOOKS: Hooks = Hooks {
        on_request: true,
        on_disconnect: true,
        ..Hooks::NONE
    };
    type Config = NoConfig;

    fn create(_: NoConfig, _: Host) -> Result<Self> {
        Ok(Some2)
    }

    fn routes(&self, _: &mut Routes<'_, Self>) -> Result<()> {
        Ok(())
    }
}

/// The last statistics `Hooked::on_disconnect` was told.
static DISCONNECTED: Mutex<Option<String>> = Mutex::new(None);

/// A plugin with every hook, each doing what the request's path (or the client's address) asks.
struct Hooked;

impl Plugin for Hooked {
    const NAME: &'static str = "hooked";
    const VERSION: &'static str = "1.0.0";
    const HOOKS: Hooks = Hooks::ALL;
    type Config = NoConfig;

    fn create(_: NoConfig, _: Host) -> Result<Self> {
        Ok(Hooked)
    }

    fn routes(&self, _: &mut Routes<'_, Self>) -> Result<()> {
        Ok(())
    }

    fn on_request(&self, request: &Request<'_>, hook: &mut RequestHook<'_>) -> Result<()> {
        match request.path() {
            "/deny" => {
                hook.respond(401)?
                    .header("www-authenticate", "Test")?
                    .write("denied")?;
            }
            "/fail" => return Err(Error::msg("deliberate on_request failure")),
            "/panic" => panic!("deliberate on_request panic"),
            // The host refuses the status: no answer, and the hook carries on.
            "/bad-status" => assert!(hook.respond(1000).is_err()),
            _ => {
                let client = request.client().unwrap_or("none");
                let local = request.local().unwrap_or("none");
                hook.add_header("x-client", client)?
                    .set_header("x-local", local)?
                    .remove_header("x-drop")?;
            }
        }
        Ok(())
    }

    fn on_response(&self, request: &Request<'_>, response: &mut ResponseHook<'_>) -> Result<()> {
        if request.path() == "/fail" {
            return Err(Error::msg("deliberate on_response failure"));
        }
        let seen = format!(
            "{} {:?} {:?} {}",
            response.status(),
            response.headers().collect::<Vec<_>>(),
            response.header("X-In").map(String::from_utf8_lossy),
            String::from_utf8_lossy(response.body()),
        );
        let status = response.status() + 1;
        response
            .set_status(status)?
            .add_header("x-seen", seen)?
            .set_header("x-path", request.path())?
            .remove_header("x-in")?
            .set_body("replaced")?;
        Ok(())
    }

    fn on_connect(&self, connection: &plugin_api::Connection<'_>) -> Result<Verdict> {
        match connection.client() {
            "10.0.0.1:1" => Ok(Verdict::Refuse),
            "10.0.0.2:2" => Err(Error::msg("deliberate on_connect failure")),
            "10.0.0.3:3" => panic!("deliberate on_connect panic"),
            _ => Ok(Verdict::Accept),
        }
    }

    fn on_disconnect(&self, stats: &ConnectionStats<'_>) {
        if stats.requests() == 13 {
            panic!("deliberate on_disconnect panic");
        }
        *DISCONNECTED.lock().unwrap() = Some(format!(
            "{} {} {} {} {} {:?}",
            stats.client(),
            stats.local(),
            stats.requests(),
            stats.bytes_in(),
            stats.bytes_out(),
            stats.duration()
        ));
    }
}

fn text(s: PluginStr) -> String {
    // SAFETY: the SDK passes valid (pointer, length) pairs for the duration of the call.
    String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(s.ptr, s.len) }).into_owned()
}

fn bytes(b: PluginBytes) -> String {
    // SAFETY: as in `text`.
    String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(b.ptr, b.len) }).into_owned()
}

fn plugin_str(s: &str) -> PluginStr {
    PluginStr {
        ptr: s.as_ptr(),
        len: s.len(),
    }
}

fn plugin_bytes(s: &str) -> PluginBytes {
    PluginBytes {
        ptr: s.as_ptr(),
        len: s.len(),
    }
}

/// What the plugin did through the host's writers, editors and error sink, in order.
#[derive(Default)]
struct Calls(Vec<String>);

/// The `Calls` behind a host context.
///
/// # Safety
/// `ctx` must be the `&mut Calls` a test handed over, alive and not otherwise borrowed.
unsafe fn calls<'a>(ctx: *mut c_void) -> &'a mut Calls {
    // SAFETY: forwarded to the caller.
    unsafe { &mut *ctx.cast::<Calls>() }
}

unsafe extern "C" fn set_status(ctx: *mut c_void, status: u16) -> PluginStatus {
    if !(200..=999).contains(&status) {
        return PLUGIN_INVALID_ARGUMENT;
    }
    // SAFETY: every context of these tests is a `Calls`.
    unsafe { calls(ctx) }.0.push(format!("status {status}"));
    PLUGIN_OK
}

unsafe extern "C" fn add(ctx: *mut c_void, name: PluginStr, value: PluginBytes) -> PluginStatus {
    // SAFETY: as in `set_status`.
    let calls = unsafe { calls(ctx) };
    calls
        .0
        .push(format!("add {}: {}", text(name), bytes(value)));
    PLUGIN_OK
}

unsafe extern "C" fn set(ctx: *mut c_void, name: PluginStr, value: PluginBytes) -> PluginStatus {
    // SAFETY: as in `set_status`.
    let calls = unsafe { calls(ctx) };
    calls
        .0
        .push(format!("set {}: {}", text(name), bytes(value)));
    PLUGIN_OK
}

unsafe extern "C" fn remove(ctx: *mut c_void, name: PluginStr) -> PluginStatus {
    // SAFETY: as in `set_status`.
    unsafe { calls(ctx) }
        .0
        .push(format!("remove {}", text(name)));
    PLUGIN_OK
}

unsafe extern "C" fn body(ctx: *mut c_void, data: PluginBytes) -> PluginStatus {
    // SAFETY: as in `set_status`.
    unsafe { calls(ctx) }
        .0
        .push(format!("body {}", bytes(data)));
    PLUGIN_OK
}

unsafe extern "C" fn error(ctx: *mut c_void, message: PluginStr) -> PluginStatus {
    // SAFETY: as in `set_status`.
    unsafe { calls(ctx) }
        .0
        .push(format!("error {}", text(message)));
    PLUGIN_OK
}

unsafe extern "C" fn log(_: *const c_void, _: PluginLogLevel, _: PluginStr) {}

static HOST: PluginHostCell = PluginHostCell(PluginHost {
    header: PluginAbiHeader {
        magic: plugin_api::abi::PLUGIN_ABI_MAGIC,
        abi_major: plugin_api::abi::PLUGIN_ABI_MAJOR,
        abi_minor: plugin_api::abi::PLUGIN_ABI_MINOR,
        struct_size: size_of::<PluginHost>() as u32,
        reserved: 0,
    },
    ctx: std::ptr::null(),
    log,
});

/// A `PluginHost` in a static.
struct PluginHostCell(PluginHost);
// SAFETY: immutable, with a NULL context and a `log` that does nothing.
unsafe impl Sync for PluginHostCell {}

/// A plugin's descriptor and one instance of it, made through `create`.
struct Loaded {
    descriptor: &'static PluginDescriptor,
    instance: *mut c_void,
}

impl Loaded {
    fn new<P: Plugin>() -> Self {
        let descriptor: &'static StaticDescriptor =
            Box::leak(Box::new(StaticDescriptor::new::<P>()));
        // SAFETY: a descriptor the SDK built, leaked, so alive for the test.
        let descriptor = unsafe { &*descriptor.get() };
        let mut instance = std::ptr::null_mut();
        let mut calls = Calls::default();
        let sink = error_sink(&mut calls);
        // SAFETY: the host vtable is static, the configuration and the out pointer outlive the
        // call.
        let status = unsafe {
            (descriptor.create.unwrap())(&HOST.0, plugin_str("{}"), &mut instance, &sink)
        };
        assert_eq!(status, PLUGIN_OK, "{:?}", calls.0);
        Self {
            descriptor,
            instance,
        }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // SAFETY: the instance `create` made, destroyed once.
        unsafe { (self.descriptor.destroy.unwrap())(self.instance) };
    }
}

fn error_sink(calls: &mut Calls) -> PluginErrorSink {
    PluginErrorSink {
        ctx: (calls as *mut Calls).cast(),
        set: error,
    }
}

/// A request for `path` with one header, `x-in: 1`.
struct RawRequest {
    headers: Vec<PluginHttpHeader>,
    path: String,
}

impl RawRequest {
    fn new(path: &str) -> Self {
        Self {
            headers: vec![PluginHttpHeader {
                name: plugin_str("x-in"),
                value: plugin_bytes("1"),
            }],
            path: path.to_owned(),
        }
    }

    fn raw(&self) -> PluginRequest {
        PluginRequest {
            method: plugin_str("GET"),
            path: plugin_str(&self.path),
            query: plugin_str(""),
            headers: self.headers.as_ptr(),
            header_count: self.headers.len(),
            params: std::ptr::null(),
            param_count: 0,
            body: plugin_bytes(""),
        }
    }
}

fn connection(client: &'static str, local: &'static str) -> PluginConnection {
    PluginConnection {
        client: plugin_str(client),
        local: plugin_str(local),
    }
}

/// Calls `on_request` for `path` on `connection`; returns the status, the header edits followed
/// by what was reported as an error, and what was written to the `respond` writer.
fn on_request(
    plugin: &Loaded,
    path: &str,
    connection: PluginConnection,
) -> (PluginStatus, Calls, Calls) {
    let request = RawRequest::new(path);
    let (mut edits, mut answer, mut errors) =
        (Calls::default(), Calls::default(), Calls::default());
    let editor = PluginHeaderEditor {
        ctx: (&mut edits as *mut Calls).cast(),
        add,
        set,
        remove,
    };
    let respond = PluginResponse {
        ctx: (&mut answer as *mut Calls).cast(),
        set_status,
        add_header: add,
        write_body: body,
    };
    let sink = error_sink(&mut errors);
    // SAFETY: everything passed lives on this frame for the call.
    let status = unsafe {
        (plugin.descriptor.on_request.unwrap())(
            plugin.instance,
            &request.raw(),
            &connection,
            &editor,
            &respond,
            &sink,
        )
    };
    edits.0.extend(errors.0.iter().cloned());
    (status, edits, answer)
}

#[test]
fn a_plugin_without_hooks_has_none_in_its_descriptor() {
    let plain = Loaded::new::<Plain>();
    let d = plain.descriptor;
    assert!(d.on_request.is_none());
    assert!(d.on_response.is_none());
    assert!(d.on_connect.is_none());
    assert!(d.on_disconnect.is_none());
    assert_eq!(Plain::HOOKS, Hooks::NONE);
}

#[test]
fn only_the_hooks_a_plugin_names_are_in_its_descriptor() {
    let some = Loaded::new::<Some2>();
    let d = some.descriptor;
    assert!(d.on_request.is_some());
    assert!(d.on_response.is_none());
    assert!(d.on_connect.is_none());
    assert!(d.on_disconnect.is_some());
    let all = Loaded::new::<Hooked>();
    let d = all.descriptor;
    assert!(d.on_request.is_some() && d.on_response.is_some());
    assert!(d.on_connect.is_some() && d.on_disconnect.is_some());
}

#[test]
fn on_request_edits_the_headers_and_sees_the_connection() {
    let plugin = Loaded::new::<Hooked>();
    let (status, edits, answer) = on_request(
        &plugin,
        "/go",
        connection("127.0.0.1:50412", "127.0.0.1:8080"),
    );
    assert_eq!(status, PLUGIN_OK);
    assert_eq!(
        edits.0,
        [
            "add x-client: 127.0.0.1:50412",
            "set x-local: 127.0.0.1:8080",
            "remove x-drop"
        ]
    );
    assert!(answer.0.is_empty(), "{:?}", answer.0);
}

#[test]
fn a_hook_request_without_a_socket_has_no_addresses() {
    let plugin = Loaded::new::<Hooked>();
    let (status, edits, _) = on_request(&plugin, "/go", connection("", ""));
    assert_eq!(status, PLUGIN_OK);
    assert_eq!(edits.0[..2], ["add x-client: none", "set x-local: none"]);
}

#[test]
fn on_request_that_responds_answers_plugin_respond_with_its_answer() {
    let plugin = Loaded::new::<Hooked>();
    let (status, edits, answer) =
        on_request(&plugin, "/deny", connection("127.0.0.1:1", "127.0.0.1:2"));
    assert_eq!(status, PLUGIN_RESPOND);
    assert!(edits.0.is_empty(), "{:?}", edits.0);
    assert_eq!(
        answer.0,
        ["status 401", "add www-authenticate: Test", "body denied"]
    );
}

#[test]
fn a_refused_respond_status_does_not_answer() {
    let plugin = Loaded::new::<Hooked>();
    let (status, edits, answer) = on_request(
        &plugin,
        "/bad-status",
        connection("127.0.0.1:1", "127.0.0.1:2"),
    );
    assert_eq!(status, PLUGIN_OK, "{:?}", edits.0);
    assert!(answer.0.is_empty(), "{:?}", answer.0);
}

#[test]
fn a_failing_or_panicking_on_request_reports_its_reason() {
    let plugin = Loaded::new::<Hooked>();
    let (status, reported, _) =
        on_request(&plugin, "/fail", connection("127.0.0.1:1", "127.0.0.1:2"));
    assert_eq!(status, PLUGIN_ERROR);
    assert_eq!(reported.0, ["error deliberate on_request failure"]);
    let (status, reported, _) =
        on_request(&plugin, "/panic", connection("127.0.0.1:1", "127.0.0.1:2"));
    assert_eq!(status, PLUGIN_PANICKED);
    assert_eq!(reported.0, ["error deliberate on_request panic"]);
}

#[test]
fn a_hook_with_a_null_argument_is_refused_unread() {
    let plugin = Loaded::new::<Hooked>();
    // SAFETY: NULL arguments are checked before anything is read.
    let status = unsafe {
        (plugin.descriptor.on_request.unwrap())(
            plugin.instance,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(status, PLUGIN_INVALID_ARGUMENT);
    // SAFETY: as above.
    let status = unsafe {
        (plugin.descriptor.on_connect.unwrap())(plugin.instance, std::ptr::null(), std::ptr::null())
    };
    assert_eq!(status, PLUGIN_INVALID_ARGUMENT);
}

/// Calls `on_response` for `path` on a 200 response with a header and a body.
fn on_response(plugin: &Loaded, path: &str) -> (PluginStatus, Calls) {
    let request = RawRequest::new(path);
    let headers = [PluginHttpHeader {
        name: plugin_str("x-in"),
        value: plugin_bytes("yes"),
    }];
    let view = PluginResponseView {
        status: 200,
        headers: headers.as_ptr(),
        header_count: headers.len(),
        body: plugin_bytes("original"),
    };
    let mut edits = Calls::default();
    let ctx: *mut c_void = (&mut edits as *mut Calls).cast();
    let editor = PluginResponseEditor {
        ctx,
        set_status,
        add_header: add,
        set_header: set,
        remove_header: remove,
        set_body: body,
    };
    let sink = PluginErrorSink { ctx, set: error };
    // SAFETY: everything passed lives on this frame for the call; the editor and the sink
    // share one `Calls`, used by one callback at a time.
    let status = unsafe {
        (plugin.descriptor.on_response.unwrap())(
            plugin.instance,
            &request.raw(),
            &connection("127.0.0.1:1", "127.0.0.1:2"),
            &view,
            &editor,
            &sink,
        )
    };
    (status, edits)
}

#[test]
fn on_response_sees_the_response_and_edits_it() {
    let plugin = Loaded::new::<Hooked>();
    let (status, edits) = on_response(&plugin, "/go");
    assert_eq!(status, PLUGIN_OK);
    assert_eq!(
        edits.0,
        [
            "status 201",
            "add x-seen: 200 [(\"x-in\", [121, 101, 115])] Some(\"yes\") original",
            "set x-path: /go",
            "remove x-in",
            "body replaced"
        ]
    );
    let (status, edits) = on_response(&plugin, "/fail");
    assert_eq!(status, PLUGIN_ERROR);
    assert_eq!(edits.0, ["error deliberate on_response failure"]);
}

fn on_connect(plugin: &Loaded, client: &'static str) -> (PluginStatus, Calls) {
    let mut errors = Calls::default();
    let sink = error_sink(&mut errors);
    // SAFETY: everything passed lives on this frame for the call.
    let status = unsafe {
        (plugin.descriptor.on_connect.unwrap())(
            plugin.instance,
            &connection(client, "127.0.0.1:8080"),
            &sink,
        )
    };
    (status, errors)
}

#[test]
fn on_connect_answers_its_verdict() {
    let plugin = Loaded::new::<Hooked>();
    assert_eq!(on_connect(&plugin, "127.0.0.1:5").0, PLUGIN_OK);
    assert_eq!(on_connect(&plugin, "10.0.0.1:1").0, PLUGIN_REFUSE);
    let (status, errors) = on_connect(&plugin, "10.0.0.2:2");
    assert_eq!(status, PLUGIN_ERROR);
    assert_eq!(errors.0, ["error deliberate on_connect failure"]);
    let (status, errors) = on_connect(&plugin, "10.0.0.3:3");
    assert_eq!(status, PLUGIN_PANICKED);
    assert_eq!(errors.0, ["error deliberate on_connect panic"]);
}

#[test]
fn on_disconnect_is_told_the_statistics_and_swallows_a_panic() {
    let plugin = Loaded::new::<Hooked>();
    let disconnect = plugin.descriptor.on_disconnect.unwrap();
    let mut stats = PluginConnectionStats {
        connection: connection("127.0.0.1:7", "127.0.0.1:8080"),
        requests: 3,
        bytes_in: 100,
        bytes_out: 2000,
        duration_us: 1_500_000,
    };
    // SAFETY: the statistics live on this frame for the call.
    unsafe { disconnect(plugin.instance, &stats) };
    assert_eq!(
        DISCONNECTED.lock().unwrap().as_deref(),
        Some(
            format!(
                "127.0.0.1:7 127.0.0.1:8080 3 100 2000 {:?}",
                Duration::from_millis(1500)
            )
            .as_str()
        )
    );
    stats.requests = 13;
    // SAFETY: as above. The hook panics: the call returns all the same.
    unsafe { disconnect(plugin.instance, &stats) };
}

/// The handler `Plain` added, caught by a route sink.
unsafe extern "C" fn catch_route(ctx: *mut c_void, route: *const PluginRoute) -> PluginStatus {
    // SAFETY: the context is the test's `Option<PluginRoute>`; the route is valid for the call.
    unsafe { *ctx.cast::<Option<PluginRoute>>() = Some(*route) };
    PLUGIN_OK
}

#[test]
fn a_route_handler_sees_no_connection() {
    let plugin = Loaded::new::<Plain>();
    let mut route: Option<PluginRoute> = None;
    let sink = PluginRouteSink {
        ctx: (&mut route as *mut Option<PluginRoute>).cast(),
        add: catch_route,
    };
    // SAFETY: the sink lives on this frame for the call; a NULL error sink is allowed.
    let status =
        unsafe { (plugin.descriptor.routes.unwrap())(plugin.instance, &sink, std::ptr::null()) };
    assert_eq!(status, PLUGIN_OK);
    let route = route.expect("a route");
    let request = RawRequest::new("/plain");
    let mut answer = Calls::default();
    let response = PluginResponse {
        ctx: (&mut answer as *mut Calls).cast(),
        set_status,
        add_header: add,
        write_body: body,
    };
    // SAFETY: the route's handler and user data, with a request and writer alive for the call.
    let status = unsafe {
        (route.handler.unwrap())(
            plugin.instance,
            route.user_data,
            &request.raw(),
            &response,
            std::ptr::null(),
        )
    };
    assert_eq!(status, PLUGIN_OK);
    assert_eq!(answer.0.last().map(String::as_str), Some("body None None"));
}
