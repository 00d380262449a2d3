//! The committed C header, `include/plugin_api.h`, is exactly what cbindgen generates from
//! this crate. This test lives here, not with the integration tests, so that refreshing the
//! header never needs the samples (which are compiled against it) to build.

use std::path::Path;

#[test]
fn header_is_fresh() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.parent().expect("plugin-api is in the workspace");
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::generate_with_config(crate_dir, config)
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = root.join("include/plugin_api.h");
    if std::env::var_os("UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/plugin_api.h");
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/plugin_api.h is stale: refresh it with\n    \
         UPDATE_HEADER=1 cargo test -p pluglet-api --test header\n\
         and commit the result"
    );
}
