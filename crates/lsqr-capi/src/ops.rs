//! Decoding tensors and running layers on their packed weights.

use std::borrow::Borrow;

use lsqr_format::TensorView;
use lsqr_kernels::conv::{self, Conv2dParams};
use lsqr_kernels::packed::{self, PackedWeight};

use crate::error::{ffi_fn, lsqr_status, Error};
use crate::model::{arg, lsqr_tensor};

/// A float slice argument of `len` elements: non-null and 4-byte aligned
/// (a misaligned pointer is `InvalidArgument` rather than undefined
/// behaviour).
///
/// # Safety
/// `p` is NULL or points to `len` readable floats for the duration of the
/// call, not written through any other pointer meanwhile.
pub(crate) unsafe fn floats<'a>(p: *const f32, len: usize, name: &str) -> Result<&'a [f32], Error> {
    if p.is_null() {
        return Err(Error::null(name));
    }
    if !p.is_aligned() {
        return Err(misaligned(name));
    }
    // SAFETY: non-null, aligned, and `len` readable floats by the contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A writable float slice argument of `len` elements (see [`floats`]).
///
/// # Safety
/// `p` is NULL or points to `len` writable floats for the duration of the
/// call, not accessed through any other pointer meanwhile.
pub(crate) unsafe fn floats_mut<'a>(
    p: *mut f32,
    len: usize,
    name: &str,
) -> Result<&'a mut [f32], Error> {
    if p.is_null() {
        return Err(Error::null(name));
    }
    if !p.is_aligned() {
        return Err(misaligned(name));
    }
    // SAFETY: non-null, aligned, and `len` writable, unaliased floats by
    // the contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

fn misaligned(name: &str) -> Error {
    Error::new(lsqr_status::InvalidArgument, format_args!("`{name}` is not aligned for float"))
}

pub(crate) fn overflow(what: &str) -> Error {
    Error::new(lsqr_status::InvalidArgument, format_args!("{what} overflows size_t"))
}

/// The bias values of a layer with `features` outputs: any tensor (raw or
/// quantized) with exactly that many elements, decoded to f32.
pub(crate) fn bias_values(
    bias: Option<&lsqr_tensor>,
    features: usize,
) -> Result<Option<Vec<f32>>, Error> {
    let Some(bias) = bias else { return Ok(None) };
    let info = bias.info();
    if info.element_count() != features {
        return Err(Error::new(
            lsqr_status::ShapeMismatch,
            format_args!(
                "bias '{}' has {} elements; the weight has {features} outputs",
                info.name,
                info.element_count()
            ),
        ));
    }
    Ok(Some(bias.view()?.to_f32_vec()?))
}

/// The kernels' weight of a tensor: a quantized one keeps its packed codes
/// where they are (borrowed from the view) with its scales and decode
/// tables prepared; a raw one (any dtype) is converted to f32 and owned.
pub(crate) fn prepared<'f>(view: &TensorView<'f>) -> Result<PackedWeight<'f>, Error> {
    match view {
        TensorView::Quantized(q) => Ok(lsqr_facade::runtime::packed_weight(q)?),
        raw @ TensorView::Raw(_) => {
            let shape = raw.info().shape_usize();
            Ok(PackedWeight::from_f32_owned(raw.to_f32_vec()?, &shape)?)
        }
    }
}

/// `[out, in]` of a linear weight named `name`, or `ShapeMismatch`.
pub(crate) fn linear_dims(shape: &[usize], name: &str) -> Result<[usize; 2], Error> {
    match *shape {
        [out, inp] => Ok([out, inp]),
        _ => Err(Error::new(
            lsqr_status::ShapeMismatch,
            format_args!("linear weight '{name}' has shape {shape:?}; it must be [out, in]"),
        )),
    }
}

/// Checks that the weight named `name` is 4-D, as conv2d needs.
pub(crate) fn check_conv_shape(shape: &[usize], name: &str) -> Result<(), Error> {
    if shape.len() != 4 {
        return Err(Error::new(
            lsqr_status::ShapeMismatch,
            format_args!(
                "conv2d weight '{name}' has shape {shape:?}; it must be [out, in / groups, kh, kw]"
            ),
        ));
    }
    Ok(())
}

