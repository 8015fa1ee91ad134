//! The C API called from Rust exactly as C would: every status path, the
//! last-error messages, and results against lsqr-format's decoder and
//! naive loops.

use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};

use crate::example_model;
use crate::*;
use lsqr_format::LsqFile;

fn last_error() -> String {
    // SAFETY: lsqr_last_error never returns NULL and the string is
    // NUL-terminated.
    unsafe { CStr::from_ptr(lsqr_last_error()) }.to_str().unwrap().to_owned()
}

/// An open model over a buffer that the struct keeps alive.
struct Model {
    ptr: *mut lsqr_model,
    _bytes: Vec<u8>,
}

impl Model {
    fn open(bytes: Vec<u8>) -> Self {
        let mut ptr = null_mut();
        // SAFETY: the buffer is valid for `len` bytes and kept alive by the
        // returned struct until `drop` frees the model.
        let status = unsafe { lsqr_model_open_memory(bytes.as_ptr(), bytes.len(), &mut ptr) };
        assert_eq!(status, lsqr_status::Ok, "{}", last_error());
        assert!(!ptr.is_null());
        Self { ptr, _bytes: bytes }
    }

    fn example() -> Self {
        Self::open(example_model::build())
    }

    fn tensor(&self, name: &str) -> *const lsqr_tensor {
        let name = CString::new(name).unwrap();
        let mut t = null();
        // SAFETY: live model, NUL-terminated name, writable out.
        let status = unsafe { lsqr_model_find_tensor(self.ptr, name.as_ptr(), &mut t) };
        assert_eq!(status, lsqr_status::Ok, "{}", last_error());
        t
    }

    fn info(&self, name: &str) -> lsqr_tensor_info {
        let mut info = std::mem::MaybeUninit::uninit();
        // SAFETY: live tensor handle, writable out.
        let status = unsafe { lsqr_tensor_get_info(self.tensor(name), info.as_mut_ptr()) };
        assert_eq!(status, lsqr_status::Ok);
        // SAFETY: written on OK.
        unsafe { info.assume_init() }
    }

    fn dequantize(&self, name: &str) -> Vec<f32> {
        let n = self.info(name).element_count;
        let mut out = vec![f32::NAN; n];
        // SAFETY: live tensor handle, `n` writable floats.
        let status = unsafe { lsqr_tensor_dequantize(self.tensor(name), out.as_mut_ptr(), n) };
        assert_eq!(status, lsqr_status::Ok, "{}", last_error());
        out
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: opened by `Model::open`, freed once.
        unsafe { lsqr_model_free(self.ptr) };
    }
}

#[test]
fn status_numbers_are_dense_and_named() {
    for (i, s) in lsqr_status::all().iter().enumerate() {
        assert_eq!(*s as u32, i as u32);
        // SAFETY: static NUL-terminated strings.
        let text = unsafe { CStr::from_ptr(lsqr_status_str(*s as u32)) };
        assert!(!text.to_bytes().is_empty());
        assert_ne!(text.to_bytes(), b"unknown status");
    }
    // SAFETY: as above.
    let unknown = unsafe { CStr::from_ptr(lsqr_status_str(999)) };
    assert_eq!(unknown.to_bytes(), b"unknown status");
    // SAFETY: as above.
    let ok = unsafe { CStr::from_ptr(lsqr_status_str(0)) };
    assert_eq!(ok.to_bytes(), b"ok");
}

#[test]
fn free_null_is_a_no_op_and_free_keeps_the_last_error() {
    let m = Model::example();
    let mut t = null();
    // SAFETY: NULL is explicitly allowed for free; live model otherwise.
    unsafe {
        lsqr_model_free(null_mut());
        assert_eq!(lsqr_model_find_tensor(m.ptr, c"gone".as_ptr(), &mut t), lsqr_status::NotFound);
    }
    drop(m); // lsqr_model_free
    assert_eq!(last_error(), "no tensor named 'gone'");
}

