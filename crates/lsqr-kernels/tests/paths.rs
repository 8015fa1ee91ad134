//! Every code path against the portable reference (`paths::scalar`): the
//! AVX2+FMA path when this CPU has it, and the active (dispatched) path.
//! Tolerances are the crate documentation's table.

use lsqr_kernels::{paths, BatchNorm, Kernels, Pool2d};
use proptest::prelude::*;

/// Runs `f` on the active (dispatched) path, then on every path of
/// `paths::SIMD_PATHS` this CPU has, called directly (so the SIMD paths are
/// checked under `LSQR_FORCE_SCALAR=1` too), and writes this binary's
/// `lsqr-simd:` report line once.
fn each_path(mut f: impl FnMut(&'static Kernels)) {
    f(paths::active());
    paths::for_each_simd_path(env!("CARGO_CRATE_NAME"), |p| f(p.kernels()));
}

/// `|got - want| <= rel |want| + abs`, NaN matching NaN, infinities exact.
fn within(got: f32, want: f32, rel: f32, abs: f32) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= rel * want.abs() + abs
}

fn check(name: &str, path: &str, input: &[f32], got: &[f32], want: &[f32], rel: f32, abs: f32) {
    assert_eq!(got.len(), want.len());
    for i in 0..got.len() {
        let x = input.get(i).copied().unwrap_or(f32::NAN);
        assert!(
            within(got[i], want[i], rel, abs),
            "{name} on {path} at [{i}] (x = {x:e}): {:e} vs reference {:e}",
            got[i],
            want[i]
        );
    }
}

/// Exact comparison: equal bits, or both NaN.
fn check_exact(name: &str, path: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for i in 0..got.len() {
        assert!(
            got[i].to_bits() == want[i].to_bits() || (got[i].is_nan() && want[i].is_nan()),
            "{name} on {path} at [{i}]: {:e} vs reference {:e}",
            got[i],
            want[i]
        );
    }
}

type Unary = fn(&Kernels, &mut [f32]);
type Elem = fn(f32, f32) -> f32;
type BinaryOp = fn(
    &Kernels,
    &[f32],
    &[usize],
    &[f32],
    &[usize],
) -> Result<(Vec<f32>, Vec<usize>), lsqr_kernels::OpError>;

/// (name, method, rel, abs); rel = abs = 0 means bit-exact.
const UNARY: [(&str, Unary, f32, f32); 10] = [
    ("relu", Kernels::relu, 0.0, 0.0),
    ("relu6", Kernels::relu6, 0.0, 0.0),
    ("leaky_relu", |k, x| k.leaky_relu(x, 0.01), 0.0, 0.0),
    ("hardsigmoid", Kernels::hardsigmoid, 0.0, 0.0),
    ("hardswish", Kernels::hardswish, 0.0, 0.0),
    ("sigmoid", Kernels::sigmoid, 2e-6, 1e-30),
    ("tanh", Kernels::tanh, 2e-6, 1e-30),
    ("silu", Kernels::silu, 2e-6, 1e-30),
    ("gelu_tanh", Kernels::gelu_tanh, 2e-6, 1e-30),
    ("gelu", Kernels::gelu, 2e-6, 2e-6),
];

fn check_unary(xs: &[f32]) {
    for (name, f, rel, abs) in UNARY {
        let mut want = xs.to_vec();
        f(paths::scalar(), &mut want);
        each_path(|k| {
            let mut got = xs.to_vec();
            f(k, &mut got);
            if rel == 0.0 && abs == 0.0 {
                check_exact(name, k.name(), &got, &want);
            } else {
                check(name, k.name(), xs, &got, &want, rel, abs);
            }
        });
    }
}

/// A dense sweep of the vector transcendentals, including the saturation
/// and underflow regions and special values.
#[test]
fn transcendental_sweep() {
    let mut xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 1e-4).collect();
    xs.extend((-1000..=1000).map(|i| i as f32 * 0.1));
    xs.extend((-60..=60).map(|e| 2f32.powi(e)));
    xs.extend([
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        1e-40,
        -1e-40,
    ]);
    check_unary(&xs);
}

