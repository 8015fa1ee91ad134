//! Running an imported ONNX graph allocates nothing after `bind`: a
//! counting global allocator sees zero allocations while the real models'
//! graphs (every op they use, float and quantized) run.
//!
//! One test only, so no other test thread allocates while counting.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{lsqr, model};
use lsqr::format::LsqFile;
use lsqr::runtime::Plan;

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

#[test]
fn imported_graphs_run_without_allocating() {
    let dir = std::env::temp_dir().join(format!("lsqr-onnx-noalloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
            ALLOCATIONS.store(0, Ordering::Relaxed);
            ARMED.store(true, Ordering::Relaxed);
            let ok = r.set_input(0, &x).and_then(|()| r.run()).and_then(|()| r.output(0).map(drop));
            ARMED.store(false, Ordering::Relaxed);
            ok.unwrap();
            let count = ALLOCATIONS.load(Ordering::Relaxed);
            assert_eq!(count, 0, "{rel} ({tag}): {count} allocations while running");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}
