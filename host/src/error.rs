//! The host's error type: what failed ([`ErrorKind`]) and where (file and plugin).

use std::fmt;
use std::path::{Path, PathBuf};

/// An error of the host, naming the plugin file and the plugin it concerns where they are known.
/// Boxed, so that results stay one word wide on the request path.
#[derive(Debug)]
pub struct Error(Box<Inner>);

#[derive(Debug)]
struct Inner {
    file: Option<PathBuf>,
    plugin: Option<String>,
    location: Option<(PathBuf, usize)>,
    kind: ErrorKind,
}

/// What went wrong. Each message says what happened and, where the fix is not obvious, what to
/// do about it. What a plugin supplied (its reasons, its panic messages, what its process said)
/// is held as [`PluginText`], which every message shows escaped and cut to one bounded line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be loaded as a shared library.
    #[error(
        "not a loadable shared library ({source}); check the path and that it was built as a cdylib or shared object for this platform"
    )]
    NotALibrary {
        /// The loader's error.
        source: libloading::Error,
    },
    /// The file cannot be read (missing, unreadable, a symbolic link loop, ...).
    #[error("cannot read the file: {source}")]
    Unreadable {
        /// The system's error.
        source: std::io::Error,
    },
    /// The path is not a regular file (a directory, a device, ...).
    #[error("not a regular file but {what}; give the path of a shared library")]
    NotAFile {
        /// What it is.
        what: &'static str,
    },
    /// The file is not an object file the host can parse (empty, random, truncated, ...).
    #[error("not a shared library: {reason}")]
    NotAnObject {
        /// What the parser found.
        reason: String,
    },
    /// The file is an object file, but not a shared library.
    #[error(
        "an object file of kind {kind}, not a shared library; build the plugin as a cdylib or with -shared"
    )]
    NotSharedLibrary {
        /// The kind of object file.
        kind: String,
    },
    /// The library is built for another architecture or bit width.
    #[error(
        "built for {found}, but this host runs on {expected}; build the plugin for this platform"
    )]
    WrongArchitecture {
        /// The file's architecture.
        found: String,
        /// The host's.
        expected: String,
    },
    /// The file's SHA-256 differs from the one the configuration pins.
    #[error(
        "SHA-256 mismatch: the configuration pins {expected}, the file's is {actual}; the file changed, or the pin is out of date"
    )]
    ChecksumMismatch {
        /// The pinned hash, in hex.
        expected: String,
        /// The file's hash, in hex.
        actual: String,
    },
    /// Loading one more library version would keep more versions loaded that no plugin uses
    /// than [`RETAINED_LIBRARIES`](crate::limits::RETAINED_LIBRARIES) allows.
    #[error(
        "loading it would keep more than {limit} old versions of plugin libraries in memory (a library cannot be unloaded from a running host); restart the host, or run the plugin isolated (`isolation = \"process\"`) so that its old versions end with their process"
    )]
    TooManyLibraries {
        /// The limit.
        limit: usize,
    },
    /// A new version of a Go library that this process has loaded a version of: Go's runtime,
    /// which every Go library carries, cannot start twice in one process.
    #[error(
        "it is a Go library, and another version of it is loaded in this process: a second Go runtime cannot start in one process, so its new version cannot be loaded into the running host; run it with `isolation = \"process\"` (each version in a process of its own), or restart the host"
    )]
    GoLibraryReloaded,
    /// The file, or a folder above it, can be written by others than its owner and root.
    #[error(
        "refused: {path} {reason}; fix the permissions, or pass --allow-insecure-permissions to load it anyway"
    )]
    InsecurePermissions {
        /// The file or folder at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A handler or hook of this instance panicked earlier; its calls no longer reach it.
    #[error("out of service: it panicked earlier ({message}); restart the host to serve it again")]
    Poisoned {
        /// The first panic's message.
        message: PluginText,
    },
    /// The library does not export `plugin_factory`.
    #[error(
        "the library exports no `plugin_factory` symbol; export it with `plugin_api::export_plugin!` (Rust) or `PLUGIN_EXPORT` (C)"
    )]
    SymbolMissing,
    /// `plugin_factory` returned NULL.
    #[error("`plugin_factory` refused to load: {reason}")]
    FactoryRefused {
        /// The reason the plugin gave.
        reason: PluginText,
    },
    /// The descriptor does not start with `PLUGIN_ABI_MAGIC`.
    #[error("the plugin's ABI magic is {found:#010x}, not {expected:#010x}: this is not a plugin of this ABI, or it is corrupt", expected = plugin_api::abi::PLUGIN_ABI_MAGIC)]
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// The plugin was built for another ABI major version.
    #[error(
        "built for ABI major version {plugin}, but this host speaks major version {host}; rebuild the plugin against this host's plugin API"
    )]
    AbiMajorMismatch {
        /// The plugin's major version.
        plugin: u16,
        /// The host's major version.
        host: u16,
    },
    /// The plugin was built for a newer ABI minor version than the host's.
    #[error(
        "built for ABI version 1.{plugin}, newer than this host's 1.{host}; upgrade the host or rebuild the plugin against the older plugin API"
    )]
    AbiMinorTooNew {
        /// The plugin's minor version.
        plugin: u16,
        /// The host's minor version.
        host: u16,
    },
    /// A Rust plugin was compiled against an incompatible `plugin-api`.
    #[error(
        "the plugin was compiled against an incompatible plugin-api; rebuild it against the host's version. abi_stable's layout checker reports:\n{details}"
    )]
    LayoutMismatch {
        /// What the layout checker found.
        details: String,
    },
    /// The descriptor breaks a rule of the header other than the ones above.
    #[error("invalid descriptor: {reason}")]
    InvalidDescriptor {
        /// Which rule.
        reason: String,
    },
    /// The plugin's name is empty, too long, not UTF-8 or contains control characters.
    #[error("invalid plugin name: {reason}")]
    InvalidName {
        /// Why.
        reason: String,
    },
    /// A factory or instance of that name is already registered.
    #[error("a {what} named `{name}` is already registered; give each one a distinct name")]
    Duplicate {
        /// "factory" or "plugin".
        what: &'static str,
        /// The name.
        name: String,
    },
    /// No factory or instance of that name is registered.
    #[error("no {what} named `{name}` is registered")]
    Unknown {
        /// "factory" or "plugin".
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The plugin's `create` failed.
    #[error("create failed: {reason}")]
    CreateFailed {
        /// The plugin's reason.
        reason: PluginText,
    },
    /// The plugin's `start` failed.
    #[error("start failed: {reason}")]
    StartFailed {
        /// The plugin's reason.
        reason: PluginText,
    },
    /// The plugin's `stop` failed.
    #[error("stop failed: {reason}")]
    StopFailed {
        /// The plugin's reason.
        reason: PluginText,
    },
    /// The plugin's `routes` failed or gave an invalid route.
    #[error("listing routes failed: {reason}")]
    RoutesFailed {
        /// The plugin's reason, or the rule the route broke.
        reason: PluginText,
    },
    /// Two plugins (or one plugin twice) declared routes that cannot both be served.
    #[error(
        "route {route} conflicts with {existing} of plugin `{other}`; change one of the paths or disable one plugin"
    )]
    RouteConflict {
        /// The route being added.
        route: String,
        /// The route already there.
        existing: String,
        /// The plugin that owns the existing route.
        other: String,
    },
    /// A handler returned an error.
    #[error("handler for {route} failed: {reason}")]
    HandlerFailed {
        /// The route.
        route: String,
        /// The plugin's reason, or what was wrong with its answer.
        reason: PluginText,
    },
    /// A `hook_paths` entry is not a route pattern.
    #[error("invalid hook_paths: {reason}; give route patterns such as `/api/{{*rest}}`")]
    InvalidHookPaths {
        /// What is wrong.
        reason: String,
    },
    /// A hook (`on_request`, `on_response`, `on_connect`) returned an error, or an answer the
    /// host refused.
    #[error("its {hook} hook failed: {reason}")]
    HookFailed {
        /// The hook's name (`on_request`, ...).
        hook: &'static str,
        /// The plugin's reason, or what was wrong with its answer.
        reason: PluginText,
    },
    /// The plugin panicked (or threw) during a call; the SDK caught it at the boundary.
    #[error("panicked during {call}: {message}")]
    Panicked {
        /// Which call.
        call: String,
        /// The panic message.
        message: PluginText,
    },
    /// A lifecycle call does not fit the instance's state (start twice, stop before start, ...).
    #[error("cannot {action} a plugin that is {state}")]
    InvalidState {
        /// What was asked.
        action: &'static str,
        /// The state it is in.
        state: &'static str,
    },
    /// The instance cannot be stopped while a router still serves its routes.
    #[error(
        "cannot stop while {routers} router(s) still serve its routes; drop them (or shut the server down) first"
    )]
    InUse {
        /// How many routers hold it.
        routers: usize,
    },
    /// The instance was not stopped because handlers of these routes were still running (a
    /// handler is never stopped under); it stays started, with its routes closed.
    #[error(
        "not stopped: a call to {} is still running, and a plugin is never stopped under a running call", routes.join(", ")
    )]
    Busy {
        /// The routes whose calls were running (`METHOD /pattern`).
        routes: Vec<String>,
    },
    /// The instance's routes were closed for shutdown: it takes no new calls.
    #[error("shutting down: it takes no new requests")]
    Closed,
    /// Too many calls of the instance are still running past their deadline: new calls are
    /// refused until some of them return, so that one hung plugin cannot take every thread.
    #[error(
        "{running} calls are still running past their deadline; new calls are refused until they return"
    )]
    Overloaded {
        /// How many calls are still running past their deadline.
        running: usize,
    },
    /// A plugin process did not complete its handshake (see `plugin_host::process`).
    #[error("the plugin process did not start: {reason}")]
    Handshake {
        /// What was, or was not, received (quoting what the process said, such as its `refuse`
        /// reason).
        reason: PluginText,
    },
    /// The plugin process ended (or broke the protocol) while the call was in flight: the
    /// client gets 502, and the process is restarted.
    #[error("the plugin process ended during the call: {reason}")]
    ChildLost {
        /// Why the connection to the process went down (quoting what the process sent, if it
        /// broke the protocol).
        reason: PluginText,
    },
    /// The plugin process is not serving: it is restarting after a crash, or quarantined
    /// after too many (the client gets 503).
    #[error("the plugin process is {state}")]
    Unavailable {
        /// `starting`, `restarting`, `quarantined` or `stopped`.
        state: &'static str,
    },
    /// Too many bytes of calls are queued towards the plugin process, not yet written to it:
    /// it is not reading them. New calls are refused (the client gets 503) until it catches up,
    /// or until the liveness check restarts it.
    #[error(
        "{queued} bytes of calls are queued towards its process, over the limit of {limit}: the process is not reading them (it is stuck, or too slow for this load); new calls answer 503 until it catches up. If it is only slow, raise `queue_limit_mb` in its entry"
    )]
    Backlogged {
        /// The bytes queued and not yet written.
        queued: usize,
        /// The limit (`queue_limit_mb`, by default `limits::CHILD_QUEUE_LIMIT`).
        limit: usize,
    },
    /// The plugin process did not run the call: it has as many calls waiting as it takes (a
    /// worker's [`WORKER_QUEUE`](crate::limits::WORKER_QUEUE), or a program's own limit), and
    /// answered `busy`. The client gets 503 at once.
    #[error(
        "its process is too busy to take the call, which was not run (the client gets 503): {reason}"
    )]
    ChildBusy {
        /// What the process said.
        reason: PluginText,
    },
    /// The request's path, or a path parameter, is refused (see the README's path safety):
    /// the client's error.
    #[error("bad request path: {reason}")]
    BadPath {
        /// What is wrong with it.
        reason: String,
    },
    /// No route matches the request's path.
    #[error("no route matches {path}")]
    RouteNotFound {
        /// The request path.
        path: String,
    },
    /// A route matches the path but not the method.
    #[error("{method} is not allowed for {path}; allowed: {}", allowed.join(", "))]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// The methods that are allowed.
        allowed: Vec<String>,
    },
}

