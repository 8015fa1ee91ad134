//! Shared helpers for the integration tests.
#![allow(dead_code)]

use lsqr_pack::{packed_len, PackError};

/// A packing implementation under test.
pub type PackFn = fn(&[u16], u32, &mut [u8]) -> Result<usize, PackError>;
/// An unpacking implementation under test.
pub type UnpackFn = fn(&[u8], u32, usize, &mut [u16]) -> Result<(), PackError>;

/// A named implementation: (name, pack, unpack).
pub type Impl = (&'static str, PackFn, UnpackFn);

/// Every implementation available on this machine, by name.
pub fn impls() -> Vec<Impl> {
    let mut v: Vec<Impl> = vec![
        ("dispatch", lsqr_pack::pack_into, lsqr_pack::unpack_from),
        ("scalar", lsqr_pack::paths::scalar::pack_into, lsqr_pack::paths::scalar::unpack_from),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        if lsqr_pack::paths::avx2::Avx2::new().is_some() {
            v.push(("avx2", avx2_pack, avx2_unpack));
        } else {
            eprintln!("note: CPU lacks AVX2, skipping the avx2 path");
        }
    }
    v
}

#[cfg(target_arch = "x86_64")]
fn avx2_pack(codes: &[u16], width: u32, out: &mut [u8]) -> Result<usize, PackError> {
    match lsqr_pack::paths::avx2::Avx2::new() {
        Some(p) => p.pack_into(codes, width, out),
        None => unreachable!("only registered when AVX2 is available"),
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_unpack(packed: &[u8], width: u32, first: usize, out: &mut [u16]) -> Result<(), PackError> {
    match lsqr_pack::paths::avx2::Avx2::new() {
        Some(p) => p.unpack_from(packed, width, first, out),
        None => unreachable!("only registered when AVX2 is available"),
    }
}

/// Tiny deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn codes(&mut self, n: usize, width: u32) -> Vec<u16> {
        let mask = ((1u32 << width) - 1) as u16;
        (0..n).map(|_| self.next() as u16 & mask).collect()
    }
}

/// Checks one implementation on one input against the reference:
/// pack bytes, full unpack, `unpack_from` at `first`, and that bytes past
/// the packed length are untouched / ignored.
///
/// `expected` is `reference::pack(codes, width)` and `ref_all` is
/// `reference::unpack(expected, width, codes.len())` (computed once by the
/// caller, since the bitvec reference is slow in debug builds).
pub fn check_one(
    imp: &Impl,
    codes: &[u16],
    width: u32,
    first: usize,
    expected: &[u8],
    ref_all: &[u16],
) {
    let &(name, pack, unpack) = imp;
    let n = codes.len();
    let len = packed_len(n, width).unwrap();
    assert_eq!(expected.len(), len);

    // Pack into an oversized, pre-filled buffer: exactly `len` bytes written.
    let mut out = vec![0xA5u8; len + 40];
    assert_eq!(pack(codes, width, &mut out), Ok(len), "{name} C={width} n={n}");
    assert_eq!(&out[..len], expected, "{name} pack C={width} n={n}");
    assert!(out[len..].iter().all(|&b| b == 0xA5), "{name} pack wrote past len, C={width} n={n}");

    // Pack into an exact buffer.
    let mut exact = vec![0xFFu8; len];
    assert_eq!(pack(codes, width, &mut exact), Ok(len));
    assert_eq!(exact, expected, "{name} exact pack C={width} n={n}");

    // Unpack from an exact buffer.
    let mut back = vec![0xBEEFu16; n];
    unpack(expected, width, 0, &mut back).unwrap();
    assert_eq!(back, ref_all, "{name} unpack C={width} n={n}");

    // Unpack from a buffer with trailing garbage.
    let mut padded = expected.to_vec();
    padded.extend_from_slice(&[0xFF; 33]);
    let mut back2 = vec![0u16; n];
    unpack(&padded, width, 0, &mut back2).unwrap();
    assert_eq!(back2, ref_all, "{name} unpack(padded) C={width} n={n}");

    // unpack_from at an arbitrary offset, exact and padded input.
    let first = first.min(n);
    for src in [expected, &padded[..]] {
        let mut part = vec![0xBEEFu16; n - first];
        unpack(src, width, first, &mut part).unwrap();
        assert_eq!(part, &ref_all[first..], "{name} unpack_from({first}) C={width} n={n}");
    }
    // Sub-range ending before the end.
    if n > first {
        let m = (n - first) / 2;
        let mut part = vec![0u16; m];
        unpack(expected, width, first, &mut part).unwrap();
        assert_eq!(part, &ref_all[first..first + m]);
    }
}
