#!/usr/bin/env bash
# Writes docs/RESULTS.md from real runs with the same budget, each repeated over several seeds:
#   1. each task of the config trained alone;
#   2. dense multi-task: every lego active (k = L, `--set model.top_k=L`);
#   3. GPPF sparse multi-task: the config as it is (k < L);
#   4. transfer to a task held out of pre-training: pre-training without it, then `gppf finetune`
#      from that checkpoint (probe + fine-tune) against `gppf finetune --from-scratch` (its own run
#      and budget, not the "alone" run).
# Every run gets N steps (each step: one micro-batch of every task of the run), so a task sees the
# same samples alone and together; the transfer's probe_steps + steps is N too. Tables give the mean
# and sample standard deviation over the seeds of the test metrics (summary.json `metrics`); which
# variant is best is chosen on val (summary.json `val`), never on test. A difference of two means
# no larger than the sum of their standard deviations is written "no measurable difference".
#
# Usage: scripts/results.sh [--steps N] [--seeds S,S,...] [--config FILE] [--held-out TASK]
#                           [--transfer-config FILE] [--out DIR] [--doc FILE] [--reuse] [--report-only]
#   --steps N            the budget (default: the config's `steps`); warm-ups scale with it
#   --seeds LIST         seeds, each run once per seed (default 1,2,3; at least 2 for a spread)
#   --config FILE        multi-task config (default configs/mini.yaml)
#   --held-out TASK      task left out of pre-training (default fashion)
#   --transfer-config F  the fine-tune config of that task (default configs/transfer-fashion.yaml)
#   --out DIR            run directories, DIR/seedS/NAME (default runs/results)
#   --doc FILE           the Markdown written (default docs/RESULTS.md)
#   --reuse              keep runs that already have a summary.json (to finish an interrupted sweep)
#   --report-only        run nothing: write the document from the summary.json files in DIR
#   --peer-config FILE   another config already swept (e.g. configs/mini.yaml for a ViT sweep) ...
#   --peer-out DIR       ... whose runs are in DIR: adds its sparse runs beside this config's, on the
#                        tasks both have, with each one's training FLOPs (`gppf inspect --json`)
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
seeds=1,2,3
reuse=0
report_only=0
peer_config=""
peer_out=""
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --report-only) report_only=1; shift ;;
    --config) config=$2; shift 2 ;;
    --held-out) held_out=$2; shift 2 ;;
    --transfer-config) transfer_config=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --doc) doc=$2; shift 2 ;;
    --reuse) reuse=1; shift ;;
    --peer-config) peer_config=$2; shift 2 ;;
    --peer-out) peer_out=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "results.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ "$report_only" = 1 ] || [ -x "$GPPF" ] ||
  { echo "results.sh: $GPPF is not an executable; build it (scripts/build.sh) or set GPPF_BIN" >&2; exit 1; }
