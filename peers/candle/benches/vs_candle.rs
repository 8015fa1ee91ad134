//! LSQR's batch-1 packed linear against candle-core's quantized matmul,
//! measured in the same run, so that README's ratios come from one run.
//!
//! Groups `b1_4096x4096` and `b1_11008x4096` (out x in). Every entry
//! multiplies the same Gaussian weight (`synthetic::weights`, std 0.02,
//! seed 5) by the same Gaussian input (std 1, seed 6), on the CPU:
//! - `candle_q4k`, `candle_q4_0`, `candle_q8_0`: candle-core 0.11.1's
//!   `QTensor::quantize` of the `[out, in]` f32 weight to Q4K / Q4_0 /
//!   Q8_0, wrapped in `QMatMul::from_qtensor`, forwarded on a `[1, in]` f32
//!   tensor (`Module::forward`: candle quantizes the input to its dot type,
//!   then runs its own CPU kernels). On x86 candle repacks Q4K (and Q8_0
//!   where AVX-VNNI or AVX-512 VNNI is present) into its own tiled layout
//!   at the first forward, done here at setup; on an AVX2-only CPU, Q8_0
//!   and Q4_0 run its ggml-style `vec_dot` kernels on the blocks as stored.
//! - `lsqr_log/C{bits}`: `lsqr_kernels::packed::linear` on the `log` codec
//!   at C bits (groups of 64, f16 scales), C = 2..=8 at 4096x4096, C = 4
//!   and 8 at 11008x4096.
//! - floors: `f32_ndarray_dot` (`Array2::dot`, the f32 weight) and
//!   `memcpy_packed/C{bits}` (a copy of as many bytes as our kernel reads:
//!   packed codes plus f32 scales; the memory-bandwidth roofline).
//! - `lsqr_log_2threads/C4` and `candle_q4k_2threads`: both on 2 threads.
//!
//! The matching peers: candle's Q4K (4.5 bits per weight, super-blocks of
//! 256) for C = 4, its Q8_0 (8.5 bits per weight, blocks of 32) for C = 8.
//! Issue 13's targets: C = 4 at least 1.5x the speed of Q4K, C = 8 at
//! least 1.5x the speed of Q8_0. Q4_0 is the simpler 4-bit format (blocks
//! of 32, 4.5 bits per weight).
//!
//! Weights are kept out of cache, as in benches/kernels.rs: a 256 MiB
//! buffer is streamed before every timed repetition (`iter_custom`).
//!
//! Threads: candle's quantized CPU matmul does not run on rayon's pools but
//! on its own `utils::barrier_pool()`, sized once per process from
//! `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the physical cores.
//! So the single-thread candle entries need `RAYON_NUM_THREADS=1` (and no
//! `CANDLE_NUM_THREADS` above 1), and `candle_q4k_2threads` needs a second
//! process with `CANDLE_NUM_THREADS=2`; scripts/bench-candle.sh runs both.
//! With neither variable set, the bench sets `RAYON_NUM_THREADS=1` before
//! candle's pool exists. It then asks the pool its size: with 1 thread it
//! registers every entry but `candle_q4k_2threads`, with 2 only
//! `candle_q4k_2threads`, otherwise only our entries and the floors. Every
//! call also runs inside a rayon pool of the entry's thread count (ours
//! split their rows over it).
//!
//! At setup each output is checked against the f64-accumulated f32
//! product (relative L2 error: below 0.2 at 4 bits, 0.02 at 8), so that a
//! wrong peer setup fails loudly instead of timing the wrong thing.
//!
//! `RAYON_NUM_THREADS=1 cargo bench --bench vs_candle -- --noplot`

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lsqr::codec::{quantize, CodecSpec, QuantizeOptions};
use lsqr::format::{LsqFile, LsqWriter, TensorView};
use lsqr::synthetic::{weights, Distribution};
use lsqr_kernels::packed::{linear, linear_into, linear_scratch_len};
use lsqr_kernels::paths;
use ndarray::{Array1, Array2};
use rayon::ThreadPool;

/// `flush` and `cold`: the weights out of cache before every timed call.
#[path = "../../../benches/support.rs"]
mod support;
use support::cold;

/// How candle's quantized matmul runs in this process.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CandleMode {
    /// Candle's pool has one thread: the single-thread entries.
    OneThread,
    /// Two threads: only `candle_q4k_2threads`.
    TwoThreads,
    /// Any other size: no candle entry.
    Off,
}

