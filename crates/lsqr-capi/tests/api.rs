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
fn conv2d_runs_raw_float_weights() {
    // A raw 2 -> 1 channel 1x1 weight [3, -1] and bias 0.5.
    let mut w = lsqr_format::LsqWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    w.add_raw_f32("k", &[1, 2, 1, 1], &[3.0, -1.0]).unwrap();
    w.add_raw_f32("b", &[1], &[0.5]).unwrap();
    let m = Model::open(w.finish().unwrap().into_inner());
    let params =
        lsqr_conv2d_params { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 };
    let shape = [1usize, 2, 1, 2];
    let input = [1.0f32, 2.0, 10.0, 20.0];
    let mut out_shape = [0usize; 4];
    let mut out = [f32::NAN; 2];
    // SAFETY: live handles, 4-element shapes, buffers of the stated lengths.
    let st = unsafe {
        lsqr_conv2d_output_shape(m.tensor("k"), &params, shape.as_ptr(), out_shape.as_mut_ptr())
    };
    assert_eq!(st, lsqr_status::Ok, "{}", last_error());
    assert_eq!(out_shape, [1, 1, 1, 2]);
    // SAFETY: as above.
    let st = unsafe {
        lsqr_conv2d(
            m.tensor("k"),
            m.tensor("b"),
            &params,
            input.as_ptr(),
            shape.as_ptr(),
            out.as_mut_ptr(),
            out.len(),
        )
    };
    assert_eq!(st, lsqr_status::Ok, "{}", last_error());
    // Pixel 0: 3 * 1 - 10 + 0.5; pixel 1: 3 * 2 - 20 + 0.5.
    assert_eq!(out, [-6.5, -13.5]);
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
    // lazily), and using the tensor names it and the scales' byte offset
    // (the section's CRC-32 no longer matches; with a matching one, the
    // reader's scale check names the same offset: lsqr-format's tests).
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
fn a_name_with_a_nul_byte_is_refused_by_the_format() {
    // FORMAT.md §3.1 forbids U+0000 in names (no C string can hold one):
    // the writer refuses such names, so the file is written with "a\x01b"
    // and patched, with the header CRC recomputed; the reader refuses it.
    let mut w = lsqr_format::LsqWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    w.add_raw_f32("a\x01b", &[1], &[1.0]).unwrap();
    assert!(w.add_raw_f32("c\0d", &[1], &[1.0]).is_err(), "the writer refuses a NUL");
    let mut bytes = w.finish().unwrap().into_inner();
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let (offset, len) = (u64_at(&bytes, 16) as usize, u64_at(&bytes, 24) as usize);
    let header = &mut bytes[offset..offset + len];
    let at = header.windows(3).position(|w| w == b"a\x01b").unwrap();
    header[at + 1] = 0;
    let preamble = lsqr_format::raw::encode_preamble(0, offset as u64, len as u64, crc32(header));
    bytes[..64].copy_from_slice(&preamble);
    let mut out = std::ptr::dangling_mut();
    // SAFETY: valid buffer; writable out.
    let st = unsafe { lsqr_model_open_memory(bytes.as_ptr(), bytes.len(), &mut out) };
    assert_eq!(st, lsqr_status::Format, "{}", last_error());
    let at = offset + at + 1;
    assert_eq!(
        last_error(),
        format!("tensor 0 name contains a NUL byte (U+0000) at {at:#x}; names must not")
    );
    assert_eq!(out, std::ptr::dangling_mut());
}

/// CRC-32 (IEEE, as zlib's), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

// ---- micro runtime ----

use lsqr_facade::codec::{CodecKind, CodecSpec, QuantizeOptions};
use lsqr_facade::runtime::{ModelBuilder, Plan, WeightFormat};

/// A graph the runtime runs: `x [2, 16]` -> linear 16x12 (log C=4, bias)
/// -> relu -> linear 12x5 (f32, bias) -> softmax; outputs `y` (the
/// softmax) and `h` (the relu).
fn graph_model() -> Vec<u8> {
    let log4 =
        WeightFormat::Quantized(QuantizeOptions::new(CodecSpec::default_for(CodecKind::Log), 4));
    let mut b = ModelBuilder::new();
    b.input("x", &[2, 16])
        .linear("a", "x", "fc1", &example_model::values(192, 1), [12, 16], Some(&[0.01; 12]), &log4)
        .activation("h", "a", "relu")
        .linear(
            "z",
            "h",
            "fc2",
            &example_model::values(60, 2),
            [5, 12],
            Some(&[0.1; 5]),
            &WeightFormat::F32,
        )
        .layer(lsqr_format::Layer {
            op: "softmax".into(),
            inputs: vec!["z".into()],
            outputs: vec!["y".into()],
            weights: vec![],
            attrs: vec![],
        })
        .output("y")
        .output("h");
    b.to_bytes().unwrap()
}

/// 32 input values.
fn graph_input(seed: u32) -> Vec<f32> {
    example_model::values(32, seed).iter().map(|v| v * 20.0).collect()
}

/// A runner over `model` with its own arena, which the struct keeps alive
/// (at an odd address, to show any alignment works). The arena is held as
/// a raw pointer, as a C caller holds it: a Rust reference to it (say
/// `Vec::as_ptr_range`) would claim access to memory the runner is
/// writing, which Miri rightly reports.
struct Micro {
    ptr: *mut lsqr_micro,
    arena: std::ptr::NonNull<[u8]>,
}

impl Micro {
    fn load(model: *const lsqr_model) -> Self {
        let mut need = 0usize;
        // SAFETY: live model, writable out.
        let st = unsafe { lsqr_micro_arena_size(model, &mut need) };
        assert_eq!(st, lsqr_status::Ok, "{}", last_error());
        let arena = std::ptr::NonNull::from(Box::leak(vec![0xa5u8; need + 1].into_boxed_slice()));
        let mut ptr = null_mut();
        // SAFETY: `need` writable bytes from offset 1, kept alive (and not
        // otherwise touched) by the returned struct until `drop` frees the
        // runner; the model outlives it in every test.
        let st = unsafe {
            lsqr_micro_load(model, arena.as_ptr().cast::<u8>().add(1).cast(), need, &mut ptr)
        };
        if st != lsqr_status::Ok {
            // SAFETY: from `Box::leak` above, not used by any runner.
            drop(unsafe { Box::from_raw(arena.as_ptr()) });
        }
        assert_eq!(st, lsqr_status::Ok, "{}", last_error());
        assert!(!ptr.is_null());
        Self { ptr, arena }
    }

    /// The arena's address range, computed without a reference to it.
    fn arena_range(&self) -> std::ops::Range<*const u8> {
        let start = self.arena.as_ptr().cast::<u8>().cast_const();
        start..start.wrapping_add(self.arena.len())
    }

    fn set_input(&self, index: usize, x: &[f32]) -> lsqr_status {
        // SAFETY: live runner, `x.len()` readable floats.
        unsafe { lsqr_micro_set_input(self.ptr, index, x.as_ptr(), x.len()) }
    }

    fn output(&self, index: usize, len: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; len];
        // SAFETY: live runner, `len` writable floats.
        let st = unsafe { lsqr_micro_get_output(self.ptr, index, out.as_mut_ptr(), len) };
        assert_eq!(st, lsqr_status::Ok, "{}", last_error());
        out
    }

    fn count(
        &self,
        f: unsafe extern "C" fn(*const lsqr_micro, *mut usize) -> lsqr_status,
    ) -> usize {
        let mut n = usize::MAX;
        // SAFETY: live runner, writable out.
        assert_eq!(unsafe { f(self.ptr, &mut n) }, lsqr_status::Ok);
        n
    }
}

