//! Models, tensor handles, tensor descriptions and metadata.

use std::ffi::{c_char, CStr, CString};
use std::ops::Deref;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::OnceLock;

use ::lsqr_codec::{CodecKind, Scaling};
use lsqr_format::{LsqFile, RawDtype, Storage, TensorInfo, TensorView, Value};

use crate::error::{ffi_fn, lsqr_status, Error};

/// An opened `.lsq` model: its validated header and its bytes
/// (memory-mapped by `lsqr_model_open`, or the caller's buffer for
/// `lsqr_model_open_memory`). Opaque to C; freed by `lsqr_model_free`.
pub struct lsqr_model {
    /// On the heap, so that its address, which every `lsqr_tensor` keeps,
    /// does not change when the model value moves.
    file: HeapFile,
    /// One handle per tensor, in file order.
    tensors: Box<[lsqr_tensor]>,
    /// Metadata keys as C strings, in file order.
    metadata_keys: Box<[CString]>,
}

/// A tensor of a model: a borrowed handle, valid as long as its model is
/// (it points into the model's storage). It is never freed by the caller.
/// Opaque to C.
pub struct lsqr_tensor {
    /// The model's file. It is boxed inside the model and lives exactly as
    /// long as this handle (both are freed together by `lsqr_model_free`).
    file: *const LsqFile<'static>,
    /// The position in `LsqFile::tensors`.
    index: usize,
    /// The name as a C string, for `lsqr_tensor_info`.
    name: CString,
    /// Set once the CRC-32s of the tensor's data sections matched
    /// ([`lsqr_tensor::check`]).
    checked: OnceLock<()>,
}

// SAFETY: `lsqr_tensor` only ever reads through `file`, which points to an
// `LsqFile` that is itself Send + Sync (a byte slice or a read-only map and
// owned header data) and outlives the handle.
unsafe impl Send for lsqr_tensor {}
// SAFETY: as above; no method mutates through the pointer, and the one
// field written through a shared handle, `checked`, is a `OnceLock`
// (itself Sync: set at most once, by whichever thread gets there first).
unsafe impl Sync for lsqr_tensor {}

impl lsqr_tensor {
    pub(crate) fn file(&self) -> &LsqFile<'static> {
        // SAFETY: `file` points to the `HeapFile` of the model that owns
        // this handle; it is freed only when the model is, together with
        // the handle.
        unsafe { &*self.file }
    }

    pub(crate) fn info(&self) -> &TensorInfo {
        &self.file().tensors()[self.index]
    }

    /// Checks the CRC-32s of the tensor's data sections, the first time
    /// only (a success is remembered; the model's bytes may not change
    /// while it is open). Every use of the data goes through this: without
    /// it a flipped bit in a weight would give wrong outputs silently.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.checked.get().is_none() {
            self.file().verify_tensor_at(self.index)?;
            let _ = self.checked.set(());
        }
        Ok(())
    }

    /// A view of the tensor's data (checks its CRC-32s once, then scales
    /// and lut table).
    pub(crate) fn view(&self) -> Result<TensorView<'_>, Error> {
        self.check()?;
        Ok(self.file().tensor_at(self.index)?)
    }

    /// A view of the tensor's data that may outlive this borrow of the
    /// handle (a prepared weight keeps one).
    ///
    /// # Safety
    /// The view, and anything borrowed from it, must not be used after the
    /// model that owns this handle is freed.
    pub(crate) unsafe fn view_unbounded(&self) -> Result<TensorView<'static>, Error> {
        self.check()?;
        // SAFETY: `file` points to the model's `HeapFile`, whose address is
        // stable and which is only read, until the model is freed; the
        // caller does not use the view past that.
        let file: &'static LsqFile<'static> = unsafe { &*self.file };
        Ok(file.tensor_at(self.index)?)
    }
}