fn candle_mode() -> CandleMode {
    // A plain `cargo bench` gets the single-thread figures: candle's pool
    // is sized on first use, below, from these variables.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none()
        && std::env::var_os("RAYON_NUM_THREADS").is_none()
    {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    // The calling thread works beside the pool's workers.
    let threads = candle_core::utils::barrier_pool().n_workers() + 1;
    match threads {
        1 => CandleMode::OneThread,
        2 => CandleMode::TwoThreads,
        n => {
            eprintln!(
                "candle's CPU pool has {n} threads: candle entries skipped \
                 (set RAYON_NUM_THREADS=1, and CANDLE_NUM_THREADS=2 for candle_q4k_2threads)"
            );
            CandleMode::Off
        }
    }
}

/// A rayon pool of `threads` threads, named `pool{threads}-{i}` (so that
/// `top -H` shows which pool works).
fn pool(threads: usize) -> ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("pool{threads}-{i}"))
        .build()
        .unwrap()
}

/// `w x` with f64 sums: the reference every output is checked against.
fn reference(w: &[f32], x: &[f32]) -> Vec<f32> {
    w.chunks_exact(x.len())
        .map(|row| row.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32)
        .collect()
}

/// Panics unless `y` is within relative L2 error `bound` of `reference`.
fn check(what: &str, y: &[f32], reference: &[f32], bound: f64) {
    assert_eq!(y.len(), reference.len(), "{what}: output length");
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (&a, &r) in y.iter().zip(reference) {
        err += (a as f64 - r as f64).powi(2);
        norm += (r as f64).powi(2);
    }
    let rel = (err / norm).sqrt();
    eprintln!("{what}: relative L2 error {rel:.4} (bound {bound})");
    assert!(rel < bound, "{what}: relative L2 error {rel} not below {bound}: wrong setup?");
}

/// The bound on the relative L2 error of a C-bit product.
fn bound(bits: u32) -> f64 {
    match bits {
        2 => 0.8,
        3 => 0.4,
        4 => 0.2,
        5 => 0.1,
        6 => 0.05,
        7 => 0.03,
        _ => 0.02,
    }
}

/// candle's `[rows, cols]` weight quantized to `dtype`, checked once
/// against `reference` (the first forward also builds candle's repacked
/// copy, when it makes one, before any timing).
fn candle_peer(
    name: &str,
    w: &Tensor,
    dtype: GgmlDType,
    bits: u32,
    xt: &Tensor,
    reference: &[f32],
) -> QMatMul {
    let q = QTensor::quantize(w, dtype).unwrap();
    let bytes = q.storage_size_in_bytes();
    let mm = QMatMul::from_qtensor(q).unwrap();
    assert!(matches!(mm, QMatMul::QTensor(_)), "{name}: candle dequantized the weight");
    let y = pool(1).install(|| mm.forward(xt)).unwrap();
    assert_eq!(y.dims(), &[1, reference.len()]);
    let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    let bpw = bytes as f64 * 8.0 / w.elem_count() as f64;
    check(&format!("{name} ({bpw:.2} bits/weight)"), &y, reference, bound(bits));
    mm
}

