//! The copy of this crate that `SDK_SOURCE` carries is this crate: its manifest,
//! `Cargo.standalone.toml`, names the same crate, version and dependencies (with the versions and
//! features the workspace gives them), and the list holds every source file, each under its own
//! path. Without these checks the copy would drift the first time a dependency is bumped.

use plugin_api::SDK_SOURCE;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read_toml(path: &Path) -> Table {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The workspace's manifest, this crate's, and the copy's.
fn manifests() -> (Table, Table, Table) {
    let workspace = crate_dir()
        .parent()
        .expect("plugin-api is in the workspace")
        .join("Cargo.toml");
    (
        read_toml(&workspace),
        read_toml(&crate_dir().join("Cargo.toml")),
        read_toml(&crate_dir().join("Cargo.standalone.toml")),
    )
}

/// `table[key]` as a table (a missing one is empty).
fn table<'a>(table: &'a Table, key: &str) -> &'a Table {
    static EMPTY: std::sync::LazyLock<Table> = std::sync::LazyLock::new(Table::new);
    match table.get(key) {
        Some(Value::Table(t)) => t,
        None => &EMPTY,
        Some(other) => panic!("`{key}` is not a table: {other}"),
    }
}

/// Whether a manifest value is `{ workspace = true }`, that is, inherited.
fn inherited(value: &Value) -> bool {
    value.get("workspace").and_then(Value::as_bool) == Some(true)
}

/// A dependency as a table: `"1"` is `{ version = "1" }`.
fn dependency(value: &Value) -> Table {
    match value {
        Value::String(_) => Table::from_iter([("version".to_owned(), value.clone())]),
        Value::Table(t) => t.clone(),
        other => panic!("not a dependency: {other}"),
    }
}

#[test]
fn the_standalone_manifest_names_this_crate_at_the_workspace_version() {
    let (workspace, own, copy) = manifests();
    let shared = table(table(&workspace, "workspace"), "package");
    let (own_package, copy_package) = (table(&own, "package"), table(&copy, "package"));
    for key in [
        "name",
        "description",
        "version",
        "edition",
        "rust-version",
        "license",
        "repository",
    ] {
        let expected = match own_package.get(key) {
            Some(value) if inherited(value) => shared.get(key),
            value => value,
        };
        assert!(expected.is_some(), "plugin-api has no package.{key}");
        assert_eq!(
            copy_package.get(key),
            expected,
            "package.{key} of plugin-api/Cargo.standalone.toml differs from plugin-api's: \
             make them agree"
        );
    }
    assert_eq!(
        table(&copy, "lib"),
        table(&own, "lib"),
        "[lib] of plugin-api/Cargo.standalone.toml differs from plugin-api's"
    );
    // The same tables, but no [workspace] (the copy lives in its author's project) and no
    // dev-dependencies (the copy has no tests).
    let own_tables: BTreeSet<_> = own
        .keys()
        .filter(|key| *key != "dev-dependencies")
        .collect();
    assert_eq!(
        copy.keys().collect::<BTreeSet<_>>(),
        own_tables,
        "plugin-api/Cargo.standalone.toml has other tables than plugin-api/Cargo.toml"
    );
}

#[test]
fn the_standalone_dependencies_are_the_workspace_ones() {
    let (workspace, own, copy) = manifests();
    let shared = table(table(&workspace, "workspace"), "dependencies");
    let copied = table(&copy, "dependencies");
    let mut expected = Table::new();
    for (name, value) in table(&own, "dependencies") {
        let mut resolved = if inherited(value) {
            let mut from_workspace = dependency(&shared[name]);
            // A copy has no repository around it.
            from_workspace.remove("path");
            from_workspace
        } else {
            dependency(value)
        };
        // Keys the crate adds to an inherited dependency (`features` extend the workspace's).
        for (key, extra) in dependency(value) {
            match (key.as_str(), resolved.get_mut(&key), extra) {
                ("workspace", ..) => {}
                ("features", Some(Value::Array(features)), Value::Array(more)) => {
                    features.extend(more);
                }
                (_, _, extra) => {
                    resolved.insert(key, extra);
                }
            }
        }
        expected.insert(name.clone(), Value::Table(resolved));
    }
    let copied: Table = copied
        .iter()
        .map(|(name, value)| (name.clone(), Value::Table(dependency(value))))
        .collect();
    assert_eq!(
        copied, expected,
        "the [dependencies] of plugin-api/Cargo.standalone.toml differ from what plugin-api gets \
         from the workspace's Cargo.toml: copy the versions and features over"
    );
}

/// Every file below `dir`, as paths relative to `base` with `/` between names.
fn files_below(base: &Path, dir: &Path, into: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path: PathBuf = entry.unwrap().path();
        if path.is_dir() {
            files_below(base, &path, into);
        } else {
            let relative = path.strip_prefix(base).unwrap();
            into.insert(relative.to_str().unwrap().replace('\\', "/"));
        }
    }
}

#[test]
fn sdk_source_holds_every_file_of_the_crate_under_its_own_path() {
    let mut expected = BTreeSet::from([
        "Cargo.toml".to_owned(),
        "Cargo.standalone.toml".to_owned(),
        "plugin_api.h".to_owned(),
    ]);
    files_below(crate_dir(), &crate_dir().join("src"), &mut expected);
    let listed: BTreeSet<String> = SDK_SOURCE
        .iter()
        .map(|(path, _)| path.to_string())
        .collect();
    assert_eq!(
        listed, expected,
        "plugin_api::SDK_SOURCE in plugin-api/src/lib.rs does not list the crate's files"
    );
    assert_eq!(listed.len(), SDK_SOURCE.len(), "a file is listed twice");
    for (path, text) in SDK_SOURCE {
        let on_disk = match *path {
            "Cargo.toml" => "Cargo.standalone.toml",
            path => path,
        };
        let file = std::fs::read_to_string(crate_dir().join(on_disk)).unwrap();
        assert!(
            file == *text,
            "SDK_SOURCE's {path} is not the text of plugin-api/{on_disk}"
        );
    }
}
