#!/usr/bin/env bash
# The portable paths and the C API's pointer handling under Miri (nightly):
# undefined behaviour (aliasing violations, out-of-bounds or dangling
# accesses, uninitialised reads) fails the run. Under Miri the CPU has no
# AVX2, so every SIMD crate runs its portable path; the AVX2 paths are
# checked by AddressSanitizer (scripts/asan-tests.sh) instead.
#
# What runs: the unit tests of lsqr-pack and lsqr-kernels, and the C API
# tests that exercise its pointer handling (handles, NULLs, outputs, last
# errors across threads, metadata, the micro runtime's arena and its
# re-binding by lsqr_micro_set_exact, prepared weights). Miri is
# slow (~1 minute per C API test here), so `--all` runs the whole C API
# suite (~40 minutes) and lsqr-format's tests (~7 minutes, less the FIFO
# test: Miri cannot spawn `mkfifo`). lsqr-codec's tests quantize megabytes
# of weights and take too long under Miri; its unsafe code is only the
# AVX2 encoder, which ASan covers. PROPTEST_CASES keeps property tests to a
# few cases each. Floats are made deterministic: by default Miri perturbs
# the last bits of math functions, and the tests compare bit for bit.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version > /dev/null 2>&1; then
  rustup component add --toolchain nightly miri rust-src
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/miri"
export PROPTEST_CASES="${PROPTEST_CASES:-4}"
# Isolation off: the tests read files (golden data, temporary models).
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation -Zmiri-deterministic-floats}"

cargo +nightly miri test -p lsqr-pack -p lsqr-kernels --lib
if [ "${1:-}" = "--all" ]; then
  cargo +nightly miri test -p lsqr-capi --lib
  cargo +nightly miri test -p lsqr-format --tests -- --skip fifo
else
  cargo +nightly miri test -p lsqr-capi --lib -- \
    api_tests::null_arguments_are_refused_and_outputs_untouched \
    api_tests::free_null_is_a_no_op_and_free_keeps_the_last_error \
    api_tests::a_model_is_shared_by_threads_and_last_errors_are_per_thread \
    api_tests::metadata_of_every_type \
    api_tests::micro_results_equal_the_rust_runtime_and_run_layer_equals_run \
    api_tests::micro_set_exact_selects_the_exact_path \
    api_tests::prepared_weight_status_paths
fi
