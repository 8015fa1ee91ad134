//! Operators on packed low-bit weights: decode and multiply without ever
//! expanding the whole weight to f32.
//!
//! A weight is used in its row view `[dim0, product of the other dims]` (so
//! a linear weight is `[out, in]`). A linear multiplies straight from the
//! codes, decoded in registers: with integer dot products where the
//! weight has an integer form (C <= 8, `Kernels::gemv_int`, batch 1 to
//! 64), else in f32 at batch 1 (`Kernels::gemv_packed`); the exact path's
//! (and the integer path's above 64) larger batches decode a cache-sized block of rows at a time into scratch and
//! run a blocked GEMM (`crate::gemm`) on it, so each weight element is
//! decoded once per call (per 256 batch rows), never the whole weight at
//! once. A weight may also be plain f32
//! ([`PackedWeight::from_f32`]: raw tensors of a `.lsq` file), which the
//! GEMM reads in place.

use alloc::borrow::Cow;
use alloc::vec;
use alloc::vec::Vec;

use lsqr_codec::Scaling;

use crate::OpError;

/// How the scales of a weight map onto its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScaleMode {
    /// One scale (1 for `Scaling::Unit`) for the whole weight.
    One,
    /// One scale per row.
    PerRow,
    /// `ceil(cols / G)` scales per row.
    PerGroup(usize),
}

/// A weight ready for the kernels: either quantized (packed codes borrowed
/// from the file, the codebook's decode table, and the scales decoded to
/// f32 once: 4 bytes per group, for groups of 64 half a bit per weight of
/// extra memory, the documented cost of not converting f16 in the inner
/// loop) or plain f32 borrowed as is.
#[derive(Debug, Clone)]
pub struct PackedWeight<'a> {
    shape: Vec<usize>,
    rows: usize,
    cols: usize,
    storage: Storage<'a>,
    /// Linear keeps the exact f32 table path (see [`PackedWeight::set_exact`]).
    exact: bool,
}

/// How a weight's values are stored.
#[derive(Debug, Clone)]
pub(crate) enum Storage<'a> {
    /// C-bit codes, decode table and scales.
    Quantized(Quantized<'a>),
    /// Row-major f32 values of the row view (`rows * cols` of them),
    /// borrowed or owned (a runtime converts f16/bf16/unaligned raw
    /// tensors once, and keeps them with the weight).
    Plain(Cow<'a, [f32]>),
}

/// The parts of a quantized weight.
#[derive(Debug, Clone)]
pub(crate) struct Quantized<'a> {
    bits: u32,
    packed: &'a [u8],
    table: Vec<f32>,
    mode: ScaleMode,
    scales: Vec<f32>,
    /// The integer form linear may use (see [`int_form_of`]); boxed, as a
    /// C = 5..=8 form carries a 256-entry table.
    int: Option<alloc::boxed::Box<IntForm>>,
    /// Two-level scales as stored, when the integer kernels can read them
    /// (`crate::kernels::SubScales`): `scales` was computed from these.
    sub_scales: Option<StoredSubScales>,
}

/// The owned parts of `crate::kernels::SubScales`.
#[derive(Debug, Clone)]
struct StoredSubScales {
    sup: Vec<f32>,
    sup_stride: usize,
    sub: Vec<u8>,
    subs_per_super_log2: u32,
}

/// A quantized weight's integer form: its table's integer copy, the step
/// of that copy's grid, the activation block, and the order in which the
/// kernel reads the quantized activations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IntForm {
    table: crate::kernels::IntTable,
    /// `max |table| / QW`: the table value of integer 1.
    step: f32,
    /// The activations' integer grid: ±`act_q` (127, 4095 or 8191).
    act_q: f32,
    /// Columns per activation block (32 or 64).
    block: usize,
    /// Scale groups per block (`crate::kernels::IntRows::groups_per_block`:
    /// 1, 2, 4 or 8).
    groups_per_block: u8,
    /// Columns per span of the stored activation order
    /// (`crate::kernels::int_act_span`: 32 or 64).
    span: usize,
    /// `order[s]`, `s < span`: the column, within its span, of the
    /// activation stored at position `s` (`crate::kernels::int_act_column`).
    order: [u8; 64],
    /// The smallest nonzero and the largest magnitude of the weight's
    /// scales, for [`IntForm::safe_for`].
    scale_range: (f64, f64),
}

impl IntForm {
    /// The largest batch this form takes ([`INT_MAX_BATCH`], or
    /// [`INT_MAX_BATCH_LARGE`] at C = 5..=8).
    fn max_batch(&self) -> usize {
        match self.table {
            crate::kernels::IntTable::I16Large(..) => INT_MAX_BATCH_LARGE,
            _ => INT_MAX_BATCH,
        }
    }

    /// Whether the f32 steps of the integer path stay in f32's normal
    /// range for activation factors in `factors` (nonzero min, max):
    /// `scale · factor` keeps 24 significant bits (no subnormal), and no
    /// lane sum times it can overflow (|int lane sum| < 2^31 per block).
    /// Otherwise the exact path runs: it is slower, never wrong.
    fn safe_for(&self, factors: (f64, f64), blocks: usize) -> bool {
        let ((smin, smax), (fmin, fmax)) = (self.scale_range, factors);
        let largest = smax * fmax * 2_147_483_648.0 * blocks as f64; // 2^31
        let smallest = smin * fmin;
        largest < f64::from(f32::MAX) / 2.0
            && (smallest == 0.0 || smallest >= f64::from(f32::MIN_POSITIVE) * 16_777_216.0)
        // 2^24
    }
}

/// The smallest nonzero and the largest magnitude in `v` (0 and 0 when
/// all are zero).
fn magnitude_range(v: impl IntoIterator<Item = f32>) -> (f64, f64) {
    v.into_iter().map(|v| f64::from(v.abs())).fold((0.0, 0.0), |(lo, hi), a| {
        let lo = if a > 0.0 && (lo == 0.0 || a < lo) { a } else { lo };
        (lo, hi.max(a))
    })
}

/// 1.5 · 2^23: `(t + M) - M` is `t` rounded to an integer, ties to even,
/// for |t| < 2^22.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Grid of the int8 tables and activations: ±127.
const Q8: f32 = 127.0;
/// Grid of the int16 tables: ±8191 (so that a 64-column block of products
/// with ±4095 activations stays below 2^31).
const Q16_TABLE: f32 = 8191.0;
/// Grid of the int16 activations: ±4095.
const Q16_ACT: f32 = 4095.0;
/// Grid of the C = 5..=8 int16 tables: ±32767, with activations on
/// ±8191 (a lane of a 64-column block adds 8 products: 8 · 32767 · 8191
/// < 2^31).
const Q16_LARGE_TABLE: f32 = 32767.0;
/// Grid of the C = 5..=8 int16 activations: ±8191.
const Q16_LARGE_ACT: f32 = 8191.0;
/// The largest error allowed on a table entry rounded to an integer grid,
/// as a fraction of the distance to the entry's nearest other level (the
/// cell the codec's own rounding error lives in). 1/16: the worst-case
/// rounding error is below 1/16 of a cell, the codec's error is about
/// 0.29 of a cell (RMS), so the added error stays about 20 dB below, and
/// the tests measure it (`tests/packed.rs`, `int_path_precision`).
const MAX_TABLE_ERROR: f32 = 1.0 / 16.0;

