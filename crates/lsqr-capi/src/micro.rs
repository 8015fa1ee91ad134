//! The micro runtime (`lsqr_micro_*`): `lsqr::runtime`'s plan bound to a
//! caller-owned arena.
//!
//! A `lsqr_micro` keeps one `Plan` (boxed, so its address is stable) and
//! one `Runner` borrowing it, the model's file and the caller's arena. The
//! runner cannot be re-created per call: `Plan::bind` zeroes the arena,
//! which would lose the inputs and the values `lsqr_micro_run_layer` left
//! for the next layer. The borrows are given the `'static` lifetime; the
//! invariants that make that sound are:
//!
//! - the plan is a `Box` turned into a raw pointer, freed only in `Drop`
//!   after the runner that borrows it is dropped, and written
//!   (`lsqr_micro_set_exact`) only while no runner borrows it: the runner
//!   is dropped first and bound again after;
//! - the model (whose boxed `LsqFile` the plan and runner read) outlives
//!   the runner, and the arena stays valid and is not accessed by anyone
//!   else until `lsqr_micro_free`: both are the caller's contract, stated
//!   on `lsqr_micro_load`.

use std::ffi::c_void;
use std::ptr::NonNull;

use lsqr_facade::runtime::{Plan, Runner, RuntimeError, ValueInfo};
use lsqr_format::LsqFile;

use crate::error::{ffi_fn, lsqr_status, Error};
use crate::model::{arg, lsqr_model, out, LSQR_MAX_DIMS};
use crate::ops::{floats, floats_mut};

/// A model's layer graph planned and bound to a caller-owned arena: set
/// the inputs, run (all layers or one at a time), read the outputs.
/// Created by `lsqr_micro_load`, freed by `lsqr_micro_free`. Opaque to C.
pub struct lsqr_micro {
    /// Borrows `*plan`, the model's file and the arena (see the module
    /// documentation); dropped before the plan. `None` only if binding
    /// again after `lsqr_micro_set_exact` failed, which cannot happen (the
    /// arena and the plan's sizes are those `lsqr_micro_load` bound).
    runner: Option<Runner<'static, 'static, 'static>>,
    /// From `Box::into_raw`; freed in `Drop`.
    plan: NonNull<Plan<'static>>,
    /// The caller's arena, as `lsqr_micro_load` got it (for binding again).
    arena: NonNull<u8>,
    arena_len: usize,
}

impl lsqr_micro {
    fn runner(&self) -> Result<&Runner<'static, 'static, 'static>, Error> {
        self.runner.as_ref().ok_or_else(unbound)
    }

    fn runner_mut(&mut self) -> Result<&mut Runner<'static, 'static, 'static>, Error> {
        self.runner.as_mut().ok_or_else(unbound)
    }

    fn plan(&self) -> Result<&Plan<'static>, Error> {
        Ok(self.runner()?.plan())
    }

    /// The arena as `lsqr_micro_load` got it, as a new exclusive slice.
    ///
    /// # Safety
    /// No runner may be bound to the arena (the slice claims it whole).
    unsafe fn arena(&mut self) -> &'static mut [u8] {
        // SAFETY: `lsqr_micro_load` checked `arena` non-null and
        // `arena_len` at most isize::MAX; the caller of `lsqr_micro_load`
        // keeps the bytes valid and untouched until `lsqr_micro_free`, and
        // no runner holds them (this function's contract).
        unsafe { std::slice::from_raw_parts_mut(self.arena.as_ptr(), self.arena_len) }
    }

    /// Drops the runner, sets the plan's exact option and binds the plan to
    /// the arena again (which zeroes it).
    fn set_exact(&mut self, exact: bool) -> Result<(), Error> {
        // The runner's borrows of the plan and the arena end here.
        self.runner = None;
        // SAFETY: `plan` came from `Box::leak` in `lsqr_micro_load` and is
        // freed only in `Drop`; no reference to it exists now that the
        // runner is gone, so this is the only access.
        unsafe { self.plan.as_mut() }.set_exact(exact);
        // SAFETY: the plan lives until `Drop`, which drops the runner
        // first; it is not written again while this borrow is held.
        let plan: &'static Plan<'static> = unsafe { self.plan.as_ref() };
        // SAFETY: no runner is bound to the arena (dropped above).
        let arena = unsafe { self.arena() };
        self.runner = Some(plan.bind(arena).map_err(runtime_error)?);
        Ok(())
    }
}

