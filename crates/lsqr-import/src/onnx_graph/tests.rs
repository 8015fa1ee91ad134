//! Graph import on hand-built ONNX models: folds and fusions checked by
//! running the result, and one test per kind of bad model.

use std::io::Cursor;

use lsqr::format::{LsqFile, LsqWriter, Value};
use lsqr::runtime::Plan;

use super::*;

/// A tiny protobuf encoder.
#[derive(Default, Clone)]
struct Enc(Vec<u8>);

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Enc {
    fn key(mut self, field: u32, wire: u64) -> Self {
        varint(&mut self.0, (u64::from(field) << 3) | wire);
        self
    }
    fn int(self, field: u32, v: i64) -> Self {
        let mut s = self.key(field, 0);
        varint(&mut s.0, v as u64);
        s
    }
    fn bytes(self, field: u32, b: &[u8]) -> Self {
        let mut s = self.key(field, 2);
        varint(&mut s.0, b.len() as u64);
        s.0.extend_from_slice(b);
        s
    }
    fn str(self, field: u32, v: &str) -> Self {
        self.bytes(field, v.as_bytes())
    }
    fn msg(self, field: u32, m: Enc) -> Self {
        self.bytes(field, &m.0)
    }
    fn f32(self, field: u32, v: f32) -> Self {
        let mut s = self.key(field, 5);
        s.0.extend_from_slice(&v.to_le_bytes());
        s
    }
}

fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> Enc {
    let mut t = Enc::default();
    for &d in dims {
        t = t.int(1, d);
    }
    t.int(2, 1)
        .str(8, name)
        .bytes(9, &values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>())
}

fn i64_tensor(name: &str, values: &[i64]) -> Enc {
    Enc::default()
        .int(1, values.len() as i64)
        .int(2, 7)
        .str(8, name)
        .bytes(9, &values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>())
}

fn attr_int(name: &str, v: i64) -> Enc {
    Enc::default().str(1, name).int(3, v).int(20, 2)
}

fn attr_float(name: &str, v: f32) -> Enc {
    Enc::default().str(1, name).f32(2, v).int(20, 1)
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: &[Enc]) -> Enc {
    let mut n = Enc::default();
    for i in inputs {
        n = n.str(1, i);
    }
    for o in outputs {
        n = n.str(2, o);
    }
    n = n.str(3, &format!("{op}_{}", outputs.first().unwrap_or(&"")));
    n = n.str(4, op);
    for a in attrs {
        n = n.msg(5, a.clone());
    }
    n
}

/// A ValueInfoProto of a float tensor; a dim is a number or a symbol.
fn value_info(name: &str, dims: &[&str]) -> Enc {
    let mut shape = Enc::default();
    for d in dims {
        let dim = match d.parse::<i64>() {
            Ok(v) => Enc::default().int(1, v),
            Err(_) => Enc::default().str(2, d),
        };
        shape = shape.msg(1, dim);
    }
    let tensor = Enc::default().int(1, 1).msg(2, shape);
    Enc::default().str(1, name).msg(2, Enc::default().msg(1, tensor))
}

struct Model {
    nodes: Vec<Enc>,
    inits: Vec<Enc>,
    inputs: Vec<Enc>,
    outputs: Vec<Enc>,
    value_infos: Vec<Enc>,
    opset: i64,
}

impl Model {
    fn new(inputs: Vec<Enc>, outputs: Vec<Enc>) -> Model {
        Model { nodes: vec![], inits: vec![], inputs, outputs, value_infos: vec![], opset: 17 }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut g = Enc::default();
        for n in &self.nodes {
            g = g.msg(1, n.clone());
        }
        g = g.str(2, "g");
        for t in &self.inits {
            g = g.msg(5, t.clone());
        }
        for i in &self.inputs {
            g = g.msg(11, i.clone());
        }
        for o in &self.outputs {
            g = g.msg(12, o.clone());
        }
        for v in &self.value_infos {
            g = g.msg(13, v.clone());
        }
        Enc::default().int(1, 8).msg(8, Enc::default().str(1, "").int(2, self.opset)).msg(7, g).0
    }

    fn import(&self, shapes: &[(&str, &[usize])]) -> Result<ImportedGraph, ImportError> {
        self.import_with(shapes, &[])
    }

    /// As `import`, with graph inputs fixed to values.
    fn import_with(
        &self,
        shapes: &[(&str, &[usize])],
        values: &[(&str, &[f64])],
    ) -> Result<ImportedGraph, ImportError> {
        let model = crate::from_bytes(self.bytes(), "test.onnx")?;
        let options = GraphOptions {
            input_shapes: shapes.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect(),
            input_values: values.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect(),
        };
        graph_of(&model, &options)
    }
}

fn error(m: &Model, shapes: &[(&str, &[usize])]) -> String {
    m.import(shapes).expect_err("the import must fail").to_string()
}

/// The imported graph as a .lsq file, all tensors f32.
fn lsq_bytes(g: &ImportedGraph) -> Vec<u8> {
    let mut w = LsqWriter::new(Cursor::new(Vec::new())).unwrap();
    for (name, shape) in &g.input_shapes {
        let dims = shape.iter().map(|&d| d as i64).collect();
        w.add_metadata(&format!("input_shape.{name}"), Value::IntList(dims)).unwrap();
    }
    for t in &g.tensors {
        w.add_raw_f32(&t.name, &t.shape, &t.data).unwrap();
    }
    w.set_graph(g.graph.clone());
    w.finish().unwrap().into_inner()
}

