//! Blocked f32 GEMM whose left operand is a weight's rows, decoded a block
//! at a time: the engine of batch > 1 [`crate::packed::linear`] and of the
//! im2col convolutions.
//!
//! `C[i, j] += Σ_p A[i, p] B[p, j]`, where `A` is rows `row0..row0 + m` of
//! a [`PackedWeight`] (depth `K` = its columns), `B` is produced by a
//! packing callback (`x` transposed for linear, im2col patches for conv),
//! and `C` is addressed with arbitrary row and column strides (linear
//! writes `Cᵀ` into `y[batch, out]`, conv writes `[out_channels, pixels]`).
//!
//! The loop order is Goto/BLIS's:
//! - `jc`: `NC` = 256 columns of `B` and `C` at a time;
//! - `pc`: `KC` = 256 of depth: the `KC x NC` block of `B` is packed into
//!   panels of `nr` columns (`[kc][nr]` each, zero padded; 256 KiB, L2);
//! - `ic`: `MC` = 72 rows of `A`, decoded into scratch `[mc][kc]` (72 KiB,
//!   L2), or read in place from a plain f32 weight;
//! - `jr` over the panels (16 KiB each: L1), `ir` over register tiles: the
//!   micro-kernel (`Kernels::gemm_tile`) computes an `mr x nr` tile over
//!   `kc`, which is then added into `C`.
//!
//! So each weight element is decoded once per `NC` columns of `B` (once
//! per call for a linear of batch <= 256), and never is the whole weight
//! expanded. `A` is not repacked: the micro-kernel broadcasts its elements
//! from `mr` rows `lda` apart, which the decoder writes directly.
//!
//! Tiles are `6 x 16` (12 AVX accumulators) when `C` has more than 8
//! columns, else `12 x 8` (still 12 accumulators: a batch-8 linear keeps
//! the FMA units as busy as a wide one).

use crate::packed::{PackedWeight, Storage};
use crate::{Kernels, OpError};

/// Depth of one block.
pub(crate) const KC: usize = 256;
/// Rows of `A` decoded per block (a multiple of both tile heights).
pub(crate) const MC: usize = 72;
/// Columns of `B` packed per block (a multiple of both tile widths).
pub(crate) const NC: usize = 256;
/// Capacity of one register tile's output (`12 x 8 = 6 x 16`).
pub(crate) const TILE: usize = 192;

/// A micro-kernel: `(a, lda, b, kc, mr, nr, out)` sets
/// `out[i * nr + j] = Σ_{p < kc} a[i * lda + p] * b[p * nr + j]` for
/// `i < mr`, `j < nr`; `nr` is 8 (then `mr <= 12`) or 16 (`mr <= 6`).
pub(crate) type TileFn = fn(&[f32], usize, &[f32], usize, usize, usize, &mut [f32; TILE]);

/// A decode kernel: `(table, codes, scale, out)` sets
/// `out[i] = table[codes[i]] * scale` (`table.len()` a power of two).
pub(crate) type DecodeFn = fn(&[f32], &[u16], f32, &mut [f32]);

/// `(nr, mr)`: the tile shape for a product with `n` columns.
fn tile_shape(n: usize) -> (usize, usize) {
    if n <= 8 {
        (8, 12)
    } else {
        (16, 6)
    }
}

/// Scratch (`f32` values) [`gemm`] needs for an `m x k` by `k x n`
/// product: one packed block of `B` and one decoded block of `A`. Bounded
/// by `NC KC + MC KC` whatever the sizes, so it cannot overflow.
pub(crate) fn scratch_len(m: usize, k: usize, n: usize) -> usize {
    if m == 0 || k == 0 || n == 0 {
        return 0;
    }
    let (nr, _) = tile_shape(n);
    let kc = k.min(KC);
    n.min(NC).next_multiple_of(nr) * kc + m.min(MC) * kc
}

/// The output matrix: element `(i, j)` is `data[i * rs + j * cs]`.
pub(crate) struct Out<'a> {
    pub data: &'a mut [f32],
    pub rs: usize,
    pub cs: usize,
}

impl Out<'_> {
    /// Adds the `mr x nv` top-left of `tile` (row stride `nr`) at `(i0, j0)`.
    #[inline]
    fn add_tile(
        &mut self,
        tile: &[f32; TILE],
        nr: usize,
        i0: usize,
        j0: usize,
        mr: usize,
        nv: usize,
    ) {
        let (rs, cs) = (self.rs, self.cs);
        if cs == 1 {
            for i in 0..mr {
                let row = &mut self.data[(i0 + i) * rs + j0..][..nv];
                for (o, &t) in row.iter_mut().zip(&tile[i * nr..]) {
                    *o += t;
                }
            }
        } else if rs == 1 {
            for j in 0..nv {
                let col = &mut self.data[i0 + (j0 + j) * cs..][..mr];
                for (i, o) in col.iter_mut().enumerate() {
                    *o += tile[i * nr + j];
                }
            }
        } else {
            for i in 0..mr {
                for j in 0..nv {
                    self.data[(i0 + i) * rs + (j0 + j) * cs] += tile[i * nr + j];
                }
            }
        }
    }
}

