//! [`Kernels`]: one code path's kernel table, and every operator as a
//! validating method on it.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::arch::{self, generic};
use crate::elementwise::{BinaryOp, UnaryOp};
use crate::reduce::RowReduce;
use crate::shape::{self, Binary, Pool2d};
use crate::OpError;

/// Per-channel statistics and affine parameters of an inference batch norm.
///
/// Each slice holds one value per channel.
#[derive(Clone, Copy, Debug)]
pub struct BatchNorm<'a> {
    /// Running mean.
    pub mean: &'a [f32],
    /// Running (biased) variance.
    pub var: &'a [f32],
    /// Scale.
    pub gamma: &'a [f32],
    /// Shift.
    pub beta: &'a [f32],
    /// Added to the variance before the square root (`>= 0`, finite).
    pub eps: f32,
}

/// A matmul kernel: `(a, b, c, m, k, n)`.
pub(crate) type MatmulFn = fn(&[f32], &[f32], &mut [f32], usize, usize, usize);

/// The batch-1 packed-weight job: `y[r] = Σ_g scale(r, g) · Σ_{c in g}
/// table[code(r, c)] · x[c]` for every row `r < y.len()`, with codes of
/// `bits` bits packed LSB-first, row after row, `cols` per row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PackedRows<'a> {
    pub(crate) packed: &'a [u8],
    pub(crate) bits: u32,
    pub(crate) cols: usize,
    pub(crate) table: &'a [f32],
    /// Scale of row `r`, group `g`: `scales[r * scale_stride + g]`
    /// (`scale_stride` 0: one scale for the whole weight).
    pub(crate) scales: &'a [f32],
    pub(crate) scale_stride: usize,
    /// Columns per scale group (`cols` when a row has one scale).
    pub(crate) group: usize,
    /// Two-level scales as stored, beside `scales`, when the weight has
    /// them in a form the integer kernels read ([`SubScales`]).
    pub(crate) sub_scales: Option<SubScales<'a>>,
}

/// Two-level scales as the file stores them: the scale of row `r`'s group
/// (sub-block) `g` is `sup[r · sup_stride + (g >> subs_per_super_log2)] ·
/// f32::from(sub[r · scale_stride + g])`, one f32 multiply, the very value
/// `PackedRows::scales` holds for it (the weight checks every one when it
/// is built). The integer kernels read these instead of the f32 scales: a
/// byte per sub-block rather than four, which at C = 4 with sub-blocks of
/// 16 is 4.5 bits read per weight rather than 6.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubScales<'a> {
    pub(crate) sup: &'a [f32],
    pub(crate) sup_stride: usize,
    pub(crate) sub: &'a [u8],
    /// Sub-blocks per super-block, as a power of two; a super-block holds
    /// whole 64-column blocks (at least 64 columns).
    pub(crate) subs_per_super_log2: u32,
}

/// A batch-1 packed-weight kernel: `(job, x, y)`.
pub(crate) type GemvFn = fn(&PackedRows<'_>, &[f32], &mut [f32]);

/// The integer form of a weight's decode table (see `crate::packed`): the
/// table's entries (zero-padded past 2^C) rounded to integers on a grid of
/// `max |table| / QW`: at C <= 4, QW = 127 (int8 entries, int8
/// activations) or 8191 (int16 entries, int16 activations on a grid of
/// 4095); at C = 5..=8, QW = 32767 (int16 activations on a grid of 8191).
// The C = 5..=8 variant is 512 bytes: a job copies it once per kernel
// call, and keeping it inline keeps `IntRows` free of another lifetime.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntTable {
    /// int8 levels in -127..=127, activations int8 in -127..=127.
    I8([i8; 16]),
    /// int16 levels in -8191..=8191, activations int16 in -4095..=4095.
    I16([i16; 16]),
    /// C = 5..=8: int16 levels in -32767..=32767, activations int16 in
    /// -8191..=8191 (a 64-column block's lane adds 8 products: at most
    /// 8 · 32767 · 8191 < 2^31); at C = 7 and 8, the factors the levels
    /// were computed from, when they have that form.
    I16Large([i16; 256], Option<NibbleFactors>),
}

