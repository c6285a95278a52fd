#!/usr/bin/env bash
# The kernel test matrix: boots real distribution kernels from Debian's
# package archive in virtual machines (virtme-ng on qemu, software
# emulation) and runs netlens's integration tests inside each, against the
# binaries that scripts/test.sh built on the host.
#
#   scripts/test-kernels.sh                 # every kernel of the matrix
#   scripts/test-kernels.sh 6.1-rt 6.12     # some of them
#   NETLENS_VM_TESTS=cost scripts/test-kernels.sh 6.1-rt   # one test binary
#   NETLENS_VM_TESTS= scripts/test-kernels.sh       # every test binary
#   NETLENS_VM_TEST_FILTER=bpftrace ...     # only tests whose name has it
#
# Kernels: 6.1 (Debian 12's own), 6.1-rt (its PREEMPT_RT flavour), 6.12
# (Debian 12's security-updates kernel); the newest package of each is
# taken. The host's own kernel is what scripts/test.sh tests.
#
# Results go to target/kernels/results/KERNEL/: one log, exit code and
# duration per test binary, the guest's console, and a summary. The last
# line printed is "N passed, N failed" over every kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

MATRIX=(6.1 6.1-rt 6.12)
[ "$#" -gt 0 ] && MATRIX=("$@")
CACHE="${NETLENS_KERNEL_CACHE:-$PWD/target/kernels}"
# virtme-ng from PyPI, pinned: its command line and guest init are what
# this script was written against.
VNG_VERSION=1.42
# Per kernel: boot (about 30 s) plus the tests (up to about 22 min on the
# emulated PREEMPT_RT kernel); a hung guest is stopped.
VM_TIMEOUT_SECS="${NETLENS_VM_TIMEOUT_SECS:-2400}"

if [ "$(id -u)" -ne 0 ]; then
    echo "test-kernels: needs root (the tests inside the VMs load BPF programs, and the" >&2
    echo "host side installs qemu); run it as root or with sudo" >&2
    exit 1
fi

netlens_install_missing "${NETLENS_BUILD_PKGS[@]}" "${NETLENS_TEST_PKGS[@]}" \
    qemu-system-x86 busybox-static cpio zstd kmod python3-venv
netlens_mount_tracefs
mkdir -p "$CACHE"

VENV="$CACHE/venv-$VNG_VERSION"
if [ ! -x "$VENV/bin/vng" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "virtme-ng==$VNG_VERSION"
fi
# vng runs virtme-run, which lives beside it.
export PATH="$VENV/bin:$PATH"

# The newest Debian package of a matrix entry.
package_pattern() {
    case "$1" in
        6.1) echo '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' ;;
        6.1-rt) echo '^linux-image-6\.1\.0-[0-9]+-rt-amd64-unsigned$' ;;
        6.12) echo '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' ;;
        *) echo "test-kernels: unknown kernel '$1' (known: 6.1 6.1-rt 6.12)" >&2; return 1 ;;
    esac
}

newest_package() {
    apt-cache search --names-only "$1" | awk '{print $1}' | sort -V | tail -n 1
}

APT_UPDATED=0
resolve_package() {
    local pattern pkg
    pattern="$(package_pattern "$1")"
    pkg="$(newest_package "$pattern")"
    if [ -z "$pkg" ] && [ "$APT_UPDATED" -eq 0 ]; then
        apt-get update -q >&2
        APT_UPDATED=1
        pkg="$(newest_package "$pattern")"
    fi
    if [ -z "$pkg" ]; then
        echo "test-kernels: no package matches $pattern: the matrix needs Debian 12's" >&2
        echo "archive (bookworm and bookworm-security) in the apt sources" >&2
        return 1
    fi
    echo "$pkg"
}

