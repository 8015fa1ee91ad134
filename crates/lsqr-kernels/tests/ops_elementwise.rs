//! The ONNX elementwise, reduction, softmax-along-an-axis and batched
//! matmul operators against naive references written here (index loops
//! over the broadcast shape, f64 sums), on every code path, and every SIMD
//! path against the portable one on extreme inputs.

use lsqr_kernels::elementwise::{self, BinaryOp, UnaryOp};
use lsqr_kernels::reduce::{self, ReduceOp};
use lsqr_kernels::{paths, Kernels, OpError};
use proptest::prelude::*;

/// Runs `f` on the active path, then on every SIMD path this CPU has
/// (called directly, so they are checked under `LSQR_FORCE_SCALAR=1` too).
fn each_path(mut f: impl FnMut(&'static Kernels)) {
    f(paths::active());
    paths::for_each_simd_path(env!("CARGO_CRATE_NAME"), |p| f(p.kernels()));
}

/// Equal bits, or both NaN.
fn same(got: f32, want: f32) -> bool {
    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
}

/// `|got - want| <= tol`, NaN matching NaN and infinities exactly.
fn close(got: f32, want: f64, tol: f64) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return f64::from(got) == want;
    }
    (f64::from(got) - want).abs() <= tol
}

/// `(a, a_shape, b, b_shape)`.
type Operands<'a> = (&'a [f32], &'a [usize], &'a [f32], &'a [usize]);

const ALL_BINARY: [BinaryOp; 14] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Pow,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::Equal,
    BinaryOp::Less,
    BinaryOp::Greater,
    BinaryOp::LessOrEqual,
    BinaryOp::GreaterOrEqual,
    BinaryOp::Mod,
    BinaryOp::FMod,
];

fn all_unary() -> Vec<UnaryOp> {
    use UnaryOp::*;
    vec![
        Relu,
        Relu6,
        LeakyRelu { alpha: 0.1 },
        Sigmoid,
        Tanh,
        Gelu,
        GeluTanh,
        Silu,
        HardSigmoid { alpha: 0.2, beta: 0.5 },
        HardSwish,
        Clip { min: -1.5, max: 2.0 },
        Clip { min: 1.0, max: -1.0 },
        Clip { min: f32::NAN, max: 0.5 },
        Neg,
        Abs,
        Sqrt,
        Reciprocal,
        Exp,
        Log,
        Erf,
        Floor,
        Ceil,
        Round,
        Sign,
        Softplus,
        Elu { alpha: 1.5 },
        Sin,
        Cos,
        Not,
        Trunc,
    ]
}

/// The reference semantics of one binary element (std, not libm).
fn ref_binary(op: BinaryOp, a: f32, b: f32) -> f32 {
    let flag = |c: bool| if c { 1.0 } else { 0.0 };
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Pow => a.powf(b),
        BinaryOp::Max if a.is_nan() || b.is_nan() => f32::NAN,
        BinaryOp::Max => {
            if a >= b {
                a
            } else {
                b
            }
        }
        BinaryOp::Min if a.is_nan() || b.is_nan() => f32::NAN,
        BinaryOp::Min => {
            if a <= b {
                a
            } else {
                b
            }
        }
        BinaryOp::Equal => flag(a == b),
        BinaryOp::Less => flag(a < b),
        BinaryOp::Greater => flag(a > b),
        BinaryOp::LessOrEqual => flag(a <= b),
        BinaryOp::GreaterOrEqual => flag(a >= b),
        // Python: a - floor(a / b) * b, exactly: fmod, then shift by b
        // when the signs differ; a zero takes b's sign.
        BinaryOp::Mod => {
            let r = a % b;
            if r == 0.0 {
                0f32.copysign(b)
            } else if (r < 0.0) != (b < 0.0) {
                r + b
            } else {
                r
            }
        }
        BinaryOp::FMod => a % b,
    }
}

/// The reference of one unary element, in f64 where the operator is a
/// transcendental, and the tolerance (relative, absolute) of the f32
/// result against it.
fn ref_unary(op: UnaryOp, x: f32) -> (f64, f64, f64) {
    use UnaryOp::*;
    let d = f64::from(x);
    let exact = |v: f32| (f64::from(v), 0.0, 0.0);
    let approx = |v: f64| (v, 4e-6, 1e-37);
    match op {
        Relu => exact(if x < 0.0 { 0.0 } else { x }),
        Relu6 => exact(if x.is_nan() { x } else { x.clamp(0.0, 6.0) }),
        LeakyRelu { alpha } => exact(if x < 0.0 { alpha * x } else { x }),
        Sigmoid => approx(1.0 / (1.0 + (-d).exp())),
        Tanh => approx(d.tanh()),
        Gelu => (0.5 * d * (1.0 + erf64(d / std::f64::consts::SQRT_2)), 4e-6, 5e-6),
        GeluTanh => {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (d + 0.044715 * d * d * d);
            (0.5 * d * (1.0 + u.tanh()), 4e-6, 1e-6)
        }
        Silu => approx(d / (1.0 + (-d).exp())),
        HardSigmoid { alpha, beta } => {
            let y = alpha * x + beta;
            exact(if y.is_nan() { y } else { y.clamp(0.0, 1.0) })
        }
        HardSwish => (d * (d + 3.0).clamp(0.0, 6.0) / 6.0, 1e-6, 1e-37),
        Clip { min, max } => {
            let mut y = x;
            if !min.is_nan() && y < min {
                y = min;
            }
            if !max.is_nan() && y > max {
                y = max;
            }
            exact(y)
        }
        Neg => exact(-x),
        Abs => exact(x.abs()),
        Sqrt => exact(x.sqrt()),
        Reciprocal => exact(1.0 / x),
        Exp => approx(d.exp()),
        Log => (d.ln(), 1e-6, 0.0),
        Erf => (erf64(d), 1e-6, 1e-7),
        Floor => exact(x.floor()),
        Ceil => exact(x.ceil()),
        Round => exact(x.round_ties_even()),
        Sign => exact(if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            x
        }),
        Softplus => (if d > 30.0 { d } else { d.exp().ln_1p() }, 2e-6, 1e-37),
        Elu { alpha } => (if x < 0.0 { f64::from(alpha) * d.exp_m1() } else { d }, 2e-6, 1e-37),
        // libm's sinf/cosf are correctly rounded-ish; large arguments need
        // the f32 argument exactly, which f64 has.
        Sin => (d.sin(), 1e-6, 1e-7),
        Cos => (d.cos(), 1e-6, 1e-7),
        Not => exact(if x == 0.0 { 1.0 } else { 0.0 }),
        Trunc => exact(x.trunc()),
    }
}

