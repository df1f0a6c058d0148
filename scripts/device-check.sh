#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: build with CUDA, run the tests that need a GPU (ctest -L cuda; the
# host tests too with GPPF_DEVICE_ALL=1), whole training steps (`gppf bench step` on gppf-mini and on
# gppf-r50 in bf16 and TF32, random data) and bench/torch_resnet50.py (PyTorch's ResNet-50, when PyTorch
# is there); the kernel benchmarks (bench_cuda_*, torch_conv.py) with GPPF_DEVICE_KERNELS=1. Prints a
# short table; full logs go under $OUT when it is set.
# Nothing is installed: the device machine has the toolkit, cuDNN, NCCL, MPI and serial HDF5 but no
# oneDNN (DESIGN.md), so the build takes GPPF_ONEDNN=AUTO.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gppf-device-check}
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
build=${GPPF_DEVICE_BUILD:-build-device}
rows=()
row() { rows+=("$(printf '%-34s %s' "$1" "$2")"); }

gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
row "gpu" "${gpu:-none found}"

t0=$(date +%s)
if GPPF_CUDA=ON GPPF_WERROR=OFF GPPF_JOBS=$(nproc) scripts/build.sh "$build" -DGPPF_ONEDNN=AUTO \
     -DCMAKE_CUDA_ARCHITECTURES=${GPPF_CUDA_ARCH:-90} >"$out/build.log" 2>&1; then
  row "build (CUDA on)" "ok in $(( $(date +%s) - t0 )) s"
else
  row "build (CUDA on)" "FAILED (see build.log)"
  tail -30 "$out/build.log"
  printf '%s\n' "${rows[@]}" | tee "$out/summary.txt"
  exit 1
fi

summary() { grep -E "tests passed|tests failed" "$1" | tail -1; }
status=0
(cd "$build" && ctest -L cuda --output-on-failure --timeout 300) >"$out/tests-cuda.log" 2>&1 || status=1
row "ctest -L cuda" "$(summary "$out/tests-cuda.log")"
# The host tests run in CI on every change; here only on request (device time is short).
if [ "${GPPF_DEVICE_ALL:-0}" = 1 ]; then
  (cd "$build" && ctest -LE cuda --output-on-failure --timeout 300 -j 8) >"$out/tests-rest.log" 2>&1 || status=1
  row "ctest (all other labels)" "$(summary "$out/tests-rest.log")"
fi
skipped=$(grep -c "(Skipped)" "$out/tests-cuda.log")
row "cuda tests skipped" "$skipped"

# Whole training steps on the GPU, random data of the tasks' shapes (no data set on that machine).
bench_step() {  # name, then gppf bench step arguments
  local name=$1; shift
  if timeout 300 "$build/bin/gppf" bench step "$@" >"$out/$name.txt" 2>&1; then
    row "$name" "$(grep -E '^SIMT step' "$out/$name.txt" | sed 's/ (optimizer[^)]*)//')"
  else
    row "$name" "FAILED ($name.txt)"
    status=1
  fi
}
bench_step gppf-mini-step --config configs/mini.yaml --set device=cuda --set threads=0 --synthetic 64x64x1:10 \
  --steps 20 --warmup 3
bench_step gppf-r50-step-bf16 --config configs/r50-bench.yaml --synthetic 224x224x3:1000 --steps 20 --warmup 5
bench_step gppf-r50-step-tf32 --config configs/r50-bench.yaml --set precision=fp32 --synthetic 224x224x3:1000 \
  --steps 20 --warmup 5
for p in bf16 tf32; do
  r50=$(awk '$1 == "imagenet-shaped" {print $4}' "$out/gppf-r50-step-$p.txt" 2>/dev/null)
  row "gppf-r50 train img/s ($p, b256)" "${r50:-none}"
done

# Kernel benchmarks (bench_cuda_*, torch_conv.py) take minutes: only with GPPF_DEVICE_KERNELS=1.
kernels=${GPPF_DEVICE_KERNELS:-0}
if [ "$kernels" = 1 ]; then
  for b in "$build"/bin/bench_cuda_*; do
    [ -x "$b" ] || continue
    name=$(basename "$b")
    if "$b" --benchmark_min_time=0.2 --benchmark_out="$out/$name.json" --benchmark_out_format=json \
         >"$out/$name.txt" 2>&1; then
      row "$name" "ok ($(grep -c '^BM_' "$out/$name.txt") rows, $name.txt)"
    else
      row "$name" "FAILED ($name.txt)"
      status=1
    fi
  done
fi
if python3 -c "import torch" 2>/dev/null; then
  for py in bench/*.py; do
    [ -f "$py" ] || continue
    name=$(basename "$py" .py)
    [ "$name" = torch_resnet50 ] || [ "$kernels" = 1 ] || continue
    if timeout 300 python3 "$py" >"$out/$name.txt" 2>&1; then row "$name (PyTorch yardstick)" "ok ($name.txt)";
    else row "$name (PyTorch yardstick)" "FAILED ($name.txt)"; fi
  done
fi

if [ -f "$out/torch_resnet50.txt" ]; then
  row "torch resnet50 img/s bf16 / tf32" "$(awk '$1 ~ /^torch_resnet50\// {printf "%s ", $4}' "$out/torch_resnet50.txt")"
fi

echo
echo "== device check =="
printf '%s\n' "${rows[@]}" | tee "$out/summary.txt"
for f in "$out"/bench_cuda_*.txt; do [ -f "$f" ] && { echo "-- $(basename "$f")"; grep -E '^(BM_|Benchmark)' "$f"; }; done
exit $status