/// An owned `LsqFile` on the heap that tensor handles point into.
///
/// Not a `Box`: moving a `Box` asserts unique access to its contents,
/// which would invalidate the handles' pointers under Rust's aliasing
/// rules (Miri reported exactly that when `lsqr_model::new` moved its
/// `Box<LsqFile>` into the model). This owner is a raw pointer, so moving
/// it claims nothing; the file is only ever read through it.
struct HeapFile(NonNull<LsqFile<'static>>);

impl HeapFile {
    fn new(file: LsqFile<'static>) -> Self {
        Self(NonNull::from(Box::leak(Box::new(file))))
    }

    fn as_ptr(&self) -> *const LsqFile<'static> {
        self.0.as_ptr()
    }
}

impl Deref for HeapFile {
    type Target = LsqFile<'static>;

    fn deref(&self) -> &LsqFile<'static> {
        // SAFETY: the pointer came from `Box::leak` in `new` and stays
        // valid until `drop`; nothing writes through it.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for HeapFile {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::leak` and is freed only here,
        // once; the tensor handles that point into it are dropped with the
        // same model and never used after `lsqr_model_free`.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

// SAFETY: `HeapFile` owns an `LsqFile`, which is Send + Sync (a byte slice
// or a read-only map and owned header data), and gives only shared access.
unsafe impl Send for HeapFile {}
// SAFETY: as above.
unsafe impl Sync for HeapFile {}

impl lsqr_model {
    fn new(file: LsqFile<'static>) -> Result<Box<Self>, Error> {
        let file = HeapFile::new(file);
        let c_string = |s: &str, what: &str| {
            CString::new(s).map_err(|_| {
                Error::new(
                    lsqr_status::Unsupported,
                    format_args!("{what} {s:?} contains a NUL byte, which a C string cannot hold"),
                )
            })
        };
        let tensors = file
            .tensors()
            .iter()
            .enumerate()
            .map(|(index, t)| {
                Ok(lsqr_tensor {
                    file: file.as_ptr(),
                    index,
                    name: c_string(&t.name, "tensor name")?,
                    checked: OnceLock::new(),
                })
            })
            .collect::<Result<_, Error>>()?;
        let metadata_keys = file
            .metadata()
            .iter()
            .map(|(k, _)| c_string(k, "metadata key"))
            .collect::<Result<_, Error>>()?;
        Ok(Box::new(Self { file, tensors, metadata_keys }))
    }

    /// The opened file. It is on the heap, owned by the model, so its address is
    /// stable for the model's whole life (the micro runtime keeps it).
    pub(crate) fn file(&self) -> &LsqFile<'static> {
        &self.file
    }

    /// Checks every tensor's CRC-32s ([`lsqr_tensor::check`]: each once).
    pub(crate) fn check_data(&self) -> Result<(), Error> {
        self.tensors.iter().try_for_each(lsqr_tensor::check)
    }

    fn value(&self, key: &str) -> Result<&Value, Error> {
        self.file.metadata_get(key).ok_or_else(|| {
            Error::new(lsqr_status::NotFound, format_args!("no metadata entry '{key}'"))
        })
    }
}

/// A reference from a pointer argument, or `NullArgument` naming it.
///
/// # Safety
/// `p` is NULL or points to a live `T` for the duration of the call.
pub(crate) unsafe fn arg<'a, T>(p: *const T, name: &str) -> Result<&'a T, Error> {
    // SAFETY: the caller's contract.
    unsafe { p.as_ref() }.ok_or_else(|| Error::null(name))
}

/// A mutable reference to an output argument, or `NullArgument`.
///
/// # Safety
/// `p` is NULL or points to a writable `T` for the duration of the call.
pub(crate) unsafe fn out<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Error> {
    // SAFETY: the caller's contract.
    unsafe { p.as_mut() }.ok_or_else(|| Error::null(name))
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for the
/// duration of the call.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, name: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(Error::null(name));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| {
        Error::new(lsqr_status::InvalidArgument, format_args!("`{name}` is not valid UTF-8"))
    })
}