/// `erf` in f64 (Abramowitz-Stegun 7.1.26 is too coarse; a series and a
/// continued fraction are plenty accurate for a reference at f32).
fn erf64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Maclaurin series.
        let (mut term, mut sum, x2) = (ax, ax, ax * ax);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-18 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else if ax < 30.0 {
        // erfc by its continued fraction (Lentz).
        let mut f = ax;
        let (tiny, mut c, mut dd) = (1e-300, ax, 0.0);
        for n in 1..500 {
            let an = n as f64 / 2.0;
            dd = ax + an * dd;
            dd = if dd == 0.0 { tiny } else { 1.0 / dd };
            c = ax + an / c;
            let delta = c * dd;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt())
    } else {
        1.0
    };
    r.copysign(x)
}

/// Extremes of f32: ±MAX, ±inf, NaN, ±0, the smallest normal, subnormals.
const SPECIAL: [f32; 16] = [
    f32::MAX,
    f32::MIN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    0.0,
    -0.0,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    1e-40,
    -1e-45,
    1.0,
    -1.0,
    0.5,
    -2.5,
    3.0,
];

fn values() -> impl Strategy<Value = f32> {
    prop_oneof![6 => -20.0f32..20.0, 2 => -2.0f32..2.0, 2 => prop::sample::select(SPECIAL.to_vec())]
}

/// Finite values for the operators whose reference sums.
fn fill(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
        })
        .collect()
}

/// `n` values, one in four from `SPECIAL` (all of them when `n` is small).
fn special_fill(n: usize, seed: u32) -> Vec<f32> {
    let mut v = fill(n, seed);
    for (i, x) in v.iter_mut().enumerate() {
        if (i as u32 ^ seed).is_multiple_of(4) {
            *x = SPECIAL[(i + seed as usize) % SPECIAL.len()];
        }
    }
    v
}

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 3 => Just(1usize), 6 => 2usize..=4]
}

/// Two shapes that broadcast: a base of rank 0..=5, each operand keeping a
/// suffix with some dims set to 1.
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (prop::collection::vec(dim(), 0..=5), any::<u32>(), any::<u32>(), 0usize..=5, 0usize..=5)
        .prop_map(|(base, ma, mb, da, db)| {
            let pick = |mask: u32, drop: usize| -> Vec<usize> {
                let drop = drop.min(base.len());
                base[drop..]
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if mask >> i & 1 == 1 { 1 } else { d })
                    .collect()
            };
            (pick(ma, da), pick(mb, db))
        })
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

/// Row-major strides.
fn strides(s: &[usize]) -> Vec<usize> {
    let mut st = vec![1; s.len()];
    for i in (0..s.len().saturating_sub(1)).rev() {
        st[i] = st[i + 1] * s[i + 1];
    }
    st
}

/// The multi-index of flat index `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
    idx
}

