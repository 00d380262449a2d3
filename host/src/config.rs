//! Which plugins to load: a TOML configuration file, or a folder of plugin libraries.
//!
//! ```toml
//! [[plugin]]
//! path = "plugins/libcounter_plugin.so"   # relative to this file
//! name = "visits"                         # optional instance name; default: the plugin's name
//! enabled = true                          # optional; default true
//! sha256 = "9f86d0…"                       # optional pin: the file must have this SHA-256
//! keep_serving_after_panic = false        # optional; default false (a panic takes it out)
//! handler_timeout = 2.5                   # optional; seconds a call may run before 504
//! hook_paths = ["/api/{*rest}"]           # optional; the paths its request hooks see (all)
//! log_rate = 100                          # optional; lines/s it may log (default 100)
//! log_burst = 1000                        # optional; lines it may log at once (default 1000)
//! [plugin.config]                         # optional; reaches the plugin as JSON
//! path = "/visits"
//! start = 41
//! ```
//!
//! A plugin program replaces `path` by `exec = "plugins/kv.py"` (a file, relative to this file
//! too) or `command = "node"` (a name looked up on PATH), with optional `args` and `env`.
//!
//! A library may appear in several entries (several instances, each with its own name and
//! configuration); it is loaded once.

use crate::error::Error;
use crate::limits::{LOG_BURST, LOG_RATE};
use crate::plugin::{Factory, Instance, LoadOptions};
use crate::process::{ProcessOptions, ProcessPlugin};
use crate::registry::Registry;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A configuration that cannot be used, with the line it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The configuration file or plugin folder.
    pub file: PathBuf,
    /// The line, when the problem is in a file.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// One plugin instance to load. Two entries are equal when they say the same thing (their
/// [`source`](Self::source) included: compare clones without it to ignore where they were
/// written).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginEntry {
    /// The library file, or the program of a plugin program. From a configuration file, a
    /// `path` or `exec` is resolved against the file's folder (and made absolute), and a
    /// `command` is the bare name, looked up on PATH when the program starts.
    pub path: PathBuf,
    /// Where the plugin runs.
    pub run: Run,
    /// The instance name; `None` means the plugin's own name.
    pub name: Option<String>,
    /// The instance configuration, handed to the plugin's `create` as JSON.
    pub config: serde_json::Value,
    /// The SHA-256 the file must have (64 hex digits).
    pub sha256: Option<String>,
    /// Keep calling the handlers after one panicked.
    pub keep_serving_after_panic: bool,
    /// How long a handler call may run before its client gets 504; `None`: the server's.
    pub handler_timeout: Option<Duration>,
    /// The paths its `on_request` and `on_response` hooks see, as route patterns; empty: every
    /// path.
    pub hook_paths: Vec<String>,
    /// The rate limit of what the instance logs (`log_rate`, `log_burst`). For a plugin in a
    /// child process, it replaces the `log_limit` of its [`ProcessOptions`] when the instance
    /// is created ([`Loader::instantiate`]), so that it holds from the child's first line.
    pub log_limit: crate::LogLimit,
    /// Where the entry was written, when it comes from a configuration file: errors about it
    /// point there.
    pub source: Option<EntrySource>,
}

/// Where a [`PluginEntry`] was written in its configuration file: the line of its `[[plugin]]`
/// table and of each value of its `[plugin.config]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EntrySource {
    /// The configuration file.
    pub file: PathBuf,
    /// The line of the entry's `[[plugin]]`.
    pub line: usize,
    /// Where the entry's `[[plugin]]` is in the text.
    span: std::ops::Range<usize>,
    /// The line of each configuration value by key path (`limits.max`, `routes.0.path`); the
    /// empty path is the `[plugin.config]` table itself.
    config_lines: BTreeMap<String, usize>,
}

impl EntrySource {
    /// The line an error of the plugin's `create` concerns. A plugin that refuses its
    /// configuration says so with a reason starting `invalid configuration at `KEY.PATH`:` (the
    /// header's convention, which the Rust SDK follows): that is the value's line. Any other
    /// `invalid configuration` reason points at the `[plugin.config]` table (or the entry, when
    /// it has none), and any other error at the entry.
    pub fn line_of(&self, create_failure: &str) -> usize {
        let Some(rest) = create_failure.strip_prefix("invalid configuration") else {
            return self.line;
        };
        let key = rest
            .strip_prefix(" at `")
            .and_then(|r| r.split_once("`:"))
            .map_or("", |(key, _)| key);
        // A key the file does not have (a default the plugin filled in, say): its closest parent.
        let mut key = key;
        loop {
            if let Some(&line) = self.config_lines.get(key) {
                return line;
            }
            match key.rsplit_once('.') {
                Some((parent, _)) => key = parent,
                None if !key.is_empty() => key = "",
                None => return self.line,
            }
        }
    }

