//! Temporary files for [`LsqFileWriter`](crate::LsqFileWriter).
//!
//! On Linux the file is written unnamed (`O_TMPFILE`) in the destination's
//! folder and linked into place at the end, so nothing is left behind even
//! on SIGKILL. Elsewhere, or where the filesystem refuses `O_TMPFILE`, it is
//! a named file `.NAME.tmp-PID-N` beside the destination: such files are
//! listed in a process-wide registry, so that a signal handler can remove
//! them ([`remove_temporary_files`]), and those left by dead processes are
//! removed the next time NAME is written ([`remove_stale_temporaries`]).

use std::ffi::OsStr;
use std::format;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::string::String;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::vec::Vec;

/// The named temporary files of this process.
struct Registry {
    /// Set by [`remove_temporary_files`]: no new temporary file is made.
    closed: bool,
    paths: Vec<(u64, PathBuf)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { closed: false, paths: Vec::new() });
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every named temporary file this process is writing and refuses
/// to make new ones (creating or finishing a writer then fails): for a
/// program about to exit on SIGINT or SIGTERM. Not async-signal-safe: call
/// it from a normal thread (e.g. one woken by the signal handler), then
/// re-raise the signal.
///
/// Unnamed (`O_TMPFILE`) temporaries need nothing: the kernel frees them
/// when the process dies.
pub fn remove_temporary_files() {
    let mut r = registry();
    r.closed = true;
    for (_, path) in r.paths.drain(..) {
        let _ = fs::remove_file(path);
    }
}

fn interrupted() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "interrupted: temporary files were removed")
}

/// The temporary name prefix for destination file `file_name`.
fn prefix(file_name: &OsStr) -> String {
    format!(".{}.tmp-", file_name.to_string_lossy())
}

/// A named temporary file, registered until it is renamed or removed
/// (when dropped); for other atomic writers (the CLI's `export`).
#[doc(hidden)]
#[derive(Debug)]
pub struct NamedTemp {
    id: u64,
    path: PathBuf,
}

impl NamedTemp {
    /// Makes `.NAME.tmp-PID-N` in `dir` with `make` (which must fail with
    /// `AlreadyExists` if the path exists), trying the next N until it does
    /// not exist.
    pub fn new<T>(
        dir: &Path,
        file_name: &OsStr,
        mut make: impl FnMut(&Path) -> io::Result<T>,
    ) -> io::Result<(Self, T)> {
        let mut r = registry();
        if r.closed {
            return Err(interrupted());
        }
        loop {
            let id = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{}{}-{id}", prefix(file_name), std::process::id()));
            match make(&path) {
                Ok(t) => {
                    r.paths.push((id, path.clone()));
                    return Ok((Self { id, path }, t));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            }
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to `dest`. Under the registry's lock, so that a
    /// concurrent [`remove_temporary_files`] either removes it first (and
    /// the rename fails) or finds it gone.
    pub fn rename_to(mut self, dest: &Path) -> io::Result<()> {
        let mut r = registry();
        if r.closed {
            return Err(interrupted());
        }
        let result = fs::rename(&self.path, dest);
        if result.is_ok() {
            r.paths.retain(|(id, _)| *id != self.id);
            // Published: skip `Drop` (which would take the lock again and
            // remove the file), but free the path (AddressSanitizer's leak
            // check found it leaked by a plain `forget`).
            let path = core::mem::take(&mut self.path);
            core::mem::forget(self);
            drop(path);
        }
        result
    }
}

impl Drop for NamedTemp {
    fn drop(&mut self) {
        let mut r = registry();
        r.paths.retain(|(id, _)| *id != self.id);
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether process `pid` is alive (or might be: only "no such process"
/// counts as dead).
#[cfg(unix)]
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return true };
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists and may be
    // signalled; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn alive(_pid: u32) -> bool {
    true // no portable check: keep everything
}

/// Removes `.NAME.tmp-PID-N` (and the CLI's older `.NAME.tmp-PID`) files in
/// `dir` whose process is dead. Errors are ignored: this is housekeeping.
/// A PID reused by a new process keeps its file (until that process
/// ends); processes in another PID namespace sharing the folder are not
/// told apart from dead ones.
pub fn remove_stale_temporaries(dir: &Path, file_name: &OsStr) {
    let prefix = prefix(file_name);
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix.as_str())) else {
            continue;
        };
        let mut parts = rest.split('-');
        let Some(Ok(pid)) = parts.next().map(str::parse::<u32>) else { continue };
        let counter_ok = match parts.next() {
            None => true,
            Some(n) => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        };
        if !counter_ok || parts.next().is_some() || pid == std::process::id() || alive(pid) {
            continue;
        }
        let _ = fs::remove_file(entry.path());
    }
}

/// Fsyncs a folder, where the platform can.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Opens an unnamed temporary file in `dir`; `Ok(None)` where `O_TMPFILE`
/// is not supported (by the OS, the filesystem, or `/proc/self/fd` being
/// absent, which publishing needs).
#[cfg(target_os = "linux")]
pub(crate) fn open_unnamed(dir: &Path) -> io::Result<Option<File>> {
    use std::ffi::CString;
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    if !Path::new("/proc/self/fd").is_dir() {
        return Ok(None);
    }
    let c_dir = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: `c_dir` is a NUL-terminated string that outlives the call.
    let fd = unsafe {
        libc::open(
            c_dir.as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            0o666 as libc::c_uint,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(Some(unsafe { File::from_raw_fd(fd) }))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn open_unnamed(_dir: &Path) -> io::Result<Option<File>> {
    Ok(None)
}

/// `linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, dest, AT_SYMLINK_FOLLOW)`:
/// gives the unnamed file `file` the name `dest`, which must not exist.
#[cfg(target_os = "linux")]
fn link_unnamed(file: &File, dest: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let nul = |_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte");
    let src = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(nul)?;
    let dst = CString::new(dest.as_os_str().as_bytes()).map_err(nul)?;
    // SAFETY: both are NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Publishes the unnamed file at `dest`: linked there directly if `dest`
/// does not exist, else linked to a temporary name and renamed over it
/// (atomically replacing it). The caller has fsynced the file; this fsyncs
/// the folder.
#[cfg(target_os = "linux")]
pub(crate) fn publish_unnamed(
    file: &File,
    dir: &Path,
    file_name: &OsStr,
    dest: &Path,
) -> io::Result<()> {
    match link_unnamed(file, dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let (temp, ()) = NamedTemp::new(dir, file_name, |p| link_unnamed(file, p))?;
            temp.rename_to(dest)?;
        }
        Err(e) => return Err(e),
    }
    sync_dir(dir);
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn publish_unnamed(_: &File, _: &Path, _: &OsStr, _: &Path) -> io::Result<()> {
    unreachable!("open_unnamed never opens one here")
}