/// A path argument: on Unix any bytes (file names need not be UTF-8),
/// elsewhere UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for the
/// duration of the call.
unsafe fn c_path<'a>(p: *const c_char) -> Result<&'a Path, Error> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        if p.is_null() {
            return Err(Error::null("path"));
        }
        // SAFETY: non-null and NUL-terminated by the caller's contract.
        let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
        Ok(Path::new(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        // SAFETY: the caller's contract, forwarded.
        unsafe { c_str(p, "path") }.map(Path::new)
    }
}

/// Opens the `.lsq` file at `path` (NUL-terminated; any bytes on Unix,
/// UTF-8 elsewhere), memory-mapping it, and validates its whole header;
/// writes the new model to `*out` on success (and leaves `*out` untouched
/// on failure). Free it with `lsqr_model_free`.
///
/// Only the pages of the preamble and header are read until a tensor is
/// used. As with any memory map, the file must not be truncated or
/// modified while the model is open.
///
/// Checksums: the first use of a tensor's data (`lsqr_tensor_dequantize`,
/// `lsqr_linear`, `lsqr_conv2d`, `lsqr_weight_prepare`, or
/// `lsqr_micro_arena_size` / `lsqr_micro_load`, which check every tensor
/// of the model) checks the CRC-32s of its data sections, once per tensor
/// and model, so a corrupted weight is `LSQR_STATUS_FORMAT` rather than
/// wrong outputs. `lsqr_model_verify` checks the whole file up front.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_INVALID_ARGUMENT`
/// (a path that is not UTF-8, on systems other than Unix),
/// `LSQR_STATUS_IO` (missing or unreadable file), `LSQR_STATUS_FORMAT`
/// (corrupt or unsupported file; the last error names the tensor and byte
/// offset), `LSQR_STATUS_UNSUPPORTED` (a name with a NUL byte).
///
/// Thread-safe: any number of models may be opened concurrently.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_open(
    path: *const c_char,
    out: *mut *mut lsqr_model,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract on `path` and `out`.
        let (path, out) = unsafe { (c_path(path)?, self::out(out, "out")?) };
        let model = lsqr_model::new(LsqFile::open(path)?)?;
        *out = Box::into_raw(model);
        Ok(())
    })
}

/// Opens a `.lsq` file held in memory, without copying it, and validates
/// its whole header; writes the new model to `*out` on success (untouched
/// on failure). Free it with `lsqr_model_free`.
///
/// Zero-copy: the model reads `buf` directly, so the caller must keep the
/// `len` bytes at `buf` alive and unmodified until `lsqr_model_free`
/// returns. `buf` needs no particular alignment.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_FORMAT` (corrupt,
/// truncated or unsupported bytes; the last error names the tensor and
/// byte offset), `LSQR_STATUS_UNSUPPORTED` (a name with a NUL byte).
///
/// Thread-safe: several models may share one buffer, from any threads.
///
/// # Safety
/// `buf` is NULL or points to `len` readable bytes that outlive the model;
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_open_memory(
    buf: *const u8,
    len: usize,
    out: *mut *mut lsqr_model,
) -> lsqr_status {
    ffi_fn!({
        if buf.is_null() {
            return Err(Error::null("buf"));
        }
        // SAFETY: the export's contract on `out`.
        let out = unsafe { self::out(out, "out") }?;
        // SAFETY: `buf` is non-null and the caller guarantees `len`
        // readable bytes that stay alive and unchanged until the model is
        // freed, which is what the 'static lifetime stands for here: the
        // slice never escapes the model.
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(buf, len) };
        let model = lsqr_model::new(LsqFile::from_bytes(bytes)?)?;
        *out = Box::into_raw(model);
        Ok(())
    })
}

