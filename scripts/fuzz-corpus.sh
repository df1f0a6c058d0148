#!/usr/bin/env bash
# Writes the fuzz targets' seed corpora into DIR/<target>/ (default build-fuzz/seeds): inputs made by
# the writers themselves (fuzz_replay --write-seeds), the repository's configs, and the manifests of
# any data sets under data/.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-fuzz/seeds}
replay=${GPPF_FUZZ_REPLAY:-}
for b in build-fuzz/fuzz/fuzz_replay build/fuzz/fuzz_replay; do
  [ -z "$replay" ] && [ -x "$b" ] && replay=$b
done
if [ -z "$replay" ]; then
  GPPF_TARGETS=fuzz_replay scripts/build.sh build -DGPPF_FUZZ=ON
  replay=build/fuzz/fuzz_replay
fi
mkdir -p "$dir/config" "$dir/manifest"
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} "$replay" --write-seeds "$dir"
cp configs/*.yaml "$dir/config/"
for m in data/*/manifest.json; do
  [ -f "$m" ] && cp "$m" "$dir/manifest/$(basename "$(dirname "$m")").json"
done
echo "fuzz-corpus: $(find "$dir" -type f | wc -l) seeds under $dir"
