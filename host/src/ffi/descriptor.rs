//! Opening a plugin library, calling its `plugin_factory` and validating the descriptor.

use super::callbacks::{self, ErrorSlot, LogContext, plugin_str};
use super::crash::{self, Callee};
use super::instance::{CreateFn, DestroyFn, HookFns, LifecycleFn, RoutesFn};
use crate::error::{Error, ErrorKind};
use crate::inspect::check_version;
use crate::pluginlog::LogLimiter;
use abi_stable::StableAbi;
use abi_stable::abi_stability::abi_checking::{
    AbiInstability, AbiInstabilityError, CheckingGlobals, check_layout_compatibility_with_globals,
};
use abi_stable::type_layout::TypeLayout;
use parking_lot::Mutex;
use plugin_api::abi::{
    PLUGIN_ABI_MAGIC, PLUGIN_ABI_MAJOR, PLUGIN_ABI_MINOR, PLUGIN_FACTORY_SYMBOL, PluginAbiHeader,
    PluginDescriptor, PluginFactoryArgs, PluginFactoryFn, PluginHost, PluginStr,
};
use plugin_api::export::{RustLayout, StaticDescriptor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The size of `PluginDescriptor` in ABI 1.0: the least a plugin may declare.
const DESCRIPTOR_SIZE_1_0: usize = std::mem::offset_of!(PluginDescriptor, on_request);

/// How much of `PluginDescriptor` a plugin built for ABI 1.`minor` has: the fields a later
/// minor appended are absent from it whatever its `struct_size` says.
fn descriptor_size(minor: u16) -> usize {
    match minor {
        0 => DESCRIPTOR_SIZE_1_0,
        _ => size_of::<PluginDescriptor>(),
    }
}
/// The longest plugin name accepted, in bytes.
const MAX_NAME_LEN: usize = 128;
/// The longest version string accepted, in bytes.
const MAX_VERSION_LEN: usize = 128;

/// `plugin_factory` must never run concurrently with itself (header rule).
static FACTORY_LOCK: Mutex<()> = Mutex::new(());

/// The header of a host-built struct of `size` bytes.
const fn host_header(size: usize) -> PluginAbiHeader {
    PluginAbiHeader {
        magic: PLUGIN_ABI_MAGIC,
        abi_major: PLUGIN_ABI_MAJOR,
        abi_minor: PLUGIN_ABI_MINOR,
        struct_size: size as u32,
        reserved: 0,
    }
}

/// A validated plugin descriptor, and the library it lives in.
///
/// The function pointers are copied out of the plugin's descriptor once validated; the library
/// handle is kept (and unloaded only when the last `Arc<Descriptor>` is dropped, which happens
/// after every instance created from it is destroyed).
pub(crate) struct Descriptor {
    pub(crate) name: String,
    pub(crate) version: String,
    /// The ABI version the plugin was built for.
    pub(crate) abi: (u16, u16),
    pub(crate) file: Option<PathBuf>,
    pub(super) create: CreateFn,
    pub(super) start: Option<LifecycleFn>,
    pub(super) stop: Option<LifecycleFn>,
    pub(super) destroy: DestroyFn,
    pub(super) routes: Option<RoutesFn>,
    /// The hooks (ABI 1.1; none for a plugin built against 1.0).
    pub(crate) hooks: HookFns,
    /// The host services handed to every instance created, kept for as long as the library is
    /// loaded: a plugin may keep its `PluginHost` pointer anywhere its code can run.
    services: Mutex<Vec<Services>>,
    /// Declared last, so that it is dropped last.
    _library: Option<libloading::Library>,
}

/// One instance's services vtable and the context its `ctx` points to (both boxed, so their
/// addresses never change).
struct Services {
    _vtable: Box<PluginHost>,
    _context: Box<LogContext>,
}

// SAFETY: both boxes are immutable once built; `ctx` only points into `_context`, and the only
// function, `log`, is [thread-safe].
unsafe impl Send for Services {}
// SAFETY: as for `Send`.
unsafe impl Sync for Services {}

impl Descriptor {
    /// A services vtable for a new instance called `instance`, whose log passes `limiter`'s
    /// rate limit, valid until the library is unloaded.
    pub(super) fn services_for(
        &self,
        instance: &str,
        limiter: Arc<LogLimiter>,
    ) -> *const PluginHost {
        let context = Box::new(LogContext {
            plugin: self.name.clone(),
            instance: instance.to_owned(),
            limiter,
        });
        let vtable = Box::new(PluginHost {
            header: host_header(size_of::<PluginHost>()),
            ctx: (&raw const *context).cast(),
            log: callbacks::log,
        });
        let pointer = &raw const *vtable;
        self.services.lock().push(Services {
            _vtable: vtable,
            _context: context,
        });
        pointer
    }
}

impl Descriptor {
    /// Opens the library at `open_path` (the plugin file `path`, or a private copy of it) and
    /// validates its descriptor. The caller has inspected the file first.
    pub(crate) fn load(open_path: &Path, path: &Path) -> Result<Self, Error> {
        let fail = |kind| Error::new(kind).with_file(Some(path));
        let callee = Callee::library(path);
        let library = crash::during(&callee.call("dlopen"), || {
            // SAFETY: opening a library runs its initialisers. In-process plugins are trusted
            // code (README, "Security model"), and the host has checked the file's
            // permissions, format, exports and ABI mark before this point.
            unsafe { open(open_path) }
        })
        .map_err(|source| fail(ErrorKind::NotALibrary { source }))?;
        // SAFETY: the header declares `plugin_factory` with exactly this signature. The
        // pointer is used only while `library` is alive: it is called here, and the library
        // moves into the returned `Descriptor`.
        let factory = unsafe { library.get::<PluginFactoryFn>(PLUGIN_FACTORY_SYMBOL) }
            .map(|symbol| *symbol)
            .map_err(|_| fail(ErrorKind::SymbolMissing))?;
        let mut slot = ErrorSlot::default();
        let args = PluginFactoryArgs {
            header: host_header(size_of::<PluginFactoryArgs>()),
            error: slot.sink(),
        };
        let description = callee.call("plugin_factory");
        let raw = {
            let _serialized = FACTORY_LOCK.lock();
            crash::during(&description, || {
                // SAFETY: `args` and the slot behind its sink outlive the call, and calls are
                // serialized by `FACTORY_LOCK`, as the header promises the plugin.
                unsafe { factory(&args) }
            })
        };
        if raw.is_null() {
            let reason = slot
                .0
                .take()
                .unwrap_or_else(|| "no reason given".to_owned());
            return Err(fail(ErrorKind::FactoryRefused {
                reason: reason.into(),
            }));
        }
        // SAFETY: a non-NULL result points to a descriptor that lives as long as the library,
        // which `validate` receives and keeps.
        unsafe { validate(raw, Some(path), Some(library)) }
    }

    /// The descriptor of a plugin compiled into the application. It goes through the same
    /// validation as a loaded one.
    pub(crate) fn builtin<P: plugin_api::Plugin>() -> Result<Self, Error> {
        // Leaked once per registration: a descriptor must be 'static, like a library's.
        let descriptor: &'static StaticDescriptor =
            Box::leak(Box::new(StaticDescriptor::new::<P>()));
        // SAFETY: the pointer comes from a valid, leaked (so 'static) descriptor.
        unsafe { validate(descriptor.get(), None, None) }
    }
}

/// Opens a library with the platform's conservative flags (`RTLD_NOW | RTLD_LOCAL` on Unix):
/// every symbol is resolved up front, and none leaks into the global namespace.
///
/// # Safety
/// Runs the library's initialisers; see `libloading::Library::new`.
unsafe fn open(path: &Path) -> Result<libloading::Library, libloading::Error> {
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: forwarded to the caller.
        unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(Into::into)
    }
    #[cfg(not(unix))]
    {
        // SAFETY: forwarded to the caller.
        unsafe { libloading::Library::new(path) }
    }
}