/// C = 7 or 8 levels computed from the code's two nibbles (C = 7: the high
/// one 0..8): level `16·h + l` is
/// `offset[h] + mulhrs(span[h], shape[l])`, `mulhrs(a, b) = (a·b + 2^14)
/// >> 15` (`vpmulhrsw`).
///
/// Why: a 256-entry table costs AVX2 16 `vpshufb` per 32 codes even with
/// its sign folded (`arch::x86_64::gemv_int`), 128 entries 8, with a
/// chain of XORs; three 16-entry tables cost 6 and a multiply. The `log` codec's
/// μ-law levels have this form in the reals: `(r^j - 1) / μ` over the 16
/// codes of one high nibble is one curve (`r^l - 1`) scaled by `r^(16h)`
/// and shifted, and the sign is the top bit of `h`. The integer levels
/// are defined as what the factors give (the portable reference and
/// every path read them), and are used only when each stays within the
/// integer table's error bound of its f32 level (`crate::packed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NibbleFactors {
    pub(crate) offset: [i16; 16],
    pub(crate) span: [i16; 16],
    pub(crate) shape: [i16; 16],
}

impl NibbleFactors {
    /// The level of `code` (below 256), exactly as the AVX2 kernel
    /// computes it (`vpmulhrsw`, then `vpaddw`, wrapping: the factors
    /// are chosen so that no level wraps).
    pub(crate) fn level(&self, code: usize) -> i16 {
        let (h, l) = ((code >> 4) & 15, code & 15);
        let product = (i32::from(self.span[h]) * i32::from(self.shape[l]) + (1 << 14)) >> 15;
        self.offset[h].wrapping_add(product as i16)
    }

    /// The 256 levels (C = 7: the first 128).
    pub(crate) fn levels(&self) -> [i16; 256] {
        core::array::from_fn(|code| self.level(code))
    }
}

impl IntTable {
    /// Whether the activations are int16 (every form but int8).
    pub(crate) fn wide(&self) -> bool {
        !matches!(self, IntTable::I8(_))
    }
}

/// The integer job: rows as in [`PackedRows`] (C <= 8, `cols` a
/// multiple of `block`, `group` a multiple of `block` or the whole row),
/// the integer table, and `batch` activation vectors, each quantized per
/// block of `block` (32 or 64) columns. Row `r` against vector `v` is
/// computed in eight lanes: per block `b`, `L_j(r, v, b)`, the exact
/// integer sum of the products of table integers and quantized
/// activations in lane `j` (`arch::generic::int_lane`), is added as
/// `lane_j += (L_j as f32) · (scale(r, g(b)) · act_scales[v · blocks + b])`
/// (a multiply, a multiply, an add: no FMA), and the lanes are summed in a
/// fixed order at the end (`arch::generic::int_lanes_sum`) into
/// `y[r · batch + v]`. Every path computes exactly this, so the paths
/// agree bit for bit, and a vector's result does not depend on the others
/// in its batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IntRows<'a> {
    pub(crate) rows: PackedRows<'a>,
    pub(crate) table: IntTable,
    pub(crate) block: usize,
    /// Scale groups per block: 1 (a block lies in one group), or 2, 4 or 8
    /// (C = 4, blocks of 64, groups of 32, 16 or 8, as two-level scales'
    /// sub-blocks): each of the kernel's int32 lanes then carries columns
    /// of one group ([`int_lane_group`]) and takes that group's scale.
    pub(crate) groups_per_block: usize,
    /// The quantized activations (`cols` of them): int8 for
    /// [`IntTable::I8`], int16 for [`IntTable::I16`], each span in the
    /// order of [`int_act_column`].
    /// Vector `v`'s activations start at `v · padded_cols()`.
    pub(crate) act8: &'a [i8],
    pub(crate) act16: &'a [i16],
    /// `blocks()` factors per vector: the activation block's step times the
    /// table's step.
    pub(crate) act_scales: &'a [f32],
    /// Activation vectors (at least 1).
    pub(crate) batch: usize,
}