/// Frees a model and, with it, every `lsqr_tensor` handle and string it
/// handed out. `lsqr_model_free(NULL)` does nothing.
///
/// It returns nothing and leaves `lsqr_last_error` as it was, so a caller
/// may free a model before reporting the error of an earlier call. (Should
/// dropping the model panic, which would be a bug, the panic is caught and
/// its message becomes the last error.)
///
/// Not thread-safe with respect to the model: no other thread may be
/// using the model or its tensors during or after the call.
///
/// # Safety
/// `model` is NULL or a model from `lsqr_model_open*` not freed before.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_free(model: *mut lsqr_model) {
    if model.is_null() {
        return;
    }
    // SAFETY: a pointer from `Box::into_raw` in `lsqr_model_open*`, freed
    // once by the caller's contract.
    let model = unsafe { Box::from_raw(model) };
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(model)));
    if let Err(payload) = dropped {
        crate::error::set_last_error(&crate::error::panic_message(&*payload));
    }
}

/// Checks the CRC-32 of every data section of `model` (packed codes,
/// scales, tables and raw values), which opening does not: opening reads
/// only the header. Reads the whole file, once: tensors found intact are
/// not checked again on their first use (`lsqr_model_open`).
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_FORMAT` (a mismatch;
/// the last error names the tensor, the section and its byte offset).
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_verify(model: *const lsqr_model) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let model = unsafe { arg(model, "model") }?;
        model.check_data()
    })
}

/// Writes the number of tensors of `model` to `*out`.
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_tensor_count(
    model: *const lsqr_model,
    out: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, out) = unsafe { (arg(model, "model")?, self::out(out, "out")?) };
        *out = model.tensors.len();
        Ok(())
    })
}

/// Writes the handle of the `index`-th tensor (file order) to `*out`;
/// `LSQR_STATUS_NOT_FOUND` if `index >= lsqr_model_tensor_count`. The
/// handle is valid until the model is freed and is not freed itself.
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_tensor_at(
    model: *const lsqr_model,
    index: usize,
    out: *mut *const lsqr_tensor,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, out) = unsafe { (arg(model, "model")?, self::out(out, "out")?) };
        let count = model.tensors.len();
        let t = model.tensors.get(index).ok_or_else(|| {
            Error::new(
                lsqr_status::NotFound,
                format_args!("tensor index {index} is out of range (the model has {count})"),
            )
        })?;
        *out = t;
        Ok(())
    })
}

/// Writes the handle of the tensor named `name` to `*out`;
/// `LSQR_STATUS_NOT_FOUND` if there is none. The handle is valid until the
/// model is freed and is not freed itself.
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `name` is NULL or NUL-terminated; `out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_find_tensor(
    model: *const lsqr_model,
    name: *const c_char,
    out: *mut *const lsqr_tensor,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, name, out) =
            unsafe { (arg(model, "model")?, c_str(name, "name")?, self::out(out, "out")?) };
        let i = model.file.tensor_index(name).ok_or_else(|| {
            Error::new(lsqr_status::NotFound, format_args!("no tensor named '{name}'"))
        })?;
        *out = &model.tensors[i];
        Ok(())
    })
}

/// The largest rank a tensor can have (`lsqr_tensor_info.dims` holds this
/// many entries).
pub const LSQR_MAX_DIMS: usize = 8;

/// How a tensor's values are stored: raw, or which codebook family its
/// codes index.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lsqr_codec {
    /// Not quantized: values stored as `lsqr_tensor_info.dtype`.
    Raw = 0,
    /// The reference LSQR codebook, `(-1)^n * log2(k) / B`.
    Seed = 1,
    /// μ-law signed logarithmic levels.
    Log = 2,
    /// Symmetric integer grid.
    Uniform = 3,
    /// NormalFloat.
    Nf = 4,
    /// ExMy minifloat.
    Fp = 5,
    /// An explicit per-tensor table.
    Lut = 6,
}