/// The status of a runner whose arena binding was lost (unreachable: see
/// `lsqr_micro::runner`).
fn unbound() -> Error {
    Error::new(
        lsqr_status::Panic,
        "internal error: the runner is not bound to its arena after lsqr_micro_set_exact",
    )
}

impl Drop for lsqr_micro {
    fn drop(&mut self) {
        // The runner goes first: it borrows the plan.
        self.runner = None;
        // SAFETY: `plan` came from `Box::leak` in `lsqr_micro_load` and is
        // freed once, here; the runner that borrowed it is gone.
        drop(unsafe { Box::from_raw(self.plan.as_ptr()) });
    }
}

// The C documentation promises that a runner may move between threads and
// that runners over one model may run on different threads at once. That
// holds because the plan and runner are Send (and the plan Sync) and only
// read the model's file, which is Sync; checked here at compile time.
#[allow(dead_code)]
fn _thread_safety_of_the_wrapped_types() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Plan<'static>>();
    send_sync::<LsqFile<'static>>();
    send::<Runner<'static, 'static, 'static>>();
}

/// The status and message of a runtime error. The message names the layer
/// index, the op and the tensor, attribute or value involved.
fn runtime_error(e: RuntimeError) -> Error {
    use RuntimeError as R;
    let e = match e {
        // The reader's message names the tensor and byte offset.
        R::Format(f) => return Error::from(f),
        e => e,
    };
    let status = match &e {
        R::NoGraph | R::NoSuchLayer { .. } | R::NoSuchInput { .. } | R::NoSuchOutput { .. } => {
            lsqr_status::NotFound
        }
        R::UnsupportedOp { .. } => lsqr_status::Unsupported,
        R::Weight { .. } | R::Shape { .. } | R::InputLength { .. } => lsqr_status::ShapeMismatch,
        R::InputShape { .. } | R::Attr { .. } => lsqr_status::Format,
        R::TooLarge { .. } => lsqr_status::InvalidArgument,
        R::ArenaTooSmall { .. } => lsqr_status::ArenaTooSmall,
        R::Kernel { source, .. } => Error::from(source.clone()).status,
        _ => lsqr_status::InvalidArgument,
    };
    let message = match &e {
        R::NoGraph => "the model has no layer graph to run".to_string(),
        _ => e.to_string(),
    };
    Error::new(status, message)
}

/// Checks `model`'s data (each tensor once) and plans its graph (the
/// caller keeps the model alive meanwhile).
fn plan(model: &lsqr_model) -> Result<Plan<'_>, Error> {
    model.check_data()?;
    Plan::new(model.file()).map_err(runtime_error)
}

/// Plans the layer graph of `model` and writes to `*bytes` the size of the
/// arena `lsqr_micro_load` needs for it: every activation and the
/// layers' scratch, plus 63 bytes so that an arena at any address can be
/// aligned inside. Planning checks the whole graph, so this reports the
/// same errors `lsqr_micro_load` would; it allocates while planning (as
/// `lsqr_micro_load` does) and frees everything before returning.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`; `LSQR_STATUS_NOT_FOUND` (the model
/// has no layer graph); `LSQR_STATUS_UNSUPPORTED` (an op the runtime does
/// not run: one missing from docs/FORMAT.md §6.1);
/// `LSQR_STATUS_SHAPE_MISMATCH` (a layer's inputs or weights do not fit
/// its op: count, rank, shape or dtype);
/// `LSQR_STATUS_FORMAT` (a tensor whose data fails its CRC-32, checked
/// once per tensor: `lsqr_model_open`; a graph input without its
/// `input_shape.<name>` metadata, a bad attribute, an unreadable tensor);
/// `LSQR_STATUS_INVALID_ARGUMENT` (sizes that overflow `size_t`). The last
/// error names the layer index, the op and the tensor, attribute or value.
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `model` is NULL or a live model; `bytes` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_arena_size(
    model: *const lsqr_model,
    bytes: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (model, bytes) = unsafe { (arg(model, "model")?, out(bytes, "bytes")?) };
        *bytes = plan(model)?.arena_len();
        Ok(())
    })
}

