#!/usr/bin/env bash
# README command (2): installs what is missing, builds (host backend), runs every test with CTest.
# Extra arguments go to ctest (e.g. `scripts/test.sh -L ops`).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
scripts/install-deps.sh
scripts/build.sh build -DGPPF_FUZZ=ON  # fuzz_replay: the fuzz regressions run with the other tests
cd build
ctest --output-on-failure --timeout 600 -j "${GPPF_TEST_JOBS:-2}" "$@"
