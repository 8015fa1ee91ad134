//! After `bind`, the runtime never touches the heap: a counting global
//! allocator sees zero allocations while inputs are set, layers run,
//! outputs are read, and run-time errors are returned.
//!
//! One test only, so no other test thread allocates while counting.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use lsqr::codec::{CodecSpec, QuantizeOptions, Scaling};
use lsqr::format::{Layer, LsqFile, Value};
use lsqr::kernels::conv::Conv2dParams;
use lsqr::kernels::Pool2d;
use lsqr::runtime::{ModelBuilder, Plan, WeightFormat};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; the
// counter is a relaxed atomic and allocates nothing itself.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    let out = f();
    ARMED.store(false, Ordering::Relaxed);
    (out, ALLOCATIONS.load(Ordering::Relaxed))
}

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect()
}

/// Every kind of layer the runtime runs: quantized and f32 linear and
/// conv (batch 2), pools, add, flatten, softmax, activations.
fn model() -> Vec<u8> {
    let q = |bits| {
        WeightFormat::Quantized(QuantizeOptions {
            scaling: Scaling::Row,
            ..QuantizeOptions::new(CodecSpec::Log { mu: None }, bits)
        })
    };
    let mut b = ModelBuilder::new();
    let c1 = Conv2dParams { stride: [2, 2], padding: [1, 1], ..Default::default() };
    let c2 = Conv2dParams { padding: [1, 1], groups: 2, ..Default::default() };
    b.input("img", &[2, 2, 8, 8])
        .conv2d(
            "c1",
            "img",
            "conv1",
            &values(4 * 2 * 9),
            [4, 2, 3, 3],
            Some(&values(4)),
            &c1,
            &q(4),
        )
        .activation("r1", "c1", "gelu")
        .conv2d(
            "c2",
            "r1",
            "conv2",
            &values(4 * 2 * 9),
            [4, 2, 3, 3],
            None,
            &c2,
            &WeightFormat::F32,
        )
        .add("res", "r1", "c2")
        .max_pool2d("mp", "res", &Pool2d::new(2, 2, 0))
        .avg_pool2d("ap", "mp", &Pool2d::new(3, 1, 1))
        .flatten("flat", "ap", 1)
        .linear("h", "flat", "fc1", &values(8 * 16), [8, 16], Some(&values(8)), &q(3))
        .activation("hr", "h", "relu")
        .linear("logits", "hr", "fc2", &values(3 * 8), [3, 8], None, &WeightFormat::F32)
        .softmax("p", "logits")
        .global_avg_pool2d("gap", "res")
        .output("p")
        .output("gap");
    b.to_bytes().unwrap()
}

/// The other ops: leaky_relu, mul, batch_norm, global_avg_pool2d, reshape,
/// layer_norm, conv1d (quantized), and every remaining activation.
fn other_ops_model() -> Vec<u8> {
    let layer =
        |op: &str, ins: &[&str], out: &str, weights: &[&str], attrs: Vec<(&str, Value)>| Layer {
            op: op.into(),
            inputs: ins.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.into()],
            weights: weights.iter().map(|s| s.to_string()).collect(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
    let f = WeightFormat::F32;
    let q = WeightFormat::Quantized(QuantizeOptions::new(CodecSpec::Nf, 4));
    let mut b = ModelBuilder::new();
    b.input("x", &[2, 3, 4, 5])
        .input("s", &[1, 3, 1, 1])
        .leaky_relu("l", "x", 0.2)
        .mul("m", "l", "s")
        .tensor("bn.g", &values(3), &[3], &f)
        .tensor("bn.b", &values(3), &[3], &f)
        .tensor("bn.m", &values(3), &[3], &f)
        .tensor("bn.v", &[1.0, 2.0, 3.0], &[3], &f)
        .layer(layer("batch_norm", &["m"], "bn", &["bn.g", "bn.b", "bn.m", "bn.v"], vec![]))
        .global_avg_pool2d("gap", "bn")
        .layer(layer("reshape", &["gap"], "r", &[], vec![("shape", Value::IntList(vec![2, -1]))]))
        .tensor("ln.g", &values(3), &[3], &f)
        .tensor("ln.b", &values(3), &[3], &f)
        .layer(layer("layer_norm", &["r"], "ln", &["ln.g", "ln.b"], vec![]))
        .layer(layer(
            "reshape",
            &["ln"],
            "seq",
            &[],
            vec![("shape", Value::IntList(vec![1, 2, 3]))],
        ))
        .tensor("c1.w", &values(4 * 2 * 3), &[4, 2, 3], &q)
        .layer(layer("conv1d", &["seq"], "c", &["c1.w"], vec![("padding", Value::Int(1))]));
    let mut prev = "c".to_string();
    for op in ["relu6", "sigmoid", "tanh", "gelu_tanh", "silu", "hardsigmoid", "hardswish"] {
        b.activation(op, &prev, op);
        prev = op.to_string();
    }
    b.output(&prev);
    b.to_bytes().unwrap()
}

#[test]
fn running_allocates_nothing() {
    let bytes = other_ops_model();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    let mut arena = vec![0u8; plan.arena_len()];
    let mut runner = plan.bind(&mut arena).unwrap();
    let (x, s) = (values(120), values(3));
    let (result, n) = counted(|| {
        runner.set_input(0, &x)?;
        runner.set_input(1, &s)?;
        runner.run()
    });
    result.unwrap();
    assert_eq!(n, 0, "allocations while running the other ops");
    assert_eq!(runner.output(0).unwrap().len(), 12);

    let bytes = model();
    let file = LsqFile::from_bytes(&bytes).unwrap();
    let plan = Plan::new(&file).unwrap();
    let mut arena = vec![0u8; plan.arena_len()];
    let mut runner = plan.bind(&mut arena).unwrap();
    let x = values(2 * 2 * 8 * 8);

    let (result, n) = counted(|| {
        runner.set_input(0, &x)?;
        runner.run()?;
        runner.run()
    });
    result.unwrap();
    assert_eq!(n, 0, "allocations during set_input + run");
    let first = runner.output(0).unwrap().to_vec();
    assert!(first.iter().all(|v| v.is_finite()) && (first.iter().sum::<f32>() - 2.0).abs() < 1e-4);

    let (result, n) = counted(|| {
        for i in 0..plan.layer_count() {
            runner.run_layer(i)?;
        }
        let p = runner.output(0)?;
        let gap = runner.output(1)?;
        Ok::<_, lsqr::runtime::RuntimeError>((p[0], gap.len()))
    });
    let (p0, gap_len) = result.unwrap();
    assert_eq!(n, 0, "allocations during run_layer + output");
    assert_eq!((p0, gap_len), (first[0], 2 * 4));

    // Run-time errors are plain values too.
    let (errors, n) = counted(|| {
        [
            runner.set_input(0, &x[1..]).is_err(),
            runner.set_input(7, &x).is_err(),
            runner.run_layer(plan.layer_count()).is_err(),
            runner.output(9).is_err(),
        ]
    });
    assert_eq!(errors, [true; 4]);
    assert_eq!(n, 0, "allocations while returning run-time errors");

    // The counter does count: building a plan allocates.
    let (_, n) = counted(|| Plan::new(&file).map(|p| p.layer_count()));
    assert!(n > 0);
}
