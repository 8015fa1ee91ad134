//! Pickles crafted to make the unpickler (or the walk over its result) do
//! quadratic work or recurse deeply: each, in a zip checkpoint and in a
//! legacy stream, must finish or be refused quickly. The real guard is the
//! work budget (`WORK_PER_BYTE` units per pickle byte), so the cases that
//! would copy or visit far more than their size are asserted to be refused
//! by it, naming the opcode or the stage; the time bound is only a generous
//! backstop.
//!
//! `LSQR_HOSTILE_MB` sets the pickles' size (default 4 MB); run with
//! `LSQR_HOSTILE_MB=10 cargo test --release -p lsqr-import --test
//! hostile_pickles -- --nocapture` to see the 10 MB timings.

use std::io::Write;
use std::time::{Duration, Instant};

/// Pickle opcodes used here.
const PROTO: u8 = 0x80;
const STOP: u8 = b'.';
const MARK: u8 = b'(';
const POP: u8 = b'0';
const TUPLE: u8 = b't';
const TUPLE1: u8 = 0x85;
const EMPTY_DICT: u8 = b'}';
const EMPTY_LIST: u8 = b']';
const APPENDS: u8 = b'e';
const SETITEMS: u8 = b'u';
const SETITEM: u8 = b's';
const BININT1: u8 = b'K';
const LONG_BINPUT: u8 = b'r';
const LONG_BINGET: u8 = b'j';
const MEMOIZE: u8 = 0x94;
const REDUCE: u8 = b'R';
const BUILD: u8 = b'b';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE: u8 = b'X';

fn target_len() -> usize {
    let mb: usize = std::env::var("LSQR_HOSTILE_MB").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    mb << 20
}

struct P(Vec<u8>);

impl P {
    fn new() -> Self {
        P(vec![PROTO, 2])
    }
    fn op(&mut self, op: u8) -> &mut Self {
        self.0.push(op);
        self
    }
    fn put(&mut self, k: u32) -> &mut Self {
        self.0.push(LONG_BINPUT);
        self.0.extend_from_slice(&k.to_le_bytes());
        self
    }
    fn get(&mut self, k: u32) -> &mut Self {
        self.0.push(LONG_BINGET);
        self.0.extend_from_slice(&k.to_le_bytes());
        self
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        if s.len() < 256 {
            self.0.extend_from_slice(&[SHORT_BINUNICODE, s.len() as u8]);
        } else {
            self.0.push(BINUNICODE);
            self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        }
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// A tuple of `n` small ints.
    fn big_tuple(&mut self, n: usize) -> &mut Self {
        self.op(MARK);
        for _ in 0..n {
            self.0.extend_from_slice(&[BININT1, 7]);
        }
        self.op(TUPLE)
    }
    /// A list of `n` small ints.
    fn big_list(&mut self, n: usize) -> &mut Self {
        self.op(EMPTY_LIST).op(MARK);
        for _ in 0..n {
            self.0.extend_from_slice(&[BININT1, 7]);
        }
        self.op(APPENDS)
    }
    fn done(&mut self) -> Vec<u8> {
        self.op(STOP);
        std::mem::take(&mut self.0)
    }
}

/// `_rebuild_tensor_v2` applied over and over to one shared tuple of a
/// million items, every result kept in the root dict.
fn reduce_shared_tuple() -> Vec<u8> {
    let mut p = P::new();
    p.op(EMPTY_DICT).put(0);
    p.global("torch._utils", "_rebuild_tensor_v2").put(1).op(POP);
    p.big_tuple(1 << 19).put(2).op(POP);
    let mut i = 0u32;
    while p.0.len() < target_len() {
        p.op(MARK);
        for _ in 0..1000 {
            p.str(&format!("t{i}")).get(1).get(2).op(REDUCE);
            i += 1;
        }
        p.op(SETITEMS);
    }
    p.done()
}

/// `set(shared_list)` over and over: every call copies a million items.
fn set_copies() -> Vec<u8> {
    let mut p = P::new();
    p.op(EMPTY_LIST).put(0);
    p.global("builtins", "set").put(1).op(POP);
    p.big_list(1 << 19).op(TUPLE1).put(2).op(POP);
    while p.0.len() < target_len() {
        p.get(1).get(2).op(REDUCE).op(POP);
    }
    p.done()
}

/// A root dict whose values are all one shared list of a million items,
/// under a long shared key: the walk would visit it once per key.
fn shared_list_many_gets() -> Vec<u8> {
    let mut p = P::new();
    p.op(EMPTY_DICT).put(0);
    p.big_list(1 << 19).put(1).op(POP);
    let long_key = "k".repeat(1000);
    let mut i = 0u32;
    while p.0.len() < target_len() {
        p.op(MARK);
        for _ in 0..1000 {
            p.str(&format!("{long_key}{i}")).get(1);
            i += 1;
        }
        p.op(SETITEMS);
    }
    p.done()
}

/// A dict shared by every entry of the root, with BUILD and SETITEM applied
/// to it again and again.
fn shared_dict_build_setitems() -> Vec<u8> {
    let mut p = P::new();
    p.op(EMPTY_DICT).put(0);
    p.op(EMPTY_DICT).put(1).op(POP);
    let mut i = 0u32;
    while p.0.len() < target_len() {
        p.get(1).str(&format!("a{i}")).get(1).op(SETITEM).get(0).op(BUILD).op(POP);
        p.get(0).str(&format!("b{i}")).get(1).op(SETITEM).op(POP);
        i += 1;
    }
    p.done()
}

/// Tuples nested a few million deep: no recursion may follow them.
fn deep_nesting() -> Vec<u8> {
    let mut p = P::new();
    p.op(EMPTY_LIST);
    while p.0.len() < target_len() {
        p.op(TUPLE1);
    }
    let inner = p.done();
    // As the value of a dict entry, so the walk starts into it.
    let mut q = P::new();
    q.op(EMPTY_DICT).str("x");
    q.0.extend_from_slice(&inner[2..inner.len() - 1]);
    q.op(SETITEM).done()
}

/// Millions of memo entries.
fn huge_memo() -> Vec<u8> {
    let mut p = P::new();
    p.op(EMPTY_LIST);
    while p.0.len() < target_len() {
        p.op(MEMOIZE);
    }
    p.done()
}

fn zip_checkpoint(pickle: &[u8]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", stored).unwrap();
        zip.write_all(pickle).unwrap();
        zip.start_file("archive/byteorder", stored).unwrap();
        zip.write_all(b"little").unwrap();
        zip.finish().unwrap();
    }
    out.into_inner()
}

