//! Linear at batch 1 on packed weights (the state of issue 5: a first
//! fused path, not yet the tuned one), beside its baselines measured in the
//! same run:
//! - f32 `ndarray` `Array2::dot` (what a Rust user would write),
//! - a plain f32 loop with eight partial sums, vectorised for this CPU,
//! - memcpy of the packed bytes: the memory-bandwidth roofline.
//!
//! Weights are kept out of cache: a 256 MiB buffer is streamed between
//! repetitions (`iter_custom`), as in the measurement of candle.
//!
//! `cargo bench --bench kernels -- --noplot`

use std::hint::black_box;
use std::io::Cursor;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lsqr::codec::{quantize, CodecSpec, QuantizeOptions};
use lsqr::format::{LsqFile, LsqWriter, TensorView};
use lsqr::synthetic::{weights, Distribution};
use lsqr_kernels::packed::{linear, PackedWeight};
use ndarray::{Array1, Array2};

const ROWS: usize = 4096;
const COLS: usize = 4096;

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

fn bench(c: &mut Criterion) {
    let mut flush_buf = vec![0u8; 256 << 20];
    let w = weights(Distribution::Gaussian, ROWS * COLS, 0.02, 5);
    let x = weights(Distribution::Gaussian, COLS, 1.0, 6);
    let mut g = c.benchmark_group("linear_b1_4096x4096");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));

    let wa = Array2::from_shape_vec((ROWS, COLS), w.clone()).unwrap();
    let xa = Array1::from(x.clone());
    g.bench_function("f32_ndarray_dot", |b| {
        b.iter_custom(|n| {
            cold(n, &mut flush_buf, || {
                black_box(wa.dot(&xa));
            })
        })
    });
    let mut y = vec![0.0f32; ROWS];
    g.bench_function("f32_loop", |b| {
        b.iter_custom(|n| {
            cold(n, &mut flush_buf, || {
                for (r, out) in y.iter_mut().enumerate() {
                    *out = dot8(&w[r * COLS..(r + 1) * COLS], &x);
                }
                black_box(&y);
            })
        })
    });

    for bits in [4u32, 8] {
        let q =
            quantize(&w, &[ROWS, COLS], &QuantizeOptions::new(CodecSpec::Log { mu: None }, bits))
                .unwrap();
        let mut writer = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
        writer.add_quantized("w", &q).unwrap();
        let bytes = writer.finish().unwrap().into_inner();
        let file = LsqFile::from_bytes(&bytes).unwrap();
        let TensorView::Quantized(view) = file.tensor("w").unwrap() else { unreachable!() };
        let packed = PackedWeight::from_view(&view).unwrap();
        g.bench_function(BenchmarkId::new("packed_log", format!("C{bits}")), |b| {
            b.iter_custom(|n| {
                cold(n, &mut flush_buf, || {
                    linear(&packed, None, &x, 1, &mut y).unwrap();
                    black_box(&y);
                })
            })
        });
        let src = view.packed().to_vec();
        let mut dst = vec![0u8; src.len()];
        g.bench_function(BenchmarkId::new("memcpy_packed", format!("C{bits}")), |b| {
            b.iter_custom(|n| {
                cold(n, &mut flush_buf, || {
                    dst.copy_from_slice(&src);
                    black_box(&dst);
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