#[test]
fn null_arguments_are_refused_and_outputs_untouched() {
    let m = Model::example();
    let t = m.tensor("fc.weight");
    let name = c"fc.weight";
    let mut count = 12345usize;
    let mut tensor: *const lsqr_tensor = std::ptr::dangling();
    let mut model: *mut lsqr_model = std::ptr::dangling_mut();
    let mut floats = [7.0f32; 4096];
    // SAFETY: every pointer is NULL, or valid for what the function reads
    // or writes; the non-NULL outputs are never dereferenced by us.
    unsafe {
        // Each call is refused, and the message names the NULL argument.
        macro_rules! refused {
            ($call:expr, $arg:literal) => {
                assert_eq!($call, lsqr_status::NullArgument, stringify!($call));
                assert_eq!(last_error(), concat!("`", $arg, "` is NULL"));
            };
        }
        refused!(lsqr_model_open(null(), &mut model), "path");
        refused!(lsqr_model_open(c"x".as_ptr(), null_mut()), "out");
        refused!(lsqr_model_open_memory(null(), 10, &mut model), "buf");
        refused!(lsqr_model_tensor_count(null(), &mut count), "model");
        refused!(lsqr_model_tensor_count(m.ptr, null_mut()), "out");
        refused!(lsqr_model_tensor_at(null(), 0, &mut tensor), "model");
        refused!(lsqr_model_find_tensor(m.ptr, null(), &mut tensor), "name");
        refused!(lsqr_model_find_tensor(null(), name.as_ptr(), &mut tensor), "model");
        refused!(lsqr_tensor_get_info(null(), null_mut()), "tensor");
        refused!(lsqr_tensor_dequantize(null(), floats.as_mut_ptr(), 4096), "tensor");
        refused!(lsqr_tensor_dequantize(t, null_mut(), 4096), "out");
        refused!(lsqr_linear(null(), null(), floats.as_ptr(), 1, floats.as_mut_ptr()), "weight");
        refused!(lsqr_linear(t, null(), null(), 1, floats.as_mut_ptr()), "x");
        refused!(lsqr_model_metadata_get_int(m.ptr, null(), null_mut()), "key");
        refused!(lsqr_conv2d_output_shape(t, null(), null(), null_mut()), "params");
    }
    assert_eq!(count, 12345);
    assert_eq!(tensor, std::ptr::dangling());
    assert_eq!(model, std::ptr::dangling_mut());
    assert!(floats.iter().all(|&v| v == 7.0));
}

