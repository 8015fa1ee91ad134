//! Helpers shared by the benches that time batch-1 products on weights
//! out of cache: benches/kernels.rs, and peers/candle/benches/vs_candle.rs
//! (which includes this file by path, from its own workspace).
//!
//! A batch-1 product reads each weight element once, so its speed is set
//! by memory bandwidth. Timed back to back, a repetition would find part
//! of the weight still in the last-level cache from the one before, and
//! measure more than a model's layer gets, whose weight the other layers
//! have evicted by the time it runs again.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Evicts the weights from the caches by writing one byte per 64-byte
/// line of `buf` (both benches pass 256 MiB, many times a last-level
/// cache), so that the next timed call reads its weight from memory.
pub fn flush(buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate().step_by(64) {
        *b = b.wrapping_add(i as u8);
    }
    black_box(&buf);
}

/// Times `iters` calls of `f`, each after a [`flush`] of `flush_buf`
/// (not timed), for criterion's `iter_custom`: every iteration reads the
/// weights from memory, as a layer of a model run once per token does.
pub fn cold(iters: u64, flush_buf: &mut [u8], mut f: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        flush(flush_buf);
        let t = Instant::now();
        f();
        total += t.elapsed();
    }
    total
}