/// Text a plugin supplied, as an [`ErrorKind`] holds it: a reason a plugin gave for a failed
/// call, a panic message, what a plugin process answered, refused with or sent against the
/// protocol (quoted in the host's own words).
///
/// It is kept as the plugin gave it ([`as_str`](Self::as_str), or `&str` through `Deref`), and
/// *displayed* as the host's log shows what a plugin logs: control characters escaped (`\n`,
/// `\x1b`, ...) and cut to [`LOG_LINE_MAX`](crate::limits::LOG_LINE_MAX) bytes, ending with
/// ` [cut]`. So every error message that quotes a plugin, in the log or in `plugin-host check`'s
/// output, stays one line of bounded length that cannot pass for a line of the host's own. Its
/// `Debug` is the string's (quoted and escaped, not cut).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct PluginText(String);

impl PluginText {
    /// The text as the plugin gave it, unescaped and whole.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PluginText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&crate::pluginlog::escape(self.0.as_bytes(), false))
    }
}

impl fmt::Debug for PluginText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::ops::Deref for PluginText {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for PluginText {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for PluginText {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl PartialEq<str> for PluginText {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for PluginText {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self(Box::new(Inner {
            file: None,
            plugin: None,
            location: None,
            kind,
        }))
    }

    pub(crate) fn with_file(mut self, file: Option<&Path>) -> Self {
        self.0.file = file.map(Path::to_path_buf);
        self
    }

