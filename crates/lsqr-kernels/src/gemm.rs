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
//! The loops, outermost first:
//! - `jc`: `NC` = 256 columns of `B` and `C` at a time; `B` is packed for
//!   them at full depth, in `KC`-deep blocks of panels of `nr` columns
//!   (`[kc][nr]` each, zero padded);
//! - `ic`: `MC` = 72 rows of `A`. Their `MC x NC` block of `C` is
//!   accumulated in scratch (contiguous, so tiles add with vector
//!   stores) and added into `C` once at the end: linear's `C` is `yᵀ`,
//!   whose columns are rows of `y` 16 KiB apart, and updating it tile by
//!   tile thrashed L1 (every line of a tile in the same cache set);
//! - `pc`: `KC` = 256 of depth: the rows' `KC` block is decoded into
//!   scratch `[mc][kc]` (72 KiB, L2), while the next block's packed bytes
//!   are prefetched (short pieces of many rows defeat the hardware
//!   prefetcher: without it the decode waited on DRAM);
//! - `jr` over the panels (16 KiB each: L1), `ir` over register tiles: the
//!   micro-kernel (`Kernels::gemm_tile`) computes an `mr x nr` tile over
//!   `kc`, which is added into the `C` block.
//!
//! So each weight element is decoded once per `NC` columns of `B` (once
//! per call for a linear of batch <= 256), and never is the whole weight
//! expanded. `A` is not repacked: the micro-kernel broadcasts its elements
//! from `mr` rows `kc` apart, as the decoder writes them (plain f32
//! weights are copied the same way, which also keeps their rows close).
//!
//! Tiles are `6 x 16` (12 AVX accumulators) when `C` has more than 8
//! columns, else `12 x 8` (still 12 accumulators: a batch-8 linear keeps
//! the FMA units as busy as a wide one).

use crate::packed::PackedWeight;
use crate::{Kernels, OpError};

/// Depth of one block.
pub(crate) const KC: usize = 256;
/// Rows of `A` decoded per block (a multiple of both tile heights).
pub(crate) const MC: usize = 72;
/// Columns of `B` packed per block (a multiple of both tile widths).
pub(crate) const NC: usize = 256;
/// Capacity of one register tile's output (`12 x 32`, AVX-512's widest).
pub(crate) const TILE: usize = 384;

/// A micro-kernel: `(a, lda, b, kc, mr, nr, out)` sets
/// `out[i * nr + j] = Σ_{p < kc} a[i * lda + p] * b[p * nr + j]` for
/// `i < mr`, `j < nr`; `nr` is 8 (then `mr <= 12`), 16 (`mr <=
/// Kernels::gemm_rows16`) or 32 (`mr <= Kernels::gemm_rows32`).
pub(crate) type TileFn = fn(&[f32], usize, &[f32], usize, usize, usize, &mut [f32; TILE]);

/// `(nr, mr)`: the tile shape for a product with `n` columns on `kern`.
fn tile_shape(kern: &Kernels, n: usize) -> (usize, usize) {
    if n <= 8 {
        (8, 12)
    } else if n >= 32 && kern.gemm_rows32 > 0 {
        (32, kern.gemm_rows32.clamp(1, TILE / 32))
    } else {
        (16, kern.gemm_rows16.clamp(1, TILE / 16))
    }
}

/// The depth of the GEMM's blocks for a depth of `k`: at most [`KC`], and
/// as even as the blocks can be (257 is two blocks of 129, not 256 and
/// 1: Magika's dense layer over 257 byte features spent a whole pass of
/// packing and tiles on its last column).
fn depth_block(k: usize) -> usize {
    k.div_ceil(k.div_ceil(KC).max(1)).max(1)
}

/// The widest panel [`tile_shape`] takes for `n` columns on any kernel
/// table, so that [`scratch_len`] fits them all.
fn widest_panel(n: usize) -> usize {
    match n {
        0..=8 => 8,
        9..=31 => 16,
        _ => 32,
    }
}

/// Scratch (`f32` values) [`gemm`] needs for an `m x k` by `k x n`
/// product: `B` packed for `NC` columns at full depth (`256 k` at most),
/// one decoded `MC x KC` block of `A`, and the `MC x NC` block of `C`
/// being accumulated. Saturates instead of overflowing (such a length can
/// never be provided, so the call then fails cleanly).
pub(crate) fn scratch_len(m: usize, k: usize, n: usize) -> usize {
    if m == 0 || k == 0 || n == 0 {
        return 0;
    }
    let ncp = n.min(NC).next_multiple_of(widest_panel(n));
    ncp.saturating_mul(k).saturating_add(m.min(MC) * k.min(KC)).saturating_add(m.min(MC) * ncp)
}

