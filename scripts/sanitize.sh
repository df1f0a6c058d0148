#!/usr/bin/env bash
# ASan + UBSan build of the unit suites that fit a CI budget, and the fuzz regressions, run under both
# (docs/DEVELOPING.md, "Sanitizers"). Usage: scripts/sanitize.sh (from any folder).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
echo "== sanitizers: ASan + UBSan build, the unit tests that fit the budget, the fuzz regressions"
# docs/DEVELOPING.md, "Sanitizers". The training, CLI, MPI and Slurm suites run minutes each
# un-instrumented and stay out; leaks are not checked (Open MPI and HDF5 keep theirs until exit);
# a huge malloc (a size read from a damaged file) returns null as without ASan: HDF5 checks it.
asan_areas="core conv elem loss normpool optim data ckpt nn"
CMAKE_BUILD_TYPE=RelWithDebInfo GPPF_TARGETS="$(printf 'test_%s ' $asan_areas)fuzz_replay" \
  scripts/build.sh build-asan -DGPPF_SANITIZE=address,undefined -DGPPF_FUZZ=ON -DGPPF_BUILD_BENCH=OFF
(cd build-asan && ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  OMP_NUM_THREADS=2 ctest -L "^($(echo $asan_areas | tr ' ' '|')|fuzz)\$" --output-on-failure --timeout 900 -j 2)

