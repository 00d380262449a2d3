//! The C plugin shown in README.md compiles with the documented command, loads and serves.

use crate::util::{run, scratch};
use plugin_host::{Factory, Registry, Request};
use std::path::Path;
use std::process::Command;

#[test]
fn the_readme_c_plugin_builds_loads_and_answers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme.find("```c\n").expect("README has a C block") + 5;
    let source = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = scratch("readme-c");
    std::fs::write(dir.join("hello.c"), source).unwrap();
    let library = dir.join(sample_plugins::compile::library_file_name("hello_c"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    run(sample_plugins::compile::strict(Command::new(cc), false)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(dir.join("hello.c")));
    let factory = Factory::load(&library).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((factory.name(), factory.version()), ("hello-c", "1.0.0"));
    let registry = Registry::new();
    registry
        .register(factory.create("hello-c", &serde_json::json!({})).unwrap())
        .unwrap();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let response = registry
        .router()
        .unwrap()
        .dispatch(&Request::new("GET", "/hello-c"))
        .unwrap();
    assert_eq!(response.body, b"hello from C");
}
