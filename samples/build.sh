#!/usr/bin/env bash
# Rebuilds the sample guests and puts each .wasm next to its source.
#
#   samples/build.sh                 # all samples
#   samples/build.sh hello-http ...  # just these
#
# Toolchains (Debian 12, see shared TOOLCHAIN notes):
#   apt-get install -y rustc-web cargo-web rust-web-src lld wasi-libc clang libclang-rt-dev-wasm32
#   cargo install --locked wasm-component-ld      # linker for wasm32-wasip2
#   pip install componentize-py==0.25.1            # for hello-python
# Rust guests use Debian's rustc (1.96) with std built from source, because
# rustup cannot add the wasm32 targets on these machines.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
target_dir="${SAMPLES_TARGET_DIR:-${TMPDIR:-/tmp}/flotilla-samples-target}"
samples=("$@")
if [ ${#samples[@]} -eq 0 ]; then
    samples=(hello-wasi hello-http hello-c hello-python)
fi

rust_wasm() { # <crate dir> <target> [extra rustflags]
    local dir="$1" target="$2" extra="${3:-}"
    RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
    CARGO_TARGET_WASM32_WASIP1_LINKER=wasm-ld \
    CARGO_TARGET_WASM32_WASIP2_LINKER=wasm-component-ld \
    CARGO_TARGET_DIR="$target_dir" \
    RUSTFLAGS="-C link-self-contained=no -L /usr/lib/wasm32-wasi $extra" \
        /usr/bin/cargo build --quiet --release --manifest-path "$dir/Cargo.toml" \
        -Zbuild-std=std,panic_abort --target "$target"
}

# Rust std for wasm32-wasip1/p2 is linked against Debian's wasi-libc, whose
# command start-up object provides `_start`.
command_flags="-C link-arg=/usr/lib/wasm32-wasi/crt1-command.o -C link-arg=-lc"

for sample in "${samples[@]}"; do
    echo "building $sample" >&2
    case "$sample" in
    hello-wasi)
        rust_wasm "$here/hello-wasi" wasm32-wasip1 "$command_flags"
        cp "$target_dir/wasm32-wasip1/release/hello-wasi.wasm" "$here/hello-wasi/hello-wasi.wasm"
        # The same program as a WASI p2 command component.
        rust_wasm "$here/hello-wasi" wasm32-wasip2 "$command_flags"
        cp "$target_dir/wasm32-wasip2/release/hello-wasi.wasm" "$here/hello-wasi/hello-wasi-p2.wasm"
        ;;
    hello-http)
        # panic=immediate-abort leaves out std's panic message printing, whose `fd_write` (with
        # the `environ_*` and `proc_exit` std links for it) would be WASI p1 imports, and p1
        # imports make wasm-component-ld wrap the module with the whole p1 adapter: one core
        # module and ~40 imports more to wire on every per-request instantiation. The source
        # reads env and writes stdout/stderr through `wasi:cli` for the same reason.
        rust_wasm "$here/hello-http" wasm32-wasip2 "-Zunstable-options -Cpanic=immediate-abort"
        cp "$target_dir/wasm32-wasip2/release/hello_http.wasm" "$here/hello-http/hello-http.wasm"
        ;;
    hello-c)
        clang --target=wasm32-wasi --sysroot=/usr -O2 -Wl,--strip-debug \
            "$here/hello-c/hello.c" -o "$here/hello-c/hello-c.wasm"
        ;;
    hello-python)
        # wit/ holds the wasi:http@0.2.12 WIT (copied from the wasmtime-wasi-http
        # crate, one package per folder under wit/deps/).
        (cd "$here/hello-python" &&
            componentize-py -d wit -w hello componentize app -o hello-python.wasm)
        ;;
    *)
        echo "unknown sample: $sample" >&2
        exit 2
        ;;
    esac
done
ls -l "$here"/*/*.wasm >&2
