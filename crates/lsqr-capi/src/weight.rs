//! Prepared weights (`lsqr_weight_*`): a tensor's kernel weight (scales
//! decoded to f32, decode table and its integer copy), its bias and the
//! product's scratch, built once and used for any number of products.
//!
//! The packed codes of a quantized weight are not copied: the
//! `PackedWeight` borrows them from the model's file, with the `'static`
//! lifetime standing for "until the model is freed". That is sound
//! because the model keeps its file at a stable heap address and only
//! reads it, and because the caller must keep the model open until
//! `lsqr_weight_free` (the rule `lsqr_micro` follows too), stated on
//! `lsqr_weight_prepare`.

use lsqr_kernels::packed::{self, PackedWeight};

use crate::error::{ffi_fn, lsqr_status, Error};
use crate::model::{arg, lsqr_tensor, out};
use crate::ops::{
    bias_values, conv2d_args, conv2d_output_shape_into, conv2d_product, linear_product,
    lsqr_conv2d_params, prepared,
};

/// A weight prepared for repeated products: the kernels' form of a tensor
/// (packed codes read in place from the model, scales and decode tables
/// built once), its bias decoded once, and a scratch buffer the products
/// reuse. Created by `lsqr_weight_prepare`, freed by `lsqr_weight_free`.
/// Opaque to C.
pub struct lsqr_weight {
    /// Borrows the model's packed codes (see the module documentation), or
    /// owns the f32 values of a raw tensor.
    weight: PackedWeight<'static>,
    /// The tensor's name, for messages.
    name: String,
    /// The bias, `rows` values, or none.
    bias: Option<Vec<f32>>,
    /// Scratch of the products, grown on demand and kept.
    scratch: Vec<f32>,
}

// The C documentation lets a prepared weight move between threads and
// several of them run at once; the wrapped types allow it (checked at
// compile time).
#[allow(dead_code)]
fn _thread_safety_of_the_wrapped_types() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<lsqr_weight>();
}

/// Prepares `tensor` for repeated `lsqr_weight_linear` (a 2-D
/// `[out, in]` tensor) or `lsqr_weight_conv2d` (a 4-D
/// `[out, in / groups, kh, kw]` tensor) calls, with `bias` (NULL, or a
/// tensor of `out` elements, raw or quantized, from any model); writes the
/// new handle to `*out` on success (untouched on failure). Free it with
/// `lsqr_weight_free`.
///
/// Preparing does once what `lsqr_linear` and `lsqr_conv2d` do on every
/// call: decode the scales (`elements / G` floats), build the decode table
/// and, for C <= 8, its integer copy, decode the bias; a raw weight (any
/// dtype) is converted to f32 and kept. The packed codes are not copied:
/// they are read from the model on every product. It also sizes the
/// scratch of a batch-1 `lsqr_weight_linear`.
///
/// Lifetimes: the handle reads the model's packed codes, so the model of
/// `tensor` must stay open until `lsqr_weight_free` returns (the bias is
/// copied: its model need not outlive the handle). Several handles may be
/// prepared from one tensor.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_SHAPE_MISMATCH` (a
/// tensor that is neither 2-D nor 4-D, a bias of the wrong length),
/// `LSQR_STATUS_FORMAT` (unreadable tensor data, or data that fails its
/// CRC-32, checked on a tensor's first use: `lsqr_model_open`; the last
/// error names the tensor).
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `tensor` and `bias` are NULL or handles of live models, the model of
/// `tensor` outliving the new handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_weight_prepare(
    tensor: *const lsqr_tensor,
    bias: *const lsqr_tensor,
    out: *mut *mut lsqr_weight,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract on `tensor`, `bias` and `out`.
        let (tensor, bias, out) =
            unsafe { (arg(tensor, "tensor")?, bias.as_ref(), self::out(out, "out")?) };
        let info = tensor.info();
        let shape = info.shape_usize();
        if shape.len() != 2 && shape.len() != 4 {
            return Err(Error::new(
                lsqr_status::ShapeMismatch,
                format_args!(
                    "tensor '{}' has shape {shape:?}; a prepared weight is [out, in] (linear) \
                     or [out, in / groups, kh, kw] (conv2d)",
                    info.name
                ),
            ));
        }
        let bias = bias_values(bias, shape[0])?;
        // SAFETY: the weight borrows from the view only while the handle
        // lives, and the caller keeps the model open until the handle is
        // freed (the export's contract).
        let view = unsafe { tensor.view_unbounded() }?;
        let weight = prepared(&view)?;
        let scratch = if shape.len() == 2 {
            vec![0.0; packed::linear_scratch_len(&weight, 1)]
        } else {
            Vec::new()
        };
        let handle = lsqr_weight { weight, name: info.name.clone(), bias, scratch };
        *out = Box::into_raw(Box::new(handle));
        Ok(())
    })
}

