#!/bin/sh
# Installs the JavaScript/TypeScript guest toolchain (componentize-qjs, componentize-js,
# jco, tsc) at the exact versions of tools/toolchains/js/package-lock.json into a
# project-local folder: $FLOTILLA_TOOLCHAINS/node (default: <repo>/.toolchains/node).
# Idempotent: does nothing when that folder already holds this lock file's install.
# Needs node >= 18 and npm (Debian: apt-get install nodejs npm).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${FLOTILLA_TOOLCHAINS:-$repo/.toolchains}
target=$root/node
stamp=$target/.flotilla-installed

if ! command -v npm >/dev/null 2>&1; then
  echo "js toolchain: npm is not installed (apt-get install nodejs npm)" >&2
  exit 1
fi

want=$(cat "$here/js/package.json" "$here/js/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
  && [ -x "$target/node_modules/.bin/componentize-qjs" ]; then
  exit 0
fi

mkdir -p "$target"
# Nothing installed here is ever committed.
[ -f "$root/.gitignore" ] || echo "*" > "$root/.gitignore"
rm -f "$stamp"
cp "$here/js/package.json" "$here/js/package-lock.json" "$target/"
# `npm ci` installs exactly the lock file, replacing any node_modules already there.
(cd "$target" && npm ci --no-audit --no-fund --loglevel=error)
echo "$want" > "$stamp"
echo "js toolchain: installed in $target"