#[test]
fn tensors_are_listed_and_described() {
    let m = Model::example();
    let mut count = 0;
    // SAFETY: live model, writable out.
    assert_eq!(unsafe { lsqr_model_tensor_count(m.ptr, &mut count) }, lsqr_status::Ok);
    assert_eq!(count, 6);
    let mut names = Vec::new();
    for i in 0..count {
        let mut t = null();
        // SAFETY: live model, writable outs; the name is owned by the model.
        unsafe {
            assert_eq!(lsqr_model_tensor_at(m.ptr, i, &mut t), lsqr_status::Ok);
            let mut info = std::mem::MaybeUninit::uninit();
            assert_eq!(lsqr_tensor_get_info(t, info.as_mut_ptr()), lsqr_status::Ok);
            names.push(CStr::from_ptr(info.assume_init().name).to_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        names,
        ["fc.weight", "fc.bias", "conv.weight", "conv.bias", "norm.gamma", "head.weight"]
    );

    let fc = m.info("fc.weight");
    assert_eq!((fc.ndim, &fc.dims[..3]), (2, &[32, 128, 0][..]));
    assert_eq!(fc.element_count, 32 * 128);
    assert_eq!((fc.codec, fc.dtype, fc.bits), (lsqr_codec::Log, lsqr_dtype::None, 4));
    assert_eq!((fc.scaling, fc.group_size), (lsqr_scaling::Group, 64));
    assert!(fc.stored_bytes >= 32 * 128 / 2);
    let conv = m.info("conv.weight");
    assert_eq!((conv.ndim, conv.dims[3], conv.codec, conv.bits), (4, 3, lsqr_codec::Nf, 3));
    assert_eq!((conv.scaling, conv.group_size), (lsqr_scaling::Row, 0));
    let bias = m.info("conv.bias");
    assert_eq!((bias.codec, bias.dtype, bias.bits), (lsqr_codec::Raw, lsqr_dtype::F16, 16));
    assert_eq!(bias.scaling, lsqr_scaling::None);
    assert_eq!(m.info("norm.gamma").dtype, lsqr_dtype::Bf16);

    // Out of range and unknown names: NOT_FOUND, output untouched.
    let mut t: *const lsqr_tensor = std::ptr::dangling();
    // SAFETY: live model, NUL-terminated name, writable out.
    unsafe {
        assert_eq!(lsqr_model_tensor_at(m.ptr, 6, &mut t), lsqr_status::NotFound);
        assert!(last_error().contains("index 6"), "{}", last_error());
        let status = lsqr_model_find_tensor(m.ptr, c"nope".as_ptr(), &mut t);
        assert_eq!(status, lsqr_status::NotFound);
        assert_eq!(last_error(), "no tensor named 'nope'");
        // A name that is not UTF-8.
        let bad = [0xffu8 as c_char, 0];
        assert_eq!(
            lsqr_model_find_tensor(m.ptr, bad.as_ptr(), &mut t),
            lsqr_status::InvalidArgument
        );
    }
    assert_eq!(t, std::ptr::dangling());
}

#[test]
fn dequantize_matches_the_reader_for_raw_and_quantized_tensors() {
    let bytes = example_model::build();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let m = Model::open(bytes.clone());
    for t in file.tensors() {
        let expected = file.tensor(&t.name).unwrap().to_f32_vec().unwrap();
        assert_eq!(m.dequantize(&t.name), expected, "{}", t.name);
    }
    // Raw f32 comes back exactly.
    assert_eq!(m.dequantize("head.weight"), example_model::values(4 * 32, 6));

    // Too small: BUFFER_TOO_SMALL, buffer untouched; larger is fine.
    let mut out = vec![9.0f32; 32 * 128 + 1];
    // SAFETY: live handle, `out.len()` writable floats.
    unsafe {
        let t = m.tensor("fc.weight");
        assert_eq!(
            lsqr_tensor_dequantize(t, out.as_mut_ptr(), 32 * 128 - 1),
            lsqr_status::BufferTooSmall
        );
        assert!(last_error().contains("'fc.weight'"), "{}", last_error());
        assert!(out.iter().all(|&v| v == 9.0));
        assert_eq!(lsqr_tensor_dequantize(t, out.as_mut_ptr(), out.len()), lsqr_status::Ok);
        assert_eq!(last_error(), "", "a success clears the last error");
    }
    assert_eq!(out[32 * 128], 9.0, "only element_count floats are written");
}

#[test]
fn metadata_of_every_type() {
    let m = Model::example();
    let mut n = 0;
    let mut key: *const c_char = null();
    // SAFETY: live model, writable outs, NUL-terminated keys.
    unsafe {
        assert_eq!(lsqr_model_metadata_count(m.ptr, &mut n), lsqr_status::Ok);
        assert_eq!(n, 6);
        assert_eq!(lsqr_model_metadata_key_at(m.ptr, 4, &mut key), lsqr_status::Ok);
        assert_eq!(CStr::from_ptr(key).to_bytes(), b"input_shape");
        assert_eq!(lsqr_model_metadata_key_at(m.ptr, 6, &mut key), lsqr_status::NotFound);

        let mut ty = lsqr_value_type::Bool;
        assert_eq!(lsqr_model_metadata_type(m.ptr, c"mean".as_ptr(), &mut ty), lsqr_status::Ok);
        assert_eq!(ty, lsqr_value_type::FloatList);

        // String: size query, too small (needed written, buf untouched), ok.
        let mut needed = 0;
        let st =
            lsqr_model_metadata_get_string(m.ptr, c"model".as_ptr(), null_mut(), 0, &mut needed);
        assert_eq!(st, lsqr_status::BufferTooSmall);
        assert_eq!(needed, "lsqr-capi example".len() + 1);
        let mut buf = [b'#' as c_char; 32];
        let st = lsqr_model_metadata_get_string(
            m.ptr,
            c"model".as_ptr(),
            buf.as_mut_ptr(),
            5,
            &mut needed,
        );
        assert_eq!(st, lsqr_status::BufferTooSmall);
        assert!(buf.iter().all(|&c| c == b'#' as c_char));
        let st = lsqr_model_metadata_get_string(
            m.ptr,
            c"model".as_ptr(),
            buf.as_mut_ptr(),
            32,
            null_mut(),
        );
        assert_eq!(st, lsqr_status::Ok);
        assert_eq!(CStr::from_ptr(buf.as_ptr()).to_bytes(), b"lsqr-capi example");

        let mut i = 0i64;
        assert_eq!(lsqr_model_metadata_get_int(m.ptr, c"layers".as_ptr(), &mut i), lsqr_status::Ok);
        assert_eq!(i, 2);
        let mut f = 0.0f64;
        assert_eq!(
            lsqr_model_metadata_get_float(m.ptr, c"dropout".as_ptr(), &mut f),
            lsqr_status::Ok
        );
        assert_eq!(f, 0.125);
        assert_eq!(
            lsqr_model_metadata_get_float(m.ptr, c"layers".as_ptr(), &mut f),
            lsqr_status::Ok
        );
        assert_eq!(f, 2.0, "ints read as floats");
        let mut b = false;
        assert_eq!(
            lsqr_model_metadata_get_bool(m.ptr, c"quantized".as_ptr(), &mut b),
            lsqr_status::Ok
        );
        assert!(b);

        let mut ints = [0i64; 4];
        let st = lsqr_model_metadata_get_int_list(
            m.ptr,
            c"input_shape".as_ptr(),
            ints.as_mut_ptr(),
            3,
            &mut needed,
        );
        assert_eq!((st, needed, ints), (lsqr_status::BufferTooSmall, 4, [0; 4]));
        let st = lsqr_model_metadata_get_int_list(
            m.ptr,
            c"input_shape".as_ptr(),
            ints.as_mut_ptr(),
            4,
            &mut needed,
        );
        assert_eq!((st, ints), (lsqr_status::Ok, [1, 3, 8, 8]));
        let mut floats = [0.0f64; 3];
        let st = lsqr_model_metadata_get_float_list(
            m.ptr,
            c"mean".as_ptr(),
            floats.as_mut_ptr(),
            3,
            null_mut(),
        );
        assert_eq!((st, floats), (lsqr_status::Ok, [0.485, 0.456, 0.406]));

        // Wrong type and missing key; outputs untouched.
        i = -1;
        assert_eq!(
            lsqr_model_metadata_get_int(m.ptr, c"model".as_ptr(), &mut i),
            lsqr_status::TypeMismatch
        );
        assert_eq!(last_error(), "metadata 'model' is a string, not an int");
        assert_eq!(
            lsqr_model_metadata_get_int(m.ptr, c"missing".as_ptr(), &mut i),
            lsqr_status::NotFound
        );
        assert_eq!(last_error(), "no metadata entry 'missing'");
        assert_eq!(i, -1);
    }
}

fn naive_linear(w: &[f32], b: &[f32], x: &[f32], [out, inp]: [usize; 2], batch: usize) -> Vec<f32> {
    let mut y = vec![0.0; batch * out];
    for n in 0..batch {
        for r in 0..out {
            let dot: f64 =
                (0..inp).map(|c| f64::from(w[r * inp + c]) * f64::from(x[n * inp + c])).sum();
            y[n * out + r] = dot as f32 + b[r];
        }
    }
    y
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "element {i}: {g} vs {w}");
    }
}

