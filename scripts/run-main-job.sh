#!/usr/bin/env bash
# README command (1): the main job. Installs what is missing, builds, fetches and converts the real
# data, then runs SIMT pre-training of gppf-mini on four tasks (configs/mini.yaml) into runs/mini.
# Each stage that is not built yet says so and the job stops with its non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build
bin=build/bin/gppf
$bin --version
if [ -x scripts/fetch-data.sh ]; then
  scripts/fetch-data.sh --for configs/mini.yaml
else
  echo "main job: data fetch not built yet (issue 4: sharded HDF5 data sets)" >&2
fi
if [ ! -f configs/mini.yaml ]; then
  echo "main job: configs/mini.yaml not written yet (issue 5: the GPPF network and SIMT training)" >&2
  exit 2
fi
$bin train --config configs/mini.yaml --out "${GPPF_RUN_DIR:-runs/mini}" --resume auto "$@"
