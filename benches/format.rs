//! The `.lsq` container: opening a file and listing its tensors (which must
//! not depend on how much tensor data the file holds), and the atomic
//! writer's throughput against a plain write + fsync of as many bytes.
//!
//! Run with `cargo bench --bench format -- --noplot`. Files are written
//! under Cargo's target tmp folder (on disk, not tmpfs, so fsync means
//! something) and removed at the end.
//!
//! - `open_and_list/{1GiB,1MiB}`: `LsqFile::open` (mmap, preamble, header
//!   CRC and validation) + a walk over `tensors()`, on two files with the
//!   same 256 tensor entries, one of ~1 GiB and one of ~1 MiB of data.
//! - `write_256MiB/{lsq_file_writer,fs_write_sync}`: 64 raw tensors of
//!   4 MiB through `LsqFileWriter` (temporary file, fsync, rename), and as
//!   baseline the same bytes written with `std::fs::File` + `sync_all`.

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lsqr::codec::{quantize, CodecSpec, QuantizeOptions};
use lsqr_format::{LsqFile, LsqFileWriter, RawDtype};

/// Tensor entries in both files of `open_and_list`.
const TENSORS: usize = 256;
/// Quantized tensors among them (4-bit, 1024 columns), the rest raw.
const QUANTIZED: usize = 4;
/// Bytes of one tensor of the large file and of the written file.
const BIG: usize = 4 << 20;
/// Bytes of one raw tensor of the small file.
const SMALL: usize = 4 << 10;
/// Tensors of `write_256MiB`.
const WRITE_TENSORS: usize = 64;

/// A folder removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("lsqr-format-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the bench folder");
        Self(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// Writes a model of `TENSORS` entries: `QUANTIZED` quantized ones of
/// `q_rows` x 1024, then raw f16 tensors of `raw_bytes` bytes each. Both
/// files get headers of the same size: only the amount of data differs.
fn build(path: &Path, q_rows: usize, raw_bytes: usize) -> u64 {
    let mut file = LsqFileWriter::create(path).expect("creating the model");
    let w = file.writer();
    let weights: Vec<f32> = (0..q_rows * 1024).map(|i| ((i as f32) * 0.618).sin() * 0.05).collect();
    let codecs =
        [CodecSpec::Log { mu: Some(3.0) }, CodecSpec::Uniform, CodecSpec::Nf, CodecSpec::Fp(None)];
    for (i, codec) in codecs.into_iter().enumerate().take(QUANTIZED) {
        let q = quantize(&weights, &[q_rows, 1024], &QuantizeOptions::new(codec, 4))
            .expect("quantizing");
        w.add_quantized(&format!("model.layers.{i}.mlp.weight"), &q).expect("adding");
    }
    let raw = pattern(raw_bytes);
    for i in QUANTIZED..TENSORS {
        let name = format!("model.layers.{i}.self_attn.weight");
        w.add_raw(&name, RawDtype::F16, &[raw_bytes / 2048, 1024], &raw).expect("adding");
    }
    file.finish().expect("finishing the model");
    std::fs::metadata(path).expect("stat").len()
}

fn open_and_list(path: &Path) -> usize {
    let file = LsqFile::open(path).expect("opening");
    file.tensors().iter().map(|t| t.name.len()).sum()
}

fn bench_open(c: &mut Criterion) {
    let dir = TempDir::new("open");
    let files = [("1GiB", 1024, BIG), ("1MiB", 16, SMALL)].map(|(label, q_rows, raw)| {
        let path = dir.join(&format!("{label}.lsq"));
        let started = Instant::now();
        let len = build(&path, q_rows, raw);
        eprintln!("built {label}: {} bytes, {TENSORS} tensors, in {:.1?}", len, started.elapsed());
        (label, path)
    });
    let mut group = c.benchmark_group("open_and_list");
    group.sample_size(10).warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    for (label, path) in &files {
        let expected = open_and_list(path);
        assert!(expected > 0);
        group.bench_with_input(BenchmarkId::from_parameter(label), path, |b, path| {
            b.iter(|| assert_eq!(open_and_list(black_box(path)), expected))
        });
    }
    group.finish();
}

/// Times `iters` runs of `write`, each into a path that does not exist yet.
fn timed_writes(dir: &TempDir, iters: u64, write: impl Fn(&Path)) -> Duration {
    let path = dir.join("out.lsq");
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let _ = std::fs::remove_file(&path);
        let started = Instant::now();
        write(&path);
        total += started.elapsed();
    }
    let _ = std::fs::remove_file(&path);
    total
}

fn bench_write(c: &mut Criterion) {
    let dir = TempDir::new("write");
    let tensor = pattern(BIG);
    let write_lsq = |path: &Path| {
        let mut file = LsqFileWriter::create(path).expect("creating");
        for i in 0..WRITE_TENSORS {
            let name = format!("layers.{i}.weight");
            file.writer()
                .add_raw(&name, RawDtype::U8, &[BIG / 4096, 4096], &tensor)
                .expect("adding");
        }
        file.finish().expect("finishing");
    };
    // The baseline writes the same bytes in the same 4 MiB pieces.
    let write_plain = |path: &Path| {
        let mut file = std::fs::File::create(path).expect("creating");
        for _ in 0..WRITE_TENSORS {
            file.write_all(&tensor).expect("writing");
        }
        file.sync_all().expect("syncing");
    };
    write_lsq(&dir.join("probe.lsq"));
    let lsq_len = std::fs::metadata(dir.join("probe.lsq")).expect("stat").len();
    let _ = std::fs::remove_file(dir.join("probe.lsq"));
    eprintln!("write_256MiB: .lsq file of {lsq_len} bytes, baseline {} bytes", WRITE_TENSORS * BIG);

    let mut group = c.benchmark_group("write_256MiB");
    group.throughput(Throughput::Bytes((WRITE_TENSORS * BIG) as u64));
    group.sample_size(10).warm_up_time(Duration::from_millis(500));
    // One write takes ~0.5-1 s: 10 samples of one iteration each.
    group.measurement_time(Duration::from_secs(12));
    group.bench_function("lsq_file_writer", |b| {
        b.iter_custom(|iters| timed_writes(&dir, iters, write_lsq))
    });
    group.bench_function("fs_write_sync", |b| {
        b.iter_custom(|iters| timed_writes(&dir, iters, write_plain))
    });
    group.finish();
}

criterion_group!(benches, bench_open, bench_write);
criterion_main!(benches);
