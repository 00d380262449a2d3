//! `plugin-host new` and `plugin-host include-dir`: what an author outside this repository needs
//! to start a plugin: a project that builds and passes `check` as it is, and the C header on
//! disk where a build finds it.

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

/// A template file: where it goes in the project, and its text with `{{name}}`, `{{lib}}` and
/// `{{api_version}}` to fill in.
type File = (&'static str, &'static str);

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
/// empty, and returns the files written.
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
    let mut written = Vec::new();
    for (to, text) in template(lang) {
        let text = text
            .replace("{{name}}", name)
            .replace("{{lib}}", &lib)
            .replace("{{api_version}}", plugin_api::VERSION);
        let path = dir.join(to);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
            std::fs::write(&path, text)
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The folder `include-dir` writes the header to by default: one per host version under the
/// user's data folder (`$XDG_DATA_HOME`, or `~/.local/share`).
fn default_include_dir() -> Result<PathBuf, String> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/share")))
        .ok_or("neither XDG_DATA_HOME nor HOME is set: give the folder to write to")?;
    Ok(data
        .join("pluglet")
        .join(env!("CARGO_PKG_VERSION"))
        .join("include"))
}

/// Makes sure `dir` (by default the user's data folder) holds this host's `plugin_api.h`, and
/// returns the folder. The file is replaced whole (written aside, then renamed), so that builds
/// running at the same time never read half a header.
pub fn include_dir(dir: Option<PathBuf>) -> Result<PathBuf, String> {
    let dir = match dir {
        Some(dir) => dir,
        None => default_include_dir()?,
    };
    let header = dir.join("plugin_api.h");
    if std::fs::read(&header).is_ok_and(|text| text == plugin_api::C_HEADER.as_bytes()) {
        return Ok(dir);
    }
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let mut aside = tempfile::NamedTempFile::new_in(&dir)?;
        std::io::Write::write_all(&mut aside, plugin_api::C_HEADER.as_bytes())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Readable by every build, like any installed header (a temporary file is 0600).
            aside
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        aside.persist(&header)?;
        Ok(())
    };
    write().map_err(|e| format!("cannot write {}: {e}", header.display()))?;
    Ok(dir)
}