fn legacy_stream(pickle: &[u8]) -> Vec<u8> {
    let mut out = vec![PROTO, 2, 0x8a, 10];
    out.extend_from_slice(&[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
    out.push(STOP);
    out.extend_from_slice(&[PROTO, 2, b'M', 0xe9, 0x03, STOP]); // 1001
    out.extend_from_slice(&[PROTO, 2, EMPTY_DICT, STOP]);
    out.extend_from_slice(pickle);
    out.extend_from_slice(&[PROTO, 2, EMPTY_LIST, STOP]);
    out
}

/// Imports `pickle` as a zip checkpoint and as a legacy stream; returns the
/// two errors (or `None` for an accepted file).
fn import_both(case: &str, pickle: &[u8]) -> [Option<String>; 2] {
    let mut out = [None, None];
    for (k, (kind, bytes)) in
        [("zip", zip_checkpoint(pickle)), ("legacy", legacy_stream(pickle))].into_iter().enumerate()
    {
        let start = Instant::now();
        let result = lsqr_import::from_bytes(bytes, &format!("{case}.pt"));
        let took = start.elapsed();
        let message = result.err().map(|e| e.to_string());
        println!(
            "{case} ({kind}, {} MB pickle): {took:.2?}: {}",
            pickle.len() >> 20,
            message.as_deref().unwrap_or("accepted")
        );
        assert!(took < Duration::from_secs(10), "{case} ({kind}) took {took:?}");
        out[k] = message;
    }
    out
}

fn refused_by_budget(case: &str, errors: &[Option<String>; 2], what: &str) {
    for e in errors {
        let e = e.as_deref().unwrap_or_else(|| panic!("{case} was accepted"));
        assert!(e.contains("work budget") && e.contains(what), "{case}: {e}");
    }
}

#[test]
fn reduce_on_a_shared_tuple_is_linear() {
    // REDUCE no longer copies an argument tuple longer than a constructor's,
    // so this finishes; the records are then refused as tensors.
    for e in import_both("reduce_shared_tuple", &reduce_shared_tuple()) {
        let e = e.expect("refused");
        assert!(e.contains("storage") || e.contains("work budget"), "{e}");
    }
}

#[test]
fn set_copies_are_refused_by_the_work_budget() {
    refused_by_budget("set_copies", &import_both("set_copies", &set_copies()), "REDUCE");
}

#[test]
fn walking_a_shared_list_is_refused_by_the_work_budget() {
    let errors = import_both("shared_list", &shared_list_many_gets());
    for e in &errors {
        let e = e.as_deref().expect("refused");
        assert!(e.contains("work budget") || e.contains("too many objects"), "shared_list: {e}");
    }
}

#[test]
fn build_and_setitems_on_a_shared_dict_finish() {
    for e in import_both("shared_dict", &shared_dict_build_setitems()) {
        assert!(e.is_some(), "no tensors: refused");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for e in import_both("deep_nesting", &deep_nesting()) {
        let e = e.expect("refused");
        assert!(e.contains("nested more than"), "{e}");
    }
}

#[test]
fn a_huge_memo_is_refused() {
    for e in import_both("huge_memo", &huge_memo()) {
        let e = e.expect("refused");
        assert!(e.contains("memo too large") || e.contains("no tensor"), "{e}");
    }
}
