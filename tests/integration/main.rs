//! Integration tests: every test loads real shared libraries built from Rust, C and C++.

mod cli;
mod contract;
mod header;
mod hostile;
mod http;
mod loading;
mod readme;
mod registry;
mod router;
mod service;
mod util;
