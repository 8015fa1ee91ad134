//! The micro runtime against straightforward references computed here from
//! the dequantized weights with lsqr-kernels' f32 operators, and its errors.

use std::io::Cursor;

use lsqr::codec::{CodecSpec, QuantizeOptions, Scaling};
use lsqr::format::{Graph, Layer, LsqFile, LsqWriter, Value};
use lsqr::kernels::conv::Conv2dParams;
use lsqr::kernels::Pool2d;
use lsqr::runtime::{ModelBuilder, Plan, RuntimeError, WeightFormat};

/// Deterministic values in [-1, 1).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "[{i}] {g} vs {w}");
    }
}

fn quantized(codec: CodecSpec, bits: u32, scaling: Scaling) -> WeightFormat {
    WeightFormat::Quantized(QuantizeOptions { scaling, ..QuantizeOptions::new(codec, bits) })
}

/// The f32 values of tensor `name` as stored (dequantized).
fn stored(file: &LsqFile<'_>, name: &str) -> Vec<f32> {
    file.tensor(name).unwrap().to_f32_vec().unwrap()
}

/// `x [batch, in] · wᵀ + b` through lsqr-kernels' matmul and add.
fn linear_ref(x: &[f32], batch: usize, w: &[f32], out: usize, b: Option<&[f32]>) -> Vec<f32> {
    let inp = w.len() / out;
    let mut wt = vec![0.0; w.len()];
    for o in 0..out {
        for i in 0..inp {
            wt[i * out + o] = w[o * inp + i];
        }
    }
    let y = lsqr::kernels::matmul(x, &wt, batch, inp, out).unwrap();
    match b {
        Some(b) => lsqr::kernels::add(&y, &[batch, out], b, &[out]).unwrap().0,
        None => y,
    }
}

