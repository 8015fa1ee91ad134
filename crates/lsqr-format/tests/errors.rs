//! One test per error variant: each malformed file is rejected with that
//! variant, and its message names the place.

mod common;

use common::*;
use lsqr_format::{
    FormatError, Graph, Layer, LsqFile, LsqWriter, RawDtype, Section, SectionKind, SectionProblem,
    Storage, Value,
};

fn open_err(bytes: &[u8]) -> FormatError {
    LsqFile::from_bytes(bytes).expect_err("must be rejected")
}

fn message(e: &FormatError) -> String {
    e.to_string()
}

// ------------------------------------------------------------- preamble

#[test]
fn too_short() {
    let e = open_err(&small_model()[..63]);
    assert!(matches!(e, FormatError::TooShort { len: 63 }), "{e}");
}

#[test]
fn bad_magic() {
    let mut f = small_model();
    f[1] = b'X';
    assert!(matches!(open_err(&f), FormatError::BadMagic));
}

#[test]
fn unsupported_version() {
    let f = patch_preamble(&small_model(), 8, &2u16.to_le_bytes());
    assert!(matches!(open_err(&f), FormatError::UnsupportedVersion { major: 2, minor: 0 }));
    let f = patch_preamble(&small_model(), 10, &3u16.to_le_bytes());
    assert!(matches!(open_err(&f), FormatError::UnsupportedVersion { major: 1, minor: 3 }));
}

/// From 1.1 the container records any op (the runtime decides what it
/// runs); a 1.0 file keeps the 1.0 list, and writers say 1.0 whenever the
/// graph fits it, so 1.0 readers keep reading those files.
#[test]
fn op_names_by_version() {
    assert_eq!(&small_model()[10..12], &[0, 0], "a graph of 1.0 ops is written as 1.0");
    let v1_1 = patch_preamble(&small_model(), 10, &1u16.to_le_bytes());
    let f = edit(&v1_1, |_, _, g| g.as_mut().unwrap().layers[0].op = "conv3d".into());
    let file = LsqFile::from_bytes(&f).unwrap();
    assert_eq!(file.graph().unwrap().layers[0].op, "conv3d");
    // The writer marks such a graph 1.1 by itself.
    let mut w = LsqWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    let mut graph = file.graph().unwrap().clone();
    for t in file.tensors() {
        let view = file.tensor(&t.name).unwrap();
        w.add_raw_f32(&t.name, &t.shape_usize(), &view.to_f32_vec().unwrap()).unwrap();
    }
    graph.layers[0].op = "my_op".into();
    w.set_graph(graph);
    let bytes = w.finish().unwrap().into_inner();
    assert_eq!(&bytes[10..12], &[1, 0]);
    assert_eq!(LsqFile::from_bytes(&bytes).unwrap().graph().unwrap().layers[0].op, "my_op");
}

#[test]
fn unknown_flags() {
    let f = patch_preamble(&small_model(), 12, &4u32.to_le_bytes());
    assert!(matches!(open_err(&f), FormatError::UnknownFlags { flags: 4 }));
}

#[test]
fn non_zero_reserved() {
    let f = patch_preamble(&small_model(), 50, &[1]);
    let e = open_err(&f);
    assert!(matches!(e, FormatError::NonZeroReserved { offset: 50 }), "{e}");
    assert!(message(&e).contains("0x32"));
}

#[test]
fn preamble_checksum() {
    let mut f = small_model();
    f[44] ^= 1;
    assert!(matches!(open_err(&f), FormatError::PreambleChecksum { .. }));
}

#[test]
fn file_length() {
    let mut f = small_model();
    f.push(0);
    let e = open_err(&f);
    assert!(matches!(e, FormatError::FileLength { .. }), "{e}");
    let n = small_model().len();
    assert!(matches!(open_err(&small_model()[..n - 1]), FormatError::FileLength { .. }));
}