/// Naive NumPy broadcasting by index mapping.
fn naive_broadcast(
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    f: impl Fn(f32, f32) -> f32,
) -> (Vec<f32>, Vec<usize>) {
    let rank = sa.len().max(sb.len());
    let pad = |s: &[usize]| [vec![1; rank - s.len()], s.to_vec()].concat();
    let (pa, pb) = (pad(sa), pad(sb));
    let out: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| if x == 1 { y } else { x }).collect();
    let (sta, stb) = (strides(&pa), strides(&pb));
    let res = (0..numel(&out))
        .map(|flat| {
            let idx = unravel(flat, &out);
            let ia: usize = (0..rank).map(|d| if pa[d] == 1 { 0 } else { idx[d] * sta[d] }).sum();
            let ib: usize = (0..rank).map(|d| if pb[d] == 1 { 0 } else { idx[d] * stb[d] }).sum();
            f(a[ia], b[ib])
        })
        .collect();
    (res, out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Every binary operator with broadcasting, on every path, against the
    /// naive reference: bit for bit (`pow` within 2 ulp, or 2 subnormal ulp:
    /// std's powf is not libm's).
    #[test]
    fn binary_matches_naive((sa, sb) in broadcast_pair(), seed: u32) {
        let a = special_fill(numel(&sa), seed);
        let b = special_fill(numel(&sb), seed ^ 0x5555);
        for op in ALL_BINARY {
            let (want, shape) = naive_broadcast(&a, &sa, &b, &sb, |x, y| ref_binary(op, x, y));
            prop_assert_eq!(&shape, &lsqr_kernels::broadcast_shape(&sa, &sb).unwrap());
            each_path(|k| {
                let mut got = vec![f32::NAN; want.len()];
                k.binary_into(op, &a, &sa, &b, &sb, &mut got).unwrap();
                for i in 0..want.len() {
                    let ok = if op == BinaryOp::Pow {
                        close(got[i], f64::from(want[i]), 2.5e-7 * f64::from(want[i].abs()) + 3e-45)
                    } else {
                        same(got[i], want[i])
                    };
                    assert!(ok, "{op:?} on {} {sa:?} {sb:?} at {i}: {:e} vs {:e}", k.name(), got[i], want[i]);
                }
            });
            let mut got = vec![0.0; want.len()];
            elementwise::binary_into(op, &a, &sa, &b, &sb, &mut got).unwrap();
        }
    }

    /// The kernels on equal lengths and with a scalar on either side, at
    /// odd offsets and lengths (masked tails), on ±MAX, ±inf, NaN, ±0 and
    /// subnormals: every SIMD path equals the portable one bit for bit.
    #[test]
    fn binary_simd_matches_portable(len in 0usize..40, off_a in 0usize..8, off_b in 0usize..8, seed: u32, s in prop::sample::select(SPECIAL.to_vec())) {
        let a_buf = special_fill(len + off_a, seed);
        let b_buf = special_fill(len + off_b, seed ^ 0xabc);
        let (a, b) = (&a_buf[off_a..], &b_buf[off_b..]);
        let n = [len];
        for op in ALL_BINARY {
            let cases: [Operands<'_>; 3] =
                [(a, &n, b, &n), (a, &n, &[s], &[]), (&[s], &[], b, &n)];
            for (x, xs, y, ys) in cases {
                let mut want = vec![0.0; len];
                paths::scalar().binary_into(op, x, xs, y, ys, &mut want).unwrap();
                each_path(|k| {
                    let mut got = vec![1.0; len];
                    k.binary_into(op, x, xs, y, ys, &mut got).unwrap();
                    for i in 0..len {
                        assert!(same(got[i], want[i]), "{op:?} on {} at {i}: {:e} vs {:e}", k.name(), got[i], want[i]);
                    }
                });
            }
        }
    }

    /// Every unary operator against the reference semantics, on every path.
    #[test]
    fn unary_matches_reference(xs in prop::collection::vec(values(), 0..60)) {
        for op in all_unary() {
            each_path(|k| {
                let mut got = xs.clone();
                k.unary_inplace(op, &mut got);
                for (i, (&g, &x)) in got.iter().zip(&xs).enumerate() {
                    let (want, rel, abs) = ref_unary(op, x);
                    // Results beyond f32::MAX in f64 may round either way
                    // in f32 (MAX or inf).
                    let tol = rel * want.abs() + abs;
                    assert!(close(g, want, tol) || (want.abs() > 3.4e38 && g.abs() >= f32::MAX),
                        "{op:?} on {} at {i} (x = {x:e}): {g:e} vs {want:e}", k.name());
                }
            });
        }
        let mut y = xs.clone();
        elementwise::unary_inplace(UnaryOp::Neg, &mut y);
        prop_assert!(y.iter().zip(&xs).all(|(a, b)| same(*a, -*b)));
    }

    /// Every SIMD path equals the portable one on extreme inputs at odd
    /// offsets: bit for bit where the operation is the same IEEE one, within
    /// the crate docs' tolerance for the vector transcendentals.
    #[test]
    fn unary_simd_matches_portable(len in 0usize..40, off in 0usize..8, seed: u32) {
        let buf = special_fill(len + off, seed);
        let xs = &buf[off..];
        for op in all_unary() {
            let mut want = xs.to_vec();
            paths::scalar().unary_inplace(op, &mut want);
            let tol = match op {
                UnaryOp::Sigmoid | UnaryOp::Tanh | UnaryOp::Silu | UnaryOp::GeluTanh | UnaryOp::Exp => Some((2e-6, 1e-30)),
                UnaryOp::Gelu => Some((2e-6, 2e-6)),
                _ => None,
            };
            each_path(|k| {
                let mut got = xs.to_vec();
                k.unary_inplace(op, &mut got);
                for i in 0..len {
                    let ok = match tol {
                        None => same(got[i], want[i]),
                        Some((rel, abs)) => close(got[i], f64::from(want[i]), rel * f64::from(want[i].abs()) + abs),
                    };
                    assert!(ok, "{op:?} on {} (x = {:e}): {:e} vs {:e}", k.name(), xs[i], got[i], want[i]);
                }
            });
        }
    }

    /// Expand against the naive broadcast.
    #[test]
    fn expand_matches_naive((xs, out_shape) in broadcast_pair().prop_map(|(a, b)| {
        // x: a; out: the broadcast of both (a always broadcasts to it).
        let out = lsqr_kernels::broadcast_shape(&a, &b).unwrap();
        (a, out)
    }), seed: u32) {
        let x = special_fill(numel(&xs), seed);
        let zeros = vec![0.0f32; numel(&out_shape)];
        let (want, _) = naive_broadcast(&x, &xs, &zeros, &out_shape, |v, _| v);
        let mut got = vec![f32::NAN; want.len()];
        elementwise::expand_into(&x, &xs, &out_shape, &mut got).unwrap();
        prop_assert!(got.iter().zip(&want).all(|(g, w)| same(*g, *w)), "{xs:?} -> {out_shape:?}");
    }
}

const ALL_REDUCE: [ReduceOp; 9] = [
    ReduceOp::Sum,
    ReduceOp::Mean,
    ReduceOp::Max,
    ReduceOp::Min,
    ReduceOp::Prod,
    ReduceOp::L1,
    ReduceOp::L2,
    ReduceOp::SumSquare,
    ReduceOp::LogSumExp,
];

/// The naive reduction: every element of `x` added (in f64) to the output
/// its kept indices select. Returns the results and, per output, the
/// magnitude the f32 error is relative to and the element count.
fn naive_reduce(op: ReduceOp, x: &[f32], shape: &[usize], axes: &[usize]) -> Vec<(f64, f64)> {
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).collect();
    let kept_shape: Vec<usize> = kept.iter().map(|&d| shape[d]).collect();
    let out_len = numel(&kept_shape);
    let kst = strides(&kept_shape);
    let mut groups: Vec<Vec<f64>> = vec![vec![]; out_len];
    for (flat, &v) in x.iter().enumerate() {
        let idx = unravel(flat, shape);
        let o: usize = kept.iter().enumerate().map(|(j, &d)| idx[d] * kst[j]).sum();
        groups[o].push(f64::from(v));
    }
    groups
        .iter()
        .map(|g| {
            let n = g.len() as f64;
            let sum_abs: f64 = g.iter().map(|v| v.abs()).sum();
            let sum_sq: f64 = g.iter().map(|v| v * v).sum();
            let nan_fold = |init: f64, pick: fn(f64, f64) -> f64| {
                g.iter().fold(
                    init,
                    |m, &v| if m.is_nan() || v.is_nan() { f64::NAN } else { pick(m, v) },
                )
            };
            match op {
                ReduceOp::Sum => (g.iter().sum(), sum_abs),
                ReduceOp::Mean => (g.iter().sum::<f64>() / n, sum_abs / n),
                ReduceOp::Max => (nan_fold(f64::NEG_INFINITY, f64::max), 0.0),
                ReduceOp::Min => (nan_fold(f64::INFINITY, f64::min), 0.0),
                ReduceOp::Prod => {
                    // In the kernels' order (row-major); a partial product
                    // outside f32's normal range makes the f32 result
                    // meaningless to compare: NaN magnitude, skipped.
                    let mut p = 1.0f64;
                    let mut in_range = true;
                    for &v in g {
                        p *= v;
                        in_range &= p == 0.0 || (1e-30..=1e30).contains(&p.abs());
                    }
                    (p, if in_range { p.abs() } else { f64::NAN })
                }
                ReduceOp::L1 => (sum_abs, sum_abs),
                ReduceOp::L2 => (sum_sq.sqrt(), sum_sq.sqrt()),
                ReduceOp::SumSquare => (sum_sq, sum_sq),
                ReduceOp::LogSumExp => {
                    let m = nan_fold(f64::NEG_INFINITY, f64::max);
                    if !m.is_finite() {
                        (m, 0.0)
                    } else {
                        let r = m + g.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                        (r, r.abs() + m.abs() + 1.0)
                    }
                }
            }
        })
        .collect()
}

