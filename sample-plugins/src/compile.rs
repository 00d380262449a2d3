//! Compiles one C or C++ source file, or one Go package, into a shared library, for build
//! scripts. Shared by this crate's build script (the C, C++ and Go samples) and the tests' (the
//! C and Go fixtures).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The platform's file name for a shared library called `name` (`libname.so` on Linux).
pub fn library_file_name(name: &str) -> String {
    format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The workspace's `include/` folder, holding `plugin_api.h`.
pub fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../include")
}

/// `compiler` with the flags every C and C++ file of the workspace is held to: C11 (or C++17
/// when `cpp`), every warning an error, and `include/` on the include path.
pub fn strict(mut compiler: Command, cpp: bool) -> Command {
    compiler
        .arg(if cpp { "-std=c++17" } else { "-std=c11" })
        .args(["-Wall", "-Wextra", "-Wpedantic", "-Werror", "-I"])
        .arg(include_dir());
    compiler
}

/// Compiles `source` (C11, or C++17 for `.cpp`) with every warning as an error into the shared
/// library `out_dir/<lib name>`, with `include/` on the include path and `defines` passed as
/// `-D` options (`NAME` or `NAME=VALUE`), and returns its path.
/// Must run in a build script (it reads cargo's target settings); panics with the compiler's
/// output on failure, which fails the build.
pub fn shared_library(source: &Path, out_dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    let cpp = source.extension().is_some_and(|e| e == "cpp");
    let compiler = cc::Build::new()
        .cpp(cpp)
        .cargo_metadata(false)
        .get_compiler();
    let out = out_dir.join(library_file_name(name));
    let mut command = strict(compiler.to_command(), cpp);
    command
        .args(["-shared", "-fPIC"])
        .args(defines.iter().map(|d| format!("-D{d}")))
        .arg("-o")
        .arg(&out)
        .arg(source);
    let shown = format!(
        "{:?} {:?}",
        command.get_program(),
        command.get_args().collect::<Vec<_>>()
    );
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {shown}: {e}"));
    if !output.status.success() {
        panic!(
            "compiling {} failed: {shown}\n{}{}",
            source.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    println!("cargo:rerun-if-changed={}", source.display());
    out
}

/// Builds the Go package in `package` (a folder with `go.mod`) with `go build
/// -buildmode=c-shared` into the shared library `out_dir/<lib name>`, offline, with the
/// installed toolchain and `include/` on cgo's include path, and returns its path; or `None`,
/// with a cargo warning saying what is skipped, when `go` is not on the PATH.
/// Must run in a build script; panics with go's output on failure, which fails the build.
pub fn go_shared_library(package: &Path, out_dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(package).expect("the Go package's folder") {
        let path = entry.expect("a folder entry").path();
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let library = out_dir.join(library_file_name(name));
    let mut command = Command::new("go");
    command
        .current_dir(package)
        .args(["build", "-buildmode=c-shared", "-buildvcs=false", "-o"])
        .arg(&library)
        .arg(".")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "1")
        .env(
            "CGO_CFLAGS",
            format!("-g -O2 -Wall -Werror -I{}", include_dir().display()),
        );
    if ["GOCACHE", "XDG_CACHE_HOME", "HOME"]
        .iter()
        .all(|v| std::env::var_os(v).is_none())
    {
        command.env("GOCACHE", out_dir.join("go-cache"));
    }
    match command.output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "cargo:warning=no `go` on the PATH: the Go plugin {name} is not built, and its \
                 tests are skipped (they fail when CI is set)"
            );
            None
        }
        Err(e) => panic!("cannot run go: {e}"),
        Ok(output) if !output.status.success() => panic!(
            "building the Go plugin {} failed: {command:?}\n{}{}",
            package.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Ok(_) => Some(library),
    }
}
