//! SIGINT and SIGTERM: remove the named temporary files being written (the
//! fallback where `O_TMPFILE` is unavailable; unnamed ones vanish with the
//! process anyway), then die of the signal, so the exit status says so.
//!
//! The handler only writes the signal number to a pipe (async-signal-safe);
//! a thread reading it does the cleanup, restores the default action and
//! re-raises the signal.

/// Installs the handlers; on failure the default actions stay.
#[cfg(unix)]
pub fn install() {
    use std::sync::atomic::{AtomicI32, Ordering};

    static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

    extern "C" fn handler(signal: libc::c_int) {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a local. The
        // write end is non-blocking, and a failure (a full pipe: a signal is
        // already pending) changes nothing.
        unsafe {
            libc::write(PIPE_WRITE.load(Ordering::Relaxed), (&raw const byte).cast(), 1);
        }
    }

    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return;
    }
    for (fd, flags) in [(fds[0], 0), (fds[1], libc::O_NONBLOCK)] {
        // SAFETY: fcntl on descriptors this function owns.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(fd, libc::F_SETFL, flags);
        }
    }
    PIPE_WRITE.store(fds[1], Ordering::Relaxed);
    let read_end = fds[0];
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut byte = 0u8;
        loop {
            // SAFETY: reads one byte into a local.
            let n = unsafe { libc::read(read_end, (&raw mut byte).cast(), 1) };
            if n == 1 {
                break;
            }
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        lsqr::format::remove_temporary_files();
        let signal = libc::c_int::from(byte);
        // SAFETY: restoring the default action, unblocking the signal in
        // this thread and raising it: plain libc calls on local data.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
        }
        std::process::exit(128 + signal);
    });
    if spawned.is_err() {
        return;
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler is an
        // `extern "C" fn(c_int)` that only calls write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Nothing to install: the default actions stay.
#[cfg(not(unix))]
pub fn install() {}