/// The nibble factors (`crate::kernels::NibbleFactors`) closest to a
/// 128- or 256-entry `table` on the integer grid of `step`, if every level they
/// give lies in ±32767; whether they stand for the table is the caller's
/// test. The shape is the widest high nibble's run of 16 levels,
/// normalised to 0..=32767; each run's offset and span are its least
/// squares fit to that shape, then nudged (offset ±1, span ±2) to the
/// smallest largest error in integer units.
fn nibble_factors(table: &[f32], step: f32) -> Option<crate::kernels::NibbleFactors> {
    let target: Vec<f64> = table.iter().map(|&t| f64::from(t) / f64::from(step)).collect();
    let run = |h: usize| target.get(16 * h..16 * h + 16);
    let width = |h: usize| run(h).map_or(0.0, |r| (r[15] - r[0]).abs());
    let widest =
        (0..table.len() / 16).fold(0, |best, h| if width(h) > width(best) { h } else { best });
    let base = run(widest)?;
    let d = base[15] - base[0];
    if !(d.is_finite() && d != 0.0) {
        return None;
    }
    let mut shape = [0i16; 16];
    for (s, &t) in shape.iter_mut().zip(base) {
        *s = libm::rint(32767.0 * (t - base[0]) / d).clamp(-32767.0, 32767.0) as i16;
    }
    let mut f = crate::kernels::NibbleFactors { offset: [0; 16], span: [0; 16], shape };
    let x: [f64; 16] = core::array::from_fn(|l| f64::from(shape[l]) / 32768.0);
    let x_mean = x.iter().sum::<f64>() / 16.0;
    let x_var: f64 = x.iter().map(|x| (x - x_mean) * (x - x_mean)).sum();
    for h in 0..table.len() / 16 {
        let y = run(h)?;
        let y_mean = y.iter().sum::<f64>() / 16.0;
        let cov: f64 = x.iter().zip(y).map(|(x, y)| (x - x_mean) * (y - y_mean)).sum();
        let span = cov / x_var;
        let offset = y_mean - span * x_mean;
        let mut best: Option<(f64, i16, i16)> = None;
        for d_offset in -1..=1 {
            for d_span in -2..=2 {
                let o = libm::rint(offset) + f64::from(d_offset);
                let s = libm::rint(span) + f64::from(d_span);
                if !(o.abs() <= 32767.0 && s.abs() <= 32767.0) {
                    continue;
                }
                let (o, s) = (o as i16, s as i16);
                let worst = (0..16).try_fold(0.0f64, |worst, l| {
                    // In i32: a level outside ±32767 rejects the pair.
                    let p = (i32::from(s) * i32::from(shape[l]) + (1 << 14)) >> 15;
                    let v = i32::from(o) + p;
                    (v.abs() <= 32767).then(|| worst.max((f64::from(v) - y[l]).abs()))
                });
                if let Some(worst) = worst {
                    if best.is_none_or(|(b, _, _)| worst < b) {
                        best = Some((worst, o, s));
                    }
                }
            }
        }
        let (_, o, s) = best?;
        (f.offset[h], f.span[h]) = (o, s);
    }
    Some(f)
}

/// The integer form a C-bit table allows, chosen once per weight:
/// C <= 8, finite entries and `scales`, rows of whole bytes (`cols` a multiple of 8), and groups of
/// whole blocks of 32 or 64 (or one scale per row), or at C = 4 groups of
/// 32, 16 or 8 in rows of whole 64-column blocks. The int8 form (int8
/// table and activations) at C <= 2 when every entry rounds to within
/// [`MAX_TABLE_ERROR`] of a cell on the ±127 grid; otherwise the int16
/// form (±8191 table, ±4095 activations) under the same test; at C =
/// 5..=8 the large int16 form (±32767 table, ±8191 activations) under the
/// same test; otherwise none (the exact path).
fn int_form_of(
    bits: u32,
    table: &[f32],
    cols: usize,
    mode: ScaleMode,
    scales: &[f32],
) -> Option<IntForm> {
    if !(1..=8).contains(&bits) || table.len() != 1 << bits || cols == 0 {
        return None;
    }
    if !scales.iter().all(|s| s.is_finite()) {
        return None;
    }
    let group = match mode {
        ScaleMode::One | ScaleMode::PerRow => cols,
        ScaleMode::PerGroup(g) => g.min(cols),
    };
    // Rows start on a byte (the kernel's loads); a row's last block may be
    // partial (its activations are padded with zeros), but every other
    // block lies in one scale group.
    if !cols.is_multiple_of(8) {
        return None;
    }
    // Groups of 32, 16 or 8 at C = 4 (two-level scales' sub-blocks) take
    // blocks of 64, each lane of the kernel's sums scaled by its own
    // group's scale: the 64-code spans unpack at half the cost of 32-code
    // ones, and groups below 32 would otherwise take the exact path.
    let small_groups = bits == 4 && matches!(group, 8 | 16 | 32) && cols.is_multiple_of(64);
    let (block, groups_per_block) = if small_groups {
        (64, (64 / group) as u8)
    } else {
        ([64, 32].into_iter().find(|&b| group == cols || group.is_multiple_of(b))?, 1)
    };
    if !table.iter().all(|v| v.is_finite()) {
        return None;
    }
    let tmax = table.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if tmax == 0.0 {
        return None;
    }
    // Each entry's cell: the distance to its nearest other level.
    let cell = |i: usize| {
        table.iter().filter(|&&v| v != table[i]).fold(tmax, |m, &v| m.min((v - table[i]).abs()))
    };
    // Whether integer levels on the grid of ±q stand for `table` (each
    // within [`MAX_TABLE_ERROR`] of its cell).
    let stand_for = |q: f32, levels: &mut dyn Iterator<Item = f32>| {
        let step = tmax / q;
        levels
            .zip(table)
            .enumerate()
            .all(|(i, (v, &t))| (v * step - t).abs() <= MAX_TABLE_ERROR * cell(i))
    };
    let fits = |q: f32| stand_for(q, &mut table.iter().map(|&t| libm::rintf(t / (tmax / q))));
    let round = |q: f32| -> [i32; 256] {
        let step = tmax / q;
        let mut out = [0i32; 256];
        for (o, &v) in out.iter_mut().zip(table) {
            *o = (libm::rintf(v / step) as i32).clamp(-(q as i32), q as i32);
        }
        out
    };
    // int8 activations add an error about 40-45 dB below the output on
    // random inputs (`tests/packed.rs`, `int_path_precision`), 31 dB on
    // MiniLM's real activations, whose outliers take the block's range
    // (`int_path_precision_on_minilm_layers`): more than 20 dB below C = 2's
    // codec error, but not always below C = 3's (19.6 dB) or C = 4's, which
    // take int16.
    //
    // C = 5..=8 take int16 activations on a finer grid (±8191): C = 8's
    // codec error is some 45 dB below the output, and the activations'
    // rounding must stay 20 dB below that.
    let first = |v: [i32; 256]| -> [i32; 16] { core::array::from_fn(|k| v[k]) };
    let table = if bits >= 5 {
        let nibbles = (7..=8)
            .contains(&bits)
            .then(|| nibble_factors(table, tmax / Q16_LARGE_TABLE))
            .flatten()
            .filter(|f| stand_for(Q16_LARGE_TABLE, &mut f.levels().iter().map(|&v| f32::from(v))));
        match nibbles {
            Some(f) => crate::kernels::IntTable::I16Large(f.levels(), Some(f)),
            None if fits(Q16_LARGE_TABLE) => {
                crate::kernels::IntTable::I16Large(round(Q16_LARGE_TABLE).map(|v| v as i16), None)
            }
            None => return None,
        }
    } else if bits <= 2 && fits(Q8) {
        crate::kernels::IntTable::I8(first(round(Q8)).map(|v| v as i8))
    } else if fits(Q16_TABLE) {
        crate::kernels::IntTable::I16(first(round(Q16_TABLE)).map(|v| v as i16))
    } else {
        return None;
    };
    let (q, act_q) = match table {
        crate::kernels::IntTable::I8(_) => (Q8, Q8),
        crate::kernels::IntTable::I16(_) => (Q16_TABLE, Q16_ACT),
        crate::kernels::IntTable::I16Large(..) => (Q16_LARGE_TABLE, Q16_LARGE_ACT),
    };
    let wide = table.wide();
    let span = crate::kernels::int_act_span(bits, block);
    // Columns of a span are below 64: they fit a byte.
    let order =
        core::array::from_fn(|s| crate::kernels::int_act_column(bits, wide, span, s % span) as u8);
    let scale_range = magnitude_range(scales.iter().copied());
    Some(IntForm {
        table,
        step: tmax / q,
        act_q,
        block,
        groups_per_block,
        span,
        order,
        scale_range,
    })
}

