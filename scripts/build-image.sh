#!/usr/bin/env bash
# Builds the netlens container image with podman, from what the local build
# produces: no registry, no base image. The image holds the netlens binary,
# the shared libraries it links (as ldd lists them), the dynamic loader and
# the system's CA certificates (for https Pyroscope pushes), nothing else.
#
#   scripts/build-image.sh                       # release build, tag netlens:VERSION
#   scripts/build-image.sh --binary PATH --tag NAME:TAG
#
# Prints the tag and the image's size on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

binary=""
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
tag="netlens:$version"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        *) echo "build-image: unknown argument $1 (--binary PATH, --tag NAME:TAG)" >&2; exit 2 ;;
    esac
done

netlens_install_missing "${NETLENS_IMAGE_PKGS[@]}"
if [ -z "$binary" ]; then
    netlens_install_missing "${NETLENS_BUILD_PKGS[@]}"
    cargo build --release --locked --bin netlens
    binary="${CARGO_TARGET_DIR:-target}/release/netlens"
fi
[ -x "$binary" ] || { echo "build-image: $binary is not an executable" >&2; exit 1; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
root="$context/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$binary" "$root/usr/local/bin/netlens"
# Each library at the path the loader looks for it, and the loader itself.
ldd "$binary" | awk '/=> \//{print $3} /^\t\//{print $1}' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
cp deploy/container/Containerfile "$context/"

podman build --pull=never --runtime runc -q -t "$tag" -f "$context/Containerfile" "$context" >/dev/null
size="$(podman image inspect --format '{{.Size}}' "$tag")"
echo "build-image: $tag, $size bytes"