/// Checks the descriptor at `raw`, in the order the ABI rules give: header (magic, major,
/// minor, size), Rust layout, required functions, name, version.
///
/// # Safety
/// `raw` must be non-NULL and point to a descriptor that is readable for the header and for
/// `header.struct_size` bytes, and stays valid while `library` is loaded (or forever when
/// `library` is `None`).
unsafe fn validate(
    raw: *const PluginDescriptor,
    file: Option<&Path>,
    library: Option<libloading::Library>,
) -> Result<Descriptor, Error> {
    let fail = |kind| Error::new(kind).with_file(file);
    let invalid = |reason: &str| {
        fail(ErrorKind::InvalidDescriptor {
            reason: reason.to_owned(),
        })
    };
    if !raw.is_aligned() {
        return Err(invalid("the descriptor pointer is misaligned"));
    }
    // SAFETY: aligned, non-NULL, and the header is readable by the caller's guarantee.
    let header = unsafe { raw.cast::<PluginAbiHeader>().read() };
    check_version(header.magic, header.abi_major, header.abi_minor).map_err(fail)?;
    if header.reserved != 0 {
        return Err(invalid("the header's `reserved` field is not zero"));
    }
    let size = header.struct_size as usize;
    if size < DESCRIPTOR_SIZE_1_0 {
        return Err(invalid(&format!(
            "struct_size is {size}, less than the {DESCRIPTOR_SIZE_1_0} bytes of ABI 1.0"
        )));
    }
    // SAFETY: the descriptor is readable for `size` bytes (caller), and no more is read.
    let d = unsafe { super::read_sized(raw, size.min(descriptor_size(header.abi_minor))) };
    if !d.rust_layout.is_null() {
        // SAFETY: the header reserves a non-NULL `rust_layout` to the Rust SDK, which points it
        // to a `RustLayout` static of the plugin, alive as long as the library.
        unsafe { check_rust_layout(&*d.rust_layout.cast::<RustLayout>(), header.abi_minor) }
            .map_err(fail)?;
    }
    let create = d.create.ok_or_else(|| invalid("`create` is NULL"))?;
    let destroy = d.destroy.ok_or_else(|| invalid("`destroy` is NULL"))?;
    // SAFETY: the descriptor's strings are (pointer, length) pairs owned by the library.
    let name = unsafe { read_str(d.name, MAX_NAME_LEN) }
        .map_err(|reason| fail(ErrorKind::InvalidName { reason }))?;
    if name.is_empty() {
        return Err(fail(ErrorKind::InvalidName {
            reason: "the name is empty".to_owned(),
        }));
    }
    // What the log escapes may not name a plugin: a name is written in every line about it.
    if !crate::pluginlog::is_one_line(&name) {
        return Err(fail(ErrorKind::InvalidName {
            reason: format!(
                "{name:?} contains control characters or Unicode line or direction marks"
            ),
        }));
    }
    // SAFETY: as for the name.
    let version = unsafe { read_str(d.version, MAX_VERSION_LEN) }
        .map_err(|reason| invalid(&format!("invalid version: {reason}")).with_plugin(&name))?;
    Ok(Descriptor {
        name,
        version,
        abi: (header.abi_major, header.abi_minor),
        file: file.map(Path::to_path_buf),
        create,
        start: d.start,
        stop: d.stop,
        destroy,
        routes: d.routes,
        hooks: HookFns {
            on_request: d.on_request,
            on_response: d.on_response,
            on_connect: d.on_connect,
            on_disconnect: d.on_disconnect,
        },
        services: Mutex::new(Vec::new()),
        _library: library,
    })
}