/// Whether `LSQR_EXACT` (non-empty and not `"0"`, read once) asks for the
/// exact f32 path everywhere.
#[cfg(feature = "std")]
pub fn exact_forced() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    static EXACT: AtomicU8 = AtomicU8::new(0);
    match EXACT.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var_os("LSQR_EXACT").is_some_and(|v| !v.is_empty() && v != "0");
            EXACT.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

/// Without `std` there is no environment: never forced.
#[cfg(not(feature = "std"))]
pub fn exact_forced() -> bool {
    false
}

/// `(rows, cols)` of the row view of `shape`, and its element count.
fn row_view(shape: &[usize]) -> Option<(usize, usize, usize)> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    let (rows, cols) = match shape {
        [] | [_] => (1, count),
        [d0, ..] => (*d0, if *d0 == 0 { 0 } else { count / d0 }),
    };
    Some((rows, cols, count))
}

const OP: &str = "packed weight";

impl<'a> PackedWeight<'a> {
    /// A weight from its parts: `packed` holds one C-bit code per element
    /// of `shape` (LSB-first), `table` has `2^C` entries, and `scales` one
    /// per group of `scaling` (one value, 1.0, for `Scaling::Unit`).
    pub fn new(
        packed: &'a [u8],
        bits: u32,
        shape: &[usize],
        scaling: Scaling,
        scales: Vec<f32>,
        table: Vec<f32>,
    ) -> Result<Self, OpError> {
        let bad = |reason| OpError::BadParameter { op: OP, reason };
        if !(1..=16).contains(&bits) || table.len() != 1usize << bits {
            return Err(bad("the decode table must have 2^C entries, C in 1..=16"));
        }
        let (rows, cols, count) = row_view(shape).ok_or(bad("element count overflows"))?;
        let needed =
            lsqr_pack::packed_len(count, bits).map_err(|_| bad("packed length overflows"))?;
        if packed.len() < needed {
            return Err(OpError::LengthMismatch {
                op: OP,
                what: "packed",
                expected: needed,
                actual: packed.len(),
            });
        }
        let (mode, expected_scales) = match scaling {
            Scaling::Unit | Scaling::Tensor => (ScaleMode::One, 1),
            Scaling::Row => (ScaleMode::PerRow, rows),
            Scaling::Group(g) if g > 0 => (ScaleMode::PerGroup(g), rows * cols.div_ceil(g)),
            Scaling::Group(_) => return Err(bad("group size 0")),
            // The scales are the sub-blocks' (super-scale times sub-scale,
            // multiplied once when the weight is prepared).
            Scaling::TwoLevel(t) => {
                (ScaleMode::PerGroup(t.sub_len()), rows * cols.div_ceil(t.sub_len()))
            }
        };
        // An empty weight has no scales at all.
        let expected_scales =
            if count == 0 { scales.len().min(expected_scales) } else { expected_scales };
        if scales.len() != expected_scales {
            return Err(OpError::LengthMismatch {
                op: OP,
                what: "scales",
                expected: expected_scales,
                actual: scales.len(),
            });
        }
        let int = int_form_of(bits, &table, cols, mode, &scales).map(alloc::boxed::Box::new);
        let storage = Storage::Quantized(Quantized {
            bits,
            packed,
            table,
            mode,
            scales,
            int,
            sub_scales: None,
        });
        Ok(Self { shape: shape.to_vec(), rows, cols, storage, exact: false })
    }

    /// A weight with two-level scales `t` given as stored: `sup`, one f32
    /// super-scale per super-block (row by row, `cols.div_ceil(S)` per
    /// row), and `sub`, one sub-scale per sub-block (`cols.div_ceil(s)` per
    /// row). The f32 scale of each sub-block is `sup · f32::from(sub)`,
    /// one multiply, as `.lsq` readers compute it (FORMAT.md §5.2), so
    /// the weight computes what [`PackedWeight::new`] does with those
    /// scales; the integer kernels read the stored form, a byte per
    /// sub-block rather than four.
    pub fn new_two_level(
        packed: &'a [u8],
        bits: u32,
        shape: &[usize],
        t: lsqr_codec::TwoLevel,
        sup: Vec<f32>,
        sub: Vec<u8>,
        table: Vec<f32>,
    ) -> Result<Self, OpError> {
        let (rows, cols, _) = row_view(shape)
            .ok_or(OpError::BadParameter { op: OP, reason: "element count overflows" })?;
        let (sup_stride, sub_stride) = (cols.div_ceil(t.super_len()), cols.div_ceil(t.sub_len()));
        let per_super = t.subs_per_super();
        for (what, expected, actual) in [
            ("super-scales", rows * sup_stride, sup.len()),
            ("sub-scales", rows * sub_stride, sub.len()),
        ] {
            if expected != actual {
                return Err(OpError::LengthMismatch { op: OP, what, expected, actual });
            }
        }
        let scales = (0..sub.len())
            .map(|i| {
                let (r, g) = (i / sub_stride.max(1), i % sub_stride.max(1));
                sup[r * sup_stride + g / per_super] * f32::from(sub[i])
            })
            .collect();
        let mut w = Self::new(packed, bits, shape, Scaling::TwoLevel(t), scales, table)?;
        // A 64-column block of the integer kernels lies in one super-block.
        if let Storage::Quantized(q) = &mut w.storage {
            if t.super_len() >= 64 && per_super.is_power_of_two() {
                q.sub_scales = Some(StoredSubScales {
                    sup,
                    sup_stride,
                    sub,
                    subs_per_super_log2: per_super.trailing_zeros(),
                });
            }
        }
        Ok(w)
    }