/// Plans the layer graph of `model` and binds it to the caller's arena of
/// `arena_len` bytes; writes the new runner to `*out` on success (untouched
/// on failure). Free it with `lsqr_micro_free`.
///
/// Memory: all heap allocation happens in this call (the plan: layer
/// descriptions, f32 copies of raw float weights, folded batch-norm
/// constants; packed weights are read in place from the model). Every
/// activation and all scratch live in the arena, which this call zeroes;
/// `lsqr_micro_set_input`, `lsqr_micro_run`, `lsqr_micro_run_layer`,
/// `lsqr_micro_get_output` and `lsqr_micro_borrow_output` allocate nothing
/// when they succeed (a failure allocates its `lsqr_last_error` message;
/// a thread's first lsqr call allocates that thread's message buffer, so
/// call `lsqr_micro_load` on the thread that runs). The arena may have any
/// alignment (buffers are aligned to 64 bytes inside it) and must hold at
/// least `lsqr_micro_arena_size` bytes.
///
/// Lifetimes: the runner reads the model's weights on every run, so the
/// model must stay open until `lsqr_micro_free` returns; the arena must
/// stay valid, and must not be read or written by the caller, until then
/// too (`lsqr_micro_free` does not free it). Several runners may share one
/// model, each with its own arena.
///
/// Errors: those of `lsqr_micro_arena_size`, plus
/// `LSQR_STATUS_NULL_ARGUMENT` (`arena` NULL),
/// `LSQR_STATUS_ARENA_TOO_SMALL` (the last error gives both sizes),
/// `LSQR_STATUS_INVALID_ARGUMENT` (`arena_len` above `PTRDIFF_MAX`).
///
/// Thread-safe: a model may be read from several threads at once, so
/// runners over one model may be loaded concurrently (into distinct
/// arenas).
///
/// # Safety
/// `model` is NULL or a live model that outlives the runner; `arena` is
/// NULL or points to `arena_len` writable bytes that stay valid and
/// untouched by the caller until the runner is freed; `out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_load(
    model: *const lsqr_model,
    arena: *mut c_void,
    arena_len: usize,
    out: *mut *mut lsqr_micro,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract on `model` and `out`.
        let (model, out) = unsafe { (arg(model, "model")?, self::out(out, "out")?) };
        let Some(arena_ptr) = NonNull::new(arena.cast::<u8>()) else {
            return Err(Error::null("arena"));
        };
        if isize::try_from(arena_len).is_err() {
            return Err(Error::new(
                lsqr_status::InvalidArgument,
                format_args!("arena_len {arena_len} exceeds PTRDIFF_MAX"),
            ));
        }
        // SAFETY: the model boxes its file, so the reference stays valid
        // while the model is alive, which the caller guarantees for the
        // runner's whole life; the file is only read.
        let file: &'static LsqFile<'static> = unsafe { &*(model.file() as *const _) };
        model.check_data()?;
        let plan = Plan::new(file).map_err(runtime_error)?;
        let needed = plan.arena_len();
        if arena_len < needed {
            return Err(Error::new(
                lsqr_status::ArenaTooSmall,
                format_args!(
                    "the arena is {arena_len} bytes; this model needs {needed} \
                     (lsqr_micro_arena_size)"
                ),
            ));
        }
        let plan = NonNull::from(Box::leak(Box::new(plan)));
        // SAFETY: `plan` points to the box just leaked, which is freed only
        // by `lsqr_micro`'s `Drop` after the runner (or just below on
        // failure, when no runner exists).
        let plan_ref: &'static Plan<'static> = unsafe { plan.as_ref() };
        // SAFETY: `arena` is non-null, points to `arena_len` writable bytes
        // (at most isize::MAX, checked) that stay valid and are accessed
        // by nothing else until `lsqr_micro_free`, by the caller's
        // contract; u8 has no alignment requirement.
        let bytes: &'static mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(arena_ptr.as_ptr(), arena_len) };
        match plan_ref.bind(bytes) {
            Ok(runner) => {
                let micro = Box::new(lsqr_micro {
                    runner: Some(runner),
                    plan,
                    arena: arena_ptr,
                    arena_len,
                });
                *out = Box::into_raw(micro);
                Ok(())
            }
            Err(e) => {
                // SAFETY: from `Box::leak` above; no runner borrows it.
                drop(unsafe { Box::from_raw(plan.as_ptr()) });
                Err(runtime_error(e))
            }
        }
    })
}