/// Writes the imported graph (all tensors f32) and runs it.
fn run(g: &ImportedGraph, inputs: &[&[f32]]) -> Vec<Vec<f32>> {
    let bytes = lsq_bytes(g);
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    let mut arena = vec![0u8; plan.arena_len()];
    let mut r = plan.bind(&mut arena).unwrap();
    for (i, x) in inputs.iter().enumerate() {
        r.set_input(i, x).unwrap();
    }
    r.run().unwrap();
    (0..plan.outputs().len()).map(|i| r.output(i).unwrap().to_vec()).collect()
}

fn ops(g: &ImportedGraph) -> Vec<&str> {
    g.graph.layers.iter().map(|l| l.op.as_str()).collect()
}

/// `(x * clip(x + 3, 0, 6)) / 6` with `x` read by Add and Mul, as
/// PaddlePaddle exports hard swish; `extra` nodes follow.
fn paddle_hardswish(extra: Vec<Enc>, outputs: &[&str]) -> Model {
    let outs = outputs.iter().map(|o| value_info(o, &["8"])).collect();
    let mut m = Model::new(vec![value_info("x", &["8"])], outs);
    m.inits = vec![
        f32_tensor("three", &[], &[3.0]),
        f32_tensor("lo", &[], &[0.0]),
        f32_tensor("hi", &[], &[6.0]),
        f32_tensor("six", &[], &[6.0]),
    ];
    m.nodes = vec![
        node("Add", &["x", "three"], &["t"], &[]),
        node("Clip", &["t", "lo", "hi"], &["r"], &[]),
        node("Mul", &["x", "r"], &["p"], &[]),
        node("Div", &["p", "six"], &["y"], &[]),
    ];
    m.nodes.extend(extra);
    m
}

#[test]
fn paddle_hard_swish_becomes_one_layer_with_the_chains_values() {
    let g = paddle_hardswish(vec![], &["y"]).import(&[]).unwrap();
    assert_eq!(ops(&g), ["hardswish"]);
    let x = [-f32::INFINITY, -4.0, -3.0, -1.2345, -0.0, 0.7, 2.9999, f32::MAX];
    let y = run(&g, &[&x]).remove(0);
    for (&v, &got) in x.iter().zip(&y) {
        // The chain's own f32 steps.
        let want = (v * (v + 3.0).clamp(0.0, 6.0)) / 6.0;
        assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{v}");
    }
}

#[test]
fn a_hard_swish_chain_read_elsewhere_stays_a_chain() {
    // The Mul's product is also a graph output: the steps stay.
    let g = paddle_hardswish(vec![], &["y", "p"]).import(&[]).unwrap();
    assert!(!ops(&g).contains(&"hardswish"), "{:?}", ops(&g));
    // A divisor other than 6 is not hard swish.
    let mut m = paddle_hardswish(vec![], &["y"]);
    m.inits[3] = f32_tensor("six", &[], &[5.0]);
    assert!(!ops(&m.import(&[]).unwrap()).contains(&"hardswish"));
}

#[test]
fn matmul_add_relu_becomes_linear_with_bias() {
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let mut m = Model::new(vec![value_info("x", &["N", "4"])], vec![value_info("y", &["N", "3"])]);
    m.inits = vec![f32_tensor("W", &[4, 3], &w), f32_tensor("b", &[3], &[0.5, -0.5, 1.0])];
    m.nodes = vec![
        node("MatMul", &["x", "W"], &["h"], &[]),
        node("Add", &["h", "b"], &["hb"], &[]),
        node("Relu", &["hb"], &["y"], &[]),
    ];
    let g = m.import(&[("x", &[2, 4])]).unwrap();
    assert_eq!(ops(&g), ["linear", "relu"]);
    assert_eq!(g.graph.layers[0].weights.len(), 2, "the Add became the bias");
    assert_eq!(g.tensors.iter().filter(|t| t.role == TensorRole::Weight).count(), 1);
    let x = [1.0, 2.0, -1.0, 0.5, 0.0, -2.0, 3.0, 1.0];
    let y = run(&g, &[&x]).remove(0);
    let b = [0.5, -0.5, 1.0];
    for r in 0..2 {
        for c in 0..3 {
            let v: f32 = (0..4).map(|k| x[r * 4 + k] * w[k * 3 + c]).sum::<f32>() + b[c];
            assert!((y[r * 3 + c] - v.max(0.0)).abs() < 1e-5, "{r},{c}: {} vs {v}", y[r * 3 + c]);
        }
    }
}