[[ "$seeds" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "results.sh: --seeds must be a comma-separated list of integers, got '$seeds'" >&2; exit 2; }
IFS=, read -r -a seed_list <<<"$seeds"
command -v python3 >/dev/null || { echo "results.sh: python3 is needed to aggregate the runs" >&2; exit 1; }
if { [ -z "$peer_config" ] && [ -n "$peer_out" ]; } || { [ -n "$peer_config" ] && [ -z "$peer_out" ]; }; then
  echo "results.sh: --peer-config and --peer-out go together" >&2
  exit 2
fi
for f in "$config" "$transfer_config" ${peer_config:+"$peer_config"}; do
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
# The configs written below are $config's, elsewhere: their relative data set paths start where $config's do.
data_root=$(dirname "$config")
declare -a commands=()
# run NAME CMD...: runs a gppf command into $dir/NAME (log in $dir/NAME.log) unless --reuse finds it.
run() {
  local name=$1
  shift
  commands+=("$*")
  [ "$report_only" = 1 ] && return
  if [ "$reuse" = 1 ] && [ -f "$dir/$name/summary.json" ]; then
    echo "results.sh: $name: reusing $dir/$name"
    return
  fi
  rm -rf "${dir:?}/$name"
  echo "results.sh: $name: $*"
  if ! "$@" >"$dir/$name.log" 2>&1; then
    tail -n 20 "$dir/$name.log" >&2
    echo "results.sh: $name failed; its log: $dir/$name.log" >&2
    exit 1
  fi
}

# ---- the runs, once per seed ---------------------------------------------------------------------
for t in "${tasks[@]}"; do filter_tasks only "$t" "$config" >"$out/configs/alone-$t.yaml"; done
filter_tasks without "$held_out" "$config" >"$out/configs/pretrain-without-$held_out.yaml"
for seed in "${seed_list[@]}"; do
  dir="$out/seed$seed"
  mkdir -p "$dir"
  sd=(--set "seed=$seed")
  for t in "${tasks[@]}"; do
    run "alone-$t" "$GPPF" train --config "$out/configs/alone-$t.yaml" --data-root "$data_root" "${budget[@]}" "${sd[@]}" --out "$dir/alone-$t"
  done
  run dense "$GPPF" train --config "$config" "${budget[@]}" "${sd[@]}" --set "model.top_k=$legos" --out "$dir/dense"
  run sparse "$GPPF" train --config "$config" "${budget[@]}" "${sd[@]}" --out "$dir/sparse"
  run "pretrain-without-$held_out" "$GPPF" train --config "$out/configs/pretrain-without-$held_out.yaml" --data-root "$data_root" \
    "${budget[@]}" "${sd[@]}" --out "$dir/pretrain-without-$held_out"
  run transfer "$GPPF" finetune --checkpoint "$dir/pretrain-without-$held_out" --config "$transfer_config" \
    "${transfer_budget[@]}" "${sd[@]}" --out "$dir/transfer"
  run scratch "$GPPF" finetune --checkpoint "$dir/pretrain-without-$held_out" --config "$transfer_config" \
    "${transfer_budget[@]}" "${sd[@]}" --from-scratch --out "$dir/scratch"
done

# The training GFLOP of one step of CONFIG: 3 x (forward MFLOP of each task's path x its batch) (the
# backward pass costs about twice the forward), from `gppf inspect --json`; empty without gppf.
step_gflop() {
  local cfg=$1 json
  json=$("$GPPF" inspect "$cfg" --json 2>/dev/null) || return 0
  local t b total=0
  for t in $(task_names "$cfg"); do
    b=$(yaml_block tasks "$cfg" | grep -E "name: *$t[,} ]" | int_of batch_size)
    total=$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); m={x['name']: x['path_mflop'] for x in d['network']['tasks']}; print($total + 3 * m['$t'] * ${b:-0} / 1e3)" "$json")
  done
  echo "$total"
}
peer_steps=""
self_gflop=""
peer_gflop=""
if [ -n "$peer_config" ]; then
  self_gflop=$(step_gflop "$config")
  peer_gflop=$(step_gflop "$peer_config")
fi

# ---- docs/RESULTS.md ---------------------------------------------------------------------------------
new_task=$(task_names "$transfer_config" | head -n 1)
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit (dirty: uncommitted changes)"
version=$([ -x "$GPPF" ] && "$GPPF" --version 2>&1 | head -n 1 || echo unknown)
reduced=""
[ "$N" != "$cfg_steps" ] && reduced="This is a reduced budget (the config's is $cfg_steps steps); warm-ups were scaled to it."
export RS_OUT=$out RS_SEEDS=$seeds RS_TASKS="${tasks[*]}" RS_HELD_OUT=$held_out RS_NEW_TASK=$new_task \
  RS_CONFIG=$config RS_TRANSFER_CONFIG=$transfer_config RS_LEGOS=$legos RS_TOP_K=$top_k RS_N=$N RS_PROBE=$probe \
  RS_TUNE=$tune RS_REDUCED=$reduced RS_COMMIT=$commit RS_VERSION=$version RS_CPU="$(nproc) cores, ${cpu:-unknown CPU}" \
  RS_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" RS_ARGS="${args[*]:-}" RS_PEER_CONFIG=$peer_config RS_PEER_OUT=$peer_out \
  RS_SELF_GFLOP=$self_gflop RS_PEER_GFLOP=$peer_gflop
{
  python3 - <<'PY'
import json, math, os, re, statistics as st

E = os.environ
out, seeds = E["RS_OUT"], E["RS_SEEDS"].split(",")
tasks, held, new = E["RS_TASKS"].split(), E["RS_HELD_OUT"], E["RS_NEW_TASK"]


def summary(seed, run, root=None):
    path = f"{root or out}/seed{seed}/{run}/summary.json"
    if not os.path.exists(path):
        raise SystemExit(f"results.sh: {path} is missing (run without --report-only, or with --reuse)")
    with open(path) as f:
        return json.load(f)


def values(run, task, key, block, root=None):
    """The metric over the seeds; block is 'metrics' (test) or 'val'. None when a run lacks it."""
    vs = [summary(s, run, root)["tasks"].get(task, {}).get(block, {}).get(key) for s in seeds]
    return None if any(v is None for v in vs) else vs


def mean_sd(vs):
    return st.mean(vs), (st.stdev(vs) if len(vs) > 1 else float("nan"))


def fmt(vs, digits=4):
    if vs is None:
        return "n/a"
    m, s = mean_sd(vs)
    return f"{m:.{digits}f}" if math.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}"