/// Frees a prepared weight (not the model it reads).
/// `lsqr_weight_free(NULL)` does nothing.
///
/// It returns nothing and leaves `lsqr_last_error` as it was (a panic
/// while dropping, which would be a bug, is caught and becomes the last
/// error).
///
/// Not thread-safe with respect to the handle: no other thread may be
/// using it during or after the call.
///
/// # Safety
/// `weight` is NULL or a handle from `lsqr_weight_prepare` not freed
/// before.
#[no_mangle]
pub unsafe extern "C" fn lsqr_weight_free(weight: *mut lsqr_weight) {
    if weight.is_null() {
        return;
    }
    // SAFETY: a pointer from `Box::into_raw` in `lsqr_weight_prepare`,
    // freed once by the caller's contract.
    let weight = unsafe { Box::from_raw(weight) };
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(weight)));
    if let Err(payload) = dropped {
        crate::error::set_last_error(&crate::error::panic_message(&*payload));
    }
}

/// Keeps this weight's `lsqr_weight_linear` on the exact f32 table path
/// (`exact = true`), or lets it run on integer dot products up to batch 64 (8 at C >= 5)
/// where the weight allows (`false`, the default): quantized, C <= 8,
/// rows of whole bytes (columns a multiple of 8), groups of whole blocks
/// of 32. The integer path is 1.2-6x faster in the batch-1 bench (README
/// "Kernels on packed weights"), not bit-exact with the f32 path, and its added error stays at
/// least 20 dB below the codec's own. `LSQR_EXACT=1` in the environment
/// forces the exact path whatever this says. conv2d always runs the f32
/// path. Allocates nothing (the scratch is sized for either path).
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`.
///
/// Not thread-safe: no other call may use the handle at the same time.
///
/// # Safety
/// `weight` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn lsqr_weight_set_exact(
    weight: *mut lsqr_weight,
    exact: bool,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let weight = unsafe { out(weight, "weight") }?;
        weight.weight.set_exact(exact);
        Ok(())
    })
}

/// Writes to `*out` whether this weight's batch-1 `lsqr_weight_linear`
/// runs the exact f32 table path: `true` after
/// `lsqr_weight_set_exact(weight, true)`, under `LSQR_EXACT=1`, or for a
/// weight without an integer form (raw, C > 4, a table an integer grid
/// cannot hold, columns or groups not in blocks of 32); `false` when it
/// runs on integer dot products.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`.
///
/// Thread-safe with other calls that take a `const lsqr_weight *`; not
/// with those that modify the handle.
///
/// # Safety
/// `weight` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn lsqr_weight_is_exact(
    weight: *const lsqr_weight,
    out: *mut bool,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let (weight, out) = unsafe { (arg(weight, "weight")?, self::out(out, "out")?) };
        *out = weight.weight.int_form().is_none();
        Ok(())
    })
}