/// The element type of a raw tensor.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lsqr_dtype {
    /// Quantized tensor: no element type.
    None = 0,
    /// IEEE binary32.
    F32 = 1,
    /// IEEE binary16.
    F16 = 2,
    /// bfloat16.
    Bf16 = 3,
    /// IEEE binary64.
    F64 = 4,
    /// Signed 8-bit integer.
    I8 = 5,
    /// Signed 16-bit integer.
    I16 = 6,
    /// Signed 32-bit integer.
    I32 = 7,
    /// Signed 64-bit integer.
    I64 = 8,
    /// Unsigned 8-bit integer.
    U8 = 9,
    /// Boolean, one byte.
    Bool = 10,
}

/// How the scales of a quantized tensor are shared.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lsqr_scaling {
    /// Raw tensor: no scales.
    None = 0,
    /// No scale: codes are taken at unit scale.
    Unit = 1,
    /// One scale for the whole tensor.
    Tensor = 2,
    /// One scale per row (output channel).
    Row = 3,
    /// One scale per `group_size` consecutive elements of a row.
    Group = 4,
    /// Two-level scales: sub-blocks of `group_size` elements, each scaled by
    /// its super-block's scale times a small integer (`.lsq` 1.2).
    TwoLevel = 5,
}

/// A description of a tensor, filled by `lsqr_tensor_get_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct lsqr_tensor_info {
    /// The tensor's name: NUL-terminated UTF-8, owned by the model (valid
    /// until `lsqr_model_free`; do not free it).
    pub name: *const c_char,
    /// The rank (0 for a scalar, at most `LSQR_MAX_DIMS`).
    pub ndim: usize,
    /// The shape, row-major; entries past `ndim` are 0.
    pub dims: [usize; LSQR_MAX_DIMS],
    /// The product of the dims: the number of floats
    /// `lsqr_tensor_dequantize` writes.
    pub element_count: usize,
    /// `LSQR_CODEC_RAW` or the codebook family.
    pub codec: lsqr_codec,
    /// The element type of a raw tensor (`LSQR_DTYPE_NONE` if quantized).
    pub dtype: lsqr_dtype,
    /// Bits per element: the code width C (2..=16) of a quantized tensor,
    /// the element size of a raw one (e.g. 32 for f32).
    pub bits: u32,
    /// How scales are shared (`LSQR_SCALING_NONE` for raw tensors).
    pub scaling: lsqr_scaling,
    /// Elements per scale group along a row with `LSQR_SCALING_GROUP`, 0
    /// otherwise.
    pub group_size: usize,
    /// Bytes the tensor occupies in the file (data, scales and table).
    pub stored_bytes: u64,
}

fn codec_of(kind: CodecKind) -> lsqr_codec {
    match kind {
        CodecKind::Seed => lsqr_codec::Seed,
        CodecKind::Log => lsqr_codec::Log,
        CodecKind::Uniform => lsqr_codec::Uniform,
        CodecKind::Nf => lsqr_codec::Nf,
        CodecKind::Fp => lsqr_codec::Fp,
        CodecKind::Lut => lsqr_codec::Lut,
    }
}

fn dtype_of(d: RawDtype) -> lsqr_dtype {
    match d {
        RawDtype::F32 => lsqr_dtype::F32,
        RawDtype::F16 => lsqr_dtype::F16,
        RawDtype::BF16 => lsqr_dtype::Bf16,
        RawDtype::F64 => lsqr_dtype::F64,
        RawDtype::I8 => lsqr_dtype::I8,
        RawDtype::I16 => lsqr_dtype::I16,
        RawDtype::I32 => lsqr_dtype::I32,
        RawDtype::I64 => lsqr_dtype::I64,
        RawDtype::U8 => lsqr_dtype::U8,
        RawDtype::Bool => lsqr_dtype::Bool,
    }
}

