#![doc = include_str!("PROTOCOL.md")]
//!
//! # In this crate
//!
//! - [`ProcessPlugin`]: a plugin that runs in a child process, either a plugin library run by a
//!   worker ([`ProcessPlugin::isolated`], the very file an in-process [`Factory`] loads) or a
//!   program ([`ProcessPlugin::program`]). Its instances are ordinary [`Instance`]s: registries,
//!   routers and the HTTP server treat them like in-process ones.
//! - [`worker_main`]: the worker side, for the executable that runs isolated libraries.
//!
//! [`Factory`]: crate::Factory

mod child;
mod contain;
mod link;
mod output;
mod remote;
#[cfg(target_os = "linux")]
mod ring;
mod wire;
mod worker;

pub use remote::{ChildState, Mode};
pub use wire::FD_VARIABLE;
pub use worker::worker_main;

pub(crate) use child::cannot_run;
pub(crate) use remote::Remote;
pub(crate) use wire::RouteSpec;

use crate::error::{Error, ErrorKind};
use crate::plugin::{Instance, LoadOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How a child process is run and supervised. The defaults suit most plugins.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessOptions {
    /// How long a child has to answer `hello` with `welcome` (default 5 s).
    pub handshake_timeout: Duration,
    /// How long `start` may take (default 30 s).
    pub start_timeout: Duration,
    /// How long `stop` and the child's exit may take before SIGTERM (default 5 s); SIGKILL
    /// follows [`SIGTERM_GRACE`](crate::limits::SIGTERM_GRACE) later. A child is stopped this
    /// way even with calls running in it (they fail).
    pub stop_timeout: Duration,
    /// How often the child's liveness is checked (default 5 s).
    pub ping_interval: Duration,
    /// How long a liveness check may wait for its answer before the child is killed and
    /// restarted (default 5 s).
    pub ping_timeout: Duration,
    /// The first delay before a restart (default 100 ms); it doubles with each restart in a
    /// row, up to `backoff_max`.
    pub backoff_initial: Duration,
    /// The longest delay before a restart (default 30 s).
    pub backoff_max: Duration,
    /// A child that served this long without dying resets the backoff (default 60 s).
    pub stable_after: Duration,
    /// How many crashes within `crash_window` quarantine the plugin (default 5).
    pub max_crashes: u32,
    /// The window of `max_crashes` (default 60 s).
    pub crash_window: Duration,
    /// The largest frame accepted from the child, in bytes (default 16 MiB plus the default
    /// request body limit).
    pub frame_limit: u64,
    /// The most bytes of calls queued towards the child and not yet written to it (default
    /// [`CHILD_QUEUE_LIMIT`](crate::limits::CHILD_QUEUE_LIMIT)): past it, new calls are refused
    /// with [`ErrorKind::Backlogged`] until the child reads enough of them.
    pub queue_limit: usize,
    /// The most memory the child may map (`RLIMIT_AS`), in bytes.
    pub memory_limit: Option<u64>,
    /// The most CPU time the child may use (`RLIMIT_CPU`).
    pub cpu_limit: Option<Duration>,
    /// Whether to run the child in a PID namespace of its own where the system allows it (as
    /// root, or in a user namespace of its own), so that everything it starts ends with it,
    /// even what leaves its process group (default true). Without one (Linux), it runs below a
    /// subreaper, which kills what is left below it when the child ends. Both need the
    /// [`worker`](Self::worker) executable; without it, its process group contains what it
    /// starts, and a descendant that calls `setsid()` escapes.
    pub pid_namespace: bool,
    /// The rate limit of what the plugin logs: its `log` messages and its output lines
    /// together (default: [`LogLimit::default`](crate::LogLimit), 100 lines/s, burst 1000).
    /// [`Instance::set_log_limit`](crate::Instance::set_log_limit) changes it later.
    pub log_limit: crate::LogLimit,
    /// The executable that runs isolated libraries, and, on Linux, the outer process that
    /// contains every child (programs too): any program that calls [`worker_main`] first thing
    /// in `main` (`plugin-host` does). Default: the current executable, used for containment
    /// only once it has called [`worker_main`].
    pub worker: Option<PathBuf>,
    /// The folder a plugin program runs in (default: the host's working folder). A
    /// configuration file sets its own folder for its programs, so that an argument naming a
    /// file (`command = "node"`, `args = ["kv.js"]`) means the file `exec` would. An isolated
    /// library's worker ignores it and runs where the host runs, as the library would
    /// in-process.
    pub working_dir: Option<PathBuf>,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            max_crashes: 5,
            crash_window: Duration::from_secs(60),
            frame_limit: (16 << 20) + crate::limits::DEFAULT_BODY_LIMIT as u64,
            queue_limit: crate::limits::CHILD_QUEUE_LIMIT,
            memory_limit: None,
            cpu_limit: None,
            pid_namespace: true,
            log_limit: crate::LogLimit::default(),
            worker: None,
            working_dir: None,
        }
    }
}

