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

/// A private copy of the bytes that were hashed and inspected, so that the library loaded is
/// exactly them: nobody else can change them between the check and `dlopen`, and each copy is
/// a new file (a fresh path and inode), so that a new version of a file, written over in place,
/// loads as new code (`dlopen` of a path already open gives back the library loaded before).
///
/// On Linux it is an anonymous memory file (`memfd_create`), opened through `/proc/self/fd/N`
/// (spelt anew each time: see [`unique_fd_path`]): nothing is left on disk, and a `noexec`
/// `/tmp` does not stop it. Elsewhere (or if the kernel refuses a memory file), it is a file of
/// mode 0600 in a folder of mode 0700 under the temporary folder (`TMPDIR`), removed when this
/// is dropped. The loaded mapping stays valid either way.
#[derive(Debug)]
pub(crate) struct PrivateCopy {
    path: PathBuf,
    _keep: Keep,
}

/// What keeps a [`PrivateCopy`] in existence.
#[derive(Debug)]
enum Keep {
    /// The memory file's descriptor, which its path names.
    #[cfg(target_os = "linux")]
    Memory { _fd: std::os::fd::OwnedFd },
    /// The private folder that holds the file.
    Folder { _dir: tempfile::TempDir },
}

/// `/proc/self/fd/FD`, spelt as no path given before in this process. `dlopen` returns the
/// library already loaded under a name it is given again, without opening anything, and a
/// descriptor's number is used again once it is closed (as a copy's is, once loaded): so each
/// name holds a number of its own, in binary, as a run of `/.` (1) and `//` (0) after
/// `/proc/self/fd`, which the kernel reads as the folder itself (`/proc/self/fd/.///./5`).
#[cfg(target_os = "linux")]
fn unique_fd_path(fd: std::os::fd::RawFd) -> PathBuf {
    use std::sync::atomic::AtomicU64;
    static NAMED: AtomicU64 = AtomicU64::new(1);
    let number = NAMED.fetch_add(1, Ordering::Relaxed);
    let mut path = String::from("/proc/self/fd");
    // From the highest bit set, always 1: numbers of different lengths never meet.
    for bit in (0..u64::BITS - number.leading_zeros()).rev() {
        path.push_str(if number >> bit & 1 == 1 { "/." } else { "//" });
    }
    PathBuf::from(format!("{path}/{fd}"))
}

impl PrivateCopy {
    /// A copy of `bytes` (the content of `original`) for this process to load.
    pub(crate) fn new(bytes: &[u8], original: &Path) -> Result<Self, ErrorKind> {
        #[cfg(target_os = "linux")]
        if let Some(copy) = Self::in_memory(bytes, original) {
            return Ok(copy);
        }
        Self::in_folder(bytes, original)
    }

    /// A copy of `bytes` (the content of `original`) as a file, named as `original` in a folder
    /// of its own (mode 0700), removed when this is dropped.
    fn in_folder(bytes: &[u8], original: &Path) -> Result<Self, ErrorKind> {
        use std::io::Write;
        let io = |source| ErrorKind::Unreadable { source };
        let dir = tempfile::Builder::new()
            .prefix("plugin-host-")
            .tempdir()
            .map_err(io)?;
        let name = original.file_name().unwrap_or("plugin".as_ref());
        let path = dir.path().join(name);
        let mut file = std::fs::OpenOptions::new();
        file.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        file.open(&path)
            .and_then(|mut file| file.write_all(bytes))
            .map_err(io)?;
        Ok(Self {
            path,
            _keep: Keep::Folder { _dir: dir },
        })
    }

    /// A memory file holding `bytes`, or `None` if the kernel refuses one.
    #[cfg(target_os = "linux")]
    fn in_memory(bytes: &[u8], original: &Path) -> Option<Self> {
        use std::io::Write;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::ffi::OsStrExt;
        // The name shows in /proc/PID/maps (as `/memfd:NAME`); a NUL in it cannot be passed.
        let name = original
            .file_name()
            .map_or(&b"plugin"[..], |n| n.as_bytes());
        let name = std::ffi::CString::new(name).unwrap_or_else(|_| c"plugin".to_owned());
        let create = |flags| {
            // SAFETY: `name` is a NUL-terminated string that outlives the call.
            unsafe { libc::memfd_create(name.as_ptr(), flags) }
        };
        // Executable even where `vm.memfd_noexec` makes memory files non-executable by default;
        // a kernel older than 6.3 refuses `MFD_EXEC` (EINVAL), and needs no such flag.
        let mut fd = create(libc::MFD_CLOEXEC | libc::MFD_EXEC);
        if fd < 0 {
            fd = create(libc::MFD_CLOEXEC);
        }
        if fd < 0 {
            return None;
        }
        // SAFETY: `memfd_create` returned a new descriptor, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes).ok()?;
        let path = unique_fd_path(file.as_raw_fd());
        Some(Self {
            path,
            _keep: Keep::Memory { _fd: file.into() },
        })
    }

    /// Where the copy is: the path to load, or to hand to the process that reads it.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn copies_in_memory_have_paths_never_given_before_that_read_back_their_bytes() {
        let original = Path::new("/plugins/libx.so");
        let first = PrivateCopy::new(b"one", original).unwrap();
        let first_path = first.path().to_owned();
        assert_eq!(std::fs::read(&first_path).unwrap(), b"one");
        drop(first);
        // The descriptor's number comes back; the path does not.
        let second = PrivateCopy::new(b"two", original).unwrap();
        // As strings: `Path` equality reads through `.` and repeated slashes, as the kernel does.
        assert_ne!(second.path().as_os_str(), first_path.as_os_str());
        assert_eq!(std::fs::read(second.path()).unwrap(), b"two");
        assert!(
            second.path().starts_with("/proc/self/fd"),
            "{}",
            second.path().display()
        );
        let target = std::fs::read_link(second.path()).unwrap();
        assert_eq!(target.to_str(), Some("/memfd:libx.so (deleted)"));
    }
}
