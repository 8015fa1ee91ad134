//! Two-level scales (FORMAT.md §5.2, `.lsq` 1.2): written and read back
//! bit for bit, marked 1.2 only when used, and every malformed form
//! refused with the place named.

mod common;

use std::io::Cursor;

use common::*;
use lsqr_codec::{
    quantize, CodecSpec, QuantizeOptions, QuantizedTensor, ScaleDtype, ScaleMethod, Scaling,
    TwoLevel,
};
use lsqr_format::{FormatError, LsqFile, LsqWriter, SectionKind, SectionProblem, TensorView};

fn two_level_tensor(
    shape: &[usize],
    shape_tl: TwoLevel,
    dtype: ScaleDtype,
    method: ScaleMethod,
) -> QuantizedTensor {
    let n: usize = shape.iter().product();
    let mut o = QuantizeOptions::new(CodecSpec::Lut, 4);
    o.scaling = Scaling::TwoLevel(shape_tl);
    o.scale_dtype = dtype;
    o.scale_method = method;
    quantize(&values(n, 7, 0.3), shape, &o).unwrap()
}

fn file_with(q: &QuantizedTensor) -> Vec<u8> {
    let mut w = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
    w.add_quantized("w", q).unwrap();
    w.add_raw_f32("b", &[3], &[1.0, 2.0, 3.0]).unwrap();
    w.finish().unwrap().into_inner()
}

