//! A file may not make far more than its size on disk: stride-0 views and
//! deflated storages that would turn kilobytes into gigabytes are refused,
//! naming the tensor (`lsqr_import::AMPLIFICATION`).

use std::io::Write;

/// `{'w': _rebuild_tensor_v2(storage '0' (FloatStorage, 1 element), 0,
/// (n,), (stride,), False, OrderedDict())}`.
fn pickle(n: u32, stride: u8) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', 0x8c, 1, b'w'];
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.extend_from_slice(b"(\x8c\x07storagectorch\nFloatStorage\n\x8c\x010\x8c\x03cpuK\x01tQ");
    p.extend_from_slice(&[b'K', 0, b'(', b'J']);
    p.extend_from_slice(&n.to_le_bytes());
    p.extend_from_slice(&[b't', b'(', b'K', stride, b't', 0x89]);
    p.extend_from_slice(b"ccollections\nOrderedDict\n)R");
    p.extend_from_slice(b"tRs.");
    p
}

fn checkpoint(pickle: &[u8], storage: &[u8], deflate: bool) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let data = if deflate {
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
        } else {
            stored
        };
        zip.start_file("archive/data.pkl", stored).unwrap();
        zip.write_all(pickle).unwrap();
        zip.start_file("archive/data/0", data).unwrap();
        zip.write_all(storage).unwrap();
        zip.finish().unwrap();
    }
    out.into_inner()
}

#[test]
fn a_small_view_is_accepted() {
    let m = lsqr_import::from_bytes(
        checkpoint(&pickle(1000, 0), &1.5f32.to_le_bytes(), false),
        "ok.pt",
    )
    .unwrap();
    assert_eq!(m.tensors[0].shape, [1000]);
    assert_eq!(m.to_f32(&m.tensors[0]).unwrap().iter().sum::<f32>(), 1500.0);
}

#[test]
fn stride_zero_views_beyond_the_bound_are_refused_naming_the_tensor() {
    // 16 M elements (64 MB of f32) from a file of about 400 bytes: within
    // the per-view limit of the PyTorch importer, beyond the file's bound.
    for n in [1u32 << 24, 1 << 30] {
        let bytes = checkpoint(&pickle(n, 0), &1.5f32.to_le_bytes(), false);
        assert!(bytes.len() < 1024);
        let e = lsqr_import::from_bytes(bytes, "stride0.pt").unwrap_err();
        assert_eq!(e.tensor.as_deref(), Some("w"), "{e}");
        let text = e.to_string();
        assert!(text.contains("stride0.pt") && text.contains("'w'"), "{text}");
    }
}

#[test]
fn deflated_storages_beyond_the_bound_are_refused_naming_the_tensor() {
    // 8 MB of zeros deflates to a few KB: the inflated storage alone is
    // beyond 64 × the file's size + 4 MiB.
    let zeros = vec![0u8; 8 << 20];
    let bytes = checkpoint(&pickle(2 << 20, 1), &zeros, true);
    assert!(bytes.len() < 64 << 10, "{}", bytes.len());
    let e = lsqr_import::from_bytes(bytes, "bomb.pt").unwrap_err();
    assert_eq!(e.tensor.as_deref(), Some("w"), "{e}");
    assert!(e.message.contains("zip bomb"), "{e}");
}
