//! The encoder side of a codebook: sorted thresholds, searched without branches.
//!
//! A value's code is found by counting the thresholds it exceeds. Thresholds
//! are pre-adjusted f32 values so that one strict comparison, `x > t`,
//! implements both "nearest level" and "on a tie, the level nearer zero"
//! exactly for every f32 input (see [`tie_threshold`]). The same search also
//! serves the `seed` codec, whose thresholds are derived from the reference
//! formula instead of from midpoints.

use alloc::vec::Vec;

/// How the search result becomes a code.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Layout {
    /// Sign-magnitude: the search runs on |x|, and the code is
    /// `sign << (C-1) | (first_code + slot)`.
    SignMagnitude {
        /// Bit position of the sign (C - 1).
        sign_shift: u32,
        /// Whether a negative input whose magnitude encodes as slot 0 keeps
        /// its sign bit. The reference `seed` encoder does (its n = 1 for any
        /// M < 0); the other codecs emit the canonical +0 code.
        zero_keeps_sign: bool,
    },
    /// The search runs on x itself over all levels in ascending order.
    Sorted,
}

/// Sorted thresholds padded to `2^depth - 1` entries with +inf. Slot `i`
/// has code `first_code + i` (before the sign bit).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ThresholdTable {
    pub(crate) layout: Layout,
    /// Non-decreasing; `x` falls in slot `#{t : x > t}`.
    pub(crate) thresholds: Vec<f32>,
    /// Binary-search depth: `thresholds.len() == 2^depth - 1`.
    pub(crate) depth: u32,
    /// Number of real slots (one more than the real thresholds).
    slots: usize,
    /// Code of slot 0.
    pub(crate) first_code: u16,
    /// The first four levels of the binary search, as 8-lane rows for the
    /// SIMD paths: row k holds level k's 2^k candidate thresholds,
    /// `thresholds[j * 2^(depth-k) + 2^(depth-k-1) - 1]` for j < 2^k.
    pub(crate) level_lanes: [[f32; 8]; 4],
}

impl ThresholdTable {
    /// Builds a table from the real thresholds (one fewer than the slots).
    pub(crate) fn new(layout: Layout, mut thresholds: Vec<f32>, first_code: u16) -> Self {
        debug_assert!(thresholds.windows(2).all(|w| w[0] <= w[1]));
        let slots = thresholds.len() + 1;
        let depth = usize::BITS - thresholds.len().leading_zeros();
        thresholds.resize((1usize << depth) - 1, f32::INFINITY);
        let mut level_lanes = [[0.0f32; 8]; 4];
        for (k, lanes) in level_lanes.iter_mut().enumerate().take(depth.min(4) as usize) {
            let span = 1usize << (depth as usize - k);
            for (j, lane) in lanes.iter_mut().enumerate().take(1 << k) {
                *lane = thresholds[j * span + span / 2 - 1];
            }
        }
        Self { layout, thresholds, depth, slots, first_code, level_lanes }
    }

    /// Builds the table for "nearest level, ties toward zero" over levels
    /// given in ascending order, slot `i` holding `levels[i]`.
    pub(crate) fn nearest(layout: Layout, levels: &[f32], first_code: u16) -> Self {
        let thresholds = levels.windows(2).map(|w| tie_threshold(w[0], w[1])).collect();
        Self::new(layout, thresholds, first_code)
    }

    /// The slot of `x`: the number of thresholds strictly below it.
    #[inline(always)]
    fn slot(&self, x: f32) -> usize {
        let t = &self.thresholds[..];
        let mut idx = 0usize;
        let mut step = 1usize << self.depth;
        while step > 1 {
            step >>= 1;
            // Branch-free: the compiler turns this into a conditional add.
            idx += usize::from(x > t[idx + step - 1]) * step;
        }
        // Padding thresholds are +inf, so no finite x passes them.
        debug_assert!(idx < self.slots || !x.is_finite());
        idx.min(self.slots - 1)
    }

    /// Code of one normalized value `x` (already divided by its scale).
    #[inline(always)]
    pub(crate) fn encode(&self, x: f32) -> u16 {
        match self.layout {
            Layout::Sorted => self.first_code + self.slot(x) as u16,
            Layout::SignMagnitude { sign_shift, zero_keeps_sign } => {
                let slot = self.slot(x.abs());
                let negative = x < 0.0 && (zero_keeps_sign || slot != 0);
                (self.first_code + slot as u16) | (u16::from(negative) << sign_shift)
            }
        }
    }

