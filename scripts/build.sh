#!/usr/bin/env bash
# Configures and builds GPPF. Usage: scripts/build.sh [BUILD_DIR] [extra cmake arguments...]
# GPPF_CUDA (ON|OFF|AUTO, default OFF here) and GPPF_WERROR (ON in CI) come from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
# ccache keys on the compiler's arguments; relative paths below the checkout let a fresh clone in
# another folder (CI) hit the cache that earlier builds filled.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
shift || true
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE:-Release} \
    -DGPPF_CUDA=${GPPF_CUDA:-OFF} -DGPPF_WERROR=${GPPF_WERROR:-OFF} "$@"
else
  cmake "$build_dir" -DGPPF_CUDA=${GPPF_CUDA:-OFF} -DGPPF_WERROR=${GPPF_WERROR:-OFF} "$@" >/dev/null
fi
cmake --build "$build_dir" --parallel "${GPPF_JOBS:-$(nproc)}" ${GPPF_TARGETS:+--target $GPPF_TARGETS}
