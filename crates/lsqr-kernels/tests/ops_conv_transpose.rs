//! ConvTranspose against a direct scatter loop in f64, on plain and
//! quantized weights, the ONNX docs' examples, and every error.

use lsqr_codec::Scaling;
use lsqr_kernels::conv_transpose::*;
use lsqr_kernels::packed::{dequantize_into, PackedWeight};
use lsqr_kernels::OpError;
use proptest::prelude::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

/// Every input pixel times every tap, added where it lands: (output, and
/// per output the sum of |terms| for the error bound).
fn reference(
    w: &[f32],
    wshape: [usize; 4],
    bias: Option<&[f32]>,
    x: &[f32],
    input: [usize; 4],
    p: &ConvTranspose2dParams,
) -> (Vec<f64>, Vec<f64>, [usize; 4]) {
    let [n, cin, h, wd] = input;
    let [_, cout_g, kh, kw] = wshape;
    let cout = cout_g * p.groups;
    let size = |len: usize, a: usize, k: usize| {
        p.stride[a] * (len - 1) + p.output_padding[a] + (k - 1) * p.dilation[a] + 1
            - p.pads[a]
            - p.pads[a + 2]
    };
    let (oh, ow) = (size(h, 0, kh), size(wd, 1, kw));
    let mut out = vec![0.0f64; n * cout * oh * ow];
    let mut mag = vec![0.0f64; out.len()];
    for b in 0..n {
        for co in 0..cout {
            let bv = bias.map_or(0.0, |bs| bs[co] as f64);
            for i in 0..oh * ow {
                out[(b * cout + co) * oh * ow + i] = bv;
                mag[(b * cout + co) * oh * ow + i] = bv.abs();
            }
        }
    }
    let cin_g = cin / p.groups;
    for b in 0..n {
        for ci in 0..cin {
            let g = ci / cin_g;
            for iy in 0..h {
                for ix in 0..wd {
                    let xv = x[((b * cin + ci) * h + iy) * wd + ix] as f64;
                    for cl in 0..cout_g {
                        let co = g * cout_g + cl;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let oy = (iy * p.stride[0] + ky * p.dilation[0]) as isize
                                    - p.pads[0] as isize;
                                let ox = (ix * p.stride[1] + kx * p.dilation[1]) as isize
                                    - p.pads[1] as isize;
                                if oy < 0 || ox < 0 || oy as usize >= oh || ox as usize >= ow {
                                    continue;
                                }
                                let wv = w[((ci * cout_g + cl) * kh + ky) * kw + kx] as f64;
                                let o = ((b * cout + co) * oh + oy as usize) * ow + ox as usize;
                                out[o] += xv * wv;
                                mag[o] += (xv * wv).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (out, mag, [n, cout, oh, ow])
}

#[derive(Debug, Clone)]
struct Case {
    input: [usize; 4],
    wshape: [usize; 4],
    p: ConvTranspose2dParams,
    bias: bool,
    quantized: Option<(u32, usize)>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (0usize..3, 1usize..4, 0usize..4, 0usize..4), // n, groups, cin_g, cout_g
        (1usize..6, 1usize..6, 1usize..4, 1usize..4), // h, w, kh, kw
        (1usize..4, 1usize..4, 1usize..3, 1usize..3), // strides, dilations
        (0usize..4, 0usize..4, 0usize..4, 0usize..4), // pads
        (0usize..3, 0usize..3),                       // output_padding
        any::<bool>(),
        prop_oneof![Just(None), (1u32..9, 0usize..5).prop_map(Some)],
        any::<u64>(),
    )
        .prop_filter_map(
            "valid geometry",
            |(
                (n, groups, cin_g, cout_g),
                (h, w, kh, kw),
                (sh, sw, dh, dw),
                pads,
                op,
                bias,
                q,
                seed,
            )| {
                let p = ConvTranspose2dParams {
                    stride: [sh, sw],
                    pads: [pads.0, pads.1, pads.2, pads.3],
                    dilation: [dh, dw],
                    output_padding: [op.0, op.1],
                    groups,
                };
                let ok = (0..2).all(|a| {
                    let (len, k) = ([h, w][a], [kh, kw][a]);
                    let ext =
                        p.stride[a] * (len - 1) + p.output_padding[a] + (k - 1) * p.dilation[a] + 1;
                    p.output_padding[a] < p.stride[a].max(p.dilation[a])
                        && ext > p.pads[a] + p.pads[a + 2]
                });
                ok.then_some(Case {
                    input: [n, cin_g * groups, h, w],
                    wshape: [cin_g * groups, cout_g, kh, kw],
                    p,
                    bias,
                    quantized: q,
                    seed: seed | 1,
                })
            },
        )
}

fn run_case(c: &Case) {
    let mut rng = Rng(c.seed);
    let count: usize = c.wshape.iter().product();
    let plain = rng.vec(count);
    let (packed, scales, table);
    let w = match c.quantized {
        None => PackedWeight::from_f32(&plain, &c.wshape).unwrap(),
        Some((bits, scaling)) => {
            let codes: Vec<u16> =
                (0..count).map(|_| (rng.next() % (1u64 << bits)) as u16).collect();
            let mut buf = vec![0u8; lsqr_pack::packed_len(count, bits).unwrap()];
            lsqr_pack::pack_into(&codes, bits, &mut buf).unwrap();
            packed = buf;
            let rows = c.wshape[0];
            let cols = count.checked_div(rows).unwrap_or(0);
            let (sc, n_scales) = match scaling {
                0 => (Scaling::Unit, usize::MAX),
                1 => (Scaling::Tensor, 1),
                2 => (Scaling::Row, rows),
                _ => (Scaling::Group(5), rows * cols.div_ceil(5)),
            };
            scales = if n_scales == usize::MAX {
                vec![1.0]
            } else {
                (0..n_scales).map(|_| 0.25 + rng.f32().abs()).collect()
            };
            table = rng.vec(1 << bits);
            PackedWeight::new(&packed, bits, &c.wshape, sc, scales.clone(), table.clone()).unwrap()
        }
    };
    let mut dense = vec![0.0; count];
    dequantize_into(&w, &mut dense).unwrap();
    let x = rng.vec(c.input.iter().product());
    let cout = c.wshape[1] * c.p.groups;
    let bias_v = rng.vec(cout);
    let bias = c.bias.then_some(&bias_v[..]);
    let (want, mag, shape) = reference(&dense, c.wshape, bias, &x, c.input, &c.p);
    assert_eq!(conv_transpose2d_output_shape(c.input, &c.wshape, &c.p).unwrap(), shape);
    let need = conv_transpose2d_scratch_len(&w, c.input, &c.p).unwrap();
    let mut scratch = vec![f32::NAN; need + 3];
    let mut out = vec![f32::NAN; want.len()];
    conv_transpose2d_into(&w, bias, &x, c.input, &c.p, &mut out, &mut scratch).unwrap();
    // GEMM over cin/g, then the col2im adds: (cin/g + kh kw + 2) ulps of
    // the sum of |terms|.
    let depth = (c.wshape[0] / c.p.groups + c.wshape[2] * c.wshape[3] + 2) as f64;
    for i in 0..want.len() {
        let tol = depth * f32::EPSILON as f64 * mag[i] + 1e-30;
        assert!(
            (out[i] as f64 - want[i]).abs() <= tol,
            "[{i}] {} vs {} (tol {tol:e}) in {c:?}",
            out[i],
            want[i]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn conv_transpose_matches_reference(c in case()) {
        run_case(&c);
    }
}

#[test]
fn onnx_doc_examples() {
    let x: Vec<f32> = (0..9).map(|v| v as f32).collect();
    let ones = [1.0f32; 18];
    let w = PackedWeight::from_f32(&ones, &[1, 2, 3, 3]).unwrap();
    // convtranspose: 3x3 input, 3x3 kernel of ones, 2 output channels.
    let p = ConvTranspose2dParams::default();
    let input = [1, 1, 3, 3];
    assert_eq!(conv_transpose2d_output_shape(input, w.shape(), &p).unwrap(), [1, 2, 5, 5]);
    let mut scratch = vec![0.0; conv_transpose2d_scratch_len(&w, input, &p).unwrap()];
    let mut out = vec![0.0; 50];
    conv_transpose2d_into(&w, None, &x, input, &p, &mut out, &mut scratch).unwrap();
    let plane = [
        0.0, 1.0, 3.0, 3.0, 2.0, 3.0, 8.0, 15.0, 12.0, 7.0, 9.0, 21.0, 36.0, 27.0, 15.0, 9.0, 20.0,
        33.0, 24.0, 13.0, 6.0, 13.0, 21.0, 15.0, 8.0,
    ];
    assert_eq!(out, [plane, plane].concat());
    // convtranspose_pads: strides [3, 2], pads [1, 2, 1, 2] -> [1, 2, 7, 3].
    let p = ConvTranspose2dParams { stride: [3, 2], pads: [1, 2, 1, 2], ..p };
    assert_eq!(conv_transpose2d_output_shape(input, w.shape(), &p).unwrap(), [1, 2, 7, 3]);
    let mut scratch = vec![0.0; conv_transpose2d_scratch_len(&w, input, &p).unwrap()];
    let mut out = vec![0.0; 42];
    conv_transpose2d_into(&w, Some(&[0.5, -1.0]), &x, input, &p, &mut out, &mut scratch).unwrap();
    let rows =
        [[1.0, 1.0, 3.0], [1.0, 1.0, 3.0], [7.0, 4.0, 9.0], [7.0, 4.0, 9.0], [7.0, 4.0, 9.0]];
    let rows: Vec<f32> =
        rows.iter().flatten().copied().chain([13.0, 7.0, 15.0, 13.0, 7.0, 15.0]).collect();
    let want: Vec<f32> = rows.iter().map(|v| v + 0.5).chain(rows.iter().map(|v| v - 1.0)).collect();
    assert_eq!(out, want);
    // convtranspose_output_shape's geometry via output_padding: strides
    // [3, 2], output_padding [1, 1] -> [1, 2, 10, 8]; the extra row and
    // column hold only the bias.
    let p = ConvTranspose2dParams { stride: [3, 2], output_padding: [1, 1], ..Default::default() };
    assert_eq!(conv_transpose2d_output_shape(input, w.shape(), &p).unwrap(), [1, 2, 10, 8]);
    let mut scratch = vec![0.0; conv_transpose2d_scratch_len(&w, input, &p).unwrap()];
    let mut out = vec![0.0; 160];
    conv_transpose2d_into(&w, Some(&[2.0, 3.0]), &x, input, &p, &mut out, &mut scratch).unwrap();
    assert!(out[9 * 8..80].iter().all(|&v| v == 2.0));
    assert!((0..10).all(|r| out[r * 8 + 7] == 2.0));
}

#[test]
fn conv_transpose_errors() {
    let bad = |r: Result<(), OpError>| matches!(r, Err(OpError::BadParameter { .. }));
    let len = |r: Result<(), OpError>| matches!(r, Err(OpError::LengthMismatch { .. }));
    let shape_err = |r: Result<(), OpError>| matches!(r, Err(OpError::ShapeMismatch { .. }));
    let wv = [0.5f32; 36];
    let w = PackedWeight::from_f32(&wv, &[2, 2, 3, 3]).unwrap();
    let input = [1, 2, 3, 3];
    let x = [1.0f32; 18];
    let p = ConvTranspose2dParams::default();
    let mut scratch = vec![0.0; conv_transpose2d_scratch_len(&w, input, &p).unwrap()];
    let mut out = vec![0.0; 50];
    let run = |w: &PackedWeight<'_>,
               b: Option<&[f32]>,
               x: &[f32],
               i: [usize; 4],
               p: &ConvTranspose2dParams,
               o: &mut [f32],
               s: &mut [f32]| conv_transpose2d_into(w, b, x, i, p, o, s);
    run(&w, None, &x, input, &p, &mut out, &mut scratch).unwrap();
    // Parameters.
    for q in [
        ConvTranspose2dParams { groups: 0, ..p },
        ConvTranspose2dParams { stride: [0, 1], ..p },
        ConvTranspose2dParams { dilation: [1, 0], ..p },
        ConvTranspose2dParams { output_padding: [1, 0], ..p },
        ConvTranspose2dParams { pads: [3, 0, 2, 0], ..p },
        ConvTranspose2dParams { stride: [usize::MAX, 1], ..p },
        ConvTranspose2dParams { dilation: [usize::MAX, 1], ..p },
    ] {
        assert!(bad(run(&w, None, &x, input, &q, &mut out, &mut scratch)), "{q:?}");
        assert!(conv_transpose2d_output_shape(input, w.shape(), &q).is_err());
    }
    assert!(bad(run(&w, None, &[], [1, 2, 0, 3], &p, &mut out, &mut scratch)));
    // Weight rank, channel mismatch, groups not dividing cin.
    let w3 = PackedWeight::from_f32(&wv, &[2, 2, 9]).unwrap();
    assert!(bad(run(&w3, None, &x, input, &p, &mut out, &mut scratch)));
    assert!(shape_err(run(&w, None, &x, [1, 1, 3, 6], &p, &mut out, &mut scratch)));
    let q = ConvTranspose2dParams { groups: 4, ..p };
    assert!(shape_err(run(&w, None, &x, input, &q, &mut out, &mut scratch)));
    // Lengths: x, out, bias, scratch.
    assert!(len(run(&w, None, &x[..17], input, &p, &mut out, &mut scratch)));
    assert!(len(run(&w, None, &x, input, &p, &mut out[..49], &mut scratch)));
    assert!(len(run(&w, Some(&[0.0; 3]), &x, input, &p, &mut out, &mut scratch)));
    let short = scratch.len() - 1;
    assert!(len(run(&w, None, &x, input, &p, &mut out, &mut scratch[..short])));
}