    /// Encodes `xs[i] * inv_scale` into `out[i]`, on the fastest path this
    /// CPU has.
    pub(crate) fn encode_scaled(&self, xs: &[f32], inv_scale: f32, out: &mut [u16]) {
        crate::arch::encode_scaled(self, xs, inv_scale, out);
    }

    /// The portable path of [`ThresholdTable::encode_scaled`], also the
    /// reference the SIMD paths are tested against.
    pub(crate) fn encode_scaled_generic(&self, xs: &[f32], inv_scale: f32, out: &mut [u16]) {
        for (o, &x) in out.iter_mut().zip(xs) {
            *o = self.encode(x * inv_scale);
        }
    }
}

/// The f32 threshold `t` between adjacent levels `lo <= hi` such that, for
/// every f32 `x`, `x > t` exactly when `x` should take `hi`: `x` is nearer
/// `hi`, or equally near and `hi` is the level nearer zero (between levels
/// of equal magnitude, the tie goes to `lo`).
///
/// `t` is the largest f32 not above the true midpoint `m`, or one below
/// that when `m` is itself an f32 and the tie goes to `hi`. The sum
/// `lo + hi` is exact in f64 unless their magnitudes are ~2^29 apart, so
/// its rounding error is recovered (TwoSum): when the f64 midpoint is an
/// f32 but the true one lies just below it, the threshold steps down too.
pub(crate) fn tie_threshold(lo: f32, hi: f32) -> f32 {
    let (a, b) = (f64::from(lo), f64::from(hi));
    let sum = a + b;
    let b_part = sum - a;
    let error = (a - (sum - b_part)) + (b - b_part);
    let mid = sum / 2.0;
    let down = f32_round_down(mid);
    let on_f32 = f64::from(down) == mid;
    let tie_goes_up = hi.abs() < lo.abs();
    if on_f32 && (error < 0.0 || (error == 0.0 && tie_goes_up)) {
        next_down(down)
    } else {
        down
    }
}

/// The largest f32 not above `x`.
fn f32_round_down(x: f64) -> f32 {
    let r = x as f32;
    if f64::from(r) > x {
        next_down(r)
    } else {
        r
    }
}

/// The next f32 toward -inf (for finite inputs).
pub(crate) fn next_down(x: f32) -> f32 {
    if x == 0.0 {
        return -f32::from_bits(1);
    }
    let bits = x.to_bits();
    f32::from_bits(if x > 0.0 { bits - 1 } else { bits + 1 })
}

/// The next f32 toward +inf (for finite inputs).
pub(crate) fn next_up(x: f32) -> f32 {
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let bits = x.to_bits();
    f32::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn tie_goes_toward_zero() {
        let lv = [-1.0f32, -0.5, 0.0, 0.5, 1.0];
        let t = ThresholdTable::nearest(Layout::Sorted, &lv, 0);
        assert_eq!(t.encode(0.25), 2);
        assert_eq!(t.encode(-0.25), 2);
        assert_eq!(t.encode(0.75), 3);
        assert_eq!(t.encode(-0.75), 1);
        assert_eq!(t.encode(next_up(0.25)), 3);
        assert_eq!(t.encode(next_down(-0.25)), 1);
        assert_eq!(t.encode(7.0), 4);
        assert_eq!(t.encode(-7.0), 0);
    }

    #[test]
    fn inexact_f64_midpoint_is_handled() {
        // -1 + 1e-30 is not exact in f64; the true midpoint is just below -0.5.
        let lv = [-1.0f32, 1e-30, 0.5, 1.0];
        let t = ThresholdTable::nearest(Layout::Sorted, &lv, 0);
        assert_eq!(t.encode(-0.5), 0);
        assert_eq!(t.encode(next_up(-0.5)), 1);
    }

    #[test]
    fn straddling_zero_tie_picks_smaller_magnitude() {
        let lv = [-0.25f32, 0.5];
        let t = ThresholdTable::nearest(Layout::Sorted, &lv, 0);
        assert_eq!(t.encode(0.125), 0);
        assert_eq!(t.encode(next_up(0.125)), 1);
        let lv = [-0.5f32, 0.25];
        let t = ThresholdTable::nearest(Layout::Sorted, &lv, 0);
        assert_eq!(t.encode(-0.125), 1);
        assert_eq!(t.encode(next_down(-0.125)), 0);
    }
}
