#!/usr/bin/env bash
# scripts/device-check.sh as a dry run (no GPU needed): it plans the build of only what it runs, the
# CUDA tests, the `gppf bench step` rows (gppf-vit at ViT-B/16 among them) and the PyTorch peers (or
# says loudly that no Python has torch), and every config it names describes a network (`gppf inspect`
# on the host).
# Usage: tests/scripts/device_check_test.sh SOURCE_DIR GPPF_BINARY
set -euo pipefail
src=$(realpath "$1")
gppf=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "device_check_test: $*" >&2; exit 1; }

out=$(cd "$src" && OUT="$tmp" GPPF_DEVICE_DRY_RUN=1 scripts/device-check.sh 2>&1) || fail "dry run failed: $out"
for want in "build (gppf test_cuda test_mpi)" "communicator conformance" "gppf-mini" "gppf-r50 1x256 bf16" "gppf-r50 4x64 bf16" "gppf-r50 1x256 tf32" \
  "gppf-vit-b16 bf16"; do
  grep -qF "$want" <<<"$out" || fail "no row '$want' in: $out"
done
grep -qF "NO PYTORCH FOUND" <<<"$out" || { grep -qF torch_simt_r50 <<<"$out" && grep -qF torch_vit_b16 <<<"$out"; } ||
  fail "the PyTorch peers are neither planned nor said missing"
grep -q "GPPF_TARGETS=gppf test_cuda test_mpi" "$tmp/build.log" || fail "the build is not limited to its targets: $(cat "$tmp/build.log")"
for config in $(grep -ho "configs/[a-z0-9-]*\.yaml" "$tmp"/*.json | sort -u); do
  "$gppf" inspect "$src/$config" --input 224x224x3:1000 >"$tmp/inspect.txt" 2>&1 ||
    fail "$config does not describe a network: $(tail -3 "$tmp/inspect.txt")"
done
echo "device_check_test: ok"
