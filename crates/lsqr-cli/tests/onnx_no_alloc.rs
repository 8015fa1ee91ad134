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
    // (model, input shapes, whether the inputs are token ids)
    let models: [(&str, &[&str], bool); 7] = [
        ("magika/model.onnx", &["bytes=1,2048"], false),
        ("ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", &["x=1,3,48,192"], false),
        ("ppocr/ch_PP-OCRv4_det_infer.onnx", &["x=1,3,96,96"], false),
        ("ppocr/ch_PP-OCRv4_rec_infer.onnx", &["x=1,3,48,96"], false),
        ("bert/paraphrase-MiniLM-L3-v2.onnx", &["input_ids=1,8", "attention_mask=1,8"], true),
        ("speechmos/plcmos_v2.onnx", &["degraded_audio=1,1,20,257", "rater_embed=1,64"], false),
        ("speechmos/aecmos_1668423760.onnx", &["input=1,3,20,160", "h0=4,1,96"], false),
    ];
    for (rel, shapes, ids) in models {
        for (tag, extra) in [("f32", ["--keep", "*"]), ("c4", ["--bits", "4"])] {
            let src = model(rel);
            let out = dir.join(format!("{}-{tag}.lsq", rel.replace('/', "_")));
            let (src, out_s) = (src.to_str().unwrap(), out.to_str().unwrap());
            let mut args = vec!["quantize", src, "-o", out_s, extra[0], extra[1]];
            for s in shapes {
                args.extend(["--input-shape", s]);
            }
            lsqr(&args);
            let bytes = std::fs::read(&out).unwrap();
            let file = LsqFile::from_bytes(&bytes).unwrap();
            let plan = Plan::new(&file).unwrap();
            let mut arena = vec![0u8; plan.arena_len()];
            let mut r = plan.bind(&mut arena).unwrap();
            let xs: Vec<Vec<f32>> = plan
                .inputs()
                .iter()
                .map(|i| {
                    let n: usize = i.shape.iter().product();
                    (0..n)
                        .map(|k| {
                            if ids {
                                (k * 37 % 1000) as f32 + 1.0
                            } else {
                                ((k * 37 % 257) as f32) / 128.0 - 1.0
                            }
                        })
                        .collect()
                })
                .collect();
            let feed = |r: &mut lsqr::runtime::Runner<'_, '_, '_>| -> Result<(), _> {
                for (k, x) in xs.iter().enumerate() {
                    r.set_input(k, x)?;
                }
                r.run()
            };
            feed(&mut r).unwrap();
            ALLOCATIONS.set(0);
            ARMED.set(true);
            let ok = feed(&mut r).and_then(|()| r.output(0).map(drop));
            ARMED.set(false);
            ok.unwrap();
            let count = ALLOCATIONS.get();
            assert_eq!(count, 0, "{rel} ({tag}): {count} allocations while running");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}
