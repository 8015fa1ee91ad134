//! `.safetensors`: the header is parsed by the `safetensors` crate; tensor
//! data stays in the map.

use ::safetensors::{Dtype, SafeTensors};
use lsqr::format::RawDtype;

use super::{ImportError, SourceModel, SourceTensor, TensorBytes};

/// An 8-byte little-endian header length that fits the file, then `{`.
pub(super) fn looks_like(bytes: &[u8]) -> bool {
    let Some(len) = bytes.get(..8) else { return false };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    n >= 2 && n <= (bytes.len() as u64).saturating_sub(8) && bytes.get(8) == Some(&b'{')
}

fn dtype(d: Dtype) -> Option<RawDtype> {
    Some(match d {
        Dtype::F32 => RawDtype::F32,
        Dtype::F16 => RawDtype::F16,
        Dtype::BF16 => RawDtype::BF16,
        Dtype::F64 => RawDtype::F64,
        Dtype::I8 => RawDtype::I8,
        Dtype::I16 => RawDtype::I16,
        Dtype::I32 => RawDtype::I32,
        Dtype::I64 => RawDtype::I64,
        Dtype::U8 => RawDtype::U8,
        Dtype::BOOL => RawDtype::Bool,
        _ => return None,
    })
}

pub(super) fn import(model: &mut SourceModel) -> Result<(), ImportError> {
    let bytes = model.buffers[0].as_slice();
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| ImportError::new(&model.path, format!("invalid safetensors: {e}")))?;
    let base = bytes.as_ptr() as usize;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = dtype(view.dtype()).ok_or_else(|| {
            ImportError::tensor(&model.path, &name, format!("unsupported dtype {:?}", view.dtype()))
        })?;
        let offset = view.data().as_ptr() as usize - base;
        tensors.push(SourceTensor {
            name,
            dtype,
            shape: view.shape().to_vec(),
            bytes: TensorBytes::Contiguous { buffer: 0, offset },
        });
    }
    // The file's order (by data offset), not the header map's.
    tensors.sort_by_key(|t| match t.bytes {
        TensorBytes::Contiguous { offset, .. } => offset,
        _ => 0,
    });
    model.tensors = tensors;
    Ok(())
}