/// A shape of rank 0..=5 (dims 0..=4, 1s and 0s included) and a strictly
/// increasing subset of its axes.
fn shape_and_axes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (prop::collection::vec(dim(), 0..=5), any::<u32>()).prop_map(|(shape, mask)| {
        let axes = (0..shape.len()).filter(|d| mask >> d & 1 == 1).collect();
        (shape, axes)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Every reduction over any axes, on every path, against the f64
    /// reference: within `count * eps` of the magnitude (sums), exact for
    /// max / min.
    #[test]
    fn reduce_matches_naive((shape, axes) in shape_and_axes(), seed: u32) {
        let x = fill(numel(&shape), seed);
        let count: usize = axes.iter().map(|&a| shape[a]).product();
        for op in ALL_REDUCE {
            let want = naive_reduce(op, &x, &shape, &axes);
            each_path(|k| {
                let mut got = vec![f32::NAN; want.len()];
                k.reduce_into(op, &x, &shape, &axes, &mut got).unwrap();
                for (i, (&g, &(w, mag))) in got.iter().zip(&want).enumerate() {
                    if mag.is_nan() {
                        continue;
                    }
                    let tol = match op {
                        ReduceOp::Max | ReduceOp::Min => 0.0,
                        ReduceOp::LogSumExp => 4.0 * (count as f64 + 2.0) * f64::from(f32::EPSILON) * mag,
                        _ => (count as f64 + 2.0) * f64::from(f32::EPSILON) * mag + 1e-30,
                    };
                    // An empty Mean is NaN: `close` matches NaN with NaN.
                    assert!(close(g, w, tol), "{op:?} on {} shape {shape:?} axes {axes:?} at {i}: {g:e} vs {w:e}", k.name());
                }
            });
            let mut got = vec![0.0; want.len()];
            reduce::reduce_into(op, &x, &shape, &axes, &mut got).unwrap();
        }
    }

    /// On inputs with NaN, ±inf, ±0 and subnormals (no ±MAX, whose sums
    /// overflow depending on the order), every SIMD path agrees with the
    /// portable one: the same NaN / infinity outcome, max / min exact up to
    /// the sign of a zero, sums within the summation-order bound, and
    /// bit for bit when the innermost axis is kept.
    #[test]
    fn reduce_simd_matches_portable(outer in 1usize..4, len in 0usize..40, seed: u32, inner_kept: bool) {
        let shape = [outer, len];
        let axes: &[usize] = if inner_kept { &[0] } else { &[1] };
        let mut x = special_fill(outer * len, seed);
        x.iter_mut().filter(|v| v.abs() == f32::MAX).for_each(|v| *v = 7.0);
        let out_len = if inner_kept { len } else { outer };
        for op in ALL_REDUCE {
            let mut want = vec![0.0; out_len];
            paths::scalar().reduce_into(op, &x, &shape, axes, &mut want).unwrap();
            each_path(|k| {
                let mut got = vec![f32::NAN; out_len];
                k.reduce_into(op, &x, &shape, axes, &mut got).unwrap();
                for i in 0..out_len {
                    // (A kept innermost axis of size 1 is dropped: then the
                    // reduced axis is innermost after all.)
                    let ok = if inner_kept && len > 1 {
                        same(got[i], want[i])
                    } else {
                        match op {
                            ReduceOp::Max | ReduceOp::Min => got[i] == want[i] || (got[i].is_nan() && want[i].is_nan()),
                            ReduceOp::Prod | ReduceOp::LogSumExp => same(got[i], want[i]),
                            _ => {
                                let elems: Vec<f32> = if inner_kept {
                                    (0..outer).map(|j| x[j * len + i]).collect()
                                } else {
                                    x[i * len..(i + 1) * len].to_vec()
                                };
                                let mag: f32 = elems.iter().map(|v| v.abs()).filter(|v| v.is_finite()).map(|v| v * v.max(1.0)).sum();
                                close(got[i], f64::from(want[i]), f64::from(elems.len() as f32 * f32::EPSILON * mag) + 1e-37)
                            }
                        }
                    };
                    assert!(ok, "{op:?} on {} inner_kept {inner_kept} at {i}: {:e} vs {:e}", k.name(), got[i], want[i]);
                }
            });
        }
    }

    /// Softmax and log-softmax along any axis against the f64 reference.
    #[test]
    fn softmax_axis_matches_naive(shape in prop::collection::vec(dim(), 1..=5), axis_pick: usize, seed: u32, scale in 0.1f32..20.0) {
        let axis = axis_pick % shape.len();
        let x: Vec<f32> = fill(numel(&shape), seed).iter().map(|v| v * scale).collect();
        let st = strides(&shape);
        let (n, s) = (shape[axis], st[axis]);
        // Per element: the f64 softmax and log-softmax along `axis`.
        let want: Vec<(f64, f64)> = (0..x.len())
            .map(|flat| {
                let idx = unravel(flat, &shape);
                let base = flat - idx[axis] * s;
                let row: Vec<f64> = (0..n).map(|j| f64::from(x[base + j * s])).collect();
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                let v = f64::from(x[flat]);
                ((v - lse).exp(), v - lse)
            })
            .collect();
        each_path(|k| {
            let mut sm = x.clone();
            k.softmax_axis_inplace(&mut sm, &shape, axis).unwrap();
            let mut ls = x.clone();
            k.log_softmax_axis_inplace(&mut ls, &shape, axis).unwrap();
            for i in 0..x.len() {
                let (ws, wl) = want[i];
                let tol = 4.0 * (n as f64 + 2.0) * f64::from(f32::EPSILON);
                // The SIMD softmax's vector exp: 2e-6 relative, flushed
                // to 0 below exp(-87.3).
                assert!(close(sm[i], ws, (tol + 2e-6) * ws + 1e-30), "softmax on {} {shape:?} axis {axis} at {i}: {} vs {ws}", k.name(), sm[i]);
                assert!(close(ls[i], wl, tol * (wl.abs() + f64::from(scale) * 4.0)), "log_softmax on {} {shape:?} axis {axis} at {i}: {} vs {wl}", k.name(), ls[i]);
            }
        });
        let mut y = x.clone();
        reduce::softmax_axis_inplace(&mut y, &shape, axis).unwrap();
        reduce::log_softmax_axis_inplace(&mut y, &shape, axis).unwrap();
    }
}

/// A matmul operand shape: rank 1..=4, batch dims 0..=3 with 1s.
fn matmul_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (
        prop::collection::vec(prop_oneof![Just(1usize), 1usize..=3, Just(0usize)], 0..=2),
        any::<u32>(),
        any::<u32>(),
        0usize..=2,
        0usize..=2,
        (0usize..=5, 0usize..=6, 0usize..=5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(batch, ma, mb, da, db, (m, k, n), a_vec, b_vec)| {
            let pick = |mask: u32, drop: usize| -> Vec<usize> {
                batch[drop.min(batch.len())..]
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if mask >> i & 1 == 1 { 1 } else { d })
                    .collect()
            };
            let a = if a_vec { vec![k] } else { [pick(ma, da), vec![m, k]].concat() };
            let b = if b_vec { vec![k] } else { [pick(mb, db), vec![k, n]].concat() };
            (a, b)
        })
}