/// `lsqr_linear` on a prepared 2-D weight and its bias: `x` holds
/// `batch * in` floats, `y` receives `batch * out` floats. The result is
/// `lsqr_linear`'s bit for bit (with the same exact option:
/// `lsqr_weight_set_exact`).
///
/// Cost: the product only. The handle's scratch grows when a call needs
/// more than any before it (a larger batch; the integer path needs `in /
/// 2 + in / 32` floats per vector, up to 16 vectors, and above batch 1
/// `out` more per vector; batch 1's is sized by `lsqr_weight_prepare`);
/// after that, a successful call allocates nothing.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_SHAPE_MISMATCH` (a
/// weight that is not 2-D), `LSQR_STATUS_INVALID_ARGUMENT` (a length
/// overflowing `size_t`, a misaligned buffer). `y` is untouched when a
/// check fails.
///
/// Not thread-safe: the call writes the handle's scratch, so no other call
/// may use the handle at the same time (it may move between threads). To
/// multiply on several threads at once, prepare one handle per thread;
/// handles over one model may run on different threads at once. `x` and
/// `y` must not overlap.
///
/// # Safety
/// `weight` is NULL or a live handle; `x` is NULL or has `batch * in`
/// readable floats; `y` is NULL or has `batch * out` writable ones.
#[no_mangle]
pub unsafe extern "C" fn lsqr_weight_linear(
    weight: *mut lsqr_weight,
    x: *const f32,
    batch: usize,
    y: *mut f32,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let w = unsafe { out(weight, "weight") }?;
        // SAFETY: the export's contract on `x` and `y`, forwarded.
        unsafe {
            linear_product(&w.weight, &w.name, w.bias.as_deref(), x, batch, y, &mut w.scratch)
        }
    })
}

/// Writes to `out_shape[0..4]` the NCHW shape `lsqr_weight_conv2d` gives
/// for an NCHW `input_shape[0..4]` and `params`, as
/// `lsqr_conv2d_output_shape` does for the tensor. Allocates nothing.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_SHAPE_MISMATCH` (a
/// weight that is not 4-D, channels vs weight and groups),
/// `LSQR_STATUS_INVALID_ARGUMENT` (zero stride, dilation or groups; a
/// kernel larger than the padded input).
///
/// Thread-safe with other calls that take a `const lsqr_weight *`; not
/// with those that modify the handle.
///
/// # Safety
/// `weight` is NULL or a live handle; `params` is NULL or readable;
/// `input_shape` is NULL or has 4 readable elements; `out_shape` is NULL
/// or has 4 writable elements.
#[no_mangle]
pub unsafe extern "C" fn lsqr_weight_conv2d_output_shape(
    weight: *const lsqr_weight,
    params: *const lsqr_conv2d_params,
    input_shape: *const usize,
    out_shape: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract on `weight`.
        let w = unsafe { arg(weight, "weight") }?;
        let (shape, name) = (w.weight.shape(), &w.name);
        // SAFETY: the export's contract on the other arguments, forwarded.
        unsafe {
            conv2d_output_shape_into(shape, name, params, input_shape, out_shape, || Ok(&w.weight))
        }
    })
}

/// `lsqr_conv2d` on a prepared 4-D weight and its bias: the NCHW `input`
/// of shape `input_shape[0..4]`, `params`, and `output` of capacity
/// `output_len` floats, at least the product of
/// `lsqr_weight_conv2d_output_shape` (exactly that many are written). The
/// result is `lsqr_conv2d`'s bit for bit; conv2d always runs the f32
/// table path, whatever the exact option.
///
/// Cost: the convolution only. The handle's scratch (im2col patches and a
/// decoded filter block, bounded whatever the image size) grows when a
/// call needs more than any before it; after that, a successful call
/// allocates nothing.
///
/// Errors: as `lsqr_weight_conv2d_output_shape`, plus
/// `LSQR_STATUS_BUFFER_TOO_SMALL`. `output` is untouched when a check
/// fails.
///
/// Not thread-safe: as `lsqr_weight_linear` (one thread at a time per
/// handle). `input` and `output` must not overlap.
///
/// # Safety
/// `weight` is NULL or a live handle; `params` is NULL or readable;
/// `input_shape` is NULL or has 4 readable elements; `input` has the
/// product of `input_shape` readable floats; `output` has `output_len`
/// writable floats.
#[no_mangle]
pub unsafe extern "C" fn lsqr_weight_conv2d(
    weight: *mut lsqr_weight,
    params: *const lsqr_conv2d_params,
    input: *const f32,
    input_shape: *const usize,
    output: *mut f32,
    output_len: usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract on the handle.
        let w = unsafe { out(weight, "weight") }?;
        // SAFETY: the export's contract on `params` and `input_shape`.
        let (params, input_shape) = unsafe { conv2d_args(params, input_shape) }?;
        // SAFETY: the export's contract on `input` and `output`, forwarded.
        unsafe {
            conv2d_product(
                &w.weight,
                &w.name,
                w.bias.as_deref(),
                &params,
                input,
                input_shape,
                output,
                output_len,
                &mut w.scratch,
            )
        }
    })
}