/// Frees a runner (its plan), not the arena, which the caller frees
/// afterwards, nor the model. `lsqr_micro_free(NULL)` does nothing.
///
/// It returns nothing and leaves `lsqr_last_error` as it was (a panic
/// while dropping, which would be a bug, is caught and becomes the last
/// error).
///
/// Not thread-safe with respect to the runner: no other thread may be
/// using it during or after the call.
///
/// # Safety
/// `micro` is NULL or a runner from `lsqr_micro_load` not freed before.
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_free(micro: *mut lsqr_micro) {
    if micro.is_null() {
        return;
    }
    // SAFETY: a pointer from `Box::into_raw` in `lsqr_micro_load`, freed
    // once by the caller's contract.
    let micro = unsafe { Box::from_raw(micro) };
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(micro)));
    if let Err(payload) = dropped {
        crate::error::set_last_error(&crate::error::panic_message(&*payload));
    }
}

/// Keeps every linear layer of the runner on the exact f32 table
/// path (`exact = true`), or lets layers whose weights allow it run on
/// integer dot products (`false`, the default of `lsqr_micro_load`):
/// quantized weights of C <= 8 bits, rows of whole bytes, groups of whole
/// blocks of 32. The integer path is 1.2-6x faster in the batch-1 bench
/// (by width and CPU),
/// not bit-exact with the f32 path, and its added error stays at least
/// 20 dB below the codec's own.
/// `LSQR_EXACT=1` in the environment forces the exact path whatever this
/// says. Other ops, and linear layers at batch > 1, always run the f32
/// path.
///
/// The runner is bound to its arena again, as `lsqr_micro_load` left it:
/// the arena is zeroed, so inputs set before this call must be set again
/// (call it right after `lsqr_micro_load`). The arena size does not
/// change (it was planned for the path that needs the most scratch).
/// Allocates nothing.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`.
///
/// Not thread-safe: no other call may use the runner at the same time.
///
/// # Safety
/// `micro` is NULL or a live runner.
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_set_exact(micro: *mut lsqr_micro, exact: bool) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let micro = unsafe { out(micro, "micro") }?;
        micro.set_exact(exact)
    })
}

/// Writes the number of layers to `*out` (`lsqr_micro_run_layer` takes
/// `0 .. count - 1`).
///
/// Thread-safe with other calls that take a `const lsqr_micro *`; not with
/// those that modify the runner.
///
/// # Safety
/// `micro` is NULL or a live runner; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_layer_count(
    micro: *const lsqr_micro,
    out: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (micro, out) = unsafe { (arg(micro, "micro")?, self::out(out, "out")?) };
        *out = micro.plan()?.layer_count();
        Ok(())
    })
}

/// Writes the number of graph inputs to `*out`.
///
/// Thread-safe with other calls that take a `const lsqr_micro *`; not with
/// those that modify the runner.
///
/// # Safety
/// `micro` is NULL or a live runner; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_input_count(
    micro: *const lsqr_micro,
    out: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (micro, out) = unsafe { (arg(micro, "micro")?, self::out(out, "out")?) };
        *out = micro.plan()?.inputs().len();
        Ok(())
    })
}

/// Writes the number of graph outputs to `*out`.
///
/// Thread-safe with other calls that take a `const lsqr_micro *`; not with
/// those that modify the runner.
///
/// # Safety
/// `micro` is NULL or a live runner; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_output_count(
    micro: *const lsqr_micro,
    out: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (micro, out) = unsafe { (arg(micro, "micro")?, self::out(out, "out")?) };
        *out = micro.plan()?.outputs().len();
        Ok(())
    })
}

