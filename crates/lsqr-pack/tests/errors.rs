//! One test per error variant, plus Display messages.

use lsqr_pack::{
    get, pack_into, packed_len, reference, unpack_from, unpack_into, PackError, MAX_WIDTH,
};

mod common;

#[test]
fn invalid_width() {
    for width in [0u32, 17, 32, u32::MAX] {
        let e = PackError::InvalidWidth { width };
        assert_eq!(packed_len(1, width), Err(e));
        assert_eq!(pack_into(&[0], width, &mut [0u8; 8]), Err(e));
        assert_eq!(unpack_into(&[0u8; 8], width, &mut [0u16; 1]), Err(e));
        assert_eq!(unpack_from(&[0u8; 8], width, 1, &mut [0u16; 1]), Err(e));
        assert_eq!(get(&[0u8; 8], width, 0), Err(e));
        assert_eq!(reference::pack(&[0], width), Err(e));
        assert_eq!(reference::unpack(&[0u8; 8], width, 1), Err(e));
        common::for_each_impl(|imp| {
            let name = imp.name;
            assert_eq!(imp.pack(&[], width, &mut []), Err(e), "{name}");
            assert_eq!(imp.unpack(&[], width, 0, &mut []), Err(e), "{name}");
        });
    }
    assert_eq!(MAX_WIDTH, 16);
    assert_eq!(packed_len(0, 16), Ok(0));
    assert_eq!(packed_len(1, 1), Ok(1));
}

#[test]
fn buffer_too_small() {
    // pack: 10 codes of 5 bits need 7 bytes.
    let codes = [1u16; 10];
    let mut out = [0x11u8; 6];
    assert_eq!(
        pack_into(&codes, 5, &mut out),
        Err(PackError::BufferTooSmall { needed: 7, available: 6 })
    );
    assert_eq!(out, [0x11; 6], "output untouched on error");
    // unpack: 9 codes of 7 bits need 8 bytes.
    let mut dst = [0xAAAAu16; 9];
    assert_eq!(
        unpack_into(&[0u8; 7], 7, &mut dst),
        Err(PackError::BufferTooSmall { needed: 8, available: 7 })
    );
    assert_eq!(dst, [0xAAAA; 9], "output untouched on error");
    // unpack_from: codes 3..6 of 11 bits need ceil(66/8) = 9 bytes.
    assert_eq!(
        unpack_from(&[0u8; 8], 11, 3, &mut [0u16; 3]),
        Err(PackError::BufferTooSmall { needed: 9, available: 8 })
    );
    // get: code 2 of 16 bits needs 6 bytes.
    assert_eq!(get(&[0u8; 5], 16, 2), Err(PackError::BufferTooSmall { needed: 6, available: 5 }));
    common::for_each_impl(|imp| {
        let name = imp.name;
        assert_eq!(
            imp.pack(&[0u16; 100], 9, &mut [0u8; 112]),
            Err(PackError::BufferTooSmall { needed: 113, available: 112 }),
            "{name}"
        );
        assert_eq!(
            imp.unpack(&[0u8; 112], 9, 1, &mut [0u16; 99]),
            Err(PackError::BufferTooSmall { needed: 113, available: 112 }),
            "{name}"
        );
    });
}

#[test]
fn code_too_wide() {
    let mut codes = vec![3u16; 100];
    codes[37] = 4;
    codes[80] = 9;
    let mut out = [0x5Au8; 64];
    assert_eq!(
        pack_into(&codes, 2, &mut out),
        Err(PackError::CodeTooWide { index: 37, code: 4, width: 2 })
    );
    assert_eq!(out, [0x5A; 64], "output untouched on error");
    assert_eq!(
        reference::pack(&codes, 2),
        Err(PackError::CodeTooWide { index: 37, code: 4, width: 2 })
    );
    common::for_each_impl(|imp| {
        let name = imp.name;
        for width in 1..16u32 {
            let mut codes = vec![0u16; 300];
            let bad = 1u16 << width;
            codes[299] = bad;
            let mut out = vec![0u8; 600];
            assert_eq!(
                imp.pack(&codes, width, &mut out),
                Err(PackError::CodeTooWide { index: 299, code: bad, width }),
                "{name} C={width}"
            );
            assert!(out.iter().all(|&b| b == 0));
        }
        // Every u16 fits in 16 bits.
        assert_eq!(imp.pack(&[u16::MAX], 16, &mut [0u8; 2]), Ok(2), "{name}");
    });
}

#[test]
fn length_overflow() {
    assert_eq!(packed_len(usize::MAX, 2), Err(PackError::LengthOverflow));
    assert_eq!(packed_len(usize::MAX / 16 + 1, 16), Err(PackError::LengthOverflow));
    assert_eq!(packed_len(usize::MAX / 16, 16), Ok(usize::MAX / 16 * 2));
    assert_eq!(packed_len(usize::MAX, 1), Ok(usize::MAX / 8 + 1));
    assert_eq!(get(&[0u8; 4], 3, usize::MAX), Err(PackError::LengthOverflow));
    assert_eq!(get(&[0u8; 4], 4, usize::MAX / 4), Err(PackError::LengthOverflow));
    assert_eq!(
        unpack_from(&[0u8; 4], 3, usize::MAX, &mut [0u16; 1]),
        Err(PackError::LengthOverflow)
    );
    assert_eq!(
        unpack_from(&[0u8; 4], 3, usize::MAX / 2, &mut [0u16; 1]),
        Err(PackError::LengthOverflow)
    );
    // A huge `first` that does not overflow is merely out of bounds.
    assert!(matches!(
        unpack_from(&[0u8; 4], 1, usize::MAX - 1, &mut [0u16; 1]),
        Err(PackError::BufferTooSmall { .. })
    ));
}

#[test]
fn display_names_the_numbers() {
    let s = PackError::InvalidWidth { width: 17 }.to_string();
    assert!(s.contains("17") && s.contains("16"), "{s}");
    let s = PackError::BufferTooSmall { needed: 123, available: 45 }.to_string();
    assert!(s.contains("123") && s.contains("45"), "{s}");
    let s = PackError::CodeTooWide { index: 37, code: 4, width: 2 }.to_string();
    assert!(
        s.contains("37") && s.contains(" 4 ") && s.contains("2 bits") && s.contains("maximum 3"),
        "{s}"
    );
    let s = PackError::LengthOverflow.to_string();
    assert!(s.contains("overflow"), "{s}");
    // Display never panics, even on hand-made out-of-range widths.
    let _ = PackError::CodeTooWide { index: 0, code: 0, width: u32::MAX }.to_string();
    let _ = PackError::CodeTooWide { index: 0, code: 0, width: 0 }.to_string();
}

#[cfg(feature = "std")]
#[test]
fn is_std_error() {
    fn takes(_: &dyn std::error::Error) {}
    takes(&PackError::LengthOverflow);
}