/// Fills `*out` with the description of `tensor`. Reads only the header:
/// no tensor data is touched.
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `tensor` is NULL or a handle of a live model; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_tensor_get_info(
    tensor: *const lsqr_tensor,
    out: *mut lsqr_tensor_info,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (tensor, out) = unsafe { (arg(tensor, "tensor")?, self::out(out, "out")?) };
        let info = tensor.info();
        let shape = info.shape_usize();
        let mut dims = [0; LSQR_MAX_DIMS];
        // The reader caps the rank at MAX_DIMS (= LSQR_MAX_DIMS); zip stays
        // in bounds regardless.
        for (d, s) in dims.iter_mut().zip(&shape) {
            *d = *s;
        }
        let (codec, dtype, bits, scaling, group_size) = match info.storage {
            Storage::Raw(d) => {
                (lsqr_codec::Raw, dtype_of(d), 8 * d.size() as u32, lsqr_scaling::None, 0)
            }
            Storage::Quantized(q) => {
                let (scaling, group) = match q.scaling {
                    Scaling::Unit => (lsqr_scaling::Unit, 0),
                    Scaling::Tensor => (lsqr_scaling::Tensor, 0),
                    Scaling::Row => (lsqr_scaling::Row, 0),
                    Scaling::Group(g) => (lsqr_scaling::Group, g),
                    Scaling::TwoLevel(t) => (lsqr_scaling::TwoLevel, t.sub_len()),
                };
                (codec_of(q.codec), lsqr_dtype::None, q.width.bits(), scaling, group)
            }
        };
        *out = lsqr_tensor_info {
            name: tensor.name.as_ptr(),
            ndim: shape.len(),
            dims,
            element_count: info.element_count(),
            codec,
            dtype,
            bits,
            scaling,
            group_size,
            stored_bytes: info.stored_bytes(),
        };
        Ok(())
    })
}

/// The type of a metadata value.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lsqr_value_type {
    /// UTF-8 text: `lsqr_model_metadata_get_string`.
    String = 0,
    /// Signed 64-bit integer: `lsqr_model_metadata_get_int`.
    Int = 1,
    /// 64-bit float: `lsqr_model_metadata_get_float`.
    Float = 2,
    /// Boolean: `lsqr_model_metadata_get_bool`.
    Bool = 3,
    /// List of signed 64-bit integers: `lsqr_model_metadata_get_int_list`.
    IntList = 4,
    /// List of 64-bit floats: `lsqr_model_metadata_get_float_list`.
    FloatList = 5,
}

fn type_of(v: &Value) -> lsqr_value_type {
    match v {
        Value::String(_) => lsqr_value_type::String,
        Value::Int(_) => lsqr_value_type::Int,
        Value::Float(_) => lsqr_value_type::Float,
        Value::Bool(_) => lsqr_value_type::Bool,
        Value::IntList(_) => lsqr_value_type::IntList,
        Value::FloatList(_) => lsqr_value_type::FloatList,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Int(_) => "an int",
        Value::Float(_) => "a float",
        Value::Bool(_) => "a bool",
        Value::IntList(_) => "an int list",
        Value::FloatList(_) => "a float list",
    }
}

fn type_mismatch(key: &str, found: &Value, wanted: &str) -> Error {
    Error::new(
        lsqr_status::TypeMismatch,
        format_args!("metadata '{key}' is {}, not {wanted}", type_name(found)),
    )
}

/// Writes the number of metadata entries of `model` to `*out`.
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_metadata_count(
    model: *const lsqr_model,
    out: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, out) = unsafe { (arg(model, "model")?, self::out(out, "out")?) };
        *out = model.metadata_keys.len();
        Ok(())
    })
}