/// Writes the rank and dims of one value, zeroing the dims past the rank.
///
/// # Safety
/// `ndim` is NULL or writable; `dims` is NULL or has `LSQR_MAX_DIMS`
/// writable elements.
unsafe fn write_shape(
    values: &[ValueInfo],
    index: usize,
    what: &str,
    ndim: *mut usize,
    dims: *mut usize,
) -> Result<(), Error> {
    // SAFETY: the caller's contract on `ndim`.
    let ndim = unsafe { out(ndim, "ndim") }?;
    if dims.is_null() {
        return Err(Error::null("dims"));
    }
    let count = values.len();
    let shape = &values
        .get(index)
        .ok_or_else(|| {
            Error::new(
                lsqr_status::NotFound,
                format_args!("{what} {index} does not exist; the graph has {count} {what}s"),
            )
        })?
        .shape;
    if shape.len() > LSQR_MAX_DIMS {
        return Err(Error::new(
            lsqr_status::Unsupported,
            format_args!("{what} {index} has {} dims, more than LSQR_MAX_DIMS", shape.len()),
        ));
    }
    let mut all = [0usize; LSQR_MAX_DIMS];
    all[..shape.len()].copy_from_slice(shape);
    // SAFETY: `dims` is non-null with LSQR_MAX_DIMS writable elements by
    // the caller's contract; written unaligned-tolerant.
    unsafe { dims.cast::<[usize; LSQR_MAX_DIMS]>().write_unaligned(all) };
    *ndim = shape.len();
    Ok(())
}

/// Writes the shape of graph input `index`: its rank to `*ndim` and its
/// dims, row-major, to `dims[0 .. *ndim]` (the rest of the
/// `LSQR_MAX_DIMS` entries are set to 0). `lsqr_micro_set_input` takes
/// the product of the dims in floats.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_NOT_FOUND` (`index`
/// past the inputs).
///
/// Thread-safe with other calls that take a `const lsqr_micro *`; not with
/// those that modify the runner.
///
/// # Safety
/// `micro` is NULL or a live runner; `ndim` is NULL or writable; `dims` is
/// NULL or has `LSQR_MAX_DIMS` writable elements.
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_input_shape(
    micro: *const lsqr_micro,
    index: usize,
    ndim: *mut usize,
    dims: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let micro = unsafe { arg(micro, "micro") }?;
        // SAFETY: the export's contract on `ndim` and `dims`.
        unsafe { write_shape(micro.plan()?.inputs(), index, "input", ndim, dims) }
    })
}

/// Writes the shape of graph output `index`, as `lsqr_micro_input_shape`
/// does for inputs. `lsqr_micro_get_output` copies the product of the dims
/// in floats.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_NOT_FOUND` (`index`
/// past the outputs).
///
/// Thread-safe with other calls that take a `const lsqr_micro *`; not with
/// those that modify the runner.
///
/// # Safety
/// `micro` is NULL or a live runner; `ndim` is NULL or writable; `dims` is
/// NULL or has `LSQR_MAX_DIMS` writable elements.
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_output_shape(
    micro: *const lsqr_micro,
    index: usize,
    ndim: *mut usize,
    dims: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let micro = unsafe { arg(micro, "micro") }?;
        // SAFETY: the export's contract on `ndim` and `dims`.
        unsafe { write_shape(micro.plan()?.outputs(), index, "output", ndim, dims) }
    })
}

/// Copies `len` floats from `data` into graph input `index`; `len` must be
/// exactly the input's element count (the product of its dims). Inputs
/// keep their values across runs until set again. Allocates nothing.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_NOT_FOUND` (`index`
/// past the inputs), `LSQR_STATUS_SHAPE_MISMATCH` (`len` is not the element
/// count; the last error gives both), `LSQR_STATUS_INVALID_ARGUMENT`
/// (`data` not aligned for float). The input is unchanged on failure.
///
/// Not thread-safe: no other call may use the runner at the same time.
///
/// # Safety
/// `micro` is NULL or a live runner; `data` is NULL or points to `len`
/// readable floats (not inside the runner's arena).
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_set_input(
    micro: *mut lsqr_micro,
    index: usize,
    data: *const f32,
    len: usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let micro = unsafe { out(micro, "micro") }?;
        // SAFETY: the export's contract on `data`.
        let data = unsafe { floats(data, len, "data") }?;
        micro.runner_mut()?.set_input(index, data).map_err(runtime_error)
    })
}

