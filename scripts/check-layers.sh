#!/usr/bin/env bash
# Fails when a source file includes a project header from a layer above its own (docs/ARCHITECTURE.md):
#   core (0) <- kernels (1) <- io (2) <- src/nn, src/optim (3) <- src/dist (4) <- src/train, src/report (5)
#   <- src/cli (6). Tests, benchmarks and fuzz targets sit on top and may include anything.
# CMake's per-layer targets enforce the same direction at link time; this catches header-only uses too.
set -euo pipefail
cd "$(dirname "$0")/.."

rank() {
  case "$1" in
    core/*) echo 0 ;;
    kernels/*) echo 1 ;;
    io/*) echo 2 ;;
    src/nn/* | src/optim/*) echo 3 ;;
    src/dist/*) echo 4 ;;
    src/train/* | src/report/*) echo 5 ;;
    src/cli/*) echo 6 ;;
    *) echo -1 ;;
  esac
}

bad=0 checked=0
while IFS= read -r file; do
  from=$(rank "$file")
  [ "$from" -ge 0 ] || continue
  checked=$((checked + 1))
  while IFS=: read -r line header; do
    to=$(rank "$header")
    if [ "$to" -gt "$from" ]; then
      echo "check-layers: $file:$line includes $header, a layer above its own" >&2
      bad=$((bad + 1))
    fi
  done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" | sed 's/^\([0-9]*\):[^"]*"\([^"]*\)".*/\1:\2/' || true)
done < <(git ls-files -- '*.cpp' '*.hpp' '*.cu' '*.cuh' '*.h' '*.in')

if [ "$bad" -gt 0 ]; then
  echo "check-layers: $bad upward include(s); move the code down or pass the dependency in through an interface" >&2
  exit 1
fi
echo "check-layers: $checked files, includes point only down"