/// One group: batch-1 linear of an `[rows, cols]` weight, candle's
/// formats, ours at each C in `widths`, and the floors.
fn linear_b1(
    c: &mut Criterion,
    flush_buf: &mut [u8],
    mode: CandleMode,
    rows: usize,
    cols: usize,
    widths: &[u32],
) {
    let w = weights(Distribution::Gaussian, rows * cols, 0.02, 5);
    let x = weights(Distribution::Gaussian, cols, 1.0, 6);
    let r = reference(&w, &x);
    let (one, two) = (pool(1), pool(2));
    let mut g = c.benchmark_group(format!("b1_{rows}x{cols}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));

    if mode != CandleMode::Off {
        let wt = Tensor::from_slice(&w, (rows, cols), &Device::Cpu).unwrap();
        let xt = Tensor::from_slice(&x, (1, cols), &Device::Cpu).unwrap();
        let peers: &[(&str, GgmlDType, u32)] = if mode == CandleMode::OneThread {
            &[
                ("candle_q4k", GgmlDType::Q4K, 4),
                ("candle_q4_0", GgmlDType::Q4_0, 4),
                ("candle_q8_0", GgmlDType::Q8_0, 8),
            ]
        } else {
            &[("candle_q4k_2threads", GgmlDType::Q4K, 4)]
        };
        let threads = if mode == CandleMode::OneThread { &one } else { &two };
        for &(name, dtype, bits) in peers {
            let mm = candle_peer(name, &wt, dtype, bits, &xt, &r);
            g.bench_function(name, |b| {
                b.iter_custom(|n| {
                    cold(n, flush_buf, || {
                        black_box(threads.install(|| mm.forward(&xt)).unwrap());
                    })
                })
            });
        }
        if mode == CandleMode::TwoThreads {
            // The rest ran in the single-thread process.
            g.finish();
            return;
        }
    }

    let wa = Array2::from_shape_vec((rows, cols), w.clone()).unwrap();
    let xa = Array1::from(x.clone());
    check("f32_ndarray_dot", wa.dot(&xa).as_slice().unwrap(), &r, 1e-4);
    g.bench_function("f32_ndarray_dot", |b| {
        b.iter_custom(|n| {
            cold(n, flush_buf, || {
                black_box(wa.dot(&xa));
            })
        })
    });
    drop(wa);

    // `MISTRALRS_FORCE_AVX2=1` keeps candle to its AVX2 tier; ours then
    // runs its AVX2 kernel too: an AVX2-only CPU's pair, on this machine.
    let avx2_only =
        std::env::var("MISTRALRS_FORCE_AVX2").is_ok_and(|v| v == "1").then(paths::avx2).flatten();
    let mut y = vec![0.0f32; rows];
    for &bits in widths {
        let q =
            quantize(&w, &[rows, cols], &QuantizeOptions::new(CodecSpec::Log { mu: None }, bits))
                .unwrap();
        let mut writer = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
        writer.add_quantized("w", &q).unwrap();
        let bytes = writer.finish().unwrap().into_inner();
        let file = LsqFile::from_bytes(&bytes).unwrap();
        let TensorView::Quantized(view) = file.tensor("w").unwrap() else { unreachable!() };
        let packed = lsqr::runtime::packed_weight(&view).unwrap();
        let read = view.packed().len() + view.scales_f32().len() * 4;
        one.install(|| linear(&packed, None, &x, 1, &mut y)).unwrap();
        let bpw = read as f64 * 8.0 / (rows * cols) as f64;
        check(&format!("lsqr_log/C{bits} ({bpw:.2} bits/weight read)"), &y, &r, bound(bits));

        // The scratch (the integer path's quantized input) is allocated
        // once, as a runtime plan or a prepared C handle does.
        let mut scratch = vec![0.0f32; linear_scratch_len(&packed, 1)];
        g.bench_function(BenchmarkId::new("lsqr_log", format!("C{bits}")), |b| {
            b.iter_custom(|n| {
                cold(n, flush_buf, || {
                    one.install(|| match avx2_only {
                        Some(avx2) => paths::linear_into_with(
                            avx2,
                            &packed,
                            None,
                            &x,
                            1,
                            &mut y,
                            &mut scratch,
                        ),
                        None => linear_into(&packed, None, &x, 1, &mut y, &mut scratch),
                    })
                    .unwrap();
                    black_box(&y);
                })
            })
        });
        if bits == 4 {
            g.bench_function(BenchmarkId::new("lsqr_log_2threads", format!("C{bits}")), |b| {
                b.iter_custom(|n| {
                    cold(n, flush_buf, || {
                        two.install(|| linear_into(&packed, None, &x, 1, &mut y, &mut scratch))
                            .unwrap();
                        black_box(&y);
                    })
                })
            });
        }
        let src = vec![1u8; read];
        let mut dst = vec![0u8; read];
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

fn bench(c: &mut Criterion) {
    let mode = candle_mode();
    // Anything on rayon's global pool runs on one thread too.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(1).build_global();
    let mut flush_buf = vec![0u8; 256 << 20];
    linear_b1(c, &mut flush_buf, mode, 4096, 4096, &[2, 3, 4, 5, 6, 7, 8]);
    linear_b1(c, &mut flush_buf, mode, 11008, 4096, &[4, 8]);
}

criterion_group!(benches, bench);
criterion_main!(benches);