# Unpacks a kernel package (without installing it) and prints its vmlinuz.
unpack_kernel() {
    local pkg="$1" dir="$CACHE/$1"
    if [ ! -d "$dir/boot" ]; then
        local tmp
        tmp="$(mktemp -d "$CACHE/download.XXXXXX")"
        (cd "$tmp" && apt-get download -q "$pkg" >&2)
        rm -rf "$dir.partial"
        dpkg -x "$tmp"/*.deb "$dir.partial"
        rm -rf "$tmp"
        mv "$dir.partial" "$dir"
    fi
    ls "$dir"/boot/vmlinuz-*
}

# The integration test binaries, built (or reused) with the same command
# line as scripts/test.sh, so nothing is built twice.
mapfile -t TEST_BINS < <(
    cargo test --locked --no-run --lib --bins --tests --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["kind"] == ["test"]:
        print(m["executable"])
'
)
# NETLENS_VM_TESTS="cost conns" runs only those test binaries. By default:
# the binaries that test what depends on the kernel: the collectors against
# the kernel's own figures (conns, cost), what runs with which privileges
# (privileges), and the traffic harness's ground truth (harness_selftest).
# The outputs built on those collectors (prometheus, pyroscope, agent, the
# terminal UI in tui, the web UI in web), the deployment files (deploy),
# the container image (container) and the peer's command line (cli) are the
# same on every kernel and run on the host; running them in the VMs too took
# CI past 45 minutes (NETLENS_VM_TESTS= runs every binary).
NETLENS_VM_TESTS="${NETLENS_VM_TESTS-harness_selftest conns cost privileges}"
if [ -n "$NETLENS_VM_TESTS" ]; then
    wanted=" $NETLENS_VM_TESTS "
    kept=()
    for bin in "${TEST_BINS[@]}"; do
        name="$(basename "$bin")"
        [[ "$wanted" == *" ${name%-*} "* ]] && kept+=("$bin")
    done
    TEST_BINS=("${kept[@]}")
fi
if [ "${#TEST_BINS[@]}" -eq 0 ]; then
    echo "test-kernels: no integration test binary to run" >&2
    exit 1
fi

# Boots one kernel and runs the tests in it; the results land in $out.
boot_and_test() {
    local kernel="$1" vmlinuz="$2" out="$3" start
    start=$(date +%s)
    # TCG only, one host thread: /dev/kvm here cannot run a stock kernel,
    # and multi-threaded TCG crashed guests while tracepoints were patched.
    # The guest writes each result into $out; vng's own exit status does
    # not tell a crashed guest from a failed test.
    timeout --kill-after=30 "$VM_TIMEOUT_SECS" \
        vng --run "$vmlinuz" --disable-kvm --cpus 2 --memory 4G --verbose \
        --qemu-opts='-accel tcg,thread=single' --rwdir "$out" \
        --exec "NETLENS_VM_TEST_FILTER='${NETLENS_VM_TEST_FILTER:-}' bash $PWD/scripts/kernel-guest.sh $out ${TEST_BINS[*]}" \
        </dev/null >"$out/console.log" 2>&1 || true
    echo $(($(date +%s) - start)) >"$out/vm.secs"
}

# Every kernel is downloaded first; then the VMs run, as many at once as
# the host has CPUs (each is one emulation thread), NETLENS_VM_JOBS to
# override.
JOBS="${NETLENS_VM_JOBS:-$(nproc)}"
for kernel in "${MATRIX[@]}"; do
    pkg="$(resolve_package "$kernel")"
    vmlinuz="$(unpack_kernel "$pkg")"
    out="$CACHE/results/$kernel"
    rm -rf "$out"
    mkdir -p "$out"
    echo "$pkg" >"$out/package"
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
        wait -n || true
    done
    echo "test-kernels: $kernel: booting $pkg" >&2
    boot_and_test "$kernel" "$vmlinuz" "$out" &
done
wait

total_passed=0
total_failed=0
summary=()
for kernel in "${MATRIX[@]}"; do
    out="$CACHE/results/$kernel"
    pkg="$(cat "$out/package")"
    secs="$(cat "$out/vm.secs" 2>/dev/null || echo "?")"
    passed=0
    failed=0
    detail=""
    for bin in "${TEST_BINS[@]}"; do
        name="$(basename "$bin")"
        name="${name%-*}"
        log="$out/$name.log"
        if [ ! -f "$out/$name.rc" ]; then
            failed=$((failed + 1))
            detail+=" $name:not-run"
            continue
        fi
        # libtest's "test result: ok. 12 passed; 0 failed; 0 ignored; ..."
        p=$(sed -n 's/^test result: .* \([0-9]\+\) passed; \([0-9]\+\) failed.*/\1/p' "$log" | tail -n 1)
        f=$(sed -n 's/^test result: .* \([0-9]\+\) passed; \([0-9]\+\) failed.*/\2/p' "$log" | tail -n 1)
        rc=$(cat "$out/$name.rc")
        if [ -z "$p" ]; then
            # No result line: the binary crashed or was killed.
            p=0
            f=1
        elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            f=1
        fi
        passed=$((passed + p))
        failed=$((failed + f))
        if [ "$f" -gt 0 ]; then
            # What failed, and why, in CI's log: libtest's failure section
            # (each failed test's output and panic), or the log's tail when
            # the binary died before printing one.
            {
                echo "test-kernels: $kernel: $name failed; from $log:"
                if grep -q '^failures:$' "$log"; then
                    sed -n '/^failures:$/,$p' "$log" | tail -n 150
                else
                    tail -n 60 "$log"
                fi
            } >&2
        fi
        detail+=" $name:${p}/$((p + f))($(cat "$out/$name.secs")s)"
    done
    if [ ! -f "$out/finished" ]; then
        echo "test-kernels: $kernel: the guest did not finish (crash or timeout); see $out/console.log" >&2
        failed=$((failed + 1))
    fi
    line="$kernel ($(cat "$out/uname" 2>/dev/null || echo "$pkg")): $passed passed, $failed failed in ${secs}s:$detail"
    echo "$line" | tee "$out/summary"
    summary+=("$line")
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
done

echo
echo "kernel matrix:"
printf '  %s\n' "${summary[@]}"
echo "kernels: $total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