#[test]
fn linear_matches_a_naive_loop_on_the_dequantized_weight() {
    let m = Model::example();
    let [out, inp] = example_model::FC;
    let w = m.dequantize("fc.weight");
    let b = m.dequantize("fc.bias");
    for batch in [1usize, 3] {
        let x = example_model::values(batch * inp, 9);
        let mut y = vec![f32::NAN; batch * out];
        // SAFETY: live handles; x and y have the lengths the weight implies.
        let st = unsafe {
            lsqr_linear(
                m.tensor("fc.weight"),
                m.tensor("fc.bias"),
                x.as_ptr(),
                batch,
                y.as_mut_ptr(),
            )
        };
        assert_eq!(st, lsqr_status::Ok, "{}", last_error());
        assert_close(&y, &naive_linear(&w, &b, &x, [out, inp], batch));
    }
    // A raw f32 weight, no bias.
    let hw = m.dequantize("head.weight");
    let x = example_model::values(2 * out, 10);
    let mut y = vec![f32::NAN; 2 * 4];
    // SAFETY: as above.
    let st = unsafe { lsqr_linear(m.tensor("head.weight"), null(), x.as_ptr(), 2, y.as_mut_ptr()) };
    assert_eq!(st, lsqr_status::Ok, "{}", last_error());
    assert_close(&y, &naive_linear(&hw, &[0.0; 4], &x, [4, out], 2));
}

