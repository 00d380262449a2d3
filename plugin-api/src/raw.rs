//! Conversions between Rust values and the ABI's raw (pointer, length) pairs. This module and
//! `export` are the only places in the SDK that touch raw pointers.

use crate::abi::{PluginBytes, PluginStr};
use crate::sdk::Handler;
use std::ffi::c_void;

/// Borrows `s` as a `PluginStr`; valid for as long as `s`.
pub(crate) const fn plugin_str(s: &str) -> PluginStr {
    PluginStr {
        ptr: s.as_ptr(),
        len: s.len(),
    }
}

/// Borrows `b` as a `PluginBytes`; valid for as long as `b`.
pub(crate) fn plugin_bytes(b: &[u8]) -> PluginBytes {
    PluginBytes {
        ptr: b.as_ptr(),
        len: b.len(),
    }
}

/// Borrows `len` values at `ptr`; an empty slice when `len` is 0 (`ptr` may then be NULL).
///
/// # Safety
/// Unless `len` is 0, `ptr` must point to `len` initialised values that stay valid and
/// unchanged for `'a`.
pub(crate) unsafe fn host_slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 || ptr.is_null() {
        &[]
    } else {
        // SAFETY: the caller guarantees `len` valid values at the non-null `ptr` for 'a.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// Borrows the bytes of a `PluginBytes` the host handed in.
///
/// # Safety
/// As for [`host_slice`] with `b.ptr` and `b.len`.
pub(crate) unsafe fn host_bytes<'a>(b: PluginBytes) -> &'a [u8] {
    // SAFETY: forwarded to the caller.
    unsafe { host_slice(b.ptr, b.len) }
}

/// Borrows a `PluginStr` the host handed in.
///
/// # Safety
/// As for [`host_slice`]; in addition the bytes must be UTF-8, which the header guarantees for
/// every `PluginStr` the host passes to a plugin.
pub(crate) unsafe fn host_str<'a>(s: PluginStr) -> &'a str {
    // SAFETY: the caller guarantees a valid UTF-8 byte range for 'a.
    unsafe { std::str::from_utf8_unchecked(host_slice(s.ptr, s.len)) }
}

/// Stores a handler function pointer in a route's `user_data`.
pub(crate) fn handler_to_user_data<P>(handler: Handler<P>) -> *mut c_void {
    handler as *mut c_void
}

/// Recovers the handler stored by [`handler_to_user_data`].
///
/// # Safety
/// `user_data` must come from `handler_to_user_data::<P>`.
pub(crate) unsafe fn user_data_to_handler<P>(user_data: *mut c_void) -> Handler<P> {
    // SAFETY: function and data pointers have the same size on every platform Rust's `std`
    // supports dynamic libraries on (POSIX `dlsym` relies on it too), and the value is a
    // `Handler<P>` by the caller's guarantee.
    unsafe { std::mem::transmute::<*mut c_void, Handler<P>>(user_data) }
}
