#!/usr/bin/env bash
# One command for the whole test suite: installs what is missing, checks
# formatting and lints, then runs the unit and integration tests. The
# integration tests load the real BPF programs and need root; as non-root
# they skip and say so.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
netlens_install_missing "${NETLENS_BUILD_PKGS[@]}" "${NETLENS_TEST_PKGS[@]}" "${NETLENS_IMAGE_PKGS[@]}"
netlens_install_python_tools
netlens_mount_tracefs
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# BPF tests share the kernel's tracepoints and create namespaces: run them
# on two threads at most to keep the 2-CPU CI machine responsive.
cargo test --locked --lib --bins --tests -- --test-threads=2