/// Copies a descriptor string after checking its length bound (before reading any byte of it)
/// and its encoding.
///
/// # Safety
/// Unless NULL or longer than `max`, `s` must point to `s.len` readable bytes.
unsafe fn read_str(s: PluginStr, max: usize) -> Result<String, String> {
    if s.len > max {
        return Err(format!(
            "its length is {} bytes, more than the {max} allowed",
            s.len
        ));
    }
    if s.ptr.is_null() && s.len > 0 {
        return Err("its pointer is NULL with a non-zero length".to_owned());
    }
    // SAFETY: forwarded to the caller; NULL with a non-zero length was refused above.
    unsafe { plugin_str(s) }
        .map(str::to_owned)
        .ok_or_else(|| "it is not valid UTF-8".to_owned())
}

/// Compares the layout a Rust plugin was compiled with against the host's. A plugin that
/// declares the host's ABI minor must have the host's layout of `PluginDescriptor`, down to
/// every type it reaches. One that declares an older minor (`minor`, from its header) was built
/// before the fields of the later minors were appended: its descriptor's layout must be a
/// prefix of the host's (the same struct, whose fields are the first fields of the host's, each
/// with the same name and a compatible layout and signature), and nothing else may differ.
fn check_rust_layout(plugin: &RustLayout, minor: u16) -> Result<(), ErrorKind> {
    if !plugin.abi_stable.is_valid() {
        return Err(ErrorKind::LayoutMismatch {
            details: format!(
                "the plugin uses abi_stable ABI {}.{}, the host {}.{}",
                plugin.abi_stable.abi_major,
                plugin.abi_stable.abi_minor,
                abi_stable::library::AbiHeader::VALUE.abi_major,
                abi_stable::library::AbiHeader::VALUE.abi_minor,
            ),
        });
    }
    let older = minor < PLUGIN_ABI_MINOR;
    check_layout(
        <PluginDescriptor as StableAbi>::LAYOUT,
        plugin.descriptor,
        older,
    )
    .map_err(|details| {
        let details = if older {
            format!(
                "the plugin declares ABI {PLUGIN_ABI_MAJOR}.{minor}, whose descriptor must be \
                 the start of the host's ({PLUGIN_ABI_MAJOR}.{PLUGIN_ABI_MINOR}), and it is \
                 not:\n{details}"
            )
        } else {
            details
        };
        ErrorKind::LayoutMismatch { details }
    })
}