#[test]
fn conv_batchnorm_folds_and_fusions_are_exact() {
    // Conv -> BatchNormalization -> x * sigmoid(x) -> Clip(0, 6).
    let w: Vec<f32> = (0..18).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
    let mut m =
        Model::new(vec![value_info("x", &["1", "1", "5", "5"])], vec![value_info("y", &[])]);
    m.outputs = vec![value_info("y", &["1", "2", "5", "5"])];
    m.inits = vec![
        f32_tensor("W", &[2, 1, 3, 3], &w),
        f32_tensor("g", &[2], &[1.5, 0.5]),
        f32_tensor("beta", &[2], &[0.1, -0.2]),
        f32_tensor("mean", &[2], &[0.3, -0.1]),
        f32_tensor("var", &[2], &[2.0, 0.25]),
        f32_tensor("lo", &[], &[0.0]),
        f32_tensor("hi", &[], &[6.0]),
    ];
    let pads = Enc::default().str(1, "pads").int(8, 1).int(8, 1).int(8, 1).int(8, 1).int(20, 7);
    m.nodes = vec![
        node("Conv", &["x", "W"], &["c"], &[pads]),
        node(
            "BatchNormalization",
            &["c", "g", "beta", "mean", "var"],
            &["bn"],
            &[attr_float("epsilon", 1e-3)],
        ),
        node("Sigmoid", &["bn"], &["s"], &[]),
        node("Mul", &["bn", "s"], &["m"], &[]),
        node("Clip", &["m", "lo", "hi"], &["y"], &[]),
    ];
    let g = m.import(&[]).unwrap();
    assert_eq!(ops(&g), ["conv2d", "silu", "relu6"]);
    let x: Vec<f32> = (0..25).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let y = run(&g, &[&x]).remove(0);
    // The unfused computation, in f64.
    let (gm, bt, mn, vr) = ([1.5, 0.5], [0.1, -0.2], [0.3, -0.1], [2.0, 0.25]);
    for oc in 0..2 {
        for i in 0..5i64 {
            for j in 0..5i64 {
                let mut acc = 0.0f64;
                for ki in 0..3i64 {
                    for kj in 0..3i64 {
                        let (a, b) = (i + ki - 1, j + kj - 1);
                        if (0..5).contains(&a) && (0..5).contains(&b) {
                            acc += x[(a * 5 + b) as usize] as f64
                                * w[oc * 9 + (ki * 3 + kj) as usize] as f64;
                        }
                    }
                }
                let bn = (acc - mn[oc]) / (vr[oc] + 1e-3f64).sqrt() * gm[oc] + bt[oc];
                let want = (bn / (1.0 + (-bn).exp())).clamp(0.0, 6.0);
                let got = y[oc * 25 + (i * 5 + j) as usize] as f64;
                assert!((got - want).abs() < 1e-5, "{oc},{i},{j}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn shape_arithmetic_folds_away() {
    // y = Reshape(x, Concat(Gather(Shape(x), 0), [-1])): a flatten written
    // the way exporters write it; nothing but the reshape remains.
    let mut m =
        Model::new(vec![value_info("x", &["B", "2", "3"])], vec![value_info("y", &["B", "6"])]);
    m.inits = vec![i64_tensor("zero", &[0]), i64_tensor("minus1", &[-1])];
    m.nodes = vec![
        node("Shape", &["x"], &["s"], &[]),
        node("Gather", &["s", "zero"], &["b"], &[attr_int("axis", 0)]),
        node("Concat", &["b", "minus1"], &["shape"], &[attr_int("axis", 0)]),
        node("Reshape", &["x", "shape"], &["y"], &[]),
    ];
    let g = m.import(&[("x", &[3, 2, 3])]).unwrap();
    assert_eq!(ops(&g), ["reshape"]);
    assert_eq!(g.graph.layers[0].attr("shape"), Some(&Value::IntList(vec![3, 6])));
}

#[test]
fn a_cycle_is_an_error() {
    let mut m = Model::new(vec![value_info("x", &["1"])], vec![value_info("b", &["1"])]);
    m.nodes = vec![node("Add", &["x", "b"], &["a"], &[]), node("Relu", &["a"], &["b"], &[])];
    let e = error(&m, &[]);
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn a_dangling_input_is_an_error() {
    let mut m = Model::new(vec![value_info("x", &["1"])], vec![value_info("y", &["1"])]);
    m.nodes = vec![node("Add", &["x", "ghost"], &["y"], &[])];
    let e = error(&m, &[]);
    assert!(e.contains("'ghost' is never produced") && e.contains("Add"), "{e}");
}

#[test]
fn an_unknown_op_names_node_op_and_opset() {
    let mut m = Model::new(vec![value_info("x", &["1"])], vec![value_info("y", &["1"])]);
    m.nodes = vec![node("FrobnicateV2", &["x"], &["y"], &[])];
    let e = error(&m, &[]);
    assert!(e.contains("'FrobnicateV2_y' (FrobnicateV2, opset 17)"), "{e}");
    assert!(e.contains("supported ops: Abs, Add"), "{e}");
}

#[test]
fn an_unsupported_attribute_is_an_error() {
    let mut m = Model::new(vec![value_info("x", &["2", "3"])], vec![value_info("y", &["2", "3"])]);
    m.nodes = vec![node("Softmax", &["x"], &["y"], &[attr_int("temperature", 2)])];
    let e = error(&m, &[]);
    assert!(e.contains("attribute 'temperature' is not supported (supported: axis)"), "{e}");
}

#[test]
fn shapes_that_do_not_broadcast_are_an_error() {
    let mut m = Model::new(vec![value_info("x", &["2", "4"])], vec![value_info("y", &["2", "4"])]);
    m.inits = vec![f32_tensor("c", &[3], &[1.0, 2.0, 3.0])];
    m.nodes = vec![node("Add", &["x", "c"], &["y"], &[])];
    let e = error(&m, &[]);
    assert!(e.contains("do not broadcast") && e.contains("Add"), "{e}");
}

#[test]
fn a_missing_input_shape_is_an_error_naming_input_and_dim() {
    let mut m =
        Model::new(vec![value_info("x", &["batch", "4"])], vec![value_info("y", &["batch", "4"])]);
    m.nodes = vec![node("Relu", &["x"], &["y"], &[])];
    let e = error(&m, &[]);
    assert!(e.contains("graph input 'x': dim 0 is symbolic ('batch')"), "{e}");
    assert!(e.contains("--input-shape x=<batch>,4"), "{e}");
    // A given shape must agree with the fixed dims.
    let e = error(&m, &[("x", &[2, 5])]);
    assert!(e.contains("dim 1 is 4 in the model, --input-shape says 5"), "{e}");
    let e = error(&m, &[("z", &[2, 4])]);
    assert!(e.contains("'z', which is not a graph input"), "{e}");
    assert_eq!(ops(&m.import(&[("x", &[2, 4])]).unwrap()), ["relu"]);
}

#[test]
fn a_shape_that_contradicts_the_declared_output_is_a_note() {
    let mut m = Model::new(vec![value_info("x", &["2", "3"])], vec![value_info("y", &["6", "1"])]);
    m.inits = vec![i64_tensor("shape", &[3, 2])];
    m.nodes =
        vec![node("Relu", &["x"], &["t"], &[]), node("Reshape", &["t", "shape"], &["y"], &[])];
    let g = m.import(&[]).unwrap();
    assert_eq!(g.notes.len(), 1);
    assert!(
        g.notes[0].contains("'y' has shape [3, 2]; the model declares [6, 1]"),
        "{:?}",
        g.notes
    );
}

#[test]
fn a_stale_intermediate_annotation_is_ignored_as_onnxruntime_does() {
    // value_info says [6, 1] for a value that is [2, 3] (exporters leave
    // such annotations; onnxruntime warns and runs): the import runs.
    let mut m = Model::new(vec![value_info("x", &["2", "3"])], vec![value_info("y", &["3", "2"])]);
    m.value_infos = vec![value_info("t", &["6", "1"])];
    m.inits = vec![i64_tensor("shape", &[3, 2])];
    m.nodes =
        vec![node("Relu", &["x"], &["t"], &[]), node("Reshape", &["t", "shape"], &["y"], &[])];
    let g = m.import(&[]).unwrap();
    let y = run(&g, &[&[-1.0, 2.0, -3.0, 4.0, 5.0, -6.0]]).remove(0);
    assert_eq!(y, [0.0, 2.0, 0.0, 4.0, 5.0, 0.0]);
}

#[test]
fn subgraphs_and_other_domains_are_errors() {
    let mut m = Model::new(vec![value_info("x", &["1"])], vec![value_info("y", &["1"])]);
    let branch = Enc::default().str(1, "then_branch").msg(6, Enc::default().str(2, "b")).int(20, 5);
    m.nodes = vec![node("If", &["x"], &["y"], std::slice::from_ref(&branch))];
    assert!(error(&m, &[]).contains("needs then_branch and else_branch"), "{}", error(&m, &[]));
    let body = Enc::default().str(1, "body").msg(6, Enc::default().str(2, "b")).int(20, 5);
    m.nodes = vec![node("Loop", &["", "x"], &["y"], &[body])];
    assert!(error(&m, &[]).contains("subgraphs (Loop, Scan)"), "{}", error(&m, &[]));
    let mut custom = node("Relu", &["x"], &["y"], &[]);
    custom = custom.str(7, "com.microsoft");
    m.nodes = vec![custom];
    assert!(error(&m, &[]).contains("domain 'com.microsoft'"), "{}", error(&m, &[]));
}

#[test]
fn hostile_folds_are_bounded() {
    // ConstantOfShape of a huge shape must be an error, not an allocation.
    let mut m = Model::new(vec![value_info("x", &["1"])], vec![value_info("y", &["1"])]);
    m.inits = vec![i64_tensor("shape", &[1 << 20, 1 << 20])];
    m.nodes = vec![
        node("ConstantOfShape", &["shape"], &["big"], &[]),
        node("Add", &["x", "big"], &["y"], &[]),
    ];
    let e = error(&m, &[]);
    assert!(e.contains("too many elements"), "{e}");
    // Nor may a small constant be expanded or tiled past the fold cap.
    let mut m = Model::new(vec![value_info("x", &["1"])], vec![value_info("y", &["1"])]);
    m.inits = vec![f32_tensor("one", &[1], &[1.0]), i64_tensor("shape", &[1 << 12, 1 << 11])];
    m.nodes = vec![
        node("Expand", &["one", "shape"], &["big"], &[]),
        node("Add", &["x", "big"], &["y"], &[]),
    ];
    let e = error(&m, &[]);
    assert!(e.contains("more than the 4194304 a fold may grow to"), "{e}");
    // And a chain of folds within that cap runs out of its work budget.
    let mut m = Model::new(vec![value_info("x", &["1"])], vec![value_info("y", &["1"])]);
    m.inits = vec![f32_tensor("one", &[1], &[1.0]), i64_tensor("shape", &[1 << 11, 1 << 11])];
    m.nodes = vec![node("Expand", &["one", "shape"], &["e0"], &[])];
    for k in 1..=8 {
        m.nodes.push(node("Neg", &[&format!("e{}", k - 1)], &[&format!("e{k}")], &[]));
    }
    m.nodes.push(node("Add", &["x", "e8"], &["y"], &[]));
    let e = error(&m, &[]);
    assert!(e.contains("takes more work than the model's size allows"), "{e}");
}

#[test]
fn graph_of_refuses_other_formats() {
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }";
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let padded = format!("{header:<117}\n");
    npy.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    npy.extend_from_slice(padded.as_bytes());
    npy.extend_from_slice(&1.0f32.to_le_bytes());
    let model = crate::from_bytes(npy, "x.npy").unwrap();
    let e = graph_of(&model, &GraphOptions::default()).unwrap_err().to_string();
    assert!(e.contains("npy files hold no graph"), "{e}");
}

#[test]
fn nodes_out_of_order_are_sorted() {
    // A chain of 50 Neg nodes listed last to first.
    let mut m = Model::new(vec![value_info("x", &["3"])], vec![value_info("v50", &["3"])]);
    for k in (1..=50).rev() {
        let input = if k == 1 { "x".to_string() } else { format!("v{}", k - 1) };
        m.nodes.push(node("Neg", &[&input], &[&format!("v{k}")], &[]));
    }
    let g = m.import(&[]).unwrap();
    assert_eq!(g.graph.layers.len(), 50);
    assert_eq!(
        run(&g, &[&[1.0, -2.0, 3.0]]).remove(0),
        [1.0, -2.0, 3.0],
        "an even number of negations"
    );
}

#[test]
fn channel_mul_and_add_after_a_conv_fold_into_it() {
    // Conv (with bias) -> Mul by a per-channel constant -> Add of another:
    // one conv2d layer, the same values.
    let w: Vec<f32> = (0..2 * 3).map(|i| i as f32 * 0.3 - 0.7).collect();
    let mut m = Model::new(
        vec![value_info("x", &["1", "3", "2", "2"])],
        vec![value_info("y", &["1", "2", "2", "2"])],
    );
    m.inits = vec![
        f32_tensor("W", &[2, 3, 1, 1], &w),
        f32_tensor("B", &[2], &[0.5, -1.0]),
        f32_tensor("s", &[1, 2, 1, 1], &[2.0, -0.5]),
        f32_tensor("t", &[2, 1, 1], &[0.25, 3.0]),
    ];
    m.nodes = vec![
        node("Conv", &["x", "W", "B"], &["c"], &[]),
        node("Mul", &["s", "c"], &["m"], &[]),
        node("Add", &["m", "t"], &["y"], &[]),
    ];
    let g = m.import(&[]).unwrap();
    assert_eq!(ops(&g), ["conv2d"]);
    let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).cos()).collect();
    let y = run(&g, &[&x]).remove(0);
    let (b, s, t) = ([0.5, -1.0], [2.0, -0.5], [0.25, 3.0]);
    for oc in 0..2 {
        for p in 0..4 {
            let conv: f32 = (0..3).map(|ic| w[oc * 3 + ic] * x[ic * 4 + p]).sum::<f32>() + b[oc];
            let want = conv * s[oc] + t[oc];
            assert!((y[oc * 4 + p] - want).abs() < 1e-5, "{oc} {p}: {} vs {want}", y[oc * 4 + p]);
        }
    }
}

#[test]
fn prelu_after_a_conv_expands_without_folding_its_slope_into_the_conv() {
    // PRelu expands to Less, Mul(x, slope), Where: the Mul by a per-channel
    // constant must not fold into the conv, whose output Where also reads.
    let w: Vec<f32> = (0..2 * 3).map(|i| i as f32 * 0.3 - 0.7).collect();
    let mut m = Model::new(
        vec![value_info("x", &["1", "3", "2", "2"])],
        vec![value_info("y", &["1", "2", "2", "2"])],
    );
    m.inits = vec![f32_tensor("W", &[2, 3, 1, 1], &w), f32_tensor("a", &[2, 1, 1], &[0.25, -2.0])];
    m.nodes = vec![node("Conv", &["x", "W"], &["c"], &[]), node("PRelu", &["c", "a"], &["y"], &[])];
    let g = m.import(&[]).unwrap();
    assert_eq!(ops(&g).iter().filter(|&&o| o == "conv2d").count(), 1);
    let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.9).sin()).collect();
    let y = run(&g, &[&x]).remove(0);
    let slope = [0.25, -2.0];
    let mut signs = [0, 0];
    for oc in 0..2 {
        for p in 0..4 {
            let c: f32 = (0..3).map(|ic| w[oc * 3 + ic] * x[ic * 4 + p]).sum();
            let want = if c < 0.0 { c * slope[oc] } else { c };
            signs[usize::from(c < 0.0)] += 1;
            assert!((y[oc * 4 + p] - want).abs() < 1e-5, "{oc} {p}: {} vs {want}", y[oc * 4 + p]);
        }
    }
    assert!(signs[0] > 0 && signs[1] > 0, "both branches are taken: {signs:?}");
}