impl IntRows<'_> {
    /// Activation blocks per vector: the columns in whole blocks.
    pub(crate) fn blocks(&self) -> usize {
        self.rows.cols.div_ceil(self.block.max(1))
    }

    /// Stored activations per vector (the columns padded to whole blocks).
    pub(crate) fn padded_cols(&self) -> usize {
        self.blocks() * self.block
    }
}

/// Columns per span of the stored activation order ([`int_act_column`]):
/// 64 at C = 4 with blocks of 64 (the kernel unpacks 64 codes from one
/// 32-byte load), otherwise 32.
pub(crate) fn int_act_span(bits: u32, block: usize) -> usize {
    if bits == 4 && block == 64 {
        64
    } else {
        32
    }
}

/// The column, within its span ([`int_act_span`]), of the quantized
/// activation stored at position `s` of that span.
///
/// The activations are quantized once per call, so they are stored in the
/// order in which the AVX2 kernel unpacks a span's codes, and the codes
/// need no reordering (a dot product does not depend on the order of its
/// terms). A span is one or two registers of 32 codes; position `p` of
/// register `k`:
/// - C = 1: the 4 bytes of 32 codes in each of 8 dword lanes, lane `j`
///   shifted right by `j`: `p = 4j + i` holds code `8i + j`;
/// - C = 2: the 8 bytes in each of 4 qword lanes, lane `j` shifted right by
///   `2j`: `p = 8j + i` holds code `4i + j`;
/// - C = 3: in order;
/// - C = 4, spans of 32: the 16 low nibbles, then the 16 high nibbles:
///   `p = i` holds code `2i`, `p = 16 + i` code `2i + 1`;
/// - C = 4, spans of 64: register 0 holds the 32 bytes' low nibbles (code
///   `2p`), register 1 their high nibbles (code `2p + 1`);
/// - int16 tables (`wide`) interleave each register's two 16-code halves
///   into words (`vpunpcklbw` / `vpunpckhbw` per 128-bit lane): its stored
///   activations are positions `0..8, 16..24`, then `8..16, 24..32`;
/// - C = 5..=8: in order (always int16).
pub(crate) fn int_act_column(bits: u32, wide: bool, span: usize, s: usize) -> usize {
    let (k, s) = (s / 32, s % 32);
    let p = if wide {
        match s {
            8..=15 => s + 8,
            16..=23 => s - 8,
            _ => s,
        }
    } else {
        s
    };
    match (bits, span) {
        (1, _) => 32 * k + 8 * (p % 4) + p / 4,
        (2, _) => 32 * k + 4 * (p % 8) + p / 8,
        (4, 64) => 2 * p + k,
        (4, _) => 32 * k + 2 * (p % 16) + p / 16,
        _ => 32 * k + p,
    }
}

/// Which part of a 64-code span's sums the stored activation `s` (0..64)
/// adds into: the AVX2 kernel keeps the products of a register's stored
/// positions 0..16 and 16..32 (its two `vpmaddwd`) apart when a block has
/// 4 or 8 scale groups, and adds them otherwise.
pub(crate) fn int_lane_part(s: usize) -> usize {
    (s % 32) / 16
}

/// The scale group, within its 64-column block, of lane `lane` of part
/// `part` ([`int_lane_part`]) at C = 4 with int16 tables and groups of
/// `group` (8, 16 or 32) columns: every column that lane carries lies in
/// that group (checked by the kernel tests).
pub(crate) fn int_lane_group(part: usize, lane: usize, group: usize) -> usize {
    int_act_column(4, true, 64, 16 * part + 2 * lane) / group
}