/// The output matrix: element `(i, j)` is `data[i * rs + j * cs]`.
pub(crate) struct Out<'a> {
    pub data: &'a mut [f32],
    pub rs: usize,
    pub cs: usize,
}

impl Out<'_> {
    /// Adds the `mr x nv` block `src` (row stride `ld`) at `(i0, j0)`,
    /// walking whichever of `C`'s axes is contiguous innermost.
    fn add_block(&mut self, src: &[f32], ld: usize, i0: usize, j0: usize, mr: usize, nv: usize) {
        let (rs, cs) = (self.rs, self.cs);
        if rs == 1 && cs != 1 {
            for j in 0..nv {
                let col = &mut self.data[i0 + (j0 + j) * cs..][..mr];
                for (i, o) in col.iter_mut().enumerate() {
                    *o += src[i * ld + j];
                }
            }
        } else {
            for i in 0..mr {
                for j in 0..nv {
                    self.data[(i0 + i) * rs + (j0 + j) * cs] += src[i * ld + j];
                }
            }
        }
    }

    /// Adds the `mr x nv` top-left of `tile` (row stride `nr`) at
    /// `(i0, j0)` of a block with contiguous rows (`cs == 1`).
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
        for i in 0..mr {
            let row = &mut self.data[(i0 + i) * self.rs + j0..][..nv];
            for (o, &t) in row.iter_mut().zip(&tile[i * nr..]) {
                *o += t;
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
    let kb = depth_block(k);
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
    let (nr, mr_max) = tile_shape(kern, n);
    let ncp_max = n.min(NC).next_multiple_of(nr);
    let (bbuf, rest) = scratch.split_at_mut(ncp_max * k);
    let (abuf, cbuf) = rest.split_at_mut(m.min(MC) * k.min(KC));
    let mut tile = [0.0f32; TILE];
    if c.cs == 1 {
        return gemm_rows(kern, w, row0, m, n, pack_b, c, bbuf, abuf, nr, mr_max);
    }
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let ncp = nc.next_multiple_of(nr);
        // B[.., jc..jc + nc], every depth block: block pc starts at pc ncp.
        for pc in (0..k).step_by(kb) {
            let kc = kb.min(k - pc);
            pack_b(pc, kc, jc, nc, nr, &mut bbuf[pc * ncp..(pc + kc) * ncp]);
        }
        for ic in (0..m).step_by(MC) {
            let mc = MC.min(m - ic);
            let cblock = &mut cbuf[..mc * ncp];
            cblock.fill(0.0);
            let mut acc = Out { data: cblock, rs: ncp, cs: 1 };
            for pc in (0..k).step_by(kb) {
                let kc = kb.min(k - pc);
                // The next block (the same rows' next depth block, or the
                // next rows' first) is decoded after this one's
                // multiply-adds: start loading its bytes now.
                let (next_ic, next_pc) = if pc + kb < k { (ic, pc + kb) } else { (ic + MC, 0) };
                for r in next_ic..(next_ic + MC).min(m) {
                    w.prefetch(row0 + r, next_pc, kb.min(k - next_pc));
                }
                let (far_ic, far_pc) =
                    if next_pc + kb < k { (next_ic, next_pc + kb) } else { (next_ic + MC, 0) };
                for r in far_ic..(far_ic + MC).min(m) {
                    w.prefetch(row0 + r, far_pc, kb.min(k - far_pc));
                }
                let a = &mut abuf[..mc * kc];
                w.decode_block(kern, row0 + ic, pc, kc, a)?;
                let bblock = &bbuf[pc * ncp..(pc + kc) * ncp];
                for (jr, bp) in bblock.chunks_exact(nr * kc).enumerate() {
                    let mut ir = 0;
                    while ir < mc {
                        let mr = mr_max.min(mc - ir);
                        (kern.gemm_tile)(&a[ir * kc..], kc, bp, kc, mr, nr, &mut tile);
                        acc.add_tile(&tile, nr, ir, jr * nr, mr, nr);
                        ir += mr;
                    }
                }
            }
            c.add_block(&cbuf[..mc * ncp], ncp, ic, jc, mc, nc);
        }
    }
    Ok(())
}

