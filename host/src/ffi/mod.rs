//! Every line of the host that touches the C ABI: opening libraries, validating descriptors,
//! calling into plugins and the host callbacks plugins call. The rest of the crate is safe Rust
//! built on the types exported here.

mod callbacks;
mod descriptor;
mod instance;

pub(crate) use descriptor::Descriptor;
pub(crate) use instance::{Headers, RawInstance, RouteDef};

/// The effective user id of the host process.
#[cfg(unix)]
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: `geteuid` has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}
