//! `plugin-host new`, `plugin-host include-dir` and `plugin-host sdk-dir`: what an author outside
//! this repository needs to start a plugin: a project that builds and passes `check` as it is,
//! and the C header and the Rust SDK on disk where a build finds them.
//!
//! The host carries the Rust SDK's source (`plugin_api::SDK_SOURCE`) as it carries the header,
//! and a new Rust project gets its own copy in [`SDK_IN_PROJECT`]: the project then builds
//! anywhere it is copied or cloned, against the SDK of the host that wrote it, with no registry
//! holding `pluglet-api` and no path to this machine; its dependency also names the version, so
//! it keeps building from crates.io once the path is dropped.

use std::path::{Path, PathBuf};

/// The language of a new plugin project.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Lang {
    /// Rust, on the pluglet-api SDK (cargo).
    Rust,
    /// C11 (make).
    C,
    /// C++17 (CMake).
    Cpp,
    /// Go with cgo (make, go build -buildmode=c-shared).
    Go,
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lang::Rust => "Rust",
            Lang::C => "C",
            Lang::Cpp => "C++",
            Lang::Go => "Go",
        })
    }
}

/// A template file: where it goes in the project, and its text with `{{name}}`, `{{lib}}`,
/// `{{api_version}}` and `{{sdk}}` to fill in.
type File = (&'static str, &'static str);

/// Where a new Rust project holds its copy of the SDK (`{{sdk}}` in the templates), relative to
/// the project.
const SDK_IN_PROJECT: &str = "vendor/pluglet-api";

/// Every file of a language's template.
fn template(lang: Lang) -> &'static [File] {
    macro_rules! files {
        ($folder:literal: $($to:literal <- $from:literal),* $(,)?) => {
            &[$(($to, include_str!(concat!("templates/", $folder, "/", $from)))),*]
        };
    }
    match lang {
        Lang::Rust => files!("rust":
            "Cargo.toml" <- "Cargo.toml.in",
            "src/lib.rs" <- "lib.rs",
            "plugin.toml" <- "plugin.toml",
            "README.md" <- "README.md",
        ),
        Lang::C => files!("c":
            "plugin.c" <- "plugin.c",
            "Makefile" <- "Makefile",
            "plugin.toml" <- "plugin.toml",
            "README.md" <- "README.md",
        ),
        Lang::Cpp => files!("cpp":
            "plugin.cpp" <- "plugin.cpp",
            "CMakeLists.txt" <- "CMakeLists.txt",
            "plugin.toml" <- "plugin.toml",
            "README.md" <- "README.md",
        ),
        Lang::Go => files!("go":
            "go.mod" <- "go.mod",
            "plugin.go" <- "plugin.go",
            "plugin.c" <- "plugin.c",
            "Makefile" <- "Makefile",
            "plugin.toml" <- "plugin.toml",
            "README.md" <- "README.md",
        ),
    }
}

/// Checks a new plugin's name: it becomes the plugin's name, its route, a package and a library
/// name, so it is kept to what every language and build tool accepts.
fn check_name(name: &str) -> Result<(), String> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` cannot name a plugin: use a lower-case letter, then lower-case letters, \
             digits, `-` or `_` (at most 64), for example `my-plugin`"
        ))
    }
}

/// Writes a new plugin project called `name` in `lang` into `dir`, which must not exist or be
/// empty, and returns what it wrote: each file, and a Rust project's copy of the SDK as one
/// folder.
pub fn new_project(name: &str, lang: Lang, dir: &Path) -> Result<Vec<PathBuf>, String> {
    check_name(name)?;
    let occupied = std::fs::read_dir(dir).map(|mut entries| entries.next().is_some());
    if occupied.unwrap_or(false) {
        return Err(format!(
            "{} exists and is not empty; give a new folder with --dir",
            dir.display()
        ));
    }
    let lib = name.replace('-', "_");
    let files: Vec<(&str, String)> = template(lang)
        .iter()
        .map(|(to, text)| {
            let text = text
                .replace("{{name}}", name)
                .replace("{{lib}}", &lib)
                .replace("{{api_version}}", plugin_api::VERSION)
                .replace("{{sdk}}", SDK_IN_PROJECT);
            (*to, text)
        })
        .collect();
    write_files(dir, files.iter().map(|(to, text)| (*to, text.as_str())))?;
    let mut written: Vec<PathBuf> = files.iter().map(|(to, _)| dir.join(to)).collect();
    if let Lang::Rust = lang {
        written.push(sdk_dir(Some(dir.join(SDK_IN_PROJECT)))?);
    }
    Ok(written)
}

/// The folder under the user's data folder (`$XDG_DATA_HOME`, or `~/.local/share`) where
/// `include-dir` and `sdk-dir` write by default: `pluglet/VERSION/leaf`, one per host version.
fn default_dir(leaf: &str) -> Result<PathBuf, String> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/share")))
        .ok_or("neither XDG_DATA_HOME nor HOME is set: give the folder to write to")?;
    Ok(data
        .join("pluglet")
        .join(env!("CARGO_PKG_VERSION"))
        .join(leaf))
}

/// Makes sure `dir` holds `files` (paths relative to it, `/` between names, and texts). Each
/// file that differs is replaced whole (written aside, then renamed), so that a build running at
/// the same time never reads half a file; a file already right is left alone, so that its
/// modification time does not make builds start over. Files are readable by everyone, like any
/// installed header or source (a file written aside starts as 0600).
fn write_files<'a>(
    dir: &Path,
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), String> {
    for (to, text) in files {
        let path = dir.join(to);
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            continue;
        }
        let write = || -> std::io::Result<()> {
            let folder = path.parent().unwrap_or(dir);
            std::fs::create_dir_all(folder)?;
            let mut aside = tempfile::NamedTempFile::new_in(folder)?;
            std::io::Write::write_all(&mut aside, text.as_bytes())?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                aside
                    .as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o644))?;
            }
            aside.persist(&path)?;
            Ok(())
        };
        write().map_err(|e| {
            format!(
                "cannot write {}: {e}; give a folder you can write to",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// Makes sure `dir` (by default `pluglet/VERSION/include` in the user's data folder) holds this
/// host's `plugin_api.h`, and returns the folder.
pub fn include_dir(dir: Option<PathBuf>) -> Result<PathBuf, String> {
    let dir = dir.map_or_else(|| default_dir("include"), Ok)?;
    write_files(&dir, [("plugin_api.h", plugin_api::C_HEADER)])?;
    Ok(dir)
}

/// Makes sure `dir` (by default `pluglet/VERSION/pluglet-api` in the user's data folder) holds
/// the Rust SDK of this host's version, the crate `pluglet-api`, and returns the folder. A Rust
/// plugin depends on it with `pluglet-api = { version = "...", path = "DIR" }`.
///
/// Each file is replaced whole, not the folder at once: a build that runs while a different
/// SDK is written over the folder may fail, and succeeds once run again.
pub fn sdk_dir(dir: Option<PathBuf>) -> Result<PathBuf, String> {
    let dir = dir.map_or_else(|| default_dir("pluglet-api"), Ok)?;
    write_files(&dir, plugin_api::SDK_SOURCE.iter().copied())?;
    Ok(dir)
}
