//! Encode (the whole `quantize`: scales, μ search or table training, codes)
//! and decode (`dequantize_into`) for every codebook at C = 4 and C = 8, on
//! 16 M elements (a 4096 x 4096 Gaussian weight), groups of 64, f16 scales,
//! beside a memcpy of the same f32 tensor measured in the same run.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lsqr::codec::{quantize, CodecKind, CodecSpec, QuantizeOptions};
use lsqr::synthetic::{weights, Distribution};

const ROWS: usize = 4096;
const COLS: usize = 4096;

fn bench(c: &mut Criterion) {
    let data = weights(Distribution::Gaussian, ROWS * COLS, 0.02, 1);
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements((ROWS * COLS) as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    // Baseline for this machine and run: memcpy of the f32 tensor (64 MiB,
    // out of cache), the floor for any pass that reads or writes it.
    let mut copy = vec![0.0f32; data.len()];
    group.bench_function("memcpy_f32", |b| b.iter(|| copy.copy_from_slice(&data)));
    drop(copy);
    for kind in CodecKind::ALL {
        for bits in [4u32, 8] {
            let options = QuantizeOptions::new(CodecSpec::default_for(kind), bits);
            let id = format!("{kind}/C{bits}");
            group.bench_function(BenchmarkId::new("encode", &id), |b| {
                b.iter(|| quantize(&data, &[ROWS, COLS], &options).unwrap())
            });
            let q = quantize(&data, &[ROWS, COLS], &options).unwrap();
            let mut out = vec![0.0f32; data.len()];
            group.bench_function(BenchmarkId::new("decode", &id), |b| {
                b.iter(|| q.dequantize_into(&mut out).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