#[test]
fn linear_shape_errors_leave_y_untouched() {
    let m = Model::example();
    let x = vec![0.5f32; 1024];
    let mut y = vec![3.0f32; 1024];
    // SAFETY: buffers are larger than anything the weights imply.
    unsafe {
        // A bias of the wrong length.
        let st = lsqr_linear(
            m.tensor("fc.weight"),
            m.tensor("conv.bias"),
            x.as_ptr(),
            1,
            y.as_mut_ptr(),
        );
        assert_eq!(st, lsqr_status::ShapeMismatch);
        assert!(last_error().contains("bias 'conv.bias' has 8 elements"), "{}", last_error());
        // A 4-D weight.
        let st = lsqr_linear(m.tensor("conv.weight"), null(), x.as_ptr(), 1, y.as_mut_ptr());
        assert_eq!(st, lsqr_status::ShapeMismatch);
        assert!(last_error().contains("'conv.weight'"), "{}", last_error());
        // batch * in overflows.
        let st = lsqr_linear(m.tensor("fc.weight"), null(), x.as_ptr(), usize::MAX, y.as_mut_ptr());
        assert_eq!(st, lsqr_status::InvalidArgument);
        // Misaligned x.
        let st = lsqr_linear(
            m.tensor("fc.weight"),
            null(),
            x.as_ptr().cast::<u8>().add(1).cast(),
            1,
            y.as_mut_ptr(),
        );
        assert_eq!(st, lsqr_status::InvalidArgument);
    }
    assert!(y.iter().all(|&v| v == 3.0));
}