/// Writes the key of the `index`-th metadata entry (file order) to
/// `*out`: a NUL-terminated string owned by the model (valid until
/// `lsqr_model_free`). `LSQR_STATUS_NOT_FOUND` if `index` is out of range.
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_metadata_key_at(
    model: *const lsqr_model,
    index: usize,
    out: *mut *const c_char,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, out) = unsafe { (arg(model, "model")?, self::out(out, "out")?) };
        let key = model.metadata_keys.get(index).ok_or_else(|| {
            Error::new(
                lsqr_status::NotFound,
                format_args!("metadata index {index} is out of range"),
            )
        })?;
        *out = key.as_ptr();
        Ok(())
    })
}

/// Writes the type of metadata entry `key` to `*out`, so a caller can pick
/// the matching `lsqr_model_metadata_get_*`. `LSQR_STATUS_NOT_FOUND` if
/// there is no such key.
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `key` is NULL or NUL-terminated; `out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_metadata_type(
    model: *const lsqr_model,
    key: *const c_char,
    out: *mut lsqr_value_type,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, key, out) =
            unsafe { (arg(model, "model")?, c_str(key, "key")?, self::out(out, "out")?) };
        *out = type_of(model.value(key)?);
        Ok(())
    })
}

/// Copies the string value of metadata `key`, NUL-terminated, into `buf`.
///
/// `*needed` receives the buffer length required (the UTF-8 length plus 1
/// for the NUL) on success and on `LSQR_STATUS_BUFFER_TOO_SMALL`; it is the
/// one output also written on that failure, so that a caller can call
/// once with `buf = NULL, buf_len = 0` to size the buffer. `buf` is
/// written only on success. `needed` may be NULL if the caller does not
/// want it. A string holding NUL bytes is copied whole (its C view ends at
/// the first one).
///
/// Errors: `LSQR_STATUS_NOT_FOUND`, `LSQR_STATUS_TYPE_MISMATCH`,
/// `LSQR_STATUS_BUFFER_TOO_SMALL`, `LSQR_STATUS_NULL_ARGUMENT` (model, key,
/// or `buf` with a non-zero `buf_len`).
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `key` is NULL or NUL-terminated; `buf`
/// is NULL or has `buf_len` writable bytes; `needed` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_metadata_get_string(
    model: *const lsqr_model,
    key: *const c_char,
    buf: *mut c_char,
    buf_len: usize,
    needed: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, key) = unsafe { (arg(model, "model")?, c_str(key, "key")?) };
        let value = model.value(key)?;
        let Value::String(s) = value else { return Err(type_mismatch(key, value, "a string")) };
        let bytes = s.as_bytes();
        // SAFETY: the export's contract on `buf`, `buf_len` and `needed`.
        unsafe { copy_out(bytes, Some(0), buf.cast::<u8>(), buf_len, needed) }
    })
}

/// Copies `items` (plus `terminator`, if any) to `buf` of `buf_len`
/// elements, with the size protocol of the `get_string` / `get_*_list`
/// functions: `*needed` (if non-null) is written on success and on
/// `BufferTooSmall`, `buf` only on success.
///
/// # Safety
/// `buf` is NULL or has `buf_len` writable elements; `needed` is NULL or
/// writable.
unsafe fn copy_out<T: Copy>(
    items: &[T],
    terminator: Option<T>,
    buf: *mut T,
    buf_len: usize,
    needed: *mut usize,
) -> Result<(), Error> {
    let need = items.len() + usize::from(terminator.is_some());
    if !needed.is_null() {
        // SAFETY: non-null and writable by the caller's contract.
        unsafe { *needed = need };
    }
    if buf_len < need {
        return Err(Error::new(
            lsqr_status::BufferTooSmall,
            format_args!("the value needs {need} elements, the buffer holds {buf_len}"),
        ));
    }
    if need == 0 {
        return Ok(());
    }
    if buf.is_null() {
        return Err(Error::null("buf"));
    }
    // SAFETY: `buf` is non-null with `buf_len >= need` writable elements.
    let dst = unsafe { std::slice::from_raw_parts_mut(buf, need) };
    dst[..items.len()].copy_from_slice(items);
    if let Some(t) = terminator {
        dst[items.len()] = t;
    }
    Ok(())
}

/// Writes the integer value of metadata `key` to `*out`. Only `INT`
/// entries are read (no conversion from floats or bools):
/// `LSQR_STATUS_TYPE_MISMATCH` otherwise.
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `key` is NULL or NUL-terminated; `out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_metadata_get_int(
    model: *const lsqr_model,
    key: *const c_char,
    out: *mut i64,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, key, out) =
            unsafe { (arg(model, "model")?, c_str(key, "key")?, self::out(out, "out")?) };
        match model.value(key)? {
            Value::Int(v) => *out = *v,
            other => return Err(type_mismatch(key, other, "an int")),
        }
        Ok(())
    })
}

