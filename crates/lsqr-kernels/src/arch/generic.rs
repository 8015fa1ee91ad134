//! Portable scalar kernels: THE reference every SIMD path is tested against.
//!
//! Every function here is written for clarity first: one element at a time,
//! sums accumulated left to right in `f32`, no fused multiply-adds (Rust
//! never contracts `a * b + c`), transcendentals from `libm` so the reference
//! is identical with and without `std` and on every target.
//!
//! The kernels trust their callers (`Kernels` validates shapes first); with
//! inconsistent lengths they stop at the shortest buffer, never index out of
//! bounds.

use core::f32::consts::FRAC_1_SQRT_2;

/// `sqrt(2 / pi)`, the constant of the tanh approximation of GELU.
pub(crate) const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation of GELU.
pub(crate) const GELU_TANH_CUBIC: f32 = 0.044_715;

/// `max(x, 0)`; NaN stays NaN, `-0.0` stays `-0.0`.
#[inline]
pub(crate) fn relu1(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// `min(max(x, 0), 6)`; NaN stays NaN.
#[inline]
pub(crate) fn relu6_1(x: f32) -> f32 {
    x.clamp(0.0, 6.0)
}

/// `max(x, 0)` in place.
pub fn relu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = relu1(*v));
}

/// `min(max(x, 0), 6)` in place.
pub fn relu6(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = relu6_1(*v));
}

/// `x` where `x >= 0` (or NaN), `alpha * x` where `x < 0`.
pub fn leaky_relu(x: &mut [f32], alpha: f32) {
    x.iter_mut().for_each(|v| {
        if *v < 0.0 {
            *v *= alpha;
        }
    });
}

/// `1 / (1 + exp(-x))`.
pub fn sigmoid(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = 1.0 / (1.0 + libm::expf(-*v)));
}

/// `tanh(x)`.
pub fn tanh(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = libm::tanhf(*v));
}

/// GELU, erf form: `x * Phi(x) = 0.5 * x * erfc(-x / sqrt 2)`.
///
/// Written with `erfc` rather than `1 + erf` so the left tail (where
/// `1 + erf` cancels) keeps its relative accuracy.
pub fn gelu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = 0.5 * *v * libm::erfcf(-*v * FRAC_1_SQRT_2));
}

/// GELU, tanh approximation:
/// `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`,
/// evaluated as the identical `x / (1 + exp(-2u))` (no cancellation in the
/// left tail).
pub fn gelu_tanh(x: &mut [f32]) {
    x.iter_mut().for_each(|v| {
        let u = SQRT_2_OVER_PI * (*v + GELU_TANH_CUBIC * *v * *v * *v);
        *v /= 1.0 + libm::expf(-2.0 * u);
    });
}

/// SiLU (swish): `x * sigmoid(x) = x / (1 + exp(-x))`.
pub fn silu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v /= 1.0 + libm::expf(-*v));
}

/// Hard sigmoid (PyTorch's): `relu6(x + 3) / 6`.
pub fn hardsigmoid(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = relu6_1(*v + 3.0) / 6.0);
}

/// Hard swish (PyTorch's): `x * relu6(x + 3) / 6`, evaluated as
/// `(x * relu6(x + 3)) / 6`.
pub fn hardswish(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = *v * relu6_1(*v + 3.0) / 6.0);
}

/// `out[i] = a[i] + b[i]`.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// `out[i] = a[i] * b[i]`.
pub fn mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x * y;
    }
}

/// `out[i] = a[i] + s`.
pub fn add_scalar(a: &[f32], s: f32, out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = x + s;
    }
}

/// `out[i] = a[i] * s`.
pub fn mul_scalar(a: &[f32], s: f32, out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = x * s;
    }
}

/// `x[i] = x[i] * scale + shift` (a multiply, then an add: not fused).
pub fn affine(x: &mut [f32], scale: f32, shift: f32) {
    x.iter_mut().for_each(|v| *v = *v * scale + shift);
}

/// A running f32 sum with Kahan compensation, for softmax denominators: a
/// peaked row (a text recognizer's one likely class among 18,710) summed
/// one term after another rounds away every term below half the sum's ulp
/// (1.4e-4 of the sum); f64 would be software on single-precision FPUs.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CompensatedSum {
    sum: f32,
    /// What the last additions rounded away, negated.
    lost: f32,
}

impl CompensatedSum {
    pub(crate) fn add(&mut self, v: f32) {
        let term = v - self.lost;
        let next = self.sum + term;
        self.lost = (next - self.sum) - term;
        self.sum = next;
    }