/// A `B` packer: `(pc, kc, jc, nc, nr, out)` writes
/// `B[pc..pc + kc, jc..jc + nc]` into `out` as `ceil(nc / nr)` panels of
/// `[kc][nr]`, zeros past column `nc`.
pub(crate) type PackB<'p> = &'p (dyn Fn(usize, usize, usize, usize, usize, &mut [f32]) + Sync);

/// `C += A B` with `A` rows `row0..row0 + m` of `w` (`K = w.cols()`), `B`
/// `K x n` from `pack_b`; `scratch` holds at least
/// [`scratch_len`]`(m, K, n)` values. Allocates nothing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    kern: &Kernels,
    w: &PackedWeight<'_>,
    row0: usize,
    m: usize,
    n: usize,
    pack_b: PackB<'_>,
    mut c: Out<'_>,
    scratch: &mut [f32],
) -> Result<(), OpError> {
    const OP: &str = "gemm";
    let k = w.cols();
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    if row0.checked_add(m).is_none_or(|end| end > w.rows()) {
        return Err(OpError::BadParameter { op: OP, reason: "rows outside the weight" });
    }
    let last = (m - 1)
        .checked_mul(c.rs)
        .and_then(|r| (n - 1).checked_mul(c.cs).and_then(|s| r.checked_add(s)));
    if last.is_none_or(|l| l >= c.data.len()) {
        return Err(OpError::BadParameter { op: OP, reason: "output smaller than its shape" });
    }
    let needed = scratch_len(m, k, n);
    if scratch.len() < needed {
        return Err(OpError::LengthMismatch {
            op: OP,
            what: "scratch",
            expected: needed,
            actual: scratch.len(),
        });
    }
    let (nr, mr_max) = tile_shape(n);
    let kc_max = k.min(KC);
    let (bbuf, abuf) = scratch.split_at_mut(n.min(NC).next_multiple_of(nr) * kc_max);
    let mut tile = [0.0f32; TILE];
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let panels = nc.div_ceil(nr);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let bblock = &mut bbuf[..panels * nr * kc];
            pack_b(pc, kc, jc, nc, nr, bblock);
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                let (a, lda): (&[f32], usize) = match w.storage() {
                    Storage::Plain(d) => (&d[(row0 + ic) * k + pc..], k),
                    Storage::Quantized(_) => {
                        for (i, row) in abuf[..mc * kc].chunks_exact_mut(kc).enumerate() {
                            w.decode_range(kern, row0 + ic + i, pc, row)?;
                        }
                        (&abuf[..mc * kc], kc)
                    }
                };
                for (jr, bp) in bblock.chunks_exact(nr * kc).enumerate() {
                    let nv = nr.min(nc - jr * nr);
                    let mut ir = 0;
                    while ir < mc {
                        let mr = mr_max.min(mc - ir);
                        (kern.gemm_tile)(&a[ir * lda..], lda, bp, kc, mr, nr, &mut tile);
                        c.add_tile(&tile, nr, ic + ir, jc + jr * nr, mr, nv);
                        ir += mr;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Packs `B[p, j] = x[(jc + j) * ld + pc + p]`: the rows of a row-major
/// `x` (`[n, ld]`) become the columns of `B` (linear's `xᵀ`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_rows_transposed(
    x: &[f32],
    ld: usize,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    nr: usize,
    out: &mut [f32],
) {
    for (panel, dst) in out.chunks_exact_mut(nr * kc).enumerate() {
        for jj in 0..nr {
            let j = panel * nr + jj;
            if j < nc {
                let src = &x[(jc + j) * ld + pc..][..kc];
                for (d, &v) in dst[jj..].iter_mut().step_by(nr).zip(src) {
                    *d = v;
                }
            } else {
                for d in dst[jj..].iter_mut().step_by(nr) {
                    *d = 0.0;
                }
            }
        }
    }
}

/// The portable micro-kernel (see [`TileFn`]): each output a
/// left-to-right sum over `p`, as the naive product.
pub(crate) fn tile_portable(
    a: &[f32],
    lda: usize,
    b: &[f32],
    kc: usize,
    mr: usize,
    nr: usize,
    out: &mut [f32; TILE],
) {
    if nr == 0 {
        return;
    }
    for i in 0..mr.min(TILE / nr) {
        let row = &mut out[i * nr..(i + 1) * nr];
        row.fill(0.0);
        let a_row = a.get(i * lda..).unwrap_or(&[]);
        for (&av, b_row) in a_row.iter().take(kc).zip(b.chunks_exact(nr)) {
            for (o, &bv) in row.iter_mut().zip(b_row) {
                *o += av * bv;
            }
        }
    }
}

/// The portable decode kernel (see [`DecodeFn`]).
pub(crate) fn decode_portable(table: &[f32], codes: &[u16], scale: f32, out: &mut [f32]) {
    let mask = table.len().wrapping_sub(1);
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = table[usize::from(c) & mask] * scale;
    }
}
