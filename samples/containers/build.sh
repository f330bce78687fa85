#!/usr/bin/env bash
# Builds the container-image samples as OCI image layouts under samples/containers/out/ and,
# with --push, pushes them to the cluster's registry with `flotilla image push`:
#
#   hello-http-native:v1  the hello-http service as a native Rust binary (glibc, statically
#                         linked: this toolchain has no musl target) on a busybox base
#   hello-python:v1       the hello-python service (app_native.py, http.server) on a minimal
#                         Python rootfs: the host's python3 binary, the shared libraries it
#                         needs (from ldd) and the parts of the standard library it imports
#
# Needs: cargo (rustup, host target), busybox-static, python3. The manifests in manifest.yaml
# run the same services as Wasm pods (runtimeClassName: wasmtime) and as container pods
# (runtimeClassName: runc).
#
# usage: samples/containers/build.sh [--push] [flotilla image push flags, e.g. --server URL]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/out"
push=0
if [[ "${1:-}" == "--push" ]]; then push=1; shift; fi
rm -rf "$out" && mkdir -p "$out"

busybox_base() {
  local root="$1"
  mkdir -p "$root/bin" "$root/etc" "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in sh echo cat ls env sleep wget; do ln -sf busybox "$root/bin/$applet"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
}

# 1. hello-http-native: static glibc binary (crt-static) on busybox.
(
  cd "$here/hello-http-native"
  RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --target x86_64-unknown-linux-gnu --target-dir "$out/target"
)
root="$out/rootfs-hello-http-native"
busybox_base "$root"
cp "$out/target/x86_64-unknown-linux-gnu/release/hello-http-native" "$root/bin/hello-http"
python3 "$here/layout.py" "$root" "$out/hello-http-native" \
  '{"Entrypoint": ["/bin/hello-http"], "Env": ["PATH=/bin"], "User": "65534:65534", "ExposedPorts": {"8080/tcp": {}}}'

# 2. hello-python: python3 with its libraries and the standard library modules it uses.
root="$out/rootfs-hello-python"
busybox_base "$root"
pybin="${PYTHON:-/usr/bin/python3}"   # the system interpreter (not a pyenv shim)
py="$(readlink -f "$pybin")"
mkdir -p "$root$(dirname "$py")"
cp "$py" "$root$py"
ln -sf "$py" "$root/bin/python3"
for lib in $(ldd "$py" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
done
stdlib="$("$pybin" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"
mkdir -p "$root$stdlib"
# The standard library minus tests, tools and site-packages; lib-dynload for
# the C extension modules (_json, _socket, select...).
tar -C "$stdlib" --exclude='test' --exclude='tests' --exclude='idlelib' --exclude='tkinter' \
    --exclude='ensurepip' --exclude='site-packages' --exclude='__pycache__' --exclude='config-*' -cf - . | tar -C "$root$stdlib" -xf -
mkdir -p "$root/app"
cp "$here/app_native.py" "$root/app/app.py"
python3 "$here/layout.py" "$root" "$out/hello-python" \
  '{"Entrypoint": ["/bin/python3", "-u", "/app/app.py"], "Env": ["PATH=/bin", "PYTHONDONTWRITEBYTECODE=1"], "WorkingDir": "/app", "User": "65534:65534", "ExposedPorts": {"8080/tcp": {}}}'

if [[ $push == 1 ]]; then
  flotilla="${FLOTILLA:-flotilla}"
  "$flotilla" image push "$out/hello-http-native" hello-http-native:v1 "$@"
  "$flotilla" image push "$out/hello-python" hello-python:v1 "$@"
fi
