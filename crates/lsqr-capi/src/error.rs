//! Status codes, the thread-local last error, and the panic boundary every
//! export runs inside.

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::fmt::Display;

use lsqr_format::FormatError;
use lsqr_kernels::OpError;

/// The result of every fallible function. The numbers are part of the ABI:
/// a code is never renumbered nor reused for another meaning, and new codes
/// are only appended.
///
/// Functions take a status back as a plain `uint32_t` (see
/// `lsqr_status_str`) so that a C caller passing any number cannot cause
/// undefined behaviour.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum lsqr_status {
    /// Success: every output was written.
    Ok = 0,
    /// A bug inside liblsqr panicked; the panic was caught at the boundary
    /// and its message is in `lsqr_last_error()`. The objects passed to the
    /// call are left as they were before it, but it is a bug to report.
    Panic = 1,
    /// A pointer argument that must not be NULL was NULL.
    NullArgument = 2,
    /// An argument is out of its domain (a name that is not UTF-8, a zero
    /// stride, an element count that overflows `size_t`, ...).
    InvalidArgument = 3,
    /// A caller buffer is shorter than the result; `needed` (where the
    /// function has one) says how long it must be.
    BufferTooSmall = 4,
    /// The operating system refused a file operation (missing file,
    /// permissions, mmap failure).
    Io = 5,
    /// The bytes are not a valid `.lsq` file this library reads: corrupt,
    /// truncated, or of an unsupported version. The message names the
    /// tensor and byte offset where the reader can.
    Format = 6,
    /// No tensor or metadata entry of that name or index; for the micro
    /// runtime, a model without a layer graph, or a layer, input or output
    /// index past the end.
    NotFound = 7,
    /// Shapes or lengths that must agree do not (a linear weight that is
    /// not 2-D, a bias of the wrong length, conv channels vs groups, a
    /// graph layer whose inputs or weights do not fit its op, input data
    /// of the wrong length).
    ShapeMismatch = 8,
    /// A valid request this version does not implement (e.g. a raw, not
    /// quantized, conv2d weight; a graph op the micro runtime does not
    /// run).
    Unsupported = 9,
    /// The micro runtime: the caller's arena is smaller than
    /// `lsqr_micro_arena_size` says it must be.
    ArenaTooSmall = 10,
    /// A metadata entry exists but holds another type than the one asked
    /// for (`lsqr_model_metadata_type` says which).
    TypeMismatch = 11,
}

/// Every status, in number order (the tests check the numbers are exactly
/// `0..len`). Not `pub`: cbindgen would emit it as a macro.
const ALL_STATUSES: [lsqr_status; 12] = [
    lsqr_status::Ok,
    lsqr_status::Panic,
    lsqr_status::NullArgument,
    lsqr_status::InvalidArgument,
    lsqr_status::BufferTooSmall,
    lsqr_status::Io,
    lsqr_status::Format,
    lsqr_status::NotFound,
    lsqr_status::ShapeMismatch,
    lsqr_status::Unsupported,
    lsqr_status::ArenaTooSmall,
    lsqr_status::TypeMismatch,
];

impl lsqr_status {
    /// Every status, in number order.
    pub fn all() -> &'static [lsqr_status] {
        &ALL_STATUSES
    }

    /// The static, NUL-terminated description of the status.
    pub(crate) fn message(self) -> &'static CStr {
        match self {
            Self::Ok => c"ok",
            Self::Panic => c"internal error (a panic was caught)",
            Self::NullArgument => c"null argument",
            Self::InvalidArgument => c"invalid argument",
            Self::BufferTooSmall => c"buffer too small",
            Self::Io => c"I/O error",
            Self::Format => c"invalid or unsupported .lsq file",
            Self::NotFound => c"not found",
            Self::ShapeMismatch => c"shape mismatch",
            Self::Unsupported => c"unsupported",
            Self::ArenaTooSmall => c"arena too small",
            Self::TypeMismatch => c"type mismatch",
        }
    }
}

/// A failed call: the status returned and the message `lsqr_last_error`
/// gives.
#[derive(Debug)]
pub(crate) struct Error {
    pub(crate) status: lsqr_status,
    pub(crate) message: String,
}

impl Error {
    pub(crate) fn new(status: lsqr_status, message: impl Display) -> Self {
        Self { status, message: message.to_string() }
    }