    pub(crate) fn value(self) -> f32 {
        self.sum - self.lost
    }
}

/// Softmax of each row of `axis_len` elements: `exp(x - max) / sum`.
pub fn softmax(x: &mut [f32], axis_len: usize) {
    if axis_len == 0 {
        return;
    }
    for row in x.chunks_exact_mut(axis_len) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = CompensatedSum::default();
        for v in row.iter_mut() {
            *v = libm::expf(*v - max);
            sum.add(*v);
        }
        let sum = sum.value();
        row.iter_mut().for_each(|v| *v /= sum);
    }
}

/// Layer norm of each row of `axis_len` elements:
/// `(x - mean) * (1 / sqrt(var + eps)) * gamma + beta`, with the biased
/// (population) variance computed in a second pass.
pub fn layer_norm(x: &mut [f32], axis_len: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    if axis_len == 0 {
        return;
    }
    for row in x.chunks_exact_mut(axis_len) {
        let n = row.len() as f32;
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / libm::sqrtf(var + eps);
        for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// `c[m, n] = a[m, k] * b[k, n]`, row-major, overwriting `c`: each output
/// row accumulates `a[i, p] * b[p, ..]` for `p = 0, 1, ...` in order.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    if n == 0 {
        return;
    }
    for (i, c_row) in c.chunks_exact_mut(n).take(m).enumerate() {
        c_row.fill(0.0);
        if k == 0 {
            continue;
        }
        let a_row = a.get(i * k..(i + 1) * k).unwrap_or(&[]);
        for (&av, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
            for (cv, &bv) in c_row.iter_mut().zip(b_row) {
                *cv += av * bv;
            }
        }
    }
}

/// A validated 2-D pooling window on one `[h, w]` plane.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolGeometry {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl PoolGeometry {
    /// The clipped input range `[start, end)` of output index `o` along `axis`.
    #[inline]
    fn window(&self, axis: usize, o: usize) -> (usize, usize) {
        let size = if axis == 0 { self.h } else { self.w };
        let start = (o * self.stride[axis]) as isize - self.padding[axis] as isize;
        let end = start + self.kernel[axis] as isize;
        (start.max(0) as usize, (end.max(0) as usize).min(size))
    }
}

/// Applies `reduce` to every pooling window of every `[h, w]` plane of
/// `input`: it gets the window's row slices (padding excluded) and their
/// number of elements, and returns the output value.
fn pool_windows<'a>(
    input: &'a [f32],
    out: &mut [f32],
    g: &PoolGeometry,
    reduce: impl Fn(&mut dyn Iterator<Item = &'a [f32]>, usize) -> f32,
) {
    let (plane, oplane) = (g.h * g.w, g.oh * g.ow);
    if plane == 0 || oplane == 0 {
        return;
    }
    for (src, dst) in input.chunks_exact(plane).zip(out.chunks_exact_mut(oplane)) {
        for oy in 0..g.oh {
            let (y0, y1) = g.window(0, oy);
            for ox in 0..g.ow {
                let (x0, x1) = g.window(1, ox);
                let mut rows = (y0..y1).map(|y| &src[y * g.w + x0..y * g.w + x1]);
                dst[oy * g.ow + ox] = reduce(&mut rows, (y1 - y0) * (x1 - x0));
            }
        }
    }
}

/// Max pooling of each `[h, w]` plane of `input` into `out` (`oh * ow` per
/// plane). Padding never wins (it is not a value); NaN propagates.
pub(crate) fn max_pool2d(input: &[f32], out: &mut [f32], g: &PoolGeometry) {
    pool_windows(input, out, g, |rows, _| {
        rows.flatten().fold(f32::NEG_INFINITY, |m, &v| if v > m || v.is_nan() { v } else { m })
    });
}

/// Average pooling of each `[h, w]` plane with `count_include_pad = false`:
/// each output is the mean of the input elements its window covers, padding
/// excluded from both sum and count.
pub(crate) fn avg_pool2d(input: &[f32], out: &mut [f32], g: &PoolGeometry) {
    pool_windows(input, out, g, |rows, count| {
        rows.flatten().fold(0.0f32, |s, &v| s + v) / count as f32
    });
}

