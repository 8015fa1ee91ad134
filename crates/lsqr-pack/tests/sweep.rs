//! Deterministic exhaustive sweep: every implementation (dispatch, scalar,
//! and every SIMD path the CPU supports), every width 1..=16, every length
//! 0..=300, checked byte-for-byte against the bitvec reference.

mod common;

use common::{check_one, exact, for_each_impl, Rng};
use lsqr_pack::reference;

fn sweep(pattern: impl Fn(&mut Rng, usize, u32) -> Vec<u16>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for width in 1..=16u32 {
        for n in 0..=300usize {
            let codes = pattern(&mut rng, n, width);
            let expected = reference::pack(&codes, width).unwrap();
            let ref_all = reference::unpack(&expected, width, n).unwrap();
            assert_eq!(ref_all, codes, "reference round trip C={width} n={n}");
            let first = (rng.next() % (n as u64 + 1)) as usize;
            for_each_impl(|imp| check_one(imp, &codes, width, first, &expected, &ref_all));
        }
    }
}

#[test]
fn sweep_random_codes() {
    sweep(|rng, n, width| rng.codes(n, width));
}

#[test]
fn sweep_all_ones_codes() {
    // Maximal codes catch masks that are one bit short and stray high bits.
    sweep(|_, n, width| vec![((1u32 << width) - 1) as u16; n]);
}

#[test]
fn sweep_alternating_extreme_codes() {
    // Zero and maximal codes alternating (and in runs of three), so every
    // bit boundary sees both extremes.
    sweep(|_, n, width| {
        let max = ((1u32 << width) - 1) as u16;
        (0..n).map(|i| if (i % 2 == 0) ^ (i % 7 < 3) { max } else { 0 }).collect()
    });
}

#[test]
fn unpack_from_every_offset() {
    let mut rng = Rng(12345);
    for width in 1..=16u32 {
        let n = 200;
        let codes = rng.codes(n, width);
        let packed = exact(&reference::pack(&codes, width).unwrap());
        for first in 0..n {
            for_each_impl(|imp| {
                let mut out = exact(&vec![0u16; n - first]);
                imp.unpack(&packed, width, first, &mut out).unwrap();
                assert_eq!(&out[..], &codes[first..], "{} C={width} first={first}", imp.name);
            });
        }
    }
}

#[test]
fn get_every_index() {
    let mut rng = Rng(777);
    for width in 1..=16u32 {
        let codes = rng.codes(300, width);
        let packed = reference::pack(&codes, width).unwrap();
        for (i, &c) in codes.iter().enumerate() {
            assert_eq!(lsqr_pack::get(&packed, width, i), Ok(c), "C={width} i={i}");
        }
    }
}

#[test]
fn large_inputs_all_paths() {
    // Long enough to exercise the SIMD main loops many times over.
    let mut rng = Rng(4242);
    for width in 1..=16u32 {
        let n = 5000 + width as usize;
        let codes = rng.codes(n, width);
        let expected = reference::pack(&codes, width).unwrap();
        for_each_impl(|imp| check_one(imp, &codes, width, 3, &expected, &codes));
    }
}
