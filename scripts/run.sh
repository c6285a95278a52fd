#!/usr/bin/env bash
# One command: install missing build dependencies, build netlens (release)
# and run its main job, `netlens conns`, with any extra arguments given.
#   ./scripts/run.sh            # logging mode
#   ./scripts/run.sh -d -t 2    # table, refreshed every 2 s
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
netlens_install_missing "${NETLENS_BUILD_PKGS[@]}"
netlens_mount_tracefs
cargo build --release --locked -q
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
exec $SUDO ./target/release/netlens conns "$@"
