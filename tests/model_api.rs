//! The facade's reference-shaped API: save a state dict, load it, read
//! tensors back as ndarray arrays.

use lsqr::codec::{CodecKind, CodecSpec, QuantizeOptions, Scaling};
use lsqr::synthetic::{weights, Distribution};
use ndarray::{ArrayD, IxDyn};

fn temp_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("lsqr-api-{tag}-{}.lsq", std::process::id()))
}

#[test]
fn save_and_load_a_state_dict() {
    let w = ArrayD::from_shape_vec(
        IxDyn(&[16, 3, 3, 3]),
        weights(Distribution::Gaussian, 16 * 27, 0.1, 1),
    )
    .unwrap();
    let b =
        ArrayD::from_shape_vec(IxDyn(&[16]), weights(Distribution::Gaussian, 16, 0.1, 2)).unwrap();
    let path = temp_path("state");
    let options = QuantizeOptions::new(CodecSpec::Log { mu: None }, 6);
    let report =
        lsqr::save_lsq_model([("conv.weight", w.view()), ("conv.bias", b.view())], &options, &path)
            .unwrap();
    assert_eq!(report.len(), 2);
    assert_eq!(report[0].codec, Some(CodecKind::Log));
    assert!(report[0].metrics.snr_db() > 30.0, "{}", report[0].metrics.snr_db());
    // 6 bits per weight plus one f16 scale per 27-element row (groups of 64 exceed the row).
    assert_eq!(report[0].stored_bytes, (16 * 27 * 6usize).div_ceil(8) as u64 + 16 * 2);
    assert_eq!(report[1].codec, None);

    let model = lsqr::load_lsq_model(&path).unwrap();
    model.verify().unwrap();
    assert_eq!(model.tensor_names().collect::<Vec<_>>(), ["conv.weight", "conv.bias"]);
    let weight = model.tensor("conv.weight").unwrap();
    assert_eq!(weight.shape(), [16, 3, 3, 3]);
    assert_eq!(
        (weight.codec(), weight.bits(), weight.scaling()),
        (Some(CodecKind::Log), Some(6), Some(Scaling::Group(64)))
    );
    let back = weight.dequantize().unwrap();
    assert_eq!(back.shape(), w.shape());
    let err = lsqr::codec::ErrorMetrics::between(w.as_slice().unwrap(), back.as_slice().unwrap())
        .unwrap();
    assert_eq!(err, report[0].metrics, "the report describes what was stored");
    let bias = model.tensor("conv.bias").unwrap();
    assert_eq!(bias.dequantize().unwrap(), b, "raw tensors come back bit-exact");
    let mut buf = vec![0.0f32; 16];
    bias.dequantize_into(&mut buf).unwrap();
    assert_eq!(buf, b.as_slice().unwrap());
    assert!(model.tensor("missing").is_err());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_non_finite_weight_names_the_tensor_and_leaves_no_file() {
    let mut w = ArrayD::<f32>::zeros(IxDyn(&[4, 4]));
    w[[2, 1]] = f32::NAN;
    let path = temp_path("nan");
    let options = QuantizeOptions::new(CodecSpec::Uniform, 4);
    let e = lsqr::save_lsq_model([("bad.weight", w.view())], &options, &path).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("bad.weight") && msg.contains("element 9"), "{msg}");
    assert!(!path.exists());
}

#[test]
fn whole_model_loads_check_data_checksums_unless_told_not_to() {
    let w = ArrayD::from_shape_vec(IxDyn(&[8, 64]), weights(Distribution::Gaussian, 512, 0.1, 3))
        .unwrap();
    let path = temp_path("crc");
    let options = QuantizeOptions::new(CodecSpec::Uniform, 4);
    lsqr::save_lsq_model([("fc.weight", w.view())], &options, &path).unwrap();
    let data = lsqr::format::LsqFile::open(&path).unwrap().tensors()[0].data;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[data.offset as usize + 5] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    let message = lsqr::load_lsq_model(&path).unwrap_err().to_string();
    assert!(message.contains("fc.weight") && message.contains("data"), "{message}");
    let message = lsqr::LsqModel::from_bytes(&bytes).unwrap_err().to_string();
    assert!(message.contains("fc.weight"), "{message}");
    // Opting out validates the header only: the changed codes decode.
    let unchecked = lsqr::LoadOptions::new().verify(false);
    let model = lsqr::load_lsq_model_with(&path, unchecked).unwrap();
    assert!(model.verify().is_err());
    assert_eq!(model.tensor("fc.weight").unwrap().dequantize().unwrap().len(), 512);
    assert!(lsqr::LsqModel::from_bytes_with(&bytes, unchecked).is_ok());
    std::fs::remove_file(&path).unwrap();
}
