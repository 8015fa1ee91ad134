//! The documented layout, byte for byte.

use lsqr_pack::{get, pack_into, packed_len, reference, unpack_from, unpack_into};

#[test]
fn worked_example_width_3() {
    let codes = [5u16, 2, 7, 1, 6];
    let mut out = [0xFFu8; 4];
    assert_eq!(pack_into(&codes, 3, &mut out), Ok(2));
    assert_eq!(out, [0xD5, 0x63, 0xFF, 0xFF]);
    assert_eq!(reference::pack(&codes, 3).unwrap(), [0xD5, 0x63]);
    common::for_each_impl(|imp| {
        let mut out = [0u8; 2];
        assert_eq!(imp.pack(&codes, 3, &mut out), Ok(2), "{}", imp.name);
        assert_eq!(out, [0xD5, 0x63], "{}", imp.name);
    });
    assert_eq!(get(&[0xD5, 0x63], 3, 2), Ok(7));
}

#[test]
fn worked_example_width_10() {
    let codes = [0x3FFu16, 0x001, 0x155];
    let mut out = [0u8; 4];
    assert_eq!(pack_into(&codes, 10, &mut out), Ok(4));
    assert_eq!(out, [0xFF, 0x07, 0x50, 0x15]);
    let mut back = [0u16; 3];
    unpack_into(&out, 10, &mut back).unwrap();
    assert_eq!(back, codes);
}

#[test]
fn eight_codes_are_width_bytes() {
    for width in 1..=16u32 {
        assert_eq!(packed_len(8, width), Ok(width as usize));
        assert_eq!(packed_len(8 * 1000, width), Ok(1000 * width as usize));
    }
}

#[test]
fn width_8_and_16_are_plain_bytes() {
    let codes: Vec<u16> = (0..=255).collect();
    let mut out = vec![0u8; 256];
    pack_into(&codes, 8, &mut out).unwrap();
    assert!(out.iter().enumerate().all(|(i, &b)| b as usize == i));
    let codes = [0x1234u16, 0xABCD];
    let mut out = [0u8; 4];
    pack_into(&codes, 16, &mut out).unwrap();
    assert_eq!(out, [0x34, 0x12, 0xCD, 0xAB]);
}

/// The C decoder from the crate docs, transcribed literally.
fn c_decoder(p: &[u8], i: usize, c: u32) -> u16 {
    let bit = i * c as usize;
    let byte = bit / 8;
    let shift = (bit % 8) as u32;
    let mut w: u32 = 0;
    let mut k = 0;
    while k < 4 && byte + k < p.len() {
        w |= (p[byte + k] as u32) << (8 * k);
        k += 1;
    }
    ((w >> shift) & ((1u32 << c) - 1)) as u16
}

#[test]
fn documented_c_decoder_agrees() {
    let mut state = 0x1234_5678_9ABC_DEF1u64;
    for width in 1..=16u32 {
        let mask = ((1u32 << width) - 1) as u16;
        let codes: Vec<u16> = (0..77)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u16 & mask
            })
            .collect();
        let mut packed = vec![0u8; packed_len(codes.len(), width).unwrap()];
        pack_into(&codes, width, &mut packed).unwrap();
        for (i, &c) in codes.iter().enumerate() {
            assert_eq!(c_decoder(&packed, i, width), c);
        }
        // Padding bits of the last byte are zero.
        let used = codes.len() * width as usize % 8;
        if used != 0 {
            assert_eq!(packed.last().unwrap() >> used, 0);
        }
        let mut tail = vec![0u16; 10];
        unpack_from(&packed, width, 67, &mut tail).unwrap();
        assert_eq!(tail, &codes[67..]);
    }
}

mod common;

#[test]
fn selected_path_respects_force_scalar() {
    let forced = std::env::var_os("LSQR_FORCE_SCALAR").is_some_and(|v| !v.is_empty() && v != "0");
    let sel = lsqr_pack::paths::selected();
    if forced {
        assert_eq!(sel, "scalar");
    } else {
        #[cfg(all(target_arch = "x86_64", feature = "std"))]
        if std::is_x86_feature_detected!("avx2") {
            assert_eq!(sel, "avx2");
        }
    }
    eprintln!("selected path: {sel}");
}