/// `numpy.matmul` by index loops, in f64; also each output's `Σ |a b|`.
fn naive_matmul(a: &[f32], sa: &[usize], b: &[f32], sb: &[usize]) -> (Vec<(f64, f64)>, Vec<usize>) {
    let pa = if sa.len() == 1 { vec![1, sa[0]] } else { sa.to_vec() };
    let pb = if sb.len() == 1 { vec![sb[0], 1] } else { sb.to_vec() };
    let (m, k, n) = (pa[pa.len() - 2], pa[pa.len() - 1], pb[pb.len() - 1]);
    let (ba, bb) = (&pa[..pa.len() - 2], &pb[..pb.len() - 2]);
    let batch = lsqr_kernels::broadcast_shape(ba, bb).unwrap();
    let nb = batch.len();
    let pad = |s: &[usize]| [vec![1; nb - s.len()], s.to_vec()].concat();
    let (ba, bb) = (pad(ba), pad(bb));
    let (sta, stb) = (strides(&ba), strides(&bb));
    let mut out = vec![];
    for t in 0..numel(&batch) {
        let idx = unravel(t, &batch);
        let oa: usize =
            (0..nb).map(|d| if ba[d] == 1 { 0 } else { idx[d] * sta[d] }).sum::<usize>() * m * k;
        let ob: usize =
            (0..nb).map(|d| if bb[d] == 1 { 0 } else { idx[d] * stb[d] }).sum::<usize>() * k * n;
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut mag) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let v = f64::from(a[oa + i * k + p]) * f64::from(b[ob + p * n + j]);
                    s += v;
                    mag += v.abs();
                }
                out.push((s, mag));
            }
        }
    }
    let mut shape = batch;
    if sa.len() > 1 {
        shape.push(m);
    }
    if sb.len() > 1 {
        shape.push(n);
    }
    (out, shape)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Batched matmul (1-D operands, broadcast batch dims, empty dims) on
    /// every path against the f64 index-loop reference, within the
    /// matmul's `k eps Σ |a b|` bound.
    #[test]
    fn batched_matmul_matches_naive((sa, sb) in matmul_pair(), seed: u32) {
        let a = fill(numel(&sa), seed);
        let b = fill(numel(&sb), seed ^ 0x99);
        let (want, shape) = naive_matmul(&a, &sa, &b, &sb);
        prop_assert_eq!(&lsqr_kernels::batched_matmul_shape(&sa, &sb).unwrap(), &shape);
        let k = if sa.len() == 1 { sa[0] } else { sa[sa.len() - 1] };
        each_path(|kern| {
            let mut got = vec![f32::NAN; want.len()];
            kern.batched_matmul_into(&a, &sa, &b, &sb, &mut got).unwrap();
            for (i, (&g, &(w, mag))) in got.iter().zip(&want).enumerate() {
                let tol = (k as f64 + 1.0) * f64::from(f32::EPSILON) * mag;
                assert!(close(g, w, tol), "{} {sa:?} x {sb:?} at {i}: {g} vs {w}", kern.name());
            }
        });
        let mut got = vec![0.0; want.len()];
        lsqr_kernels::batched_matmul_into(&a, &sa, &b, &sb, &mut got).unwrap();
    }
}

