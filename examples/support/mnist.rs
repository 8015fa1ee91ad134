//! The MNIST experiment, shared by `examples/mnist_train.rs` (which prints
//! it) and `crates/lsqr-cli/tests/readme_figures.rs` (which checks README's
//! MNIST tables against it): load the sample, train the MLP from a fixed
//! seed, write it as f32 and with every codec at C = 2..=8, and classify the
//! held-out images with each file through the micro runtime.
//!
//! Data: the 5000-image MNIST sample (`$LSQR_MODELS` or
//! `~/.cache/lsqr-models`, `mnist/mnist_5k.csv.gz`): one image per line,
//! 784 pixels 0..=255 then the label. The file is sorted by label (500
//! images of each digit), so "the first 4000 for training, the last 1000
//! for testing" is taken per digit: the first 400 images of each digit
//! train, the last 100 test (a plain first/last split would test only on
//! 8s and 9s, never seen in training).
//!
//! Model: `input [1, 784]` (pixels / 255) -> `linear` 784x128 -> `relu` ->
//! `linear` 128x10 -> logits (the graph output `logits`). Trained with
//! plain minibatch SGD on softmax cross-entropy, from a fixed seed, in
//! scalar f32 code (no SIMD, no reassociation), so the weights are the same
//! bits on every machine.
//!
//! Files written to the output folder:
//! - `mnist-f32.lsq`: raw f32 weights;
//! - `mnist-<codec>-c<C>.lsq` for codec in seed, log, uniform, nf, fp, lut
//!   and C in 2..=8: both weight matrices quantized with groups of 64
//!   along each row and f16 scales (the library default), biases f32;
//! - `mnist-test.bin`: the 1000 test images for the C example. Layout,
//!   all little-endian: magic `LSQMNIST` (8 bytes), u32 image count N, u32
//!   pixels per image P (784), then N records of P u8 pixels (0..=255,
//!   row-major 28x28; the model's input is pixel / 255) followed by one
//!   u8 label (0..=9);
//! - `accuracy-rust.txt`: one line per file, in the format of
//!   `ffi-examples/c/mnist.c`, so that the C API's results can be compared
//!   with these line for line.

#![allow(dead_code)] // each includer uses a part

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lsqr::codec::{CodecKind, CodecSpec, QuantizeOptions, ScaleMethod, Scaling, TwoLevel};
use lsqr::format::LsqFile;
use lsqr::runtime::{ModelBuilder, Plan, WeightFormat};

pub const WIDTHS: std::ops::RangeInclusive<u32> = 2..=8;

const PIXELS: usize = 784;
const HIDDEN: usize = 128;
const CLASSES: usize = 10;
const EPOCHS: usize = 12;
const BATCH: usize = 32;
const LEARNING_RATE: f32 = 0.1;
const SEED: u64 = 0x5eed_1234;

struct Dataset {
    /// Pixels 0..=255, `PIXELS` per image.
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

impl Dataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn image(&self, i: usize, out: &mut [f32]) {
        for (o, &p) in out.iter_mut().zip(&self.pixels[i * PIXELS..(i + 1) * PIXELS]) {
            *o = f32::from(p) / 255.0;
        }
    }
}

fn data_path() -> PathBuf {
    let root = match std::env::var_os("LSQR_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/lsqr-models")
        }
    };
    root.join("mnist/mnist_5k.csv.gz")
}

/// Reads the CSV and splits it per digit: first 400 of each train, the
/// rest test.
fn load(path: &Path) -> Result<(Dataset, Dataset), Box<dyn Error>> {
    let file = std::fs::File::open(path).map_err(|e| {
        format!(
            "{}: {e}\nthe MNIST sample is missing: run `bash scripts/fetch-models.sh`",
            path.display()
        )
    })?;
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    let mut train = Dataset { pixels: Vec::new(), labels: Vec::new() };
    let mut test = Dataset { pixels: Vec::new(), labels: Vec::new() };
    let mut seen = [0usize; CLASSES];
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        let fields: Vec<u32> = line
            .split(',')
            .map(|f| f.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("line {}: {e}", n + 1))?;
        if fields.len() != PIXELS + 1 || fields[..PIXELS].iter().any(|&p| p > 255) {
            return Err(
                format!("line {}: expected 784 pixels in 0..=255 and a label", n + 1).into()
            );
        }
        let label = usize::try_from(fields[PIXELS])?;
        if label >= CLASSES {
            return Err(format!("line {}: label {label}", n + 1).into());
        }
        let set = if seen[label] < 400 { &mut train } else { &mut test };
        seen[label] += 1;
        set.pixels.extend(fields[..PIXELS].iter().map(|&p| p as u8));
        set.labels.push(label as u8);
    }
    Ok((train, test))
}

