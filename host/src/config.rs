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
//! [plugin.config]                         # optional; reaches the plugin as JSON
//! path = "/visits"
//! start = 41
//! ```
//!
//! A library may appear in several entries (several instances, each with its own name and
//! configuration); it is loaded once.

use crate::error::Error;
use crate::plugin::{Factory, LoadOptions};
use crate::registry::Registry;
use serde::Deserialize;
use std::collections::HashMap;
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

/// One plugin instance to load.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginEntry {
    /// The library file.
    pub path: PathBuf,
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
}

impl PluginEntry {
    /// An entry for `path` with the plugin's own name, an empty configuration and no pin.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            name: None,
            config: serde_json::json!({}),
            sha256: None,
            keep_serving_after_panic: false,
            handler_timeout: None,
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
    path: Spanned<PathBuf>,
    name: Option<Spanned<String>>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    #[serde(default)]
    config: toml::Table,
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    keep_serving_after_panic: bool,
    handler_timeout: Option<Spanned<f64>>,
}

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
/// names and missing plugin files are errors with their line number.
pub fn parse_config(text: &str, file: &Path) -> Result<Vec<PluginEntry>, ConfigError> {
    let error = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
        file: file.to_owned(),
        line: span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message,
    };
    let parsed: File =
        toml::from_str(text).map_err(|e| error(e.span(), e.message().trim_end().to_owned()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut entries = Vec::new();
    for raw in parsed.plugin.into_iter().filter(|p| p.enabled) {
        let path = base.join(raw.path.get_ref());
        if !path.exists() {
            let message = format!("the plugin file {} does not exist", path.display());
            return Err(error(Some(raw.path.span()), message));
        }
        if let Some(name) = &raw.name
            && name.get_ref().trim().is_empty()
        {
            return Err(error(
                Some(name.span()),
                "`name` must not be empty".to_owned(),
            ));
        }
        if let Some(pin) = &raw.sha256
            && (pin.get_ref().len() != 64 || !pin.get_ref().bytes().all(|b| b.is_ascii_hexdigit()))
        {
            let message = "`sha256` must be 64 hexadecimal digits".to_owned();
            return Err(error(Some(pin.span()), message));
        }
        let config = serde_json::to_value(&raw.config).map_err(|e| {
            error(
                Some(raw.path.span()),
                format!("`config` cannot be JSON: {e}"),
            )
        })?;
        let handler_timeout = match &raw.handler_timeout {
            None => None,
            Some(seconds) => Some(positive_seconds(*seconds.get_ref()).ok_or_else(|| {
                let message = "`handler_timeout` must be a positive number of seconds".to_owned();
                error(Some(seconds.span()), message)
            })?),
        };
        entries.push(PluginEntry {
            path,
            name: raw.name.map(Spanned::into_inner),
            config,
            sha256: raw.sha256.map(Spanned::into_inner),
            keep_serving_after_panic: raw.keep_serving_after_panic,
            handler_timeout,
        });
    }
    Ok(entries)
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
    let mut factories: HashMap<(&Path, Option<&str>), Factory> = HashMap::new();
    let registry = Registry::new();
    for entry in entries {
        let key = (entry.path.as_path(), entry.sha256.as_deref());
        let factory = match factories.get(&key) {
            Some(factory) => factory.clone(),
            None => {
                let options = LoadOptions {
                    sha256: entry.sha256.clone(),
                    allow_insecure_permissions,
                };
                let factory = Factory::load_with(&entry.path, &options)?;
                factories.insert(key, factory.clone());
                factory
            }
        };
        let name = entry.name.as_deref().unwrap_or(factory.name());
        let instance = factory.create(name, &entry.config)?;
        instance.keep_serving_after_panic(entry.keep_serving_after_panic);
        instance.set_handler_timeout(entry.handler_timeout);
        registry.register(instance)?;
    }
    Ok(registry)
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