    /// Ties `error` to this entry's line, or, for a `create` that refused its configuration, to
    /// the offending value's line.
    pub fn locate(&self, error: Error) -> Error {
        let line = match error.kind() {
            crate::ErrorKind::CreateFailed { reason } => self.line_of(reason),
            _ => self.line,
        };
        error.with_location(&self.file, line)
    }
}

/// Where a configured plugin runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Run {
    /// The library is loaded into the host's process (the default).
    #[default]
    InProcess,
    /// The library is loaded by a worker in a supervised child process
    /// (`isolation = "process"`).
    Isolated(ProcessOptions),
    /// `path` is a plugin program, started with `args` and `env` in a supervised child process
    /// (`exec = ...`, or `command = ...` for a name looked up on PATH).
    Program {
        /// Its arguments.
        args: Vec<String>,
        /// Variables added to its environment.
        env: Vec<(String, String)>,
        /// How it is run.
        options: ProcessOptions,
    },
}

impl PluginEntry {
    /// Ties `error` to the entry's line in its configuration file, when it has one (see
    /// [`EntrySource::locate`]).
    pub fn locate(&self, error: Error) -> Error {
        match &self.source {
            Some(source) => source.locate(error),
            None => error,
        }
    }

    /// An entry for `path` with the plugin's own name, an empty configuration and no pin.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            run: Run::InProcess,
            name: None,
            config: serde_json::json!({}),
            sha256: None,
            keep_serving_after_panic: false,
            handler_timeout: None,
            hook_paths: Vec::new(),
            log_limit: crate::LogLimit::default(),
            source: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    plugin: Vec<RawPlugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    path: Option<Spanned<PathBuf>>,
    exec: Option<Spanned<PathBuf>>,
    command: Option<Spanned<String>>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    isolation: Option<Spanned<String>>,
    handshake_timeout: Option<Spanned<f64>>,
    memory_limit_mb: Option<u64>,
    queue_limit_mb: Option<Spanned<u64>>,
    cpu_limit: Option<Spanned<f64>>,
    max_crashes: Option<u32>,
    /// `false`: the child's process group contains what it starts, not a PID namespace.
    pid_namespace: Option<bool>,
    name: Option<Spanned<String>>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    #[serde(default)]
    config: toml::Table,
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    keep_serving_after_panic: bool,
    handler_timeout: Option<Spanned<f64>>,
    hook_paths: Option<Spanned<Vec<String>>>,
    log_rate: Option<Spanned<u64>>,
    log_burst: Option<Spanned<u64>>,
}

/// The largest `log_rate` and `log_burst`: a million lines is already no limit.
const MAX_LOG_LINES: u64 = 1_000_000;

/// The largest `queue_limit_mb`: 4 GiB of calls waiting for one child is already no limit.
const MAX_QUEUE_LIMIT_MB: u64 = 4096;

fn enabled_by_default() -> bool {
    true
}

/// Reads a configuration file. Relative plugin paths are resolved against the file's folder.
pub fn read_config(file: &Path) -> Result<Vec<PluginEntry>, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_owned(),
        line: None,
        message: format!("cannot read the configuration: {e}"),
    })?;
    parse_config(&text, file)
}

