#!/usr/bin/env bash
# Runs inside a kernel-matrix VM (see scripts/test-kernels.sh): runs each
# test binary given after the result directory, one test at a time, and
# writes its output, exit code and duration there. The host's root file
# system is shared read-only; /tmp is a writable overlay.
set -u
out="$1"
shift
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
cd "$(dirname "$0")/.." || exit 1
uname -r >"$out/uname"
if [ ! -d /sys/kernel/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
for bin in "$@"; do
    name="$(basename "$bin")"
    name="${name%-*}"
    start=$(date +%s)
    # One test at a time: an emulated CPU is slow, and the BPF tests share
    # the kernel's tracepoints.
    # shellcheck disable=SC2086 # a test name filter, or nothing
    "$bin" --test-threads=1 ${NETLENS_VM_TEST_FILTER:-} >"$out/$name.log" 2>&1
    echo $? >"$out/$name.rc"
    echo $(($(date +%s) - start)) >"$out/$name.secs"
done
echo done >"$out/finished"