#[test]
fn header_bounds() {
    let f = small_model();
    let len = f.len() as u64;
    let moved = patch_preamble(&f, 16, &(header_offset(&f) as u64 + 1).to_le_bytes());
    assert!(matches!(open_err(&moved), FormatError::HeaderBounds { .. }));
    let inside_preamble = patch_preamble(&f, 16, &8u64.to_le_bytes());
    assert!(matches!(open_err(&inside_preamble), FormatError::HeaderBounds { offset: 8, .. }));
    // offset + len overflows u64
    let mut wrap = patch_preamble(&f, 16, &u64::MAX.to_le_bytes());
    wrap = patch_preamble(&wrap, 24, &(len + 1).to_le_bytes());
    assert!(matches!(open_err(&wrap), FormatError::HeaderBounds { .. }));
}

#[test]
fn header_too_large() {
    let f = patch_preamble(&small_model(), 24, &(1u64 << 40).to_le_bytes());
    assert!(matches!(open_err(&f), FormatError::HeaderTooLarge { .. }));
}

#[test]
fn header_checksum() {
    let mut f = small_model();
    let at = header_offset(&f);
    f[at + 10] ^= 0x40;
    assert!(matches!(open_err(&f), FormatError::HeaderChecksum { .. }));
}

// --------------------------------------------------------------- header

#[test]
fn truncated_header() {
    let f = small_model();
    let header = &f[header_offset(&f)..];
    let e = open_err(&with_header(&f, &header[..header.len() - 3]));
    assert!(matches!(e, FormatError::Truncated { .. }), "{e}");
    assert!(message(&e).contains("header ends inside"), "{e}");
}

#[test]
fn trailing_header_bytes() {
    let f = small_model();
    let mut header = f[header_offset(&f)..].to_vec();
    header.extend_from_slice(&[0, 0]);
    assert!(matches!(
        open_err(&with_header(&f, &header)),
        FormatError::TrailingHeaderBytes { count: 2, .. }
    ));
}

#[test]
fn too_many_tensors_for_the_header() {
    // A tiny header that claims a million tensors must not allocate for them.
    let f = patch_header(&small_model(), 4, &(1u32 << 20).to_le_bytes());
    let e = open_err(&f);
    assert!(matches!(e, FormatError::TooMany { what: "tensor", .. }), "{e}");
    let f = patch_header(&small_model(), 4, &u32::MAX.to_le_bytes());
    assert!(matches!(open_err(&f), FormatError::TooMany { what: "tensor", .. }));
}

#[test]
fn invalid_utf8() {
    let f = small_model();
    // First metadata key "name" starts at header byte 12 + 4.
    let e = open_err(&patch_header(&f, 16, &[0xff]));
    assert!(matches!(e, FormatError::InvalidUtf8 { .. }), "{e}");
}

#[test]
fn invalid_name() {
    let f = edit(&small_model(), |_, t, g| {
        t[0].name = String::new();
        *g = None;
    });
    assert!(matches!(open_err(&f), FormatError::InvalidName { len: 0, .. }));
    let f = edit(&small_model(), |_, t, g| {
        t[0].name = "x".repeat(4097);
        *g = None;
    });
    assert!(matches!(open_err(&f), FormatError::InvalidName { len: 4097, .. }));
}

#[test]
fn nul_in_names() {
    // A tensor name: "tensor {i} name" and the NUL's file offset.
    let f = edit(&small_model(), |_, t, g| {
        t[1].name = "a\0b".into();
        *g = None;
    });
    let e = open_err(&f);
    let at = (header_offset(&f) + find(&f[header_offset(&f)..], b"a\0b") + 1) as u64;
    assert!(
        matches!(&e, FormatError::NulInName { context, offset } if context == "tensor 1 name" && *offset == at),
        "{e}"
    );
    assert!(message(&e).contains(&format!("{at:#x}")), "{e}");
    // A metadata key.
    let f = edit(&small_model(), |m, _, _| m[1].0 = "\0".into());
    let e = open_err(&f);
    assert!(
        matches!(&e, FormatError::NulInName { context, .. } if context == "metadata entry 1 key"),
        "{e}"
    );
    // A graph value name.
    let e = with_graph(|g| {
        g.inputs[0].push('\0');
        g.layers[0].inputs[0].push('\0');
    });
    assert!(matches!(e, FormatError::NulInName { .. }), "{e}");
    // A string value may hold U+0000.
    let f = edit(&small_model(), |m, _, _| m[0].1 = Value::String("x\0y".into()));
    assert!(LsqFile::from_bytes(&f).is_ok());
}