/// Parses the text of a configuration file called `file`: unknown keys, wrong types, empty
/// names, missing plugin files and programs that cannot run (not executable, a `#!` line whose
/// interpreter is missing, a `command` not on PATH, ...) are errors with their line number.
pub fn parse_config(text: &str, file: &Path) -> Result<Vec<PluginEntry>, ConfigError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let error = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
        file: file.to_owned(),
        line: span.map(|s| line_of(s.start)),
        message,
    };
    let parsed: File =
        toml::from_str(text).map_err(|e| error(e.span(), e.message().trim_end().to_owned()))?;
    let mut sources = entry_sources(text, file, &line_of).into_iter();
    // Paths are relative to the configuration's folder, however the file was named: the
    // folder of a bare `p.toml` is the current one (not an empty path, which would leave
    // `exec = "kv.py"` a bare name, looked up on PATH). Made absolute, so that every message
    // names the file itself.
    let base = match file.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
    let mut entries = Vec::new();
    for raw in parsed.plugin {
        let source = sources.next();
        if !raw.enabled {
            continue;
        }
        let entry_error = |span: Option<std::ops::Range<usize>>, message| {
            error(
                span.or_else(|| source.as_ref().map(|s| s.span.clone())),
                message,
            )
        };
        let Target {
            path,
            program,
            span,
        } = target(&raw, &base, &entry_error)?;
        let span = Some(span);
        let env: Vec<(String, String)> = raw.env.clone().into_iter().collect();
        if program && let Some(why) = crate::process::cannot_run(&path, &env, None) {
            return Err(error(span, why));
        }
        let seconds = |value: &Option<Spanned<f64>>, key: &str| match value {
            None => Ok(None),
            Some(seconds) => positive_seconds(*seconds.get_ref())
                .map(Some)
                .ok_or_else(|| {
                    let message = format!("`{key}` must be a positive number of seconds");
                    error(Some(seconds.span()), message)
                }),
        };
        let mut options = ProcessOptions::default();
        if let Some(timeout) = seconds(&raw.handshake_timeout, "handshake_timeout")? {
            options.handshake_timeout = timeout;
        }
        options.cpu_limit = seconds(&raw.cpu_limit, "cpu_limit")?;
        options.memory_limit = raw.memory_limit_mb.map(|mb| mb.saturating_mul(1 << 20));
        if let Some(max) = raw.max_crashes {
            options.max_crashes = max.max(1);
        }
        if let Some(namespace) = raw.pid_namespace {
            options.pid_namespace = namespace;
        }
        if let Some(mb) = &raw.queue_limit_mb {
            if !(1..=MAX_QUEUE_LIMIT_MB).contains(mb.get_ref()) {
                let message = format!(
                    "`queue_limit_mb` must be a whole number of MiB from 1 to \
                     {MAX_QUEUE_LIMIT_MB} (the default is {})",
                    crate::limits::CHILD_QUEUE_LIMIT >> 20
                );
                return Err(error(Some(mb.span()), message));
            }
            options.queue_limit = usize::try_from(*mb.get_ref() << 20).unwrap_or(usize::MAX);
        }
        let lines = |value: &Option<Spanned<u64>>, key: &str, default: u32| match value {
            None => Ok(default),
            Some(lines) if (1..=MAX_LOG_LINES).contains(lines.get_ref()) => {
                Ok(u32::try_from(*lines.get_ref()).unwrap_or(u32::MAX))
            }
            Some(lines) => {
                let message = format!(
                    "`{key}` must be a whole number from 1 to {MAX_LOG_LINES} (the default is \
                     {default})"
                );
                Err(error(Some(lines.span()), message))
            }
        };
        let log_limit = crate::LogLimit {
            rate: lines(&raw.log_rate, "log_rate", LOG_RATE)?,
            burst: lines(&raw.log_burst, "log_burst", LOG_BURST)?,
        };
        let process_only = raw.handshake_timeout.is_some()
            || raw.cpu_limit.is_some()
            || raw.memory_limit_mb.is_some()
            || raw.queue_limit_mb.is_some()
            || raw.max_crashes.is_some()
            || raw.pid_namespace.is_some();
        if !program && (!raw.args.is_empty() || !raw.env.is_empty()) {
            let message = "`args` and `env` are for programs (`exec` or `command`)";
            return Err(error(span, message.to_owned()));
        }
        let run = match (
            program,
            raw.isolation
                .as_ref()
                .map(|i| (i.get_ref().as_str(), i.span())),
        ) {
            (true, None) => Run::Program {
                args: raw.args,
                env,
                // Its `args` name files as `exec` does: relative to this file's folder.
                options: ProcessOptions {
                    working_dir: Some(base.clone()),
                    ..options
                },
            },
            (true, Some((_, span))) => {
                let message = "`isolation` is for libraries: a program always runs in a process";
                return Err(error(Some(span), message.to_owned()));
            }
            (false, Some(("process", _))) => Run::Isolated(options),
            (false, None | Some(("in-process", _))) if process_only => {
                let message = "the limits and timeouts of a child process need `isolation = \"process\"` (or a program: `exec` or `command`)";
                return Err(error(span, message.to_owned()));
            }
            (false, None | Some(("in-process", _))) => Run::InProcess,
            (false, Some((other, span))) => {
                let message =
                    format!("`isolation` is \"in-process\" or \"process\", not {other:?}");
                return Err(error(Some(span), message));
            }
        };

        if let Some(name) = &raw.name
            && name.get_ref().trim().is_empty()
        {
            return Err(error(
                Some(name.span()),
                "`name` must not be empty".to_owned(),
            ));
        }
        if let Some(name) = &raw.name
            && !crate::pluginlog::is_one_line(name.get_ref())
        {
            let message = "`name` must not hold control characters (it tags log lines)";
            return Err(error(Some(name.span()), message.to_owned()));
        }
        if let Some(pin) = &raw.sha256
            && (pin.get_ref().len() != 64 || !pin.get_ref().bytes().all(|b| b.is_ascii_hexdigit()))
        {
            let message = "`sha256` must be 64 hexadecimal digits".to_owned();
            return Err(error(Some(pin.span()), message));
        }
        let config = serde_json::to_value(&raw.config)
            .map_err(|e| error(span.clone(), format!("`config` cannot be JSON: {e}")))?;
        let handler_timeout = match &raw.handler_timeout {
            None => None,
            Some(seconds) => Some(positive_seconds(*seconds.get_ref()).ok_or_else(|| {
                let message = "`handler_timeout` must be a positive number of seconds".to_owned();
                error(Some(seconds.span()), message)
            })?),
        };
        let hook_paths = match raw.hook_paths {
            None => Vec::new(),
            Some(paths) => {
                if let Err(reason) = crate::hook::HookScope::new(paths.get_ref()) {
                    let message = format!(
                        "`hook_paths`: {reason}; give route patterns such as \"/api/{{*rest}}\""
                    );
                    return Err(error(Some(paths.span()), message));
                }
                paths.into_inner()
            }
        };
        entries.push(PluginEntry {
            path,
            run,
            name: raw.name.map(Spanned::into_inner),
            config,
            sha256: raw.sha256.map(Spanned::into_inner),
            keep_serving_after_panic: raw.keep_serving_after_panic,
            handler_timeout,
            hook_paths,
            log_limit,
            source,
        });
    }
    Ok(entries)
}