fn values() -> impl Strategy<Value = f32> {
    prop_oneof![8 => -20.0f32..20.0, 1 => -2.0f32..2.0, 1 => Just(0.0f32)]
}

fn fill(len: usize, seed: u32) -> Vec<f32> {
    // A small deterministic generator (xorshift), values in [-4, 4).
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

/// A naive NumPy broadcast by index mapping.
fn naive_broadcast(
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    f: fn(f32, f32) -> f32,
) -> (Vec<f32>, Vec<usize>) {
    let rank = sa.len().max(sb.len());
    let pad = |s: &[usize]| {
        let mut p = vec![1; rank - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (pa, pb) = (pad(sa), pad(sb));
    let out: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
    let total: usize = out.iter().product();
    let mut res = Vec::with_capacity(total);
    for flat in 0..total {
        let (mut rem, mut ia, mut ib, mut sta, mut stb) = (flat, 0, 0, 1, 1);
        for d in (0..rank).rev() {
            let i = rem % out[d];
            rem /= out[d];
            if pa[d] != 1 {
                ia += i * sta;
            }
            if pb[d] != 1 {
                ib += i * stb;
            }
            sta *= pa[d];
            stb *= pb[d];
        }
        res.push(f(a[ia], b[ib]));
    }
    (res, out)
}

/// A naive pool: enumerate the padded window, skip padding.
fn naive_pool(x: &[f32], shape: [usize; 4], p: &Pool2d, max: bool) -> Vec<f32> {
    let [n, c, h, w] = shape;
    let oh = (h + 2 * p.padding[0] - p.kernel[0]) / p.stride[0] + 1;
    let ow = (w + 2 * p.padding[1] - p.kernel[1]) / p.stride[1] + 1;
    let mut out = vec![];
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut m, mut sum, mut cnt) = (f32::NEG_INFINITY, 0.0f32, 0);
                for ky in 0..p.kernel[0] {
                    for kx in 0..p.kernel[1] {
                        let y = (oy * p.stride[0] + ky) as isize - p.padding[0] as isize;
                        let xx = (ox * p.stride[1] + kx) as isize - p.padding[1] as isize;
                        if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                            continue;
                        }
                        let v = x[plane * h * w + y as usize * w + xx as usize];
                        m = m.max(v);
                        sum += v;
                        cnt += 1;
                    }
                }
                out.push(if max { m } else { sum / cnt as f32 });
            }
        }
    }
    out
}

