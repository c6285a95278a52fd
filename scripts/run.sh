#!/usr/bin/env bash
# One command: install missing build dependencies, build netlens (release)
# and run its main job, `netlens conns`, with any extra arguments given; a
# first argument naming another subcommand runs that one instead.
#   ./scripts/run.sh            # logging mode
#   ./scripts/run.sh -d -t 2    # table, refreshed every 2 s
#   ./scripts/run.sh cost -u 1234   # network CPU cost, with process 1234 beside it
#   ./scripts/run.sh agent --web    # both roles, /metrics and the web UI
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
netlens_install_missing "${NETLENS_BUILD_PKGS[@]}"
netlens_mount_tracefs
cargo build --release --locked -q
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
case "${1:-}" in
    conns | cost | agent | check | help | --help | -h | --version | -V) exec $SUDO ./target/release/netlens "$@" ;;
    *) exec $SUDO ./target/release/netlens conns "$@" ;;
esac