    /// A plain (unquantized) f32 weight of `shape`, borrowed: raw tensors
    /// of a `.lsq` file are stored this way, and the operators must run on
    /// them as on quantized ones. `decode_row` copies; the GEMM reads the
    /// values in place.
    pub fn from_f32(data: &'a [f32], shape: &[usize]) -> Result<Self, OpError> {
        Self::plain(Cow::Borrowed(data), shape)
    }

    /// A plain f32 weight that owns its values.
    pub fn from_f32_owned(
        data: Vec<f32>,
        shape: &[usize],
    ) -> Result<PackedWeight<'static>, OpError> {
        PackedWeight::plain(Cow::Owned(data), shape)
    }

    fn plain(data: Cow<'a, [f32]>, shape: &[usize]) -> Result<Self, OpError> {
        let (rows, cols, count) = row_view(shape)
            .ok_or(OpError::BadParameter { op: OP, reason: "element count overflows" })?;
        if data.len() != count {
            return Err(OpError::LengthMismatch {
                op: OP,
                what: "data",
                expected: count,
                actual: data.len(),
            });
        }
        Ok(Self { shape: shape.to_vec(), rows, cols, storage: Storage::Plain(data), exact: false })
    }

    /// Keeps linear on the exact path (`true`) or lets it use integer dot
    /// products where the weight's table allows (`false`, the default:
    /// faster than the exact path at every C in the batch-1 bench, and than
    /// the f32 GEMM at batch 8 and 64, README "Kernels on packed weights").
    ///
    /// The integer path (C <= 8) quantizes the activations once per call,
    /// per block of 32 or 64 columns, to int8 or int16, and multiplies them
    /// with an integer copy of the decode table. It is not bit-exact with
    /// the f32 table path: its added error is bounded to stay at least
    /// 20 dB below the codec's own (see `int_form_of`; measured in
    /// `tests/packed.rs`). `LSQR_EXACT=1` forces the exact path for every
    /// weight.
    pub fn set_exact(&mut self, exact: bool) {
        self.exact = exact;
    }

    /// Whether linear was asked to stay exact ([`PackedWeight::set_exact`]).
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// The integer form linear runs on, if any: `"int8"` (int8 table and
    /// activations), `"int16"`, or `"int16 nibbles"` (C = 8 levels made
    /// of nibble factors); `None` on the exact path (plain weights,
    /// C > 8, tables whose levels an integer grid cannot hold, columns or
    /// groups not in whole blocks of 32, [`PackedWeight::set_exact`], or
    /// `LSQR_EXACT`).
    pub fn int_form(&self) -> Option<&'static str> {
        self.int().map(|f| match f.table {
            crate::kernels::IntTable::I8(_) => "int8",
            crate::kernels::IntTable::I16Large(_, Some(_)) => "int16 nibbles",
            crate::kernels::IntTable::I16(_) | crate::kernels::IntTable::I16Large(..) => "int16",
        })
    }

    /// The integer form linear uses, after the exact options.
    fn int(&self) -> Option<&IntForm> {
        if self.exact || exact_forced() {
            return None;
        }
        self.int_any()
    }

    /// The weight's integer form, whatever the exact options say (scratch
    /// is sized for it, so that they can change after a plan was made).
    fn int_any(&self) -> Option<&IntForm> {
        match &self.storage {
            Storage::Quantized(q) => q.int.as_deref(),
            Storage::Plain(_) => None,
        }
    }

    /// Whether the weight holds C-bit codes (`false`: plain f32).
    pub fn is_quantized(&self) -> bool {
        matches!(self.storage, Storage::Quantized(_))
    }

    /// The weight's full shape (`[out, in]` for linear, `[out, in / groups,
    /// kh, kw]` for conv2d).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Rows of the row view (output features of a linear weight).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the row view (input features of a linear weight).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The kernels' view of a quantized weight's rows.
    fn rows_job<'s>(&'s self, q: &'s Quantized<'a>) -> crate::kernels::PackedRows<'s> {
        let (scale_stride, group) = match q.mode {
            ScaleMode::One => (0, self.cols.max(1)),
            ScaleMode::PerRow => (1, self.cols.max(1)),
            ScaleMode::PerGroup(g) => (self.cols.div_ceil(g), g),
        };
        // The length `new` checked: the kernels see no bytes past the codes.
        let len = lsqr_pack::packed_len(self.rows * self.cols, q.bits).unwrap_or(0);
        crate::kernels::PackedRows {
            packed: q.packed.get(..len).unwrap_or_default(),
            bits: q.bits,
            cols: self.cols,
            table: &q.table,
            scales: &q.scales,
            scale_stride,
            group,
            sub_scales: q.sub_scales.as_ref().map(|s| crate::kernels::SubScales {
                sup: &s.sup,
                sup_stride: s.sup_stride,
                sub: &s.sub,
                subs_per_super_log2: s.subs_per_super_log2,
            }),
        }
    }

    /// Decodes row `r` into `out` (`cols` values).
    pub fn decode_row(&self, r: usize, out: &mut [f32]) -> Result<(), OpError> {
        if r >= self.rows || out.len() != self.cols {
            return Err(OpError::LengthMismatch {
                op: OP,
                what: "row",
                expected: self.cols,
                actual: out.len(),
            });
        }
        self.decode_range(crate::Kernels::active(), r, 0, out)
    }

    /// Asks the CPU to start loading the storage of columns `c0..c0 + len`
    /// of row `r` (no-op off x86-64 or out of range). The GEMM decodes
    /// short pieces of many rows, 2 KiB or more apart: too scattered for
    /// the hardware prefetcher, so without this every piece waits on DRAM.
    pub(crate) fn prefetch(&self, r: usize, c0: usize, len: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let first = r.saturating_mul(self.cols).saturating_add(c0);
            let last = first.saturating_add(len);
            let bytes: &[u8] = match &self.storage {
                Storage::Plain(d) => {
                    let d = d.get(first.min(d.len())..last.min(d.len())).unwrap_or(&[]);
                    // SAFETY: plain old data viewed as its bytes, same extent.
                    unsafe { core::slice::from_raw_parts(d.as_ptr().cast(), d.len() * 4) }
                }
                Storage::Quantized(q) => {
                    let bits = q.bits as usize;
                    let (start, end) = (first.saturating_mul(bits) / 8, last.saturating_mul(bits));
                    let end = end.div_ceil(8).min(q.packed.len());
                    q.packed.get(start.min(end)..end).unwrap_or(&[])
                }
            };
            for line in bytes.chunks(64) {
                // SAFETY: the address is inside a borrowed slice; a
                // prefetch never faults nor writes.
                unsafe {
                    core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T1 }>(
                        line.as_ptr().cast(),
                    )
                };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (r, c0, len);
    }

    /// Decodes columns `c0..c0 + out.len()` of row `r` into `out` with
    /// `kern`'s decoder (`Kernels::decode_packed`: exactly
    /// `table[code] * scale` on every path, from registers where the
    /// codes allow).
    pub(crate) fn decode_range(
        &self,
        kern: &crate::Kernels,
        r: usize,
        c0: usize,
        out: &mut [f32],
    ) -> Result<(), OpError> {
        let end = c0
            .checked_add(out.len())
            .filter(|&e| r < self.rows && e <= self.cols)
            .ok_or(OpError::BadParameter { op: OP, reason: "decoded range outside the weight" })?;
        let q = match &self.storage {
            Storage::Plain(data) => {
                out.copy_from_slice(&data[r * self.cols + c0..r * self.cols + end]);
                return Ok(());
            }
            Storage::Quantized(q) => q,
        };
        (kern.decode_packed)(&self.rows_job(q), r * self.cols + c0, out);
        Ok(())
    }

    /// Decodes columns `c0..c0 + kc` of rows `r0..r0 + out.len() / kc`
    /// into `out` (row-major, `kc` per row): in one call to the decoder
    /// when the block is whole rows, which are contiguous in the weight
    /// (a 1x1 convolution's 200 x 32 weight decoded row by row paid the
    /// call's setup 200 times, 12 us of PP-OCR cls's 20 us layer). The
    /// same values either way: each is `table[code] * scale`.
    pub(crate) fn decode_block(
        &self,
        kern: &crate::Kernels,
        r0: usize,
        c0: usize,
        kc: usize,
        out: &mut [f32],
    ) -> Result<(), OpError> {
        let rows = out.len().checked_div(kc).unwrap_or(0);
        let inside = r0.checked_add(rows).is_some_and(|end| end <= self.rows);
        if c0 == 0 && kc == self.cols && inside && rows * kc == out.len() {
            decode_flat(kern, self, r0 * self.cols, out);
            return Ok(());
        }
        for (i, row) in out.chunks_exact_mut(kc.max(1)).enumerate() {
            self.decode_range(kern, r0 + i, c0, row)?;
        }
        Ok(())
    }
}