    pub(crate) fn with_plugin(mut self, plugin: impl Into<String>) -> Self {
        self.0.plugin = Some(plugin.into());
        self
    }

    /// Ties the error to a line of a configuration file (shown first, as `FILE:LINE: `).
    pub fn with_location(mut self, file: impl Into<PathBuf>, line: usize) -> Self {
        self.0.location = Some((file.into(), line));
        self
    }

    /// The configuration file and line the error concerns, when it came from one: the plugin's
    /// entry, or the value a plugin called an invalid configuration.
    pub fn location(&self) -> Option<(&Path, usize)> {
        self.0
            .location
            .as_ref()
            .map(|(file, line)| (file.as_path(), *line))
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// The plugin file, if the error concerns a loaded (not built-in) plugin.
    pub fn file(&self) -> Option<&Path> {
        self.0.file.as_deref()
    }

    /// The plugin's name, if it is known (it is not before the descriptor has been validated).
    pub fn plugin(&self) -> Option<&str> {
        self.0.plugin.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((file, line)) = &self.0.location {
            write!(f, "{}:{line}: ", file.display())?;
        }
        match (&self.0.plugin, &self.0.file) {
            (Some(plugin), Some(file)) => write!(f, "plugin `{plugin}` ({}): ", file.display())?,
            (Some(plugin), None) => write!(f, "plugin `{plugin}` (built-in): ")?,
            (None, Some(file)) => write!(f, "plugin file {}: ", file.display())?,
            (None, None) => {}
        }
        self.0.kind.fmt(f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0.kind)
    }
}

/// Several errors, in the order they happened: what `start_all` and `stop_all` return.
#[derive(Debug)]
pub struct Errors(pub Vec<Error>);

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::LOG_LINE_MAX;