    pub(crate) fn null(arg: &str) -> Self {
        Self::new(lsqr_status::NullArgument, format_args!("`{arg}` is NULL"))
    }
}

impl From<FormatError> for Error {
    fn from(e: FormatError) -> Self {
        let status = match &e {
            FormatError::Io { .. } => lsqr_status::Io,
            FormatError::NoSuchTensor { .. } => lsqr_status::NotFound,
            FormatError::BufferSize { .. } => lsqr_status::BufferTooSmall,
            _ => lsqr_status::Format,
        };
        Self::new(status, e)
    }
}

impl From<OpError> for Error {
    fn from(e: OpError) -> Self {
        let status = match &e {
            OpError::ShapeMismatch { .. } | OpError::LengthMismatch { .. } => {
                lsqr_status::ShapeMismatch
            }
            _ => lsqr_status::InvalidArgument,
        };
        Self::new(status, e)
    }
}

thread_local! {
    /// The message of the last failed call on this thread, NUL-terminated
    /// (just the NUL: none). A byte vector rather than a `CString` so that
    /// clearing it after each successful call keeps its buffer: once a
    /// thread has made its first call, a successful call never allocates
    /// (the micro runtime's run functions rely on it).
    static LAST_ERROR: RefCell<Vec<u8>> = RefCell::new(vec![0]);
}

/// Replaces this thread's last error. Interior NULs (from a tensor name,
/// say) would end the C string early, so they are shown as `\0`. An empty
/// message clears it without allocating.
pub(crate) fn set_last_error(message: &str) {
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        if !message.is_empty() {
            e.extend_from_slice(message.replace('\0', "\\0").as_bytes());
        }
        e.push(0);
    });
}

/// A pointer to this thread's last error: valid until the next call that
/// sets it (any status-returning lsqr call on this thread).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr().cast())
}

/// The text of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string payload");
    format!("panic inside liblsqr: {what}")
}

/// Runs `body` so that nothing unwinds into C: returns its status, records
/// the message of a failure (or of a caught panic) as this thread's last
/// error, and clears the last error on success so that a stale message is
/// never mistaken for the current one.
pub(crate) fn boundary(body: impl FnOnce() -> Result<(), Error>) -> lsqr_status {
    // AssertUnwindSafe: after a panic the only state we touch is the
    // thread-local message; the objects the closure borrowed are not used
    // again by this call, and the caller is told it hit a bug.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            set_last_error("");
            lsqr_status::Ok
        }
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            set_last_error(&panic_message(&*payload));
            lsqr_status::Panic
        }
    }
}

/// The panic boundary of functions that return a value, not a status: a
/// caught panic yields `fallback` (documented per function).
pub(crate) fn boundary_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    // AssertUnwindSafe: as in `boundary`.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// Wraps an export's body in the panic boundary. The body is a block of
/// type `Result<(), Error>`; `?` works inside it.
macro_rules! ffi_fn {
    ($body:block) => {
        $crate::error::boundary(move || -> Result<(), $crate::error::Error> { $body })
    };
}
pub(crate) use ffi_fn;

/// Returns the static, NUL-terminated description of a status code, or
/// `"unknown status"` for a number that is not one. Never NULL; the string
/// must not be freed.
///
/// The argument is a plain `uint32_t` rather than `lsqr_status` so that
/// any number a C caller passes is defined behaviour.
///
/// Thread-safe: reads only static data. Does not change `lsqr_last_error`.
#[no_mangle]
pub extern "C" fn lsqr_status_str(status: u32) -> *const c_char {
    let fallback = c"unknown status".as_ptr();
    boundary_value(fallback, || {
        ALL_STATUSES
            .iter()
            .find(|s| **s as u32 == status)
            .map_or(fallback, |s| s.message().as_ptr())
    })
}

/// Returns the message of the last failed lsqr call on the calling thread
/// (e.g. `tensor 'fc.weight': scales section at 0x1c0 + 64 lies outside
/// the data area`), or `""` if the last status-returning call succeeded.
/// Never NULL.
///
/// The string belongs to the library: do not free it. It stays valid until
/// the next status-returning lsqr call on the same thread; copy it to keep
/// it.
///
/// Thread-safe: each thread has its own last error.
#[no_mangle]
pub extern "C" fn lsqr_last_error() -> *const c_char {
    boundary_value(c"".as_ptr(), last_error_ptr)
}