#[test]
fn an_expansion_error_names_the_original_node() {
    let mut m = Model::new(
        vec![value_info("x", &["1", "4", "2", "2"])],
        vec![value_info("y", &["1", "1", "4", "4"])],
    );
    m.nodes = vec![node("DepthToSpace", &["x"], &["y"], &[attr_int("blocksize", 3)])];
    let e = error(&m, &[]);
    assert!(e.contains("(DepthToSpace, opset 17)") && e.contains("multiple of blocksize"), "{e}");
}

#[test]
fn gather_of_computed_indices_runs_and_checks_them_at_run_time() {
    // An embedding lookup: a [5, 3] table, token ids [2, 2] given at run
    // time, one of them negative.
    let table: Vec<f32> = (0..15).map(|i| i as f32 * 0.5).collect();
    let mut m =
        Model::new(vec![value_info("ids", &["2", "2"])], vec![value_info("y", &["2", "2", "3"])]);
    m.inits = vec![f32_tensor("E", &[5, 3], &table)];
    m.nodes = vec![node("Gather", &["E", "ids"], &["y"], &[])];
    let g = m.import(&[]).unwrap();
    let gather = g.graph.layers.iter().find(|l| l.op == "gather").unwrap();
    assert_eq!(gather.weights.len(), 1, "the table is a weight");
    let table_role = g.tensors.iter().find(|t| t.name == gather.weights[0]).unwrap().role;
    assert_eq!(table_role, TensorRole::Weight, "which the quantizer compresses");
    let y = run(&g, &[&[4.0, 0.0, -1.0, 2.0]]).remove(0);
    let want: Vec<f32> =
        [4, 0, 4, 2].iter().flat_map(|&r| table[r * 3..r * 3 + 3].to_vec()).collect();
    assert_eq!(y, want);
    // An id past the table is a run-time error, not a read out of bounds.
    let bytes = lsq_bytes(&g);
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    let mut arena = vec![0u8; plan.arena_len()];
    let mut r = plan.bind(&mut arena).unwrap();
    r.set_input(0, &[5.0, 0.0, 0.0, 0.0]).unwrap();
    let e = r.run().expect_err("id 5 is past the table").to_string();
    assert!(e.contains("gather") && e.contains("index"), "{e}");
}

