#!/usr/bin/env bash
# Debian packages of the Rust and C guest toolchains (see /docs and `make toolchains`).
# Idempotent: when every package is installed it prints nothing and needs no root.
set -euo pipefail

PACKAGES=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22 wasi-libc clang-22
          libclang-rt-22-dev-wasm32)

missing=()
for package in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "toolchains: not Debian (no apt-get): install the equivalents of ${missing[*]}" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "toolchains: run as root to install ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "toolchains: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