#[test]
fn the_writer_refuses_nul_in_graph_names() {
    let f = LsqFile::from_bytes(&small_model()).unwrap().graph().unwrap().clone();
    let mut g = f.clone();
    g.layers[0].op.push('\0');
    let mut w = LsqWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    w.set_graph(g);
    let e = w.finish().unwrap_err();
    assert!(message(&e).contains("NUL"), "{e}");
}

#[test]
fn duplicate_names() {
    let f = edit(&small_model(), |_, t, _| t[1].name = t[0].name.clone());
    let e = open_err(&f);
    assert!(matches!(e, FormatError::DuplicateName { what: "tensor name", .. }), "{e}");
    let f = edit(&small_model(), |m, _, _| m[1].0 = m[0].0.clone());
    assert!(matches!(open_err(&f), FormatError::DuplicateName { what: "metadata key", .. }));
}

#[test]
fn invalid_fields() {
    let f = edit(&small_model(), |_, t, _| t[0].shape = vec![1; 9]);
    let e = open_err(&f);
    assert!(matches!(e, FormatError::InvalidField { field: "ndim", value: 9, .. }), "{e}");
    assert!(message(&e).contains("tensor 'fc.weight'"), "{e}");
    // Byte-level: the storage, codec, bits, scaling and scale dtype codes.
    let f = small_model();
    let entry = tensor_entry_offset(&f, 0);
    for (k, field, value) in [
        (0, "storage", 2u8),
        (2, "codec", 9),
        (3, "bits", 17),
        (3, "bits", 1),
        (4, "scaling", 7),
        (5, "scale_dtype", 0),
    ] {
        let e = open_err(&patch_header(&f, entry + k, &[value]));
        assert!(
            matches!(&e, FormatError::InvalidField { field: got, .. } if *got == field),
            "{field}: {e}"
        );
    }
    let bias = tensor_entry_offset(&f, 2);
    let e = open_err(&patch_header(&f, bias + 2, &[10]));
    assert!(matches!(e, FormatError::InvalidField { field: "dtype", value: 10, .. }), "{e}");
    let e = open_err(&patch_header(&f, bias + 3, &[4]));
    assert!(matches!(e, FormatError::InvalidField { field: "bits", .. }), "{e}");
    // log mu must be finite.
    let e = open_err(&patch_header(&f, entry + 12, &f32::NAN.to_le_bytes()));
    assert!(matches!(e, FormatError::InvalidField { field: "mu", .. }), "{e}");
    // group size must be a power of two in 16..=1024.
    let e = open_err(&patch_header(&f, entry + 8, &48u32.to_le_bytes()));
    assert!(matches!(e, FormatError::InvalidField { field: "group_size", value: 48, .. }), "{e}");
    // a bool metadata value other than 0/1
    let f = edit(&small_model(), |m, _, _| m[1].1 = Value::Bool(true));
    let at = find(&f[header_offset(&f)..], b"layers") + 6 + 1;
    let e = open_err(&patch_header(&f, at, &[2]));
    assert!(matches!(e, FormatError::InvalidField { field: "bool value", value: 2, .. }), "{e}");
    let e = open_err(&patch_header(&f, at - 1, &[9]));
    assert!(matches!(e, FormatError::InvalidField { field: "value type", value: 9, .. }), "{e}");
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).position(|w| w == needle).expect("present")
}

/// Offset, within the header, of tensor `i`'s fixed fields (after its name).
fn tensor_entry_offset(file: &[u8], i: usize) -> usize {
    let f = LsqFile::from_bytes(file).unwrap();
    let name = f.tensors()[i].name.as_bytes().to_vec();
    let header = &file[header_offset(file)..];
    find(header, &name) + name.len()
}

#[test]
fn shape_overflow() {
    let f = edit(&small_model(), |_, t, g| {
        t[2].shape = vec![u64::MAX, 2];
        *g = None;
    });
    let e = open_err(&f);
    assert!(matches!(e, FormatError::ShapeOverflow { .. }), "{e}");
    assert!(message(&e).contains("fc.bias"));
}

