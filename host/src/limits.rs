//! Defaults and limits of the plugin model: facts used by the server, the process backend and
//! the worker alike, so that none of them imports another for a number. Each bounds something
//! that a plugin or a client could otherwise push without end; configuration overrides them
//! where the README says so.

use std::time::Duration;

/// The default limit of a request body: 2 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A handler call that takes this long (10 ms by default) counts as slow: see
/// [`PluginService`](crate::server::PluginService).
pub const DEFAULT_BLOCKING_THRESHOLD: Duration = Duration::from_millis(10);

/// How long a handler call may run before its client gets 504, unless the plugin's entry says
/// otherwise: 30 s.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a request body may take to arrive in full before the client gets 408: 60 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// How many calls of one plugin may still be running past their deadline before its new calls
/// are refused with 503: a hung plugin may hold this many threads of the blocking pool, and no
/// more, so it cannot starve the other plugins of threads.
pub const MAX_CALLS_PAST_DEADLINE: usize = 64;
