#!/usr/bin/env bash
# The portable paths and the C API's pointer handling under Miri (nightly):
# undefined behaviour (aliasing violations, out-of-bounds or dangling
# accesses, uninitialised reads) fails the run. Under Miri the CPU has no
# AVX2, so every SIMD crate runs its portable path; the AVX2 paths are
# checked by AddressSanitizer (scripts/asan-tests.sh) instead.
#
# What runs: the unit tests of lsqr-pack, lsqr-kernels and lsqr-capi (the
# C API's whole test suite, which is its unit-test binary), and lsqr-format's
# integration tests. lsqr-codec's tests quantize megabytes of weights and
# take too long under Miri; its unsafe code is only the AVX2 encoder.
# PROPTEST_CASES keeps property tests to a few cases each.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version > /dev/null 2>&1; then
  rustup component add --toolchain nightly miri rust-src
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/miri"
export PROPTEST_CASES="${PROPTEST_CASES:-4}"
# Isolation off: the tests read files (golden data, temporary models).
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"

cargo +nightly miri test -p lsqr-pack -p lsqr-kernels -p lsqr-capi --lib "$@"
cargo +nightly miri test -p lsqr-format --tests "$@"
