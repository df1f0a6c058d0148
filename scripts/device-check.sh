#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in one call that fits the device budget (at most 10 minutes): build
# only what it runs (gppf and the CUDA tests; bench_cuda_* too with GPPF_DEVICE_KERNELS=1), run the
# CUDA parity tests (ctest -L cuda; the host tests too with GPPF_DEVICE_ALL=1), the communicator
# conformance suite on NCCL with one rank (tests/mpi/test_communicator.cpp), whole training steps on
# random data (`gppf bench step`: gppf-mini; gppf-r50 1 x 256 and 4 x 64 in bf16, one TF32 row;
# gppf-vit at ViT-B/16, 1 x 256 in bf16) with images/s over the full step, host syncs and launches per
# step and peak device memory, then the PyTorch yardsticks in the same call (bench/torch_simt_r50.py,
# the peer at 4 x 64, and dense ResNet-50 at 256; bench/torch_vit_b16.py, dense ViT-B/16 and its MLP-lego
# peer at 256) with whichever Python has torch. One table at the end; full logs under $OUT when it is set.
# Nothing is installed: the device machine has the toolkit, cuDNN, NCCL, MPI and serial HDF5 but no
# oneDNN, so the build takes GPPF_ONEDNN=AUTO. `GPPF_DEVICE_DRY_RUN=1` prints the plan and runs nothing
# (tests/scripts check it on machines without a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gppf-device-check}
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
build=${GPPF_DEVICE_BUILD:-build-device}
kernels=${GPPF_DEVICE_KERNELS:-0}
dry=${GPPF_DEVICE_DRY_RUN:-0}
rows=()
row() { rows+=("$(printf '%-36s %s' "$1" "$2")"); }
run() {  # prints the command in a dry run, else runs it
  if [ "$dry" = 1 ]; then echo "would run: $*"; else "$@"; fi
}
in_build() {  # the same, in the build folder
  if [ "$dry" = 1 ]; then echo "would run in $build: $*"; else (cd "$build" && "$@"); fi
}

# The Python that has torch: the first of these that imports it; said loudly when none does.
torch_python=""
for py in python3 python /usr/bin/python3 /usr/local/bin/python3 /opt/conda/bin/python3 /opt/conda/bin/python \
  /opt/*/bin/python3 "$HOME"/.local/bin/python3 "$HOME"/miniconda3/bin/python3; do
  command -v "$py" >/dev/null 2>&1 || [ -x "$py" ] || continue
  if "$py" -c "import torch" >/dev/null 2>&1; then torch_python=$py; break; fi
done

gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
row "gpu" "${gpu:-none found}"
targets="gppf test_cuda test_mpi"
[ "$kernels" = 1 ] && targets="$targets bench_cuda_conv"

t0=$(date +%s)
if run env GPPF_CUDA=ON GPPF_WERROR=OFF GPPF_JOBS=$(nproc) GPPF_TARGETS="$targets" scripts/build.sh "$build" \
     -DGPPF_ONEDNN=AUTO -DCMAKE_CUDA_ARCHITECTURES=${GPPF_CUDA_ARCH:-90} >"$out/build.log" 2>&1; then
  row "build ($targets)" "ok in $(( $(date +%s) - t0 )) s"
else
  row "build ($targets)" "FAILED (see build.log)"
  tail -30 "$out/build.log"
  printf '%s\n' "${rows[@]}" | tee "$out/summary.txt"
  exit 1
fi

summary() { grep -E "tests passed|tests failed" "$1" 2>/dev/null | tail -1; }
status=0
in_build ctest -L cuda --output-on-failure --timeout 300 >"$out/tests-cuda.log" 2>&1 || status=1
row "ctest -L cuda" "$(summary "$out/tests-cuda.log")"
# The host tests run in CI on every change; here only on request (device time is short).
if [ "${GPPF_DEVICE_ALL:-0}" = 1 ]; then
  in_build ctest -LE cuda --output-on-failure --timeout 300 -j 8 >"$out/tests-rest.log" 2>&1 || status=1
  row "ctest (all other labels)" "$(summary "$out/tests-rest.log")"
fi
row "cuda tests skipped" "$(grep -c "(Skipped)" "$out/tests-cuda.log" 2>/dev/null)"
# The communicator conformance suite on NCCL, one rank on this GPU (src/dist/communicator.hpp).
if run timeout 120 mpirun -np 1 --oversubscribe "$build/tests/test_mpi" --gtest_filter='Communicator/*' \
     >"$out/communicator.log" 2>&1; then
  row "communicator conformance (MPI+NCCL)" "$(grep -cE '\[ +OK \].*/nccl' "$out/communicator.log") NCCL tests passed, $(grep -cE 'SKIPPED \].*/nccl \(' "$out/communicator.log") skipped"
else
  row "communicator conformance (MPI+NCCL)" "FAILED (communicator.log)"
  status=1
fi
# Three SIMT steps on the GPU through the MPI executor (NCCL communicators of one rank) against the
# one-process executor (tests/mpi/test_executor_mpi.cpp).
executor_nccl=(mpirun -np 1 --oversubscribe "$build/tests/test_mpi" --gtest_filter='MpiExecutor.OneRankOnTheGpu*')
if [ "$dry" = 1 ]; then
  run "${executor_nccl[@]}"
  row "training step through the NCCL executor" "dry run"
elif timeout 120 "${executor_nccl[@]}" >"$out/executor-nccl.log" 2>&1 &&
  grep -q 'OK \] MpiExecutor.OneRankOnTheGpu' "$out/executor-nccl.log"; then
  row "training step through the NCCL executor" "passed"
else
  row "training step through the NCCL executor" "FAILED or skipped (executor-nccl.log)"
  status=1
fi

# Whole training steps on the GPU, random data (no data set on that machine): images per full step
# (optimizer included), host syncs and launches per step, peak device memory, from --json.
bench_step() {  # name, then gppf bench step arguments
  local name=$1; shift
  if run timeout 240 "$build/bin/gppf" bench step --json "$@" >"$out/$name.json" 2>"$out/$name.log"; then
    if [ "$dry" = 1 ]; then row "$name" "dry run: $(cat "$out/$name.json")"; return; fi
    row "$name" "$(python3 - "$out/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
images = sum(t["batch"] for t in r["tasks"])
print(f"{images / (r['step_ms'] / 1e3):.0f} img/s ({images} per step of {r['step_ms']:.1f} ms), "
      f"{r['syncs_per_step']} syncs, {r['launches_per_step']} launches, peak {r['peak_bytes'] / 2**30:.2f} GiB"
      + (f"; graph: {r['graph']}" if r.get("graph") else ""))
PY
)"
  else
    row "$name" "FAILED ($name.log)"
    status=1
  fi
}
bench_step gppf-mini --config configs/mini.yaml --set device=cuda --set threads=0 --synthetic 64x64x1:10 \
  --steps 20 --warmup 3
