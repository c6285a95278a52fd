#!/usr/bin/env bash
# One command for a benchmark: installs what is missing (build and
# benchmark packages), then runs `cargo bench --bench NAME` (default:
# servers, netlens and its peers beside nginx, wrk, iperf3 and
# netlens-peer). Needs root for the BPF programs. The benchmark's own
# settings come from the environment, e.g.
#   NETLENS_BENCH_ROUNDS=2 NETLENS_BENCH_SECS=2 ./scripts/bench.sh
#   NETLENS_BENCH_LOADS=churn NETLENS_BENCH_CONFIGS=conns,tcplife ./scripts/bench.sh
#   ./scripts/bench.sh overhead
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "netlens: the benchmarks load BPF programs: run this as root" >&2
    exit 1
fi
. scripts/deps.sh
netlens_install_missing "${NETLENS_BUILD_PKGS[@]}" "${NETLENS_BENCH_PKGS[@]}"
netlens_mount_tracefs
# The benchmarks run the traffic peer of the workspace's peer/ crate, which
# `cargo bench --bench NAME` alone does not build.
cargo build --locked --release -p netlens-peer
exec cargo bench --locked --bench "${1:-servers}"
