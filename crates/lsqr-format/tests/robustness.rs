//! Damage of every kind is an error, never a panic; writing is atomic; and
//! offsets are u64 throughout.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use common::*;
use lsqr_codec::{quantize, CodecSpec, QuantizeOptions};
use lsqr_format::raw::{encode_header, encode_preamble};
use lsqr_format::{FormatError, LsqFile, LsqFileWriter, Section, Storage, TensorInfo};

#[test]
fn every_truncation_is_an_error() {
    let f = small_model();
    for len in 0..f.len() {
        assert!(LsqFile::from_bytes(&f[..len]).is_err(), "prefix of {len} bytes accepted");
    }
    assert!(LsqFile::from_bytes(&f).is_ok());
}

#[test]
fn every_bit_flip_in_data_is_caught_by_verify() {
    let f = small_model();
    let file = LsqFile::from_bytes(&f).unwrap();
    let sections: Vec<Section> = file
        .tensors()
        .iter()
        .flat_map(|t| [t.data, t.scales, t.table])
        .filter(|s| s.len > 0)
        .collect();
    assert_eq!(sections.len(), 6);
    for s in sections {
        for byte in s.offset..s.offset + s.len {
            for bit in 0..8 {
                let mut g = f.clone();
                g[byte as usize] ^= 1 << bit;
                let opened = LsqFile::from_bytes(&g).expect("data damage does not stop open");
                assert!(
                    matches!(opened.verify(), Err(FormatError::DataChecksum { .. })),
                    "flip at {byte}:{bit}"
                );
            }
        }
    }
}

#[test]
fn every_bit_flip_in_preamble_and_header_is_rejected_at_open() {
    let f = small_model();
    let header_at = header_offset(&f);
    let ranges = (0..64).chain(header_at..f.len());
    for byte in ranges {
        for bit in 0..8 {
            let mut g = f.clone();
            g[byte] ^= 1 << bit;
            assert!(LsqFile::from_bytes(&g).is_err(), "flip at {byte}:{bit} accepted");
        }
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lsqr-format-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn an_unfinished_writer_leaves_nothing_and_clobbers_nothing() {
    let dir = temp_dir("atomic");
    let dest = dir.join("model.lsq");
    fs::write(&dest, b"previous contents").unwrap();
    {
        let mut w = LsqFileWriter::create(&dest).unwrap();
        w.writer().add_raw_f32("a", &[2], &[1.0, 2.0]).unwrap();
        // An error mid-way: the caller gives up.
        assert!(w.writer().add_raw_f32("a", &[1], &[1.0]).is_err());
    }
    assert_eq!(fs::read(&dest).unwrap(), b"previous contents");
    let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["model.lsq"], "no temporary file is left behind");

    // A failing finish (invalid graph) also leaves the old file.
    let mut w = LsqFileWriter::create(&dest).unwrap();
    w.writer()
        .set_graph(lsqr_format::Graph { outputs: vec!["nothing".into()], ..Default::default() });
    assert!(w.finish().is_err());
    assert_eq!(fs::read(&dest).unwrap(), b"previous contents");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);

    // Finishing replaces it.
    let mut w = LsqFileWriter::create(&dest).unwrap();
    w.writer().add_raw_f32("a", &[1], &[3.0]).unwrap();
    w.finish().unwrap();
    let f = LsqFile::open(&dest).unwrap();
    assert_eq!(f.tensor("a").unwrap().to_f32_vec().unwrap(), [3.0]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writer_into_a_missing_folder_fails_cleanly() {
    let e = LsqFileWriter::create("/nonexistent-dir/x.lsq").unwrap_err();
    assert!(e.to_string().contains("/nonexistent-dir"), "{e}");
}

/// Sections beyond 4 GiB, in a sparse file: u64 offsets end to end without
/// writing 4 GiB.
#[test]
fn offsets_past_4_gib() {
    const FAR: u64 = (4 << 30) + 4096; // 4 GiB + 4 KiB, a multiple of 64
    let dir = temp_dir("4gib");
    let path = dir.join("far.lsq");
    let weights = values(64 * 3, 7, 1.0);
    let q = quantize(&weights, &[3, 64], &QuantizeOptions::new(CodecSpec::Log { mu: None }, 6))
        .unwrap();
    let mut packed = vec![0u8; lsqr_pack::packed_len(q.codes().len(), 6).unwrap()];
    lsqr_pack::pack_into(q.codes(), 6, &mut packed).unwrap();
    let scales = q.scales().to_le_bytes();
    let scales_at = FAR + packed.len() as u64 + (64 - packed.len() as u64 % 64) % 64;
    let header_at = scales_at + 64 * 2;
    let Storage::Quantized(spec) = quantized_spec(&q) else { unreachable!() };
    let info = TensorInfo {
        name: "far".into(),
        shape: vec![3, 64],
        storage: Storage::Quantized(spec),
        data: Section { offset: FAR, len: packed.len() as u64, crc32: crc32fast::hash(&packed) },
        scales: Section {
            offset: scales_at,
            len: scales.len() as u64,
            crc32: crc32fast::hash(&scales),
        },
        table: Section::EMPTY,
    };
    let header = encode_header(&[], &[info], None);
    let mut file = fs::File::create(&path).unwrap();
    file.write_all(&encode_preamble(0, header_at, header.len() as u64, crc32fast::hash(&header)))
        .unwrap();
    file.seek(SeekFrom::Start(FAR)).unwrap();
    file.write_all(&packed).unwrap();
    file.seek(SeekFrom::Start(scales_at)).unwrap();
    file.write_all(&scales).unwrap();
    file.seek(SeekFrom::Start(header_at)).unwrap();
    file.write_all(&header).unwrap();
    drop(file);
    assert!(fs::metadata(&path).unwrap().len() > 4 << 30);

    let f = LsqFile::open(&path).unwrap();
    assert_eq!(f.tensors()[0].data.offset, FAR);
    assert_eq!(f.tensor("far").unwrap().to_f32_vec().unwrap(), q.dequantize());
    fs::remove_dir_all(&dir).unwrap();
}

/// The spec of a quantized tensor, as the writer would record it.
fn quantized_spec(q: &lsqr_codec::QuantizedTensor) -> Storage {
    let mut w = lsqr_format::LsqWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    w.add_quantized("t", q).unwrap();
    let bytes = w.finish().unwrap().into_inner();
    LsqFile::from_bytes(&bytes).unwrap().tensors()[0].storage
}