fn section_err(f: &[u8]) -> (SectionKind, SectionProblem, String) {
    match open_err(f) {
        e @ FormatError::Section { .. } => {
            let msg = e.to_string();
            let FormatError::Section { section, problem, .. } = e else { unreachable!() };
            (section, problem, msg)
        }
        e => panic!("expected a section error, got {e}"),
    }
}

#[test]
fn section_problems() {
    let f = small_model();
    let (k, p, msg) = section_err(&edit(&f, |_, t, _| t[0].data.offset += 8));
    assert_eq!((k, p), (SectionKind::Data, SectionProblem::Misaligned));
    assert!(msg.starts_with("tensor 'fc.weight': data section at 0x"), "{msg}");

    let header_at = header_offset(&f) as u64;
    let (k, p, msg) = section_err(&edit(&f, |_, t, _| t[0].scales.offset = header_at));
    assert_eq!((k, p), (SectionKind::Scales, SectionProblem::OutOfBounds { limit: header_at }));
    assert!(msg.contains("outside the data area"), "{msg}");
    let (_, p, _) = section_err(&edit(&f, |_, t, _| t[0].data.offset = u64::MAX - 63));
    assert!(matches!(p, SectionProblem::OutOfBounds { .. }));
    let (_, p, _) = section_err(&edit(&f, |_, t, _| t[0].data.offset = 0));
    assert!(matches!(p, SectionProblem::OutOfBounds { .. }));

    let (k, p, _) = section_err(&edit(&f, |_, t, _| t[2].data.len += 4));
    assert_eq!((k, p), (SectionKind::Data, SectionProblem::WrongLength { expected: 32 }));
    let (k, p, _) =
        section_err(&edit(&f, |_, t, _| t[2].scales = Section { offset: 64, len: 4, crc32: 0 }));
    assert_eq!((k, p), (SectionKind::Scales, SectionProblem::WrongLength { expected: 0 }));
    let (k, p, _) =
        section_err(&edit(&f, |_, t, _| t[2].table = Section { offset: 64, len: 0, crc32: 0 }));
    assert_eq!((k, p), (SectionKind::Table, SectionProblem::EmptyNotZero { offset: 64, crc32: 0 }));
    // A CRC on an empty section is named as such, not as an offset.
    let (k, p, msg) =
        section_err(&edit(&f, |_, t, _| t[2].table = Section { offset: 0, len: 0, crc32: 7 }));
    assert_eq!((k, p), (SectionKind::Table, SectionProblem::EmptyNotZero { offset: 0, crc32: 7 }));
    assert!(msg.contains("non-zero CRC 0x00000007") && !msg.contains("non-zero offset"), "{msg}");

    // The reserved word after a section's CRC.
    let entry = tensor_entry_offset(&f, 2);
    let first_section = entry + 16 + 8; // fields, one dim
    let e = open_err(&patch_header(&f, first_section + 20, &[1]));
    assert!(matches!(e, FormatError::NonZeroReserved { .. }), "{e}");
}

#[test]
fn section_overlap() {
    let f = edit(&small_model(), |_, t, _| t[2].data.offset = t[0].data.offset);
    let e = open_err(&f);
    assert!(matches!(e, FormatError::SectionOverlap { .. }), "{e}");
    assert!(message(&e).contains("overlaps"), "{e}");
}

#[test]
fn data_checksum_found_by_verify_only() {
    let mut f = small_model();
    let off = LsqFile::from_bytes(&f).unwrap().tensor_info("fc.bias").unwrap().data.offset as usize;
    f[off] ^= 1;
    let file = LsqFile::from_bytes(&f).expect("open does not read data");
    let e = file.verify().unwrap_err();
    assert!(
        matches!(&e, FormatError::DataChecksum { tensor, section: SectionKind::Data, .. } if tensor == "fc.bias"),
        "{e}"
    );
    assert!(message(&e).contains("CRC mismatch"));
    // Per tensor: only the corrupted one fails; an index past the end is
    // an error, not a panic.
    let bias = (0..file.tensors().len()).find(|&i| file.tensors()[i].name == "fc.bias").unwrap();
    for i in 0..file.tensors().len() {
        assert_eq!(file.verify_tensor_at(i).is_err(), i == bias, "tensor {i}");
    }
    assert!(matches!(
        file.verify_tensor_at(file.tensors().len()),
        Err(FormatError::NoSuchTensor { .. })
    ));
}