/// Checks that `out` holds the whole weight.
fn check_dequantize_len(w: &PackedWeight<'_>, actual: usize) -> Result<(), OpError> {
    let expected = w.rows * w.cols;
    if actual == expected {
        Ok(())
    } else {
        Err(OpError::LengthMismatch { op: "dequantize", what: "out", expected, actual })
    }
}

/// Decodes elements `start..start + out.len()` (row-major), which the
/// caller has checked lie inside the weight, with `kern`'s decoder.
fn decode_flat(kern: &crate::Kernels, w: &PackedWeight<'_>, start: usize, out: &mut [f32]) {
    match &w.storage {
        Storage::Plain(data) => out.copy_from_slice(&data[start..start + out.len()]),
        Storage::Quantized(q) => (kern.decode_packed)(&w.rows_job(q), start, out),
    }
}

/// Decodes rows `indices` of the weight's row view, one after another, into
/// `out` (`indices.len() * cols` values): an embedding table's lookup of
/// token ids, which reads only the rows it needs. Indices are whole numbers
/// as f32 (a runtime value), a negative one counting from the end; one that
/// is not whole or lies outside `[-rows, rows)` is an error.
pub fn gather_rows_into(
    w: &PackedWeight<'_>,
    indices: &[f32],
    out: &mut [f32],
) -> Result<(), OpError> {
    const OP: &str = "gather_rows";
    let expected = indices
        .len()
        .checked_mul(w.cols)
        .ok_or(OpError::BadParameter { op: OP, reason: "element count overflows" })?;
    if out.len() != expected {
        return Err(OpError::LengthMismatch { op: OP, what: "out", expected, actual: out.len() });
    }
    let kern = crate::Kernels::active();
    let rows = w.rows as f64;
    for (&v, row) in indices.iter().zip(out.chunks_exact_mut(w.cols.max(1))) {
        let v = f64::from(v);
        // (No `fract` in core: a whole number survives the round trip.)
        if !(-rows..rows).contains(&v) || v as i64 as f64 != v {
            return Err(OpError::BadParameter {
                op: OP,
                reason: "an index is not a whole number inside [-rows, rows)",
            });
        }
        let r = if v < 0.0 { (v + rows) as usize } else { v as usize };
        decode_flat(kern, w, r * w.cols, row);
    }
    Ok(())
}

/// Decodes the whole weight into `out` (row-major, `rows * cols` values).
/// Outputs beyond 8 MiB are written with streaming stores on AVX2.
pub fn dequantize_into(w: &PackedWeight<'_>, out: &mut [f32]) -> Result<(), OpError> {
    dequantize_with(crate::Kernels::active(), w, out)
}

/// [`dequantize_into`] on `kern`.
pub(crate) fn dequantize_with(
    kern: &crate::Kernels,
    w: &PackedWeight<'_>,
    out: &mut [f32],
) -> Result<(), OpError> {
    check_dequantize_len(w, out.len())?;
    decode_flat(kern, w, 0, out);
    Ok(())
}

/// Decodes the whole weight into IEEE half floats (round to nearest even;
/// values beyond ±65504 become ±inf, as any f32 to f16 cast does).
pub fn dequantize_into_f16(w: &PackedWeight<'_>, out: &mut [half::f16]) -> Result<(), OpError> {
    dequantize_half_with(crate::Kernels::active(), w, out)
}

/// Decodes the whole weight into bfloat16 (round to nearest even).
pub fn dequantize_into_bf16(w: &PackedWeight<'_>, out: &mut [half::bf16]) -> Result<(), OpError> {
    dequantize_half_with(crate::Kernels::active(), w, out)
}

/// [`dequantize_into_f16`] / [`dequantize_into_bf16`] on `kern`.
pub(crate) fn dequantize_half_with<T>(
    kern: &crate::Kernels,
    w: &PackedWeight<'_>,
    out: &mut [T],
) -> Result<(), OpError>
where
    [T]: half::slice::HalfFloatSliceExt,
{
    check_dequantize_len(w, out.len())?;
    decode_converted(kern, w, out, |src, dst| {
        use half::slice::HalfFloatSliceExt;
        dst.convert_from_f32_slice(src)
    });
    Ok(())
}

/// Decodes through an f32 stack buffer, converting each chunk, so that no
/// f32 copy of the weight is made.
fn decode_converted<T>(
    kern: &crate::Kernels,
    w: &PackedWeight<'_>,
    out: &mut [T],
    convert: impl Fn(&[f32], &mut [T]),
) {
    let mut buf = [0.0f32; 1024];
    for (k, dst) in out.chunks_mut(buf.len()).enumerate() {
        let src = &mut buf[..dst.len()];
        decode_flat(kern, w, k * 1024, src);
        convert(src, dst);
    }
}

/// `y = x · Wᵀ + b` for `batch` rows of `x` (`[batch, in]`), with `W` the
/// packed `[out, in]` weight, into `y` (`[batch, out]`). Allocates the
/// scratch [`linear_into`] needs; see there. With the `parallel` feature,
/// a large batch is split into one slice of rows per rayon thread, each
/// with its own scratch (each thread decodes the weight once: decoding is
/// a few percent of a batch-32+ product).
pub fn linear(
    w: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    x: &[f32],
    batch: usize,
    y: &mut [f32],
) -> Result<(), OpError> {
    linear_alloc(crate::Kernels::active(), w, bias, x, batch, y)
}

/// Below this batch, [`linear`] stays on one thread (half a batch per
/// thread must still fill the 6 x 16 tiles).
#[cfg(feature = "parallel")]
const PAR_MIN_BATCH: usize = 32;
/// Below this many multiply-adds, [`linear`] stays on one thread.
#[cfg(feature = "parallel")]
const PAR_MIN_MACS: usize = 1 << 22;