#[allow(clippy::too_many_arguments)]
fn naive_conv(
    w: &[f32],
    b: &[f32],
    x: &[f32],
    [n, c, h, wd]: [usize; 4],
    [o, _, kh, kw]: [usize; 4],
    stride: usize,
    pad: usize,
) -> (Vec<f32>, [usize; 4]) {
    let oh = (h + 2 * pad - kh) / stride + 1;
    let ow = (wd + 2 * pad - kw) / stride + 1;
    let mut y = vec![0.0; n * o * oh * ow];
    for ni in 0..n {
        for oc in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = f64::from(b[oc]);
                    for ic in 0..c {
                        for u in 0..kh {
                            for v in 0..kw {
                                let (yy, xx) = (
                                    (i * stride + u) as isize - pad as isize,
                                    (j * stride + v) as isize - pad as isize,
                                );
                                if yy < 0 || xx < 0 || yy >= h as isize || xx >= wd as isize {
                                    continue;
                                }
                                let xv = x[((ni * c + ic) * h + yy as usize) * wd + xx as usize];
                                acc +=
                                    f64::from(w[((oc * c + ic) * kh + u) * kw + v]) * f64::from(xv);
                            }
                        }
                    }
                    y[((ni * o + oc) * oh + i) * ow + j] = acc as f32;
                }
            }
        }
    }
    (y, [n, o, oh, ow])
}

#[test]
fn conv2d_matches_a_naive_loop_and_checks_its_arguments() {
    let m = Model::example();
    let shape = [2usize, 3, 8, 8];
    let x = example_model::values(shape.iter().product(), 11);
    let params =
        lsqr_conv2d_params { stride: [2, 2], padding: [1, 1], dilation: [1, 1], groups: 1 };
    let (want, want_shape) = naive_conv(
        &m.dequantize("conv.weight"),
        &m.dequantize("conv.bias"),
        &x,
        shape,
        example_model::CONV,
        2,
        1,
    );
    let w = m.tensor("conv.weight");
    let mut out_shape = [0usize; 4];
    // SAFETY: live handles; buffers of the lengths the shapes imply.
    unsafe {
        let st = lsqr_conv2d_output_shape(w, &params, shape.as_ptr(), out_shape.as_mut_ptr());
        assert_eq!(st, lsqr_status::Ok, "{}", last_error());
        assert_eq!(out_shape, want_shape);
        let mut y = vec![f32::NAN; want.len()];
        let st = lsqr_conv2d(
            w,
            m.tensor("conv.bias"),
            &params,
            x.as_ptr(),
            shape.as_ptr(),
            y.as_mut_ptr(),
            y.len(),
        );
        assert_eq!(st, lsqr_status::Ok, "{}", last_error());
        assert_close(&y, &want);

        // Errors leave the output untouched.
        let mut y = vec![5.0f32; want.len()];
        let st = lsqr_conv2d(
            w,
            null(),
            &params,
            x.as_ptr(),
            shape.as_ptr(),
            y.as_mut_ptr(),
            want.len() - 1,
        );
        assert_eq!(st, lsqr_status::BufferTooSmall);
        let bad = lsqr_conv2d_params { groups: 0, ..params };
        let st = lsqr_conv2d(w, null(), &bad, x.as_ptr(), shape.as_ptr(), y.as_mut_ptr(), y.len());
        assert_eq!(st, lsqr_status::InvalidArgument);
        let wrong_channels = [2usize, 4, 8, 8];
        let st = lsqr_conv2d(
            w,
            null(),
            &params,
            x.as_ptr(),
            wrong_channels.as_ptr(),
            y.as_mut_ptr(),
            y.len(),
        );
        assert_eq!(st, lsqr_status::ShapeMismatch);
        let st = lsqr_conv2d(
            w,
            m.tensor("fc.bias"),
            &params,
            x.as_ptr(),
            shape.as_ptr(),
            y.as_mut_ptr(),
            y.len(),
        );
        assert_eq!(st, lsqr_status::ShapeMismatch);
        // A raw weight is not supported yet; a 2-D one is the wrong shape.
        let st = lsqr_conv2d_output_shape(
            m.tensor("head.weight"),
            &params,
            shape.as_ptr(),
            out_shape.as_mut_ptr(),
        );
        assert_eq!(st, lsqr_status::ShapeMismatch);
        assert!(y.iter().all(|&v| v == 5.0));
        assert_eq!(out_shape, want_shape);
    }
}

