#!/usr/bin/env bash
# README command (1): the main job. Installs what is missing, builds, fetches and converts the real
# data, then runs SIMT pre-training of gppf-mini on four tasks (configs/mini.yaml) into runs/mini.
# Extra arguments go to `gppf train` (e.g. --set steps=500).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
GPPF_TARGETS=gppf_cli scripts/build.sh build
bin=build/bin/gppf
$bin --version
GPPF_BIN=$bin scripts/fetch-data.sh --for configs/mini.yaml
$bin train --config configs/mini.yaml --out "${GPPF_RUN_DIR:-runs/mini}" --resume auto "$@"