/// The first `len` values of `scratch`, grown (zero-filled) to that length
/// if it is shorter: a buffer kept across calls allocates only when a call
/// needs more than any before it.
pub(crate) fn scratch_of(scratch: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    &mut scratch[..len]
}

/// `y = x · Wᵀ + b` for a weight named `name` (2-D, else
/// `ShapeMismatch`) and a bias already checked to have `out` values, with
/// the scratch taken from `scratch` (grown if needed). `y` is written only
/// after every check has passed.
///
/// # Safety
/// `x` is NULL or has `batch * in` readable floats, `y` NULL or
/// `batch * out` writable ones, not overlapping `x`.
pub(crate) unsafe fn linear_product(
    w: &PackedWeight<'_>,
    name: &str,
    bias: Option<&[f32]>,
    x: *const f32,
    batch: usize,
    y: *mut f32,
    scratch: &mut Vec<f32>,
) -> Result<(), Error> {
    let [out_features, in_features] = linear_dims(w.shape(), name)?;
    let x_len = batch.checked_mul(in_features).ok_or_else(|| overflow("batch * in"))?;
    let y_len = batch.checked_mul(out_features).ok_or_else(|| overflow("batch * out"))?;
    // SAFETY: the caller's contract gives `x_len` readable and `y_len`
    // writable, non-overlapping floats.
    let (x, y) = unsafe { (floats(x, x_len, "x")?, floats_mut(y, y_len, "y")?) };
    let scratch = scratch_of(scratch, packed::linear_scratch_len(w, batch));
    packed::linear_into(w, bias, x, batch, y, scratch)?;
    Ok(())
}

/// The conv2d of a 4-D weight named `name` (see `lsqr_conv2d`), with a
/// bias already checked to have `out_channels` values and the scratch
/// taken from `scratch` (grown if needed). `output` is written only after
/// every check has passed.
///
/// # Safety
/// `input` is NULL or has the product of `input_shape` readable floats;
/// `output` is NULL or has `output_len` writable ones, not overlapping
/// `input`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn conv2d_product(
    w: &PackedWeight<'_>,
    name: &str,
    bias: Option<&[f32]>,
    params: &Conv2dParams,
    input: *const f32,
    input_shape: [usize; 4],
    output: *mut f32,
    output_len: usize,
    scratch: &mut Vec<f32>,
) -> Result<(), Error> {
    check_conv_shape(w.shape(), name)?;
    let out_shape = conv::conv2d_output_shape(w, input_shape, params)?;
    let input_len = input_shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| overflow("the input's element count"))?;
    // conv2d_output_shape has checked the output length fits usize.
    let needed: usize = out_shape.iter().product();
    if output_len < needed {
        return Err(Error::new(
            lsqr_status::BufferTooSmall,
            format_args!(
                "conv2d output {out_shape:?} needs {needed} floats, the buffer holds {output_len}"
            ),
        ));
    }
    let scratch = scratch_of(scratch, conv::conv2d_scratch_len(w, input_shape, params)?);
    // SAFETY: the caller's contract gives `input_len` readable floats at
    // `input` and `output_len >= needed` writable, non-overlapping ones at
    // `output`.
    let (input, output) =
        unsafe { (floats(input, input_len, "input")?, floats_mut(output, needed, "output")?) };
    conv::conv2d_into(w, bias, input, input_shape, params, output, scratch)?;
    Ok(())
}