/// [`gemm`] when `C`'s rows are contiguous (`cs == 1`: the convolutions'
/// `[out_channels, pixels]`). Depth blocks are the middle loop: `B` is
/// packed one `KC x NC` block at a time (256 KiB: it stays in L2, where
/// the full-depth `B` of a 3x3 conv over 96 channels, 864 KiB, did not)
/// and tiles are added straight into `C`. Each weight block is still
/// decoded once per `NC` columns. The sums per output are the same
/// tiles in the same depth order, added onto `C` one by one.
#[allow(clippy::too_many_arguments)]
fn gemm_rows(
    kern: &Kernels,
    w: &PackedWeight<'_>,
    row0: usize,
    m: usize,
    n: usize,
    pack_b: PackB<'_>,
    mut c: Out<'_>,
    bbuf: &mut [f32],
    abuf: &mut [f32],
    nr: usize,
    mr_max: usize,
) -> Result<(), OpError> {
    let k = w.cols();
    let kb = depth_block(k);
    let mut tile = [0.0f32; TILE];
    // Fewer row blocks than column blocks (a conv with few output
    // channels over many pixels): each weight block is decoded once and
    // `B` packed once per row block, instead of the weight decoded once
    // per column block. The same tiles are added to `C` in the same depth
    // order either way.
    if m.div_ceil(MC) <= n.div_ceil(NC) {
        for pc in (0..k).step_by(kb) {
            let kc = kb.min(k - pc);
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                for r in ic + MC..(ic + 2 * MC).min(m) {
                    w.prefetch(row0 + r, pc, kc);
                }
                let a = &mut abuf[..mc * kc];
                w.decode_block(kern, row0 + ic, pc, kc, a)?;
                let a = &*a;
                for jc in (0..n).step_by(NC) {
                    let nc = NC.min(n - jc);
                    let ncp = nc.next_multiple_of(nr);
                    let bblock = &mut bbuf[..kc * ncp];
                    pack_b(pc, kc, jc, nc, nr, bblock);
                    let bblock = &*bblock;
                    add_tiles(kern, a, kc, mc, bblock, nr, mr_max, nc, ic, jc, &mut c, &mut tile);
                }
            }
        }
        return Ok(());
    }
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let ncp = nc.next_multiple_of(nr);
        for pc in (0..k).step_by(kb) {
            let kc = kb.min(k - pc);
            let bblock = &mut bbuf[..kc * ncp];
            pack_b(pc, kc, jc, nc, nr, bblock);
            let bblock = &*bblock;
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                // The next rows' bytes of this depth block, decoded next.
                for r in ic + MC..(ic + 2 * MC).min(m) {
                    w.prefetch(row0 + r, pc, kc);
                }
                let a = &mut abuf[..mc * kc];
                w.decode_block(kern, row0 + ic, pc, kc, a)?;
                add_tiles(kern, a, kc, mc, bblock, nr, mr_max, nc, ic, jc, &mut c, &mut tile);
            }
        }
    }
    Ok(())
}

/// The register tiles of one decoded `mc x kc` block `a` times the packed
/// `kc x nc` block `bblock`, each added into `C` at `(ic, jc)` + its offset.
#[allow(clippy::too_many_arguments)]
#[inline]
fn add_tiles(
    kern: &Kernels,
    a: &[f32],
    kc: usize,
    mc: usize,
    bblock: &[f32],
    nr: usize,
    mr_max: usize,
    nc: usize,
    ic: usize,
    jc: usize,
    c: &mut Out<'_>,
    tile: &mut [f32; TILE],
) {
    for (jr, bp) in bblock.chunks_exact(nr * kc).enumerate() {
        let j0 = jr * nr;
        let nv = nr.min(nc - j0.min(nc));
        if nv == 0 {
            break;
        }
        let mut ir = 0;
        while ir < mc {
            let mr = mr_max.min(mc - ir);
            (kern.gemm_tile)(&a[ir * kc..], kc, bp, kc, mr, nr, tile);
            c.add_tile(tile, nr, ic + ir, jc + j0, mr, nv);
            ir += mr;
        }
    }
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
    // Eight rows of `x` at a time, written a panel row (`nr` values) at a
    // time: one row after another, every store went `nr` floats on, a
    // new cache line each (Magika's 2048 x 257 input took 0.22 ms).
    for (panel, dst) in out.chunks_exact_mut(nr * kc).enumerate() {
        let j0 = panel * nr;
        for jj0 in (0..nr).step_by(8) {
            let rows: [Option<&[f32]>; 8] = core::array::from_fn(|r| {
                let j = j0 + jj0 + r;
                (jj0 + r < nr && j < nc).then(|| &x[(jc + j) * ld + pc..][..kc])
            });
            for (p, drow) in dst.chunks_exact_mut(nr).enumerate() {
                for (r, row) in rows.iter().enumerate().take(nr - jj0) {
                    drow[jj0 + r] = row.map_or(0.0, |row| row[p]);
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