#[test]
fn gather_of_computed_indices_from_a_computed_table() {
    // The table is itself a run-time value: the two-input gather form.
    let mut m = Model::new(
        vec![value_info("E", &["4", "2"]), value_info("ids", &["3"])],
        vec![value_info("y", &["3", "2"])],
    );
    m.nodes = vec![node("Gather", &["E", "ids"], &["y"], &[])];
    let g = m.import(&[]).unwrap();
    assert!(g.graph.layers.iter().any(|l| l.op == "gather" && l.inputs.len() == 2));
    let table = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
    let y = run(&g, &[&table, &[3.0, -4.0, 1.0]]).remove(0);
    assert_eq!(y, [6.0, 7.0, 0.0, 1.0, 2.0, 3.0]);
}

fn attr_graph(name: &str, nodes: Vec<Enc>, outputs: &[&str]) -> Enc {
    let mut g = Enc::default();
    for n in nodes {
        g = g.msg(1, n);
    }
    g = g.str(2, name);
    for o in outputs {
        g = g.msg(12, value_info(o, &[]));
    }
    Enc::default().str(1, name).msg(6, g).int(20, 5)
}

#[test]
fn if_with_a_computed_condition_runs_both_branches_and_selects() {
    // y = sum(x) > 0 ? x * 2 : -x, the branches reading the outer x.
    let mut m = Model::new(vec![value_info("x", &["2"])], vec![value_info("y", &["2"])]);
    m.inits = vec![f32_tensor("zero", &[], &[0.0]), f32_tensor("two", &[], &[2.0])];
    let then_b = attr_graph("then_branch", vec![node("Mul", &["x", "two"], &["t"], &[])], &["t"]);
    let else_b = attr_graph("else_branch", vec![node("Neg", &["x"], &["t"], &[])], &["t"]);
    m.nodes = vec![
        node("ReduceSum", &["x"], &["s"], &[]),
        node("Greater", &["s", "zero"], &["c"], &[]),
        node("If", &["c"], &["y"], &[then_b, else_b]),
    ];
    let g = m.import(&[]).unwrap();
    assert!(ops(&g).contains(&"where"), "{:?}", ops(&g));
    assert_eq!(run(&g, &[&[1.0, 2.0]]).remove(0), [2.0, 4.0]);
    assert_eq!(run(&g, &[&[-1.0, -2.0]]).remove(0), [1.0, 2.0]);
}

