#!/usr/bin/env bash
# Writes docs/RESULTS.md from real runs with the same budget (issue 5):
#   1. each task of the config trained alone;
#   2. dense multi-task: every lego active (k = L, `--set model.top_k=L`);
#   3. GPPF sparse multi-task: the config as it is (k < L);
#   4. transfer to a task held out of pre-training: pre-training without it, then `gppf finetune`
#      from that checkpoint (probe + fine-tune) against `gppf finetune --from-scratch`.
# Every run gets N steps (each step: one micro-batch of every task of the run), so a task sees the
# same samples alone and together; the transfer's probe_steps + steps is N too.
#
# Usage: scripts/results.sh [--steps N] [--config FILE] [--held-out TASK] [--transfer-config FILE]
#                           [--out DIR] [--doc FILE] [--reuse]
#   --steps N            the budget (default: the config's `steps`); warm-ups scale with it
#   --config FILE        multi-task config (default configs/mini.yaml)
#   --held-out TASK      task left out of pre-training (default fashion)
#   --transfer-config F  the fine-tune config of that task (default configs/transfer-fashion.yaml)
#   --out DIR            run directories (default runs/results)
#   --doc FILE           the Markdown written (default docs/RESULTS.md)
#   --reuse              keep runs that already have a summary.json (to finish an interrupted sweep)
# Environment: GPPF_BIN (default build/bin/gppf). Data: scripts/fetch-data.sh --for CONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."

GPPF=${GPPF_BIN:-build/bin/gppf}
config=configs/mini.yaml
held_out=fashion
transfer_config=configs/transfer-fashion.yaml
out=runs/results
doc=docs/RESULTS.md
steps=""
reuse=0
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --held-out) held_out=$2; shift 2 ;;
    --transfer-config) transfer_config=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --doc) doc=$2; shift 2 ;;
    --reuse) reuse=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "results.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$GPPF" ] || { echo "results.sh: $GPPF is not an executable; build it (scripts/build.sh) or set GPPF_BIN" >&2; exit 1; }
for f in "$config" "$transfer_config"; do
  [ -f "$f" ] || { echo "results.sh: config $f does not exist" >&2; exit 1; }
done

