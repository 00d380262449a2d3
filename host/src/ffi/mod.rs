//! Every line of the host that touches the C ABI: opening libraries, validating descriptors,
//! calling into plugins and the host callbacks plugins call. The rest of the crate is safe Rust
//! built on the types exported here.

mod callbacks;
mod descriptor;
mod instance;

pub(crate) use descriptor::Descriptor;
pub(crate) use instance::{Headers, RawInstance, RouteDef};
