#!/usr/bin/env bash
# Runs Flotilla's whole test suite on a fresh machine: installs what the tests need when it is
# missing (Debian packages listed in .ci/apt-packages.txt, Python packages in
# .ci/pip-packages.txt), builds, and runs every unit, integration and end-to-end test.
#
# The cargo target dir lives outside the checkout so CI (a fresh clone on the same machine)
# reuses earlier builds; override with CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Each fresh clone is a new path, so its incremental caches are never reused: they only fill
# the disk the target dir shares with every other build (70 GB seen, then "No space left").
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
mkdir -p "$CARGO_TARGET_DIR"
free_kib="$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR == 2 { print $4 }')"
if [ "${free_kib:-0}" -lt $((10 * 1024 * 1024)) ]; then
  echo "less than 10 GiB free: removing the incremental caches under $CARGO_TARGET_DIR"
  rm -rf "$CARGO_TARGET_DIR"/debug/incremental "$CARGO_TARGET_DIR"/release/incremental
fi

sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi

missing=()
while read -r pkg; do
  pkg="${pkg%%#*}"; pkg="$(echo "$pkg" | xargs)"
  [ -z "$pkg" ] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < .ci/apt-packages.txt
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ -s .ci/pip-packages.txt ]; then
  python3 -m pip install -q --disable-pip-version-check -r .ci/pip-packages.txt
fi
command -v kubectl >/dev/null || { echo "error: kubectl (v1.32) is required by the end-to-end tests" >&2; exit 1; }

cargo build --workspace --all-targets
cargo test --workspace --all-targets --no-fail-fast -- --test-threads="${FLOTILLA_TEST_THREADS:-2}"