# ---- reading our configs (flow or block YAML, keys as configs/*.yaml write them) -------------------
# The lines of block KEY: its own line and every deeper-indented line after it.
yaml_block() {
  awk -v key="$1" '
    inb { match($0, /^ */); if (RLENGTH <= ind && $0 !~ /^ *(#.*)?$/) inb = 0; else { print; next } }
    $0 ~ "^ *" key ":" { match($0, /^ */); ind = RLENGTH; inb = 1; print }' "$2"
}
# The first integer value of KEY in TEXT (stdin); empty if none.
int_of() { grep -oE "(^|[ {,])$1: *[0-9]+" | grep -oE '[0-9]+$' | head -n 1 || true; }
top_int() { grep -E "^$1:" "$2" | int_of "$1"; }
task_names() { yaml_block tasks "$1" | grep -oE '^ *- *\{? *name: *[A-Za-z0-9_.-]+' | sed -E 's/.*name: *//'; }
# Writes CONFIG with the tasks list reduced: `only NAME` keeps one task, `without NAME` drops one.
filter_tasks() {
  awk -v mode="$1" -v name="$2" '
    /^tasks:/ { print; intasks = 1; next }
    intasks && /^[^ #]/ { intasks = 0 }
    intasks && /^ *- / { n = $0; sub(/.*name: */, "", n); sub(/[,} ].*/, "", n); keep = (mode == "only") == (n == name) }
    !intasks || keep { print }' "$3"
}
# VALUE * N / S, at least 1 when VALUE > 0.
scale() {
  local v=$1 n=$2 s=$3
  [ -z "$v" ] || [ "$v" -eq 0 ] && { echo 0; return; }
  local r=$((v * n / s))
  [ "$r" -lt 1 ] && r=1
  echo "$r"
}

cfg_steps=$(top_int steps "$config")
[ -n "$cfg_steps" ] || { echo "results.sh: $config has no top-level 'steps'" >&2; exit 1; }
N=${steps:-$cfg_steps}
[ "$N" -ge 2 ] 2>/dev/null || { echo "results.sh: --steps must be an integer >= 2, got '$N'" >&2; exit 2; }
legos=$(yaml_block model "$config" | int_of legos)
top_k=$(yaml_block model "$config" | int_of top_k)
legos=${legos:-4}
top_k=${top_k:-2}
mapfile -t tasks < <(task_names "$config")
[ ${#tasks[@]} -gt 0 ] || { echo "results.sh: no tasks found in $config" >&2; exit 1; }
printf '%s\n' "${tasks[@]}" | grep -qx "$held_out" ||
  { echo "results.sh: --held-out $held_out is not a task of $config (${tasks[*]})" >&2; exit 1; }

# The budget as overrides: steps, and warm-ups scaled to it (a cosine needs warmup < steps).
budget=(--set "steps=$N")
if [ "$N" != "$cfg_steps" ]; then
  w=$(yaml_block schedule "$config" | int_of warmup_steps)
  [ -n "$w" ] && budget+=(--set "schedule.warmup_steps=$(scale "$w" "$N" "$cfg_steps")")
  w=$(yaml_block routing "$config" | int_of warmup_steps)
  [ -n "$w" ] && budget+=(--set "model.routing.warmup_steps=$(scale "$w" "$N" "$cfg_steps")")
  budget+=(--set eval_every=0)
fi
t_steps=$(top_int steps "$transfer_config")
t_probe=$(yaml_block finetune "$transfer_config" | int_of probe_steps)
t_probe=${t_probe:-100}
probe=$(scale "$t_probe" "$N" "$((t_steps + t_probe))")
[ "$probe" -ge "$N" ] && probe=1
tune=$((N - probe))
transfer_budget=(--set "steps=$tune" --set "finetune.probe_steps=$probe")
w=$(yaml_block schedule "$transfer_config" | int_of warmup_steps)
[ -n "$w" ] && transfer_budget+=(--set "schedule.warmup_steps=$(scale "$w" "$tune" "$t_steps")")

mkdir -p "$out/configs"
declare -a commands=()
# run NAME CMD...: runs a gppf command into $out/NAME (log in $out/NAME.log) unless --reuse finds it.
run() {
  local name=$1
  shift
  commands+=("$*")
  if [ "$reuse" = 1 ] && [ -f "$out/$name/summary.json" ]; then
    echo "results.sh: $name: reusing $out/$name"
    return
  fi
  rm -rf "${out:?}/$name"
  echo "results.sh: $name: $*"
  if ! "$@" >"$out/$name.log" 2>&1; then
    tail -n 20 "$out/$name.log" >&2
    echo "results.sh: $name failed; its log: $out/$name.log" >&2
    exit 1
  fi
}

# summary.json is nlohmann's dump(2): tasks at 4 spaces, metrics at 8.
metric() {
  awk -v task="$2" -v key="$3" '
    /^    "[^"]+": \{/ { t = $1; gsub(/[":]/, "", t) }
    t == task && $0 ~ "^        \"" key "\": " { v = $2; sub(/,$/, "", v); printf "%.4f\n", v; exit }' "$1/summary.json"
}
metric_keys() {
  awk -v task="$2" '
    /^    "[^"]+": \{/ { t = $1; gsub(/[":]/, "", t) }
    t == task && /^        "[^"]+": / { k = $1; gsub(/[":]/, "", k); print k }' "$1/summary.json"
}
wall() { grep -oE '"wall_seconds": [0-9.e+-]+' "$1/summary.json" | awk '{ printf "%.0f\n", $2 }'; }
# The parameter count `gppf train` logs for run NAME (its first phase).
params() { grep -oE '[0-9]+ parameters' "$out/$1.log" | head -n 1 | grep -oE '^[0-9]+' || echo "?"; }

# ---- the runs ----------------------------------------------------------------------------------------
for t in "${tasks[@]}"; do
  filter_tasks only "$t" "$config" >"$out/configs/alone-$t.yaml"
  run "alone-$t" "$GPPF" train --config "$out/configs/alone-$t.yaml" "${budget[@]}" --out "$out/alone-$t"
done
run dense "$GPPF" train --config "$config" "${budget[@]}" --set "model.top_k=$legos" --out "$out/dense"
run sparse "$GPPF" train --config "$config" "${budget[@]}" --out "$out/sparse"
filter_tasks without "$held_out" "$config" >"$out/configs/pretrain-without-$held_out.yaml"
run "pretrain-without-$held_out" "$GPPF" train --config "$out/configs/pretrain-without-$held_out.yaml" \
  "${budget[@]}" --out "$out/pretrain-without-$held_out"
run transfer "$GPPF" finetune --checkpoint "$out/pretrain-without-$held_out" --config "$transfer_config" \
  "${transfer_budget[@]}" --out "$out/transfer"
run scratch "$GPPF" finetune --checkpoint "$out/pretrain-without-$held_out" --config "$transfer_config" \
  "${transfer_budget[@]}" --from-scratch --out "$out/scratch"

