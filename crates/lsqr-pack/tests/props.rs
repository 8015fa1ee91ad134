//! Property tests: random widths, lengths 0..=300, random codes and offsets,
//! for the dispatched API and for each implementation directly.

mod common;

use common::{check_one, exact, for_each_impl};
use lsqr_pack::{get, pack_into, packed_len, reference, unpack_from, unpack_into};
use proptest::prelude::*;

/// Width in 1..=16 and up to 300 codes that fit in it.
fn width_and_codes() -> impl Strategy<Value = (u32, Vec<u16>)> {
    (1u32..=16).prop_flat_map(|w| {
        let max = ((1u32 << w) - 1) as u16;
        (Just(w), proptest::collection::vec(0..=max, 0..=300))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn dispatch_matches_reference((width, codes) in width_and_codes(), first_frac in 0.0f64..=1.0) {
        let n = codes.len();
        let expected = reference::pack(&codes, width).unwrap();
        let len = packed_len(n, width).unwrap();

        let mut packed = vec![0u8; len];
        prop_assert_eq!(pack_into(&codes, width, &mut packed), Ok(len));
        prop_assert_eq!(&packed, &expected);

        let ref_codes = reference::unpack(&packed, width, n).unwrap();
        let mut back = vec![0u16; n];
        unpack_into(&packed, width, &mut back).unwrap();
        prop_assert_eq!(&back, &ref_codes);
        prop_assert_eq!(&back, &codes);

        let first = ((n as f64) * first_frac) as usize;
        let first = first.min(n);
        let mut part = vec![0u16; n - first];
        unpack_from(&packed, width, first, &mut part).unwrap();
        prop_assert_eq!(&part[..], &ref_codes[first..]);

        for (i, &c) in ref_codes.iter().enumerate() {
            prop_assert_eq!(get(&packed, width, i), Ok(c));
        }
    }

    #[test]
    fn every_path_matches_reference((width, codes) in width_and_codes(), first in 0usize..=300) {
        let expected = reference::pack(&codes, width).unwrap();
        let ref_all = reference::unpack(&expected, width, codes.len()).unwrap();
        for_each_impl(|imp| check_one(imp, &codes, width, first, &expected, &ref_all));
    }

    #[test]
    fn unpack_arbitrary_bytes(width in 1u32..=16, bytes in proptest::collection::vec(any::<u8>(), 0..=600), first in 0usize..=300, count in 0usize..=300) {
        // Any byte string decodes identically on every path (including
        // nonzero padding bits), or fails identically.
        let ok = packed_len(first + count, width).unwrap() <= bytes.len();
        let ref_codes = reference::unpack(&bytes, width, first + count);
        prop_assert_eq!(ref_codes.is_ok(), ok);
        let bytes = exact(&bytes);
        for_each_impl(|imp| {
            let mut out = exact(&vec![0u16; count]);
            let r = imp.unpack(&bytes, width, first, &mut out);
            match &ref_codes {
                Ok(all) => {
                    assert_eq!(r, Ok(()), "{}", imp.name);
                    assert_eq!(&out[..], &all[first..], "{}", imp.name);
                }
                Err(e) => assert_eq!(r, Err(*e), "{}", imp.name),
            }
        });
    }
}