/// Decodes (quantized) or converts (raw f32, f16, bf16, f64, integers,
/// bool) every element of `tensor` to f32 into `out`, row-major. Writes
/// exactly `lsqr_tensor_info.element_count` floats; `out_len` is the
/// capacity of `out` in floats and must be at least that
/// (`LSQR_STATUS_BUFFER_TOO_SMALL` otherwise). `out` may be NULL only for
/// a tensor of 0 elements.
///
/// `out` is untouched when an argument check fails; the data is decoded
/// straight into it, so only a fault in the tensor's data found while
/// decoding (which the reader's up-front checks rule out) could leave it
/// partly written.
///
/// Cost: one pass over the packed codes; builds the codebook's decode
/// table (2^C floats) on each call. The first use of a tensor also checks
/// the CRC-32s of its data (`LSQR_STATUS_FORMAT` on a mismatch, `out`
/// untouched; `lsqr_model_open`).
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `tensor` is NULL or a handle of a live model; `out` is NULL or has
/// `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn lsqr_tensor_dequantize(
    tensor: *const lsqr_tensor,
    out: *mut f32,
    out_len: usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract.
        let tensor = unsafe { arg(tensor, "tensor") }?;
        let info = tensor.info();
        let count = info.element_count();
        if out_len < count {
            return Err(Error::new(
                lsqr_status::BufferTooSmall,
                format_args!(
                    "tensor '{}' has {count} elements; the buffer holds {out_len}",
                    info.name
                ),
            ));
        }
        if count == 0 {
            return Ok(());
        }
        let view = tensor.view()?;
        // SAFETY: the contract gives `out_len >= count` writable floats.
        let out = unsafe { floats_mut(out, count, "out") }?;
        view.dequantize_into(out)?;
        Ok(())
    })
}

