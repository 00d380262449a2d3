//! The `extern "C"` shims that [`export_plugin!`](crate::export_plugin) wires into a plugin's
//! descriptor. Every shim runs the plugin's code inside `guard`, so a panic becomes
//! `PLUGIN_PANICKED` and never unwinds into the host.

use crate::abi::{
    PLUGIN_ABI_MAGIC, PLUGIN_ABI_MAJOR, PLUGIN_ABI_MINOR, PLUGIN_ERROR, PLUGIN_INVALID_ARGUMENT,
    PLUGIN_OK, PLUGIN_PANICKED, PLUGIN_REFUSE, PLUGIN_RESPOND, PluginAbiHeader, PluginConnection,
    PluginConnectionStats, PluginDescriptor, PluginErrorSink, PluginHeaderEditor, PluginHost,
    PluginRequest, PluginResponse, PluginResponseEditor, PluginResponseView, PluginRouteSink,
    PluginStatus, PluginStr,
};
use crate::hooks::{Connection, ConnectionStats, RequestHook, ResponseHook, Verdict};
use crate::raw;
use crate::sdk::{Error, Host, Plugin, Request, Response, Result, Routes};
use abi_stable::StableAbi;
use abi_stable::library::AbiHeader;
use abi_stable::type_layout::TypeLayout;
use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What `PluginDescriptor::rust_layout` points to in a plugin built with this SDK: the
/// abi_stable version, then the layout abi_stable derived for `PluginDescriptor` (and,
/// through its fields, for every type of the ABI). The host checks the first, then compares the
/// second with its own layout: equal for a plugin of the host's ABI minor; for an older minor,
/// the plugin's fields must be the first fields of the host's, each compatible.
#[repr(C)]
pub struct RustLayout {
    /// The abi_stable ABI version that produced `descriptor`; checked before it is read.
    pub abi_stable: AbiHeader,
    /// The layout of `PluginDescriptor` as this plugin was compiled.
    pub descriptor: &'static TypeLayout,
}

/// The layout of this build of the ABI.
pub static RUST_LAYOUT: RustLayout = RustLayout {
    abi_stable: AbiHeader::VALUE,
    descriptor: <PluginDescriptor as StableAbi>::LAYOUT,
};

/// A descriptor that can live in a `static`.
#[repr(transparent)]
pub struct StaticDescriptor(PluginDescriptor);

// SAFETY: the descriptor is immutable and its pointers refer to immutable statics and to
// functions, so sharing it between threads is sound.
unsafe impl Sync for StaticDescriptor {}

impl StaticDescriptor {
    /// The descriptor of plugin `P`, built at compile time. Only the hooks `P::HOOKS` names
    /// are set; the others are NULL, so that the host skips them at no cost.
    pub const fn new<P: Plugin>() -> Self {
        let hooks = P::HOOKS;
        Self(PluginDescriptor {
            header: PluginAbiHeader {
                magic: PLUGIN_ABI_MAGIC,
                abi_major: PLUGIN_ABI_MAJOR,
                abi_minor: PLUGIN_ABI_MINOR,
                struct_size: size_of::<PluginDescriptor>() as u32,
                reserved: 0,
            },
            name: raw::plugin_str(P::NAME),
            version: raw::plugin_str(P::VERSION),
            rust_layout: (&raw const RUST_LAYOUT).cast(),
            create: Some(create::<P>),
            start: Some(start::<P>),
            stop: Some(stop::<P>),
            destroy: Some(destroy::<P>),
            routes: Some(routes::<P>),
            on_request: if hooks.on_request {
                Some(on_request::<P>)
            } else {
                None
            },
            on_response: if hooks.on_response {
                Some(on_response::<P>)
            } else {
                None
            },
            on_connect: if hooks.on_connect {
                Some(on_connect::<P>)
            } else {
                None
            },
            on_disconnect: if hooks.on_disconnect {
                Some(on_disconnect::<P>)
            } else {
                None
            },
        })
    }

    /// The pointer `plugin_factory` returns.
    pub const fn get(&'static self) -> *const PluginDescriptor {
        &self.0
    }
}

/// Runs `f`, turning an error into `PLUGIN_ERROR` and a panic into `PLUGIN_PANICKED`, each with
/// its message reported through `error`.
fn guard(error: *const PluginErrorSink, f: impl FnOnce() -> Result<()>) -> PluginStatus {
    guard_value(error, f).map_or_else(|status| status, |()| PLUGIN_OK)
}

/// [`guard`] for a call that answers a value: the value, or the status of the failure.
fn guard_value<T>(
    error: *const PluginErrorSink,
    f: impl FnOnce() -> Result<T>,
) -> std::result::Result<T, PluginStatus> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            report(error, e.message());
            Err(PLUGIN_ERROR)
        }
        Err(payload) => {
            report(error, panic_message(&payload));
            // Dropping a payload can itself panic, which would abort here: leak it instead.
            std::mem::forget(payload);
            Err(PLUGIN_PANICKED)
        }
    }
}