/// [`linear`] on a given path (tests compare paths).
pub(crate) fn linear_alloc(
    kern: &crate::Kernels,
    w: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    x: &[f32],
    batch: usize,
    y: &mut [f32],
) -> Result<(), OpError> {
    // The integer path splits its rows over the threads itself
    // (`for_row_blocks`), and a split batch must not change which path a
    // vector takes.
    #[cfg(feature = "parallel")]
    if batch >= PAR_MIN_BATCH
        && w.int().is_none_or(|f| batch > f.max_batch())
        && w.rows > 0
        && w.cols > 0
        && batch.checked_mul(w.cols) == Some(x.len())
        && batch.checked_mul(w.rows) == Some(y.len())
        && batch.saturating_mul(w.rows).saturating_mul(w.cols) >= PAR_MIN_MACS
    {
        use rayon::prelude::*;
        let threads = rayon::current_num_threads().max(1);
        let rows = batch.div_ceil(threads).max(PAR_MIN_BATCH / 2);
        return y.par_chunks_mut(rows * w.rows).zip(x.par_chunks(rows * w.cols)).try_for_each(
            |(y, x)| {
                let b = y.len() / w.rows;
                let mut scratch = vec![0.0f32; linear_scratch_len(w, b)];
                linear_of_batch(kern, w, bias, (x, b, batch), y, &mut scratch)
            },
        );
    }
    let mut scratch = vec![0.0f32; linear_scratch_len(w, batch)];
    linear_with(kern, w, bias, x, batch, y, &mut scratch)
}

/// The `f32` scratch [`linear_into`] needs at this batch size, whether
/// the weight is set exact or not (so a plan made before
/// [`PackedWeight::set_exact`] still holds after it): for a weight with
/// an integer form and a batch up to [`INT_MAX_BATCH`], the quantized
/// activations of up to [`INT_BATCH`] vectors (`cols / 2 + cols / 32` each at most) and, above batch 1,
/// their outputs (`out` each); above batch 1 also (for the exact path)
/// `x` packed for up to 256 batch rows (`256 · in` values at most), one
/// decoded 72 × 256 block of the weight and one 72 × 256 block of the
/// output being accumulated. Batch 1 on the exact path needs none (the
/// GEMV multiplies from the codes), nor does an empty weight.
pub fn linear_scratch_len(w: &PackedWeight<'_>, batch: usize) -> usize {
    if batch == 0 {
        return 0;
    }
    let int = match w.int_any() {
        Some(f) if batch <= f.max_batch() => int_scratch_len(w, f.block, batch.min(INT_BATCH)),
        _ => 0,
    };
    if batch == 1 {
        return int;
    }
    int.max(crate::gemm::scratch_len(w.rows, w.cols, batch))
}

/// Scratch (`f32` values) [`one_hot_linear_into`] needs: the decoded
/// weight, unless it is stored as f32.
pub fn one_hot_linear_scratch_len(w: &PackedWeight<'_>) -> usize {
    match w.storage {
        Storage::Plain(_) => 0,
        Storage::Quantized(_) => w.rows.saturating_mul(w.cols),
    }
}

/// `linear(one_hot(x))` without the one-hot vectors: row `b` of `y` is
/// the bias (or zeros) plus column `k` of `W` for the first `k` with
/// `keys[k] == x[b]`, or the bias alone when no key equals `x[b]` (NaN,
/// a value outside the keys). That is what [`linear_into`] computes on
/// `equal(x, keys)` (1 where equal, else 0) on its exact path, when the
/// keys are distinct and `W` is finite: the products with 0 add only
/// zeros to the one product with 1 (up to the sign of a zero sum). The
/// runtime fuses Magika's byte one-hot (`Equal` against 0..=256, then a
/// dense layer) into this: 2048 x 257 x 64 multiply-adds, 0.55 ms,
/// become 2048 look-ups of 64 values.
///
/// `x` holds `y.len() / rows` values; keys that are `0, 1, ..., K - 1`
/// are looked up by index, others one by one. `scratch` holds at least
/// [`one_hot_linear_scratch_len`] values. Allocates nothing.
pub fn one_hot_linear_into(
    w: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    x: &[f32],
    keys: &[f32],
    y: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), OpError> {
    const OP: &str = "one_hot_linear";
    let (rows, cols) = (w.rows, w.cols);
    if keys.len() != cols {
        return Err(OpError::LengthMismatch {
            op: OP,
            what: "keys",
            expected: cols,
            actual: keys.len(),
        });
    }
    let expected = x.len().checked_mul(rows);
    if expected != Some(y.len()) {
        let expected = expected.unwrap_or(usize::MAX);
        return Err(OpError::LengthMismatch { op: OP, what: "y", expected, actual: y.len() });
    }
    if let Some(b) = bias {
        if b.len() != rows {
            return Err(OpError::LengthMismatch {
                op: OP,
                what: "bias",
                expected: rows,
                actual: b.len(),
            });
        }
    }
    let dense: &[f32] = match &w.storage {
        Storage::Plain(data) => data,
        Storage::Quantized(_) => {
            let n = one_hot_linear_scratch_len(w);
            let Some(buf) = scratch.get_mut(..n) else {
                return Err(OpError::LengthMismatch {
                    op: OP,
                    what: "scratch",
                    expected: n,
                    actual: scratch.len(),
                });
            };
            dequantize_into(w, buf)?;
            buf
        }
    };
    let arange = keys.iter().enumerate().all(|(k, &v)| v == k as f32);
    for (&v, out) in x.iter().zip(y.chunks_exact_mut(rows.max(1))) {
        match bias {
            Some(b) => out.copy_from_slice(b),
            None => out.fill(0.0),
        }
        let k = if arange {
            (v >= 0.0 && v < cols as f32 && v == (v as usize) as f32).then_some(v as usize)
        } else {
            keys.iter().position(|&key| key == v)
        };
        if let Some(k) = k {
            for (o, row) in out.iter_mut().zip(dense.chunks_exact(cols)) {
                *o += row[k];
            }
        }
    }
    Ok(())
}

/// Activation vectors the integer path quantizes and multiplies per
/// kernel call: their int16 copies (8 KiB each at 4096 columns) stay in
/// L2 while every row of the weight passes over them.
pub const INT_BATCH: usize = 16;

/// The largest batch the integer path takes. Its cost per vector is
/// about constant, while the f32 GEMM's falls as the batch grows: in the
/// `linear_batch` and `linear_small` benches the integer path is 1.2-2.5x
/// faster at batch 8 to 32, even at 64 (0.9-1.1x), and 1.2-1.3x slower
/// at 256.
pub const INT_MAX_BATCH: usize = 64;

/// The largest batch the integer path takes at C = 5..=8: their lookup
/// (2 to 16 `vpshufb` per 32 codes) is shared by only four vectors, so
/// the f32 GEMM, which decodes each block once for the whole batch, wins
/// sooner. At 4096 x 4096, C = 8 `log` (`linear_batch`): batch 8 9.1 ms
/// on the integer path against 15.3 on the GEMM; batch 16 18.8 against
/// 17.3; batch 64 77.4 against 35.1.
pub const INT_MAX_BATCH_LARGE: usize = 8;

