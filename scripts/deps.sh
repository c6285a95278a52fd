#!/usr/bin/env bash
# Installs what building and testing netlens needs, on Debian/Ubuntu, only
# when something is missing. Sourced by scripts/run.sh, scripts/test.sh and
# scripts/bench.sh.
set -euo pipefail

NETLENS_BUILD_PKGS=(clang llvm libelf-dev zlib1g-dev pkg-config make)
# Tests: namespaces, veth and qdiscs (ip, tc), packet drops and netfilter
# (nft), unprivileged runs (setpriv, in util-linux), procps, threaded NAPI
# (ethtool), bridge reachability (ping), an independent NET_RX measurement
# (bpftrace), a real Prometheus server scraping `-P`
# (tests/prometheus.rs runs its binary directly, not the service), a
# headless browser with its WebDriver for the web UI (tests/web.rs), and a
# terminal for the full-screen UI (tests/tui.rs drives it in tmux), and
# systemd-analyze for the systemd unit (tests/deploy.rs; systemd need not
# be running), and docker-compose to check the compose file
# (tests/dashboards.rs; no Docker daemon is used).
NETLENS_TEST_PKGS=(iproute2 nftables util-linux procps ethtool iputils-ping bpftrace prometheus
    chromium chromium-driver tmux systemd python3-venv docker-compose)
# The container image (scripts/build-image.sh, tests/container.rs): podman
# with the runc runtime (crun fails on these machines' cgroup v1 layout).
NETLENS_IMAGE_PKGS=(podman runc ca-certificates)
# Python tools of the tests, from PyPI, pinned, in a virtual environment of
# the project's own: kubernetes-validate checks the Kubernetes manifests
# against the API's schemas offline (tests/deploy.rs).
NETLENS_TOOLS_VENV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/tools/venv"
NETLENS_PY_TOOLS=(kubernetes-validate==1.37.0)
# Benchmarks (scripts/bench.sh): real servers and clients for
# benches/servers.rs (nginx, wrk, iperf3), the peers it compares netlens
# with (libbpf-tools: tcplife, tcpstates, softirqs, hardirqs), and bpftool
# for the per-program BPF run times of benches/overhead.rs. In Debian 12,
# nginx-light is only a metapackage over nginx. On a host with an init
# system, installing nginx also starts Debian's own nginx service (port 80);
# the benchmark never uses it, it runs its own nginx on 127.0.0.1.
NETLENS_BENCH_PKGS=(nginx wrk iperf3 libbpf-tools bpftool)

netlens_install_missing() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "netlens: installing ${missing[*]}" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -q
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "netlens: cargo not found: install a Rust toolchain (1.82 or later), e.g. with rustup" >&2
        exit 1
    fi
}

# The Python tools of NETLENS_PY_TOOLS, once (needs python3-venv).
netlens_install_python_tools() {
    if [ ! -x "$NETLENS_TOOLS_VENV/bin/kubernetes-validate" ]; then
        echo "netlens: installing ${NETLENS_PY_TOOLS[*]} into $NETLENS_TOOLS_VENV" >&2
        python3 -m venv "$NETLENS_TOOLS_VENV"
        "$NETLENS_TOOLS_VENV/bin/pip" install -q "${NETLENS_PY_TOOLS[@]}"
    fi
}

# BPF tracepoints are listed in tracefs; mount it where a minimal system
# did not (needs root; harmless when already mounted).
netlens_mount_tracefs() {
    if [ "$(id -u)" -eq 0 ] && [ ! -d /sys/kernel/tracing/events ]; then
        mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
    fi
}
