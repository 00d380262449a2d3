//! Every line of the host that touches the C ABI: opening libraries, validating descriptors,
//! calling into plugins and the host callbacks plugins call. The rest of the crate is safe Rust
//! built on the types exported here.

mod callbacks;
mod crash;
mod descriptor;
mod instance;

pub use crash::install_crash_report;
pub(crate) use crash::{CRASH_PREFIX, bare_crash_lines, describe_worker};
pub(crate) use descriptor::Descriptor;

use plugin_api::abi::{PluginDescriptor, PluginRoute};
use std::mem::MaybeUninit;

/// A struct a plugin writes, whose size the plugin declares: the host reads only the bytes the
/// plugin declared, and the fields beyond them are absent (zero: NULL, `None`, 0).
///
/// # Safety
/// Every bit pattern, zero included, must be a valid value of the type (integers, raw
/// pointers, `Option<fn>`), so that whatever bytes a plugin wrote make a valid value.
unsafe trait SizedByPlugin: Copy {}

// SAFETY: integers, raw pointers, (pointer, length) pairs and `Option<fn>` fields only.
unsafe impl SizedByPlugin for PluginDescriptor {}
// SAFETY: as for `PluginDescriptor`.
unsafe impl SizedByPlugin for PluginRoute {}

/// Copies the first `size` bytes of `source` (at most `size_of::<T>()`) into a zeroed `T`.
///
/// # Safety
/// `source` must be readable for `size.min(size_of::<T>())` bytes.
unsafe fn read_sized<T: SizedByPlugin>(source: *const T, size: usize) -> T {
    let mut copy = MaybeUninit::<T>::zeroed();
    // SAFETY: the source is readable for these bytes (caller); the destination is a local `T`
    // and at most its size is copied; the two do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            source.cast::<u8>(),
            copy.as_mut_ptr().cast::<u8>(),
            size.min(size_of::<T>()),
        );
    }
    // SAFETY: any bit pattern, zero included, is a valid `T` (`SizedByPlugin`).
    unsafe { copy.assume_init() }
}
pub(crate) use instance::{Headers, RawInstance, RouteDef};

/// The effective user id of the host process.
#[cfg(unix)]
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: `geteuid` has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// The soft limit of open files of the host process, if it has one.
#[cfg(unix)]
pub(crate) fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` to the pointer, which points to a local.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (status == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// The soft limit of open files of the host process: none known on this platform.
#[cfg(not(unix))]
pub(crate) fn open_file_limit() -> Option<u64> {
    None
}