/// Checks the plugin's layout `plugin` against the host's `host` with abi_stable's checker,
/// which compares everything, also the signature of every function pointer (a field's own
/// layout does not hold it). With `prefix`, the plugin's struct may end early: the checker then
/// reports, at the top level only, fewer fields and a smaller size, which are accepted, while
/// a field that differs is still reported. (Once the checker found an error it skips its final
/// checks of prefix types, non-exhaustive enums and extra checks; the ABI uses none of them.)
/// Returns what differs, naming the field, as the checker words it.
fn check_layout(
    host: &'static TypeLayout,
    plugin: &'static TypeLayout,
    prefix: bool,
) -> Result<(), String> {
    // A fresh set of globals per check, so that nothing from the plugin is remembered after it
    // is unloaded.
    let Err(errors) =
        check_layout_compatibility_with_globals(host, plugin, &CheckingGlobals::new())
    else {
        return Ok(());
    };
    // The full report starts with both complete layouts (thousands of lines); the per-error
    // part names what differs, which is what the user needs.
    tracing::debug!("abi_stable layout report:\n{errors}");
    let differences: Vec<String> = errors
        .errors
        .iter()
        .filter(|error| !(prefix && ends_early(error)))
        .map(ToString::to_string)
        .collect();
    if differences.is_empty() {
        return Ok(());
    }
    let differences = differences.join("\n");
    Err(differences
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Whether `error` says no more than that the plugin's struct ends before the host's: it is
/// about the struct itself (not one of its fields, whose errors carry the field in their stack
/// trace) and reports only fewer fields and a smaller size than the host's.
fn ends_early(error: &AbiInstabilityError) -> bool {
    error.stack_trace.is_empty()
        && error.errs.iter().all(|e| match e {
            AbiInstability::FieldCountMismatch(count) => count.expected > count.found,
            AbiInstability::Size(size) => size.expected > size.found,
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    //! Property tests: `validate` never panics and accepts exactly the descriptors the rules
    //! allow, whatever a plugin puts in its header, strings and function pointers.

    use super::*;
    use plugin_api::abi::{PluginErrorSink, PluginHost, PluginStatus};
    use proptest::prelude::*;
    use std::ffi::c_void;

    unsafe extern "C" fn create(
        _: *const PluginHost,
        _: PluginStr,
        _: *mut *mut c_void,
        _: *const PluginErrorSink,
    ) -> PluginStatus {
        0
    }

    unsafe extern "C" fn destroy(_: *mut c_void) {}

    /// What a plugin might put in a descriptor.
    #[derive(Debug, Clone)]
    struct Lies {
        magic: u32,
        major: u16,
        minor: u16,
        size: u32,
        name: Vec<u8>,
        name_len: usize,
        null_name: bool,
        version: Vec<u8>,
        has_create: bool,
        has_destroy: bool,
    }

    fn lies() -> impl Strategy<Value = Lies> {
        let size = size_of::<PluginDescriptor>() as u32;
        (
            prop_oneof![Just(PLUGIN_ABI_MAGIC), any::<u32>()],
            prop_oneof![Just(PLUGIN_ABI_MAJOR), any::<u16>()],
            prop_oneof![Just(PLUGIN_ABI_MINOR), any::<u16>()],
            prop_oneof![Just(size), 0..size * 2],
            (
                proptest::collection::vec(any::<u8>(), 256),
                0usize..300,
                any::<bool>(),
            ),
            proptest::collection::vec(any::<u8>(), 0..20),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(magic, major, minor, size, (name, name_len, null_name), version, c, d)| Lies {
                    magic,
                    major,
                    minor,
                    size,
                    name,
                    name_len,
                    null_name,
                    version,
                    has_create: c,
                    has_destroy: d,
                },
            )
    }

    /// Whether the rules accept `l`, computed independently of `validate`.
    fn acceptable(l: &Lies) -> bool {
        let name_ok = !l.null_name
            && l.name_len <= MAX_NAME_LEN
            && std::str::from_utf8(&l.name[..l.name_len])
                .is_ok_and(|n| !n.is_empty() && crate::pluginlog::is_one_line(n));
        l.magic == PLUGIN_ABI_MAGIC
            && l.major == PLUGIN_ABI_MAJOR
            && l.minor.cmp(&PLUGIN_ABI_MINOR) != std::cmp::Ordering::Greater
            && l.size as usize >= DESCRIPTOR_SIZE_1_0
            && l.has_create
            && l.has_destroy
            && name_ok
            && std::str::from_utf8(&l.version).is_ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn validation_accepts_exactly_what_the_rules_allow(l in lies()) {
            let descriptor = PluginDescriptor {
                header: PluginAbiHeader {
                    magic: l.magic,
                    abi_major: l.major,
                    abi_minor: l.minor,
                    struct_size: l.size,
                    reserved: 0,
                },
                name: PluginStr {
                    ptr: if l.null_name { std::ptr::null() } else { l.name.as_ptr() },
                    len: l.name_len,
                },
                version: PluginStr { ptr: l.version.as_ptr(), len: l.version.len() },
                rust_layout: std::ptr::null(),
                create: l.has_create.then_some(create as CreateFn),
                start: None,
                stop: None,
                destroy: l.has_destroy.then_some(destroy as DestroyFn),
                routes: None,
                on_request: None,
                on_response: None,
                on_connect: None,
                on_disconnect: None,
            };
            // SAFETY: the descriptor and its strings live on this frame for the call; a name
            // length beyond the 256-byte buffer is over the limit and refused unread.
            let result = unsafe { validate(&descriptor, None, None) };
            prop_assert_eq!(result.is_ok(), acceptable(&l), "{:?}", result.err().map(|e| e.to_string()));
        }
    }
}

#[cfg(test)]
mod layout_tests {
    //! The Rust layout check: a plugin of an older minor whose descriptor is a prefix of the
    //! host's is accepted; any other difference is refused, naming the field.

    use super::*;
    use plugin_api::export::RUST_LAYOUT;

    /// Versions of one descriptor, all called `Descriptor` as builds of one SDK would be.
    mod versions {
        use abi_stable::StableAbi;
        use plugin_api::abi::{PluginBytes, PluginStr};

        /// The host's: `added` came with its newest minor.
        pub mod host {
            use super::*;
            #[repr(C)]
            #[derive(StableAbi)]
            pub struct Descriptor {
                pub size: u32,
                pub name: PluginStr,
                pub create: Option<unsafe extern "C" fn(config: PluginStr) -> i32>,
                pub added: Option<unsafe extern "C" fn(count: u64)>,
            }
        }

        /// An older minor's: the host's without `added`.
        pub mod prefix {
            use super::*;
            #[repr(C)]
            #[derive(StableAbi)]
            pub struct Descriptor {
                pub size: u32,
                pub name: PluginStr,
                pub create: Option<unsafe extern "C" fn(config: PluginStr) -> i32>,
            }
        }

        /// A field the host does not know, after the host's.
        pub mod longer {
            use super::*;
            #[repr(C)]
            #[derive(StableAbi)]
            pub struct Descriptor {
                pub size: u32,
                pub name: PluginStr,
                pub create: Option<unsafe extern "C" fn(config: PluginStr) -> i32>,
                pub added: Option<unsafe extern "C" fn(count: u64)>,
                pub unknown: u64,
            }
        }

        /// The prefix with `name` of another type.
        pub mod retyped {
            use super::*;
            #[repr(C)]
            #[derive(StableAbi)]
            pub struct Descriptor {
                pub size: u32,
                pub name: PluginBytes,
                pub create: Option<unsafe extern "C" fn(config: PluginStr) -> i32>,
            }
        }

        /// The prefix with `name` called otherwise.
        pub mod renamed {
            use super::*;
            #[repr(C)]
            #[derive(StableAbi)]
            pub struct Descriptor {
                pub size: u32,
                pub title: PluginStr,
                pub create: Option<unsafe extern "C" fn(config: PluginStr) -> i32>,
            }
        }

        /// The prefix with `create` taking another parameter type: the field's own layout is
        /// the same (a function pointer), only its signature differs.
        pub mod resigned {
            use super::*;
            #[repr(C)]
            #[derive(StableAbi)]
            pub struct Descriptor {
                pub size: u32,
                pub name: PluginStr,
                pub create: Option<unsafe extern "C" fn(config: PluginBytes) -> i32>,
            }
        }
    }

    use versions::*;

    fn check<T: StableAbi>(prefix: bool) -> Result<(), String> {
        check_layout(<host::Descriptor as StableAbi>::LAYOUT, T::LAYOUT, prefix)
    }

    #[test]
    fn a_prefix_of_the_hosts_layout_is_accepted_from_an_older_minor_only() {
        assert_eq!(check::<prefix::Descriptor>(true), Ok(()));
        let error = check::<prefix::Descriptor>(false).expect_err("refused");
        assert!(error.contains("too many fields"), "{error}");
        assert_eq!(check::<host::Descriptor>(false), Ok(()));
        assert_eq!(check::<host::Descriptor>(true), Ok(()));
    }

    #[test]
    fn a_field_the_host_does_not_know_is_refused() {
        let error = check::<longer::Descriptor>(true).expect_err("refused");
        assert!(error.contains("too many fields"), "{error}");
    }

    #[test]
    fn a_retyped_field_in_the_prefix_is_refused_naming_it() {
        let error = check::<retyped::Descriptor>(true).expect_err("refused");
        assert!(
            error.contains("field_name:name") && error.contains("PluginBytes"),
            "{error}"
        );
    }

    #[test]
    fn a_renamed_field_in_the_prefix_is_refused_naming_it() {
        let error = check::<renamed::Descriptor>(true).expect_err("refused");
        assert!(error.contains("title"), "{error}");
    }

    #[test]
    fn a_changed_signature_in_the_prefix_is_refused_naming_the_field() {
        let error = check::<resigned::Descriptor>(true).expect_err("refused");
        assert!(
            error.contains("field_name:create") && error.contains("PluginBytes"),
            "{error}"
        );
    }

    #[test]
    fn the_hosts_own_layout_is_accepted_at_every_minor() {
        for minor in 0..=PLUGIN_ABI_MINOR {
            assert!(check_rust_layout(&RUST_LAYOUT, minor).is_ok(), "1.{minor}");
        }
    }

    #[test]
    fn a_mismatch_from_an_older_minor_says_what_is_expected_of_it() {
        let plugin = RustLayout {
            abi_stable: RUST_LAYOUT.abi_stable,
            descriptor: <prefix::Descriptor as StableAbi>::LAYOUT,
        };
        let Err(ErrorKind::LayoutMismatch { details }) = check_rust_layout(&plugin, 0) else {
            panic!("accepted");
        };
        assert!(
            details.starts_with("the plugin declares ABI 1.0, whose descriptor must be the start")
                && details.contains("Descriptor")
                && details.contains("PluginDescriptor"),
            "{details}"
        );
    }
}
