//! Loading: every sample loads, and every bad descriptor is a clear error naming the file.
//! (Files that are bad before any code runs are in `hostile`.)

use crate::util::{assert_error, faulty, fixture, samples};
use plugin_api::abi::PLUGIN_ABI_MINOR;
use plugin_host::{ErrorKind, Factory};
use serde_json::json;

#[test]
fn every_sample_loads_with_its_name_and_version() {
    let s = samples();
    for (path, name, version) in [
        (&s.hello, "hello", "0.1.0"),
        (&s.counter, "counter", "0.1.0"),
        (&s.greeter, "greeter", "1.0.0"),
        (&s.wordcount, "wordcount", "1.0.0"),
    ] {
        let factory = Factory::load(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(factory.name(), name);
        assert_eq!(factory.version(), version);
        assert_eq!(factory.file(), Some(path.as_path()));
    }
}

#[test]
fn a_library_without_plugin_factory_is_refused() {
    let path = fixture!("FIXTURE_NO_FACTORY");
    let error = Factory::load(&path).err().expect("refused");
    assert_error(&error, &path, |k| matches!(k, ErrorKind::SymbolMissing));
    assert!(error.to_string().contains("plugin_factory"), "{error}");
}

#[test]
fn a_factory_returning_null_is_refused_with_its_reason() {
    let path = fixture!("FIXTURE_REFUSE");
    let error = Factory::load(&path).err().expect("refused");
    assert_error(
        &error,
        &path,
        |k| matches!(k, ErrorKind::FactoryRefused { reason } if reason == "this host is not supported"),
    );
}

#[test]
fn wrong_magic_is_refused() {
    let path = fixture!("FIXTURE_BAD_MAGIC");
    let error = Factory::load(&path).err().expect("refused");
    assert_error(&error, &path, |k| {
        matches!(k, ErrorKind::BadMagic { found: 0xDEAD_BEEF })
    });
}

#[test]
fn another_abi_major_is_refused() {
    let path = fixture!("FIXTURE_MAJOR");
    let error = Factory::load(&path).err().expect("refused");
    assert_error(&error, &path, |k| {
        matches!(k, ErrorKind::AbiMajorMismatch { plugin: 2, host: 1 })
    });
}

#[test]
fn a_newer_abi_minor_is_refused() {
    let path = fixture!("FIXTURE_MINOR");
    let error = Factory::load(&path).err().expect("refused");
    assert_error(&error, &path, |k| {
        matches!(k, ErrorKind::AbiMinorTooNew { plugin, host }
            if *plugin == PLUGIN_ABI_MINOR + 1 && *host == PLUGIN_ABI_MINOR)
    });
}

#[test]
fn an_empty_name_is_refused() {
    let path = fixture!("FIXTURE_EMPTY_NAME");
    let error = Factory::load(&path).err().expect("refused");
    assert_error(
        &error,
        &path,
        |k| matches!(k, ErrorKind::InvalidName { reason } if reason.contains("empty")),
    );
}

#[test]
fn a_name_that_is_not_utf8_is_refused() {
    let path = fixture!("FIXTURE_BAD_UTF8_NAME");
    let error = Factory::load(&path).err().expect("refused");
    assert_error(
        &error,
        &path,
        |k| matches!(k, ErrorKind::InvalidName { reason } if reason.contains("UTF-8")),
    );
}

#[test]
fn a_name_with_a_line_separator_is_refused() {
    let path = fixture!("FIXTURE_LINE_SEPARATOR_NAME");
    let error = Factory::load(&path).err().expect("refused");
    assert_error(&error, &path, |k| {
        matches!(k, ErrorKind::InvalidName { reason } if reason.contains("\\u{2028}")
            && reason.contains("Unicode line or direction marks"))
    });
}

#[test]
fn a_descriptor_without_create_is_refused() {
    let path = fixture!("FIXTURE_NULL_CREATE");
    let error = Factory::load(&path).err().expect("refused");
    assert_error(
        &error,
        &path,
        |k| matches!(k, ErrorKind::InvalidDescriptor { reason } if reason.contains("create")),
    );
}

#[test]
fn a_valid_c_fixture_loads() {
    let factory = Factory::load(fixture!("FIXTURE_VALID")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(factory.name(), "fixture");
}

#[test]
fn a_bad_configuration_is_an_error_at_create() {
    let path = &samples().counter;
    let factory = Factory::load(path).unwrap();
    let error = factory
        .create("counter", &json!({ "step": "one" }))
        .err()
        .expect("refused");
    assert_error(
        &error,
        path,
        |k| matches!(k, ErrorKind::CreateFailed { reason } if reason.contains("invalid configuration")),
    );
    assert!(error.to_string().contains("`counter`"), "{error}");
}

#[test]
fn a_panic_in_create_is_reported_not_unwound() {
    let path = faulty();
    let factory = Factory::load(path).unwrap();
    let error = factory
        .create("faulty", &json!({ "panic_in": "create" }))
        .err()
        .expect("refused");
    assert_error(&error, path, |k| {
        matches!(k, ErrorKind::Panicked { call, message }
            if call == "create" && message.contains("deliberate panic in create"))
    });
}

#[test]
fn a_panic_in_start_is_reported_and_the_instance_is_failed() {
    let path = faulty();
    let instance = Factory::load(path)
        .unwrap()
        .create("faulty", &json!({ "panic_in": "start" }))
        .unwrap();
    let error = instance.start().expect_err("start fails");
    assert_error(
        &error,
        path,
        |k| matches!(k, ErrorKind::Panicked { call, .. } if call == "start"),
    );
    assert_eq!(instance.state(), plugin_host::State::Failed);
}

/// Builds `package` of the workspace `tests/fixtures/WORKSPACE` and returns its library.
fn build_fixture(workspace: &str, package: &str) -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(workspace)
        .join("Cargo.toml");
    sample_plugins::build_rust_plugins_in(&manifest, &[package])
        .remove(package)
        .expect("built")
}

#[test]
fn a_rust_plugin_built_against_an_incompatible_plugin_api_is_refused() {
    let path = &build_fixture("skewed-api", "skewed-hello");
    let error = Factory::load(path).err().expect("refused");
    assert_error(&error, path, |k| {
        matches!(k, ErrorKind::LayoutMismatch { details }
            if details.contains("0.2.0") && details.contains("0.1.0"))
    });
}

#[test]
fn a_rust_plugin_of_an_older_minor_built_against_an_incompatible_plugin_api_is_refused() {
    // The 1.0 SDK numbered 0.2.0: the plugin declares ABI 1.0 and its descriptor has the 1.0
    // fields, a prefix of the host's, but from an incompatible pluglet-api.
    let path = &build_fixture("skewed-api/minor-0", "skewed-hello-minor-0");
    let error = Factory::load(path).err().expect("refused");
    assert_error(&error, path, |k| {
        matches!(k, ErrorKind::LayoutMismatch { details }
            if details.starts_with("the plugin declares ABI 1.0, whose descriptor must be the start of the host's")
                && details.contains("field_name:header")
                && details.contains("0.2.0") && details.contains("0.1.0"))
    });
}
