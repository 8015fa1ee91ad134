#!/usr/bin/env bash
# The tests of the unsafe-heavy crates (lsqr-pack, lsqr-codec, lsqr-kernels,
# lsqr-format, lsqr-capi) under AddressSanitizer: a read or write one byte
# past a heap buffer fails the run. The SIMD tests hand the kernels exact
# heap allocations so that such an over-read is seen.
#
# Needs a nightly toolchain (`-Zsanitizer`). `--target` keeps build scripts
# and proc macros uninstrumented; the build has its own target directory.
# Library and integration tests only (`--lib --tests`): doctests would need
# their own instrumented rustdoc runs and test no unsafe code of their own.
set -euo pipefail
cd "$(dirname "$0")/.."

target=$(rustc +nightly -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Zsanitizer=address"
export RUSTDOCFLAGS="-Zsanitizer=address"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/asan"
# Leak checking stays on: the test suites leak nothing.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"

cargo +nightly test --target "$target" \
  -p lsqr-pack -p lsqr-codec -p lsqr-kernels -p lsqr-format -p lsqr-capi \
  --lib --tests "$@"
