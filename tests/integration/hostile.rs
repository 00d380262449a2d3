//! The hostile-file corpus: every file that must be refused, each with its own test asserting
//! the error kind and that the message names the file. Most are refused from the bytes alone,
//! before `dlopen` runs any of their code.

use crate::util::{assert_error, fixture, samples, scratch};
use plugin_api::abi::PLUGIN_ABI_MINOR;
use plugin_host::{ErrorKind, Factory, LoadOptions};
use std::path::{Path, PathBuf};

fn refused(path: &Path) -> plugin_host::Error {
    match Factory::load(path) {
        Ok(factory) => panic!("{} loaded as `{}`", path.display(), factory.name()),
        Err(error) => error,
    }
}

/// A copy of the C greeter sample, to mutilate.
fn greeter_copy(name: &str) -> PathBuf {
    let path = scratch(name).join(sample_plugins::compile::library_file_name(name));
    std::fs::copy(&samples().greeter, &path).unwrap();
    path
}

#[test]
fn an_empty_file_is_refused() {
    let path = scratch("empty").join("libempty.so");
    std::fs::write(&path, b"").unwrap();
    assert_error(
        &refused(&path),
        &path,
        |k| matches!(k, ErrorKind::NotAnObject { reason } if reason.contains("empty")),
    );
}

#[test]
fn random_bytes_are_refused() {
    let path = scratch("random").join("librandom.so");
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..65_536)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&path, bytes).unwrap();
    assert_error(&refused(&path), &path, |k| {
        matches!(k, ErrorKind::NotAnObject { .. })
    });
}

#[test]
fn a_text_file_is_refused() {
    let path = scratch("text").join("libtext.so");
    std::fs::write(&path, "this is text, not a library").unwrap();
    assert_error(&refused(&path), &path, |k| {
        matches!(k, ErrorKind::NotAnObject { .. })
    });
}

#[test]
fn a_truncated_elf_is_refused() {
    let path = greeter_copy("truncated");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len().min(1024)]).unwrap();
    assert_error(&refused(&path), &path, |k| {
        matches!(k, ErrorKind::NotAnObject { .. })
    });
}

#[test]
fn an_elf_for_another_architecture_is_refused() {
    let path = greeter_copy("other-arch");
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        &bytes[..4],
        b"\x7fELF",
        "the samples are ELF on this platform"
    );
    // e_machine, at offset 18: pick an architecture that is not the host's.
    let (other, patched): (u16, &str) = if cfg!(target_arch = "aarch64") {
        (62, "X86_64")
    } else {
        (183, "Aarch64")
    };
    bytes[18..20].copy_from_slice(&other.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    assert_error(
        &refused(&path),
        &path,
        |k| matches!(k, ErrorKind::WrongArchitecture { found, .. } if found.contains(patched)),
    );
}

#[test]
fn a_library_without_plugin_factory_is_refused_before_loading() {
    let path = fixture!("FIXTURE_NO_FACTORY");
    assert_error(&refused(&path), &path, |k| {
        matches!(k, ErrorKind::SymbolMissing)
    });
}

#[test]
fn an_abi_mark_with_bad_magic_is_refused_before_loading() {
    let path = fixture!("FIXTURE_BAD_MAGIC");
    assert_error(&refused(&path), &path, |k| {
        matches!(k, ErrorKind::BadMagic { found: 0xDEAD_BEEF })
    });
}

#[test]
fn an_abi_mark_with_another_major_is_refused_before_loading() {
    let path = fixture!("FIXTURE_MAJOR");
    assert_error(&refused(&path), &path, |k| {
        matches!(k, ErrorKind::AbiMajorMismatch { plugin: 2, host: 1 })
    });
}

#[test]
fn an_abi_mark_with_a_newer_minor_is_refused_before_loading() {
    let path = fixture!("FIXTURE_MINOR");
    assert_error(&refused(&path), &path, |k| {
        matches!(k, ErrorKind::AbiMinorTooNew { plugin, host }
            if *plugin == PLUGIN_ABI_MINOR + 1 && *host == PLUGIN_ABI_MINOR)
    });
}