/// [`linear`] into caller buffers; `scratch` holds at least
/// [`linear_scratch_len`] values. Allocates nothing.
///
/// With an integer form (and not [`PackedWeight::set_exact`]), up to
/// [`INT_MAX_BATCH`]: the batch is taken [`INT_BATCH`] vectors at a time,
/// each quantized per block, and the kernel looks each row's codes up
/// once for up to four vectors; a vector's result is the same bits
/// whatever batch (up to that) it is in. A vector holding NaN or infinity
/// (or too far from f32's normal range for the integer steps) is computed
/// on the exact batch-1 path instead.
///
/// Exact path (and larger batches), batch > 1: `y` starts as the bias, then the blocked GEMM
/// adds `x · Wᵀ`, 72 output features at a time, `W` decoded 72 rows × 256
/// columns at a time; every weight element is decoded once per 256 batch
/// rows.
pub fn linear_into(
    w: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    x: &[f32],
    batch: usize,
    y: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), OpError> {
    linear_with(crate::Kernels::active(), w, bias, x, batch, y, scratch)
}

/// [`linear_into`] on a given code path.
pub(crate) fn linear_with(
    kern: &crate::Kernels,
    w: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    x: &[f32],
    batch: usize,
    y: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), OpError> {
    linear_of_batch(kern, w, bias, (x, batch, batch), y, scratch)
}

/// [`linear_with`] on `batch` rows `x` of a call on `whole` rows (the
/// allocating [`linear`] splits a large batch over threads), which
/// decides the path: the integer one up to [`INT_MAX_BATCH`].
fn linear_of_batch(
    kern: &crate::Kernels,
    w: &PackedWeight<'_>,
    bias: Option<&[f32]>,
    (x, batch, whole): (&[f32], usize, usize),
    y: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), OpError> {
    let (out_features, in_features) = (w.rows, w.cols);
    let check = |what, expected: Option<usize>, actual| match expected {
        Some(e) if e == actual => Ok(()),
        Some(e) => Err(OpError::LengthMismatch { op: "linear", what, expected: e, actual }),
        None => Err(OpError::BadParameter { op: "linear", reason: "batch size overflows" }),
    };
    check("x", batch.checked_mul(in_features), x.len())?;
    check("y", batch.checked_mul(out_features), y.len())?;
    if let Some(b) = bias {
        check("bias", Some(out_features), b.len())?;
    }
    let needed = linear_scratch_len(w, batch);
    if scratch.len() < needed {
        return Err(OpError::LengthMismatch {
            op: "linear",
            what: "scratch",
            expected: needed,
            actual: scratch.len(),
        });
    }
    if out_features == 0 || batch == 0 {
        return Ok(());
    }
    let int = w.int().filter(|f| in_features > 0 && whole <= f.max_batch());
    if let (Storage::Quantized(q), Some(f)) = (&w.storage, int) {
        let job = w.rows_job(q);
        let tile = |n: usize| n * INT_BATCH;
        for (x, y) in x.chunks(tile(in_features)).zip(y.chunks_mut(tile(out_features))) {
            linear_int_tile(kern, job, f, x, y, scratch);
        }
        if let Some(b) = bias {
            for y in y.chunks_exact_mut(out_features) {
                y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        return Ok(());
    }
    if batch == 1 {
        return match &w.storage {
            Storage::Quantized(q) => {
                gemv_rows(kern, &w.rows_job(q), x, y);
                if let Some(b) = bias {
                    y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                }
                Ok(())
            }
            Storage::Plain(data) => {
                for (r, out) in y.iter_mut().enumerate() {
                    let row = &data[r * in_features..(r + 1) * in_features];
                    *out = bias.map_or(0.0, |b| b[r]) + dot(row, x);
                }
                Ok(())
            }
        };
    }
    for y_row in y.chunks_exact_mut(out_features) {
        match bias {
            Some(b) => y_row.copy_from_slice(b),
            None => y_row.fill(0.0),
        }
    }
    // C = Wᵀ-shaped: C[o, b] = y[b * out + o] (row stride 1, column stride
    // out); B[p, b] = x[b, p], packed panel by panel.
    let pack_x = |pc: usize, kc: usize, jc: usize, nc: usize, nr: usize, out: &mut [f32]| {
        crate::gemm::pack_rows_transposed(x, in_features, pc, kc, jc, nc, nr, out)
    };
    let c = crate::gemm::Out { data: y, rs: 1, cs: out_features };
    crate::gemm::gemm(kern, w, 0, out_features, batch, &pack_x, c, &mut scratch[..needed])
}

/// `f32` slots of the integer path's scratch for `n` vectors: the
/// activations (int16 at most: two per slot) and one factor per block of
/// each, and above one vector their outputs, row by row.
fn int_scratch_len(w: &PackedWeight<'_>, block: usize, n: usize) -> usize {
    let blocks = w.cols.div_ceil(block);
    let outputs = if n > 1 { n * w.rows } else { 0 };
    n * (blocks * block).div_ceil(2) + n * blocks + outputs
}

/// Quantizes `x` per block of `block` columns to the integer grid `q`
/// (127 or 4095): `a = rint(x · (q / amax))`, clamped to ±q, and one
/// factor per block `(amax / q) · step` (the table's step folded in).
/// Each span of `order.len()` columns is stored in the kernel's order
/// (`order[s]`: the column of stored position `s`, [`IntForm::order`]).
/// Returns `false`, writing garbage, when `x` holds a NaN or infinity
/// (the caller then runs the exact path, which propagates them).
fn quantize_acts<T: Copy>(
    x: &[f32],
    block: usize,
    (q, step): (f32, f32),
    order: &[u8],
    acts: &mut [T],
    factors: &mut [f32],
    cast: impl Fn(i32) -> T,
) -> bool {
    let span = order.len();
    for ((xb, ab), f) in x.chunks(block).zip(acts.chunks_mut(block)).zip(factors.iter_mut()) {
        let Some(amax) = finite_amax(xb) else { return false };
        let inv = if amax > 0.0 { q / amax } else { 0.0 };
        // Clamped to ±q < 2^22, where adding and subtracting 1.5 · 2^23
        // rounds to the nearest integer, ties to even, as `rintf` does,
        // and vectorises. An infinite `inv` (a subnormal block) makes
        // ±inf (clamped) or, times 0, NaN (which is 0).
        let quantize = |v: f32| {
            let t = v * inv;
            let t = if t.is_nan() { 0.0 } else { t.clamp(-q, q) };
            ((t + ROUND_MAGIC) - ROUND_MAGIC) as i32
        };
        // Each span is quantized in column order (vectorised), then
        // stored in the kernel's order; spans past the end of `x` (a
        // last, partial block) are zeros.
        for (k, ac) in ab.chunks_mut(span).enumerate() {
            let xc = xb.get(k * span..).unwrap_or_default();
            let mut ints = [0i32; 64];
            for (t, &v) in ints.iter_mut().zip(xc.iter().take(span)) {
                *t = quantize(v);
            }
            for (a, &col) in ac.iter_mut().zip(order) {
                *a = cast(ints[usize::from(col) & 63]);
            }
        }
        *f = amax / q * step;
    }
    true
}

/// The largest magnitude in `xb`, or `None` when it holds a NaN or an
/// infinity; in eight lanes, so that it vectorises (a maximum does not
/// depend on the order).
fn finite_amax(xb: &[f32]) -> Option<f32> {
    let (mut lanes, mut nan) = ([0.0f32; 8], false);
    let chunks = xb.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            nan |= v.is_nan();
            *m = if v.abs() > *m { v.abs() } else { *m };
        }
    }
    for &v in tail {
        nan |= v.is_nan();
        lanes[0] = if v.abs() > lanes[0] { v.abs() } else { lanes[0] };
    }
    let amax = lanes.iter().fold(0.0f32, |m, &v| if v > m { v } else { m });
    (!nan && amax.is_finite()).then_some(amax)
}