/// What an entry runs, from its `path`, `exec` or `command`.
struct Target {
    /// The library (`path`) or program (`exec`), resolved against the configuration's folder;
    /// or the name of a program (`command`), looked up on PATH when it starts.
    path: PathBuf,
    /// Whether it is a program (`exec` or `command`).
    program: bool,
    /// Where its key's value is written.
    span: std::ops::Range<usize>,
}

/// What `raw` runs, with paths resolved against `base`, the configuration's folder. An error
/// is made by `error` from where it is (`None`: the entry) and what is wrong.
fn target(
    raw: &RawPlugin,
    base: &Path,
    error: &dyn Fn(Option<std::ops::Range<usize>>, String) -> ConfigError,
) -> Result<Target, ConfigError> {
    const KEYS: &str =
        "`path` (a library), `exec` (a program file) or `command` (a program on PATH)";
    let file = |key: &str, written: &Spanned<PathBuf>| {
        let path = base.join(written.get_ref());
        if path.exists() {
            return Ok(Target {
                path,
                program: key == "exec",
                span: written.span(),
            });
        }
        let what = if key == "exec" {
            "program"
        } else {
            "plugin file"
        };
        let relative = match written.get_ref().is_relative() {
            true => format!(
                " (`{key} = {:?}` is relative to the configuration's folder)",
                written.get_ref()
            ),
            false => String::new(),
        };
        let message = format!("the {what} {} does not exist{relative}", path.display());
        Err(error(Some(written.span()), message))
    };
    match (&raw.path, &raw.exec, &raw.command) {
        (Some(path), None, None) => file("path", path),
        (None, Some(exec), None) => file("exec", exec),
        (None, None, Some(command)) => {
            let name = command.get_ref();
            let problem = if name.contains('/') {
                "`command` is a program name, looked up on PATH: use `exec` for a path \
                 (relative to the configuration's folder)"
            } else if name.trim().is_empty() {
                "`command` must name a program, looked up on PATH"
            } else if name.contains(char::is_whitespace) {
                "`command` is one program name: give its arguments in `args`"
            } else {
                return Ok(Target {
                    path: PathBuf::from(name),
                    program: true,
                    span: command.span(),
                });
            };
            Err(error(Some(command.span()), problem.to_owned()))
        }
        (None, None, None) => Err(error(None, format!("a plugin needs {KEYS}"))),
        _ => {
            // The error points at the second of them in the file.
            let mut given: Vec<(&str, std::ops::Range<usize>)> = [
                ("path", raw.path.as_ref().map(Spanned::span)),
                ("exec", raw.exec.as_ref().map(Spanned::span)),
                ("command", raw.command.as_ref().map(Spanned::span)),
            ]
            .into_iter()
            .filter_map(|(key, span)| Some((key, span?)))
            .collect();
            given.sort_by_key(|(_, span)| span.start);
            let (first, second) = (&given[0], &given[1]);
            let message = format!(
                "give one of {KEYS}, not both `{}` and `{}`",
                first.0, second.0
            );
            Err(error(Some(second.1.clone()), message))
        }
    }
}

