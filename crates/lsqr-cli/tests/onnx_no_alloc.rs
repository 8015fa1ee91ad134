//! Running an imported ONNX graph allocates nothing after `bind`: a
//! counting global allocator sees zero allocations while the real models'
//! graphs (every op they use, float and quantized) run.
//!
//! Only the running thread's allocations count: with the `parallel`
//! feature (on in workspace test builds) rayon's worker threads start up
//! and allocate on their own schedule, possibly while the graph runs; the
//! runtime's work on the calling thread, rayon's job injection included,
//! is what must not allocate.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{lsqr, model};
use lsqr::format::LsqFile;
use lsqr::runtime::Plan;

struct Counting;

thread_local! {
    /// Counting on this thread, and the count.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// Counts an allocation if this thread is counting.
fn note() {
    // `try_with`: a thread being torn down has no locals left.
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: forwards every call to the system allocator unchanged; the
// counter is a const-initialised thread local of plain cells, which
// allocates nothing itself.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn imported_graphs_run_without_allocating() {
    let dir = common::process_dir("onnx-noalloc");
    let models = [
        ("magika/model.onnx", "bytes=1,2048"),
        ("ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", "x=1,3,48,192"),
        ("ppocr/ch_PP-OCRv4_det_infer.onnx", "x=1,3,96,96"),
        ("ppocr/ch_PP-OCRv4_rec_infer.onnx", "x=1,3,48,96"),
    ];
    for (rel, shape) in models {
        for (tag, extra) in [("f32", ["--keep", "*"]), ("c4", ["--bits", "4"])] {
            let src = model(rel);
            let out = dir.join(format!("{}-{tag}.lsq", rel.replace('/', "_")));
            let (src, out_s) = (src.to_str().unwrap(), out.to_str().unwrap());
            lsqr(&["quantize", src, "-o", out_s, "--input-shape", shape, extra[0], extra[1]]);
            let bytes = std::fs::read(&out).unwrap();
            let file = LsqFile::from_bytes(&bytes).unwrap();
            let plan = Plan::new(&file).unwrap();
            let mut arena = vec![0u8; plan.arena_len()];
            let mut r = plan.bind(&mut arena).unwrap();
            let n: usize = plan.inputs()[0].shape.iter().product();
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 257) as f32) / 128.0 - 1.0).collect();
            r.set_input(0, &x).unwrap();
            r.run().unwrap();
            ALLOCATIONS.set(0);
            ARMED.set(true);
            let ok = r.set_input(0, &x).and_then(|()| r.run()).and_then(|()| r.output(0).map(drop));
            ARMED.set(false);
            ok.unwrap();
            let count = ALLOCATIONS.get();
            assert_eq!(count, 0, "{rel} ({tag}): {count} allocations while running");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}