#[test]
fn round_trip_bit_for_bit_and_version_1_2() {
    let shapes = [
        TwoLevel::DEFAULT,
        TwoLevel::new(64, 16, 5).unwrap(),
        TwoLevel::new(32, 8, 2).unwrap(),
        TwoLevel::new(4096, 2048, 8).unwrap(),
    ];
    for tl in shapes {
        for dtype in [ScaleDtype::F16, ScaleDtype::F32] {
            for method in [ScaleMethod::AbsMax, ScaleMethod::MseSearch] {
                // 200 is not a multiple of any super-block: short last blocks.
                let q = two_level_tensor(&[3, 200], tl, dtype, method);
                let bytes = file_with(&q);
                assert_eq!(&bytes[10..12], &2u16.to_le_bytes(), "two-level scales need 1.2");
                let f = LsqFile::from_bytes(&bytes).unwrap();
                f.verify().unwrap();
                let TensorView::Quantized(v) = f.tensor("w").unwrap() else { panic!("quantized") };
                assert_eq!(v.spec().scaling, Scaling::TwoLevel(tl));
                assert_eq!(v.scale_bytes(), &q.scales().to_le_bytes()[..]);
                assert_eq!(v.scales_f32(), q.scales().values().to_vec(), "{tl:?} {dtype:?}");
                let mut out = vec![0.0; 600];
                v.dequantize_into(&mut out).unwrap();
                let want = q.dequantize();
                assert!(out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }
}

#[test]
fn scales_section_layout() {
    // [2, 96] with 64/16/5: 2 super-blocks per row (64 + 32), 6 sub-blocks
    // per row; f16 super-scales (4 x 2 bytes), then 12 sub-scales of 5
    // bits packed LSB-first (60 bits: 8 bytes).
    let tl = TwoLevel::new(64, 16, 5).unwrap();
    let q = two_level_tensor(&[2, 96], tl, ScaleDtype::F16, ScaleMethod::MseSearch);
    let bytes = q.scales().to_le_bytes();
    assert_eq!(bytes.len(), 4 * 2 + 8);
    let supers = q.scales().super_scales().unwrap();
    let subs = q.scales().sub_scales().unwrap();
    assert_eq!((supers.len(), subs.len()), (4, 12));
    for (g, &sub) in subs.iter().enumerate() {
        let bit = 64 + 5 * g;
        let mut v = 0u16;
        for k in 0..5 {
            v |= u16::from(bytes[(bit + k) / 8] >> ((bit + k) % 8) & 1) << k;
        }
        assert_eq!(v, u16::from(sub), "sub-scale {g}");
        // Sub-blocks 0..4 of a row are in its first super-block, 4..6 in
        // its second.
        let sup = (g / 6) * 2 + usize::from(g % 6 >= 4);
        assert_eq!(q.scales().values()[g], supers[sup] * f32::from(sub));
    }
}

#[test]
fn files_without_two_level_scales_keep_their_version() {
    assert_eq!(&small_model()[10..12], &[0, 0]);
}

/// The `group_size` field of tensor `w` (the first tensor), in the header.
fn group_field_offset(file: &[u8]) -> usize {
    let header = &file[header_offset(file)..];
    let name_end = header.windows(5).position(|w| w == [1, 0, 0, 0, b'w']).unwrap() + 5;
    name_end + 8
}

#[test]
fn malformed_two_level_fields_are_refused() {
    let q = two_level_tensor(&[3, 200], TwoLevel::DEFAULT, ScaleDtype::F16, ScaleMethod::AbsMax);
    let file = file_with(&q);
    let at = group_field_offset(&file);
    assert_eq!(&file[header_offset(&file) + at..][..4], &[8, 5, 6, 0], "log2 S, log2 s, k, 0");
    for bad in [
        [8, 5, 6, 1],  // the last byte is not zero
        [8, 8, 6, 0],  // a sub-block as long as the super-block
        [8, 2, 6, 0],  // a sub-block of 4
        [8, 5, 9, 0],  // 9-bit sub-scales
        [8, 5, 1, 0],  // 1-bit sub-scales
        [13, 5, 6, 0], // a super-block of 8192
        [40, 5, 6, 0], // a shift beyond the width
    ] {
        let e = LsqFile::from_bytes(&patch_header(&file, at, &bad)).unwrap_err();
        assert!(matches!(e, FormatError::InvalidField { field: "group_size", .. }), "{bad:?}: {e}");
        assert!(e.to_string().contains("'w'"), "{e}");
    }
    // Scaling 4 is 1.2's: in a file that says 1.1 it is an unknown scaling.
    let old = patch_preamble(&file, 10, &1u16.to_le_bytes());
    let e = LsqFile::from_bytes(&old).unwrap_err();
    assert!(matches!(e, FormatError::InvalidField { field: "scaling", value: 4, .. }), "{e}");
}

#[test]
fn a_scales_section_of_the_wrong_length_is_refused() {
    let q = two_level_tensor(&[3, 200], TwoLevel::DEFAULT, ScaleDtype::F16, ScaleMethod::AbsMax);
    let file = file_with(&q);
    // 3 rows x 1 super-block (f16), 3 x 7 sub-scales of 6 bits: 6 + 16 bytes.
    let info = LsqFile::from_bytes(&file).unwrap().tensor_info("w").unwrap().clone();
    assert_eq!(info.scales.len, 6 + 16);
    let f = edit(&file, |_, t, _| t[0].scales.len -= 1);
    match LsqFile::from_bytes(&f).unwrap_err() {
        FormatError::Section { section: SectionKind::Scales, problem, .. } => {
            assert_eq!(problem, SectionProblem::WrongLength { expected: 22 })
        }
        e => panic!("{e}"),
    }
}

#[test]
fn a_bad_super_scale_is_refused_with_its_offset() {
    let q = two_level_tensor(&[3, 200], TwoLevel::DEFAULT, ScaleDtype::F16, ScaleMethod::AbsMax);
    let mut file = file_with(&q);
    let s = LsqFile::from_bytes(&file).unwrap().tensor_info("w").unwrap().scales;
    // Super-block 2's f16 scale becomes NaN (0x7e00).
    let at = s.offset as usize + 4;
    file[at..at + 2].copy_from_slice(&[0x00, 0x7e]);
    let f = LsqFile::from_bytes(&file).unwrap();
    let e = f.tensor("w").unwrap_err();
    assert!(
        matches!(e, FormatError::InvalidScale { group: 2, offset, .. } if offset == s.offset + 4),
        "{e}"
    );
}
