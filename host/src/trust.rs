//! Whether a plugin file may be trusted before it is loaded: its permissions (the rule of
//! OpenSSH's StrictModes) and, when the configuration pins one, its SHA-256.

use crate::error::ErrorKind;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The absolute path of `path` with every symbolic link resolved: what is checked, read and
/// loaded, so that `dlopen` never searches the library path for a bare file name and a link
/// swapped after the checks changes nothing.
pub(crate) fn resolve(path: &Path) -> Result<PathBuf, ErrorKind> {
    std::fs::canonicalize(path).map_err(|source| ErrorKind::Unreadable { source })
}

/// Refuses a file that someone other than its owner and root could have written: the file, or
/// any folder above it, writable by group or others (except a root-owned folder with the sticky
/// bit, such as `/tmp`), or owned by a user other than root and the one running the host. The
/// folders are those above the resolved file (`canonical`) and those above `path` as given,
/// which may hold the symbolic links that lead to it.
#[cfg(unix)]
pub(crate) fn check_permissions(path: &Path, canonical: &Path) -> Result<(), ErrorKind> {
    use std::os::unix::fs::MetadataExt;
    let me = crate::ffi::effective_uid();
    let unmapped = unmapped_owner();
    let given = std::path::absolute(path).map_err(|source| ErrorKind::Unreadable { source })?;
    let places = canonical
        .ancestors()
        .enumerate()
        .chain(given.ancestors().enumerate().skip(1));
    for (index, place) in places {
        let meta = std::fs::metadata(place).map_err(|source| ErrorKind::Unreadable { source })?;
        let refuse = |reason: String| ErrorKind::InsecurePermissions {
            path: place.to_path_buf(),
            reason,
        };
        let owner = match meta.uid() {
            uid if Some(uid) == unmapped => 0,
            uid => uid,
        };
        if owner != 0 && owner != me {
            return Err(refuse(format!(
                "is owned by user {owner}, neither root nor the user running the host ({me})"
            )));
        }
        let mode = meta.mode();
        let sticky_root_folder = index > 0 && owner == 0 && mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky_root_folder {
            return Err(refuse(format!(
                "is writable by its group or by others (mode {:o})",
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// Set by the host, to `1`, in the environment of a worker it runs in a user namespace of its
/// own (see `process/contain.rs`), and only then; removed by
/// [`worker_main`](crate::process::worker_main), which notes it with [`note_user_namespace`].
pub(crate) const USER_NAMESPACE_VARIABLE: &str = "PLUGLET_WORKER_USER_NAMESPACE";

/// Whether the host said that this process is a worker in a user namespace of its own.
static IN_USER_NAMESPACE: AtomicBool = AtomicBool::new(false);

/// Notes, and removes, [`USER_NAMESPACE_VARIABLE`]. First thing in `main` (in
/// [`worker_main`](crate::process::worker_main)), before the process has other threads.
pub(crate) fn note_user_namespace() {
    if std::env::var_os(USER_NAMESPACE_VARIABLE).is_some() {
        // SAFETY: called first thing in `main` (the documented contract of `worker_main`),
        // before the process has other threads that could read the environment meanwhile.
        unsafe { std::env::remove_var(USER_NAMESPACE_VARIABLE) };
        IN_USER_NAMESPACE.store(true, Ordering::SeqCst);
    }
}

/// The owner id that files of root show in this process, when it is not 0: inside the user
/// namespace of a worker that the host runs unprivileged, which maps only the host's own user
/// id to itself, every other owner, root included, shows the kernel's overflow id. Such an
/// owner is taken for root's there: the host checked the real owners, with real ids, before it
/// started the worker. `None` anywhere else: only when the host said so
/// ([`USER_NAMESPACE_VARIABLE`]), and the namespace is the one it makes (a single identity line
/// of this process's own id). A host that itself runs in such a namespace (under `bwrap` or
/// `unshare`) reads owners as they show.
#[cfg(target_os = "linux")]
fn unmapped_owner() -> Option<u32> {
    if !IN_USER_NAMESPACE.load(Ordering::SeqCst) {
        return None;
    }
    let map = std::fs::read_to_string("/proc/self/uid_map").ok()?;
    let fields: Vec<&str> = map.split_whitespace().collect();
    let me = crate::ffi::effective_uid().to_string();
    if fields != [me.as_str(), me.as_str(), "1"] {
        return None;
    }
    let overflow = std::fs::read_to_string("/proc/sys/kernel/overflowuid").ok();
    Some(
        overflow
            .and_then(|id| id.trim().parse().ok())
            .unwrap_or(65534),
    )
}

#[cfg(all(unix, not(target_os = "linux")))]
fn unmapped_owner() -> Option<u32> {
    None
}

/// Permissions are checked on Unix only.
#[cfg(not(unix))]
pub(crate) fn check_permissions(_: &Path, _: &Path) -> Result<(), ErrorKind> {
    Ok(())
}

/// Reads the whole file, refusing what is not a regular file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, ErrorKind> {
    let meta = std::fs::metadata(path).map_err(|source| ErrorKind::Unreadable { source })?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        return Err(ErrorKind::NotAFile { what });
    }
    std::fs::read(path).map_err(|source| ErrorKind::Unreadable { source })
}

/// The SHA-256 of `bytes`, in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares the hash of `bytes` with a pin (hex, any case).
pub(crate) fn verify_sha256(bytes: &[u8], expected: &str) -> Result<(), ErrorKind> {
    let actual = sha256_hex(bytes);
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ErrorKind::ChecksumMismatch {
            expected: expected.to_ascii_lowercase(),
            actual,
        })
    }
}

/// `bytes` written to a fresh file in a folder only this user can write (mode 0700), so that
/// the library loaded is exactly the bytes that were hashed and inspected: nobody else can
/// change them between the check and `dlopen`. The folder is removed when this is dropped; the
/// loaded mapping stays valid.
pub(crate) struct PrivateCopy {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl PrivateCopy {
    pub(crate) fn new(bytes: &[u8], original: &Path) -> Result<Self, ErrorKind> {
        let io = |source| ErrorKind::Unreadable { source };
        let dir = tempfile::Builder::new()
            .prefix("plugin-host-")
            .tempdir()
            .map_err(io)?;
        let name = original.file_name().unwrap_or("plugin".as_ref());
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).map_err(io)?;
        Ok(Self { _dir: dir, path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