/// The [`EntrySource`] of each `[[plugin]]` of a configuration that parsed, in file order.
fn entry_sources(text: &str, file: &Path, line_of: &dyn Fn(usize) -> usize) -> Vec<EntrySource> {
    use toml::de::{DeTable, DeValue};
    /// Records the line of `value` at `key`, and of everything inside it.
    fn record(
        value: &toml::Spanned<DeValue<'_>>,
        key: String,
        line_of: &dyn Fn(usize) -> usize,
        lines: &mut BTreeMap<String, usize>,
    ) {
        let child = |name: &str| match key.as_str() {
            "" => name.to_owned(),
            _ => format!("{key}.{name}"),
        };
        match value.get_ref() {
            DeValue::Table(table) => {
                for (name, value) in table {
                    record(value, child(name.get_ref()), line_of, lines);
                }
            }
            DeValue::Array(array) => {
                for (index, value) in array.iter().enumerate() {
                    record(value, child(&index.to_string()), line_of, lines);
                }
            }
            _ => {}
        }
        lines.insert(key, line_of(value.span().start));
    }
    let Ok(document) = DeTable::parse(text) else {
        return Vec::new();
    };
    let plugins = document.get_ref().get("plugin").map(|p| p.get_ref());
    let Some(DeValue::Array(plugins)) = plugins else {
        return Vec::new();
    };
    plugins
        .iter()
        .map(|plugin| {
            let span = plugin.span();
            let line = line_of(span.start);
            let mut config_lines = BTreeMap::new();
            if let DeValue::Table(table) = plugin.get_ref()
                && let Some(config) = table.get("config")
            {
                record(config, String::new(), line_of, &mut config_lines);
            }
            EntrySource {
                file: file.to_owned(),
                line,
                span,
                config_lines,
            }
        })
        .collect()
}

/// A duration of `seconds`, if that is a positive, finite number a `Duration` can hold.
pub fn positive_seconds(seconds: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
}

/// The plugin libraries in `dir` (files named like the platform's shared libraries, such as
/// `libname.so`), in sorted file-name order, each with its own name and an empty configuration.
pub fn scan_dir(dir: &Path) -> Result<Vec<PluginEntry>, ConfigError> {
    let error = |message: String| ConfigError {
        file: dir.to_owned(),
        line: None,
        message,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| error(format!("cannot list the plugin folder: {e}")))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|name| {
                    name.starts_with(std::env::consts::DLL_PREFIX)
                        && name.ends_with(std::env::consts::DLL_SUFFIX)
                })
        })
        .collect();
    paths.sort();
    Ok(paths.into_iter().map(PluginEntry::new).collect())
}

/// Loads every entry's library (each file and pin once), creates the instances and registers
/// them in entry order. `allow_insecure_permissions` is passed on to [`LoadOptions`].
pub fn deploy(
    entries: &[PluginEntry],
    allow_insecure_permissions: bool,
) -> Result<Registry, Error> {
    let mut loader = Loader::new(allow_insecure_permissions);
    let registry = Registry::new();
    for entry in entries {
        let instance = loader.instantiate(entry)?;
        registry
            .register(instance)
            .map_err(|error| entry.locate(error))?;
    }
    Ok(registry)
}

/// Creates the instances of configuration entries, loading each version of a library file
/// once, however many entries name it.
///
/// A library is loaded from a private copy of the bytes that were hashed and inspected (see
/// [`LoadOptions::sha256`]), never from its own path: a file written over in place cannot
/// change code that runs, and a new version of a file loads as new code (`dlopen` of a path
/// already open would return the library loaded before). Every version loaded stays loaded
/// while the loader lives (see [`Deployment`](crate::Deployment) for why and how that is
/// bounded), those loaded for a reload that then failed included: their initialisers ran and
/// their code is mapped, and unmapping it is no more sound than for any other; a version is
/// keyed by its file and content, so a reload tried again with the same content reuses it
/// rather than loading, and counting, it twice.
///
/// A Go library cannot be loaded in a new version while another is (see
/// [`ErrorKind::GoLibraryReloaded`](crate::ErrorKind::GoLibraryReloaded)): Go's runtime does not
/// start twice in one process.
pub struct Loader {
    factories: HashMap<LibraryVersion, Factory>,
    allow_insecure_permissions: bool,
}