/// Up to [`INT_BATCH`] vectors `x` on the integer path into `y` (`[n,
/// out]`, `n = x.len() / cols`): each vector is quantized into `scratch`,
/// then `kern`'s integer kernel writes `[out, n]` (into `y` itself when
/// `n` is 1, else into scratch, then transposed). A vector the integer
/// path declines ([`quantize_vector`]) runs on the exact batch-1 path.
fn linear_int_tile(
    kern: &crate::Kernels,
    rows: crate::kernels::PackedRows<'_>,
    f: &IntForm,
    x: &[f32],
    y: &mut [f32],
    scratch: &mut [f32],
) {
    let n = x.len() / rows.cols;
    let out = y.len() / n;
    let blocks = rows.cols.div_ceil(f.block);
    let padded = blocks * f.block;
    let (factors, rest) = scratch.split_at_mut(n * blocks);
    let (slots, outputs) = rest.split_at_mut((n * padded).div_ceil(2));
    let wide = f.table.wide();
    let p = slots.as_mut_ptr();
    let mut declined = [false; INT_BATCH];
    let vectors = x.chunks_exact(rows.cols).zip(factors.chunks_mut(blocks)).zip(&mut declined);
    let (act8, act16): (&[i8], &[i16]) = if wide {
        // SAFETY: i16 has no more alignment than f32 and every bit pattern
        // is valid for both; the view covers 2 · n · padded of `slots`'
        // bytes (4 · (n · padded).div_ceil(2) >= 2 · n · padded), and
        // `slots` is not used otherwise while it lives.
        let act16 = unsafe { core::slice::from_raw_parts_mut(p.cast::<i16>(), n * padded) };
        for (((xv, fac), d), a) in vectors.zip(act16.chunks_mut(padded)) {
            *d = !quantize_vector(xv, f, (f.act_q, a, fac), |v| v as i16);
        }
        (&[], act16)
    } else {
        // SAFETY: as above, for i8 (n · padded bytes).
        let act8 = unsafe { core::slice::from_raw_parts_mut(p.cast::<i8>(), n * padded) };
        for (((xv, fac), d), a) in vectors.zip(act8.chunks_mut(padded)) {
            *d = !quantize_vector(xv, f, (f.act_q, a, fac), |v| v as i8);
        }
        (act8, &[])
    };
    let job = crate::kernels::IntRows {
        rows,
        table: f.table,
        block: f.block,
        groups_per_block: usize::from(f.groups_per_block),
        act8,
        act16,
        act_scales: factors,
        batch: n,
    };
    if n == 1 {
        gemv_int_rows(kern, &job, y);
    } else {
        let yt = &mut outputs[..n * out];
        gemv_int_rows(kern, &job, yt);
        for (r, outs) in yt.chunks_exact(n).enumerate() {
            for (v, &o) in outs.iter().enumerate() {
                y[v * out + r] = o;
            }
        }
    }
    let vectors = x.chunks_exact(rows.cols).zip(y.chunks_exact_mut(out));
    for ((xv, yv), _) in vectors.zip(declined).filter(|(_, d)| *d) {
        gemv_rows(kern, &rows, xv, yv);
    }
}

/// Quantizes one vector `x` for `f`'s integer path into `acts` and its
/// block factors (grid `q`, see [`quantize_acts`]); `false` (the vector's
/// activations and factors zeroed) when `x` is not finite or its
/// magnitudes and the weight's scales would take the f32 steps out of the
/// normal range (`IntForm::safe_for`).
fn quantize_vector<T: Copy + Default>(
    x: &[f32],
    f: &IntForm,
    (q, acts, factors): (f32, &mut [T], &mut [f32]),
    cast: impl Fn(i32) -> T,
) -> bool {
    let order = &f.order[..f.span];
    let ok = quantize_acts(x, f.block, (q, f.step), order, acts, factors, cast)
        && f.safe_for(magnitude_range(factors.iter().copied()), factors.len());
    if !ok {
        acts.fill(T::default());
        factors.fill(0.0);
    }
    ok
}

/// The integer kernel on `job`'s rows (see [`for_row_blocks`]).
fn gemv_int_rows(kern: &crate::Kernels, job: &crate::kernels::IntRows<'_>, y: &mut [f32]) {
    for_row_blocks(&job.rows, job.batch, y, |rows, out| {
        (kern.gemv_int)(&crate::kernels::IntRows { rows: *rows, ..*job }, out)
    });
}

/// Batch 1 on the exact path: the rows' codes are decoded and multiplied
/// in registers, a group's scale at a time (`Kernels::gemv_packed`); no
/// weight is written as f32 and nothing is allocated (see
/// [`for_row_blocks`] for the threads).
fn gemv_rows(
    kern: &crate::Kernels,
    job: &crate::kernels::PackedRows<'_>,
    x: &[f32],
    y: &mut [f32],
) {
    for_row_blocks(job, 1, y, |rows, out| (kern.gemv_packed)(rows, x, out));
}

/// Runs a row kernel, `run(rows, out)`, over the outputs `y` of `job`
/// (`per_row` consecutive outputs per row): on this thread, or, with the
/// `parallel` feature, two threads or more and more than a million
/// weights, in blocks of rows on rayon's pool, `run` getting each block's
/// rows (codes and scales from its first row on) and outputs. Rows are
/// independent, so the result is the same as on one thread.
fn for_row_blocks(
    job: &crate::kernels::PackedRows<'_>,
    per_row: usize,
    y: &mut [f32],
    run: impl Fn(&crate::kernels::PackedRows<'_>, &mut [f32]) + Sync,
) {
    #[cfg(not(feature = "parallel"))]
    let _ = per_row;
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        let rows = y.len() / per_row.max(1);
        // The size first: asking for the threads starts rayon's pool (which
        // allocates) at its first use, and small products never need it.
        if rows.saturating_mul(job.cols) >= 1 << 20 && rayon::current_num_threads() >= 2 {
            let threads = rayon::current_num_threads();
            // Blocks of a multiple of 8 rows start on a byte whatever C
            // is; four blocks per thread even out uneven progress.
            let block = rows.div_ceil(threads * 4).next_multiple_of(8);
            y.par_chunks_mut(block * per_row).enumerate().for_each(|(k, out)| {
                let first = k * block;
                let byte = first * job.cols / 8 * job.bits as usize;
                let sub = crate::kernels::PackedRows {
                    packed: job.packed.get(byte..).unwrap_or_default(),
                    scales: job.scales.get(first * job.scale_stride..).unwrap_or_default(),
                    sub_scales: job.sub_scales.map(|s| crate::kernels::SubScales {
                        sup: s.sup.get(first * s.sup_stride..).unwrap_or_default(),
                        sub: s.sub.get(first * job.scale_stride..).unwrap_or_default(),
                        ..s
                    }),
                    ..*job
                };
                run(&sub, out)
            });
            return;
        }
    }
    run(job, y)
}

/// Dot product with eight independent partial sums (the order the SIMD
/// paths will use), so the compiler can vectorise it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}