/// Writes the float value of metadata `key` to `*out`. `INT` entries are
/// converted too (exactly up to 2^53), since a writer may store a whole
/// number either way; any other type is `LSQR_STATUS_TYPE_MISMATCH`.
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `key` is NULL or NUL-terminated; `out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_metadata_get_float(
    model: *const lsqr_model,
    key: *const c_char,
    out: *mut f64,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, key, out) =
            unsafe { (arg(model, "model")?, c_str(key, "key")?, self::out(out, "out")?) };
        match model.value(key)? {
            Value::Float(v) => *out = *v,
            Value::Int(v) => *out = *v as f64,
            other => return Err(type_mismatch(key, other, "a float")),
        }
        Ok(())
    })
}

/// Writes the boolean value of metadata `key` to `*out`
/// (`LSQR_STATUS_TYPE_MISMATCH` for other types).
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `key` is NULL or NUL-terminated; `out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_metadata_get_bool(
    model: *const lsqr_model,
    key: *const c_char,
    out: *mut bool,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, key, out) =
            unsafe { (arg(model, "model")?, c_str(key, "key")?, self::out(out, "out")?) };
        match model.value(key)? {
            Value::Bool(v) => *out = *v,
            other => return Err(type_mismatch(key, other, "a bool")),
        }
        Ok(())
    })
}

/// Copies the integer-list value of metadata `key` into `buf` (`buf_len`
/// elements), with the sizing protocol of
/// `lsqr_model_metadata_get_string`: `*needed` (the list length; `needed`
/// may be NULL) is written on success and on
/// `LSQR_STATUS_BUFFER_TOO_SMALL`, `buf` only on success. `buf` may be
/// NULL when `buf_len` is 0.
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `key` is NULL or NUL-terminated; `buf`
/// is NULL or has `buf_len` writable elements; `needed` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_metadata_get_int_list(
    model: *const lsqr_model,
    key: *const c_char,
    buf: *mut i64,
    buf_len: usize,
    needed: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, key) = unsafe { (arg(model, "model")?, c_str(key, "key")?) };
        let value = model.value(key)?;
        let Value::IntList(v) = value else {
            return Err(type_mismatch(key, value, "an int list"));
        };
        // SAFETY: the export's contract on `buf`, `buf_len` and `needed`.
        unsafe { copy_out(v, None, buf, buf_len, needed) }
    })
}

/// Copies the float-list value of metadata `key` into `buf`, like
/// `lsqr_model_metadata_get_int_list`.
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// As `lsqr_model_metadata_get_int_list`.
#[no_mangle]
pub unsafe extern "C" fn lsqr_model_metadata_get_float_list(
    model: *const lsqr_model,
    key: *const c_char,
    buf: *mut f64,
    buf_len: usize,
    needed: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, key) = unsafe { (arg(model, "model")?, c_str(key, "key")?) };
        let value = model.value(key)?;
        let Value::FloatList(v) = value else {
            return Err(type_mismatch(key, value, "a float list"));
        };
        // SAFETY: the export's contract on `buf`, `buf_len` and `needed`.
        unsafe { copy_out(v, None, buf, buf_len, needed) }
    })
}
