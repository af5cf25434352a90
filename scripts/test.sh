#!/usr/bin/env bash
# Every test, from a fresh machine (as root): installs what the tests need, builds,
# then runs lint, unit tests, the simulator's tests, the OCI conformance suite with
# the LWK acceptance tests, the MPI and image tests and the Docker, podman, containerd,
# CRI and SingularityCE-shim end-to-end tests against lwk-runc, and the conformance suite
# once more against Debian's runc (outside its listed differences) to show the suite
# checks the OCI contract rather than our own quirks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "==> cargo fmt --check, cargo clippy -D warnings"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> the crash-point build: lwk-runc with the failpoints feature (debug, stripped, beside the release one)"
cargo build --features failpoints --bin lwk-runc --quiet
mkdir -p target/failpoints
strip -o target/failpoints/lwk-runc target/debug/lwk-runc

echo "==> unit tests, simulator tests, conformance + LWK + engine tests against lwk-runc"
OCI_RUNTIME=$PWD/target/release/lwk-runc cargo test --workspace --no-fail-fast

echo "==> the OCI conformance suite against Debian's runc"
OCI_RUNTIME=$(command -v runc) cargo test -p lwk-conformance --no-fail-fast \
  --test lifecycle --test hooks --test exec --test errors --test cli --test docker --test podman \
  --test containerd --test cri --test singularity