impl Drop for Micro {
    fn drop(&mut self) {
        // SAFETY: loaded by `Micro::load`, freed once, before the arena,
        // which came from `Box::leak` in `Micro::load` and is freed once.
        unsafe {
            lsqr_micro_free(self.ptr);
            drop(Box::from_raw(self.arena.as_ptr()));
        }
    }
}

/// The outputs of `lsqr::runtime` run directly on the same bytes.
fn rust_outputs(bytes: &[u8], x: &[f32]) -> (usize, Vec<Vec<f32>>) {
    let file = LsqFile::from_bytes(bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    let mut arena = vec![0u8; plan.arena_len()];
    let mut runner = plan.bind(&mut arena).unwrap();
    runner.set_input(0, x).unwrap();
    runner.run().unwrap();
    let outs = (0..plan.outputs().len()).map(|i| runner.output(i).unwrap().to_vec()).collect();
    (plan.arena_len(), outs)
}

#[test]
fn micro_results_equal_the_rust_runtime_and_run_layer_equals_run() {
    let bytes = graph_model();
    let m = Model::open(bytes.clone());
    let micro = Micro::load(m.ptr);
    let (x1, x2) = (graph_input(3), graph_input(4));
    let (arena_len, want1) = rust_outputs(&bytes, &x1);
    let (_, want2) = rust_outputs(&bytes, &x2);
    assert_ne!(want1, want2);
    let mut need = 0;
    // SAFETY: live model, writable out.
    unsafe { lsqr_micro_arena_size(m.ptr, &mut need) };
    assert_eq!(need, arena_len);

    assert_eq!(micro.count(lsqr_micro_layer_count), 4);
    assert_eq!(micro.count(lsqr_micro_input_count), 1);
    assert_eq!(micro.count(lsqr_micro_output_count), 2);
    let shape = |f: unsafe extern "C" fn(
        *const lsqr_micro,
        usize,
        *mut usize,
        *mut usize,
    ) -> lsqr_status,
                 i: usize| {
        let (mut ndim, mut dims) = (99usize, [77usize; LSQR_MAX_DIMS]);
        // SAFETY: live runner; writable ndim and LSQR_MAX_DIMS dims.
        assert_eq!(unsafe { f(micro.ptr, i, &mut ndim, dims.as_mut_ptr()) }, lsqr_status::Ok);
        assert!(dims[ndim..].iter().all(|&d| d == 0));
        dims[..ndim].to_vec()
    };
    assert_eq!(shape(lsqr_micro_input_shape, 0), [2, 16]);
    assert_eq!(shape(lsqr_micro_output_shape, 0), [2, 5]);
    assert_eq!(shape(lsqr_micro_output_shape, 1), [2, 12]);

    // lsqr_micro_load zeroed the arena: before any run, outputs read 0.
    assert_eq!(micro.output(0, 10), [0.0; 10]);
    // run: bit-identical to lsqr::runtime.
    assert_eq!(micro.set_input(0, &x1), lsqr_status::Ok);
    // SAFETY: live runner.
    assert_eq!(unsafe { lsqr_micro_run(micro.ptr) }, lsqr_status::Ok);
    assert_eq!(micro.output(0, 10), want1[0]);
    assert_eq!(micro.output(1, 24), want1[1]);
    let rows: Vec<f32> = want1[0].chunks(5).map(|r| r.iter().sum()).collect();
    assert!(rows.iter().all(|s| (s - 1.0).abs() < 1e-5), "softmax rows: {rows:?}");
    // A larger buffer is filled with exactly the output's values.
    let mut big = [-1.0f32; 13];
    // SAFETY: live runner, 13 writable floats.
    let st = unsafe { lsqr_micro_get_output(micro.ptr, 0, big.as_mut_ptr(), 13) };
    assert_eq!(st, lsqr_status::Ok);
    assert_eq!(big[..10], want1[0]);
    assert_eq!(big[10..], [-1.0; 3]);
    // The borrowed output is the same values, in the arena.
    let (mut data, mut len) = (null(), 0usize);
    // SAFETY: live runner, writable outs; the borrow is read before the
    // next call that modifies the runner.
    unsafe {
        assert_eq!(lsqr_micro_borrow_output(micro.ptr, 1, &mut data, &mut len), lsqr_status::Ok);
        assert_eq!(std::slice::from_raw_parts(data, len), want1[1]);
    }
    let arena = micro.arena_range();
    assert!(arena.contains(&data.cast::<u8>()));

    // run_layer 0..count on another input equals run, and the values a
    // layer leaves stay in place for the next call.
    assert_eq!(micro.set_input(0, &x2), lsqr_status::Ok);
    for i in 0..4 {
        // SAFETY: live runner.
        assert_eq!(unsafe { lsqr_micro_run_layer(micro.ptr, i) }, lsqr_status::Ok);
        if i == 1 {
            // After the relu, output `h` is final (output `y` is not: the
            // plan may keep earlier layers' values in its place until
            // layer 3 writes it).
            assert_eq!(micro.output(1, 24), want2[1]);
        }
    }
    assert_eq!(micro.output(0, 10), want2[0]);
    assert_eq!(micro.output(1, 24), want2[1]);
    // Inputs keep their values: running again gives the same outputs.
    // SAFETY: live runner.
    assert_eq!(unsafe { lsqr_micro_run(micro.ptr) }, lsqr_status::Ok);
    assert_eq!(micro.output(0, 10), want2[0]);
}

#[test]
fn micro_runners_share_a_model_across_threads() {
    let bytes = graph_model();
    let m = Model::open(bytes.clone());
    struct Shared(*const lsqr_model);
    // SAFETY: the API documents a model as readable from several threads,
    // and runners over one model as runnable on different threads.
    unsafe impl Sync for Shared {}
    let shared = Shared(m.ptr);
    std::thread::scope(|s| {
        for k in 0..3u32 {
            let (shared, bytes) = (&shared, &bytes);
            s.spawn(move || {
                let micro = Micro::load(shared.0);
                for round in 0..5 {
                    let x = graph_input(10 * k + round);
                    assert_eq!(micro.set_input(0, &x), lsqr_status::Ok);
                    // SAFETY: live runner, used by this thread only.
                    assert_eq!(unsafe { lsqr_micro_run(micro.ptr) }, lsqr_status::Ok);
                    assert_eq!(micro.output(0, 10), rust_outputs(bytes, &x).1[0]);
                }
            });
        }
    });
}

/// A flipped bit in a weight's packed codes: the model opens (only the
/// header is read), and every call that reads the tensor's data refuses
/// it with `LSQR_STATUS_FORMAT` naming the tensor, section and offset,
/// where it used to run on the wrong codes. Its untouched tensors still
/// work, and outputs stay untouched.
#[test]
fn corrupted_weight_refused_on_first_use() {
    let bytes = graph_model();
    let data = LsqFile::from_bytes(&bytes).unwrap().tensor_info("fc1.weight").unwrap().data.offset;
    let mut flipped = bytes.clone();
    flipped[data as usize + 5] ^= 0x04;
    let m = Model::open(flipped);
    let named = |what: &str| {
        let msg = last_error();
        assert!(
            msg.contains(&format!("tensor 'fc1.weight': data section at {data:#x}")),
            "{what}: {msg}"
        );
    };
    let mut need = 0usize;
    let mut y = [7.0f32; 24];
    let mut w = [7.0f32; 192];
    let mut ptr = null_mut();
    let x = graph_input(1);
    // SAFETY: live model and handles; writable outs; `y` holds 24 floats
    // (2 x 12), `w` 192 (12 x 16), `x` 32 (2 x 16).
    unsafe {
        assert_eq!(lsqr_micro_arena_size(m.ptr, &mut need), lsqr_status::Format);
        named("arena size");
        assert_eq!(need, 0);
        let mut arena = vec![0u8; 4096];
        let mut micro: *mut lsqr_micro = null_mut();
        let st = lsqr_micro_load(m.ptr, arena.as_mut_ptr().cast(), arena.len(), &mut micro);
        assert_eq!(st, lsqr_status::Format);
        named("load");
        assert!(micro.is_null());
        let st = lsqr_tensor_dequantize(m.tensor("fc1.weight"), w.as_mut_ptr(), w.len());
        assert_eq!(st, lsqr_status::Format);
        named("dequantize");
        let st = lsqr_linear(m.tensor("fc1.weight"), null(), x.as_ptr(), 2, y.as_mut_ptr());
        assert_eq!(st, lsqr_status::Format);
        named("linear");
        assert_eq!(
            lsqr_weight_prepare(m.tensor("fc1.weight"), null(), &mut ptr),
            lsqr_status::Format
        );
        named("prepare");
        assert!(ptr.is_null());
        // Asked again, the same answer: a failure is not remembered as a
        // success.
        let st = lsqr_tensor_dequantize(m.tensor("fc1.weight"), w.as_mut_ptr(), w.len());
        assert_eq!(st, lsqr_status::Format);
        assert!(w.iter().chain(&y).all(|&v| v == 7.0));
        // The other tensors are intact and read.
        let mut fc2 = [0.0f32; 60];
        let st = lsqr_tensor_dequantize(m.tensor("fc2.weight"), fc2.as_mut_ptr(), fc2.len());
        assert_eq!(st, lsqr_status::Ok, "{}", last_error());
        assert_eq!(lsqr_model_verify(m.ptr), lsqr_status::Format);
    }
    // The intact file loads and runs as before.
    let good = Model::open(bytes);
    let micro = Micro::load(good.ptr);
    assert_eq!(micro.set_input(0, &x), lsqr_status::Ok);
}

#[test]
fn micro_status_paths() {
    let m = Model::open(graph_model());
    let micro = Micro::load(m.ptr);
    let mut need = 0usize;
    // SAFETY: live model, writable out.
    unsafe { lsqr_micro_arena_size(m.ptr, &mut need) };
    let mut arena = vec![0u8; need];
    let mut count = 12345usize;
    let mut ptr: *mut lsqr_micro = std::ptr::dangling_mut();
    let mut floats = [7.0f32; 64];
    let (mut data, mut dims) = (std::ptr::dangling::<f32>(), [3usize; LSQR_MAX_DIMS]);
    let x = graph_input(5);
    // SAFETY: every pointer is NULL, or valid for what the function reads
    // or writes; the arena outlives every runner loaded into it here (none
    // is, as every load fails).
    unsafe {
        macro_rules! refused {
            ($call:expr, $arg:literal) => {
                assert_eq!($call, lsqr_status::NullArgument, stringify!($call));
                assert_eq!(last_error(), concat!("`", $arg, "` is NULL"));
            };
        }
        let a = arena.as_mut_ptr().cast();
        refused!(lsqr_micro_arena_size(null(), &mut count), "model");
        refused!(lsqr_micro_arena_size(m.ptr, null_mut()), "bytes");
        refused!(lsqr_micro_load(null(), a, need, &mut ptr), "model");
        refused!(lsqr_micro_load(m.ptr, null_mut(), need, &mut ptr), "arena");
        refused!(lsqr_micro_load(m.ptr, a, need, null_mut()), "out");
        refused!(lsqr_micro_layer_count(null(), &mut count), "micro");
        refused!(lsqr_micro_layer_count(micro.ptr, null_mut()), "out");
        refused!(lsqr_micro_input_count(null(), &mut count), "micro");
        refused!(lsqr_micro_output_count(micro.ptr, null_mut()), "out");
        refused!(lsqr_micro_input_shape(null(), 0, &mut count, dims.as_mut_ptr()), "micro");
        refused!(lsqr_micro_input_shape(micro.ptr, 0, null_mut(), dims.as_mut_ptr()), "ndim");
        refused!(lsqr_micro_output_shape(micro.ptr, 0, &mut count, null_mut()), "dims");
        refused!(lsqr_micro_set_input(null_mut(), 0, x.as_ptr(), 32), "micro");
        refused!(lsqr_micro_set_input(micro.ptr, 0, null(), 32), "data");
        refused!(lsqr_micro_run_layer(null_mut(), 0), "micro");
        refused!(lsqr_micro_run(null_mut()), "micro");
        refused!(lsqr_micro_get_output(null(), 0, floats.as_mut_ptr(), 64), "micro");
        refused!(lsqr_micro_get_output(micro.ptr, 0, null_mut(), 64), "out");
        refused!(lsqr_micro_borrow_output(micro.ptr, 0, null_mut(), &mut count), "data");
        refused!(lsqr_micro_borrow_output(micro.ptr, 0, &mut data, null_mut()), "len");

        // Arena too small: the message gives the size needed.
        let st = lsqr_micro_load(m.ptr, a, need - 1, &mut ptr);
        assert_eq!(st, lsqr_status::ArenaTooSmall);
        assert_eq!(
            last_error(),
            format!(
                "the arena is {} bytes; this model needs {need} (lsqr_micro_arena_size)",
                need - 1
            )
        );
        let st = lsqr_micro_load(m.ptr, a, usize::MAX, &mut ptr);
        assert_eq!(st, lsqr_status::InvalidArgument);

        // Indices past the end.
        assert_eq!(lsqr_micro_run_layer(micro.ptr, 4), lsqr_status::NotFound);
        assert_eq!(last_error(), "layer 4 does not exist; the graph has 4 layers");
        assert_eq!(lsqr_micro_set_input(micro.ptr, 1, x.as_ptr(), 32), lsqr_status::NotFound);
        assert_eq!(last_error(), "input 1 does not exist; the graph has 1 inputs");
        let st = lsqr_micro_get_output(micro.ptr, 2, floats.as_mut_ptr(), 64);
        assert_eq!(st, lsqr_status::NotFound);
        assert_eq!(last_error(), "output 2 does not exist; the graph has 2 outputs");
        let st = lsqr_micro_borrow_output(micro.ptr, 2, &mut data, &mut count);
        assert_eq!(st, lsqr_status::NotFound);
        let st = lsqr_micro_output_shape(micro.ptr, 2, &mut count, dims.as_mut_ptr());
        assert_eq!(st, lsqr_status::NotFound);
        assert_eq!(last_error(), "output 2 does not exist; the graph has 2 outputs");
        let st = lsqr_micro_input_shape(micro.ptr, 1, &mut count, dims.as_mut_ptr());
        assert_eq!(st, lsqr_status::NotFound);

        // Wrong input length leaves the input as it was.
        assert_eq!(micro.set_input(0, &x), lsqr_status::Ok);
        assert_eq!(lsqr_micro_run(micro.ptr), lsqr_status::Ok);
        let before = micro.output(0, 10);
        assert_eq!(micro.set_input(0, &[1.0; 31]), lsqr_status::ShapeMismatch);
        assert_eq!(last_error(), "input 0 takes 32 values, 31 given");
        assert_eq!(micro.set_input(0, &[1.0; 33]), lsqr_status::ShapeMismatch);
        assert_eq!(lsqr_micro_run(micro.ptr), lsqr_status::Ok);
        assert_eq!(micro.output(0, 10), before);

        // A misaligned input pointer.
        let bytes = [0u8; 4 * 33];
        let odd = bytes.as_ptr().add(usize::from(bytes.as_ptr().align_offset(4) == 0));
        let st = lsqr_micro_set_input(micro.ptr, 0, odd.cast(), 32);
        assert_eq!(st, lsqr_status::InvalidArgument);

        // An output buffer too small is untouched.
        let st = lsqr_micro_get_output(micro.ptr, 0, floats.as_mut_ptr(), 9);
        assert_eq!(st, lsqr_status::BufferTooSmall);
        assert_eq!(last_error(), "output 0 has 10 values, the buffer holds 9");
    }
    assert_eq!(count, 12345);
    assert_eq!(ptr, std::ptr::dangling_mut());
    assert_eq!(data, std::ptr::dangling());
    assert_eq!(dims, [3; LSQR_MAX_DIMS]);
    assert!(floats.iter().all(|&v| v == 7.0));
}

/// A model whose graph the runtime refuses: the status and message.
fn refused_graph(bytes: Vec<u8>) -> (lsqr_status, String) {
    let m = Model::open(bytes);
    let mut need = 12345usize;
    let mut arena = [0u8; 4096];
    let mut ptr: *mut lsqr_micro = std::ptr::dangling_mut();
    // SAFETY: live model, writable outputs, a 4096-byte arena.
    let (st, st2) = unsafe {
        (
            lsqr_micro_arena_size(m.ptr, &mut need),
            lsqr_micro_load(m.ptr, arena.as_mut_ptr().cast(), arena.len(), &mut ptr),
        )
    };
    assert_eq!(st, st2);
    assert_eq!(need, 12345);
    assert_eq!(ptr, std::ptr::dangling_mut());
    (st, last_error())
}

fn hand_made(layers: Vec<lsqr_format::Layer>, weights: &[(&str, &[usize])]) -> Vec<u8> {
    let mut w = lsqr_format::LsqWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    w.add_metadata("input_shape.x", lsqr_format::Value::IntList(vec![1, 8])).unwrap();
    for (name, shape) in weights {
        let n = shape.iter().product();
        w.add_raw_f32(name, shape, &example_model::values(n, 9)).unwrap();
    }
    let out = layers.last().unwrap().outputs[0].clone();
    w.set_graph(lsqr_format::Graph { inputs: vec!["x".into()], outputs: vec![out], layers });
    w.finish().unwrap().into_inner()
}

fn layer(op: &str, inputs: &[&str], out: &str, weights: &[&str]) -> lsqr_format::Layer {
    lsqr_format::Layer {
        op: op.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![out.into()],
        weights: weights.iter().map(|s| s.to_string()).collect(),
        attrs: vec![],
    }
}

#[test]
fn micro_refuses_graphs_it_cannot_run_with_the_layer_named() {
    // The example model has tensors but no graph.
    let (st, msg) = refused_graph(example_model::build());
    assert_eq!((st, msg.as_str()), (lsqr_status::NotFound, "the model has no layer graph to run"));
    // An op the runtime does not execute (a 1.1 file may name any op).
    let bytes = hand_made(
        vec![layer("relu", &["x"], "r", &[]), layer("einsum", &["r", "x"], "y", &[])],
        &[],
    );
    let (st, msg) = refused_graph(bytes);
    assert_eq!(st, lsqr_status::Unsupported);
    assert_eq!(msg, "layer 1 (einsum): the runtime does not execute this op");
    // A weight whose input features do not match the input.
    let bytes = hand_made(vec![layer("linear", &["x"], "y", &["w"])], &[("w", &[4, 9])]);
    let (st, msg) = refused_graph(bytes);
    assert_eq!(st, lsqr_status::ShapeMismatch);
    assert!(msg.starts_with("layer 0 (linear): "), "{msg}");
    assert!(msg.contains('9') && msg.contains('8'), "{msg}");
    // A graph input without its shape.
    let mut w = lsqr_format::LsqWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    w.set_graph(lsqr_format::Graph {
        inputs: vec!["x".into()],
        outputs: vec!["y".into()],
        layers: vec![layer("relu", &["x"], "y", &[])],
    });
    let (st, msg) = refused_graph(w.finish().unwrap().into_inner());
    assert_eq!(st, lsqr_status::Format);
    assert!(msg.starts_with("graph input `x`: has no shape"), "{msg}");
}

#[test]
fn micro_free_null_is_a_no_op_and_keeps_the_last_error() {
    let m = Model::open(graph_model());
    let micro = Micro::load(m.ptr);
    // SAFETY: NULL is explicitly allowed; live runner otherwise.
    unsafe {
        lsqr_micro_free(null_mut());
        assert_eq!(lsqr_micro_run_layer(micro.ptr, 9), lsqr_status::NotFound);
        lsqr_micro_free(null_mut());
    }
    drop(micro); // lsqr_micro_free
    assert_eq!(last_error(), "layer 9 does not exist; the graph has 4 layers");
}

/// Counts the allocations of threads that arm it (tests run on several
/// threads; only the armed one is counted).
struct Counting;

thread_local! {
    static ARMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count_allocation() {
    // `try_with`: a thread being torn down still allocates and frees.
    let armed = ARMED.try_with(|a| a.get()).unwrap_or(false);
    if armed {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: forwards every call to the system allocator unchanged; the
// counters are const-initialised thread-locals without destructors, which
// allocate nothing.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn micro_runs_without_allocating_after_load() {
    let m = Model::open(graph_model());
    let micro = Micro::load(m.ptr);
    let x = graph_input(6);
    let mut y = [0.0f32; 10];
    let (mut data, mut len) = (null(), 0usize);
    ALLOCATIONS.with(|n| n.set(0));
    ARMED.with(|a| a.set(true));
    // SAFETY: live runner; valid input, output and out-pointers.
    let statuses = unsafe {
        [
            lsqr_micro_set_input(micro.ptr, 0, x.as_ptr(), x.len()),
            lsqr_micro_run(micro.ptr),
            lsqr_micro_run_layer(micro.ptr, 0),
            lsqr_micro_run_layer(micro.ptr, 1),
            lsqr_micro_run_layer(micro.ptr, 2),
            lsqr_micro_run_layer(micro.ptr, 3),
            lsqr_micro_get_output(micro.ptr, 0, y.as_mut_ptr(), y.len()),
            lsqr_micro_borrow_output(micro.ptr, 1, &mut data, &mut len),
        ]
    };
    ARMED.with(|a| a.set(false));
    assert_eq!(statuses, [lsqr_status::Ok; 8]);
    assert_eq!(ALLOCATIONS.with(|n| n.get()), 0);
    assert_eq!(y.to_vec(), rust_outputs(&graph_model(), &x).1[0]);
    // The check can fail: an error message is allocated.
    ARMED.with(|a| a.set(true));
    // SAFETY: live runner.
    let st = unsafe { lsqr_micro_run_layer(micro.ptr, 4) };
    ARMED.with(|a| a.set(false));
    assert_eq!(st, lsqr_status::NotFound);
    assert!(ALLOCATIONS.with(|n| n.get()) > 0);
}

// ---- prepared weights ----

/// A prepared weight, freed on drop (before the model in every test).
struct Weight(*mut lsqr_weight);

impl Weight {
    fn prepare(tensor: *const lsqr_tensor, bias: *const lsqr_tensor) -> Self {
        let mut ptr = null_mut();
        // SAFETY: live handles (the model outlives the weight in every
        // test), writable out.
        let st = unsafe { lsqr_weight_prepare(tensor, bias, &mut ptr) };
        assert_eq!(st, lsqr_status::Ok, "{}", last_error());
        assert!(!ptr.is_null());
        Self(ptr)
    }

    fn linear(&self, x: &[f32], batch: usize, out: usize) -> Vec<f32> {
        let mut y = vec![f32::NAN; batch * out];
        // SAFETY: live handle; x and y have the lengths the weight implies.
        let st = unsafe { lsqr_weight_linear(self.0, x.as_ptr(), batch, y.as_mut_ptr()) };
        assert_eq!(st, lsqr_status::Ok, "{}", last_error());
        y
    }

    fn set_exact(&self, exact: bool) {
        // SAFETY: live handle.
        assert_eq!(unsafe { lsqr_weight_set_exact(self.0, exact) }, lsqr_status::Ok);
    }

    fn is_exact(&self) -> bool {
        let mut v = false;
        // SAFETY: live handle, writable out.
        assert_eq!(unsafe { lsqr_weight_is_exact(self.0, &mut v) }, lsqr_status::Ok);
        v
    }
}

impl Drop for Weight {
    fn drop(&mut self) {
        // SAFETY: prepared by `Weight::prepare`, freed once.
        unsafe { lsqr_weight_free(self.0) };
    }
}

/// `lsqr_linear` on the same tensors.
fn tensor_linear(
    w: *const lsqr_tensor,
    b: *const lsqr_tensor,
    x: &[f32],
    batch: usize,
    out: usize,
) -> Vec<f32> {
    let mut y = vec![f32::NAN; batch * out];
    // SAFETY: live handles; x and y have the lengths the weight implies.
    let st = unsafe { lsqr_linear(w, b, x.as_ptr(), batch, y.as_mut_ptr()) };
    assert_eq!(st, lsqr_status::Ok, "{}", last_error());
    y
}

/// The kernels' weight of the example model's `fc.weight`, read directly.
fn kernel_fc<'f>(file: &'f LsqFile<'_>) -> lsqr_kernels::packed::PackedWeight<'f> {
    let lsqr_format::TensorView::Quantized(q) = file.tensor("fc.weight").unwrap() else {
        panic!("fc.weight is quantized")
    };
    lsqr_facade::runtime::packed_weight(&q).unwrap()
}

#[test]
fn prepared_linear_equals_lsqr_linear_bit_for_bit() {
    let bytes = example_model::build();
    let m = Model::open(bytes.clone());
    let [out, inp] = example_model::FC;
    let (t, b) = (m.tensor("fc.weight"), m.tensor("fc.bias"));
    let w = Weight::prepare(t, b);
    // The default is the integer path wherever the kernels take it.
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let int = kernel_fc(&file).int_form();
    assert!(int.is_some() || lsqr_kernels::packed::exact_forced(), "fc.weight has an int form");
    assert_eq!(w.is_exact(), int.is_none());
    // Batch 1, larger batches (growing the scratch), batch 1 again with
    // the grown scratch: each call twice.
    // (Fewer under Miri, where each product takes seconds.)
    let batches: &[usize] = if cfg!(miri) { &[1, 3, 1] } else { &[1, 3, 2, 7, 1] };
    for &batch in batches {
        let x = example_model::values(batch * inp, 20 + batch as u32);
        let want = tensor_linear(t, b, &x, batch, out);
        assert_eq!(w.linear(&x, batch, out), want, "batch {batch}");
        assert_eq!(w.linear(&x, batch, out), want, "batch {batch}, again");
        let naive = naive_linear(
            &m.dequantize("fc.weight"),
            &m.dequantize("fc.bias"),
            &x,
            example_model::FC,
            batch,
        );
        let err: f64 = want.iter().zip(&naive).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        let sig: f64 = naive.iter().map(|v| f64::from(*v).powi(2)).sum();
        assert!(err < 1e-6 * sig, "batch {batch}: error {err} vs signal {sig}");
    }
    // A raw weight without bias: the f32 path.
    let hw = Weight::prepare(m.tensor("head.weight"), null());
    assert!(hw.is_exact());
    let x = example_model::values(2 * out, 10);
    assert_eq!(hw.linear(&x, 2, 4), tensor_linear(m.tensor("head.weight"), null(), &x, 2, 4));
    assert_eq!(
        hw.linear(&x[..out], 1, 4),
        tensor_linear(m.tensor("head.weight"), null(), &x[..out], 1, 4)
    );
    // A weight may be prepared twice, and freed after another one.
    let w2 = Weight::prepare(t, null());
    drop(w);
    let x = example_model::values(inp, 31);
    assert_eq!(w2.linear(&x, 1, out), tensor_linear(t, null(), &x, 1, out));
}

#[test]
fn prepared_linear_exact_equals_the_exact_kernel_path() {
    let bytes = example_model::build();
    let m = Model::open(bytes.clone());
    let [out, inp] = example_model::FC;
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let mut exact = kernel_fc(&file);
    exact.set_exact(true);
    assert_eq!(exact.int_form(), None);
    let bias = m.dequantize("fc.bias");
    let w = Weight::prepare(m.tensor("fc.weight"), m.tensor("fc.bias"));
    let x = example_model::values(inp, 40);
    let default = w.linear(&x, 1, out);

    w.set_exact(true);
    assert!(w.is_exact());
    let mut want = vec![f32::NAN; out];
    lsqr_kernels::packed::linear(&exact, Some(&bias), &x, 1, &mut want).unwrap();
    let got = w.linear(&x, 1, out);
    assert_eq!(got, want);
    assert_close(&got, &naive_linear(&m.dequantize("fc.weight"), &bias, &x, example_model::FC, 1));
    // Batch > 1 too takes the exact path.
    let x3 = example_model::values(3 * inp, 41);
    let mut want3 = vec![f32::NAN; 3 * out];
    lsqr_kernels::packed::linear(&exact, Some(&bias), &x3, 3, &mut want3).unwrap();
    assert_eq!(w.linear(&x3, 3, out), want3);

    // Back to the default: lsqr_linear's result again, at any batch.
    w.set_exact(false);
    assert_eq!(w.is_exact(), lsqr_kernels::packed::exact_forced());
    assert_eq!(w.linear(&x, 1, out), default);
    assert_eq!(
        w.linear(&x3, 3, out),
        tensor_linear(m.tensor("fc.weight"), m.tensor("fc.bias"), &x3, 3, out)
    );
    if !lsqr_kernels::packed::exact_forced() {
        // The integer path is another rounding, well below the codec's
        // error: here within 1e-6 of the output's energy.
        assert_ne!(default, want);
        let err: f64 = default.iter().zip(&want).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        let sig: f64 = want.iter().map(|v| f64::from(*v).powi(2)).sum();
        assert!(err < 1e-6 * sig, "integer vs exact: error {err}, signal {sig}");
    }
}

#[test]
fn prepared_conv2d_equals_lsqr_conv2d() {
    let m = Model::example();
    let (t, b) = (m.tensor("conv.weight"), m.tensor("conv.bias"));
    let w = Weight::prepare(t, b);
    let params =
        lsqr_conv2d_params { stride: [2, 2], padding: [1, 1], dilation: [1, 1], groups: 1 };
    for (k, shape) in [[2usize, 3, 8, 8], [1, 3, 5, 9], [2, 3, 8, 8]].into_iter().enumerate() {
        let x = example_model::values(shape.iter().product(), 50 + k as u32);
        let (mut s1, mut s2) = ([0usize; 4], [9usize; 4]);
        // SAFETY: live handles; 4-element shapes; buffers of the lengths
        // the shapes imply.
        unsafe {
            let st = lsqr_conv2d_output_shape(t, &params, shape.as_ptr(), s1.as_mut_ptr());
            assert_eq!(st, lsqr_status::Ok, "{}", last_error());
            let st = lsqr_weight_conv2d_output_shape(w.0, &params, shape.as_ptr(), s2.as_mut_ptr());
            assert_eq!(st, lsqr_status::Ok, "{}", last_error());
            assert_eq!(s1, s2);
            let n = s1.iter().product();
            let (mut want, mut got) = (vec![f32::NAN; n], vec![f32::NAN; n + 3]);
            let st = lsqr_conv2d(t, b, &params, x.as_ptr(), shape.as_ptr(), want.as_mut_ptr(), n);
            assert_eq!(st, lsqr_status::Ok, "{}", last_error());
            let st = lsqr_weight_conv2d(
                w.0,
                &params,
                x.as_ptr(),
                shape.as_ptr(),
                got.as_mut_ptr(),
                got.len(),
            );
            assert_eq!(st, lsqr_status::Ok, "{}", last_error());
            assert_eq!(got[..n], want);
            assert!(got[n..].iter().all(|v| v.is_nan()), "only the output's floats are written");
            // The exact option does not change conv2d.
            w.set_exact(k % 2 == 0);
            let st =
                lsqr_weight_conv2d(w.0, &params, x.as_ptr(), shape.as_ptr(), got.as_mut_ptr(), n);
            assert_eq!(st, lsqr_status::Ok, "{}", last_error());
            assert_eq!(got[..n], want);
        }
    }
    // A raw conv2d weight: 2 -> 1 channel 1x1 [3, -1], bias 0.5.
    let mut wr = lsqr_format::LsqWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    wr.add_raw_f32("k", &[1, 2, 1, 1], &[3.0, -1.0]).unwrap();
    wr.add_raw_f32("b", &[1], &[0.5]).unwrap();
    let raw = Model::open(wr.finish().unwrap().into_inner());
    let rw = Weight::prepare(raw.tensor("k"), raw.tensor("b"));
    let params =
        lsqr_conv2d_params { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 };
    let (shape, input, mut out) = ([1usize, 2, 1, 2], [1.0f32, 2.0, 10.0, 20.0], [f32::NAN; 2]);
    // SAFETY: live handle, 4-element shape, buffers of the stated lengths.
    let st = unsafe {
        lsqr_weight_conv2d(rw.0, &params, input.as_ptr(), shape.as_ptr(), out.as_mut_ptr(), 2)
    };
    assert_eq!(st, lsqr_status::Ok, "{}", last_error());
    assert_eq!(out, [-6.5, -13.5]);
}

#[test]
fn prepared_weight_status_paths() {
    let m = Model::example();
    let fc = Weight::prepare(m.tensor("fc.weight"), m.tensor("fc.bias"));
    let conv = Weight::prepare(m.tensor("conv.weight"), null());
    let params =
        lsqr_conv2d_params { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 };
    let shape = [1usize, 3, 4, 4];
    let x = vec![0.5f32; 1024];
    let mut y = vec![3.0f32; 1024];
    let mut ptr: *mut lsqr_weight = std::ptr::dangling_mut();
    let mut flag = true;
    let mut out_shape = [7usize; 4];
    // SAFETY: every pointer is NULL, or valid for what the function reads
    // or writes; buffers are larger than anything the weights imply.
    unsafe {
        macro_rules! refused {
            ($call:expr, $arg:literal) => {
                assert_eq!($call, lsqr_status::NullArgument, stringify!($call));
                assert_eq!(last_error(), concat!("`", $arg, "` is NULL"));
            };
        }
        refused!(lsqr_weight_prepare(null(), null(), &mut ptr), "tensor");
        refused!(lsqr_weight_prepare(m.tensor("fc.weight"), null(), null_mut()), "out");
        refused!(lsqr_weight_set_exact(null_mut(), true), "weight");
        refused!(lsqr_weight_is_exact(null(), &mut flag), "weight");
        refused!(lsqr_weight_is_exact(fc.0, null_mut()), "out");
        refused!(lsqr_weight_linear(null_mut(), x.as_ptr(), 1, y.as_mut_ptr()), "weight");
        refused!(lsqr_weight_linear(fc.0, null(), 1, y.as_mut_ptr()), "x");
        refused!(lsqr_weight_linear(fc.0, x.as_ptr(), 1, null_mut()), "y");
        refused!(
            lsqr_weight_conv2d_output_shape(
                null(),
                &params,
                shape.as_ptr(),
                out_shape.as_mut_ptr()
            ),
            "weight"
        );
        refused!(
            lsqr_weight_conv2d_output_shape(conv.0, null(), shape.as_ptr(), out_shape.as_mut_ptr()),
            "params"
        );
        refused!(
            lsqr_weight_conv2d_output_shape(conv.0, &params, null(), out_shape.as_mut_ptr()),
            "input_shape"
        );
        refused!(
            lsqr_weight_conv2d_output_shape(conv.0, &params, shape.as_ptr(), null_mut()),
            "out_shape"
        );
        refused!(
            lsqr_weight_conv2d(
                null_mut(),
                &params,
                x.as_ptr(),
                shape.as_ptr(),
                y.as_mut_ptr(),
                1024
            ),
            "weight"
        );
        refused!(
            lsqr_weight_conv2d(conv.0, &params, null(), shape.as_ptr(), y.as_mut_ptr(), 1024),
            "input"
        );
        refused!(
            lsqr_weight_conv2d(conv.0, &params, x.as_ptr(), shape.as_ptr(), null_mut(), 1024),
            "output"
        );
        refused!(lsqr_micro_set_exact(null_mut(), true), "micro");

        // Neither 2-D nor 4-D; a bias of the wrong length.
        let st = lsqr_weight_prepare(m.tensor("fc.bias"), null(), &mut ptr);
        assert_eq!(st, lsqr_status::ShapeMismatch);
        assert_eq!(
            last_error(),
            "tensor 'fc.bias' has shape [32]; a prepared weight is [out, in] (linear) \
             or [out, in / groups, kh, kw] (conv2d)"
        );
        let st = lsqr_weight_prepare(m.tensor("fc.weight"), m.tensor("conv.bias"), &mut ptr);
        assert_eq!(st, lsqr_status::ShapeMismatch);
        assert_eq!(last_error(), "bias 'conv.bias' has 8 elements; the weight has 32 outputs");
        // A conv2d weight in a linear product, and the other way round.
        let st = lsqr_weight_linear(conv.0, x.as_ptr(), 1, y.as_mut_ptr());
        assert_eq!(st, lsqr_status::ShapeMismatch);
        assert_eq!(
            last_error(),
            "linear weight 'conv.weight' has shape [8, 3, 3, 3]; it must be [out, in]"
        );
        let st =
            lsqr_weight_conv2d(fc.0, &params, x.as_ptr(), shape.as_ptr(), y.as_mut_ptr(), 1024);
        assert_eq!(st, lsqr_status::ShapeMismatch);
        assert!(last_error().starts_with("conv2d weight 'fc.weight' has shape [32, 128]"));
        let st =
            lsqr_weight_conv2d_output_shape(fc.0, &params, shape.as_ptr(), out_shape.as_mut_ptr());
        assert_eq!(st, lsqr_status::ShapeMismatch);
        // batch * in overflows; a misaligned x.
        let st = lsqr_weight_linear(fc.0, x.as_ptr(), usize::MAX, y.as_mut_ptr());
        assert_eq!(st, lsqr_status::InvalidArgument);
        assert_eq!(last_error(), "batch * in overflows size_t");
        let odd = x.as_ptr().cast::<u8>().add(1).cast();
        let st = lsqr_weight_linear(fc.0, odd, 1, y.as_mut_ptr());
        assert_eq!(st, lsqr_status::InvalidArgument);
        assert_eq!(last_error(), "`x` is not aligned for float");
        // conv2d: output too small, channels that do not match, zero groups.
        let st = lsqr_weight_conv2d(conv.0, &params, x.as_ptr(), shape.as_ptr(), y.as_mut_ptr(), 7);
        assert_eq!(st, lsqr_status::BufferTooSmall);
        assert_eq!(last_error(), "conv2d output [1, 8, 2, 2] needs 32 floats, the buffer holds 7");
        let four = [1usize, 4, 4, 4];
        let st =
            lsqr_weight_conv2d(conv.0, &params, x.as_ptr(), four.as_ptr(), y.as_mut_ptr(), 1024);
        assert_eq!(st, lsqr_status::ShapeMismatch);
        let bad = lsqr_conv2d_params { groups: 0, ..params };
        let st = lsqr_weight_conv2d(conv.0, &bad, x.as_ptr(), shape.as_ptr(), y.as_mut_ptr(), 1024);
        assert_eq!(st, lsqr_status::InvalidArgument);
    }
    // Outputs untouched by every failure.
    assert_eq!(ptr, std::ptr::dangling_mut());
    assert!(flag);
    assert_eq!(out_shape, [7; 4]);
    assert!(y.iter().all(|&v| v == 3.0));
}

#[test]
fn prepared_weight_free_null_is_a_no_op_and_keeps_the_last_error() {
    let m = Model::example();
    let w = Weight::prepare(m.tensor("fc.weight"), null());
    // SAFETY: NULL is explicitly allowed; live handle otherwise.
    unsafe {
        lsqr_weight_free(null_mut());
        assert_eq!(lsqr_weight_linear(w.0, null(), 1, null_mut()), lsqr_status::NullArgument);
        lsqr_weight_free(null_mut());
    }
    drop(w); // lsqr_weight_free
    assert_eq!(last_error(), "`x` is NULL");
}

#[test]
fn prepared_weights_run_on_several_threads() {
    let m = Model::example();
    let [out, inp] = example_model::FC;
    struct Shared(*const lsqr_model);
    // SAFETY: the API documents a model as readable from several threads.
    unsafe impl Sync for Shared {}
    let shared = Shared(m.ptr);
    // A handle may move to another thread.
    struct Moved(Weight);
    // SAFETY: the API lets a handle move between threads (one at a time).
    unsafe impl Send for Moved {}
    let moved = Moved(Weight::prepare(m.tensor("fc.weight"), m.tensor("fc.bias")));
    let x1 = example_model::values(inp, 60);
    let want = tensor_linear(m.tensor("fc.weight"), m.tensor("fc.bias"), &x1, 1, out);
    std::thread::scope(|s| {
        let shared = &shared;
        s.spawn(move || {
            let w = moved;
            assert_eq!(w.0.linear(&x1, 1, out), want);
        });
        for k in 0..2u32 {
            s.spawn(move || {
                let mut t = null();
                // SAFETY: live model for the scope, writable out.
                let st = unsafe { lsqr_model_find_tensor(shared.0, c"fc.weight".as_ptr(), &mut t) };
                assert_eq!(st, lsqr_status::Ok);
                let w = Weight::prepare(t, null());
                for round in 0..if cfg!(miri) { 1 } else { 3 } {
                    let x = example_model::values(2 * inp, 70 + 10 * k + round);
                    for batch in [1, 2] {
                        let x = &x[..batch * inp];
                        assert_eq!(
                            w.linear(x, batch, out),
                            tensor_linear(t, null(), x, batch, out)
                        );
                    }
                }
            });
        }
    });
}

#[test]
fn prepared_products_allocate_nothing_after_the_first_call() {
    let m = Model::example();
    let [out, inp] = example_model::FC;
    let fc = Weight::prepare(m.tensor("fc.weight"), m.tensor("fc.bias"));
    let conv = Weight::prepare(m.tensor("conv.weight"), m.tensor("conv.bias"));
    let params =
        lsqr_conv2d_params { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 };
    let shape = [1usize, 3, 6, 6];
    let xc = example_model::values(108, 80);
    let mut yc = vec![0.0f32; 8 * 36];
    let x = example_model::values(4 * inp, 81);
    let mut y = vec![0.0f32; 4 * out];
    let run = |fc: &Weight, conv: &Weight, y: &mut [f32], yc: &mut [f32]| {
        // SAFETY: live handles; buffers of the lengths the shapes imply.
        unsafe {
            [
                lsqr_weight_linear(fc.0, x.as_ptr(), 1, y.as_mut_ptr()),
                lsqr_weight_linear(fc.0, x.as_ptr(), 4, y.as_mut_ptr()),
                lsqr_weight_linear(fc.0, x.as_ptr(), 2, y.as_mut_ptr()),
                lsqr_weight_conv2d(
                    conv.0,
                    &params,
                    xc.as_ptr(),
                    shape.as_ptr(),
                    yc.as_mut_ptr(),
                    yc.len(),
                ),
            ]
        }
    };
    // Batch 1 was sized by the preparation: its first call allocates
    // nothing.
    ALLOCATIONS.with(|n| n.set(0));
    ARMED.with(|a| a.set(true));
    // SAFETY: live handle; x and y long enough.
    let st = unsafe { lsqr_weight_linear(fc.0, x.as_ptr(), 1, y.as_mut_ptr()) };
    ARMED.with(|a| a.set(false));
    assert_eq!(st, lsqr_status::Ok);
    assert_eq!(ALLOCATIONS.with(|n| n.get()), 0);
    // The first batch-4 and conv2d calls grow the scratch; then nothing.
    assert_eq!(run(&fc, &conv, &mut y, &mut yc), [lsqr_status::Ok; 4]);
    ALLOCATIONS.with(|n| n.set(0));
    ARMED.with(|a| a.set(true));
    let statuses = run(&fc, &conv, &mut y, &mut yc);
    fc.set_exact(true);
    let again = run(&fc, &conv, &mut y, &mut yc);
    ARMED.with(|a| a.set(false));
    assert_eq!(statuses, [lsqr_status::Ok; 4]);
    assert_eq!(again, [lsqr_status::Ok; 4]);
    assert_eq!(ALLOCATIONS.with(|n| n.get()), 0);
}

/// A graph whose one linear layer runs at batch 1 on a weight with an
/// integer form: `x [1, 64]` -> linear 16x64 (log C = 4, bias) -> `y`.
fn batch1_graph() -> Vec<u8> {
    let log4 =
        WeightFormat::Quantized(QuantizeOptions::new(CodecSpec::default_for(CodecKind::Log), 4));
    let mut b = ModelBuilder::new();
    b.input("x", &[1, 64])
        .linear("y", "x", "fc", &example_model::values(1024, 7), [16, 64], Some(&[0.01; 16]), &log4)
        .output("y");
    b.to_bytes().unwrap()
}

/// `lsqr::runtime` on `bytes` with the exact option.
fn rust_output_exact(bytes: &[u8], x: &[f32], exact: bool) -> Vec<f32> {
    let file = LsqFile::from_bytes(bytes).unwrap();
    let mut plan = Plan::new(&file).unwrap();
    plan.set_exact(exact);
    let mut arena = vec![0u8; plan.arena_len()];
    let mut runner = plan.bind(&mut arena).unwrap();
    runner.set_input(0, x).unwrap();
    runner.run().unwrap();
    runner.output(0).unwrap().to_vec()
}

#[test]
fn micro_set_exact_selects_the_exact_path() {
    let bytes = batch1_graph();
    let m = Model::open(bytes.clone());
    let micro = Micro::load(m.ptr);
    let x = graph_input(8).repeat(2);
    let (fast, exact) = (rust_output_exact(&bytes, &x, false), rust_output_exact(&bytes, &x, true));
    if !lsqr_kernels::packed::exact_forced() {
        assert_ne!(fast, exact, "the layer runs on the integer path by default");
    }
    let run = || {
        assert_eq!(micro.set_input(0, &x), lsqr_status::Ok);
        // SAFETY: live runner.
        assert_eq!(unsafe { lsqr_micro_run(micro.ptr) }, lsqr_status::Ok, "{}", last_error());
        micro.output(0, 16)
    };
    assert_eq!(run(), fast);
    // SAFETY: live runner.
    assert_eq!(unsafe { lsqr_micro_set_exact(micro.ptr, true) }, lsqr_status::Ok);
    // The runner was bound again: the arena is zeroed.
    assert_eq!(micro.output(0, 16), [0.0; 16]);
    assert_eq!(run(), exact);
    assert_eq!(run(), exact);
    // SAFETY: live runner.
    assert_eq!(unsafe { lsqr_micro_set_exact(micro.ptr, false) }, lsqr_status::Ok);
    assert_eq!(run(), fast);
    // Layer by layer, too.
    // SAFETY: live runner.
    unsafe {
        assert_eq!(lsqr_micro_set_exact(micro.ptr, true), lsqr_status::Ok);
        assert_eq!(micro.set_input(0, &x), lsqr_status::Ok);
        assert_eq!(lsqr_micro_run_layer(micro.ptr, 0), lsqr_status::Ok);
    }
    assert_eq!(micro.output(0, 16), exact);
}