bench_step "gppf-r50 1x256 bf16" --config configs/r50-bench.yaml --synthetic 224x224x3:1000 --steps 15 --warmup 5
bench_step "gppf-r50 4x64 bf16" --config configs/r50-bench-4x64.yaml --synthetic 224x224x3:1000 --steps 15 --warmup 5
# The same step captured as a CUDA graph (cuda_graphs: on). lr 0 keeps the routing of the first step
# (random data moves the routers every step, and a new routing is captured again); the kernels and the
# optimizer's work are the same at any lr. The warm-up runs the key once eagerly, then captures it.
bench_step "gppf-r50 4x64 bf16 graph" --config configs/r50-bench-4x64.yaml --set cuda_graphs=on \
  --set optimizer.lr=0 --synthetic 224x224x3:1000 --steps 15 --warmup 5
# The same without task batching (each task's pass on its own, legos one by one): the A/B of
# src/nn/lego_strategy_batched.cpp on the GPU, and our dense network at the issue's shape.
bench_step "gppf-r50 4x64 bf16 per-task" --config configs/r50-bench-4x64.yaml --set task_batching=off \
  --synthetic 224x224x3:1000 --steps 10 --warmup 3
bench_step "dense r50 4x64 bf16" --config configs/r50-bench-4x64.yaml --set model.legos=1 --set model.top_k=1 \
  --synthetic 224x224x3:1000 --steps 10 --warmup 3
bench_step "gppf-r50 1x256 tf32" --config configs/r50-bench.yaml --set precision=fp32 --synthetic 224x224x3:1000 \
  --steps 10 --warmup 3
# ViT-B/16 with k = 2 of 4 MLP legos, against bench/torch_vit_b16.py below (target: the dense rate).
bench_step "gppf-vit-b16 bf16" --config configs/vit-b16-bench.yaml --synthetic 224x224x3:1000 --steps 10 --warmup 3

# Kernel benchmarks (bench_cuda_*, torch_conv.py) take minutes: only with GPPF_DEVICE_KERNELS=1.
if [ "$kernels" = 1 ]; then
  for b in "$build"/bin/bench_cuda_*; do
    [ -x "$b" ] || [ "$dry" = 1 ] || continue
    name=$(basename "$b")
    if run "$b" --benchmark_min_time=0.2 --benchmark_out="$out/$name.json" --benchmark_out_format=json \
         >"$out/$name.txt" 2>&1; then
      row "$name" "ok ($(grep -c '^BM_' "$out/$name.txt") rows, $name.txt)"
    else
      row "$name" "FAILED ($name.txt)"
      status=1
    fi
  done
fi
if [ -z "$torch_python" ]; then
  row "PyTorch yardsticks" "NOT MEASURED: no Python here imports torch (tried python3, python, /opt/*/bin)"
  echo "device-check: NO PYTORCH FOUND; the yardstick rows are missing" >&2
else
  # The peers print their dense networks at the same batch too; the others (TF32 rows, convolutions)
  # on request.
  yardsticks=(bench/torch_simt_r50.py bench/torch_vit_b16.py)
  [ "$kernels" = 1 ] && yardsticks+=(bench/torch_resnet50.py bench/torch_conv.py)
  for py in "${yardsticks[@]}"; do
    name=$(basename "$py" .py)
    if run timeout 300 "$torch_python" "$py" >"$out/$name.txt" 2>&1; then
      if [ "$dry" = 1 ]; then row "$name" "dry run: $(cat "$out/$name.txt")"; continue; fi
      row "$name (PyTorch, $torch_python)" "$(awk '$1 ~ /^torch_/ {printf "%s %s img/s; ", $1, $4}' "$out/$name.txt")"
    else
      row "$name (PyTorch)" "FAILED ($name.txt)"
    fi
  done
fi

echo
echo "== device check =="
printf '%s\n' "${rows[@]}" | tee "$out/summary.txt"
for f in "$out"/bench_cuda_*.txt; do [ -f "$f" ] && { echo "-- $(basename "$f")"; grep -E '^(BM_|Benchmark)' "$f"; }; done
exit $status
