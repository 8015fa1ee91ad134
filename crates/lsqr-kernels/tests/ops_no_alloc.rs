//! The runtime's contract for the layout, resize, pool and conv_transpose
//! operators: a successful call allocates nothing. Checked with a global
//! allocator that counts this thread's allocations while armed.

use std::cell::Cell;

use lsqr_codec::Scaling;
use lsqr_kernels::conv_transpose::*;
use lsqr_kernels::layout::*;
use lsqr_kernels::packed::PackedWeight;
use lsqr_kernels::pool::*;
use lsqr_kernels::resize::*;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_allocation() {
    if ARMED.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

struct Counting;

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

/// Runs `f` armed and returns how many allocations it made.
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn operators_allocate_nothing() {
    // The path is chosen once per process, on first use (reading
    // `LSQR_FORCE_SCALAR` allocates its value): done before measuring, as
    // the runtime's load step does.
    lsqr_kernels::Kernels::active();
    // The counter sees this thread's allocations.
    assert_eq!(allocations(|| drop(std::hint::black_box(vec![0u8; 8]))), 1);
    let x: Vec<f32> = (0..2 * 3 * 20 * 18).map(|i| i as f32).collect();
    let shape = [2, 3, 20, 18];
    let mut out = vec![0.0f32; 4 * x.len()];
    let n = x.len();
    let count = allocations(|| {
        transpose_into(&x, &shape, &[0, 2, 3, 1], &mut out[..n]).unwrap();
        transpose_into(&x, &shape, &[1, 0, 2, 3], &mut out[..n]).unwrap();
        slice_into(&x, &shape, &[1, 0, 19, 1], &[-1, 2, -3, 4], &[2, 2, 7, 5], &mut out[..140])
            .unwrap();
        let (s, c) = onnx_slice_params(20, -1, i64::MIN, -2).unwrap();
        assert_eq!((s, c), (19, 10));
        concat_into(&x, &shape, 1, 2, &mut out[..2 * 6 * 360], &[2, 6, 20, 18]).unwrap();
        for mode in [PadMode::Constant(1.0), PadMode::Reflect, PadMode::Edge] {
            let len = 2 * 3 * 23 * 20;
            pad_into(&x, &shape, &[0, 0, 1, 2], &[0, 0, 2, 0], mode, &mut out[..len]).unwrap();
        }
        gather_into(&x, &shape, 2, &[3, 0, 19], &mut out[..2 * 3 * 3 * 18]).unwrap();
    });
    assert_eq!(count, 0, "layout");

    let count = allocations(|| {
        for mode in [ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic] {
            let p = ResizeParams {
                mode,
                coordinate_transform: CoordinateTransform::HalfPixel,
                nearest_mode: NearestMode::RoundPreferFloor,
                scales: [2.0, 0.5],
                cubic_coeff_a: -0.75,
                exclude_outside: true,
            };
            resize_into(&x, &shape, &[2, 3, 40, 9], &p, &mut out[..2 * 3 * 40 * 9]).unwrap();
        }
    });
    assert_eq!(count, 0, "resize");

    let count = allocations(|| {
        let p = Pool2dParams {
            kernel: [3, 2],
            stride: [2, 2],
            pads: [1, 1, 1, 0],
            dilation: [1, 2],
            ceil_mode: true,
            count_include_pad: true,
        };
        let [_, _, oh, ow] = p.output_shape(shape).unwrap();
        let len = 6 * oh * ow;
        max_pool2d_ext_into(&x, shape, &p, &mut out[..len]).unwrap();
        avg_pool2d_ext_into(&x, shape, &p, &mut out[..len]).unwrap();
        global_max_pool2d_into(&x, shape, &mut out[..6]).unwrap();
    });
    assert_eq!(count, 0, "pool");

    // A plain and a 4-bit weight [cin 3, cout/g 2, 3, 3], groups 1.
    let wv: Vec<f32> = (0..54).map(|i| (i % 7) as f32 - 3.0).collect();
    let packed = vec![0x5au8; 27];
    let table: Vec<f32> = (0..16).map(|i| i as f32 / 4.0).collect();
    let quant =
        PackedWeight::new(&packed, 4, &[3, 2, 3, 3], Scaling::Row, vec![0.5, 1.0, 2.0], table)
            .unwrap();
    let plain = PackedWeight::from_f32(&wv, &[3, 2, 3, 3]).unwrap();
    let p = ConvTranspose2dParams { stride: [2, 2], pads: [1, 0, 1, 0], ..Default::default() };
    let oshape = conv_transpose2d_output_shape(shape, plain.shape(), &p).unwrap();
    let olen: usize = oshape.iter().product();
    for w in [&plain, &quant] {
        // The first quantized decode of the process picks lsqr-pack's
        // unpacker, which under LSQR_FORCE_SCALAR reads (allocates) the
        // variable once: a load-time cost, done before measuring.
        w.decode_row(0, &mut [0.0; 18]).unwrap();
        let mut scratch = vec![0.0; conv_transpose2d_scratch_len(w, shape, &p).unwrap()];
        let count = allocations(|| {
            conv_transpose2d_into(
                w,
                Some(&[1.0, 2.0]),
                &x,
                shape,
                &p,
                &mut out[..olen],
                &mut scratch,
            )
            .unwrap();
        });
        assert_eq!(count, 0, "conv_transpose");
    }
}