/// Naive convolution, accumulated in f64.
fn conv_ref(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    wt: &[f32],
    [o, cg, kh, kw]: [usize; 4],
    b: Option<&[f32]>,
    p: &Conv2dParams,
) -> (Vec<f32>, [usize; 4]) {
    let oh = (h + 2 * p.padding[0] - p.dilation[0] * (kh - 1) - 1) / p.stride[0] + 1;
    let ow = (w + 2 * p.padding[1] - p.dilation[1] * (kw - 1) - 1) / p.stride[1] + 1;
    let og = o / p.groups;
    let mut y = vec![0.0f32; n * o * oh * ow];
    for ni in 0..n {
        for oc in 0..o {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| f64::from(b[oc]));
                    for icg in 0..cg {
                        let ic = oc / og * cg + icg;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                                    - p.padding[0] as isize;
                                let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                                    - p.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((ni * c + ic) * h + iy as usize) * w + ix as usize];
                                let wv = wt[((oc * cg + icg) * kh + ky) * kw + kx];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    y[((ni * o + oc) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
    (y, [n, o, oh, ow])
}

fn run_once(bytes: &[u8], inputs: &[&[f32]]) -> Vec<Vec<f32>> {
    run_with(bytes, inputs, false)
}

/// [`run_once`] with every linear on the exact f32 table path: the tests
/// that compare the graph with f32 references of the stored weights at
/// 1e-5 use it, as the integer path (C <= 8) rounds its inputs (its own
/// precision is tested in lsqr-kernels' `tests/packed.rs`).
fn run_exact(bytes: &[u8], inputs: &[&[f32]]) -> Vec<Vec<f32>> {
    run_with(bytes, inputs, true)
}

fn run_with(bytes: &[u8], inputs: &[&[f32]], exact: bool) -> Vec<Vec<f32>> {
    let file = LsqFile::from_bytes(bytes).unwrap();
    let mut plan = Plan::new(&file).unwrap();
    plan.set_exact(exact);
    let mut arena = vec![0u8; plan.arena_len()];
    let mut r = plan.bind(&mut arena).unwrap();
    for (i, x) in inputs.iter().enumerate() {
        r.set_input(i, x).unwrap();
    }
    r.run().unwrap();
    (0..plan.outputs().len()).map(|i| r.output(i).unwrap().to_vec()).collect()
}

fn mlp() -> Vec<u8> {
    let mut b = ModelBuilder::new();
    b.input("x", &[3, 20])
        .linear(
            "h",
            "x",
            "fc1",
            &noise(16 * 20, 1),
            [16, 20],
            Some(&noise(16, 2)),
            &quantized(CodecSpec::Log { mu: None }, 4, Scaling::Row),
        )
        .activation("a", "h", "relu")
        .linear(
            "logits",
            "a",
            "fc2",
            &noise(5 * 16, 3),
            [5, 16],
            Some(&noise(5, 4)),
            &WeightFormat::F32,
        )
        .softmax("p", "logits")
        .output("logits")
        .output("p");
    b.to_bytes().unwrap()
}

#[test]
fn mlp_matches_reference() {
    let bytes = mlp();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    assert_eq!(plan.layer_count(), 4);
    assert_eq!(plan.inputs()[0].shape, [3, 20]);
    assert_eq!(plan.outputs()[0].name, "logits");
    assert_eq!(plan.outputs()[1].shape, [3, 5]);
    let x = noise(60, 5);
    let out = run_exact(&bytes, &[&x]);

    let h = linear_ref(&x, 3, &stored(&file, "fc1.weight"), 16, Some(&stored(&file, "fc1.bias")));
    let mut a = h;
    lsqr::kernels::relu(&mut a);
    let logits =
        linear_ref(&a, 3, &stored(&file, "fc2.weight"), 5, Some(&stored(&file, "fc2.bias")));
    let mut p = logits.clone();
    lsqr::kernels::softmax(&mut p, 5).unwrap();
    assert_close(&out[0], &logits, 1e-5);
    assert_close(&out[1], &p, 1e-5);
    // The quantized layer really is quantized: its weights differ from the
    // originals, and the f32 one is exact.
    assert_ne!(stored(&file, "fc1.weight"), noise(320, 1));
    assert_eq!(stored(&file, "fc2.weight"), noise(80, 3));
}

const CNN_IN: [usize; 4] = [2, 4, 9, 9];

/// conv (stride 2, padding 1, quantized) -> relu -> grouped conv (f32) ->
/// residual add -> avg pool -> max pool -> flatten -> linear -> softmax.
fn cnn() -> Vec<u8> {
    let c1 = Conv2dParams { stride: [2, 2], padding: [1, 1], ..Default::default() };
    let c2 = Conv2dParams { padding: [1, 1], groups: 4, ..Default::default() };
    let mut b = ModelBuilder::new();
    b.input("img", &CNN_IN)
        .conv2d(
            "c1",
            "img",
            "conv1",
            &noise(8 * 4 * 9, 10),
            [8, 4, 3, 3],
            Some(&noise(8, 11)),
            &c1,
            &quantized(CodecSpec::Nf, 5, Scaling::Group(64)),
        )
        .activation("r1", "c1", "relu")
        .conv2d(
            "c2",
            "r1",
            "conv2",
            &noise(8 * 2 * 9, 12),
            [8, 2, 3, 3],
            None,
            &c2,
            &WeightFormat::F32,
        )
        .add("res", "r1", "c2")
        .avg_pool2d("ap", "res", &Pool2d::new(3, 1, 1))
        .max_pool2d("mp", "ap", &Pool2d::new(2, 2, 0))
        .flatten("flat", "mp", 1)
        .linear(
            "logits",
            "flat",
            "fc",
            &noise(10 * 32, 13),
            [10, 32],
            Some(&noise(10, 14)),
            &quantized(CodecSpec::Uniform, 6, Scaling::Row),
        )
        .softmax("p", "logits")
        .output("p");
    b.to_bytes().unwrap()
}

#[test]
fn cnn_matches_reference() {
    let bytes = cnn();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let x = noise(CNN_IN.iter().product(), 15);
    let out = run_exact(&bytes, &[&x]);

    let p1 = Conv2dParams { stride: [2, 2], padding: [1, 1], ..Default::default() };
    let (mut r1, s1) = conv_ref(
        &x,
        CNN_IN,
        &stored(&file, "conv1.weight"),
        [8, 4, 3, 3],
        Some(&stored(&file, "conv1.bias")),
        &p1,
    );
    assert_eq!(s1, [2, 8, 5, 5]);
    lsqr::kernels::relu(&mut r1);
    let p2 = Conv2dParams { padding: [1, 1], groups: 4, ..Default::default() };
    let (c2, s2) = conv_ref(&r1, s1, &stored(&file, "conv2.weight"), [8, 2, 3, 3], None, &p2);
    let (res, _) = lsqr::kernels::add(&r1, &s1, &c2, &s2).unwrap();
    let (ap, sa) = lsqr::kernels::avg_pool2d(&res, s1, &Pool2d::new(3, 1, 1)).unwrap();
    let (mp, sm) = lsqr::kernels::max_pool2d(&ap, sa, &Pool2d::new(2, 2, 0)).unwrap();
    assert_eq!(sm, [2, 8, 2, 2]);
    let mut p =
        linear_ref(&mp, 2, &stored(&file, "fc.weight"), 10, Some(&stored(&file, "fc.bias")));
    lsqr::kernels::softmax(&mut p, 10).unwrap();
    assert_close(&out[0], &p, 1e-5);
    let plan = Plan::new(&file).unwrap();
    let shapes: Vec<_> = plan.value_shapes().map(|v| v.shape.clone()).collect();
    assert_eq!(shapes[7], [2, 32], "flatten");
}

#[test]
fn layer_by_layer_equals_run_and_reruns_are_independent() {
    let bytes = cnn();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    let mut arena = vec![0u8; plan.arena_len()];
    let mut r = plan.bind(&mut arena).unwrap();
    let (x1, x2) = (noise(648, 20), noise(648, 21));
    r.set_input(0, &x1).unwrap();
    r.run().unwrap();
    let whole = r.output(0).unwrap().to_vec();
    r.set_input(0, &x2).unwrap();
    r.run().unwrap();
    let second = r.output(0).unwrap().to_vec();
    assert_ne!(whole, second);
    // The input survives a run (it is never reused), so running again
    // without setting it gives the same result.
    r.run().unwrap();
    assert_eq!(r.output(0).unwrap(), second);
    r.set_input(0, &x1).unwrap();
    for i in 0..plan.layer_count() {
        r.run_layer(i).unwrap();
    }
    assert_eq!(r.output(0).unwrap(), whole);
    assert_eq!(run_once(&bytes, &[&x2])[0], second);
}

#[test]
fn arena_reuses_dead_buffers() {
    // A chain of 12 activations on [64, 64]: with reuse the arena holds the
    // input, the output and at most two intermediates, not all 13 values.
    let mut b = ModelBuilder::new();
    b.input("x", &[64, 64]);
    let ops = [
        "relu",
        "relu6",
        "sigmoid",
        "tanh",
        "gelu",
        "gelu_tanh",
        "silu",
        "hardsigmoid",
        "hardswish",
    ];
    let mut prev = "x".to_string();
    for i in 0..12 {
        let name = format!("v{i}");
        b.activation(&name, &prev, ops[i % ops.len()]);
        prev = name;
    }
    b.output(&prev);
    let bytes = b.to_bytes().unwrap();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    let value = 64 * 64 * 4;
    assert!(plan.arena_len() <= 4 * value + 63, "{}", plan.arena_len());
    // And the values are right: each activation against the kernel.
    let x: Vec<f32> = noise(4096, 30).iter().map(|v| v * 8.0).collect();
    let mut want = x.clone();
    for i in 0..12 {
        match ops[i % ops.len()] {
            "relu" => lsqr::kernels::relu(&mut want),
            "relu6" => lsqr::kernels::relu6(&mut want),
            "sigmoid" => lsqr::kernels::sigmoid(&mut want),
            "tanh" => lsqr::kernels::tanh(&mut want),
            "gelu" => lsqr::kernels::gelu(&mut want),
            "gelu_tanh" => lsqr::kernels::gelu_tanh(&mut want),
            "silu" => lsqr::kernels::silu(&mut want),
            "hardsigmoid" => lsqr::kernels::hardsigmoid(&mut want),
            _ => lsqr::kernels::hardswish(&mut want),
        }
    }
    assert_eq!(run_once(&bytes, &[&x])[0], want);
}

#[test]
fn arena_is_aligned_whatever_the_caller_gives() {
    let bytes = mlp();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    let x = noise(60, 5);
    let want = run_once(&bytes, &[&x]);
    let mut big = vec![0u8; plan.arena_len() + 64];
    for shift in [1, 3, 17, 63] {
        let mut r = plan.bind(&mut big[shift..shift + plan.arena_len()]).unwrap();
        r.set_input(0, &x).unwrap();
        r.run().unwrap();
        assert_eq!(r.output(0).unwrap(), want[0]);
        assert_eq!(r.output(0).unwrap().as_ptr() as usize % 64, 0);
    }
}

#[test]
fn other_ops_match_the_kernels() {
    // leaky_relu, mul (broadcast channel scale), global_avg_pool2d,
    // batch_norm, layer_norm, reshape, conv1d through hand-made layers.
    let mut b = ModelBuilder::new();
    let f32w = WeightFormat::F32;
    let layer =
        |op: &str, ins: &[&str], out: &str, weights: &[&str], attrs: Vec<(&str, Value)>| Layer {
            op: op.into(),
            inputs: ins.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.into()],
            weights: weights.iter().map(|s| s.to_string()).collect(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
    let scale = noise(3, 40);
    let (g, be, m) = (noise(3, 41), noise(3, 42), noise(3, 43));
    let v: Vec<f32> = noise(3, 44).iter().map(|v| v.abs() + 0.1).collect();
    let (lg, lb) = (noise(3, 45), noise(3, 46));
    let cw = noise(4 * 3 * 2, 47);
    b.input("x", &[2, 3, 4, 5])
        .input("s", &[1, 3, 1, 1])
        .leaky_relu("l", "x", 0.2)
        .mul("m", "l", "s")
        .tensor("bn.g", &g, &[3], &f32w)
        .tensor("bn.b", &be, &[3], &f32w)
        .tensor("bn.m", &m, &[3], &f32w)
        .tensor("bn.v", &v, &[3], &f32w)
        .layer(layer(
            "batch_norm",
            &["m"],
            "bn",
            &["bn.g", "bn.b", "bn.m", "bn.v"],
            vec![("eps", Value::Float(1e-3))],
        ))
        .global_avg_pool2d("gap", "bn")
        .layer(layer("reshape", &["gap"], "r", &[], vec![("shape", Value::IntList(vec![2, -1]))]))
        .tensor("ln.g", &lg, &[3], &f32w)
        .tensor("ln.b", &lb, &[3], &f32w)
        .layer(layer("layer_norm", &["r"], "ln", &["ln.g", "ln.b"], vec![]))
        .layer(layer(
            "reshape",
            &["ln"],
            "seq",
            &[],
            vec![("shape", Value::IntList(vec![1, 2, 3]))],
        ))
        .tensor("c1.w", &cw, &[4, 2, 3], &quantized(CodecSpec::Fp(None), 8, Scaling::Row))
        .layer(layer("conv1d", &["seq"], "y", &["c1.w"], vec![("padding", Value::Int(1))]))
        .output("y")
        .output("r");
    let bytes = b.to_bytes().unwrap();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let x = noise(120, 48);
    let out = run_once(&bytes, &[&x, &scale]);

    let mut l = x.clone();
    lsqr::kernels::leaky_relu(&mut l, 0.2);
    let (mut mm, _) = lsqr::kernels::mul(&l, &[2, 3, 4, 5], &scale, &[1, 3, 1, 1]).unwrap();
    let p = lsqr::kernels::BatchNorm { mean: &m, var: &v, gamma: &g, beta: &be, eps: 1e-3 };
    lsqr::kernels::batch_norm(&mut mm, &[2, 3, 4, 5], &p).unwrap();
    let (mut gap, _) = lsqr::kernels::global_avg_pool2d(&mm, [2, 3, 4, 5]).unwrap();
    assert_close(&out[1], &gap, 1e-5);
    lsqr::kernels::layer_norm(&mut gap, 3, &lg, &lb, 1e-5).unwrap();
    // conv1d [1, 2, 3] with [4, 2, 3], padding 1, as a conv2d with h = 1.
    let cw = stored(&file, "c1.w");
    let p1 = Conv2dParams { padding: [0, 1], ..Default::default() };
    let (y, s) = conv_ref(&gap, [1, 2, 1, 3], &cw, [4, 2, 1, 3], None, &p1);
    assert_eq!(s, [1, 4, 1, 3]);
    assert_close(&out[0], &y, 1e-4);
    assert_eq!(Plan::new(&file).unwrap().outputs()[0].shape, [1, 4, 3]);
}

// ---- errors ----

/// A file written with lsqr-format's writer directly: any graph the
/// container accepts, whether or not the runtime can run it.
fn hand_made(
    layers: Vec<Layer>,
    tensors: &[(&str, &[usize])],
    input_shape: Option<Value>,
) -> Vec<u8> {
    let mut w = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
    if let Some(shape) = input_shape {
        w.add_metadata("input_shape.x", shape).unwrap();
    }
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        w.add_raw_f32(name, shape, &noise(n, 50)).unwrap();
    }
    let out = layers.last().map(|l| l.outputs[0].clone()).unwrap();
    w.set_graph(Graph { inputs: vec!["x".into()], outputs: vec![out], layers });
    w.finish().unwrap().into_inner()
}

fn one_layer(op: &str, weights: &[&str], attrs: Vec<(&str, Value)>) -> Layer {
    Layer {
        op: op.into(),
        inputs: vec!["x".into()],
        outputs: vec!["y".into()],
        weights: weights.iter().map(|s| s.to_string()).collect(),
        attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

fn plan_error(bytes: &[u8]) -> RuntimeError {
    let file = LsqFile::from_bytes(bytes).unwrap();
    Plan::new(&file).unwrap_err()
}

fn shape4() -> Option<Value> {
    Some(Value::IntList(vec![1, 4, 8, 8]))
}

#[test]
fn arena_too_small() {
    let bytes = mlp();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    let need = plan.arena_len();
    let mut arena = vec![0u8; need - 1];
    let e = plan.bind(&mut arena).unwrap_err();
    assert!(
        matches!(e, RuntimeError::ArenaTooSmall { len, needed } if len == need - 1 && needed == need)
    );
    assert_eq!(e.to_string(), format!("arena is {} bytes, the plan needs {need}", need - 1));
}

#[test]
fn unsupported_op_names_the_layer() {
    // A 1.1 file may name any op; the runtime refuses the ones it lacks.
    let mm = one_layer("einsum", &[], vec![]);
    let relu = Layer {
        inputs: vec!["x".into()],
        outputs: vec!["r".into()],
        ..one_layer("relu", &[], vec![])
    };
    let bytes = hand_made(vec![relu, mm], &[], Some(Value::IntList(vec![4, 4])));
    let e = plan_error(&bytes);
    assert!(matches!(&e, RuntimeError::UnsupportedOp { layer: 1, op } if op == "einsum"));
    assert_eq!(e.to_string(), "layer 1 (einsum): the runtime does not execute this op");
}

#[test]
fn weight_errors_name_layer_and_tensor() {
    // No weight at all.
    let bytes =
        hand_made(vec![one_layer("linear", &[], vec![])], &[], Some(Value::IntList(vec![1, 8])));
    let e = plan_error(&bytes);
    assert!(matches!(e, RuntimeError::Weight { layer: 0, .. }));
    assert_eq!(e.to_string(), "layer 0 (linear): takes weights [w] or [w, b], the graph gives 0");
    // Wrong rank.
    let bytes = hand_made(
        vec![one_layer("conv2d", &["conv1.weight"], vec![])],
        &[("conv1.weight", &[8, 36])],
        shape4(),
    );
    assert_eq!(
        plan_error(&bytes).to_string(),
        "layer 0 (conv2d): weight `conv1.weight` has shape [8, 36], expected rank 4 [out, in / groups, kh, kw]"
    );
    // Input features that do not match.
    let bytes = hand_made(
        vec![one_layer("linear", &["w"], vec![])],
        &[("w", &[3, 7])],
        Some(Value::IntList(vec![1, 8])),
    );
    let e = plan_error(&bytes);
    assert!(matches!(e, RuntimeError::Shape { layer: 0, .. }));
    assert!(e.to_string().contains("weight `w` is [3, 7]: the last dim must be 7"), "{e}");
    // A bias of the wrong length.
    let bytes = hand_made(
        vec![one_layer("linear", &["w", "b"], vec![])],
        &[("w", &[3, 8]), ("b", &[4])],
        Some(Value::IntList(vec![1, 8])),
    );
    assert_eq!(
        plan_error(&bytes).to_string(),
        "layer 0 (linear): weight `b` has shape [4], expected [3]"
    );
}

#[test]
fn attribute_errors_name_layer_and_attribute() {
    let w = [("w", &[8usize, 4, 3, 3][..])];
    let cases: Vec<(Vec<(&str, Value)>, &str)> = vec![
        (
            vec![("stride", Value::Float(2.0))],
            "layer 0 (conv2d): attribute `stride` must be an IntList of 2 (or one Int for both axes), got Float(2.0)",
        ),
        (
            vec![("strides", Value::Int(2))],
            "layer 0 (conv2d): attribute `strides` is not defined for this op (it takes stride, padding, dilation, groups)",
        ),
        (vec![("padding", Value::IntList(vec![-1, 0]))], "layer 0 (conv2d): attribute `padding` is -1, must be >= 0"),
        (vec![("groups", Value::IntList(vec![1, 2]))], "layer 0 (conv2d): attribute `groups` must be an Int, got IntList([1, 2])"),
    ];
    for (attrs, message) in cases {
        let bytes = hand_made(vec![one_layer("conv2d", &["w"], attrs)], &w, shape4());
        let e = plan_error(&bytes);
        assert!(matches!(e, RuntimeError::Attr { layer: 0, .. }), "{e:?}");
        assert_eq!(e.to_string(), message);
    }
    // Groups that do not divide the channels: a shape error naming the weight.
    let bytes =
        hand_made(vec![one_layer("conv2d", &["w"], vec![("groups", Value::Int(3))])], &w, shape4());
    let e = plan_error(&bytes);
    assert!(matches!(e, RuntimeError::Shape { layer: 0, .. }));
    assert!(
        e.to_string().starts_with(
            "layer 0 (conv2d): input [1, 4, 8, 8] with weight `w` [8, 4, 3, 3]: channels"
        ),
        "{e}"
    );
    // A pool without its kernel, and one too large.
    let bytes = hand_made(vec![one_layer("max_pool2d", &[], vec![])], &[], shape4());
    assert_eq!(
        plan_error(&bytes).to_string(),
        "layer 0 (max_pool2d): attribute `kernel` is required"
    );
    let bytes = hand_made(
        vec![one_layer("avg_pool2d", &[], vec![("kernel", Value::Int(9))])],
        &[],
        shape4(),
    );
    assert!(matches!(plan_error(&bytes), RuntimeError::Shape { layer: 0, .. }));
    // flatten past the rank; activations take no attributes.
    let bytes = hand_made(
        vec![one_layer("flatten", &[], vec![("start_dim", Value::Int(4))])],
        &[],
        shape4(),
    );
    assert_eq!(
        plan_error(&bytes).to_string(),
        "layer 0 (flatten): attribute `start_dim` is 4, the input has rank 4"
    );
    let bytes = hand_made(
        vec![one_layer("relu", &[], vec![("inplace", Value::Bool(true))])],
        &[],
        shape4(),
    );
    assert!(matches!(plan_error(&bytes), RuntimeError::Attr { layer: 0, .. }));
    // Wrong input rank.
    let bytes = hand_made(
        vec![one_layer("max_pool2d", &[], vec![("kernel", Value::Int(2))])],
        &[],
        Some(Value::IntList(vec![4, 8])),
    );
    assert_eq!(
        plan_error(&bytes).to_string(),
        "layer 0 (max_pool2d): input `x` has shape [4, 8], expected rank 4"
    );
}

#[test]
fn graph_level_errors() {
    let bytes = hand_made(vec![one_layer("relu", &[], vec![])], &[], None);
    let e = plan_error(&bytes);
    assert!(matches!(&e, RuntimeError::InputShape { name, .. } if name == "x"));
    assert!(e.to_string().contains("input_shape.x"), "{e}");
    let bytes =
        hand_made(vec![one_layer("relu", &[], vec![])], &[], Some(Value::IntList(vec![2, -3])));
    assert!(matches!(plan_error(&bytes), RuntimeError::InputShape { .. }));
    let bytes = hand_made(vec![one_layer("relu", &[], vec![])], &[], Some(Value::Int(3)));
    assert!(matches!(plan_error(&bytes), RuntimeError::InputShape { .. }));
    // No graph at all.
    let mut w = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
    w.add_raw_f32("t", &[2], &[1.0, 2.0]).unwrap();
    let bytes = w.finish().unwrap().into_inner();
    assert!(matches!(plan_error(&bytes), RuntimeError::NoGraph));
    // add of shapes that do not broadcast.
    let mut add = one_layer("add", &[], vec![]);
    let relu = Layer { outputs: vec!["r".into()], ..one_layer("relu", &[], vec![]) };
    let flat = Layer {
        inputs: vec!["r".into()],
        outputs: vec!["f".into()],
        ..one_layer("flatten", &[], vec![])
    };
    add.inputs = vec!["x".into(), "f".into()];
    let bytes = hand_made(vec![relu, flat, add], &[], Some(Value::IntList(vec![2, 3, 4])));
    assert_eq!(
        plan_error(&bytes).to_string(),
        "layer 2 (add): inputs of shapes [2, 3, 4] and [2, 12] do not broadcast"
    );
}

#[test]
fn run_time_errors() {
    let bytes = mlp();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    let mut arena = vec![0u8; plan.arena_len()];
    let mut r = plan.bind(&mut arena).unwrap();
    let e = r.set_input(0, &[0.0; 59]).unwrap_err();
    assert!(matches!(e, RuntimeError::InputLength { index: 0, expected: 60, actual: 59 }));
    assert_eq!(e.to_string(), "input 0 takes 60 values, 59 given");
    assert!(matches!(r.set_input(1, &[]), Err(RuntimeError::NoSuchInput { index: 1, count: 1 })));
    assert!(matches!(r.run_layer(4), Err(RuntimeError::NoSuchLayer { index: 4, count: 4 })));
    let e = r.output(2).unwrap_err();
    assert_eq!(e.to_string(), "output 2 does not exist; the graph has 2 outputs");
}

/// Every known op, with assorted input shapes (zero-sized dims included),
/// weights and attributes: planning returns a value or an error, and a plan
/// that succeeds runs without panicking.
#[test]
fn no_panic_on_assorted_layers() {
    let shapes: &[&[i64]] =
        &[&[], &[4], &[2, 3], &[0, 3], &[1, 2, 5], &[1, 4, 3, 3], &[2, 2, 0, 3], &[1, 1, 1, 1, 1]];
    let tensors: &[(&str, &[usize])] = &[
        ("v3", &[3]),
        ("v4", &[4]),
        ("m34", &[3, 4]),
        ("m23", &[2, 3]),
        ("t3", &[2, 2, 3]),
        ("k4", &[4, 4, 3, 3]),
        ("k1", &[2, 1, 1, 1]),
    ];
    let weight_sets: &[&[&str]] = &[
        &[],
        &["m34"],
        &["m23", "v3"],
        &["t3"],
        &["k4", "v4"],
        &["k1"],
        &["v4", "v4"],
        &["v3"; 4],
    ];
    let attr_sets: Vec<Vec<(&str, Value)>> = vec![
        vec![],
        vec![("kernel", Value::Int(2))],
        vec![("kernel", Value::IntList(vec![3, 1])), ("stride", Value::Int(0))],
        vec![("padding", Value::Int(1)), ("groups", Value::Int(2))],
        vec![("stride", Value::IntList(vec![i64::MAX, 1])), ("dilation", Value::Int(i64::MAX))],
        vec![("start_dim", Value::Int(0))],
        vec![("shape", Value::IntList(vec![-1]))],
        vec![("shape", Value::IntList(vec![0, -1]))],
        vec![("alpha", Value::Float(f64::NAN))],
        vec![("eps", Value::Float(-1.0))],
        vec![("padding", Value::IntList(vec![1, 2, 3]))],
    ];
    let mut ran = 0;
    for op in lsqr::format::OPS_1_0 {
        for shape in shapes {
            for weights in weight_sets {
                for attrs in &attr_sets {
                    let mut layer = one_layer(op, weights, attrs.clone());
                    if matches!(*op, "add" | "mul" | "matmul") {
                        layer.inputs.push("x".into());
                    }
                    let bytes =
                        hand_made(vec![layer], tensors, Some(Value::IntList(shape.to_vec())));
                    let file = LsqFile::from_bytes(&bytes).unwrap();
                    let Ok(plan) = Plan::new(&file) else { continue };
                    let mut arena = vec![0u8; plan.arena_len()];
                    let mut r = plan.bind(&mut arena).unwrap();
                    let n: usize = plan.inputs()[0].shape.iter().product();
                    r.set_input(0, &noise(n, 60)).unwrap();
                    r.run().unwrap();
                    ran += 1;
                }
            }
        }
    }
    // Some combinations are valid, and did run.
    assert!(ran > 100, "{ran}");
}

// ---- the one-hot linear fusion ----

/// `linear(equal(x, keys))` (Magika's byte one-hot then its dense layer):
/// `keys` a constant `[1, 1, K]`; with `one_hot_out` the one-hot is also a
/// graph output, which leaves the two steps apart.
fn one_hot_model(keys: &[f32], w: &WeightFormat, bias: bool, one_hot_out: bool) -> Vec<u8> {
    let (batch, k, out) = (70, keys.len(), 5);
    let weight = noise(out * k, 61);
    let b = noise(out, 62);
    let mut m = ModelBuilder::new();
    m.input("x", &[1, batch, 1]);
    m.tensor("keys", keys, &[1, 1, k], &WeightFormat::F32);
    m.layer(Layer {
        op: "constant".into(),
        inputs: vec![],
        outputs: vec!["keys".into()],
        weights: vec!["keys".into()],
        attrs: vec![],
    });
    m.layer(Layer {
        op: "equal".into(),
        inputs: vec!["x".into(), "keys".into()],
        outputs: vec!["hot".into()],
        weights: vec![],
        attrs: vec![],
    });
    m.linear("y", "hot", "dense", &weight, [out, k], bias.then_some(&b[..]), w);
    m.output("y");
    if one_hot_out {
        m.output("hot");
    }
    m.to_bytes().unwrap()
}

/// The fused step computes what the two steps compute on the exact path,
/// for keys 0..K (looked up by index) and others (searched), values in
/// range, out of it, fractional, -0 and NaN, f32 and quantized weights.
#[test]
fn one_hot_linear_is_fused_and_exact() {
    let arange: Vec<f32> = (0..20).map(|k| k as f32).collect();
    let scattered: Vec<f32> = (0..20).map(|k| (k * 7 % 20) as f32 * 0.5 - 3.0).collect();
    let mut x: Vec<f32> = (0..70).map(|i| ((i * 13) % 25) as f32 - 2.0).collect();
    x[3] = -0.0;
    x[5] = 2.25;
    x[8] = f32::NAN;
    x[9] = 1e30;
    x[10] = -3.0;
    let formats =
        [WeightFormat::F32, quantized(CodecSpec::Log { mu: None }, 4, Scaling::Group(16))];
    for keys in [&arange, &scattered] {
        for w in &formats {
            for bias in [false, true] {
                let fused = one_hot_model(keys, w, bias, false);
                let apart = one_hot_model(keys, w, bias, true);
                let file = LsqFile::from_bytes(&fused).unwrap();
                assert_eq!(Plan::new(&file).unwrap().layer_count(), 1, "fused into one step");
                let file = LsqFile::from_bytes(&apart).unwrap();
                assert_eq!(Plan::new(&file).unwrap().layer_count(), 2, "one-hot is an output");
                let got = run_exact(&fused, &[&x]).remove(0);
                let want = run_exact(&apart, &[&x]).remove(0);
                assert_eq!(got, want, "keys {:?}, bias {bias}", &keys[..3]);
                // Rows whose value is no key are the bias (or zeros).
                let zero_or_bias = if bias { noise(5, 62) } else { vec![0.0; 5] };
                assert_eq!(got[5 * 5..6 * 5], zero_or_bias[..]);
            }
        }
    }
}

/// Keys with a repeated value (a one-hot with two ones) are not fused.
#[test]
fn one_hot_linear_needs_distinct_keys() {
    let mut keys: Vec<f32> = (0..20).map(|k| k as f32).collect();
    keys[7] = 3.0;
    let bytes = one_hot_model(&keys, &WeightFormat::F32, true, false);
    let file = LsqFile::from_bytes(&bytes).unwrap();
    assert_eq!(Plan::new(&file).unwrap().layer_count(), 2);
    keys[7] = -0.0;
    keys[0] = 0.0;
    let bytes = one_hot_model(&keys, &WeightFormat::F32, true, false);
    let file = LsqFile::from_bytes(&bytes).unwrap();
    assert_eq!(Plan::new(&file).unwrap().layer_count(), 2, "-0 equals 0");
}