/// xorshift64*: deterministic, good enough for initialisation and shuffling.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The MLP, weights in the `[out, in]` layout of a `linear` layer.
struct Mlp {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl Mlp {
    fn new(rng: &mut Rng) -> Self {
        // He-uniform initialisation for the ReLU layer.
        let a1 = (6.0 / PIXELS as f32).sqrt();
        let a2 = (6.0 / HIDDEN as f32).sqrt();
        Self {
            w1: (0..HIDDEN * PIXELS).map(|_| rng.uniform() * a1).collect(),
            b1: vec![0.0; HIDDEN],
            w2: (0..CLASSES * HIDDEN).map(|_| rng.uniform() * a2).collect(),
            b2: vec![0.0; CLASSES],
        }
    }

    /// Hidden activations and logits of one image.
    fn forward(&self, x: &[f32], h: &mut [f32], logits: &mut [f32]) {
        for (j, hj) in h.iter_mut().enumerate() {
            let row = &self.w1[j * PIXELS..(j + 1) * PIXELS];
            *hj = (self.b1[j] + row.iter().zip(x).map(|(w, x)| w * x).sum::<f32>()).max(0.0);
        }
        for (k, lk) in logits.iter_mut().enumerate() {
            let row = &self.w2[k * HIDDEN..(k + 1) * HIDDEN];
            *lk = self.b2[k] + row.iter().zip(h.iter()).map(|(w, h)| w * h).sum::<f32>();
        }
    }
}

fn softmax(z: &mut [f32]) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    z.iter_mut().for_each(|v| *v /= sum);
}

fn argmax(z: &[f32]) -> usize {
    (0..z.len()).fold(0, |best, i| if z[i] > z[best] { i } else { best })
}

/// Minibatch SGD on mean softmax cross-entropy; returns the last epoch's
/// mean loss.
fn train(model: &mut Mlp, data: &Dataset, rng: &mut Rng, verbose: bool) -> f32 {
    let mut order: Vec<usize> = (0..data.len()).collect();
    let (mut x, mut h, mut p) = (vec![0.0; PIXELS], vec![0.0; HIDDEN], vec![0.0; CLASSES]);
    let (mut g1, mut gb1) = (vec![0.0f32; HIDDEN * PIXELS], vec![0.0f32; HIDDEN]);
    let (mut g2, mut gb2) = (vec![0.0f32; CLASSES * HIDDEN], vec![0.0f32; CLASSES]);
    let mut dh = vec![0.0f32; HIDDEN];
    let mut loss = 0.0;
    for epoch in 0..EPOCHS {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        loss = 0.0;
        for batch in order.chunks(BATCH) {
            g1.fill(0.0);
            gb1.fill(0.0);
            g2.fill(0.0);
            gb2.fill(0.0);
            for &i in batch {
                data.image(i, &mut x);
                model.forward(&x, &mut h, &mut p);
                softmax(&mut p);
                let y = usize::from(data.labels[i]);
                loss -= p[y].max(1e-12).ln();
                p[y] -= 1.0; // d loss / d logits
                dh.fill(0.0);
                for k in 0..CLASSES {
                    gb2[k] += p[k];
                    let w = &model.w2[k * HIDDEN..(k + 1) * HIDDEN];
                    for j in 0..HIDDEN {
                        g2[k * HIDDEN + j] += p[k] * h[j];
                        dh[j] += p[k] * w[j];
                    }
                }
                for j in 0..HIDDEN {
                    if h[j] <= 0.0 {
                        continue; // relu gate
                    }
                    gb1[j] += dh[j];
                    let g = &mut g1[j * PIXELS..(j + 1) * PIXELS];
                    for (gi, &xi) in g.iter_mut().zip(&x) {
                        *gi += dh[j] * xi;
                    }
                }
            }
            let step = LEARNING_RATE / batch.len() as f32;
            for (w, g) in model.w1.iter_mut().zip(&g1).chain(model.w2.iter_mut().zip(&g2)) {
                *w -= step * g;
            }
            for (b, g) in model.b1.iter_mut().zip(&gb1).chain(model.b2.iter_mut().zip(&gb2)) {
                *b -= step * g;
            }
        }
        loss /= data.len() as f32;
        if verbose {
            eprintln!("epoch {:>2}: mean loss {loss:.4}", epoch + 1);
        }
    }
    loss
}