/// A sweep of `exp` over its whole domain (overflow threshold, subnormal
/// results, specials): every SIMD path within the documented tolerance.
#[test]
fn exp_sweep() {
    let mut xs: Vec<f32> = (-11_000..=9_000).map(|i| i as f32 * 0.01).collect();
    xs.extend([88.72, 88.7228, 88.7229, 88.73, -87.3, -87.4, -103.9, -104.0, 1e-40, -0.0]);
    xs.extend(SPECIAL);
    let mut want = xs.clone();
    paths::scalar().unary_inplace(UnaryOp::Exp, &mut want);
    each_path(|k| {
        let mut got = xs.clone();
        k.unary_inplace(UnaryOp::Exp, &mut got);
        for i in 0..xs.len() {
            let w = f64::from(want[i]);
            assert!(
                close(got[i], w, 2e-6 * w.abs() + 1e-30),
                "exp on {} x = {}: {:e} vs {:e}",
                k.name(),
                xs[i],
                got[i],
                want[i]
            );
        }
    });
}

fn is_bad_param(r: Result<(), OpError>) -> bool {
    matches!(r, Err(OpError::BadParameter { .. }))
}
fn is_len(r: Result<(), OpError>) -> bool {
    matches!(r, Err(OpError::LengthMismatch { .. }))
}
fn is_shape(r: Result<(), OpError>) -> bool {
    matches!(r, Err(OpError::ShapeMismatch { .. }))
}