#[test]
fn without_a_mark_the_descriptor_is_checked_after_loading() {
    let unmarked = Factory::load(fixture!("FIXTURE_UNMARKED")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(unmarked.inspection().unwrap().abi_mark, None);
    let path = fixture!("FIXTURE_UNMARKED_BAD_MAGIC");
    assert_error(&refused(&path), &path, |k| {
        matches!(k, ErrorKind::BadMagic { found: 0xDEAD_BEEF })
    });
    let path = fixture!("FIXTURE_UNMARKED_MAJOR");
    assert_error(&refused(&path), &path, |k| {
        matches!(k, ErrorKind::AbiMajorMismatch { plugin: 2, .. })
    });
    let path = fixture!("FIXTURE_UNMARKED_MINOR");
    assert_error(&refused(&path), &path, |k| {
        matches!(k, ErrorKind::AbiMinorTooNew { plugin, .. }
            if *plugin == PLUGIN_ABI_MINOR + 1)
    });
}

#[test]
fn a_directory_named_like_a_library_is_refused() {
    let path = scratch("directory").join("libdirectory.so");
    std::fs::create_dir(&path).unwrap();
    assert_error(&refused(&path), &path, |k| {
        matches!(
            k,
            ErrorKind::NotAFile {
                what: "a directory"
            }
        )
    });
}

#[test]
fn a_symlink_loop_is_refused() {
    let dir = scratch("loop");
    let (a, b) = (dir.join("liba.so"), dir.join("libb.so"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let error = refused(&a);
    assert_error(&error, &a, |k| matches!(k, ErrorKind::Unreadable { .. }));
    assert!(error.to_string().contains("symbolic links"), "{error}");
}

#[test]
fn a_missing_file_is_refused() {
    let path = scratch("missing").join("libmissing.so");
    assert_error(
        &refused(&path),
        &path,
        |k| matches!(k, ErrorKind::Unreadable { source } if source.kind() == std::io::ErrorKind::NotFound),
    );
}

#[test]
fn a_non_utf8_file_name_is_handled() {
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch("non-utf8");
    let name = std::ffi::OsStr::from_bytes(b"lib\xff\xfe.so");
    // A good plugin under such a name loads.
    let good = dir.join(name);
    std::fs::copy(&samples().greeter, &good).unwrap();
    let factory = Factory::load(&good).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(factory.name(), "greeter");
    // A bad one is refused, and the message shows the name (lossily).
    let bad = dir.join(std::ffi::OsStr::from_bytes(b"lib\xff\xfd.so"));
    std::fs::write(&bad, b"").unwrap();
    assert_error(&refused(&bad), &bad, |k| {
        matches!(k, ErrorKind::NotAnObject { .. })
    });
}

#[test]
fn a_file_deleted_between_discovery_and_loading_is_refused() {
    let dir = scratch("deleted");
    let path = dir.join("libgone.so");
    std::fs::copy(&samples().greeter, &path).unwrap();
    let entries = plugin_host::config::scan_dir(&dir).unwrap();
    assert_eq!(entries.len(), 1);
    std::fs::remove_file(&path).unwrap();
    let error = plugin_host::config::deploy(&entries, false)
        .err()
        .expect("refused");
    assert_error(&error, &path, |k| matches!(k, ErrorKind::Unreadable { .. }));
}

#[test]
fn a_sha256_mismatch_is_refused_with_both_hashes() {
    let path = &samples().greeter;
    let actual = plugin_host::sha256_hex(&std::fs::read(path).unwrap());
    let pinned = "0".repeat(64);
    let options = LoadOptions {
        sha256: Some(pinned.clone()),
        ..LoadOptions::default()
    };
    let error = Factory::load_with(path, &options).err().expect("refused");
    assert_error(&error, path, |k| {
        matches!(k, ErrorKind::ChecksumMismatch { .. })
    });
    let message = error.to_string();
    assert!(
        message.contains(&pinned) && message.contains(&actual),
        "{message}"
    );
    // The right pin loads (from a private copy of the verified bytes).
    let options = LoadOptions {
        sha256: Some(actual.to_uppercase()),
        ..LoadOptions::default()
    };
    let factory = Factory::load_with(path, &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(factory.file(), Some(path.as_path()));
}

#[test]
fn a_world_writable_file_is_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let path = greeter_copy("world-writable");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let error = refused(&path);
    assert_error(
        &error,
        &path,
        |k| matches!(k, ErrorKind::InsecurePermissions { reason, .. } if reason.contains("666")),
    );
    assert!(
        error.to_string().contains("--allow-insecure-permissions"),
        "{error}"
    );
    let options = LoadOptions {
        allow_insecure_permissions: true,
        ..LoadOptions::default()
    };
    Factory::load_with(&path, &options).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_group_writable_folder_above_the_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let path = greeter_copy("group-writable");
    let folder = path.parent().unwrap();
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o775)).unwrap();
    let error = refused(&path);
    assert_error(
        &error,
        &path,
        |k| matches!(k, ErrorKind::InsecurePermissions { path, .. } if path == folder),
    );
}

#[test]
fn a_library_failing_inspection_never_runs_its_code() {
    let marker = PathBuf::from(env!("CONSTRUCTOR_REFUSED_MARKER"));
    let _ = std::fs::remove_file(&marker);
    let path = fixture!("CONSTRUCTOR_REFUSED");
    assert_error(&refused(&path), &path, |k| {
        matches!(k, ErrorKind::AbiMajorMismatch { plugin: 2, .. })
    });
    assert!(!marker.exists(), "the refused library's initialiser ran");
    // The control: the same library with a good mark does run its initialiser when loaded.
    let marker = PathBuf::from(env!("CONSTRUCTOR_LOADED_MARKER"));
    let _ = std::fs::remove_file(&marker);
    Factory::load(fixture!("CONSTRUCTOR_LOADED")).unwrap_or_else(|e| panic!("{e}"));
    assert!(marker.exists(), "the control's initialiser did not run");
}

#[test]
fn a_descriptor_with_a_null_name_pointer_is_refused() {
    let path = fixture!("FIXTURE_NULL_NAME");
    assert_error(
        &refused(&path),
        &path,
        |k| matches!(k, ErrorKind::InvalidName { reason } if reason.contains("NULL")),
    );
}

#[test]
fn a_descriptor_with_an_absurd_name_length_is_refused_without_reading_it() {
    let path = fixture!("FIXTURE_HUGE_NAME");
    assert_error(
        &refused(&path),
        &path,
        |k| matches!(k, ErrorKind::InvalidName { reason } if reason.contains("more than the 128")),
    );
}

#[test]
fn a_descriptor_with_a_non_zero_reserved_field_is_refused() {
    let path = fixture!("FIXTURE_RESERVED");
    assert_error(
        &refused(&path),
        &path,
        |k| matches!(k, ErrorKind::InvalidDescriptor { reason } if reason.contains("reserved")),
    );
}

#[test]
fn a_descriptor_without_destroy_is_refused() {
    let path = fixture!("FIXTURE_NULL_DESTROY");
    assert_error(
        &refused(&path),
        &path,
        |k| matches!(k, ErrorKind::InvalidDescriptor { reason } if reason.contains("destroy")),
    );
}