fn shape_strategy() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    // A base shape, then each operand keeps a suffix with some axes set to 1.
    (prop::collection::vec(1usize..5, 0..5), any::<u32>(), any::<u32>(), 0usize..5, 0usize..5)
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn unary_matches_reference(xs in prop::collection::vec(values(), 0..100)) {
        check_unary(&xs);
    }

    #[test]
    fn softmax_matches_reference(axis_len in 1usize..40, rows in 0usize..4, seed: u32, scale in 0.1f32..30.0) {
        let xs: Vec<f32> = fill(axis_len * rows, seed).iter().map(|v| v * scale).collect();
        let mut want = xs.clone();
        paths::scalar().softmax(&mut want, axis_len).unwrap();
        each_path(|k| {
            let mut got = xs.clone();
            k.softmax(&mut got, axis_len).unwrap();
            check("softmax", k.name(), &xs, &got, &want, 2e-6, 1e-30);
        });
    }

    #[test]
    fn layer_norm_matches_reference(axis_len in 1usize..40, rows in 0usize..4, seed: u32, eps in 0.0f32..1e-3) {
        let xs = fill(axis_len * rows, seed);
        let gamma = fill(axis_len, seed ^ 0x55);
        let beta = fill(axis_len, seed ^ 0xaa);
        let mut want = xs.clone();
        paths::scalar().layer_norm(&mut want, axis_len, &gamma, &beta, eps).unwrap();
        each_path(|k| {
            let mut got = xs.clone();
            k.layer_norm(&mut got, axis_len, &gamma, &beta, eps).unwrap();
            check("layer_norm", k.name(), &xs, &got, &want, 1e-5, 1e-5);
        });
    }

    #[test]
    fn batch_norm_matches_reference(n in 0usize..3, c in 1usize..5, spatial in 1usize..30, seed: u32) {
        let xs = fill(n * c * spatial, seed);
        let stats = fill(4 * c, seed ^ 0x1234);
        let var: Vec<f32> = stats[c..2 * c].iter().map(|v| v.abs()).collect();
        let p = BatchNorm { mean: &stats[..c], var: &var, gamma: &stats[2 * c..3 * c], beta: &stats[3 * c..], eps: 1e-5 };
        let shape = [n, c, spatial];
        let mut want = xs.clone();
        paths::scalar().batch_norm(&mut want, &shape, &p).unwrap();
        // The textbook formula, loosely.
        for (i, (&x, &y)) in xs.iter().zip(&want).enumerate() {
            let ch = i / spatial % c;
            let t = (x - p.mean[ch]) / (var[ch] + p.eps).sqrt() * p.gamma[ch] + p.beta[ch];
            prop_assert!((t - y).abs() <= 1e-4 * (1.0 + t.abs()) * (1.0 + 1.0 / (var[ch] + p.eps).sqrt()));
        }
        each_path(|k| {
            let mut got = xs.clone();
            k.batch_norm(&mut got, &shape, &p).unwrap();
            check_exact("batch_norm", k.name(), &got, &want);
        });
    }

    #[test]
    fn broadcast_matches_naive((sa, sb) in shape_strategy(), seed: u32) {
        let a = fill(sa.iter().product(), seed);
        let b = fill(sb.iter().product(), seed ^ 0x77);
        let ops: [(&str, BinaryOp, Elem); 2] =
            [("add", Kernels::add, |x, y| x + y), ("mul", Kernels::mul, |x, y| x * y)];
        for (name, op, f) in ops {
            let (want, want_shape) = naive_broadcast(&a, &sa, &b, &sb, f);
            each_path(|k| {
                let (got, shape) = op(k, &a, &sa, &b, &sb).unwrap();
                assert_eq!(&shape, &want_shape);
                check_exact(name, k.name(), &got, &want);
            });
        }
    }

    #[test]
    fn same_shape_binary_is_exact(len in 0usize..100, seed: u32) {
        let (a, b) = (fill(len, seed), fill(len, seed ^ 3));
        each_path(|k| {
            for op in [Kernels::add, Kernels::mul] {
                let want = op(paths::scalar(), &a, &[len], &b, &[len]).unwrap();
                let got = op(k, &a, &[len], &b, &[len]).unwrap();
                check_exact("add/mul", k.name(), &got.0, &want.0);
            }
        });
    }

    #[test]
    fn matmul_matches_reference(m in 0usize..15, k in 0usize..40, n in 0usize..40, seed: u32) {
        let a = fill(m * k, seed);
        let b = fill(k * n, seed ^ 9);
        let want = paths::scalar().matmul(&a, &b, m, k, n).unwrap();
        each_path(|kern| {
            let got = kern.matmul(&a, &b, m, k, n).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let bound: f32 = (0..k).map(|p| (a[i * k + p] * b[p * n + j]).abs()).sum();
                    let tol = k as f32 * f32::EPSILON * bound;
                    let (g, w) = (got[i * n + j], want[i * n + j]);
                    assert!((g - w).abs() <= tol, "{} [{},{}] m={} k={} n={}: {} vs {}", kern.name(), i, j, m, k, n, g, w);
                }
            }
        });
    }

    #[test]
    fn pooling_matches_naive(
        n in 1usize..3, c in 1usize..3, h in 1usize..12, w in 1usize..12,
        kh in 1usize..5, kw in 1usize..5, sh in 1usize..4, sw in 1usize..4, ph in 0usize..3, pw in 0usize..3,
        seed: u32,
    ) {
        let p = Pool2d { kernel: [kh, kw], stride: [sh, sw], padding: [ph, pw] };
        let shape = [n, c, h, w];
        let x = fill(n * c * h * w, seed);
        let valid = 2 * ph <= kh && 2 * pw <= kw && h + 2 * ph >= kh && w + 2 * pw >= kw;
        each_path(|k| {
            let max = k.max_pool2d(&x, shape, &p);
            let avg = k.avg_pool2d(&x, shape, &p);
            assert_eq!(max.is_ok(), valid);
            assert_eq!(avg.is_ok(), valid);
            if valid {
                let (max, s) = max.unwrap();
                assert_eq!(s[2] * s[3] * n * c, max.len());
                check_exact("max_pool2d", k.name(), &max, &naive_pool(&x, shape, &p, true));
                check_exact("avg_pool2d", k.name(), &avg.unwrap().0, &naive_pool(&x, shape, &p, false));
            }
        });
        let (g, _) = paths::active().global_avg_pool2d(&x, shape).unwrap();
        // Within the rounding of a sum in any order of the exact mean.
        for (plane, &v) in x.chunks(h * w).zip(&g) {
            let n = plane.len() as f64;
            let mean = plane.iter().map(|&e| f64::from(e)).sum::<f64>() / n;
            let abs = plane.iter().map(|&e| f64::from(e).abs()).sum::<f64>() / n;
            let bound = (n + 2.0) * f64::from(f32::EPSILON) * abs;
            prop_assert!((f64::from(v) - mean).abs() <= bound, "{} vs {}", v, mean);
        }
    }
}

