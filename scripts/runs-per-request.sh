#!/usr/bin/env bash
# BPF program runs and run time per request of one netlens command under
# nginx + wrk (keep-alive, then Connection: close), from the kernel's BPF
# statistics. Run as root on a host where netlens's programs are the only
# BPF programs loaded (every loaded program is counted).
#   scripts/runs-per-request.sh conns -f --json --no-log-file -t 1
#   scripts/runs-per-request.sh cost --syscall-hook per-call
# The statistics add a clock read pair to every run (about 70 ns here), so
# ns/run is an upper bound; runs/request is exact.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "runs-per-request: needs root" >&2; exit 3; }
for p in nginx wrk bpftool; do
    command -v "$p" > /dev/null || { echo "runs-per-request: needs $p (apt-get install nginx wrk bpftool)" >&2; exit 2; }
done
NETLENS=${NETLENS:-target/release/netlens}
[ -x "$NETLENS" ] || cargo build --release --locked --bin netlens
SECS=${SECS:-5}
PORT=${PORT:-18080}
dir=$(mktemp -d)
mkdir -p "$dir/html" "$dir/tmp"
head -c 512 /dev/zero | tr '\0' x > "$dir/html/small.html"
cat > "$dir/nginx.conf" << CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server { listen 127.0.0.1:$PORT backlog=4096; root $dir/html; }
}
CONF
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" > /dev/null 2>&1 &
nginx_pid=$!
"$NETLENS" "$@" > /dev/null 2> "$dir/netlens.err" &
netlens_pid=$!
cleanup() {
    sysctl -qw kernel.bpf_stats_enabled="$stats_before"
    kill -INT "$netlens_pid" 2> /dev/null && wait "$netlens_pid" || true
    kill -QUIT "$nginx_pid" 2> /dev/null && wait "$nginx_pid" || true
    rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do
    grep -q "netlens: ready" "$dir/netlens.err" && break
    kill -0 "$netlens_pid" 2> /dev/null || { cat "$dir/netlens.err" >&2; exit 1; }
    sleep 0.2
done
sysctl -qw kernel.bpf_stats_enabled=1
snapshot() {
    bpftool prog show --json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    print(p["name"], p.get("run_cnt", 0), p.get("run_time_ns", 0))'
}
for mode in keep-alive close; do
    header=()
    [ "$mode" = close ] && header=(-H "Connection: close")
    snapshot > "$dir/before"
    requests=$(wrk -t1 -c32 -d"${SECS}s" "${header[@]}" "http://127.0.0.1:$PORT/small.html" \
        | awk '/requests in/ {print $1}')
    snapshot > "$dir/after"
    echo "$mode: $requests requests in ${SECS} s, beside netlens $*"
    python3 - "$requests" "$dir/before" "$dir/after" << 'PY'
import sys
requests = int(sys.argv[1])
def read(path):
    return {n: (int(c), int(t)) for n, c, t in (l.split() for l in open(path))}
before, after = read(sys.argv[2]), read(sys.argv[3])
runs = ns = 0
for name, (c, t) in after.items():
    c0, t0 = before.get(name, (0, 0))
    if c > c0:
        runs += c - c0
        ns += t - t0
        print(f"  {name:20s} {(c - c0) / requests:8.3f} runs/request {(t - t0) / (c - c0):6.0f} ns/run")
print(f"  all programs         {runs / requests:8.3f} runs/request {ns / requests:6.0f} ns/request")
PY
done