#[test]
fn if_with_a_constant_condition_takes_its_branch_only() {
    let mut m = Model::new(vec![value_info("x", &["2"])], vec![value_info("y", &["2"])]);
    m.inits = vec![f32_tensor("two", &[], &[2.0])];
    let then_b = attr_graph("then_branch", vec![node("Mul", &["x", "two"], &["t"], &[])], &["t"]);
    let else_b = attr_graph("else_branch", vec![node("Neg", &["x"], &["t"], &[])], &["t"]);
    m.nodes = vec![
        node("Shape", &["x"], &["s"], &[]),
        node("ReduceSum", &["s"], &["n"], &[]),
        node("Cast", &["n"], &["c"], &[attr_int("to", 9)]),
        node("If", &["c"], &["y"], &[then_b, else_b]),
    ];
    let g = m.import(&[]).unwrap();
    assert!(ops(&g).contains(&"mul") && !ops(&g).contains(&"neg"), "only the then branch");
    assert_eq!(run(&g, &[&[1.0, -3.0]]).remove(0), [2.0, -6.0]);
}

/// `y = mode > 0 ? -x : sum(x)`: branches of different shapes behind a
/// condition computed from the graph input `mode`.
fn model_branching_on_an_input() -> Model {
    let inputs = vec![value_info("x", &["2"]), value_info("mode", &[])];
    let mut m = Model::new(inputs, vec![value_info("y", &["?"])]);
    m.inits = vec![f32_tensor("zero", &[], &[0.0])];
    let then_b = attr_graph("then_branch", vec![node("Neg", &["x"], &["t"], &[])], &["t"]);
    let else_b = attr_graph("else_branch", vec![node("ReduceSum", &["x"], &["t"], &[])], &["t"]);
    m.nodes = vec![
        node("Greater", &["mode", "zero"], &["c"], &[]),
        node("If", &["c"], &["y"], &[then_b, else_b]),
    ];
    m
}

