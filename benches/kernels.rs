//! Linear at batch 1 on packed weights (4096x4096 at C = 2..8; 11008x4096
//! and 4096x11008 at C = 4 and 8), beside its baselines measured in the
//! same run:
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
//! `cargo bench --bench kernels -- --noplot`

use std::hint::black_box;
use std::io::Cursor;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lsqr::codec::{quantize, CodecSpec, QuantizeOptions};
use lsqr::format::{LsqFile, LsqWriter, TensorView};
use lsqr::synthetic::{weights, Distribution};
use lsqr_kernels::packed::{
    dequantize_into, dequantize_into_bf16, dequantize_into_f16, linear, PackedWeight,
};
use ndarray::{Array1, Array2};

/// Evicts the caches by streaming 256 MiB.
fn flush(buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate().step_by(64) {
        *b = b.wrapping_add(i as u8);
    }
    black_box(&buf);
}

/// Times `f` with a cache flush before each run.
fn cold(iters: u64, flush_buf: &mut [u8], mut f: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        flush(flush_buf);
        let t = Instant::now();
        f();
        total += t.elapsed();
    }
    total
}

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
        let q =
            quantize(&w, &[rows, cols], &QuantizeOptions::new(CodecSpec::Log { mu: None }, bits))
                .unwrap();
        let mut writer = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
        writer.add_quantized("w", &q).unwrap();
        let bytes = writer.finish().unwrap().into_inner();
        let file = LsqFile::from_bytes(&bytes).unwrap();
        let TensorView::Quantized(view) = file.tensor("w").unwrap() else { unreachable!() };
        let packed = PackedWeight::from_view(&view).unwrap();
        g.bench_function(BenchmarkId::new("packed_log", format!("C{bits}")), |b| {
            b.iter_custom(|n| {
                cold(n, flush_buf, || {
                    linear(&packed, None, &x, 1, &mut y).unwrap();
                    black_box(&y);
                })
            })
        });
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
        let mut writer = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
        writer.add_quantized("w", &q).unwrap();
        let bytes = writer.finish().unwrap().into_inner();
        let file = LsqFile::from_bytes(&bytes).unwrap();
        let TensorView::Quantized(view) = file.tensor("w").unwrap() else { unreachable!() };
        let packed = PackedWeight::from_view(&view).unwrap();
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
    linear_b1(c, &mut flush_buf, 11008, 4096, &[4, 8]);
    linear_b1(c, &mut flush_buf, 4096, 11008, &[4, 8]);
}

criterion_group!(benches, bench, dequantize);
criterion_main!(benches);