fn write_model(model: &Mlp, format: &WeightFormat, path: &Path) -> Result<(), lsqr::Error> {
    let mut b = ModelBuilder::new();
    b.input("input", &[1, PIXELS])
        .linear("hidden", "input", "fc1", &model.w1, [HIDDEN, PIXELS], Some(&model.b1), format)
        .activation("hidden_relu", "hidden", "relu")
        .linear(
            "logits",
            "hidden_relu",
            "fc2",
            &model.w2,
            [CLASSES, HIDDEN],
            Some(&model.b2),
            format,
        )
        .output("logits")
        .metadata("description", lsqr::format::Value::String("MNIST 784-128-10 MLP".into()));
    Ok(b.write(path)?)
}

/// A `.lsq` file classified on `test` through the runtime.
fn accuracy_of(path: &Path, test: &Dataset) -> Result<FileResult, Box<dyn Error>> {
    let file = LsqFile::open(path)?;
    let plan = Plan::new(&file)?;
    let mut arena = vec![0u8; plan.arena_len()];
    let mut runner = plan.bind(&mut arena)?;
    let mut x = vec![0.0f32; PIXELS];
    let mut correct = 0usize;
    let mut busy = Duration::ZERO;
    for i in 0..test.len() {
        test.image(i, &mut x);
        let t = Instant::now();
        runner.set_input(0, &x)?;
        runner.run()?;
        busy += t.elapsed();
        correct += usize::from(argmax(runner.output(0)?) == usize::from(test.labels[i]));
    }
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(FileResult {
        file_name,
        correct,
        total: test.len(),
        layers: plan.layer_count(),
        arena_bytes: plan.arena_len(),
        all_levels_zero: all_levels_zero(path)?,
        int_path: int_path(path)?,
        latency: busy / test.len().max(1) as u32,
    })
}

/// Whether the decode table of `fc1.weight` is all zeros (a degenerate
/// codebook, as `seed` is at C = 2: its levels are `log2(k) / B` with
/// `k` in {0, 1}).
fn all_levels_zero(path: &Path) -> Result<bool, Box<dyn Error>> {
    let file = LsqFile::open(path)?;
    Ok(match file.tensor("fc1.weight")? {
        lsqr::format::TensorView::Quantized(q) => q.decode_table().iter().all(|&v| v == 0.0),
        lsqr::format::TensorView::Raw(_) => false,
    })
}

/// Whether `fc1.weight` runs linear on integer dot products (its table
/// has an integer form, and `LSQR_EXACT` is not set): its plan then keeps
/// the quantized input in the arena.
fn int_path(path: &Path) -> Result<bool, Box<dyn Error>> {
    let file = LsqFile::open(path)?;
    Ok(match file.tensor("fc1.weight")? {
        lsqr::format::TensorView::Quantized(q) => {
            lsqr::runtime::packed_weight(&q)?.int_form().is_some()
        }
        lsqr::format::TensorView::Raw(_) => false,
    })
}

fn write_test_set(test: &Dataset, path: &Path) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(16 + test.len() * (PIXELS + 1));
    bytes.extend_from_slice(b"LSQMNIST");
    bytes.extend_from_slice(&(test.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(PIXELS as u32).to_le_bytes());
    for i in 0..test.len() {
        bytes.extend_from_slice(&test.pixels[i * PIXELS..(i + 1) * PIXELS]);
        bytes.push(test.labels[i]);
    }
    std::fs::write(path, bytes)
}

/// One model file's result on the held-out images.
pub struct FileResult {
    pub file_name: String,
    pub correct: usize,
    pub total: usize,
    pub layers: usize,
    /// The arena `Plan::arena_len` asks for (what `lsqr_micro_arena_size`
    /// reports to C).
    pub arena_bytes: usize,
    /// `fc1.weight`'s codebook decodes every code to 0 (`seed` at C = 2).
    pub all_levels_zero: bool,
    /// `fc1.weight` runs on the integer path (see `int_path`).
    pub int_path: bool,
    /// Mean time of `set_input` + `run`, one image.
    pub latency: Duration,
}