#[test]
fn if_on_a_graph_input_names_the_input_to_fix() {
    let e = error(&model_branching_on_an_input(), &[]);
    assert!(e.contains("must agree") && e.contains("from graph input 'mode'"), "{e}");
    assert!(e.contains("--input-value"), "{e}");
}

#[test]
fn an_input_fixed_to_a_value_decides_its_branches_at_import() {
    let m = model_branching_on_an_input();
    let g = m.import_with(&[], &[("mode", &[1.0])]).unwrap();
    assert_eq!(g.graph.inputs, ["x"], "'mode' is no longer an input");
    let ops = ops(&g);
    assert!(ops.contains(&"neg") && !ops.iter().any(|o| o.contains("reduce")), "{ops:?}");
    assert_eq!(run(&g, &[&[1.0, -3.0]]).remove(0), [-1.0, 3.0]);
    let g = m.import_with(&[], &[("mode", &[-2.0])]).unwrap();
    assert_eq!(run(&g, &[&[1.0, -3.0]]).remove(0), [-2.0]);
}

#[test]
fn input_values_are_checked() {
    let m = model_branching_on_an_input();
    let e = m.import_with(&[], &[("nope", &[1.0])]).unwrap_err().to_string();
    assert!(e.contains("--input-value names 'nope'") && e.contains("inputs: x, mode"), "{e}");
    let e = m.import_with(&[], &[("mode", &[1.0, 2.0])]).unwrap_err().to_string();
    assert!(e.contains("graph input 'mode'") && e.contains("2 values for shape []"), "{e}");
    let e = m.import_with(&[], &[("x", &[1.0])]).unwrap_err().to_string();
    assert!(
        e.contains("graph input 'x'") && e.contains("1 value for shape [2], which holds 2"),
        "{e}"
    );
    let e = m.import_with(&[], &[("mode", &[f64::NAN])]).unwrap_err().to_string();
    assert!(e.contains("graph input 'mode'") && e.contains("not finite"), "{e}");
}

#[test]
fn if_branches_of_different_shapes_need_a_constant_condition() {
    let mut m = Model::new(vec![value_info("x", &["2"])], vec![value_info("y", &["1"])]);
    m.inits = vec![f32_tensor("zero", &[], &[0.0])];
    let then_b = attr_graph("then_branch", vec![node("Neg", &["x"], &["t"], &[])], &["t"]);
    let else_b = attr_graph("else_branch", vec![node("ReduceSum", &["x"], &["t"], &[])], &["t"]);
    m.nodes = vec![
        node("ReduceSum", &["x"], &["s"], &[]),
        node("Greater", &["s", "zero"], &["c"], &[]),
        node("If", &["c"], &["y"], &[then_b, else_b]),
    ];
    let e = error(&m, &[]);
    assert!(e.contains("(If, opset 17)") && e.contains("must agree"), "{e}");
}

#[test]
fn dropout_masks_keep_every_element_at_inference() {
    // Caffe2-era exports (SqueezeNet, opset 9) declare a mask nothing
    // reads; a mask that is read is all true (1) at inference.
    let mut m = Model::new(vec![value_info("x", &["2", "3"])], vec![value_info("y", &["2", "3"])]);
    m.opset = 9;
    m.nodes = vec![
        node("Dropout", &["x"], &["d", "unused_mask"], &[attr_float("ratio", 0.5)]),
        node("Relu", &["d"], &["y"], &[]),
    ];
    let g = m.import(&[("x", &[2, 3])]).unwrap();
    let x = [-1.0, 2.0, -3.0, 4.0, 0.5, -0.5];
    assert_eq!(run(&g, &[&x]), [vec![0.0, 2.0, 0.0, 4.0, 0.5, 0.0]]);

    m.outputs.push(value_info("z", &["2", "3"]));
    m.nodes.push(node("Cast", &["unused_mask"], &["mask_f"], &[attr_int("to", 1)]));
    m.nodes.push(node("Mul", &["x", "mask_f"], &["z"], &[]));
    let g = m.import(&[("x", &[2, 3])]).unwrap();
    let out = run(&g, &[&x]);
    assert_eq!(out[1], x, "x times a mask of ones");
}

fn attr_ints(name: &str, v: &[i64]) -> Enc {
    let mut a = Enc::default().str(1, name);
    for &x in v {
        a = a.int(8, x);
    }
    a.int(20, 7)
}

