//! Pack / unpack throughput for every code width, in codes per second.
//!
//! Run with `cargo bench --bench pack -- --noplot`. Groups `pack` and
//! `unpack` use the dispatched (fastest available) implementation; groups
//! `pack_scalar` and `unpack_scalar` force the portable one.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lsqr::pack::{pack_into, packed_len, paths, unpack_into};

const N: usize = 1 << 20;

fn codes(width: u32) -> Vec<u16> {
    let mask = ((1u32 << width) - 1) as u16;
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..N)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 16) as u16 & mask
        })
        .collect()
}

type PackFn = fn(&[u16], u32, &mut [u8]) -> Result<usize, lsqr::pack::PackError>;
type UnpackFn = fn(&[u8], u32, &mut [u16]) -> Result<(), lsqr::pack::PackError>;

fn scalar_unpack(p: &[u8], w: u32, out: &mut [u16]) -> Result<(), lsqr::pack::PackError> {
    paths::scalar::unpack_from(p, w, 0, out)
}

fn bench_group(c: &mut Criterion, name: &str, pack: PackFn, unpack: UnpackFn) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(N as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for width in 1..=16u32 {
        let input = codes(width);
        let mut packed = vec![0u8; packed_len(N, width).unwrap()];
        pack(&input, width, &mut packed).unwrap();
        let mut out = vec![0u16; N];
        if name.starts_with("pack") {
            g.bench_with_input(BenchmarkId::from_parameter(width), &width, |b, &w| {
                b.iter(|| pack(black_box(&input), w, black_box(&mut packed)).unwrap())
            });
        } else {
            unpack(&packed, width, &mut out).unwrap();
            assert_eq!(out, input);
            g.bench_with_input(BenchmarkId::from_parameter(width), &width, |b, &w| {
                b.iter(|| unpack(black_box(&packed), w, black_box(&mut out)).unwrap())
            });
        }
    }
    g.finish();
}

/// Baseline for this machine and run: copying the 2 MiB of unpacked u16
/// codes (what unpack writes) with memcpy.
fn bench_memcpy(c: &mut Criterion) {
    let mut g = c.benchmark_group("memcpy_u16");
    g.throughput(Throughput::Elements(N as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let src = codes(16);
    let mut dst = vec![0u16; N];
    g.bench_function("copy", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
    g.finish();
}

fn benches(c: &mut Criterion) {
    eprintln!("dispatched path: {}", paths::selected());
    bench_memcpy(c);
    bench_group(c, "unpack", pack_into, unpack_into);
    bench_group(c, "pack", pack_into, unpack_into);
    bench_group(c, "unpack_scalar", paths::scalar::pack_into, scalar_unpack);
    bench_group(c, "pack_scalar", paths::scalar::pack_into, scalar_unpack);
}

criterion_group!(pack_benches, benches);
criterion_main!(pack_benches);
