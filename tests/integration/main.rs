//! Integration tests: every test loads real shared libraries built from Rust, C and C++.

mod cli;
mod connections;
mod contain_backpressure;
mod contain_children;
mod contain_output;
mod contain_shutdown;
mod contain_stall;
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