def verdict(a, b, name_a, name_b):
    """Test means of a and b: a difference within the sum of the standard deviations is no difference."""
    if a is None or b is None:
        return "n/a"
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    if math.isnan(sa) or math.isnan(sb):
        return "n/a (one seed)"
    d = ma - mb
    if abs(d) <= sa + sb:
        return "no measurable difference"
    return f"{name_a if d > 0 else name_b} higher by {abs(d):.4f}"


def chosen_on_val(runs, task, key, names):
    vals = [values(r, task, key, "val") for r in runs]
    if any(v is None for v in vals):
        return "no val metrics"
    best = max(range(len(runs)), key=lambda i: st.mean(vals[i]))
    return names[best]


def keys(run, task):
    return list(summary(seeds[0], run)["tasks"][task]["metrics"].keys())


def walls(run):
    return [summary(s, run)["wall_seconds"] for s in seeds]


def params(run):
    try:
        with open(f"{out}/seed{seeds[0]}/{run}.log") as f:
            m = re.search(r"([0-9]+) parameters", f.read())
        return m.group(1) if m else "?"
    except OSError:
        return "?"


N, probe, tune, legos, top_k = E["RS_N"], E["RS_PROBE"], E["RS_TUNE"], E["RS_LEGOS"], E["RS_TOP_K"]
args = E["RS_ARGS"]
p = print
p("# Results\n")
p(f"Written by `scripts/results.sh{' ' + args if args else ''}` from the runs in `{out}/` (re-run it to")
p(f"reproduce; nothing here is typed by hand). {E['RS_DATE']}, commit {E['RS_COMMIT']},")
p(f"`{E['RS_VERSION']}`. Machine: {E['RS_CPU']}.\n")
p(f"**{len(seeds)} seeds ({', '.join(seeds)}), {N} steps per run.** Every number is the mean ± the sample")
p("standard deviation over the seeds of the test split's metric (summary.json `metrics`); the variant")
p("\"chosen on val\" has the best mean on the val split (summary.json `val`), so test is read once, at")
p("the end. A difference of two means no larger than the sum of their standard deviations is \"no")
p("measurable difference\". `miou` averages all classes incl. background, `miou_fg` the foreground")
p("classes only. A step takes one micro-batch of every task of the run, so each task sees the same")
p(f"number of samples alone and in the multi-task runs. {E['RS_REDUCED']}\n")
p(f"## Alone, dense multi-task, GPPF sparse ({E['RS_CONFIG']})\n")
runs3, names3 = None, ["alone", "dense", "sparse"]
p(f"| task | metric | alone | dense (k = L = {legos}) | GPPF sparse (k = {top_k} of {legos}) | chosen on val | sparse vs dense | sparse vs alone |")
p("| --- | --- | --- | --- | --- | --- | --- | --- |")
for t in tasks:
    runs3 = [f"alone-{t}", "dense", "sparse"]
    for k in keys("sparse", t):
        a, d, s = (values(r, t, k, "metrics") for r in runs3)
        p(f"| {t} | {k} | {fmt(a)} | {fmt(d)} | {fmt(s)} | {chosen_on_val(runs3, t, k, names3)} | "
          f"{verdict(s, d, 'sparse', 'dense')} | {verdict(s, a, 'sparse', 'alone')} |")
