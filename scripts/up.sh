#!/usr/bin/env bash
# Builds Flotilla (release) and starts a single-node cluster on the embedded store.
# Flags are passed to `flotilla up` (e.g. --listen 127.0.0.1:6443 --data-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}"
cargo build --release --bin flotilla
exec "$CARGO_TARGET_DIR/release/flotilla" up "$@"