fn panic_message(payload: &Box<dyn Any + Send>) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic with a non-string payload"
    }
}

fn report(error: *const PluginErrorSink, message: &str) {
    // SAFETY: the host passes a valid sink (or NULL) for the duration of the call.
    if let Some(sink) = unsafe { error.as_ref() } {
        // SAFETY: `sink.set` is valid during the call and copies the message.
        unsafe { (sink.set)(sink.ctx, raw::plugin_str(message)) };
    }
}

/// Borrows the instance `create` made.
///
/// # Safety
/// `instance` must be a pointer produced by `create::<P>` and not yet destroyed.
unsafe fn instance<'a, P>(instance: *mut c_void) -> &'a P {
    // SAFETY: by the caller's guarantee it points to a live `P` created by `Box::into_raw`.
    unsafe { &*instance.cast::<P>() }
}

unsafe extern "C" fn create<P: Plugin>(
    host: *const PluginHost,
    config: PluginStr,
    out_instance: *mut *mut c_void,
    error: *const PluginErrorSink,
) -> PluginStatus {
    if out_instance.is_null() {
        return PLUGIN_INVALID_ARGUMENT;
    }
    guard(error, || {
        // SAFETY: the host passes a `PluginHost` that lives until the library is unloaded.
        let host = unsafe { Host::from_raw(host) }
            .ok_or_else(|| Error::msg("the host passed no services"))?;
        // SAFETY: `config` is UTF-8 JSON borrowed for this call.
        let config = unsafe { raw::host_str(config) };
        let config = parse_config::<P::Config>(config)?;
        let plugin = P::create(config, host)?;
        // SAFETY: `out_instance` was checked non-null and is writable for this call.
        unsafe { *out_instance = Box::into_raw(Box::new(plugin)).cast() };
        Ok(())
    })
}

/// Deserializes an instance configuration. A failure is reported as the header's `create`
/// documents, naming the value's key path (`invalid configuration at `limits.max`: ...`), so
/// that the host can point at the value's line in its configuration file.
fn parse_config<C: serde::de::DeserializeOwned>(json: &str) -> Result<C> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path: Vec<String> = e
            .path()
            .iter()
            .map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => index.to_string(),
                serde_path_to_error::Segment::Map { key } => key.clone(),
                serde_path_to_error::Segment::Enum { variant } => variant.clone(),
                serde_path_to_error::Segment::Unknown => "?".to_owned(),
            })
            .collect();
        let inner = e.into_inner();
        // serde_json's position is in the JSON the host generated, which the user never saw.
        let message = inner.to_string();
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        let message = message.strip_suffix(&position).unwrap_or(&message);
        if path.is_empty() {
            Error::msg(format!("invalid configuration: {message}"))
        } else {
            Error::msg(format!(
                "invalid configuration at `{}`: {message}",
                path.join(".")
            ))
        }
    })
}

unsafe extern "C" fn start<P: Plugin>(
    this: *mut c_void,
    error: *const PluginErrorSink,
) -> PluginStatus {
    // SAFETY: the host passes the instance `create::<P>` produced.
    guard(error, || unsafe { instance::<P>(this) }.start())
}

unsafe extern "C" fn stop<P: Plugin>(
    this: *mut c_void,
    error: *const PluginErrorSink,
) -> PluginStatus {
    // SAFETY: the host passes the instance `create::<P>` produced.
    guard(error, || unsafe { instance::<P>(this) }.stop())
}

unsafe extern "C" fn destroy<P: Plugin>(this: *mut c_void) {
    // A panic in `Drop` is caught and dropped: `destroy` cannot fail.
    let _ = guard(std::ptr::null(), || {
        // SAFETY: the host passes the instance `create::<P>` produced, exactly once, last.
        drop(unsafe { Box::from_raw(this.cast::<P>()) });
        Ok(())
    });
}

unsafe extern "C" fn routes<P: Plugin>(
    this: *mut c_void,
    sink: *const PluginRouteSink,
    error: *const PluginErrorSink,
) -> PluginStatus {
    // SAFETY: the host passes a valid sink for the duration of the call.
    let Some(sink) = (unsafe { sink.as_ref() }) else {
        return PLUGIN_INVALID_ARGUMENT;
    };
    // SAFETY: the host passes the instance `create::<P>` produced.
    guard(error, || {
        unsafe { instance::<P>(this) }.routes(&mut Routes::new(sink))
    })
}

/// The shim behind every route of a Rust plugin; `user_data` holds the handler.
pub(crate) unsafe extern "C" fn handle<P: Plugin>(
    this: *mut c_void,
    user_data: *mut c_void,
    request: *const PluginRequest,
    response: *const PluginResponse,
    error: *const PluginErrorSink,
) -> PluginStatus {
    // SAFETY: the host passes a request and a writer valid for the duration of the call.
    let (Some(request), Some(response)) =
        (unsafe { request.as_ref() }, unsafe { response.as_ref() })
    else {
        return PLUGIN_INVALID_ARGUMENT;
    };
    guard(error, || {
        // SAFETY: `user_data` is what `Routes::route` stored for this route of a `P`.
        let handler = unsafe { raw::user_data_to_handler::<P>(user_data) };
        // SAFETY: the host passes the instance `create::<P>` produced, started, not stopped.
        let plugin = unsafe { instance::<P>(this) };
        handler(plugin, &Request::new(request), &mut Response::new(response))
    })
}

