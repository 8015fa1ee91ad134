//! Packed-weight operators beside f32 baselines measured in the same run.
//!
//! `linear_b1_*`: linear at batch 1 on packed weights (4096x4096 and
//! 11008x4096 at C = 2..8; 4096x11008 at C = 4 and 8): the default path
//! (on an AVX-512 CPU also its AVX2 path, `packed_log_avx2`)
//! (`packed_log`: integer dot products at C <= 8, int8 at C <= 2, int16
//! above) beside the exact f32 table path (`packed_log_exact`), beside:
//! - f32 `ndarray` `Array2::dot` (what a Rust user would write),
//! - a plain f32 loop with eight partial sums, vectorised for this CPU,
//! - memcpy of the bytes the packed kernel reads (codes and f32 scales):
//!   the memory-bandwidth roofline.
//!
//! Weights are kept out of cache: a 256 MiB buffer is streamed between
//! repetitions (`iter_custom`), as in the measurement of candle.
//!
//! Single-threaded, except `packed_log_2threads` (the scaling on both
//! cores). Also: dequantization into f32, f16 and bf16 against memcpy.
//!
//! `linear_batch/{8,64}`: batch-N linear on 4096 x 4096 (log codec, C = 4
//! and 8, groups of 64: C = 4 on integer dot products, `_exact` and C = 8
//! decode blocks + blocked GEMM) against f32 ndarray `x.dot(&w.t())` and
//! `matrixmultiply::sgemm` (single thread), warm.
//!
//! `linear_hot_b1/*`: batch 1 on small weights kept in cache (MNIST's and
//! MiniLM's shapes), C = 2..8, default and exact path and an f32 loop.
//!
//! `conv2d/3x3_64_56` (64 -> 64 channels, 56 x 56, pad 1, n = 1) and
//! `conv2d/dw3x3_256_56` (depthwise, 256 channels): the packed conv
//! against f32 im2col + `sgemm` (written here), and for depthwise also a
//! direct f32 loop.
//!
//! Everything runs on one thread except the `_2threads` entries: the
//! allocating forms in a 2-thread rayon pool (the `parallel` feature
//! splits their work), for the scaling on both cores.
//!
//! `cargo bench --bench kernels -- --noplot`

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lsqr::codec::{quantize, CodecSpec, QuantizeOptions};
use lsqr::format::{LsqFile, LsqWriter, TensorView};
use lsqr::synthetic::{weights, Distribution};
use lsqr_kernels::conv::{conv2d, conv2d_into, conv2d_scratch_len, Conv2dParams};
use lsqr_kernels::packed::{
    dequantize_into, dequantize_into_bf16, dequantize_into_f16, linear, linear_into,
    linear_scratch_len, PackedWeight,
};
use lsqr_kernels::paths;
use ndarray::{Array1, Array2};

/// `flush` and `cold`: the weights out of cache before every timed call.
#[path = "support.rs"]
mod support;
use support::cold;

fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum()
}

