#!/usr/bin/env bash
# scripts/results.sh --report-only on fake summary.json files with known numbers: means, sample
# standard deviations, the val-chosen variant, "no measurable difference", the commit line.
# Usage: tests/scripts/results_test.sh SOURCE_DIR
set -euo pipefail
src=$(realpath "${1:-$(dirname "$0")/../..}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "results_test: $*" >&2; exit 1; }

# summary RUN SEED TASK METRICS_JSON VAL_JSON: one task's block in seedSEED/RUN/summary.json
summary() {
  local f="$tmp/runs/seed$2/$1/summary.json"
  mkdir -p "$(dirname "$f")"
  [ -f "$f" ] || echo '{"steps": 20, "wall_seconds": 10, "tasks": {}}' >"$f"
  python3 - "$f" "$3" "$4" "$5" <<'PY'
import json, sys
f, task, metrics, val = sys.argv[1:]
d = json.load(open(f))
d["tasks"][task] = {"type": "classification", "metrics": json.loads(metrics), "val": json.loads(val)}
json.dump(d, open(f, "w"), indent=2)
PY
}
for s in 1 2 3; do
  i=$((s - 1))  # 0, 1, 2: values spread by 0.01 -> sample standard deviation 0.01
  for t in mnist fashion digits-det digits-seg; do
    for run in "alone-$t" dense sparse; do
      case $run in
        sparse) base=0.90 vbase=0.80 ;;
        dense) base=0.80 vbase=0.85 ;;  # worse on test, best on val: val decides the choice
        *) base=0.905 vbase=0.70 ;;     # 0.005 above sparse: within the spread
      esac
      m=$(python3 -c "print(round($base + 0.01 * $i, 6))")
      v=$(python3 -c "print(round($vbase + 0.01 * $i, 6))")
      summary "$run" "$s" "$t" "{\"top1\": $m}" "{\"top1\": $v}"
    done
  done
  for run in pretrain-without-fashion; do summary "$run" "$s" mnist '{"top1": 0.5}' '{"top1": 0.5}'; done
  summary transfer "$s" fashion "{\"top1\": $(python3 -c "print(0.88 + 0.002 * $i)")}" '{"top1": 0.9}'
  summary scratch "$s" fashion "{\"top1\": $(python3 -c "print(0.85 + 0.002 * $i)")}" '{"top1": 0.8}'
  summary transfer/probe "$s" fashion '{"top1": 0.6}' '{"top1": 0.6}'
done

cd "$src"
GPPF_BIN=/nonexistent scripts/results.sh --report-only --steps 20 --out "$tmp/runs" --doc "$tmp/RESULTS.md" \
  >"$tmp/out.log" 2>&1 || { cat "$tmp/out.log"; fail "results.sh --report-only failed"; }
doc="$tmp/RESULTS.md"
expect() { grep -qF -- "$1" "$doc" || { cat "$doc"; fail "RESULTS.md lacks: $1"; }; }
expect "| mnist | top1 | 0.9150 ± 0.0100 | 0.8100 ± 0.0100 | 0.9100 ± 0.0100 | dense | sparse higher by 0.1000 | no measurable difference |"
expect "| | top1 | 0.8820 ± 0.0020 | 0.8520 ± 0.0020 | 0.6000 ± 0.0000 | pre-trained | pre-trained higher by 0.0300 |"
expect "**3 seeds (1, 2, 3), 20 steps per run.**"
expect "commit $(git rev-parse HEAD)"
expect "--set seed=S"
# --peer-config/--peer-out: the peer's sparse runs beside ours, its name in the verdict, chosen on val
cp -r "$tmp/runs" "$tmp/peer"
for s in 1 2 3; do
  i=$((s - 1))
  f="$tmp/peer/seed$s/sparse/summary.json"
  python3 - "$f" "$i" <<'PY'
import json, sys
f, i = sys.argv[1], int(sys.argv[2])
d = json.load(open(f))
d["tasks"]["mnist"] = {"type": "classification", "metrics": {"top1": round(0.95 + 0.01 * i, 6)},
                       "val": {"top1": 0.99}}
json.dump(d, open(f, "w"))
PY
done
GPPF_BIN=/nonexistent scripts/results.sh --report-only --steps 20 --out "$tmp/runs" --doc "$tmp/RESULTS.md" \
  --peer-config configs/vit-mini.yaml --peer-out "$tmp/peer" >"$tmp/out.log" 2>&1 ||
  { cat "$tmp/out.log"; fail "results.sh --report-only with a peer failed"; }
expect "## Against configs/vit-mini.yaml"
expect "| mnist | top1 | 0.9100 ± 0.0100 | 0.9600 ± 0.0100 | vit-mini | vit-mini higher by 0.0500 |"
expect "| fashion | top1 | 0.9100 ± 0.0100 | 0.9100 ± 0.0100 | mini | no measurable difference |"
if GPPF_BIN=/nonexistent scripts/results.sh --report-only --peer-out "$tmp/peer" >/dev/null 2>&1; then
  fail "--peer-out without --peer-config was taken"
fi
# a missing run is an error naming the file
rm "$tmp/runs/seed2/dense/summary.json"
if GPPF_BIN=/nonexistent scripts/results.sh --report-only --out "$tmp/runs" --doc "$tmp/R2.md" >"$tmp/out2.log" 2>&1; then
  fail "a missing summary.json was not an error"
fi
grep -q "seed2/dense/summary.json is missing" "$tmp/out2.log" || { cat "$tmp/out2.log"; fail "no one-line reason"; }
echo "results_test: ok"