#[test]
fn binary_and_expand_errors() {
    let x = [1.0f32; 12];
    let mut out = [0.0f32; 12];
    let k = paths::active();
    // Lengths: a, b, out.
    assert!(is_len(k.binary_into(BinaryOp::Sub, &x[..5], &[2, 3], &x[..3], &[3], &mut out[..6])));
    assert!(is_len(k.binary_into(BinaryOp::Sub, &x[..6], &[2, 3], &x[..2], &[3], &mut out[..6])));
    assert!(is_len(k.binary_into(BinaryOp::Sub, &x[..6], &[2, 3], &x[..3], &[3], &mut out[..7])));
    // Shapes that do not broadcast.
    assert!(is_shape(k.binary_into(BinaryOp::Div, &x[..6], &[2, 3], &x[..4], &[4], &mut out[..6])));
    // Rank above 8 (even of size-1 dims).
    let r9 = [1usize; 9];
    assert!(is_bad_param(k.binary_into(BinaryOp::Add, &x[..1], &r9, &x[..1], &[1], &mut out[..1])));
    assert!(k.binary_into(BinaryOp::Add, &x[..1], &r9[..8], &x[..1], &[1], &mut out[..1]).is_ok());
    // Overflowing element counts.
    let huge = [usize::MAX, 2];
    assert!(is_bad_param(k.binary_into(BinaryOp::Add, &x, &huge, &x, &[1], &mut out)));
    // Expand: not a broadcast to exactly out_shape, rank too large, lengths.
    assert!(is_shape(elementwise::expand_into(&x[..3], &[3], &[2, 4], &mut out[..8])));
    assert!(is_shape(elementwise::expand_into(&x[..6], &[2, 3], &[3], &mut out[..3])));
    assert!(is_shape(elementwise::expand_into(&x[..2], &[2, 1], &[1, 3], &mut out[..3])));
    assert!(is_bad_param(elementwise::expand_into(&x[..1], &r9, &r9, &mut out[..1])));
    assert!(is_len(elementwise::expand_into(&x[..2], &[3], &[2, 3], &mut out[..6])));
    assert!(is_len(elementwise::expand_into(&x[..3], &[3], &[2, 3], &mut out[..5])));
    assert!(elementwise::expand_into(&x[..3], &[3], &[0, 3], &mut out[..0]).is_ok());
    assert!(elementwise::expand_into(&x[..1], &[1], &[2, 0], &mut out[..0]).is_ok());
    elementwise::expand_into(&[1.0, 2.0], &[2, 1], &[2, 3], &mut out[..6]).unwrap();
    assert_eq!(out[..6], [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
}

#[test]
fn reduce_and_softmax_errors() {
    let x = [1.0f32; 24];
    let mut out = [0.0f32; 24];
    let k = paths::active();
    let s = [2, 3, 4];
    for axes in [&[1usize, 1][..], &[2, 1], &[3], &[0, 5]] {
        assert!(
            is_bad_param(k.reduce_into(ReduceOp::Sum, &x, &s, axes, &mut out[..4])),
            "{axes:?}"
        );
    }
    assert!(is_len(k.reduce_into(ReduceOp::Sum, &x[..23], &s, &[1], &mut out[..8])));
    assert!(is_len(k.reduce_into(ReduceOp::Sum, &x, &s, &[1], &mut out[..7])));
    let r9 = [1usize; 9];
    assert!(is_bad_param(k.reduce_into(ReduceOp::Max, &x[..1], &r9, &[0], &mut out[..1])));
    // Empty reductions.
    let mut one = [0.0f32; 3];
    for (op, want) in [
        (ReduceOp::Sum, 0.0),
        (ReduceOp::Prod, 1.0),
        (ReduceOp::Max, f32::NEG_INFINITY),
        (ReduceOp::Min, f32::INFINITY),
        (ReduceOp::LogSumExp, f32::NEG_INFINITY),
        (ReduceOp::L2, 0.0),
    ] {
        k.reduce_into(op, &[], &[0, 3], &[0], &mut one).unwrap();
        assert_eq!(one, [want; 3], "{op:?}");
    }
    k.reduce_into(ReduceOp::Mean, &[], &[3, 0], &[1], &mut one).unwrap();
    assert!(one.iter().all(|v| v.is_nan()));
    // Softmax: bad axis, length, rank.
    let mut y = [0.0f32; 24];
    assert!(is_bad_param(k.softmax_axis_inplace(&mut y, &s, 3)));
    assert!(is_bad_param(k.log_softmax_axis_inplace(&mut y, &s, 3)));
    assert!(is_bad_param(k.softmax_axis_inplace(&mut y[..1], &[], 0)));
    assert!(is_len(k.softmax_axis_inplace(&mut y[..23], &s, 1)));
    assert!(is_bad_param(k.softmax_axis_inplace(&mut y[..1], &r9, 0)));
    assert!(k.softmax_axis_inplace(&mut [], &[2, 0, 3], 1).is_ok());
}

#[test]
fn batched_matmul_errors() {
    let x = [1.0f32; 24];
    let mut out = [0.0f32; 24];
    let k = paths::active();
    // Inner dims differ; batch dims do not broadcast; rank 0; rank 9.
    assert!(is_shape(k.batched_matmul_into(&x[..6], &[2, 3], &x[..8], &[4, 2], &mut out[..4])));
    assert!(is_shape(k.batched_matmul_into(
        &x[..12],
        &[2, 2, 3],
        &x[..18],
        &[3, 3, 2],
        &mut out[..12]
    )));
    assert!(is_bad_param(k.batched_matmul_into(&x[..1], &[], &x[..3], &[3], &mut out[..1])));
    let r9 = [1usize; 9];
    assert!(is_bad_param(k.batched_matmul_into(&x[..1], &r9, &x[..1], &[1, 1], &mut out[..1])));
    // Lengths.
    assert!(is_len(k.batched_matmul_into(&x[..5], &[2, 3], &x[..6], &[3, 2], &mut out[..4])));
    assert!(is_len(k.batched_matmul_into(&x[..6], &[2, 3], &x[..5], &[3, 2], &mut out[..4])));
    assert!(is_len(k.batched_matmul_into(&x[..6], &[2, 3], &x[..6], &[3, 2], &mut out[..5])));
    assert!(lsqr_kernels::batched_matmul_shape(&[2, 3], &[4, 2]).is_err());
    assert_eq!(lsqr_kernels::batched_matmul_shape(&[3], &[3]).unwrap(), Vec::<usize>::new());
    assert_eq!(
        lsqr_kernels::batched_matmul_shape(&[5, 1, 2, 3], &[4, 3, 6]).unwrap(),
        [5, 4, 2, 6]
    );
    // Vector-vector: a 0-d output of one element.
    k.batched_matmul_into(&[1.0, 2.0, 3.0], &[3], &[4.0, 5.0, 6.0], &[3], &mut out[..1]).unwrap();
    assert_eq!(out[0], 32.0);
}

/// Fixed ONNX semantics worth pinning by value.
#[test]
fn semantics_by_value() {
    let k = paths::active();
    let a = [5.5f32, -5.5, 5.5, -5.5, 6.0, -6.0];
    let b = [2.0f32, 2.0, -2.0, -2.0, 3.0, 3.0];
    let mut out = [0.0f32; 6];
    k.binary_into(BinaryOp::Mod, &a, &[6], &b, &[6], &mut out).unwrap();
    assert_eq!(out, [1.5, 0.5, -0.5, -1.5, 0.0, 0.0]);
    assert!(out[5].is_sign_positive());
    k.binary_into(BinaryOp::FMod, &a, &[6], &b, &[6], &mut out).unwrap();
    assert_eq!(out, [1.5, -1.5, 1.5, -1.5, 0.0, -0.0]);
    // Scalar on the left of a non-commutative operator.
    k.binary_into(BinaryOp::Sub, &[10.0], &[], &b, &[6], &mut out).unwrap();
    assert_eq!(out, [8.0, 8.0, 12.0, 12.0, 7.0, 7.0]);
    k.binary_into(BinaryOp::Less, &b, &[6], &[2.5], &[1], &mut out).unwrap();
    assert_eq!(out, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
    k.binary_into(BinaryOp::Max, &[1.0, f32::NAN], &[2], &[f32::NAN, 1.0], &[2], &mut out[..2])
        .unwrap();
    assert!(out[0].is_nan() && out[1].is_nan());
    let mut r = [0.5f32, 1.5, 2.5, -0.5, -2.5, 3.7];
    k.unary_inplace(UnaryOp::Round, &mut r);
    assert_eq!(r, [0.0, 2.0, 2.0, -0.0, -2.0, 4.0]);
    let mut t = [2.7f32, -2.7, f32::NAN, 0.0];
    k.unary_inplace(UnaryOp::Clip { min: -1.0, max: 1.0 }, &mut t);
    assert_eq!(t[..2], [1.0, -1.0]);
    assert!(t[2].is_nan());
    let mut m = [1.0f32, f32::NAN, 3.0, 4.0];
    k.reduce_into(ReduceOp::Max, &m, &[2, 2], &[1], &mut out[..2]).unwrap();
    assert!(out[0].is_nan() && out[1] == 4.0);
    k.softmax_axis_inplace(&mut m[2..], &[2], 0).unwrap();
    assert!((m[2] + m[3] - 1.0).abs() < 1e-6);
}

/// `channel_affine` is batch_norm with the statistics folded beforehand:
/// the same values on every path, and errors for lengths that do not fit.
#[test]
fn channel_affine_is_folded_batch_norm() {
    use lsqr_kernels::BatchNorm;
    let (n, c, plane) = (2, 3, 7);
    let x: Vec<f32> = (0..n * c * plane).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
    let (gamma, beta, mean, var) =
        ([1.5f32, -0.5, 2.0], [0.1f32, 0.2, -0.3], [0.3f32, -1.0, 0.0], [2.0f32, 0.5, 1.0]);
    let eps = 1e-3;
    let scale: Vec<f32> = (0..c).map(|i| gamma[i] / libm::sqrtf(var[i] + eps)).collect();
    let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
    for path in lsqr_kernels::paths::available_simd_paths() {
        let k = path.kernels();
        let mut want = x.clone();
        let p = BatchNorm { mean: &mean, var: &var, gamma: &gamma, beta: &beta, eps };
        k.batch_norm(&mut want, &[n, c, plane], &p).unwrap();
        let mut got = x.clone();
        k.channel_affine(&mut got, plane, &scale, &shift).unwrap();
        assert_eq!(got, want, "{}", path.name);
    }
    let mut y = vec![0.0; 10];
    assert!(lsqr_kernels::channel_affine(&mut y, 3, &scale, &shift).is_err());
    assert!(lsqr_kernels::channel_affine(&mut y, 5, &scale[..2], &shift).is_err());
    assert!(lsqr_kernels::channel_affine(&mut [], 5, &scale, &shift).is_ok());
}

/// `where_into` against a direct index computation, with broadcasting of
/// all three operands, and its errors.
#[test]
fn where_broadcasts_three_operands() {
    use lsqr_kernels::elementwise::where_into;
    let cond = [1.0f32, 0.0, f32::NAN]; // [3]: NaN is true
    let x: Vec<f32> = (0..6).map(|i| i as f32).collect(); // [2, 1, 3]
    let y = [-1.0f32, -2.0]; // [2, 1, 1]
    let mut out = vec![0.0; 2 * 2 * 3]; // [2, 2, 3] with cond as [1, 1, 3]... and a middle axis of 2
    let c2: Vec<f32> = cond.iter().chain(&[0.0, 1.0, 0.0]).copied().collect(); // [2, 3]
    where_into(&c2, &[2, 3], &x, &[2, 1, 3], &y, &[2, 1, 1], &mut out).unwrap();
    for a in 0..2 {
        for b in 0..2 {
            for c in 0..3 {
                let want = if c2[b * 3 + c] != 0.0 { x[a * 3 + c] } else { y[a] };
                assert_eq!(out[(a * 2 + b) * 3 + c], want, "{a} {b} {c}");
            }
        }
    }
    let mut small = vec![0.0; 3];
    assert!(where_into(&cond, &[3], &x, &[2, 1, 3], &y, &[2, 1, 1], &mut small).is_err());
    assert!(where_into(&cond, &[3], &x[..4], &[4], &y, &[2], &mut small).is_err());
    let mut one = [0.0f32];
    where_into(&[0.0], &[], &[5.0], &[], &[7.0], &[], &mut one).unwrap();
    assert_eq!(one, [7.0]);
}

/// ArgMax / ArgMin against a walk written out per axis, on values with
/// ties and NaNs, every axis of a 3-D shape.
#[test]
fn arg_extreme_matches_a_direct_walk() {
    use lsqr_kernels::reduce::arg_extreme_into;
    let shape = [3usize, 4, 5];
    // Few distinct values (ties everywhere), a NaN in some lines.
    let x: Vec<f32> =
        (0..60).map(|i| if i % 17 == 5 { f32::NAN } else { ((i * 7) % 5) as f32 - 2.0 }).collect();
    for axis in 0..3 {
        for (max, last) in [(true, false), (true, true), (false, false), (false, true)] {
            let mut out_shape = shape.to_vec();
            out_shape[axis] = 1;
            let n: usize = out_shape.iter().product();
            let mut got = vec![-1.0f32; n];
            arg_extreme_into(&x, &shape, axis, max, last, &mut got).unwrap();
            let strides = [20usize, 5, 1];
            for (p, &g) in got.iter().enumerate() {
                let idx = [
                    p / (out_shape[1] * out_shape[2]),
                    p / out_shape[2] % out_shape[1],
                    p % out_shape[2],
                ];
                let line: Vec<f32> = (0..shape[axis])
                    .map(|k| {
                        let mut i = idx;
                        i[axis] = k;
                        x[i[0] * strides[0] + i[1] * strides[1] + i[2] * strides[2]]
                    })
                    .collect();
                let want = match line.iter().position(|v| v.is_nan()) {
                    Some(first) if !last => first,
                    Some(_) => line.iter().rposition(|v| v.is_nan()).unwrap(),
                    None => {
                        let best = line.iter().copied().fold(
                            if max { f32::MIN } else { f32::MAX },
                            |b, v| {
                                if max {
                                    b.max(v)
                                } else {
                                    b.min(v)
                                }
                            },
                        );
                        let hits =
                            line.iter().enumerate().filter(|(_, &v)| v == best).map(|(k, _)| k);
                        if last {
                            hits.max().unwrap()
                        } else {
                            hits.min().unwrap()
                        }
                    }
                };
                assert_eq!(
                    g, want as f32,
                    "axis {axis} max {max} last {last} at {idx:?}: {line:?}"
                );
            }
        }
    }
    let mut out = vec![0.0; 12];
    assert!(arg_extreme_into(&x, &shape, 3, true, false, &mut out).is_err(), "axis past the rank");
    assert!(arg_extreme_into(&x, &shape, 2, true, false, &mut out[..11]).is_err(), "short out");
    assert!(arg_extreme_into(&[], &[2, 0], 1, true, false, &mut [0.0; 2]).is_err(), "empty axis");
}

/// A long row's softmax (and log-softmax) keeps its sum to f32's precision
/// on every path, the portable one included (a text recognizer's 18,710 classes summed one
/// after another in f32 lost 1.4e-4 of the sum).
#[test]
fn a_long_rows_softmax_keeps_its_sum() {
    let n = 18_710;
    // A peaked row, as a classifier's: one class well ahead, the rest
    // small terms that each round against the running sum.
    let mut x: Vec<f32> = fill(n, 0x5eed).iter().map(|v| v * 0.25 - 13.5).collect();
    x[3] = 4.0;
    let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let sum: f64 = x.iter().map(|&v| (f64::from(v) - m).exp()).sum();
    // The row along the last axis (the path's own softmax), and as both
    // columns of [n, 2] along axis 0 (the strided loop every path shares).
    let pairs: Vec<f32> = x.iter().flat_map(|&v| [v, v]).collect();
    let check = |k: &Kernels| {
        let mut last = x.clone();
        k.softmax_axis_inplace(&mut last, &[1, n], 1).unwrap();
        let mut strided = pairs.clone();
        k.softmax_axis_inplace(&mut strided, &[n, 2], 0).unwrap();
        let mut log = x.clone();
        k.log_softmax_axis_inplace(&mut log, &[1, n], 1).unwrap();
        for (j, &v) in x.iter().enumerate() {
            let want = (f64::from(v) - m).exp() / sum;
            // The vector exp's 2e-6 and a few roundings; not n of them.
            for got in [last[j], strided[2 * j], strided[2 * j + 1]] {
                let err = (f64::from(got) - want).abs() / want;
                assert!(err < 5e-6, "{}: softmax at {j}: relative error {err:.2e}", k.name());
            }
            let err = (f64::from(log[j]) - want.ln()).abs();
            assert!(err < 5e-6, "{}: log_softmax at {j}: error {err:.2e}", k.name());
        }
    };
    check(paths::scalar());
    each_path(check);
}