/// One version of a plugin's file: its resolved path and the SHA-256 of its content, in hex.
pub type LibraryVersion = (PathBuf, String);

impl PluginEntry {
    /// The file this entry runs: the library (in this process or isolated), or a program's
    /// `exec` file; `None` for a program named by `command`, which is looked up on PATH when it
    /// starts.
    pub fn file(&self) -> Option<&Path> {
        match self.run {
            Run::Program { .. } if self.path.components().count() < 2 => None,
            _ => Some(&self.path),
        }
    }

    /// The [`file`](Self::file) this entry runs, resolved, and the SHA-256 of its content. An
    /// error names the entry's line.
    pub fn content(&self) -> Result<Option<LibraryVersion>, Error> {
        self.file().map(|_| self.file_version()).transpose()
    }

    /// The resolved path of the entry's file and the SHA-256 of its content.
    fn file_version(&self) -> Result<LibraryVersion, Error> {
        let fail = |kind| self.locate(Error::new(kind).with_file(Some(&self.path)));
        let resolved = crate::trust::resolve(&self.path).map_err(fail)?;
        let bytes = crate::trust::read(&resolved).map_err(fail)?;
        Ok((resolved, crate::trust::sha256_hex(&bytes)))
    }
}

impl Loader {
    /// A loader; `allow_insecure_permissions` is passed on to [`LoadOptions`].
    pub fn new(allow_insecure_permissions: bool) -> Self {
        Self {
            factories: HashMap::new(),
            allow_insecure_permissions,
        }
    }

    /// The factory of `entry`'s library, loaded on first use of its present content; the
    /// entry's pin, if it has one, must match it.
    pub fn factory(&mut self, entry: &PluginEntry) -> Result<Factory, Error> {
        let version = entry.file_version()?;
        self.factory_of(entry, version)
    }

    /// The factory of `version`, the content of `entry`'s library.
    pub(crate) fn factory_of(
        &mut self,
        entry: &PluginEntry,
        version: LibraryVersion,
    ) -> Result<Factory, Error> {
        let pin = entry.sha256.as_ref();
        if let Some(factory) = self.factories.get(&version) {
            return match pin {
                Some(pin) if !pin.eq_ignore_ascii_case(&version.1) => {
                    let kind = crate::ErrorKind::ChecksumMismatch {
                        expected: pin.to_ascii_lowercase(),
                        actual: version.1,
                    };
                    Err(entry.locate(Error::new(kind).with_file(Some(&entry.path))))
                }
                _ => Ok(factory.clone()),
            };
        }
        self.refuse_second_go_runtime(entry, &version)?;
        // The pin, when there is one, is checked in its turn among the checks of the file.
        let options = LoadOptions {
            sha256: Some(pin.unwrap_or(&version.1).clone()),
            allow_insecure_permissions: self.allow_insecure_permissions,
        };
        let factory = Factory::load_with(&entry.path, &options).map_err(|e| entry.locate(e))?;
        self.factories.insert(version, factory.clone());
        Ok(factory)
    }

    /// Refuses `version` of `entry`'s library, not loaded yet, if it is a Go library of which
    /// another version is loaded. Only then is the file read again, for its inspection.
    fn refuse_second_go_runtime(
        &self,
        entry: &PluginEntry,
        version: &LibraryVersion,
    ) -> Result<(), Error> {
        if !self.factories.keys().any(|(path, _)| *path == version.0) {
            return Ok(());
        }
        // A file that cannot be read now is refused by the load, with its reason.
        let go =
            crate::trust::read(&version.0).is_ok_and(|bytes| crate::inspect::go_runtime(&bytes));
        if !go {
            return Ok(());
        }
        let error = Error::new(crate::ErrorKind::GoLibraryReloaded).with_file(Some(&entry.path));
        Err(entry.locate(error))
    }

    /// Whether `version` is loaded.
    pub(crate) fn has(&self, version: &LibraryVersion) -> bool {
        self.factories.contains_key(version)
    }

