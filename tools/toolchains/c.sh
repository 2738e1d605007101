#!/bin/sh
# Installs the C guest toolchain: clang-22 with the wasm32-wasi sysroot (Debian packages)
# and the WASI reactor adapter `wasm-tools component new` needs, taken from jco's npm
# package (pinned by sha256) into $FLOTILLA_TOOLCHAINS/wasi (default <repo>/.toolchains).
# Idempotent: installs only what is missing. Debian packages need root.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${FLOTILLA_TOOLCHAINS:-$repo/.toolchains}
packages="clang-22 lld-22 wasi-libc libclang-rt-22-dev-wasm32"
jco=@bytecodealliance/jco@1.35.0
adapter=$root/wasi/wasi_snapshot_preview1.reactor.wasm
adapter_sha256=b857310c4753c8fafaa0f890e9ccf978dc3d9dbe8804b1125291a627485041d0

missing=""
for package in $packages; do
  dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y --no-install-recommends $missing \
    || { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends $missing; }
fi

if [ -f "$adapter" ] && echo "$adapter_sha256  $adapter" | sha256sum -c --status; then
  exit 0
fi
mkdir -p "$root/wasi"
[ -f "$root/.gitignore" ] || echo "*" > "$root/.gitignore"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
installed=$root/node/node_modules/@bytecodealliance/jco/lib/wasi_snapshot_preview1.reactor.wasm
if [ -f "$installed" ]; then
  cp "$installed" "$work/adapter.wasm"
else
  command -v npm >/dev/null 2>&1 || { echo "c toolchain: npm is needed once to fetch the WASI adapter ($jco)" >&2; exit 1; }
  (cd "$work" && npm pack "$jco" --silent >/dev/null && tar xzf ./*.tgz package/lib/wasi_snapshot_preview1.reactor.wasm)
  mv "$work/package/lib/wasi_snapshot_preview1.reactor.wasm" "$work/adapter.wasm"
fi
if ! echo "$adapter_sha256  $work/adapter.wasm" | sha256sum -c --status; then
  echo "c toolchain: the WASI reactor adapter from $jco has an unexpected sha256" >&2
  exit 1
fi
mv "$work/adapter.wasm" "$adapter"
echo "c toolchain: WASI reactor adapter in $adapter"
