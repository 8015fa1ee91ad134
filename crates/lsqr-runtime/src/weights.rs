//! `.lsq` tensors as the kernels' weights.

use lsqr_format::{QuantizedView, TensorView};
use lsqr_kernels::packed::PackedWeight;
use lsqr_kernels::OpError;

/// The kernels' weight of a quantized `.lsq` tensor: its packed codes
/// borrowed from the file, its decode table and its scales (decoded to f32
/// once).
pub fn packed_weight<'f>(view: &QuantizedView<'f>) -> Result<PackedWeight<'f>, OpError> {
    // Two-level scales go to the kernels as stored (a byte per sub-block
    // for the integer kernels), and as f32 scales computed from them.
    if let (lsqr_codec::Scaling::TwoLevel(t), Some((sup, sub))) =
        (view.spec().scaling, view.two_level_scales())
    {
        return PackedWeight::new_two_level(
            view.packed(),
            view.spec().width.bits(),
            &view.info().shape_usize(),
            t,
            sup,
            sub,
            view.decode_table().to_vec(),
        );
    }
    let scales = if view.spec().scale_dtype.is_some() { view.scales_f32() } else { vec![1.0] };
    PackedWeight::new(
        view.packed(),
        view.spec().width.bits(),
        &view.info().shape_usize(),
        view.spec().scaling,
        scales,
        view.decode_table().to_vec(),
    )
}

/// Why a tensor cannot be a weight.
#[derive(Debug)]
pub enum WeightError {
    /// The tensor is raw and not a float type.
    NotFloat(&'static str),
    /// The tensor's data could not be read or does not fit its shape.
    Invalid(String),
}

impl std::fmt::Display for WeightError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightError::NotFloat(dtype) => {
                write!(f, "is raw {dtype}; weights must be float or quantized")
            }
            WeightError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for WeightError {}

/// The kernels' weight of any float or quantized `.lsq` tensor: quantized
/// ones borrow their codes from the file; raw ones (f32, f16, bf16, f64, at
/// any alignment) are converted to an owned f32 copy once, so that one code
/// path in the kernels serves both.
pub fn weight_of<'f>(view: &TensorView<'f>) -> Result<PackedWeight<'f>, WeightError> {
    let invalid = |e: &dyn std::fmt::Display| WeightError::Invalid(e.to_string());
    match view {
        TensorView::Quantized(q) => packed_weight(q).map_err(|e| invalid(&e)),
        TensorView::Raw(r) if r.dtype().is_float() => {
            let data = view.to_f32_vec().map_err(|e| invalid(&e))?;
            PackedWeight::from_f32_owned(data, &view.info().shape_usize()).map_err(|e| invalid(&e))
        }
        TensorView::Raw(r) => Err(WeightError::NotFloat(r.dtype().name())),
    }
}