    /// The library versions loaded.
    pub(crate) fn versions(&self) -> impl Iterator<Item = &LibraryVersion> {
        self.factories.keys()
    }

    /// Creates `entry`'s instance, named and configured as the entry says (not started): in
    /// this process, or in a child process it starts. An error points at the entry's line, or
    /// at the value a plugin called invalid.
    pub fn instantiate(&mut self, entry: &PluginEntry) -> Result<Instance, Error> {
        self.instantiate_version(entry, None)
    }

    /// [`instantiate`](Self::instantiate), with the version of the entry's library (in this
    /// process or isolated) already read (`None`: read it now).
    pub(crate) fn instantiate_version(
        &mut self,
        entry: &PluginEntry,
        version: Option<LibraryVersion>,
    ) -> Result<Instance, Error> {
        // A child process logs within the entry's limit from its first line; an in-process
        // instance gets it once `create` has returned (its `create` logs within the default).
        let in_child = |options: &ProcessOptions| ProcessOptions {
            log_limit: entry.log_limit,
            ..options.clone()
        };
        let created = match &entry.run {
            Run::InProcess => {
                let factory = match version {
                    Some(version) => self.factory_of(entry, version)?,
                    None => self.factory(entry)?,
                };
                let name = entry.name.as_deref().unwrap_or(factory.name());
                factory
                    .create(name, &entry.config)
                    .inspect(|instance| instance.set_log_limit(entry.log_limit))
            }
            Run::Isolated(options) => {
                // The worker loads the content that was read here, from a private copy.
                let sha256 = match (&entry.sha256, version) {
                    (Some(pin), _) => pin.clone(),
                    (None, Some((_, sha256))) => sha256,
                    (None, None) => entry.file_version()?.1,
                };
                let load = LoadOptions {
                    sha256: Some(sha256),
                    allow_insecure_permissions: self.allow_insecure_permissions,
                };
                ProcessPlugin::isolated(&entry.path, &load, in_child(options))
                    .and_then(|plugin| plugin.create(entry.name.as_deref(), &entry.config))
            }
            Run::Program { args, env, options } => {
                ProcessPlugin::program(&entry.path, args, env, in_child(options))
                    .create(entry.name.as_deref(), &entry.config)
            }
        };
        let instance = created.map_err(|e| entry.locate(e))?;
        instance.keep_serving_after_panic(entry.keep_serving_after_panic);
        instance.set_handler_timeout(entry.handler_timeout);
        instance
            .set_hook_paths(&entry.hook_paths)
            .map_err(|e| entry.locate(e))?;
        Ok(instance)
    }
}

#[cfg(test)]
mod tests {
    //! Property tests of the configuration parser: it never panics, and what it accepts it
    //! reads back faithfully.

    use super::*;
    use proptest::prelude::*;

