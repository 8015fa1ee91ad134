//! The layout operators against naive index-formula references, plus every
//! error they return.

use lsqr_kernels::layout::*;
use lsqr_kernels::OpError;
use proptest::prelude::*;

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Multi-index of flat position `i` in row-major `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

fn data(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 + 0.5).collect()
}

fn is_bad(r: Result<(), OpError>) -> bool {
    matches!(r, Err(OpError::BadParameter { .. }))
}

fn is_len(r: Result<(), OpError>) -> bool {
    matches!(r, Err(OpError::LengthMismatch { .. }))
}

fn ref_transpose(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let oshape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    (0..numel(&oshape))
        .map(|o| {
            let oi = unravel(o, &oshape);
            let mut ii = vec![0; shape.len()];
            for (k, &p) in perm.iter().enumerate() {
                ii[p] = oi[k];
            }
            x[ravel(&ii, shape)]
        })
        .collect()
}

fn shape_strategy(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..=max_dim, 0..=max_rank)
}

fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop_oneof![
        shape_strategy(5, 4),
        // Big enough for several 16 x 16 tiles, with ragged edges.
        prop::collection::vec(1usize..40, 2..=3),
    ]
    .prop_flat_map(|shape| {
        let perm = Just((0..shape.len()).collect::<Vec<_>>()).prop_shuffle();
        (Just(shape), perm)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn transpose_matches_reference((shape, perm) in shape_and_perm()) {
        let x = data(numel(&shape));
        let mut out = vec![f32::NAN; x.len()];
        transpose_into(&x, &shape, &perm, &mut out).unwrap();
        prop_assert_eq!(out, ref_transpose(&x, &shape, &perm));
    }

    #[test]
    fn slice_matches_reference(
        dims in prop::collection::vec((0usize..6, 0usize..6, 1isize..4, any::<bool>(), 0usize..4), 0..=4)
    ) {
        // Per dim: size, start, |step|, negative?, count (clipped to fit).
        let shape: Vec<usize> = dims.iter().map(|d| d.0).collect();
        let mut starts = vec![];
        let mut steps = vec![];
        let mut out_shape = vec![];
        for &(size, start, step, neg, count) in &dims {
            let start = if size == 0 { 0 } else { start % size };
            let step = if neg { -step } else { step };
            let room = if size == 0 {
                0
            } else if step > 0 {
                (size - 1 - start) / step as usize + 1
            } else {
                start / (-step) as usize + 1
            };
            starts.push(start);
            steps.push(step);
            out_shape.push(count.min(room));
        }
        let x = data(numel(&shape));
        let want: Vec<f32> = (0..numel(&out_shape))
            .map(|o| {
                let oi = unravel(o, &out_shape);
                let ii: Vec<usize> = (0..shape.len())
                    .map(|d| (starts[d] as isize + oi[d] as isize * steps[d]) as usize)
                    .collect();
                x[ravel(&ii, &shape)]
            })
            .collect();
        let mut out = vec![f32::NAN; want.len()];
        slice_into(&x, &shape, &starts, &steps, &out_shape, &mut out).unwrap();
        prop_assert_eq!(out, want);
    }

    #[test]
    fn onnx_slice_params_match_reference(
        dim in 0usize..8,
        start in prop_oneof![-10i64..10, Just(i64::MIN), Just(i64::MAX)],
        end in prop_oneof![-10i64..10, Just(i64::MIN), Just(i64::MAX)],
        step in prop_oneof![1i64..4, -4i64..0, Just(i64::MAX), Just(i64::MIN)],
    ) {
        // The operator spec's clamping, then the indices the resulting
        // range(start, end, step) picks, enumerated one by one.
        let d = dim as i128;
        let norm = |v: i64| if v < 0 { v as i128 + d } else { v as i128 };
        let (s, e) = (norm(start), norm(end));
        let st = step as i128;
        let picked: Vec<i128> = if d == 0 {
            vec![]
        } else if st > 0 {
            let (s, e) = (s.clamp(0, d), e.clamp(0, d));
            let mut v = vec![];
            let mut i = s;
            while i < e { v.push(i); i += st; }
            v
        } else {
            let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
            let mut v = vec![];
            let mut i = s;
            while i > e && i >= 0 { v.push(i); i += st; }
            v
        };
        let (rs, count) = onnx_slice_params(dim, start, end, step).unwrap();
        prop_assert_eq!(count, picked.len());
        if let Some(&first) = picked.first() {
            prop_assert_eq!(rs as i128, first);
        }
    }

    #[test]
    fn concat_matches_reference(
        shape in prop::collection::vec(0usize..4, 1..=4),
        axis_seed in 0usize..8,
        parts in prop::collection::vec(0usize..4, 1..4),
    ) {
        let axis = axis_seed % shape.len();
        let mut out_shape = shape.clone();
        out_shape[axis] = parts.iter().sum();
        let mut out = vec![f32::NAN; numel(&out_shape)];
        let mut offset = 0;
        let mut inputs = vec![];
        for (k, &p) in parts.iter().enumerate() {
            let mut s = shape.clone();
            s[axis] = p;
            let x: Vec<f32> = (0..numel(&s)).map(|i| (k * 1000 + i) as f32).collect();
            concat_into(&x, &s, axis, offset, &mut out, &out_shape).unwrap();
            inputs.push((x, s, offset));
            offset += p;
        }
        for (o, &v) in out.iter().enumerate() {
            let oi = unravel(o, &out_shape);
            let (x, s, off) = inputs
                .iter()
                .find(|(_, s, off)| oi[axis] >= *off && oi[axis] < off + s[axis])
                .unwrap();
            let mut ii = oi.clone();
            ii[axis] -= off;
            prop_assert_eq!(v, x[ravel(&ii, s)]);
        }
    }

    #[test]
    fn pad_matches_reference(
        dims in prop::collection::vec((0usize..5, 0usize..4, 0usize..4), 0..=4),
        mode_sel in 0u8..3,
    ) {
        let shape: Vec<usize> = dims.iter().map(|d| d.0).collect();
        let (mut begin, mut end): (Vec<usize>, Vec<usize>) = dims.iter().map(|d| (d.1, d.2)).unzip();
        let mode = match mode_sel {
            0 => PadMode::Constant(-7.0),
            1 => PadMode::Reflect,
            _ => PadMode::Edge,
        };
        // Keep the pads legal for the mode (the errors have their own test).
        for d in 0..shape.len() {
            match mode {
                PadMode::Reflect => {
                    let cap = shape[d].saturating_sub(1);
                    begin[d] = begin[d].min(cap);
                    end[d] = end[d].min(cap);
                }
                PadMode::Edge if shape[d] == 0 => {
                    begin[d] = 0;
                    end[d] = 0;
                }
                _ => {}
            }
        }
        let oshape: Vec<usize> = (0..shape.len()).map(|d| shape[d] + begin[d] + end[d]).collect();
        let x = data(numel(&shape));
        let want: Vec<f32> = (0..numel(&oshape))
            .map(|o| {
                let oi = unravel(o, &oshape);
                let mut ii = vec![0; shape.len()];
                for d in 0..shape.len() {
                    let i = oi[d] as isize - begin[d] as isize;
                    let n = shape[d] as isize;
                    ii[d] = match mode {
                        PadMode::Constant(c) if i < 0 || i >= n => return c,
                        PadMode::Constant(_) => i as usize,
                        // numpy's 'reflect' for a single bounce.
                        PadMode::Reflect => (if i < 0 { -i } else if i >= n { 2 * n - 2 - i } else { i }) as usize,
                        PadMode::Edge => i.clamp(0, n - 1) as usize,
                    };
                }
                x[ravel(&ii, &shape)]
            })
            .collect();
        let mut out = vec![f32::NAN; want.len()];
        pad_into(&x, &shape, &begin, &end, mode, &mut out).unwrap();
        prop_assert_eq!(out, want);
    }

    #[test]
    fn gather_matches_reference(
        shape in prop::collection::vec(0usize..5, 1..=4),
        axis_seed in 0usize..8,
        picks in prop::collection::vec(0usize..100, 0..6),
    ) {
        let axis = axis_seed % shape.len();
        let indices: Vec<usize> = if shape[axis] == 0 {
            vec![]
        } else {
            picks.iter().map(|&p| p % shape[axis]).collect()
        };
        let mut oshape = shape.clone();
        oshape[axis] = indices.len();
        let x = data(numel(&shape));
        let want: Vec<f32> = (0..numel(&oshape))
            .map(|o| {
                let mut ii = unravel(o, &oshape);
                ii[axis] = indices[ii[axis]];
                x[ravel(&ii, &shape)]
            })
            .collect();
        let mut out = vec![f32::NAN; want.len()];
        gather_into(&x, &shape, axis, &indices, &mut out).unwrap();
        prop_assert_eq!(&out, &want);
        // The same indices computed at run time, half of them negative.
        let computed: Vec<f32> = indices
            .iter()
            .enumerate()
            .map(|(k, &i)| if k % 2 == 1 { i as f32 - shape[axis] as f32 } else { i as f32 })
            .collect();
        let mut out2 = vec![f32::NAN; want.len()];
        gather_computed_into(&x, &shape, axis, &computed, &mut out2).unwrap();
        prop_assert_eq!(out2, want);
    }
}

#[test]
fn gather_computed_refuses_indices_it_cannot_read() {
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut o = [0.0; 2];
    for bad_index in [3.0, -4.0, 0.5, f32::NAN, f32::INFINITY, 1e30] {
        let r = gather_computed_into(&x, &[2, 3], 1, &[bad_index], &mut o);
        assert!(is_bad(r), "{bad_index}");
    }
    gather_computed_into(&x, &[2, 3], 1, &[-1.0], &mut o).unwrap();
    assert_eq!(o, [3.0, 6.0]);
    assert!(is_len(gather_computed_into(&x, &[2, 3], 1, &[0.0, 1.0], &mut o)));
    assert!(is_bad(gather_computed_into(&x, &[2, 3], 2, &[0.0], &mut o)));
}

#[test]
fn transpose_hand_cases() {
    // [2, 3] -> [3, 2].
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut out = [0.0; 6];
    transpose_into(&x, &[2, 3], &[1, 0], &mut out).unwrap();
    assert_eq!(out, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    // Rank 0: one element.
    let mut one = [0.0];
    transpose_into(&[9.0], &[], &[], &mut one).unwrap();
    assert_eq!(one, [9.0]);
    // NCHW -> NHWC of [1, 2, 2, 2].
    let x = data(8);
    let mut out = [0.0; 8];
    transpose_into(&x, &[1, 2, 2, 2], &[0, 2, 3, 1], &mut out).unwrap();
    assert_eq!(out, [0.5, 4.5, 1.5, 5.5, 2.5, 6.5, 3.5, 7.5]);
}

#[test]
fn slice_hand_cases() {
    // x[::-1] of [0, 1, 2, 3, 4]: ONNX starts = -1, ends = INT64_MIN, steps = -1.
    let x = [0.0, 1.0, 2.0, 3.0, 4.0];
    let (s, n) = onnx_slice_params(5, -1, i64::MIN, -1).unwrap();
    assert_eq!((s, n), (4, 5));
    let mut out = [0.0; 5];
    slice_into(&x, &[5], &[s], &[-1], &[n], &mut out).unwrap();
    assert_eq!(out, [4.0, 3.0, 2.0, 1.0, 0.0]);
    // ONNX doc example slice_end_out_of_bounds: [1:1000] of 10 -> 9 elements.
    assert_eq!(onnx_slice_params(10, 1, 1000, 1).unwrap(), (1, 9));
    // slice_neg_steps: starts 20 -> clamped to 19, ends 0, step -3 on 20: 19, 16, .., 1.
    assert_eq!(onnx_slice_params(20, 20, 0, -3).unwrap(), (19, 7));
    // Start past the end.
    assert_eq!(onnx_slice_params(10, 1000, 1000, 1).unwrap().1, 0);
    assert_eq!(onnx_slice_params(0, 0, -1, -1).unwrap().1, 0);
    // The spec (and onnxruntime) clamp a negative-step start below -dim to
    // 0, which then still reads index 0; NumPy would give an empty slice.
    assert_eq!(onnx_slice_params(5, -100, i64::MIN, -1).unwrap(), (0, 1));
    // 2-D: rows 1.., every second column reversed.
    let x = data(12); // [3, 4]
    let mut out = [0.0; 4];
    slice_into(&x, &[3, 4], &[1, 3], &[1, -2], &[2, 2], &mut out).unwrap();
    assert_eq!(out, [7.5, 5.5, 11.5, 9.5]);
}

#[test]
fn pad_hand_cases() {
    // ONNX Pad doc, reflect: [[1, 1.2], [2.3, 3.4], [4.5, 5.7]], pads [0, 2, 0, 0].
    let x = [1.0, 1.2, 2.3, 3.4, 4.5, 5.7];
    let mut out = [0.0; 12];
    // Reflect by 2 needs dim > 2: the doc's example is rejected here.
    assert!(is_bad(pad_into(&x, &[3, 2], &[0, 2], &[0, 0], PadMode::Reflect, &mut out)));
    // ONNX Pad doc, edge: [[1, 1, 1, 1.2], ...].
    pad_into(&x, &[3, 2], &[0, 2], &[0, 0], PadMode::Edge, &mut out).unwrap();
    assert_eq!(out, [1.0, 1.0, 1.0, 1.2, 2.3, 2.3, 2.3, 3.4, 4.5, 4.5, 4.5, 5.7]);
    // ONNX Pad doc, constant: [[0, 0, 1, 1.2], ...].
    pad_into(&x, &[3, 2], &[0, 2], &[0, 0], PadMode::Constant(0.0), &mut out).unwrap();
    assert_eq!(out, [0.0, 0.0, 1.0, 1.2, 0.0, 0.0, 2.3, 3.4, 0.0, 0.0, 4.5, 5.7]);
    // Reflect [1, 2, 3] by 2 on both sides.
    let mut out = [0.0; 7];
    pad_into(&[1.0, 2.0, 3.0], &[3], &[2], &[2], PadMode::Reflect, &mut out).unwrap();
    assert_eq!(out, [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
    // Constant padding of an empty dim fills everything.
    let mut out = [0.0; 4];
    pad_into(&[], &[2, 0], &[0, 1], &[0, 1], PadMode::Constant(5.0), &mut out).unwrap();
    assert_eq!(out, [5.0; 4]);
}

#[test]
fn layout_errors() {
    let x = data(6);
    let mut out = vec![0.0; 6];
    // transpose: bad perm, wrong lengths, rank > 8.
    assert!(is_bad(transpose_into(&x, &[2, 3], &[0, 0], &mut out)));
    assert!(is_bad(transpose_into(&x, &[2, 3], &[0, 2], &mut out)));
    assert!(is_len(transpose_into(&x, &[2, 3], &[0], &mut out)));
    assert!(is_len(transpose_into(&x, &[2, 2], &[1, 0], &mut out)));
    assert!(is_len(transpose_into(&x, &[2, 3], &[1, 0], &mut out[..5])));
    let nine = [1usize; 9];
    let id: Vec<usize> = (0..9).collect();
    assert!(is_bad(transpose_into(&[1.0], &nine, &id, &mut out[..1])));
    // Element count overflow.
    assert!(is_bad(transpose_into(&x, &[usize::MAX, 2], &[1, 0], &mut out)));

    // slice: zero step, out of range (both ends, negative), lengths, rank.
    let mut o2 = [0.0; 2];
    assert!(is_bad(slice_into(&x, &[6], &[0], &[0], &[2], &mut o2)));
    assert!(is_bad(slice_into(&x, &[6], &[5], &[1], &[2], &mut o2)));
    assert!(is_bad(slice_into(&x, &[6], &[0], &[-1], &[2], &mut o2)));
    assert!(is_bad(slice_into(&x, &[6], &[6], &[1], &[1], &mut o2[..1])));
    assert!(is_bad(slice_into(&x, &[6], &[0], &[isize::MAX], &[2], &mut o2)));
    assert!(is_len(slice_into(&x, &[6], &[0], &[1], &[3], &mut o2)));
    assert!(is_len(slice_into(&x, &[6], &[0, 0], &[1], &[2], &mut o2)));
    assert!(is_len(slice_into(&x, &[7], &[0], &[1], &[2], &mut o2)));
    assert!(is_bad(slice_into(&[1.0], &nine, &[0; 9], &[1; 9], &nine, &mut o2[..1])));
    assert!(is_bad(onnx_slice_params(4, 0, 4, 0).map(|_| ())));
    // An empty slice checks nothing about its start.
    slice_into(&x, &[6], &[100], &[1], &[0], &mut []).unwrap();

    // concat: axis, mismatched other dims, does not fit, lengths, rank.
    let mut o = vec![0.0; 12];
    assert!(is_bad(concat_into(&x, &[2, 3], 2, 0, &mut o, &[2, 6])));
    assert!(matches!(
        concat_into(&x, &[2, 3], 1, 0, &mut o, &[3, 4]),
        Err(OpError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        concat_into(&x, &[2, 3], 1, 0, &mut o, &[2, 3, 2]),
        Err(OpError::ShapeMismatch { .. })
    ));
    assert!(is_bad(concat_into(&x, &[2, 3], 1, 4, &mut o, &[2, 6])));
    assert!(is_bad(concat_into(&x, &[2, 3], 1, usize::MAX, &mut o, &[2, 6])));
    assert!(is_len(concat_into(&x, &[2, 3], 1, 0, &mut o[..11], &[2, 6])));
    assert!(is_len(concat_into(&x[..5], &[2, 3], 1, 0, &mut o, &[2, 6])));
    assert!(is_bad(concat_into(&[1.0], &nine, 0, 0, &mut o[..1], &nine)));

    // pad: reflect too large, edge on empty dim, lengths, overflow, rank.
    let mut o = vec![0.0; 10];
    assert!(is_bad(pad_into(&x, &[6], &[6], &[0], PadMode::Reflect, &mut o)));
    assert!(is_bad(pad_into(&x, &[6], &[0], &[6], PadMode::Reflect, &mut o)));
    assert!(is_bad(pad_into(&[1.0], &[1], &[1], &[0], PadMode::Reflect, &mut o[..2])));
    assert!(is_bad(pad_into(&[], &[0], &[1], &[0], PadMode::Edge, &mut o[..1])));
    assert!(is_bad(pad_into(&[], &[0], &[1], &[0], PadMode::Reflect, &mut o[..1])));
    assert!(is_len(pad_into(&x, &[6], &[1], &[1], PadMode::Edge, &mut o[..7])));
    assert!(is_len(pad_into(&x, &[6], &[1, 1], &[1], PadMode::Edge, &mut o)));
    assert!(is_len(pad_into(&x, &[6], &[1], &[], PadMode::Edge, &mut o)));
    assert!(is_len(pad_into(&x[..5], &[6], &[1], &[1], PadMode::Edge, &mut o[..8])));
    assert!(is_bad(pad_into(&x, &[6], &[usize::MAX], &[1], PadMode::Edge, &mut o)));
    assert!(is_bad(pad_into(&[1.0], &nine, &[0; 9], &[0; 9], PadMode::Edge, &mut o[..1])));

    // gather: index out of range, axis, lengths, rank.
    let mut o = [0.0; 6];
    assert!(is_bad(gather_into(&x, &[2, 3], 1, &[3], &mut o[..2])));
    assert!(is_bad(gather_into(&x, &[2, 3], 2, &[0], &mut o[..2])));
    assert!(is_bad(gather_into(&[1.0], &[], 0, &[0], &mut o[..1])));
    assert!(is_len(gather_into(&x, &[2, 3], 1, &[0, 1], &mut o[..3])));
    assert!(is_len(gather_into(&x[..5], &[2, 3], 1, &[0], &mut o[..2])));
    assert!(is_bad(gather_into(&[1.0], &nine, 0, &[0], &mut o[..1])));
}