/// The `on_request` shim: `PLUGIN_RESPOND` when the hook answered the request and succeeded.
unsafe extern "C" fn on_request<P: Plugin>(
    this: *mut c_void,
    request: *const PluginRequest,
    connection: *const PluginConnection,
    headers: *const PluginHeaderEditor,
    respond: *const PluginResponse,
    error: *const PluginErrorSink,
) -> PluginStatus {
    // SAFETY: the host passes these borrowed for the duration of the call.
    let (Some(request), Some(connection), Some(headers), Some(respond)) = (unsafe {
        (
            request.as_ref(),
            connection.as_ref(),
            headers.as_ref(),
            respond.as_ref(),
        )
    }) else {
        return PLUGIN_INVALID_ARGUMENT;
    };
    let mut hook = RequestHook::new(headers, respond);
    let result = guard_value(error, || {
        // SAFETY: the host passes the instance `create::<P>` produced, started, not stopped.
        let plugin = unsafe { instance::<P>(this) };
        plugin.on_request(&Request::with_connection(request, connection), &mut hook)
    });
    match result {
        Ok(()) if hook.responds() => PLUGIN_RESPOND,
        Ok(()) => PLUGIN_OK,
        Err(status) => status,
    }
}

/// The `on_response` shim.
unsafe extern "C" fn on_response<P: Plugin>(
    this: *mut c_void,
    request: *const PluginRequest,
    connection: *const PluginConnection,
    response: *const PluginResponseView,
    edit: *const PluginResponseEditor,
    error: *const PluginErrorSink,
) -> PluginStatus {
    // SAFETY: the host passes these borrowed for the duration of the call.
    let (Some(request), Some(connection), Some(response), Some(edit)) = (unsafe {
        (
            request.as_ref(),
            connection.as_ref(),
            response.as_ref(),
            edit.as_ref(),
        )
    }) else {
        return PLUGIN_INVALID_ARGUMENT;
    };
    guard(error, || {
        // SAFETY: as in `on_request`.
        let plugin = unsafe { instance::<P>(this) };
        plugin.on_response(
            &Request::with_connection(request, connection),
            &mut ResponseHook::new(response, edit),
        )
    })
}

/// The `on_connect` shim: `PLUGIN_REFUSE` for [`Verdict::Refuse`].
unsafe extern "C" fn on_connect<P: Plugin>(
    this: *mut c_void,
    connection: *const PluginConnection,
    error: *const PluginErrorSink,
) -> PluginStatus {
    // SAFETY: the host passes the connection borrowed for the duration of the call.
    let Some(connection) = (unsafe { connection.as_ref() }) else {
        return PLUGIN_INVALID_ARGUMENT;
    };
    let verdict = guard_value(error, || {
        // SAFETY: as in `on_request`.
        unsafe { instance::<P>(this) }.on_connect(&Connection::new(connection))
    });
    match verdict {
        Ok(Verdict::Accept) => PLUGIN_OK,
        Ok(Verdict::Refuse) => PLUGIN_REFUSE,
        Err(status) => status,
    }
}

/// The `on_disconnect` shim. The ABI gives it no way to fail: a panic is caught and dropped.
unsafe extern "C" fn on_disconnect<P: Plugin>(
    this: *mut c_void,
    stats: *const PluginConnectionStats,
) {
    // SAFETY: the host passes the statistics borrowed for the duration of the call.
    let Some(stats) = (unsafe { stats.as_ref() }) else {
        return;
    };
    let _ = guard(std::ptr::null(), || {
        // SAFETY: as in `on_request`.
        unsafe { instance::<P>(this) }.on_disconnect(&ConnectionStats::new(stats));
        Ok(())
    });
}

/// Exports a type implementing [`Plugin`](crate::Plugin) as this library's plugin, by
/// generating the `plugin_factory` symbol and its descriptor, and the `plugin_abi_mark` data
/// symbol that lets the host check the ABI version before loading. Use it once per library.
///
/// ```ignore
/// plugin_api::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        /// The plugin's entry point, generated by `plugin_api::export_plugin!`.
        #[unsafe(no_mangle)]
        pub extern "C" fn plugin_factory(
            _args: *const $crate::abi::PluginFactoryArgs,
        ) -> *const $crate::abi::PluginDescriptor {
            static DESCRIPTOR: $crate::export::StaticDescriptor =
                $crate::export::StaticDescriptor::new::<$plugin>();
            DESCRIPTOR.get()
        }

        /// The plugin's ABI version, readable by the host without loading the library.
        #[unsafe(no_mangle)]
        #[allow(non_upper_case_globals)]
        pub static plugin_abi_mark: $crate::abi::PluginAbiMark =
            $crate::abi::PluginAbiMark::current();
    };
}