/// An integer kernel: `(job, y)`, `y[r · job.batch + v]`.
pub(crate) type GemvIntFn = fn(&IntRows<'_>, &mut [f32]);

/// A packed-weight decoder: `(job, start, out)` writes elements
/// `start..start + out.len()` of the row-major weight.
pub(crate) type DecodeFn = fn(&PackedRows<'_>, usize, &mut [f32]);

/// One code path (portable scalar, or AVX2+FMA): a table of kernels, and
/// the operators as methods that validate shapes and then run them.
///
/// [`Kernels::active`] is the path the crate-level functions use; the others
/// exist so that paths can be compared (and benchmarked) side by side.
pub struct Kernels {
    pub(crate) name: &'static str,
    pub(crate) relu: fn(&mut [f32]),
    pub(crate) relu6: fn(&mut [f32]),
    pub(crate) leaky_relu: fn(&mut [f32], f32),
    pub(crate) sigmoid: fn(&mut [f32]),
    pub(crate) tanh: fn(&mut [f32]),
    pub(crate) gelu: fn(&mut [f32]),
    pub(crate) gelu_tanh: fn(&mut [f32]),
    pub(crate) silu: fn(&mut [f32]),
    pub(crate) hardsigmoid: fn(&mut [f32]),
    pub(crate) hardswish: fn(&mut [f32]),
    pub(crate) add: fn(&[f32], &[f32], &mut [f32]),
    pub(crate) mul: fn(&[f32], &[f32], &mut [f32]),
    pub(crate) add_scalar: fn(&[f32], f32, &mut [f32]),
    pub(crate) mul_scalar: fn(&[f32], f32, &mut [f32]),
    pub(crate) affine: fn(&mut [f32], f32, f32),
    pub(crate) softmax: fn(&mut [f32], usize),
    pub(crate) layer_norm: fn(&mut [f32], usize, &[f32], &[f32], f32),
    pub(crate) matmul: MatmulFn,
    /// Batch-1 linear on packed rows, allocation-free.
    pub(crate) gemv_packed: GemvFn,
    /// Linear on packed rows with integer dot products (C <= 8), batch 1 to 64.
    pub(crate) gemv_int: GemvIntFn,
    /// Dequantization of packed rows, allocation-free.
    pub(crate) decode_packed: DecodeFn,
    /// The register-tile micro-kernel of the blocked GEMM (`crate::gemm`).
    pub(crate) gemm_tile: crate::gemm::TileFn,
    /// The rows of a `gemm_tile` tile with 16 columns (6: twelve AVX2
    /// accumulators; 12 with AVX-512's 32 registers). Only the tiling
    /// changes with it: each output is the same sum either way.
    pub(crate) gemm_rows16: usize,
    /// The rows of a `gemm_tile` tile with 32 columns, or 0 where the
    /// path has no such tile (AVX-512: 12, 24 zmm accumulators).
    pub(crate) gemm_rows32: usize,
    /// One channel plane of a depthwise convolution.
    pub(crate) depthwise_plane: crate::conv::DwFn,
    /// `out = a (op) b`, equal lengths.
    pub(crate) binary_same: fn(BinaryOp, &[f32], &[f32], &mut [f32]),
    /// `out = a (op) s`.
    pub(crate) binary_scalar_right: fn(BinaryOp, &[f32], f32, &mut [f32]),
    /// `out = s (op) b`.
    pub(crate) binary_scalar_left: fn(BinaryOp, f32, &[f32], &mut [f32]),
    /// Any unary operator in place.
    pub(crate) unary: fn(UnaryOp, &mut [f32]),
    /// One contiguous run folded to a value.
    pub(crate) reduce_row: fn(RowReduce, &[f32]) -> f32,
    /// `acc[i] = acc[i] (fold) x[i]`: the vertical step of a reduction
    /// whose innermost axis is kept.
    pub(crate) reduce_acc: fn(RowReduce, &mut [f32], &[f32]),
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Output rows per rayon task are a multiple of this (the AVX2 tile height).
#[cfg(feature = "parallel")]
const PAR_ROW_BLOCK: usize = 6;
/// Below this many multiply-adds a matmul stays on one thread.
#[cfg(feature = "parallel")]
const PAR_MIN_MACS: usize = 1 << 20;

macro_rules! unary_methods {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[inline]
        pub fn $name(&self, x: &mut [f32]) {
            (self.$name)(x)
        }
    )*};
}

impl Kernels {
    /// The path this process uses: AVX2+FMA when available (detected once,
    /// cached) unless `LSQR_FORCE_SCALAR` is set, else portable.
    #[inline]
    pub fn active() -> &'static Kernels {
        arch::active()
    }

    /// The portable scalar path (the reference).
    pub fn portable() -> &'static Kernels {
        &arch::SCALAR
    }

    /// The AVX2+FMA path, if this CPU supports it (with `std`: detected at
    /// run time; without: this build's target features). Ignores
    /// `LSQR_FORCE_SCALAR`.
    pub fn avx2() -> Option<&'static Kernels> {
        arch::avx2()
    }

    /// The AVX-512 path (the AVX2+FMA kernels, and AVX-512 F, BW, VL, VBMI
    /// and VNNI integer linear at batch 1), if this CPU supports it.
    /// Ignores `LSQR_FORCE_SCALAR`.
    pub fn avx512() -> Option<&'static Kernels> {
        arch::avx512()
    }

    /// The path's name: `"scalar"`, `"avx2+fma"` or `"avx512"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    unary_methods! {
        /// `max(x, 0)` in place (exact; NaN and `-0.0` pass through).
        relu;
        /// `min(max(x, 0), 6)` in place (exact).
        relu6;
        /// `1 / (1 + exp(-x))` in place.
        sigmoid;
        /// `tanh(x)` in place.
        tanh;
        /// GELU, erf form `0.5 x (1 + erf(x / sqrt 2))`, in place.
        gelu;
        /// GELU, tanh approximation
        /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, in place.
        gelu_tanh;
        /// SiLU / swish `x sigmoid(x)` in place.
        silu;
        /// Hard sigmoid `relu6(x + 3) / 6` in place (exact).
        hardsigmoid;
        /// Hard swish `x relu6(x + 3) / 6` in place (exact).
        hardswish;
    }

    /// `x` where `x >= 0`, `alpha x` where `x < 0`, in place (exact).
    #[inline]
    pub fn leaky_relu(&self, x: &mut [f32], alpha: f32) {
        (self.leaky_relu)(x, alpha)
    }

    /// Softmax over the last axis: `x` is rows of `axis_len` elements, each
    /// replaced by `exp(x - max) / sum(exp(x - max))`.
    pub fn softmax(&self, x: &mut [f32], axis_len: usize) -> Result<(), OpError> {
        check_rows("softmax", x.len(), axis_len)?;
        (self.softmax)(x, axis_len);
        Ok(())
    }

    /// Layer norm over the last axis: each row of `axis_len` elements becomes
    /// `(x - mean) / sqrt(var + eps) * gamma + beta` (biased variance;
    /// `gamma`, `beta` of `axis_len` elements).
    pub fn layer_norm(
        &self,
        x: &mut [f32],
        axis_len: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) -> Result<(), OpError> {
        const OP: &str = "layer_norm";
        check_rows(OP, x.len(), axis_len)?;
        shape::check_len(OP, "gamma", gamma.len(), &[axis_len])?;
        shape::check_len(OP, "beta", beta.len(), &[axis_len])?;
        shape::check_eps(OP, eps)?;
        (self.layer_norm)(x, axis_len, gamma, beta, eps);
        Ok(())
    }

    /// `x * scale[ch] + shift[ch]` in place, channel by channel, where `x`
    /// is planes of `plane` values cycling over the channels (`[n, c,
    /// plane]`): a batch norm whose statistics were folded once, as a
    /// runtime does when it plans, so that running allocates nothing.
    pub fn channel_affine(
        &self,
        x: &mut [f32],
        plane: usize,
        scale: &[f32],
        shift: &[f32],
    ) -> Result<(), OpError> {
        const OP: &str = "channel_affine";
        if scale.len() != shift.len() {
            return Err(OpError::LengthMismatch {
                op: OP,
                what: "shift",
                expected: scale.len(),
                actual: shift.len(),
            });
        }
        let per_image = plane
            .checked_mul(scale.len())
            .ok_or(OpError::BadParameter { op: OP, reason: "element count overflows usize" })?;
        if per_image == 0 || x.is_empty() {
            return Ok(());
        }
        if !x.len().is_multiple_of(per_image) {
            return Err(OpError::LengthMismatch {
                op: OP,
                what: "x",
                expected: x.len().next_multiple_of(per_image),
                actual: x.len(),
            });
        }
        for (i, p) in x.chunks_exact_mut(plane).enumerate() {
            let ch = i % scale.len();
            (self.affine)(p, scale[ch], shift[ch]);
        }
        Ok(())
    }

    /// Inference batch norm in place on `x` of `shape = [n, c, ...]` (rank at
    /// least 2, channels on axis 1): channel `ch` becomes `x * s + t` with
    /// `s = gamma / sqrt(var + eps)` and `t = beta - mean * s` (computed once
    /// per channel, identically on every path).
    pub fn batch_norm(
        &self,
        x: &mut [f32],
        shape: &[usize],
        p: &BatchNorm<'_>,
    ) -> Result<(), OpError> {
        const OP: &str = "batch_norm";
        if shape.len() < 2 {
            return Err(OpError::BadParameter {
                op: OP,
                reason: "shape must be [n, c, ...] (rank >= 2)",
            });
        }
        shape::check_len(OP, "x", x.len(), shape)?;
        let c = shape[1];
        for (what, v) in [("mean", p.mean), ("var", p.var), ("gamma", p.gamma), ("beta", p.beta)] {
            shape::check_len(OP, what, v.len(), &[c])?;
        }
        shape::check_eps(OP, p.eps)?;
        let spatial = shape::numel(OP, &shape[2..])?;
        if spatial == 0 || x.is_empty() {
            return Ok(());
        }
        let scale: Vec<f32> =
            p.gamma.iter().zip(p.var).map(|(&g, &v)| g / libm::sqrtf(v + p.eps)).collect();
        for (i, plane) in x.chunks_exact_mut(spatial).enumerate() {
            let ch = i % c;
            (self.affine)(plane, scale[ch], p.beta[ch] - p.mean[ch] * scale[ch]);
        }
        Ok(())
    }

    /// Elementwise `a + b` with NumPy broadcasting; returns the output and
    /// its shape.
    pub fn add(
        &self,
        a: &[f32],
        a_shape: &[usize],
        b: &[f32],
        b_shape: &[usize],
    ) -> Result<(Vec<f32>, Vec<usize>), OpError> {
        let f = Binary { op: "add", same: self.add, scalar: self.add_scalar, one: |x, y| x + y };
        shape::broadcast_binary(&f, a, a_shape, b, b_shape)
    }

    /// [`Kernels::add`] into `out`, which must hold exactly the broadcast
    /// shape's element count ([`crate::broadcast_shape`]). Allocates nothing
    /// on success; at most 16 dims.
    pub fn add_into(
        &self,
        a: &[f32],
        a_shape: &[usize],
        b: &[f32],
        b_shape: &[usize],
        out: &mut [f32],
    ) -> Result<(), OpError> {
        let f = Binary { op: "add", same: self.add, scalar: self.add_scalar, one: |x, y| x + y };
        shape::broadcast_binary_into(&f, a, a_shape, b, b_shape, out, shape::MAX_BROADCAST_RANK)
    }

    /// [`Kernels::mul`] into `out`; see [`Kernels::add_into`].
    pub fn mul_into(
        &self,
        a: &[f32],
        a_shape: &[usize],
        b: &[f32],
        b_shape: &[usize],
        out: &mut [f32],
    ) -> Result<(), OpError> {
        let f = Binary { op: "mul", same: self.mul, scalar: self.mul_scalar, one: |x, y| x * y };
        shape::broadcast_binary_into(&f, a, a_shape, b, b_shape, out, shape::MAX_BROADCAST_RANK)
    }

    /// Elementwise `a * b` with NumPy broadcasting; returns the output and
    /// its shape.
    pub fn mul(
        &self,
        a: &[f32],
        a_shape: &[usize],
        b: &[f32],
        b_shape: &[usize],
    ) -> Result<(Vec<f32>, Vec<usize>), OpError> {
        let f = Binary { op: "mul", same: self.mul, scalar: self.mul_scalar, one: |x, y| x * y };
        shape::broadcast_binary(&f, a, a_shape, b, b_shape)
    }

    /// `[m, k] x [k, n] -> [m, n]`, row-major.
    pub fn matmul(
        &self,
        a: &[f32],
        b: &[f32],
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<Vec<f32>, OpError> {
        let len = shape::numel("matmul", &[m, n])?;
        let mut out = vec![0.0; len];
        self.matmul_into(a, b, &mut out, m, k, n)?;
        Ok(out)
    }

    /// `[m, k] x [k, n]` into `out` (`m n` elements, overwritten), row-major.
    /// With the `parallel` feature, large products split their rows over
    /// rayon's pool (the result is identical: rows are independent).
    pub fn matmul_into(
        &self,
        a: &[f32],
        b: &[f32],
        out: &mut [f32],
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<(), OpError> {
        const OP: &str = "matmul";
        shape::check_len(OP, "a", a.len(), &[m, k])?;
        shape::check_len(OP, "b", b.len(), &[k, n])?;
        shape::check_len(OP, "out", out.len(), &[m, n])?;
        #[cfg(feature = "parallel")]
        if m >= 2 * PAR_ROW_BLOCK
            && n > 0
            && k > 0
            && m.saturating_mul(n).saturating_mul(k) >= PAR_MIN_MACS
        {
            use rayon::prelude::*;
            let threads = rayon::current_num_threads().max(1);
            let rows = m.div_ceil(threads).next_multiple_of(PAR_ROW_BLOCK);
            let kernel = self.matmul;
            out.par_chunks_mut(rows * n)
                .zip(a.par_chunks(rows * k))
                .for_each(|(c, a)| kernel(a, b, c, c.len() / n, k, n));
            return Ok(());
        }
        (self.matmul)(a, b, out, m, k, n);
        Ok(())
    }

    /// 2-D max pooling of an NCHW tensor; returns the output and its shape
    /// `[n, c, oh, ow]`. Padding is never selected (it is not a value); NaN
    /// propagates.
    pub fn max_pool2d(
        &self,
        input: &[f32],
        shape: [usize; 4],
        pool: &Pool2d,
    ) -> Result<(Vec<f32>, [usize; 4]), OpError> {
        pool_with("max_pool2d", input, shape, pool, generic::max_pool2d)
    }

    /// [`Kernels::max_pool2d`] into `out`, which must hold exactly the
    /// output's element count ([`Pool2d::output_shape`]); returns the output
    /// shape. Allocates nothing.
    pub fn max_pool2d_into(
        &self,
        input: &[f32],
        shape: [usize; 4],
        pool: &Pool2d,
        out: &mut [f32],
    ) -> Result<[usize; 4], OpError> {
        pool_into("max_pool2d", input, shape, pool, generic::max_pool2d, out)
    }

    /// 2-D average pooling of an NCHW tensor with `count_include_pad =
    /// false`: each output is the mean of the input elements its window
    /// covers (padding counts neither in the sum nor in the divisor). Returns
    /// the output and its shape `[n, c, oh, ow]`.
    pub fn avg_pool2d(
        &self,
        input: &[f32],
        shape: [usize; 4],
        pool: &Pool2d,
    ) -> Result<(Vec<f32>, [usize; 4]), OpError> {
        pool_with("avg_pool2d", input, shape, pool, generic::avg_pool2d)
    }

    /// [`Kernels::avg_pool2d`] into `out`; see [`Kernels::max_pool2d_into`].
    pub fn avg_pool2d_into(
        &self,
        input: &[f32],
        shape: [usize; 4],
        pool: &Pool2d,
        out: &mut [f32],
    ) -> Result<[usize; 4], OpError> {
        pool_into("avg_pool2d", input, shape, pool, generic::avg_pool2d, out)
    }

    /// The mean of each `[h, w]` plane of an NCHW tensor; output shape
    /// `[n, c, 1, 1]`.
    pub fn global_avg_pool2d(
        &self,
        input: &[f32],
        shape: [usize; 4],
    ) -> Result<(Vec<f32>, [usize; 4]), OpError> {
        let mut out = vec![0.0; shape::numel("global_avg_pool2d", &shape[..2])?];
        let out_shape = self.global_avg_pool2d_into(input, shape, &mut out)?;
        Ok((out, out_shape))
    }

    /// [`Kernels::global_avg_pool2d`] into `out` (`n * c` elements); returns
    /// the output shape. Allocates nothing.
    pub fn global_avg_pool2d_into(
        &self,
        input: &[f32],
        shape: [usize; 4],
        out: &mut [f32],
    ) -> Result<[usize; 4], OpError> {
        const OP: &str = "global_avg_pool2d";
        shape::check_len(OP, "input", input.len(), &shape)?;
        let [n, c, h, w] = shape;
        if h == 0 || w == 0 {
            return Err(OpError::BadParameter { op: OP, reason: "empty spatial plane" });
        }
        shape::check_len(OP, "out", out.len(), &[n, c])?;
        generic::global_avg_pool(input, out, h * w);
        Ok([n, c, 1, 1])
    }
}

/// Checks that `len` elements are whole rows of `axis_len`.
fn check_rows(op: &'static str, len: usize, axis_len: usize) -> Result<(), OpError> {
    if axis_len == 0 {
        return if len == 0 {
            Ok(())
        } else {
            Err(OpError::BadParameter { op, reason: "axis_len is 0 but x is not empty" })
        };
    }
    if !len.is_multiple_of(axis_len) {
        return Err(OpError::LengthMismatch {
            op,
            what: "x",
            expected: (len / axis_len + 1) * axis_len,
            actual: len,
        });
    }
    Ok(())
}

/// Validates a pooling call, then runs `kernel` into a fresh output.
fn pool_with(
    op: &'static str,
    input: &[f32],
    shape: [usize; 4],
    pool: &Pool2d,
    kernel: fn(&[f32], &mut [f32], &generic::PoolGeometry),
) -> Result<(Vec<f32>, [usize; 4]), OpError> {
    let g = pool.geometry(op, shape, input.len())?;
    let out_shape = [shape[0], shape[1], g.oh, g.ow];
    let mut out = vec![0.0; shape::numel(op, &out_shape)?];
    kernel(input, &mut out, &g);
    Ok((out, out_shape))
}

/// Validates a pooling call, then runs `kernel` into the caller's `out`.
fn pool_into(
    op: &'static str,
    input: &[f32],
    shape: [usize; 4],
    pool: &Pool2d,
    kernel: fn(&[f32], &mut [f32], &generic::PoolGeometry),
    out: &mut [f32],
) -> Result<[usize; 4], OpError> {
    let g = pool.geometry(op, shape, input.len())?;
    let out_shape = [shape[0], shape[1], g.oh, g.ow];
    shape::check_len(op, "out", out.len(), &out_shape)?;
    kernel(input, out, &g);
    Ok(out_shape)
}

#[cfg(test)]
mod lane_tests {
    use super::*;

    /// Every stored activation of a 64-code C = 4 span lands, in the
    /// kernel's sums, in a lane whose group ([`int_lane_group`]) is its
    /// column's group, for groups of 8, 16 and 32.
    #[test]
    fn each_lane_carries_one_group() {
        for group in [8, 16, 32] {
            for s in 0..64 {
                let column = int_act_column(4, true, 64, s % 64);
                let lane = crate::arch::generic::int_lane(true, s % 32);
                assert_eq!(int_lane_group(int_lane_part(s), lane, group), column / group, "{s}");
            }
        }
    }
}