/// The mean of each plane of `plane` elements: eight partial sums (lane
/// `i % 8`, which vectorize; one serial chain of adds cost 4 cycles per
/// element), added pairwise, then the rest in order.
pub(crate) fn global_avg_pool(input: &[f32], out: &mut [f32], plane: usize) {
    if plane == 0 {
        return;
    }
    for (src, dst) in input.chunks_exact(plane).zip(out.iter_mut()) {
        let mut acc = [0.0f32; 8];
        let chunks = src.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v;
            }
        }
        let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
        let sum = ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7));
        *dst = rest.iter().fold(sum, |s, &v| s + v) / plane as f32;
    }
}

/// `Σ table[codes[i]] * x[i]` over the shorter of `codes` and `x`, with
/// eight partial sums. Panics on a code outside the table; the
/// packed-weight layer only passes codes of C bits with a 2^C table.
pub fn dot_codes(table: &[f32], codes: &[u16], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let n = codes.len().min(x.len());
    let (codes8, x8) = (codes[..n].chunks_exact(8), x[..n].chunks_exact(8));
    let tail: f32 = codes8
        .remainder()
        .iter()
        .zip(x8.remainder())
        .map(|(&c, &v)| table[usize::from(c)] * v)
        .sum();
    for (c, v) in codes8.zip(x8) {
        for k in 0..8 {
            acc[k] += table[usize::from(c[k])] * v[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ_g scales[g] · dot_codes(group g)` over groups of `group` elements
/// (the last may be short), stopping at the shorter of the inputs and at
/// `scales.len()` groups.
pub fn dot_codes_grouped(
    table: &[f32],
    codes: &[u16],
    x: &[f32],
    scales: &[f32],
    group: usize,
) -> f32 {
    let n = codes.len().min(x.len());
    if group == 0 {
        return 0.0;
    }
    codes[..n]
        .chunks(group)
        .zip(x[..n].chunks(group))
        .zip(scales)
        .map(|((c, v), &s)| s * dot_codes(table, c, v))
        .sum()
}

/// Batch-1 linear on packed rows (`PackedRows`): each row is unpacked a
/// bounded chunk at a time into a stack buffer (no allocation) and dotted
/// with `x`, a scale group at a time. Stops at the shortest input.
pub(crate) fn gemv_packed(w: &crate::kernels::PackedRows<'_>, x: &[f32], y: &mut [f32]) {
    gemv_packed_with(w, x, y, dot_codes)
}

/// `gemv_packed` with the inner dot supplied (the AVX2 path reuses the
/// chunking with its own dot for shapes its fused kernel does not take).
pub(crate) fn gemv_packed_with(
    w: &crate::kernels::PackedRows<'_>,
    x: &[f32],
    y: &mut [f32],
    dot: impl Fn(&[f32], &[u16], &[f32]) -> f32,
) {
    const CHUNK: usize = 512;
    let mut codes = [0u16; CHUNK];
    let cols = w.cols.min(x.len());
    let group = w.group.max(1);
    for (r, out) in y.iter_mut().enumerate() {
        let mut sum = 0.0f32;
        for (g, c0) in (0..cols).step_by(group).enumerate() {
            let Some(&scale) = w.scales.get(r * w.scale_stride + g) else { break };
            let c1 = (c0 + group).min(cols);
            let mut part = 0.0f32;
            let mut c = c0;
            while c < c1 {
                let n = (c1 - c).min(CHUNK);
                if lsqr_pack::unpack_from(w.packed, w.bits, r * w.cols + c, &mut codes[..n])
                    .is_err()
                {
                    break;
                }
                part += dot(w.table, &codes[..n], &x[c..c + n]);
                c += n;
            }
            sum += scale * part;
        }
        *out = sum;
    }
}

/// The exact integer lane sums of row `r`'s codes in columns `c0..c0 + n`
/// (one block, whole or the row's last), looked up in the integer table,
/// times vector `v`'s quantized activations there; each product goes to the part
/// ([`crate::kernels::int_lane_part`]) and lane ([`int_lane`]) the AVX2
/// kernel's `vpmaddwd` puts it in. `None` when the codes are out of
/// range.
pub(crate) fn int_block_lanes(
    w: &crate::kernels::IntRows<'_>,
    (r, v): (usize, usize),
    c0: usize,
    n: usize,
) -> Option<[[i32; 8]; 2]> {
    let a0 = v.checked_mul(w.padded_cols())?.checked_add(c0)?;
    let mut codes = [0u16; 64];
    let codes = codes.get_mut(..n)?;
    lsqr_pack::unpack_from(w.rows.packed, w.rows.bits, r * w.rows.cols + c0, codes).ok()?;
    let (bits, wide) = (w.rows.bits, w.table.wide());
    let span = crate::kernels::int_act_span(bits, w.block);
    let mut lanes = [[0i32; 8]; 2];
    // Stored activation `s` of a span multiplies the code of column
    // `int_act_column(s)` of that span; the activations of a last, partial
    // block are padded with zeros to whole spans (no product).
    for s in 0..n.next_multiple_of(span) {
        let col = s / span * span + crate::kernels::int_act_column(bits, wide, span, s % span);
        let Some(&code) = codes.get(col) else { continue };
        let code = usize::from(code);
        lanes[crate::kernels::int_lane_part(s % span)][int_lane(wide, s % 32)] += match w.table {
            crate::kernels::IntTable::I8(t) => {
                i32::from(*t.get(code)?) * i32::from(*w.act8.get(a0 + s)?)
            }
            crate::kernels::IntTable::I16(t) => {
                i32::from(*t.get(code)?) * i32::from(*w.act16.get(a0 + s)?)
            }
            crate::kernels::IntTable::I16Large(t, _) => {
                i32::from(*t.get(code)?) * i32::from(*w.act16.get(a0 + s)?)
            }
        };
    }
    Some(lanes)
}

/// The int32 lane of the AVX2 integer kernel that stored position `s`
/// (0..32) of a register of activations adds into: int8 (`vpmaddubsw`
/// pairs, `vpmaddwd` by ones): four consecutive bytes per lane; int16
/// (`vpmaddwd` of two registers of 16 words): words `2j, 2j + 1` of each.
pub(crate) fn int_lane(wide: bool, s: usize) -> usize {
    if wide {
        (s % 16) / 2
    } else {
        s / 4
    }
}

/// The lanes' sum in the AVX2 kernel's order:
/// `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`.
pub(crate) fn int_lanes_sum(l: &[f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// The integer reference (`IntRows`).
pub(crate) fn gemv_int(w: &crate::kernels::IntRows<'_>, y: &mut [f32]) {
    gemv_int_rows(w, 0, y)
}

/// [`gemv_int`] for rows `first..` (`y` holds their outputs, `batch` per
/// row; the AVX2 path leaves its last rows, whose wide loads would pass
/// the end, to this).
pub(crate) fn gemv_int_rows(w: &crate::kernels::IntRows<'_>, first: usize, y: &mut [f32]) {
    let p = &w.rows;
    let block = w.block.max(1);
    let batch = w.batch.max(1);
    for (k, out) in y.iter_mut().enumerate() {
        let (r, v) = (first + k / batch, k % batch);
        let mut sum = [0.0f32; 8];
        for (b, c0) in (0..p.cols).step_by(block).enumerate() {
            let n = block.min(p.cols - c0);
            let act = w.act_scales.get(v * w.blocks() + b);
            let (Some(&a), Some(parts)) = (act, int_block_lanes(w, (r, v), c0, n)) else {
                break;
            };
            // Each lane's scale: the block's one group, or its lane's.
            let first = r * p.scale_stride + c0 / p.group.max(1);
            let group = |part: usize, lane: usize| match w.groups_per_block {
                0 | 1 => 0,
                _ => crate::kernels::int_lane_group(part, lane, p.group),
            };
            let Some(scales) = p.scales.get(first..first + w.groups_per_block.max(1)) else {
                break;
            };
            // With 1 or 2 groups per block the parts are added as integers.
            let split = w.groups_per_block >= 4;
            let parts: [[i32; 8]; 2] = if split {
                parts
            } else {
                [core::array::from_fn(|j| parts[0][j] + parts[1][j]), [0; 8]]
            };
            for (part, lanes) in parts.iter().enumerate().take(1 + usize::from(split)) {
                for (j, (s, &l)) in sum.iter_mut().zip(lanes).enumerate() {
                    *s += l as f32 * (scales[group(part, j)] * a);
                }
            }
        }
        *out = int_lanes_sum(&sum);
    }
}

/// Elements `start..start + out.len()` of the row-major packed weight,
/// decoded (`table[code] * scale`) a bounded chunk at a time through a
/// stack buffer. Elements past the packed data are left untouched.
pub(crate) fn decode_packed(w: &crate::kernels::PackedRows<'_>, start: usize, out: &mut [f32]) {
    const CHUNK: usize = 512;
    let mut codes = [0u16; CHUNK];
    let (cols, group) = (w.cols.max(1), w.group.max(1));
    let mut done = 0;
    while done < out.len() {
        let e = start + done;
        let (row, col) = (e / cols, e % cols);
        let group_end = ((col / group + 1) * group).min(cols);
        let n = (group_end - col).min(CHUNK).min(out.len() - done);
        let Some(&scale) = w.scales.get(row * w.scale_stride + col / group) else { return };
        if lsqr_pack::unpack_from(w.packed, w.bits, e, &mut codes[..n]).is_err() {
            return;
        }
        for (o, &c) in out[done..done + n].iter_mut().zip(&codes[..n]) {
            *o = w.table[usize::from(c)] * scale;
        }
        done += n;
    }
}

// ------------------------------------------------ elementwise operators

use crate::elementwise::{BinaryOp, UnaryOp};
use crate::reduce::RowReduce;

/// `max(a, b)` as `numpy.maximum`: NaN if either is NaN, otherwise
/// `a >= b ? a : b` (so the first of two equal zeros wins).
#[inline]
pub(crate) fn max_nan(a: f32, b: f32) -> f32 {
    if a >= b || a.is_nan() {
        a
    } else {
        b
    }
}

/// `min(a, b)` as `numpy.minimum`: NaN if either is NaN, otherwise
/// `a <= b ? a : b`.
#[inline]
pub(crate) fn min_nan(a: f32, b: f32) -> f32 {
    if a <= b || a.is_nan() {
        a
    } else {
        b
    }
}

/// 1.0 for true, 0.0 for false: ONNX comparisons cast to f32.
#[inline]
fn flag(b: bool) -> f32 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Python's `a % b`: the remainder takes the divisor's sign (a zero
/// remainder too), built on the exact `fmodf`.
#[inline]
pub(crate) fn floor_mod(a: f32, b: f32) -> f32 {
    let r = libm::fmodf(a, b);
    if r == 0.0 {
        libm::copysignf(0.0, b)
    } else if (r < 0.0) != (b < 0.0) {
        r + b
    } else {
        r
    }
}

/// One element of a binary operator.
#[inline]
pub(crate) fn binary1(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Pow => libm::powf(a, b),
        BinaryOp::Max => max_nan(a, b),
        BinaryOp::Min => min_nan(a, b),
        BinaryOp::Equal => flag(a == b),
        BinaryOp::Less => flag(a < b),
        BinaryOp::Greater => flag(a > b),
        BinaryOp::LessOrEqual => flag(a <= b),
        BinaryOp::GreaterOrEqual => flag(a >= b),
        BinaryOp::Mod => floor_mod(a, b),
        BinaryOp::FMod => libm::fmodf(a, b),
    }
}

/// `out[i] = a[i] (op) b[i]`. The `match` sits outside the loop so each
/// operator gets its own loop.
pub(crate) fn binary_same(op: BinaryOp, a: &[f32], b: &[f32], out: &mut [f32]) {
    macro_rules! each {
        ($($op:ident),*) => {
            match op {
                $(BinaryOp::$op => {
                    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                        *o = binary1(BinaryOp::$op, x, y);
                    }
                })*
            }
        };
    }
    each!(
        Add,
        Sub,
        Mul,
        Div,
        Pow,
        Max,
        Min,
        Equal,
        Less,
        Greater,
        LessOrEqual,
        GreaterOrEqual,
        Mod,
        FMod
    );
}

/// `out[i] = a[i] (op) s`.
pub(crate) fn binary_scalar_right(op: BinaryOp, a: &[f32], s: f32, out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = binary1(op, x, s);
    }
}

/// `out[i] = s (op) b[i]`.
pub(crate) fn binary_scalar_left(op: BinaryOp, s: f32, b: &[f32], out: &mut [f32]) {
    for (o, &y) in out.iter_mut().zip(b) {
        *o = binary1(op, s, y);
    }
}

/// `x` clamped to `[lo, hi]` as ONNX Clip (`min(max(x, lo), hi)`): NaN
/// stays NaN, a NaN bound is ignored, `lo > hi` gives `hi`. Unlike
/// `f32::clamp` it never panics.
#[inline]
pub(crate) fn clip1(x: f32, lo: f32, hi: f32) -> f32 {
    let y = if lo > x { lo } else { x };
    if hi < y {
        hi
    } else {
        y
    }
}

/// `log(1 + exp(x))` without overflow for large `x` nor loss for small.
#[inline]
fn softplus1(x: f32) -> f32 {
    if x > 0.0 {
        x + libm::log1pf(libm::expf(-x))
    } else {
        libm::log1pf(libm::expf(x))
    }
}

/// One element of a unary operator (the activations of the table included,
/// for the reference).
#[inline]
pub(crate) fn unary1(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Relu => relu1(x),
        UnaryOp::Relu6 => relu6_1(x),
        UnaryOp::LeakyRelu { alpha } => {
            if x < 0.0 {
                x * alpha
            } else {
                x
            }
        }
        UnaryOp::Sigmoid => 1.0 / (1.0 + libm::expf(-x)),
        UnaryOp::Tanh => libm::tanhf(x),
        UnaryOp::Gelu => 0.5 * x * libm::erfcf(-x * FRAC_1_SQRT_2),
        UnaryOp::GeluTanh => {
            let u = SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x * x * x);
            x / (1.0 + libm::expf(-2.0 * u))
        }
        UnaryOp::Silu => x / (1.0 + libm::expf(-x)),
        UnaryOp::HardSigmoid { alpha, beta } => clip1(alpha * x + beta, 0.0, 1.0),
        UnaryOp::HardSwish => x * relu6_1(x + 3.0) / 6.0,
        UnaryOp::Clip { min, max } => clip1(x, min, max),
        UnaryOp::Neg => -x,
        UnaryOp::Abs => libm::fabsf(x),
        UnaryOp::Sqrt => libm::sqrtf(x),
        UnaryOp::Reciprocal => 1.0 / x,
        UnaryOp::Exp => libm::expf(x),
        UnaryOp::Log => libm::logf(x),
        UnaryOp::Erf => libm::erff(x),
        UnaryOp::Floor => libm::floorf(x),
        UnaryOp::Ceil => libm::ceilf(x),
        UnaryOp::Round => libm::roundevenf(x),
        UnaryOp::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }
        UnaryOp::Softplus => softplus1(x),
        UnaryOp::Elu { alpha } => {
            if x < 0.0 {
                alpha * libm::expm1f(x)
            } else {
                x
            }
        }
        UnaryOp::Sin => libm::sinf(x),
        UnaryOp::Cos => libm::cosf(x),
        UnaryOp::Not => flag(x == 0.0),
        UnaryOp::Trunc => libm::truncf(x),
    }
}

/// Any unary operator in place: the table's activations through their
/// kernels, the rest one element at a time.
pub(crate) fn unary(op: UnaryOp, x: &mut [f32]) {
    match op {
        UnaryOp::Relu => relu(x),
        UnaryOp::Relu6 => relu6(x),
        UnaryOp::LeakyRelu { alpha } => leaky_relu(x, alpha),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Tanh => tanh(x),
        UnaryOp::Gelu => gelu(x),
        UnaryOp::GeluTanh => gelu_tanh(x),
        UnaryOp::Silu => silu(x),
        UnaryOp::HardSwish => hardswish(x),
        _ => x.iter_mut().for_each(|v| *v = unary1(op, *v)),
    }
}

/// `log(exp(a) + exp(b))`, the online step of a log-sum-exp reduction
/// that has no room for a separate maximum.
#[inline]
pub(crate) fn log_add_exp(a: f32, b: f32) -> f32 {
    if a == f32::NEG_INFINITY {
        return b;
    }
    if b == f32::NEG_INFINITY || a == b {
        // a == b: also the +inf + +inf case, where a - b is NaN.
        return if a == b { a + core::f32::consts::LN_2 } else { a };
    }
    let m = max_nan(a, b);
    m + libm::log1pf(libm::expf(-libm::fabsf(a - b)))
}

/// The fold of one reduction step.
#[inline]
pub(crate) fn fold1(op: RowReduce, acc: f32, x: f32) -> f32 {
    match op {
        RowReduce::Sum => acc + x,
        RowReduce::SumAbs => acc + libm::fabsf(x),
        RowReduce::SumSquare => acc + x * x,
        RowReduce::Prod => acc * x,
        RowReduce::Max => max_nan(x, acc),
        RowReduce::Min => min_nan(x, acc),
        RowReduce::SumExp(shift) => acc + libm::expf(x - shift),
        RowReduce::LogAddExp => log_add_exp(acc, x),
    }
}

/// `row` folded left to right from the fold's identity.
pub(crate) fn reduce_row(op: RowReduce, row: &[f32]) -> f32 {
    row.iter().fold(op.identity(), |acc, &x| fold1(op, acc, x))
}

/// `acc[i] = fold(acc[i], x[i])`.
pub(crate) fn reduce_acc(op: RowReduce, acc: &mut [f32], x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a = fold1(op, *a, v);
    }
}