#[test]
fn matmul_large_blocks() {
    // Crosses the KC = 256 depth block and every tile shape.
    let (m, k, n) = (13, 300, 37);
    let (a, b) = (fill(m * k, 1), fill(k * n, 2));
    let want = paths::scalar().matmul(&a, &b, m, k, n).unwrap();
    each_path(|kern| {
        let got = kern.matmul(&a, &b, m, k, n).unwrap();
        for i in 0..m * n {
            let (r, j) = (i / n, i % n);
            let bound: f32 = (0..k).map(|p| (a[r * k + p] * b[p * n + j]).abs()).sum();
            assert!((got[i] - want[i]).abs() <= k as f32 * f32::EPSILON * bound);
        }
    });
}

#[test]
fn dispatch_is_reported() {
    let forced = std::env::var_os("LSQR_FORCE_SCALAR").is_some_and(|v| !v.is_empty() && v != "0");
    if forced || paths::avx2().is_none() {
        assert_eq!(paths::active().name(), "scalar");
    } else if paths::avx512().is_some() {
        assert_eq!(paths::active().name(), "avx512");
    } else {
        assert_eq!(paths::active().name(), "avx2+fma");
    }
}

#[test]
fn matmul_big_enough_to_split() {
    // 1 Mi multiply-adds: the row-parallel split with `--features parallel`.
    let (m, k, n) = (64, 256, 64);
    let (a, b) = (fill(m * k, 5), fill(k * n, 6));
    let want = paths::scalar().matmul(&a, &b, m, k, n).unwrap();
    each_path(|kern| {
        let got = kern.matmul(&a, &b, m, k, n).unwrap();
        for i in 0..m * n {
            let (r, j) = (i / n, i % n);
            let bound: f32 = (0..k).map(|p| (a[r * k + p] * b[p * n + j]).abs()).sum();
            assert!((got[i] - want[i]).abs() <= k as f32 * f32::EPSILON * bound);
        }
    });
}
