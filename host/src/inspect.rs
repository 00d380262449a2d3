//! Inspecting a plugin file before loading it: loading runs the library's initialisers, so every
//! check that can be made on the bytes is made first, with the `object` crate.

use crate::error::ErrorKind;
use object::{Object, ObjectKind, ObjectSection};
use plugin_api::abi::{
    PLUGIN_ABI_MAGIC, PLUGIN_ABI_MAJOR, PLUGIN_ABI_MARK_SYMBOL, PLUGIN_ABI_MINOR,
    PLUGIN_FACTORY_SYMBOL, PluginAbiMark,
};

/// What the host learnt from a plugin file without loading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The file format (`ELF`, `Mach-O`, `PE`).
    pub format: &'static str,
    /// The architecture, as the `object` crate names it (`X86_64`, `Aarch64`, ...).
    pub architecture: String,
    /// The ABI version from the file's `plugin_abi_mark`, if it has one.
    pub abi_mark: Option<(u16, u16)>,
}

/// The architecture this host runs on, and whether it is 64-bit.
fn host_architecture() -> (object::Architecture, bool) {
    use object::Architecture as A;
    let arch = if cfg!(target_arch = "x86_64") {
        A::X86_64
    } else if cfg!(target_arch = "aarch64") {
        A::Aarch64
    } else if cfg!(target_arch = "x86") {
        A::I386
    } else if cfg!(target_arch = "arm") {
        A::Arm
    } else if cfg!(target_arch = "riscv64") {
        A::Riscv64
    } else if cfg!(target_arch = "powerpc64") {
        A::PowerPc64
    } else if cfg!(target_arch = "s390x") {
        A::S390x
    } else {
        A::Unknown
    };
    (arch, cfg!(target_pointer_width = "64"))
}

/// A symbol name as the file spells it (Mach-O prefixes C names with `_`).
fn matches(symbol: &[u8], name: &str) -> bool {
    symbol == name.as_bytes()
        || symbol
            .strip_prefix(b"_")
            .is_some_and(|s| s == name.as_bytes())
}

/// Checks `bytes`: a shared library for this host's architecture and bit width, exporting
/// `plugin_factory`, and, if it carries an ABI mark, one this host accepts.
pub(crate) fn inspect(bytes: &[u8]) -> Result<Inspection, ErrorKind> {
    if bytes.is_empty() {
        return Err(ErrorKind::NotAnObject {
            reason: "the file is empty".to_owned(),
        });
    }
    if bytes.starts_with(b"#!") {
        return Err(ErrorKind::NotAnObject {
            reason: "it is a script (it starts with `#!`): give a plugin program as `exec` (or \
                     `command`, for a name on PATH) instead of `path`"
                .to_owned(),
        });
    }
    let file = object::File::parse(bytes).map_err(|e| ErrorKind::NotAnObject {
        reason: e.to_string(),
    })?;
    let format = match file.format() {
        object::BinaryFormat::Elf => "ELF",
        object::BinaryFormat::MachO => "Mach-O",
        object::BinaryFormat::Pe => "PE",
        _ => "an unsupported format",
    };
    if file.kind() != ObjectKind::Dynamic {
        return Err(ErrorKind::NotSharedLibrary {
            kind: format!("{:?}", file.kind()),
        });
    }
    let (arch, is_64) = host_architecture();
    if file.architecture() != arch || file.is_64() != is_64 {
        return Err(ErrorKind::WrongArchitecture {
            found: format!(
                "{:?} ({}-bit)",
                file.architecture(),
                if file.is_64() { 64 } else { 32 }
            ),
            expected: format!("{arch:?} ({}-bit)", if is_64 { 64 } else { 32 }),
        });
    }
    let exports = file.exports().map_err(|e| ErrorKind::NotAnObject {
        reason: format!("its exported symbols cannot be read: {e}"),
    })?;
    let exported = |name: &str| {
        exports
            .iter()
            .find(|e| matches(e.name(), name))
            .map(object::Export::address)
    };
    if exported(PLUGIN_FACTORY_SYMBOL).is_none() {
        return Err(ErrorKind::SymbolMissing);
    }
    let abi_mark = match exported(PLUGIN_ABI_MARK_SYMBOL) {
        None => None,
        Some(address) => Some(read_mark(&file, address)?),
    };
    if let Some(mark) = abi_mark {
        check_version(mark.magic, mark.abi_major, mark.abi_minor)?;
    }
    Ok(Inspection {
        format,
        architecture: format!("{:?}", file.architecture()),
        abi_mark: abi_mark.map(|m| (m.abi_major, m.abi_minor)),
    })
}

/// Whether `bytes` are a Go library (a `c-shared` build), which carries Go's runtime: a second
/// one cannot start in a process where one runs. Told by the section the Go linker writes its
/// build information to (`.go.buildinfo`, `__go_buildinfo` in Mach-O), or, failing that, a
/// `_cgo_` function among its exports. `false` for what cannot be parsed.
pub(crate) fn go_runtime(bytes: &[u8]) -> bool {
    let Ok(file) = object::File::parse(bytes) else {
        return false;
    };
    let build_info = [".go.buildinfo", "__go_buildinfo"];
    build_info
        .iter()
        .any(|name| file.section_by_name(name).is_some())
        || file.exports().is_ok_and(|exports| {
            exports
                .iter()
                .any(|e| e.name().starts_with(b"_cgo_") || e.name().starts_with(b"__cgo_"))
        })
}

/// Reads the `PluginAbiMark` at `address` from the section that holds it.
fn read_mark(file: &object::File<'_>, address: u64) -> Result<PluginAbiMark, ErrorKind> {
    let unreadable = |why: &str| ErrorKind::NotAnObject {
        reason: format!("its `{PLUGIN_ABI_MARK_SYMBOL}` symbol {why}"),
    };
    let section = file
        .sections()
        .find(|s| {
            s.address()
                .checked_add(s.size())
                .is_some_and(|end| (s.address()..end).contains(&address))
        })
        .ok_or_else(|| unreadable("is in no section"))?;
    let data = section
        .data()
        .map_err(|_| unreadable("is in an unreadable section"))?;
    let offset =
        usize::try_from(address - section.address()).map_err(|_| unreadable("is out of range"))?;
    let raw = data
        .get(offset..offset.saturating_add(size_of::<PluginAbiMark>()))
        .ok_or_else(|| unreadable("is truncated"))?;
    let little = file.is_little_endian();
    let u16_at = |i: usize| {
        let b = [raw[i], raw[i + 1]];
        if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    let magic = [raw[0], raw[1], raw[2], raw[3]];
    Ok(PluginAbiMark {
        magic: if little {
            u32::from_le_bytes(magic)
        } else {
            u32::from_be_bytes(magic)
        },
        abi_major: u16_at(4),
        abi_minor: u16_at(6),
    })
}

/// The version rules, shared by the ABI mark (before loading) and the descriptor (after).
pub(crate) fn check_version(magic: u32, major: u16, minor: u16) -> Result<(), ErrorKind> {
    if magic != PLUGIN_ABI_MAGIC {
        return Err(ErrorKind::BadMagic { found: magic });
    }
    if major != PLUGIN_ABI_MAJOR {
        return Err(ErrorKind::AbiMajorMismatch {
            plugin: major,
            host: PLUGIN_ABI_MAJOR,
        });
    }
    if minor > PLUGIN_ABI_MINOR {
        return Err(ErrorKind::AbiMinorTooNew {
            plugin: minor,
            host: PLUGIN_ABI_MINOR,
        });
    }
    Ok(())
}