    /// A file that exists, to stand for a plugin (the parser checks existence only).
    fn existing() -> &'static str {
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")
    }

    #[test]
    fn a_create_failure_points_at_the_value_it_names() {
        let text = format!(
            "[[plugin]]\npath = {path:?}\nenabled = false\n\n[[plugin]]\npath = {path:?}\n\
             [plugin.config]\nname = \"x\"\nroutes = [\n  \"/a\",\n  \"/b\",\n]\n\
             [plugin.config.limits]\nmax = 3\n",
            path = existing()
        );
        let entries = parse_config(&text, Path::new("/etc/p.toml")).unwrap();
        let source = entries[0].source.as_ref().unwrap();
        assert_eq!(
            (source.file.as_path(), source.line),
            (Path::new("/etc/p.toml"), 5)
        );
        let line = |reason: &str| source.line_of(reason);
        assert_eq!(line("invalid configuration at `name`: expected u32"), 8);
        assert_eq!(line("invalid configuration at `routes.1`: bad"), 11);
        assert_eq!(line("invalid configuration at `limits.max`: too big"), 14);
        // A key the file lacks: its closest parent; no key: the table; not about it: the entry.
        assert_eq!(line("invalid configuration at `limits.min`: missing"), 13);
        assert_eq!(line("invalid configuration: missing field `port`"), 7);
        assert_eq!(line("cannot open the database"), 5);
    }

    #[test]
    fn queue_limit_mb_is_read_in_mib_and_checked() {
        let entry = |value: &str| {
            let text = format!(
                "[[plugin]]\npath = {:?}\nisolation = \"process\"\nqueue_limit_mb = {value}\n",
                existing()
            );
            parse_config(&text, Path::new("/etc/p.toml"))
        };
        let entries = entry("8").unwrap();
        let Run::Isolated(options) = &entries[0].run else {
            panic!("{:?}", entries[0].run)
        };
        assert_eq!(options.queue_limit, 8 << 20);
        for value in ["0", "5000"] {
            let error = entry(value).unwrap_err();
            assert_eq!(error.line, Some(4), "{error}");
            assert!(
                error
                    .message
                    .contains("`queue_limit_mb` must be a whole number of MiB from 1 to 4096"),
                "{error}"
            );
        }
        assert!(entry("1.5").is_err());
        assert!(entry("-1").is_err());
        // A limit of the queue towards a child needs a child.
        let text = format!("[[plugin]]\npath = {:?}\nqueue_limit_mb = 8\n", existing());
        assert!(parse_config(&text, Path::new("/etc/p.toml")).is_err());
    }

    #[test]
    fn log_rate_and_burst_are_read_for_every_kind_of_entry_and_checked() {
        let parse = |extra: &str| {
            let text = format!("[[plugin]]\npath = {:?}\n{extra}\n", existing());
            parse_config(&text, Path::new("/etc/p.toml"))
        };
        let entries = parse("").unwrap();
        assert_eq!(entries[0].log_limit, crate::LogLimit::default());
        let entries = parse("log_rate = 5\nlog_burst = 7").unwrap();
        let limit = crate::LogLimit { rate: 5, burst: 7 };
        assert_eq!(entries[0].log_limit, limit);
        let entries = parse("isolation = \"process\"\nlog_rate = 5\nlog_burst = 7").unwrap();
        assert!(matches!(entries[0].run, Run::Isolated(_)));
        assert_eq!(entries[0].log_limit, limit);
        for (extra, key) in [
            ("log_rate = 0", "log_rate"),
            ("log_burst = 2000000", "log_burst"),
        ] {
            let error = parse(extra).unwrap_err();
            assert_eq!(error.line, Some(3), "{error}");
            assert!(
                error
                    .message
                    .contains(&format!("`{key}` must be a whole number from 1 to 1000000")),
                "{error}"
            );
        }
        assert!(parse("log_rate = -1").is_err());
        assert!(parse("log_burst = 1.5").is_err());
    }

    #[test]
    fn a_name_holding_control_characters_is_refused() {
        let text = format!("[[plugin]]\npath = {:?}\nname = \"a\\nb\"\n", existing());
        let error = parse_config(&text, Path::new("/etc/p.toml")).unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
        assert!(
            error.message.contains("`name` must not hold control"),
            "{error}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_is_an_error_or_entries_never_a_panic(text in "\\\\PC{0,300}") {
            let _ = parse_config(&text, Path::new("fuzz.toml"));
        }

        #[test]
        fn arbitrary_toml_like_lines_never_panic(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("[[plugin]]".to_owned()),
                    Just("[plugin.config]".to_owned()),
                    "[a-z_]{1,12} = (\"[a-z/]{0,8}\"|[0-9]{1,4}|true|false|\\[\\])",
                ],
                0..12,
            )
        ) {
            let _ = parse_config(&lines.join("\n"), Path::new("fuzz.toml"));
        }

        #[test]
        fn valid_configurations_are_read_back(
            plugins in proptest::collection::vec(
                (proptest::option::of("[a-z][a-z0-9-]{0,10}"), any::<bool>(), any::<i32>(), any::<bool>()),
                0..6,
            )
        ) {
            let mut text = String::new();
            for (name, enabled, number, keep) in &plugins {
                text.push_str(&format!("[[plugin]]\npath = {:?}\nenabled = {enabled}\n", existing()));
                if let Some(name) = name {
                    text.push_str(&format!("name = {name:?}\n"));
                }
                text.push_str(&format!("keep_serving_after_panic = {keep}\n[plugin.config]\nn = {number}\n"));
            }
            let entries = parse_config(&text, Path::new("/config.toml")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let expected: Vec<_> = plugins.iter().filter(|p| p.1).collect();
            prop_assert_eq!(entries.len(), expected.len());
            for (entry, (name, _, number, keep)) in entries.iter().zip(expected) {
                prop_assert_eq!(&entry.name, name);
                prop_assert_eq!(&entry.config, &serde_json::json!({ "n": number }));
                prop_assert_eq!(entry.keep_serving_after_panic, *keep);
                prop_assert_eq!(entry.path.to_str(), Some(existing()));
            }
        }
    }
}