/// Runs layer `index` alone, reading the values earlier layers (or
/// `lsqr_micro_set_input`) left in the arena. Running layers `0 .. count -
/// 1` in order is exactly `lsqr_micro_run`; in between, a caller may time
/// layers or stop early. Allocates nothing.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_NOT_FOUND` (`index`
/// past the layers; the last error gives the count).
///
/// Not thread-safe: no other call may use the runner at the same time.
///
/// # Safety
/// `micro` is NULL or a live runner.
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_run_layer(micro: *mut lsqr_micro, index: usize) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let micro = unsafe { out(micro, "micro") }?;
        micro.runner_mut()?.run_layer(index).map_err(runtime_error)
    })
}

/// Runs every layer in order on the current inputs; the outputs are then
/// readable with `lsqr_micro_get_output` until the next run. May be
/// repeated. Allocates nothing.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`. (A planned graph has no run-time
/// failure; any other status would be a bug, reported with its layer.)
///
/// Not thread-safe: no other call may use the runner at the same time.
///
/// # Safety
/// `micro` is NULL or a live runner.
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_run(micro: *mut lsqr_micro) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let micro = unsafe { out(micro, "micro") }?;
        micro.runner_mut()?.run().map_err(runtime_error)
    })
}

/// Copies graph output `index`, as the last run computed it, to `out`:
/// exactly its element count of floats (the product of
/// `lsqr_micro_output_shape`'s dims); `out_len` is the capacity of `out`
/// and may be larger. Allocates nothing.
///
/// An output holds its layer's result from when that layer ran until the
/// next run reaches it again. Before that layer has run (no run yet, or
/// part way through a `lsqr_micro_run_layer` loop) its place in the arena
/// may hold other layers' intermediate values: read outputs after
/// `lsqr_micro_run` or after the last `lsqr_micro_run_layer`.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_NOT_FOUND` (`index`
/// past the outputs), `LSQR_STATUS_BUFFER_TOO_SMALL` (`out_len` below the
/// element count; `out` untouched), `LSQR_STATUS_INVALID_ARGUMENT` (`out`
/// not aligned for float).
///
/// Thread-safe with other calls that take a `const lsqr_micro *`; not with
/// those that modify the runner.
///
/// # Safety
/// `micro` is NULL or a live runner; `out` is NULL or points to `out_len`
/// writable floats (not inside the runner's arena).
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_get_output(
    micro: *const lsqr_micro,
    index: usize,
    out: *mut f32,
    out_len: usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let micro = unsafe { arg(micro, "micro") }?;
        let values = micro.runner()?.output(index).map_err(runtime_error)?;
        if out_len < values.len() {
            return Err(Error::new(
                lsqr_status::BufferTooSmall,
                format_args!(
                    "output {index} has {} values, the buffer holds {out_len}",
                    values.len()
                ),
            ));
        }
        // SAFETY: the export's contract on `out`.
        let out = unsafe { floats_mut(out, out_len, "out") }?;
        out[..values.len()].copy_from_slice(values);
        Ok(())
    })
}

/// Borrows graph output `index` without copying: writes a pointer to its
/// floats (inside the arena) to `*data` and its element count to `*len`.
/// The pointer stays valid until `lsqr_micro_free`; the values are those
/// of the last run (see `lsqr_micro_get_output` for when they are
/// complete) until the next `lsqr_micro_set_input`, `lsqr_micro_run` or
/// `lsqr_micro_run_layer` on this runner. The caller must not write
/// through it.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_NOT_FOUND` (`index`
/// past the outputs).
///
/// Thread-safe with other calls that take a `const lsqr_micro *`; not with
/// those that modify the runner.
///
/// # Safety
/// `micro` is NULL or a live runner; `data` and `len` are NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_micro_borrow_output(
    micro: *const lsqr_micro,
    index: usize,
    data: *mut *const f32,
    len: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let micro = unsafe { arg(micro, "micro") }?;
        // SAFETY: the export's contract on `data` and `len`.
        let (data, len) = unsafe { (out(data, "data")?, out(len, "len")?) };
        let values = micro.runner()?.output(index).map_err(runtime_error)?;
        *data = values.as_ptr();
        *len = values.len();
        Ok(())
    })
}