/// `x [1, 2, 3, 2]` `op` a constant `b` with opset 6's attributes.
fn opset6_binary(op: &str, b_dims: &[i64], b: &[f32], attrs: &[Enc]) -> Model {
    let mut m = Model::new(
        vec![value_info("x", &["1", "2", "3", "2"])],
        vec![value_info("y", &["1", "2", "3", "2"])],
    );
    m.opset = 6;
    m.inits = vec![f32_tensor("b", b_dims, b)];
    m.nodes = vec![node(op, &["x", "b"], &["y"], attrs)];
    m
}

#[test]
fn opset6_broadcast_aligns_the_operand_at_axis() {
    let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
    // b [2, 3] from axis 1: b[c, h] is added to x[0, c, h, w], where
    // opset 7 would align [2, 3] with the last two dims (and refuse it).
    let b = [100.0, 200.0, 300.0, 400.0, 500.0, 600.0];
    let bcast = [attr_int("broadcast", 1), attr_int("axis", 1)];
    let g = opset6_binary("Add", &[2, 3], &b, &bcast).import(&[]).unwrap();
    let want: Vec<f32> = (0..12).map(|i| x[i] + b[i / 2]).collect();
    assert_eq!(run(&g, &[&x]), [want]);
    // Negative axes count from the end; without an axis, the last dims.
    let bcast = [attr_int("broadcast", 1), attr_int("axis", -1)];
    let g = opset6_binary("Mul", &[2], &[2.0, 3.0], &bcast).import(&[]).unwrap();
    let want: Vec<f32> = (0..12).map(|i| x[i] * [2.0, 3.0][i % 2]).collect();
    assert_eq!(run(&g, &[&x]), std::slice::from_ref(&want));
    let g = opset6_binary("Mul", &[2], &[2.0, 3.0], &[attr_int("broadcast", 1)]).import(&[]);
    assert_eq!(run(&g.unwrap(), &[&x]), [want]);

    // broadcast = 0 asks for equal shapes; an operand that is not a run
    // of the dims from its axis is an error too.
    let e = error(&opset6_binary("Sub", &[2], &[1.0, 2.0], &[attr_int("broadcast", 0)]), &[]);
    assert!(e.contains("broadcast is 0, and the shapes [1, 2, 3, 2] and [2] differ"), "{e}");
    let bad = [attr_int("broadcast", 1), attr_int("axis", 2)];
    let e = error(&opset6_binary("Div", &[2, 3], &b, &bad), &[]);
    assert!(e.contains("[2, 3] is not a run of [1, 2, 3, 2]'s dims from axis 2"), "{e}");
    let bad = [attr_int("broadcast", 1), attr_int("axis", 4)];
    let e = error(&opset6_binary("Div", &[2], &[1.0, 2.0], &bad), &[]);
    assert!(e.contains("is not a run"), "{e}");
}

#[test]
fn opset6_prelu_slopes_are_per_channel() {
    let mut m = Model::new(
        vec![value_info("x", &["1", "2", "1", "2"])],
        vec![value_info("y", &["1", "2", "1", "2"])],
    );
    m.opset = 6;
    m.inits = vec![f32_tensor("s", &[2], &[0.5, 0.25])];
    m.nodes = vec![node("PRelu", &["x", "s"], &["y"], &[])];
    let x = [-4.0, -4.0, -4.0, 4.0];
    let g = m.import(&[]).unwrap();
    assert_eq!(run(&g, &[&x]), [vec![-2.0, -2.0, -1.0, 4.0]]);
    // From opset 7 a 1-D slope is aligned with the last dim.
    m.opset = 7;
    let g = m.import(&[]).unwrap();
    assert_eq!(run(&g, &[&x]), [vec![-2.0, -1.0, -2.0, 4.0]]);
}

#[test]
fn opset6_test_mode_and_memory_hints_are_read_as_opset_7_writes_them() {
    let mut m = Model::new(vec![value_info("x", &["1", "2"])], vec![value_info("y", &["1", "2"])]);
    m.opset = 5;
    m.inits = ["g", "b", "mean", "var"]
        .iter()
        .zip([[2.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 4.0]])
        .map(|(n, v)| f32_tensor(n, &[2], &v))
        .collect();
    let bn = |is_test: i64| {
        node(
            "BatchNormalization",
            &["d", "g", "b", "mean", "var"],
            &["n"],
            &[
                attr_int("is_test", is_test),
                attr_float("epsilon", 0.0),
                attr_ints("consumed_inputs", &[0, 0, 0, 1, 1]),
            ],
        )
    };
    m.nodes = vec![
        node("Dropout", &["x"], &["d"], &[attr_int("is_test", 1), attr_float("ratio", 0.5)]),
        bn(1),
        node("Relu", &["n"], &["y"], &[attr_ints("consumed_inputs", &[1])]),
    ];
    let g = m.import(&[]).unwrap();
    // (x - mean) / sqrt(var) * g + b, then relu.
    assert_eq!(run(&g, &[&[3.0, -8.0]]), [vec![4.0, 0.0]]);
    m.nodes[1] = bn(0);
    let e = error(&m, &[]);
    assert!(e.contains("(BatchNormalization, opset 5): is_test = 0 (training mode)"), "{e}");
}