    #[test]
    fn plugin_text_is_kept_whole_and_shown_escaped_and_cut() {
        let forged = "down\n2026-01-01T00:00:00Z  INFO plugin_host::access: path=/x\x1b[31m";
        let text = PluginText::from(forged);
        assert_eq!(text, forged);
        assert_eq!(text.as_str(), forged);
        assert_eq!(
            text.to_string(),
            "down\\n2026-01-01T00:00:00Z  INFO plugin_host::access: path=/x\\x1b[31m"
        );
        let flood = PluginText::from("x".repeat(100_000));
        assert_eq!(flood.len(), 100_000);
        let shown = flood.to_string();
        assert!(
            shown.len() <= LOG_LINE_MAX && shown.ends_with(" [cut]"),
            "{}",
            shown.len()
        );
    }

    #[test]
    fn every_message_quoting_a_plugin_shows_its_text_escaped() {
        let reason = || PluginText::from("a\nb");
        let kinds = [
            ErrorKind::Poisoned { message: reason() },
            ErrorKind::FactoryRefused { reason: reason() },
            ErrorKind::CreateFailed { reason: reason() },
            ErrorKind::StartFailed { reason: reason() },
            ErrorKind::StopFailed { reason: reason() },
            ErrorKind::RoutesFailed { reason: reason() },
            ErrorKind::HandlerFailed {
                route: "GET /x".into(),
                reason: reason(),
            },
            ErrorKind::Panicked {
                call: "GET /x".into(),
                message: reason(),
            },
            ErrorKind::HookFailed {
                hook: "on_request",
                reason: reason(),
            },
            ErrorKind::Handshake { reason: reason() },
            ErrorKind::ChildLost { reason: reason() },
            ErrorKind::ChildBusy { reason: reason() },
        ];
        for kind in kinds {
            let message = Error::new(kind).with_plugin("p").to_string();
            assert!(
                message.contains("a\\nb") && !message.contains('\n'),
                "{message}"
            );
        }
    }
}
