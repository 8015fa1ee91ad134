//! Shared helpers for the integration tests.
#![allow(dead_code)]

use lsqr_pack::paths::SimdPath;
use lsqr_pack::{packed_len, PackError};

/// An implementation under test: the dispatched crate-root functions, or
/// one path of `lsqr_pack::paths::SIMD_PATHS` called directly (so the SIMD
/// paths are checked under `LSQR_FORCE_SCALAR=1` too).
#[derive(Clone, Copy)]
pub struct Impl {
    pub name: &'static str,
    path: Option<&'static SimdPath>,
}

impl Impl {
    pub fn pack(&self, codes: &[u16], width: u32, out: &mut [u8]) -> Result<usize, PackError> {
        match self.path {
            None => lsqr_pack::pack_into(codes, width, out),
            Some(p) => p.pack_into(codes, width, out),
        }
    }

    pub fn unpack(
        &self,
        packed: &[u8],
        width: u32,
        first: usize,
        out: &mut [u16],
    ) -> Result<(), PackError> {
        match self.path {
            None => lsqr_pack::unpack_from(packed, width, first, out),
            Some(p) => p.unpack_from(packed, width, first, out),
        }
    }
}

/// Runs `f` on the dispatched API, then on every path of `SIMD_PATHS` this
/// CPU has (skipping, and reporting, the others), then writes this test
/// binary's `lsqr-simd:` report line once (see
/// `lsqr_pack::paths::for_each_simd_path`).
pub fn for_each_impl(mut f: impl FnMut(&Impl)) {
    f(&Impl { name: "dispatch", path: None });
    lsqr_pack::paths::for_each_simd_path(env!("CARGO_CRATE_NAME"), |p| {
        f(&Impl { name: p.name, path: Some(p) })
    });
}

/// `v` in a heap allocation of exactly its length, so that a read or write
/// one element past its end is a heap overflow under AddressSanitizer (a
/// `Vec` may have spare capacity, and a slice of a larger buffer hides
/// such accesses).
pub fn exact<T: Clone>(v: &[T]) -> Box<[T]> {
    Box::from(v)
}

/// `v` at the end of an exact heap allocation, preceded by `offset` copies
/// of `fill`: a slice whose start is `offset` elements past an aligned
/// address and whose end is the end of its allocation.
pub fn exact_at<T: Clone>(v: &[T], offset: usize, fill: T) -> Box<[T]> {
    let mut buf = vec![fill; offset];
    buf.extend_from_slice(v);
    buf.into_boxed_slice()
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
/// Every input the implementation reads is an exact heap allocation (see
/// [`exact`]), also at a start address off the vector alignment, so that
/// AddressSanitizer sees any read past its end.
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
    let name = imp.name;
    let n = codes.len();
    let len = packed_len(n, width).unwrap();
    assert_eq!(expected.len(), len);

    // Pack into an oversized, pre-filled buffer: exactly `len` bytes written.
    let mut out = vec![0xA5u8; len + 40];
    assert_eq!(imp.pack(&exact(codes), width, &mut out), Ok(len), "{name} C={width} n={n}");
    assert_eq!(&out[..len], expected, "{name} pack C={width} n={n}");
    assert!(out[len..].iter().all(|&b| b == 0xA5), "{name} pack wrote past len, C={width} n={n}");

    // Pack into an exact buffer, from codes at an odd offset of theirs.
    let shifted = exact_at(codes, 1 + first % 15, 0);
    let mut exact_out = exact(&vec![0xFFu8; len]);
    assert_eq!(imp.pack(&shifted[1 + first % 15..], width, &mut exact_out), Ok(len));
    assert_eq!(&exact_out[..], expected, "{name} exact pack C={width} n={n}");

    // Unpack from an exact buffer into an exact one.
    let packed = exact(expected);
    let mut back = exact(&vec![0xBEEFu16; n]);
    imp.unpack(&packed, width, 0, &mut back).unwrap();
    assert_eq!(&back[..], ref_all, "{name} unpack C={width} n={n}");

    // Unpack from a buffer with trailing garbage.
    let mut padded = expected.to_vec();
    padded.extend_from_slice(&[0xFF; 33]);
    let mut back2 = vec![0u16; n];
    imp.unpack(&padded, width, 0, &mut back2).unwrap();
    assert_eq!(back2, ref_all, "{name} unpack(padded) C={width} n={n}");

    // unpack_from at an arbitrary offset: exact input, exact input at an odd
    // address, padded input.
    let first = first.min(n);
    let off = 1 + n % 7;
    let odd = exact_at(expected, off, 0x5A);
    for src in [&packed[..], &odd[off..], &padded[..]] {
        let mut part = exact(&vec![0xBEEFu16; n - first]);
        imp.unpack(src, width, first, &mut part).unwrap();
        assert_eq!(&part[..], &ref_all[first..], "{name} unpack_from({first}) C={width} n={n}");
    }
    // Sub-range ending before the end.
    if n > first {
        let m = (n - first) / 2;
        let mut part = exact(&vec![0u16; m]);
        imp.unpack(&packed, width, first, &mut part).unwrap();
        assert_eq!(&part[..], &ref_all[first..first + m]);
    }
}