/// A fully connected layer: `y = x · Wᵀ + b`.
///
/// `weight` is a 2-D tensor `[out_features, in_features]` (PyTorch's
/// `nn.Linear.weight`). `x` holds `batch * in_features` floats (`batch`
/// rows), `y` receives `batch * out_features` floats. `bias` is NULL or a
/// tensor of `out_features` elements (raw or quantized).
///
/// A quantized weight is multiplied from its packed codes without being
/// expanded to f32; a raw weight is converted to f32 and multiplied
/// directly. Each call prepares the weight anew (decodes the scales,
/// `elements / G` floats, builds the decode tables, decodes the bias) and
/// allocates its scratch: to multiply by one weight repeatedly, prepare it
/// once with `lsqr_weight_prepare` and call `lsqr_weight_linear`, which
/// gives the same floats bit for bit.
///
/// Precision: a quantized weight of C <= 8 bits runs on integer dot
/// products where its table allows (each input vector quantized per block
/// of 32 or 64 to int8 or int16, up to batch 64 (8 at C >= 5); a vector's outputs are
/// the same bits at any batch up to that): 1.2-6x faster than the f32
/// table path in the batch-1 bench (by width and CPU) and 2.7-4.3x f32
/// sgemm at batch 8, not
/// bit-exact with the f32 path,
/// and its added error at least 20 dB below the codec's own. `LSQR_EXACT=1`
/// in the environment (read once per process) selects the exact f32 path
/// for every call; a prepared weight selects it per weight
/// (`lsqr_weight_set_exact`).
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_SHAPE_MISMATCH` (a
/// weight that is not 2-D, a bias of the wrong length),
/// `LSQR_STATUS_INVALID_ARGUMENT` (a length overflowing `size_t`, a
/// misaligned buffer), `LSQR_STATUS_FORMAT` (weight or bias data that
/// fails its CRC-32, checked on a tensor's first use: `lsqr_model_open`).
/// `y` is untouched when a check fails.
///
/// Thread-safe: a model may be read from several threads at once; `x` and
/// `y` must not overlap.
///
/// # Safety
/// `weight` and `bias` are NULL or handles of live models; `x` has
/// `batch * in_features` readable floats and `y` `batch * out_features`
/// writable ones.
#[no_mangle]
pub unsafe extern "C" fn lsqr_linear(
    weight: *const lsqr_tensor,
    bias: *const lsqr_tensor,
    x: *const f32,
    batch: usize,
    y: *mut f32,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract on `weight` and `bias`.
        let (weight, bias) = unsafe { (arg(weight, "weight")?, bias.as_ref()) };
        let info = weight.info();
        let [out_features, _] = linear_dims(&info.shape_usize(), &info.name)?;
        let bias = bias_values(bias, out_features)?;
        if x.is_null() {
            return Err(Error::null("x"));
        }
        if y.is_null() {
            return Err(Error::null("y"));
        }
        let view = weight.view()?;
        let w = prepared(&view)?;
        // SAFETY: the export's contract on `x` and `y`, forwarded.
        unsafe { linear_product(&w, &info.name, bias.as_deref(), x, batch, y, &mut Vec::new()) }
    })
}

/// Stride, padding, dilation and groups of `lsqr_conv2d`, each pair as
/// `{along height, along width}` (PyTorch's `nn.Conv2d` arguments). The
/// padding is symmetric zero padding.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct lsqr_conv2d_params {
    /// Step between output positions (at least 1).
    pub stride: [usize; 2],
    /// Zeros added on both sides.
    pub padding: [usize; 2],
    /// Spacing between kernel taps (at least 1; 1 is a dense kernel).
    pub dilation: [usize; 2],
    /// Channel groups (at least 1; `in_channels` for depthwise).
    pub groups: usize,
}

impl From<&lsqr_conv2d_params> for Conv2dParams {
    fn from(p: &lsqr_conv2d_params) -> Self {
        Self { stride: p.stride, padding: p.padding, dilation: p.dilation, groups: p.groups }
    }
}

/// The `[n, c, h, w]` array argument of the conv2d functions.
///
/// # Safety
/// `p` is NULL or points to 4 readable `size_t`.
pub(crate) unsafe fn shape4(p: *const usize, name: &str) -> Result<[usize; 4], Error> {
    if p.is_null() {
        return Err(Error::null(name));
    }
    // SAFETY: non-null with 4 readable elements by the contract; read
    // unaligned-tolerant since C arrays of size_t are aligned anyway.
    Ok(unsafe { p.cast::<[usize; 4]>().read_unaligned() })
}

/// The `params` and `input_shape` arguments of the conv2d functions,
/// checked in that order.
///
/// # Safety
/// `params` is NULL or readable; `input_shape` is NULL or has 4 readable
/// `size_t`.
pub(crate) unsafe fn conv2d_args(
    params: *const lsqr_conv2d_params,
    input_shape: *const usize,
) -> Result<(Conv2dParams, [usize; 4]), Error> {
    // SAFETY: the caller's contract on `params`.
    let params = unsafe { arg(params, "params") }?;
    // SAFETY: the caller's contract on `input_shape`.
    let input_shape = unsafe { shape4(input_shape, "input_shape") }?;
    Ok((Conv2dParams::from(params), input_shape))
}

/// The conv2d output-shape functions after their weight handle's check:
/// checks `params`, `input_shape` and `out_shape` (in that order), then
/// that the weight `name` of shape `weight_shape` is 4-D, and writes to
/// `out_shape[0..4]` the output shape of the weight `weight()` gives
/// (called only once every check has passed).
///
/// # Safety
/// `params` is NULL or readable; `input_shape` is NULL or has 4 readable
/// elements; `out_shape` is NULL or has 4 writable elements.
pub(crate) unsafe fn conv2d_output_shape_into<'w, W: Borrow<PackedWeight<'w>>>(
    weight_shape: &[usize],
    name: &str,
    params: *const lsqr_conv2d_params,
    input_shape: *const usize,
    out_shape: *mut usize,
    weight: impl FnOnce() -> Result<W, Error>,
) -> Result<(), Error> {
    // SAFETY: the caller's contract on `params` and `input_shape`.
    let (params, input_shape) = unsafe { conv2d_args(params, input_shape) }?;
    if out_shape.is_null() {
        return Err(Error::null("out_shape"));
    }
    check_conv_shape(weight_shape, name)?;
    let shape = conv::conv2d_output_shape(weight()?.borrow(), input_shape, &params)?;
    // SAFETY: non-null with 4 writable elements by the contract.
    unsafe { out_shape.cast::<[usize; 4]>().write_unaligned(shape) };
    Ok(())
}

/// Writes to `out_shape[0..4]` the NCHW shape `lsqr_conv2d` produces for an
/// NCHW `input_shape[0..4]`, `weight` and `params`, without computing
/// anything. The weight is `[out_channels, in_channels / groups, kh, kw]`.
///
/// Errors: `LSQR_STATUS_NULL_ARGUMENT`, `LSQR_STATUS_SHAPE_MISMATCH`
/// (channels vs weight and groups), `LSQR_STATUS_INVALID_ARGUMENT` (zero
/// stride, dilation or groups; a kernel larger than the padded input),
/// `LSQR_STATUS_UNSUPPORTED` (a raw weight of a non-float dtype).
///
/// Thread-safe: a model may be read from several threads at once.
///
/// # Safety
/// `weight` is NULL or a handle of a live model; `params` is NULL or
/// readable; `input_shape` is NULL or has 4 readable elements;
/// `out_shape` is NULL or has 4 writable elements.
#[no_mangle]
pub unsafe extern "C" fn lsqr_conv2d_output_shape(
    weight: *const lsqr_tensor,
    params: *const lsqr_conv2d_params,
    input_shape: *const usize,
    out_shape: *mut usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract on `weight`.
        let weight = unsafe { arg(weight, "weight") }?;
        let info = weight.info();
        let shape = info.shape_usize();
        let prepare = || prepared(&weight.view()?);
        // SAFETY: the export's contract on the other arguments, forwarded.
        unsafe {
            conv2d_output_shape_into(&shape, &info.name, params, input_shape, out_shape, prepare)
        }
    })
}

/// A 2-D convolution (cross-correlation, as PyTorch's `nn.Conv2d`) of the
/// NCHW `input` of shape `input_shape[0..4]` with a `weight` (quantized,
/// or raw floats converted to f32 for the call)
/// `[out_channels, in_channels / groups, kh, kw]`, plus `bias` (NULL or
/// `out_channels` elements).
///
/// `input` holds `n * c * h * w` floats. The output shape is what
/// `lsqr_conv2d_output_shape` gives; `output_len` is the capacity of
/// `output` in floats and must be at least the product of that shape
/// (`LSQR_STATUS_BUFFER_TOO_SMALL` otherwise), of which exactly that many
/// are written. A quantized weight is decoded a block of filters at a time
/// into scratch this call allocates (im2col + blocked GEMM; depthwise runs
/// direct); it is never expanded whole. Each call prepares the weight anew
/// (scales, decode table, bias): for repeated calls, prepare it once with
/// `lsqr_weight_prepare` and call `lsqr_weight_conv2d` (the same floats).
/// conv2d always runs the f32 table path (the integer path is linear
/// only), so `LSQR_EXACT` does not change its result.
///
/// Errors: as `lsqr_conv2d_output_shape`, plus
/// `LSQR_STATUS_BUFFER_TOO_SMALL`, `LSQR_STATUS_SHAPE_MISMATCH` for a
/// bias of the wrong length, and `LSQR_STATUS_FORMAT` (weight or bias
/// data that fails its CRC-32, checked on a tensor's first use:
/// `lsqr_model_open`). `output` is untouched when a check fails.
///
/// Thread-safe: a model may be read from several threads at once; `input`
/// and `output` must not overlap.
///
/// # Safety
/// `weight` and `bias` are NULL or handles of live models; `params` is
/// NULL or readable; `input_shape` is NULL or has 4 readable elements;
/// `input` has the product of `input_shape` readable floats; `output` has
/// `output_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn lsqr_conv2d(
    weight: *const lsqr_tensor,
    bias: *const lsqr_tensor,
    params: *const lsqr_conv2d_params,
    input: *const f32,
    input_shape: *const usize,
    output: *mut f32,
    output_len: usize,
) -> lsqr_status {
    ffi_fn!({
        // SAFETY: the export's contract on the handles.
        let (weight, bias) = unsafe { (arg(weight, "weight")?, bias.as_ref()) };
        // SAFETY: the export's contract on `params` and `input_shape`.
        let (params, input_shape) = unsafe { conv2d_args(params, input_shape) }?;
        let info = weight.info();
        check_conv_shape(&info.shape_usize(), &info.name)?;
        let w = prepared(&weight.view()?)?;
        // Checked before the product (as the output shape is): a bias of
        // the wrong length leaves `output` untouched.
        let bias = bias_values(bias, w.rows())?;
        // SAFETY: the export's contract on `input` and `output`, forwarded.
        unsafe {
            conv2d_product(
                &w,
                &info.name,
                bias.as_deref(),
                &params,
                input,
                input_shape,
                output,
                output_len,
                &mut Vec::new(),
            )
        }
    })
}
