//! The two bottom layers together: codes from `lsqr-codec` survive packing
//! by `lsqr-pack` for every codec and every width, and the packed size is
//! exactly C bits per weight.

use lsqr::codec::{quantize, CodecKind, CodecSpec, ErrorMetrics, QuantizeOptions};
use lsqr::pack::{pack_into, packed_len, unpack_into};
use lsqr::synthetic::{weights, Distribution};

#[test]
fn quantize_pack_unpack_dequantize_is_lossless_after_quantization() {
    let (rows, cols) = (7, 300); // odd sizes: partial groups, partial bytes
    let data = weights(Distribution::Laplacian, rows * cols, 0.05, 9);
    for kind in CodecKind::ALL {
        let mut previous_snr = f64::NEG_INFINITY;
        for bits in 2..=16u32 {
            let q = quantize(
                &data,
                &[rows, cols],
                &QuantizeOptions::new(CodecSpec::default_for(kind), bits),
            )
            .unwrap();
            let n = packed_len(q.codes().len(), bits).unwrap();
            assert_eq!(n, (rows * cols * bits as usize).div_ceil(8));
            let mut packed = vec![0u8; n];
            assert_eq!(pack_into(q.codes(), bits, &mut packed).unwrap(), n);
            let mut codes = vec![0u16; q.codes().len()];
            unpack_into(&packed, bits, &mut codes).unwrap();
            assert_eq!(codes, q.codes(), "{kind} C={bits}");
            let mut from_packed = vec![0.0f32; data.len()];
            lsqr::codec::dequantize_codes(
                q.codebook(),
                q.layout(),
                q.scale_values(),
                &codes,
                &mut from_packed,
            )
            .unwrap();
            assert_eq!(from_packed, q.dequantize());
            // More bits never hurt, and the codecs with evenly growing
            // resolution gain about 6 dB a bit (nf and fp flatten out:
            // their extreme levels and mantissa set the limit).
            let snr = ErrorMetrics::between(&data, &from_packed).unwrap().snr_db();
            assert!(
                snr >= previous_snr - 0.5,
                "{kind} C={bits}: {snr:.2} dB after {previous_snr:.2}"
            );
            previous_snr = snr;
            if matches!(kind, CodecKind::Log | CodecKind::Uniform | CodecKind::Lut) && bits >= 3 {
                assert!(snr > 5.5 * bits as f64 - 9.0, "{kind} C={bits}: {snr:.2} dB");
            }
        }
    }
}