#[test]
fn invalid_scale() {
    let mut f = small_model();
    let s = LsqFile::from_bytes(&f).unwrap().tensor_info("fc.weight").unwrap().scales;
    // f16 scales: 0x7e00 is NaN, in group 1.
    f[s.offset as usize + 2..s.offset as usize + 4].copy_from_slice(&[0x00, 0x7e]);
    let file = LsqFile::from_bytes(&f).unwrap();
    let e = file.tensor("fc.weight").unwrap_err();
    assert!(
        matches!(e, FormatError::InvalidScale { group: 1, offset, .. } if offset == s.offset + 2),
        "{e}"
    );
    f[s.offset as usize + 2..s.offset as usize + 4].copy_from_slice(&[0x00, 0xbc]); // -1.0
    assert!(matches!(
        LsqFile::from_bytes(&f).unwrap().tensor("fc.weight"),
        Err(FormatError::InvalidScale { .. })
    ));
}

#[test]
fn invalid_table() {
    let mut f = small_model();
    let t = LsqFile::from_bytes(&f).unwrap().tensor_info("lut.weight").unwrap().table;
    let at = t.offset as usize + 4 * 3;
    f[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let e = LsqFile::from_bytes(&f).unwrap().tensor("lut.weight").unwrap_err();
    assert!(matches!(e, FormatError::InvalidTable { index: 3, .. }), "{e}");
    f[at..at + 4].copy_from_slice(&(-5.0f32).to_le_bytes());
    let e = LsqFile::from_bytes(&f).unwrap().tensor("lut.weight").unwrap_err();
    assert!(matches!(e, FormatError::InvalidTable { index: 3, .. }), "{e}");
    // Non-decreasing is enough: an entry equal to the one before is fine.
    let before = f[at - 4..at].to_vec();
    f[at..at + 4].copy_from_slice(&before);
    assert!(LsqFile::from_bytes(&f).unwrap().tensor("lut.weight").is_ok());
}

#[test]
fn mu_negative_zero() {
    // Non-log codecs: the four bytes must be zero; -0.0 is rejected.
    let f = edit(&small_model(), |_, t, _| {
        let i = t.iter().position(|t| t.name == "lut.weight").unwrap();
        let Storage::Quantized(q) = &mut t[i].storage else { panic!() };
        q.mu = -0.0;
    });
    let e = open_err(&f);
    assert!(matches!(e, FormatError::InvalidField { field: "mu", value: 0x8000_0000, .. }), "{e}");
    // log: -0.0 is accepted and means mu = 0.
    let f = edit(&small_model(), |_, t, _| {
        let i = t.iter().position(|t| t.name == "fc.weight").unwrap();
        let Storage::Quantized(q) = &mut t[i].storage else { panic!() };
        q.mu = -0.0;
    });
    assert!(LsqFile::from_bytes(&f).unwrap().tensor("fc.weight").is_ok());
}

fn with_graph(change: impl FnOnce(&mut Graph)) -> FormatError {
    let f = edit(&small_model(), |_, _, g| change(g.as_mut().unwrap()));
    open_err(&f)
}

#[test]
fn graph_errors_at_load() {
    let e = with_graph(|g| g.layers[0].op = "conv3d".into());
    assert!(matches!(&e, FormatError::UnknownOp { layer: 0, op } if op == "conv3d"), "{e}");
    let e = with_graph(|g| g.layers[0].weights.push("missing".into()));
    assert!(matches!(&e, FormatError::UnknownWeight { tensor, .. } if tensor == "missing"), "{e}");
    let e = with_graph(|g| g.layers[0].inputs = vec!["z".into()]);
    assert!(matches!(&e, FormatError::UndefinedValue { value, .. } if value == "z"), "{e}");
    let e = with_graph(|g| g.layers.push(g.layers[0].clone()));
    assert!(matches!(&e, FormatError::DuplicateValue { value } if value == "y"), "{e}");
    let e = with_graph(|g| g.outputs.push("w".into()));
    assert!(matches!(&e, FormatError::MissingOutput { value } if value == "w"), "{e}");
    let e = with_graph(|g| g.layers[0].attrs.push(("activation".into(), Value::Int(1))));
    assert!(matches!(e, FormatError::DuplicateName { what: "layer attribute", .. }), "{e}");
}

#[test]
fn no_such_tensor_and_buffer_size() {
    let f = small_model();
    let file = LsqFile::from_bytes(&f).unwrap();
    assert!(matches!(file.tensor("nope"), Err(FormatError::NoSuchTensor { .. })));
    assert!(matches!(file.tensor_at(99), Err(FormatError::NoSuchTensor { .. })));
    let mut short = vec![0.0; 3];
    let e = file.tensor("fc.bias").unwrap().dequantize_into(&mut short).unwrap_err();
    assert!(matches!(e, FormatError::BufferSize { expected: 8, got: 3, .. }), "{e}");
    let e = file.tensor("fc.weight").unwrap().dequantize_into(&mut short).unwrap_err();
    assert!(matches!(e, FormatError::BufferSize { expected: 320, got: 3, .. }), "{e}");
}

#[test]
fn writer_refuses_what_the_format_cannot_hold() {
    let mut w = LsqWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    w.add_raw_f32("a", &[2], &[1.0, 2.0]).unwrap();
    assert!(matches!(w.add_raw_f32("a", &[1], &[1.0]), Err(FormatError::DuplicateName { .. })));
    assert!(matches!(w.add_raw_f32("", &[1], &[1.0]), Err(FormatError::Invalid { .. })));
    assert!(matches!(w.add_raw_f32("b", &[3], &[1.0]), Err(FormatError::Invalid { .. })));
    // C readers take names as NUL-terminated strings: no NUL inside one.
    let e = w.add_raw_f32("x\0y", &[1], &[1.0]).unwrap_err();
    assert!(matches!(e, FormatError::Invalid { .. }) && message(&e).contains("NUL"), "{e}");
    let e = w.add_metadata("k\0", Value::Bool(true)).unwrap_err();
    assert!(matches!(e, FormatError::Invalid { .. }) && message(&e).contains("NUL"), "{e}");
    assert!(matches!(
        w.add_raw("c", RawDtype::F32, &[1; 9], &[0; 4]),
        Err(FormatError::Invalid { .. })
    ));
    w.add_metadata("k", Value::Bool(true)).unwrap();
    assert!(matches!(
        w.add_metadata("k", Value::Bool(false)),
        Err(FormatError::DuplicateName { .. })
    ));
    w.set_graph(Graph {
        inputs: vec!["x".into()],
        outputs: vec!["y".into()],
        layers: vec![Layer {
            op: "relu".into(),
            inputs: vec!["x".into()],
            outputs: vec!["q".into()],
            ..Layer::default()
        }],
    });
    assert!(matches!(w.finish(), Err(FormatError::MissingOutput { .. })));
}

#[test]
fn io_error_names_the_path() {
    let e = LsqFile::open("/nonexistent/model.lsq").unwrap_err();
    assert!(matches!(e, FormatError::Io { .. }));
    assert!(message(&e).contains("/nonexistent/model.lsq"), "{e}");
}

#[test]
fn raw_entry_fields_must_be_zero() {
    let f = edit(&small_model(), |_, t, _| {
        if let Storage::Raw(_) = t[2].storage {
            t[2].storage = Storage::Raw(RawDtype::I32);
        }
    });
    // Re-labelling f32 as i32 keeps the size: still valid, and reads as ints.
    let file = LsqFile::from_bytes(&f).unwrap();
    assert_eq!(file.tensor("fc.bias").unwrap().to_f32_vec().unwrap().len(), 8);
    let f = edit(&small_model(), |_, t, _| t[2].storage = Storage::Raw(RawDtype::F64));
    let (k, p, _) = section_err(&f);
    assert_eq!((k, p), (SectionKind::Data, SectionProblem::WrongLength { expected: 64 }));
}