#[test]
fn conv2d_refuses_raw_weights_as_unsupported() {
    // A raw 4-D weight.
    let mut w = lsqr_format::LsqWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    w.add_raw_f32("k", &[1, 1, 1, 1], &[2.0]).unwrap();
    let m = Model::open(w.finish().unwrap().into_inner());
    let params =
        lsqr_conv2d_params { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 };
    let shape = [1usize, 1, 1, 1];
    let mut out = [0usize; 4];
    // SAFETY: live handle, 4-element shapes.
    let st = unsafe {
        lsqr_conv2d_output_shape(m.tensor("k"), &params, shape.as_ptr(), out.as_mut_ptr())
    };
    assert_eq!(st, lsqr_status::Unsupported);
    assert!(last_error().contains("'k' is raw"), "{}", last_error());
}

#[test]
fn corrupt_truncated_and_missing_files_are_errors_with_details() {
    let bytes = example_model::build();
    let mut out: *mut lsqr_model = std::ptr::dangling_mut();
    // Truncated: FORMAT, the message gives the lengths in hex.
    let cut = &bytes[..bytes.len() - 7];
    // SAFETY: valid buffer; `out` writable.
    let st = unsafe { lsqr_model_open_memory(cut.as_ptr(), cut.len(), &mut out) };
    assert_eq!(st, lsqr_status::Format);
    assert!(last_error().contains("truncated"), "{}", last_error());
    // Shorter than the preamble.
    // SAFETY: as above.
    let st = unsafe { lsqr_model_open_memory(bytes.as_ptr(), 10, &mut out) };
    assert_eq!(st, lsqr_status::Format);
    // Bad magic.
    let mut bad = bytes.clone();
    bad[1] ^= 0xff;
    // SAFETY: as above.
    let st = unsafe { lsqr_model_open_memory(bad.as_ptr(), bad.len(), &mut out) };
    assert_eq!(st, lsqr_status::Format);
    assert!(last_error().contains("bad magic at offset 0x0"), "{}", last_error());
    assert_eq!(out, std::ptr::dangling_mut(), "out untouched on failure");

    // A NaN scale in conv.weight's data: the file opens (data is checked
    // lazily), and using the tensor names it and the scale's byte offset.
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let offset = file.tensor_info("conv.weight").unwrap().scales.offset as usize;
    let mut nan = bytes.clone();
    nan[offset..offset + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let m = Model::open(nan);
    let mut y = vec![1.0f32; 8 * 27];
    // SAFETY: live handle, `y.len()` writable floats.
    let st = unsafe { lsqr_tensor_dequantize(m.tensor("conv.weight"), y.as_mut_ptr(), y.len()) };
    assert_eq!(st, lsqr_status::Format);
    let msg = last_error();
    assert!(msg.contains("'conv.weight'") && msg.contains(&format!("{offset:#x}")), "{msg}");
    assert!(y.iter().all(|&v| v == 1.0));

    // A flipped byte in fc.weight's packed codes: the file opens (only the
    // header is read), and verify names the tensor, section and offset.
    let data = file.tensor_info("fc.weight").unwrap().data.offset as usize;
    let mut flipped = bytes.clone();
    flipped[data + 3] ^= 0x10;
    let m = Model::open(flipped);
    // SAFETY: live model.
    assert_eq!(unsafe { lsqr_model_verify(m.ptr) }, lsqr_status::Format);
    let msg = last_error();
    assert!(msg.contains(&format!("tensor 'fc.weight': data section at {data:#x}")), "{msg}");
    let good = Model::example();
    // SAFETY: live model, and NULL which is refused.
    unsafe {
        assert_eq!(lsqr_model_verify(good.ptr), lsqr_status::Ok);
        assert_eq!(lsqr_model_verify(null()), lsqr_status::NullArgument);
    }

    // A missing path: IO, naming the path.
    // SAFETY: NUL-terminated path, writable out.
    let st = unsafe { lsqr_model_open(c"/nonexistent/dir/model.lsq".as_ptr(), &mut out) };
    assert_eq!(st, lsqr_status::Io);
    assert!(last_error().contains("/nonexistent/dir/model.lsq"), "{}", last_error());
    assert_eq!(out, std::ptr::dangling_mut());
}

#[test]
fn open_memory_is_zero_copy_and_open_maps_files() {
    let bytes = example_model::build();
    let path = std::env::temp_dir().join(format!("lsqr-capi-test-{}.lsq", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    let mut model = null_mut();
    // SAFETY: NUL-terminated path, writable out; freed below.
    unsafe {
        assert_eq!(
            lsqr_model_open(c_path.as_ptr(), &mut model),
            lsqr_status::Ok,
            "{}",
            last_error()
        );
        let mut t = null();
        assert_eq!(lsqr_model_find_tensor(model, c"head.weight".as_ptr(), &mut t), lsqr_status::Ok);
        let mut out = vec![0.0f32; 4 * 32];
        assert_eq!(lsqr_tensor_dequantize(t, out.as_mut_ptr(), out.len()), lsqr_status::Ok);
        assert_eq!(out, example_model::values(4 * 32, 6));
        lsqr_model_free(model);
    }
    std::fs::remove_file(&path).unwrap();

    // A file name that is not UTF-8 opens on Unix.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let dir = std::env::temp_dir();
        let name = std::ffi::OsStr::from_bytes(b"lsqr-capi-\xff.lsq");
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated path, writable out; freed below.
        unsafe {
            assert_eq!(
                lsqr_model_open(c_path.as_ptr(), &mut model),
                lsqr_status::Ok,
                "{}",
                last_error()
            );
            lsqr_model_free(model);
        }
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn a_model_is_shared_by_threads_and_last_errors_are_per_thread() {
    let m = Model::example();
    let want = m.dequantize("fc.weight");
    struct Shared(*const lsqr_model);
    // SAFETY: the API documents a model as readable from several threads.
    unsafe impl Sync for Shared {}
    let shared = Shared(m.ptr);
    std::thread::scope(|s| {
        for k in 0..4 {
            let (shared, want) = (&shared, &want);
            s.spawn(move || {
                let mut t = null();
                let mut out = vec![0.0f32; want.len()];
                // SAFETY: live model for the scope; thread-local outputs.
                unsafe {
                    assert_eq!(
                        lsqr_model_find_tensor(shared.0, c"fc.weight".as_ptr(), &mut t),
                        lsqr_status::Ok
                    );
                    assert_eq!(
                        lsqr_tensor_dequantize(t, out.as_mut_ptr(), out.len()),
                        lsqr_status::Ok
                    );
                    if k == 0 {
                        lsqr_model_find_tensor(shared.0, c"zzz".as_ptr(), &mut t);
                        assert_eq!(last_error(), "no tensor named 'zzz'");
                    } else {
                        assert_eq!(last_error(), "");
                    }
                }
                assert_eq!(&out, want);
            });
        }
    });
}

#[test]
fn a_name_with_a_nul_byte_is_unsupported() {
    // Valid UTF-8, so the format accepts it, but no C string can hold it.
    let mut w = lsqr_format::LsqWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    w.add_raw_f32("a\0b", &[1], &[1.0]).unwrap();
    let bytes = w.finish().unwrap().into_inner();
    let mut out = std::ptr::dangling_mut();
    // SAFETY: valid buffer; writable out.
    let st = unsafe { lsqr_model_open_memory(bytes.as_ptr(), bytes.len(), &mut out) };
    assert_eq!(st, lsqr_status::Unsupported, "{}", last_error());
    assert_eq!(
        last_error(),
        "tensor name \"a\\0b\" contains a NUL byte, which a C string cannot hold"
    );
    assert_eq!(out, std::ptr::dangling_mut());
}