/// A plugin that runs in a child process: creates [`Instance`]s, each with a child of its own.
#[derive(Debug, Clone)]
pub struct ProcessPlugin {
    mode: Mode,
    file: PathBuf,
    spec: child::Spec,
    options: ProcessOptions,
}

impl ProcessPlugin {
    /// The plugin library at `path`, to run in a worker process. The host applies the checks
    /// that need no loading (permissions, SHA-256 pin, inspection of the file) before anything
    /// starts, so that a bad file is the same error as in-process. On Linux it keeps the bytes
    /// it checked, in a sealed memory file, for as long as the plugin lives, and hands them to
    /// every worker of its instances with `hello`, the first as those that replace one that
    /// crashed: a restart runs the code that was checked, whatever became of the file since (a
    /// new build of it is taken in by a new instance: a reload replaces it), and nothing is
    /// left on disk whatever ends the host. The worker checks their SHA-256 and contents again
    /// and loads them as [`Factory::load_with`](crate::Factory::load_with) does. Elsewhere the
    /// worker reads the file itself, pinned to the SHA-256 the host read.
    pub fn isolated(
        path: impl AsRef<Path>,
        load: &LoadOptions,
        options: ProcessOptions,
    ) -> Result<Self, Error> {
        let path = path.as_ref();
        let (resolved, checked) = crate::plugin::check_file(path, load)?;
        let worker = match &options.worker {
            Some(worker) => worker.clone(),
            None => std::env::current_exe().map_err(|source| {
                Error::new(ErrorKind::Unreadable { source }).with_file(Some(path))
            })?,
        };
        let sha256 = match &load.sha256 {
            Some(pin) => pin.clone(),
            None => crate::trust::sha256_hex(&checked.bytes),
        };
        let mut env = vec![
            (
                worker::LIBRARY_VARIABLE.to_owned(),
                resolved.display().to_string(),
            ),
            (worker::SHA256_VARIABLE.to_owned(), sha256),
        ];
        #[cfg(target_os = "linux")]
        let content = {
            use std::os::unix::ffi::OsStrExt;
            let name = resolved
                .file_name()
                .map_or(&b"plugin"[..], |n| n.as_bytes());
            let name = std::ffi::CString::new(name).unwrap_or_else(|_| c"plugin".to_owned());
            let copy = ring::sealed_copy(&checked.bytes, &name).map_err(|source| {
                Error::new(ErrorKind::Unreadable { source }).with_file(Some(path))
            })?;
            env.push((worker::CONTENT_VARIABLE.to_owned(), "1".to_owned()));
            Some(Arc::new(copy))
        };
        #[cfg(not(target_os = "linux"))]
        let content = None;
        if load.allow_insecure_permissions {
            env.push((worker::INSECURE_VARIABLE.to_owned(), "1".to_owned()));
        }
        Ok(Self {
            mode: Mode::Isolated,
            file: path.to_owned(),
            spec: child::Spec {
                program: worker.clone(),
                args: Vec::new(),
                env,
                memory_limit: options.memory_limit,
                cpu_limit: options.cpu_limit,
                pid_namespace: options.pid_namespace,
                worker: Some(worker),
                working_dir: None,
                content,
            },
            options,
        })
    }

    /// A plugin program, started as `program args...` with `env` added to the host's
    /// environment. It speaks this module's protocol.
    pub fn program(
        program: impl AsRef<Path>,
        args: &[String],
        env: &[(String, String)],
        options: ProcessOptions,
    ) -> Self {
        let program = program.as_ref();
        Self {
            mode: Mode::Program,
            file: program.to_owned(),
            spec: child::Spec {
                program: program.to_owned(),
                args: args.to_vec(),
                env: env.to_vec(),
                memory_limit: options.memory_limit,
                cpu_limit: options.cpu_limit,
                pid_namespace: options.pid_namespace,
                // The outer process that contains it (see `contain.rs`).
                worker: options
                    .worker
                    .clone()
                    .or_else(|| std::env::current_exe().ok()),
                working_dir: options.working_dir.clone(),
                content: None,
            },
            options,
        }
    }

    /// The library or the program.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Starts a child and completes the handshake: an instance called `name`, or by the
    /// plugin's own name, with the JSON configuration `config`. Not started yet.
    pub fn create(
        &self,
        name: Option<&str>,
        config: &serde_json::Value,
    ) -> Result<Instance, Error> {
        let remote = remote::Remote::spawn(
            self.mode,
            self.file.clone(),
            self.spec.clone(),
            name,
            config,
            self.options.clone(),
        )?;
        Ok(Instance::remote(Arc::clone(&remote)))
    }
}