alone_wall = [sum(w) for w in zip(*(walls(f"alone-{t}") for t in tasks))]
p(f"| wall time (s) | | {fmt(alone_wall, 0)} (all {len(tasks)} runs) | {fmt(walls('dense'), 0)} | {fmt(walls('sparse'), 0)} | | | |")
p(f"| parameters | | {' / '.join(params('alone-' + t) for t in tasks)} | {params('dense')} | {params('sparse')} | | | |\n")
p("A lego's width is the dense block's width / k (docs/ARCHITECTURE.md), so every column spends about")
p("the same compute per sample of a task: k = L means L narrower legos, all active and shared by every")
p("task; k < L gives each task its own subset of wider ones. Wall times include the final evaluation.\n")
peer_out, peer_config = E["RS_PEER_OUT"], E["RS_PEER_CONFIG"]
if peer_out:
    steps_self = int(N)
    steps_peer = summary(seeds[0], "sparse", peer_out)["steps"]
    g_self, g_peer = E["RS_SELF_GFLOP"], E["RS_PEER_GFLOP"]
    me, peer = (os.path.splitext(os.path.basename(c))[0] for c in (E["RS_CONFIG"], peer_config))

    def budget(g, n):
        return f"{float(g) * n / 1e3:.0f} TFLOP ({float(g):.1f} GFLOP per step x {n} steps)" if g else "n/a"

    p(f"## Against {peer_config} (GPPF sparse, its runs in `{peer_out}/`)\n")
    p(f"Training compute of a run, 3 x the forward FLOPs of every task's path x its batch x steps (`gppf inspect --json`):")
    p(f"{E['RS_CONFIG']} {budget(g_self, steps_self)}; {peer_config} {budget(g_peer, steps_peer)}.")
    p("Same seeds, same tasks, same data; each config with its own optimizer and schedule.\n")
    p(f"| task | metric | {E['RS_CONFIG']} sparse | {peer_config} sparse | chosen on val | verdict |")
    p("| --- | --- | --- | --- | --- | --- |")
    for t in tasks:
        if t not in summary(seeds[0], "sparse", peer_out)["tasks"]:
            continue
        for k in keys("sparse", t):
            a, b = values("sparse", t, k, "metrics"), values("sparse", t, k, "metrics", peer_out)
            va, vb = values("sparse", t, k, "val"), values("sparse", t, k, "val", peer_out)
            choice = "n/a" if va is None or vb is None else (me if st.mean(va) >= st.mean(vb) else peer)
            p(f"| {t} | {k} | {fmt(a)} | {fmt(b)} | {choice} | {verdict(a, b, me, peer)} |")
    p(f"| wall time (s) | | {fmt(walls('sparse'), 0)} | {fmt([summary(s, 'sparse', peer_out)['wall_seconds'] for s in seeds], 0)} | | |\n")
p(f"## Transfer to {new}, held out of pre-training\n")
p(f"Pre-training: the config without `{held}`, {N} steps. Then `gppf finetune` with")
p(f"`{E['RS_TRANSFER_CONFIG']}` (docs/FINETUNE.md): a routing probe of {probe} steps on the frozen network, then")
p(f"{tune} steps of fine-tuning on the chosen legos. \"From scratch\" is its own run: `gppf finetune")
p(f"--from-scratch`, the same network from random initialisation with the same budget ({probe} + {tune} steps);")
p(f"it is not the `alone-{held}` run above (a network sized for one task).\n")
runs, names = ["transfer", "scratch", "transfer/probe"], ["pre-trained", "from scratch", "probe only"]
p(f"| {new} | metric | pre-trained (probe + fine-tune) | from scratch | after the probe only | chosen on val | pre-trained vs scratch |")
p("| --- | --- | --- | --- | --- | --- | --- |")
for k in keys("transfer", new):
    tr, sc, pr = (values(r, new, k, "metrics") for r in runs)
    p(f"| | {k} | {fmt(tr)} | {fmt(sc)} | {fmt(pr)} | {chosen_on_val(runs, new, k, names)} | "
      f"{verdict(tr, sc, 'pre-trained', 'scratch')} |")
tw = [a + b for a, b in zip(walls("transfer"), walls("transfer/probe"))]
p(f"| wall time (s) | | {fmt(tw, 0)} | {fmt(walls('scratch'), 0)} | {fmt(walls('transfer/probe'), 0)} | | |\n")
p("Legos the probe chose (per lego layer), per seed:\n")
p("```")
for s in seeds:
    try:
        with open(f"{out}/seed{s}/transfer.log") as f:
            for line in f:
                if "the probe chose" in line:
                    p(f"seed {s}: " + line[line.index("the probe chose"):].rstrip())
    except OSError:
        p(f"seed {s}: (no log)")
p("```")
PY
  echo
  echo "## Commands"
  echo
  echo "Run from the repository root, once per seed S in ${seeds} (\`--set seed=S\`, runs in \`$out/seedS/\`)."
  echo "\`$out/configs/alone-TASK.yaml\` and \`$out/configs/pretrain-without-$held_out.yaml\` are \`$config\` with its"
  echo "task list cut to one task / without \`$held_out\` (nothing else changed). The first seed's commands:"
  echo
  echo '```sh'
  for c in "${commands[@]:0:$((${#commands[@]} / ${#seed_list[@]}))}"; do echo "gppf${c#"$GPPF"}"; done
  echo '```'
} >"$doc.tmp"
mv "$doc.tmp" "$doc"
echo "results.sh: wrote $doc"