# ---- docs/RESULTS.md ---------------------------------------------------------------------------------
new_task=$(task_names "$transfer_config" | head -n 1)
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
sum_alone=0
for t in "${tasks[@]}"; do sum_alone=$((sum_alone + $(wall "$out/alone-$t"))); done
{
  echo "# Results"
  echo
  echo "Written by \`scripts/results.sh${args[*]:+ ${args[*]}}\` from the runs in \`$out/\` (re-run it to"
  echo "reproduce; nothing here is typed by hand). $(date -u '+%Y-%m-%d %H:%M UTC'), git"
  echo "$(git rev-parse --short HEAD 2>/dev/null || echo unknown), \`$("$GPPF" --version 2>&1 | head -n 1)\`."
  echo "Machine: $(nproc) cores, ${cpu:-unknown CPU}. Metrics are on the test splits (summary.json)."
  echo
  echo "**Budget: $N steps per run.** A step takes one micro-batch of every task of the run, so each"
  echo "task sees the same number of samples alone and in the multi-task runs. The transfer's probe and"
  echo "fine-tune together take $N steps too ($probe + $tune), as does the from-scratch baseline."
  [ "$N" != "$cfg_steps" ] && echo "This is a reduced budget (the config's is $cfg_steps steps); warm-ups were scaled to it."
  echo
  echo "## Alone, dense multi-task, GPPF sparse ($config)"
  echo
  echo "| task | metric | alone | dense (k = L = $legos) | GPPF sparse (k = $top_k of $legos) |"
  echo "| --- | --- | --- | --- | --- |"
  for t in "${tasks[@]}"; do
    for k in $(metric_keys "$out/sparse" "$t"); do
      echo "| $t | $k | $(metric "$out/alone-$t" "$t" "$k") | $(metric "$out/dense" "$t" "$k") | $(metric "$out/sparse" "$t" "$k") |"
    done
  done
  echo "| wall time (s) | | $sum_alone (all ${#tasks[@]} runs) | $(wall "$out/dense") | $(wall "$out/sparse") |"
  alone_params=$(for t in "${tasks[@]}"; do params "alone-$t"; done | paste -sd/ | sed 's|/| / |g')
  echo "| parameters | | $alone_params | $(params dense) | $(params sparse) |"
  echo
  echo "A lego's width is the dense block's width / k (docs/ARCHITECTURE.md), so every column spends about"
  echo "the same compute per sample of a task: k = L means L narrower legos, all active and shared by every"
  echo "task; k < L gives each task its own subset of wider ones. Wall times include the final evaluation"
  echo "on the full test splits."
  echo
  echo "## Transfer to $new_task, held out of pre-training"
  echo
  echo "Pre-training: the config without \`$held_out\`, $N steps. Then \`gppf finetune\` with"
  echo "\`$transfer_config\` (docs/FINETUNE.md): a routing probe of $probe steps on the frozen network, then"
  echo "$tune steps of fine-tuning on the chosen legos; the baseline trains the same network from random"
  echo "initialisation for $N steps. For reference, \`alone-$held_out\` above is the same task from scratch in a"
  echo "network sized for one task."
  echo
  echo "| $new_task | metric | pre-trained (probe + fine-tune) | from scratch | after the probe only |"
  echo "| --- | --- | --- | --- | --- |"
  for k in $(metric_keys "$out/transfer" "$new_task"); do
    echo "| | $k | $(metric "$out/transfer" "$new_task" "$k") | $(metric "$out/scratch" "$new_task" "$k") | $(metric "$out/transfer/probe" "$new_task" "$k") |"
  done
  echo "| wall time (s) | | $(($(wall "$out/transfer") + $(wall "$out/transfer/probe"))) | $(wall "$out/scratch") | $(wall "$out/transfer/probe") |"
  echo
  echo "Legos the probe chose (per lego layer, from \`$out/transfer/transfer.json\`):"
  echo
  echo '```'
  grep -E 'the probe chose' "$out/transfer.log" | sed -E 's/.*the probe chose/the probe chose/' || true
  echo '```'
  echo
  echo "## Commands"
  echo
  echo "Run from the repository root. \`$out/configs/alone-TASK.yaml\` and"
  echo "\`$out/configs/pretrain-without-$held_out.yaml\` are \`$config\` with its task list cut to one task /"
  echo "without \`$held_out\` (nothing else changed)."
  echo
  echo '```sh'
  for c in "${commands[@]}"; do echo "$c"; done
  echo '```'
} >"$doc"
echo "results.sh: wrote $doc"