/// Batch-1 linear of an `[rows, cols]` weight: the baselines, then the
/// packed `log` weight (groups of 64) at each C, each beside the memcpy of
/// the bytes it reads (packed codes plus its f32 scales).
fn linear_b1(c: &mut Criterion, flush_buf: &mut [u8], rows: usize, cols: usize, widths: &[u32]) {
    let w = weights(Distribution::Gaussian, rows * cols, 0.02, 5);
    let x = weights(Distribution::Gaussian, cols, 1.0, 6);
    let mut g = c.benchmark_group(format!("linear_b1_{rows}x{cols}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));

    let wa = Array2::from_shape_vec((rows, cols), w.clone()).unwrap();
    let xa = Array1::from(x.clone());
    g.bench_function("f32_ndarray_dot", |b| {
        b.iter_custom(|n| {
            cold(n, flush_buf, || {
                black_box(wa.dot(&xa));
            })
        })
    });
    drop(wa);
    let mut y = vec![0.0f32; rows];
    g.bench_function("f32_loop", |b| {
        b.iter_custom(|n| {
            cold(n, flush_buf, || {
                for (r, out) in y.iter_mut().enumerate() {
                    *out = dot8(&w[r * cols..(r + 1) * cols], &x);
                }
                black_box(&y);
            })
        })
    });

    for &bits in widths {
        let bytes = log_file(&w, &[rows, cols], bits);
        let file = LsqFile::from_bytes(&bytes).unwrap();
        let TensorView::Quantized(view) = file.tensor("w").unwrap() else { unreachable!() };
        let mut packed = lsqr::runtime::packed_weight(&view).unwrap();
        // `packed_log`: the default (integer dot products at C <= 8);
        // `packed_log_exact`: the exact f32 table path, in the same run.
        let mut scratch = vec![0.0f32; linear_scratch_len(&packed, 1)];
        g.bench_function(BenchmarkId::new("packed_log", format!("C{bits}")), |b| {
            b.iter_custom(|n| {
                cold(n, flush_buf, || {
                    linear_into(&packed, None, &x, 1, &mut y, &mut scratch).unwrap();
                    black_box(&y);
                })
            })
        });
        // On an AVX-512 CPU the default is the AVX-512 table; its AVX2
        // one, in the same run, for the CPUs that have only AVX2.
        if let (Some(avx2), Some(_)) = (paths::avx2(), paths::avx512()) {
            g.bench_function(BenchmarkId::new("packed_log_avx2", format!("C{bits}")), |b| {
                b.iter_custom(|n| {
                    cold(n, flush_buf, || {
                        paths::linear_into_with(avx2, &packed, None, &x, 1, &mut y, &mut scratch)
                            .unwrap();
                        black_box(&y);
                    })
                })
            });
        }
        if packed.int_form().is_some() {
            packed.set_exact(true);
            g.bench_function(BenchmarkId::new("packed_log_exact", format!("C{bits}")), |b| {
                b.iter_custom(|n| {
                    cold(n, flush_buf, || {
                        linear_into(&packed, None, &x, 1, &mut y, &mut scratch).unwrap();
                        black_box(&y);
                    })
                })
            });
            packed.set_exact(false);
        }
        if bits == 4 {
            // Two-level scales: issue 12 asks that they not halve the
            // batch-1 speed of groups of 64. 256/32/6 is the default
            // layout, 1024/16/4 and 1024/8/4 ones `--bpw` picks. The
            // integer kernels read them as stored (a byte per sub-block,
            // `packed_weight`); `_f32_scales` is the same weight given one
            // f32 per sub-block, as before they could.
            for (s, sub, k) in [(256, 32, 6), (1024, 16, 4), (1024, 8, 4)] {
                let options = QuantizeOptions {
                    scaling: lsqr::codec::Scaling::TwoLevel(
                        lsqr::codec::TwoLevel::new(s, sub, k).unwrap(),
                    ),
                    scale_method: lsqr::codec::ScaleMethod::MseSearch,
                    ..QuantizeOptions::new(CodecSpec::Lut, bits)
                };
                let q = quantize(&w, &[rows, cols], &options).unwrap();
                let bytes = lsq_bytes(&q);
                let file = LsqFile::from_bytes(&bytes).unwrap();
                let TensorView::Quantized(view) = file.tensor("w").unwrap() else { unreachable!() };
                let stored = lsqr::runtime::packed_weight(&view).unwrap();
                let f32_scales = PackedWeight::new(
                    view.packed(),
                    bits,
                    &[rows, cols],
                    view.spec().scaling,
                    view.scales_f32(),
                    view.decode_table().to_vec(),
                )
                .unwrap();
                for (name, w) in [("", &stored), ("_f32_scales", &f32_scales)] {
                    let id =
                        BenchmarkId::new(format!("packed_lut_two_level_{s}_{sub}{name}"), "C4");
                    g.bench_function(id, |b| {
                        b.iter_custom(|n| {
                            cold(n, flush_buf, || {
                                linear(w, None, &x, 1, &mut y).unwrap();
                                black_box(&y);
                            })
                        })
                    });
                }
            }
        }
        if bits == 4 || bits == 8 {
            let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
            g.bench_function(BenchmarkId::new("packed_log_2threads", format!("C{bits}")), |b| {
                b.iter_custom(|n| {
                    cold(n, flush_buf, || {
                        two.install(|| linear(&packed, None, &x, 1, &mut y).unwrap());
                        black_box(&y);
                    })
                })
            });
        }
        let read = view.packed().len() + view.scales_f32().len() * 4;
        let src = vec![1u8; read];
        let mut dst = vec![0u8; read];
        if bits == 4 {
            // The read-only roofline: the weight's bytes summed, one and two
            // threads (a memcpy also writes, so it understates reads).
            let words: Vec<u64> = vec![1; read / 8];
            g.bench_function(BenchmarkId::new("read_packed", format!("C{bits}")), |b| {
                b.iter_custom(|n| {
                    cold(n, flush_buf, || {
                        black_box(read_sum(&words));
                    })
                })
            });
            let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
            g.bench_function(BenchmarkId::new("read_packed_2threads", format!("C{bits}")), |b| {
                b.iter_custom(|n| {
                    cold(n, flush_buf, || {
                        let half = words.len().div_ceil(2);
                        let (a, c) =
                            two.join(|| read_sum(&words[..half]), || read_sum(&words[half..]));
                        black_box(a ^ c);
                    })
                })
            });
        }
        g.bench_function(BenchmarkId::new("memcpy_packed", format!("C{bits}")), |b| {
            b.iter_custom(|n| {
                cold(n, flush_buf, || {
                    dst.copy_from_slice(&src);
                    black_box(&dst);
                })
            })
        });
    }
    g.finish();
}

/// `q` alone in an in-memory `.lsq` file, named `w`.
fn lsq_bytes(q: &lsqr::codec::QuantizedTensor) -> Vec<u8> {
    let mut writer = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
    writer.add_quantized("w", q).unwrap();
    writer.finish().unwrap().into_inner()
}

/// The xor of `words`, in eight independent chains (the loads, not the
/// adds, set the pace).
fn read_sum(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for c in words.chunks_exact(8) {
        for (a, &w) in acc.iter_mut().zip(c) {
            *a ^= w;
        }
    }
    acc.iter().fold(0, |x, &y| x ^ y)
}

/// Dequantize a 4096x4096 `log` weight (groups of 64) into f32, f16 and
/// bf16, in elements/s, beside a memcpy of the f32 output's size.
fn dequantize(c: &mut Criterion) {
    one_thread();
    let (rows, cols) = (4096, 4096);
    let w = weights(Distribution::Gaussian, rows * cols, 0.02, 5);
    let mut g = c.benchmark_group("dequantize_4096x4096");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements((rows * cols) as u64));
    let src = vec![1.0f32; rows * cols];
    let mut out = vec![0.0f32; rows * cols];
    g.bench_function("memcpy_f32", |b| {
        b.iter(|| {
            out.copy_from_slice(&src);
            black_box(&out);
        })
    });
    let mut out16 = vec![half::f16::ZERO; rows * cols];
    let mut outb16 = vec![half::bf16::ZERO; rows * cols];
    for bits in [4u32, 8] {
        let q =
            quantize(&w, &[rows, cols], &QuantizeOptions::new(CodecSpec::Log { mu: None }, bits))
                .unwrap();
        let bytes = lsq_bytes(&q);
        let file = LsqFile::from_bytes(&bytes).unwrap();
        let TensorView::Quantized(view) = file.tensor("w").unwrap() else { unreachable!() };
        let packed = lsqr::runtime::packed_weight(&view).unwrap();
        g.bench_function(BenchmarkId::new("f32", format!("C{bits}")), |b| {
            b.iter(|| dequantize_into(&packed, black_box(&mut out)).unwrap())
        });
        g.bench_function(BenchmarkId::new("f16", format!("C{bits}")), |b| {
            b.iter(|| dequantize_into_f16(&packed, black_box(&mut out16)).unwrap())
        });
        g.bench_function(BenchmarkId::new("bf16", format!("C{bits}")), |b| {
            b.iter(|| dequantize_into_bf16(&packed, black_box(&mut outb16)).unwrap())
        });
    }
    g.finish();
}

/// The bytes of an in-memory `.lsq` file holding `w` quantized with the
/// log codec at `bits` (default scaling: groups of 64).
fn log_file(w: &[f32], shape: &[usize], bits: u32) -> Vec<u8> {
    lsq_bytes(
        &quantize(w, shape, &QuantizeOptions::new(CodecSpec::Log { mu: None }, bits)).unwrap(),
    )
}

/// `c[m, n] = a[m, k] b[k, n]` with general strides, single-threaded
/// matrixmultiply.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: &mut [f32],
) {
    assert!(a.len() > (m - 1) * rsa + (k - 1) * csa && b.len() > (k - 1) * rsb + (n - 1) * csb);
    assert!(c.len() >= m * n);
    // SAFETY: the asserts above keep every access inside the slices; c is
    // written row-major with row stride n.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// The batch-N groups' 4096 x 4096 weight.
const ROWS: usize = 4096;
const COLS: usize = 4096;

fn bench_linear_batch(c: &mut Criterion) {
    one_thread();
    let w = weights(Distribution::Gaussian, ROWS * COLS, 0.02, 5);
    let wa = Array2::from_shape_vec((ROWS, COLS), w.clone()).unwrap();
    let files: Vec<(u32, Vec<u8>)> =
        [4u32, 8].iter().map(|&bits| (bits, log_file(&w, &[ROWS, COLS], bits))).collect();
    let mut g = c.benchmark_group("linear_batch");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for batch in [8usize, 64] {
        let x = weights(Distribution::Gaussian, batch * COLS, 1.0, 7);
        let xa = Array2::from_shape_vec((batch, COLS), x.clone()).unwrap();
        let mut y = vec![0.0f32; batch * ROWS];
        g.bench_function(BenchmarkId::new("f32_ndarray_dot", batch), |b| {
            b.iter(|| black_box(xa.dot(&wa.t())))
        });
        g.bench_function(BenchmarkId::new("f32_matrixmultiply_sgemm", batch), |b| {
            // y = x · wᵀ: b = wᵀ is w read with row stride 1, column stride COLS.
            b.iter(|| {
                sgemm(batch, COLS, ROWS, &x, (COLS, 1), &w, (1, COLS), &mut y);
                black_box(&y);
            })
        });
        for (bits, bytes) in &files {
            let file = LsqFile::from_bytes(bytes).unwrap();
            let TensorView::Quantized(view) = file.tensor("w").unwrap() else { unreachable!() };
            let packed = lsqr::runtime::packed_weight(&view).unwrap();
            let mut scratch = vec![0.0f32; linear_scratch_len(&packed, batch)];
            g.bench_function(BenchmarkId::new(format!("packed_log_C{bits}"), batch), |b| {
                b.iter(|| {
                    linear_into(&packed, None, &x, batch, &mut y, &mut scratch).unwrap();
                    black_box(&y);
                })
            });
            if *bits == 4 {
                // The exact path: the f32 GEMM on decoded blocks.
                let mut exact = packed.clone();
                exact.set_exact(true);
                g.bench_function(BenchmarkId::new("packed_log_C4_exact", batch), |b| {
                    b.iter(|| {
                        linear_into(&exact, None, &x, batch, &mut y, &mut scratch).unwrap();
                        black_box(&y);
                    })
                });
            }
            // The allocating form on both cores (the `parallel` feature
            // splits batch rows over rayon's threads, or, on the integer
            // path below batch 32, the weight's rows).
            let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
            g.bench_function(
                BenchmarkId::new(format!("packed_log_C{bits}_2threads"), batch),
                |b| {
                    b.iter(|| {
                        two.install(|| linear(&packed, None, &x, batch, &mut y).unwrap());
                        black_box(&y);
                    })
                },
            );
        }
        let plain = PackedWeight::from_f32(&w, &[ROWS, COLS]).unwrap();
        g.bench_function(BenchmarkId::new("plain_f32_lsqr_gemm", batch), |b| {
            b.iter(|| {
                linear(&plain, None, &x, batch, &mut y).unwrap();
                black_box(&y);
            })
        });
    }
    g.finish();
}

/// MiniLM's linear shapes (out x in: attention 384 x 384, MLP 1536 x 384
/// and 384 x 1536) at sequence lengths 16, 64 and 256, C = 4 `log`: the
/// integer path against the exact one (the f32 GEMM) and f32 sgemm, warm,
/// one thread. Few output rows use each quantized input element few
/// times, so quantizing the input weighs more than at 4096 x 4096.
fn bench_linear_small(c: &mut Criterion) {
    one_thread();
    let mut g = c.benchmark_group("linear_small");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (rows, cols) in [(384usize, 384usize), (1536, 384), (384, 1536)] {
        let w = weights(Distribution::Gaussian, rows * cols, 0.02, 5);
        let bytes = log_file(&w, &[rows, cols], 4);
        let file = LsqFile::from_bytes(&bytes).unwrap();
        let TensorView::Quantized(view) = file.tensor("w").unwrap() else { unreachable!() };
        let int = lsqr::runtime::packed_weight(&view).unwrap();
        let mut exact = int.clone();
        exact.set_exact(true);
        for batch in [16usize, 32, 64, 256] {
            let x = weights(Distribution::Gaussian, batch * cols, 1.0, 7);
            let mut y = vec![0.0f32; batch * rows];
            let mut scratch = vec![0.0f32; linear_scratch_len(&int, batch)];
            let id = |name: &str| BenchmarkId::new(format!("{rows}x{cols}/{name}"), batch);
            g.bench_function(id("f32_matrixmultiply_sgemm"), |b| {
                b.iter(|| {
                    sgemm(batch, cols, rows, &x, (cols, 1), &w, (1, cols), &mut y);
                    black_box(&y);
                })
            });
            for (name, wt) in [("packed_log_C4", &int), ("packed_log_C4_exact", &exact)] {
                g.bench_function(id(name), |b| {
                    b.iter(|| {
                        linear_into(wt, None, &x, batch, &mut y, &mut scratch).unwrap();
                        black_box(&y);
                    })
                });
            }
        }
    }
    g.finish();
}

/// Batch 1 on small, cache-resident weights (the MNIST MLP's 128 x 784 and
/// 10 x 128, MiniLM's 384 x 384 and 1536 x 384), C = 2..8 `log`, warm:
/// the default path against the exact one and an f32 loop. Out of cache
/// (`linear_b1_*`) the integer path's fewer instructions per weight win;
/// in cache its fixed costs (quantizing the input, per-call tables) and
/// C = 3's code unpacking weigh more.
fn bench_linear_hot(c: &mut Criterion) {
    one_thread();
    let mut g = c.benchmark_group("linear_hot_b1");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500));
    for (rows, cols) in [(10usize, 128usize), (128, 784), (384, 384), (1536, 384)] {
        let w = weights(Distribution::Gaussian, rows * cols, 0.02, 5);
        let x = weights(Distribution::Gaussian, cols, 1.0, 6);
        let mut y = vec![0.0f32; rows];
        g.bench_function(format!("{rows}x{cols}/f32_loop"), |b| {
            b.iter(|| {
                for (r, out) in y.iter_mut().enumerate() {
                    *out = dot8(&w[r * cols..(r + 1) * cols], &x);
                }
                black_box(&y);
            })
        });
        for bits in 2..=8u32 {
            let bytes = log_file(&w, &[rows, cols], bits);
            let file = LsqFile::from_bytes(&bytes).unwrap();
            let TensorView::Quantized(view) = file.tensor("w").unwrap() else { unreachable!() };
            let int = lsqr::runtime::packed_weight(&view).unwrap();
            let mut exact = int.clone();
            exact.set_exact(true);
            let mut scratch = vec![0.0f32; linear_scratch_len(&int, 1)];
            for (name, wt) in [("packed_log", &int), ("packed_log_exact", &exact)] {
                g.bench_function(
                    BenchmarkId::new(format!("{rows}x{cols}/{name}"), format!("C{bits}")),
                    |b| {
                        b.iter(|| {
                            linear_into(wt, None, &x, 1, &mut y, &mut scratch).unwrap();
                            black_box(&y);
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

/// Every figure is single-threaded unless its name says otherwise: the
/// global rayon pool (lsqr-kernels' `parallel` feature) gets one thread.
fn one_thread() {
    // An error means the pool already exists (set by an earlier group).
    let _ = rayon::ThreadPoolBuilder::new().num_threads(1).build_global();
}

fn bench(c: &mut Criterion) {
    one_thread();
    let mut flush_buf = vec![0u8; 256 << 20];
    linear_b1(c, &mut flush_buf, 4096, 4096, &[2, 3, 4, 5, 6, 7, 8]);
    linear_b1(c, &mut flush_buf, 11008, 4096, &[2, 3, 4, 5, 6, 7, 8]);
    linear_b1(c, &mut flush_buf, 4096, 11008, &[4, 8]);
}

/// f32 im2col of one image (`[c, h, w]`, stride 1, square padding `pad`,
/// `k x k` kernel) into `col[c k k, oh ow]`, rows of contiguous copies.
fn im2col(x: &[f32], c: usize, h: usize, w: usize, k: usize, pad: usize, col: &mut [f32]) {
    let (oh, ow) = (h + 2 * pad - k + 1, w + 2 * pad - k + 1);
    for ch in 0..c {
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut col[((ch * k + ky) * k + kx) * oh * ow..][..oh * ow];
                for oy in 0..oh {
                    let dst = &mut row[oy * ow..(oy + 1) * ow];
                    let y = (oy + ky).wrapping_sub(pad);
                    if y >= h {
                        dst.fill(0.0);
                        continue;
                    }
                    for (ox, d) in dst.iter_mut().enumerate() {
                        let xx = (ox + kx).wrapping_sub(pad);
                        *d = if xx < w { x[(ch * h + y) * w + xx] } else { 0.0 };
                    }
                }
            }
        }
    }
}

fn bench_conv(c: &mut Criterion) {
    one_thread();
    const HW: usize = 56;
    let mut g = c.benchmark_group("conv2d");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let p = Conv2dParams { padding: [1, 1], ..Conv2dParams::default() };

    // 3x3, 64 -> 64.
    let (cin, cout) = (64usize, 64usize);
    let kk = cin * 9;
    let w = weights(Distribution::Gaussian, cout * kk, 0.05, 11);
    let x = weights(Distribution::Gaussian, cin * HW * HW, 1.0, 12);
    let mut col = vec![0.0f32; kk * HW * HW];
    let mut out = vec![0.0f32; cout * HW * HW];
    g.bench_function(BenchmarkId::new("3x3_64_56", "f32_im2col_sgemm"), |b| {
        b.iter(|| {
            im2col(&x, cin, HW, HW, 3, 1, &mut col);
            sgemm(cout, kk, HW * HW, &w, (kk, 1), &col, (HW * HW, 1), &mut out);
            black_box(&out);
        })
    });
    let shape = [1, cin, HW, HW];
    let bytes = log_file(&w, &[cout, cin, 3, 3], 4);
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let TensorView::Quantized(view) = file.tensor("w").unwrap() else { unreachable!() };
    let packed = lsqr::runtime::packed_weight(&view).unwrap();
    let plain = PackedWeight::from_f32(&w, &[cout, cin, 3, 3]).unwrap();
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    g.bench_function(BenchmarkId::new("3x3_64_56", "packed_log_C4_2threads"), |b| {
        b.iter(|| black_box(two.install(|| conv2d(&packed, None, &x, shape, &p).unwrap())))
    });
    for (name, weight) in [("packed_log_C4", &packed), ("plain_f32_lsqr", &plain)] {
        let mut scratch = vec![0.0f32; conv2d_scratch_len(weight, shape, &p).unwrap()];
        g.bench_function(BenchmarkId::new("3x3_64_56", name), |b| {
            b.iter(|| {
                conv2d_into(weight, None, &x, shape, &p, &mut out, &mut scratch).unwrap();
                black_box(&out);
            })
        });
    }

    // Depthwise 3x3, 256 channels. Baselines: per-channel f32 im2col +
    // sgemm ([1, 9] x [9, 3136]), and a direct f32 loop (per channel, per
    // tap, a multiply-add over each output row, as the packed path does
    // after decoding; compiled for the baseline x86-64 target, SSE2).
    let ch = 256usize;
    let w = weights(Distribution::Gaussian, ch * 9, 0.2, 13);
    let x = weights(Distribution::Gaussian, ch * HW * HW, 1.0, 14);
    let mut out = vec![0.0f32; ch * HW * HW];
    let mut col = vec![0.0f32; 9 * HW * HW];
    g.bench_function(BenchmarkId::new("dw3x3_256_56", "f32_im2col_sgemm"), |b| {
        b.iter(|| {
            for k in 0..ch {
                im2col(&x[k * HW * HW..][..HW * HW], 1, HW, HW, 3, 1, &mut col);
                let o = &mut out[k * HW * HW..][..HW * HW];
                sgemm(1, 9, HW * HW, &w[k * 9..][..9], (9, 1), &col, (HW * HW, 1), o);
            }
            black_box(&out);
        })
    });
    g.bench_function(BenchmarkId::new("dw3x3_256_56", "f32_direct_loop"), |b| {
        b.iter(|| {
            for k in 0..ch {
                let (src, o) = (&x[k * HW * HW..][..HW * HW], &mut out[k * HW * HW..][..HW * HW]);
                o.fill(0.0);
                for oy in 0..HW {
                    for ky in 0..3 {
                        let Some(y) = (oy + ky).checked_sub(1).filter(|&y| y < HW) else {
                            continue;
                        };
                        for kx in 0..3 {
                            let tap = w[k * 9 + ky * 3 + kx];
                            // Valid ox: 0 <= ox + kx - 1 < HW.
                            let (o0, o1) = (1usize.saturating_sub(kx), (HW + 1 - kx).min(HW));
                            let (x0, len) = (o0 + kx - 1, o1 - o0);
                            let dst = &mut o[oy * HW + o0..][..len];
                            for (d, &v) in dst.iter_mut().zip(&src[y * HW + x0..][..len]) {
                                *d += tap * v;
                            }
                        }
                    }
                }
            }
            black_box(&out);
        })
    });
    let bytes = log_file(&w, &[ch, 1, 3, 3], 4);
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let TensorView::Quantized(view) = file.tensor("w").unwrap() else { unreachable!() };
    let packed = lsqr::runtime::packed_weight(&view).unwrap();
    let shape = [1, ch, HW, HW];
    let dp = Conv2dParams { groups: ch, ..p };
    let mut scratch = vec![0.0f32; conv2d_scratch_len(&packed, shape, &dp).unwrap()];
    g.bench_function(BenchmarkId::new("dw3x3_256_56", "packed_log_C4"), |b| {
        b.iter(|| {
            conv2d_into(&packed, None, &x, shape, &dp, &mut out, &mut scratch).unwrap();
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench,
    dequantize,
    bench_linear_batch,
    bench_linear_small,
    bench_linear_hot,
    bench_conv
);
criterion_main!(benches);
