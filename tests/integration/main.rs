//! Integration tests: every test loads real shared libraries built from Rust, C and C++.

mod cli;
mod connections;
mod contract;
mod crash;
mod edges;
mod header;
mod hostile;
mod http;
mod isolation;
mod loading;
mod logsink;
mod new;
mod readme;
mod registry;
mod router;
mod service;
mod shutdown;
mod slow;
mod util;