impl FileResult {
    /// Accuracy in percent.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.correct as f64 / self.total as f64
        }
    }

    /// The line `ffi-examples/c/mnist.c` prints for the same file.
    pub fn c_line(&self) -> String {
        format!(
            "{}: {:.1}% ({}/{}), {} layers, arena {} bytes",
            self.file_name,
            self.percent(),
            self.correct,
            self.total,
            self.layers,
            self.arena_bytes
        )
    }
}

/// The whole experiment's results.
pub struct Experiment {
    /// Test accuracy of the trained weights in the training code (f64
    /// fraction), before any file is written.
    pub direct_accuracy: f64,
    pub f32: FileResult,
    /// One row per codec (in `CodecKind::ALL` order), one cell per C in
    /// `WIDTHS`; `Err` holds why the codec rejected that C.
    pub rows: Vec<(CodecKind, Vec<Result<FileResult, String>>)>,
    /// `lut` at C = 3 with two-level scales (3-bit sub-scales per 32
    /// elements) fitted to the error: the file, and its bits per quantized
    /// weight, everything stored counted.
    pub two_level_c3: (FileResult, f64),
    pub train_time: Duration,
    pub quantize_time: Duration,
}

impl Experiment {
    /// Every file's line in the format of `ffi-examples/c/mnist.c`.
    pub fn c_lines(&self) -> Vec<String> {
        let mut lines = vec![self.f32.c_line()];
        for (_, cells) in &self.rows {
            lines.extend(cells.iter().filter_map(|c| c.as_ref().ok()).map(FileResult::c_line));
        }
        lines
    }
}

/// Loads the sample, trains, writes every file into `out_dir` and
/// evaluates each. Prints training progress to stderr when `verbose`.
pub fn run_experiment(out_dir: &Path, verbose: bool) -> Result<Experiment, Box<dyn Error>> {
    let (train_set, test_set) = load(&data_path())?;
    let t = Instant::now();
    let mut rng = Rng(SEED);
    let mut model = Mlp::new(&mut rng);
    train(&mut model, &train_set, &mut rng, verbose);
    let train_time = t.elapsed();
    let (mut h, mut z, mut x) = (vec![0.0; HIDDEN], vec![0.0; CLASSES], vec![0.0; PIXELS]);
    let direct_accuracy = (0..test_set.len())
        .filter(|&i| {
            test_set.image(i, &mut x);
            model.forward(&x, &mut h, &mut z);
            argmax(&z) == usize::from(test_set.labels[i])
        })
        .count() as f64
        / test_set.len().max(1) as f64;

    std::fs::create_dir_all(out_dir)?;
    write_test_set(&test_set, &out_dir.join("mnist-test.bin"))?;
    let t = Instant::now();
    let f32_path = out_dir.join("mnist-f32.lsq");
    write_model(&model, &WeightFormat::F32, &f32_path)?;
    let f32 = accuracy_of(&f32_path, &test_set)?;
    let mut rows = Vec::new();
    for kind in CodecKind::ALL {
        let mut cells = Vec::new();
        for c in WIDTHS {
            let options = QuantizeOptions::new(CodecSpec::default_for(kind), c);
            let path = out_dir.join(format!("mnist-{}-c{c}.lsq", kind.name()));
            cells.push(match write_model(&model, &WeightFormat::Quantized(options), &path) {
                Ok(()) => Ok(accuracy_of(&path, &test_set)?),
                Err(lsqr::Error::Codec { source, .. }) => Err(source.to_string()),
                Err(e) => return Err(e.into()),
            });
        }
        rows.push((kind, cells));
    }
    let options = QuantizeOptions {
        scaling: Scaling::TwoLevel(TwoLevel::new(1024, 32, 3)?),
        scale_method: ScaleMethod::MseSearch,
        ..QuantizeOptions::new(CodecSpec::Lut, 3)
    };
    // Not named mnist-*-c*.lsq: the C comparison (ffi-examples) takes the
    // 43 files of the table.
    let path = out_dir.join("mnist-lut-two-level-3bit.lsq");
    write_model(&model, &WeightFormat::Quantized(options), &path)?;
    let bpw = LsqFile::open(&path)?.quantized_bits_per_weight().unwrap_or(0.0);
    let two_level_c3 = (accuracy_of(&path, &test_set)?, bpw);
    let experiment = Experiment {
        direct_accuracy,
        f32,
        rows,
        two_level_c3,
        train_time,
        quantize_time: t.elapsed(),
    };
    let mut lines = experiment.c_lines().join("\n");
    lines.push('\n');
    std::fs::write(out_dir.join("accuracy-rust.txt"), lines)?;
    Ok(experiment)
}
