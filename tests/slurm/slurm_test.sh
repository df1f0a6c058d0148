#!/usr/bin/env bash
# jobs/gppf-cpu.sbatch against a real single-node Slurm that this test starts (munged, slurmctld and
# slurmd as root, configuration, state and logs under a temporary folder; all stopped on exit).
# Submits a tiny training run, sends USR1 to the batch shell as Slurm does before a time limit
# (--signal=B:USR1@T), then TERM to the resumed run's step (scancel --signal=TERM), and checks each
# time that gppf checkpoints and exits 75 and the job requeues itself; then that both restarts
# resumed from their checkpoint ("resumed from ... at step K") and the run finished with summary.json.
# Exit 77 (ctest: skipped) with the reason when Slurm or munge is not installed or we are not root.
#
#   tests/slurm/slurm_test.sh PATH/TO/gppf [SOURCE_DIR]    (GPPF_KEEP_SLURM_TEST=1 keeps the folder)
set -euo pipefail

gppf=${1:?usage: slurm_test.sh PATH/TO/gppf [SOURCE_DIR]}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
gppf=$(realpath "$gppf")
fail() {
  echo "slurm_test: FAIL: $*" >&2
  exit 1
}

# The requeue logic is copied into every template; they must not drift apart.
requeue_block() { sed -n '/^# ---- requeue logic/,/^# ---- end of requeue logic/p' "$1"; }
reference=$(requeue_block "$src/jobs/gppf-cpu.sbatch")
[ -n "$reference" ] || fail "jobs/gppf-cpu.sbatch has no requeue logic block"
for t in "$src"/jobs/*.sbatch; do
  [ "$(requeue_block "$t")" = "$reference" ] || fail "the requeue logic of $t differs from jobs/gppf-cpu.sbatch"
done

missing=()
for c in munged slurmctld slurmd sbatch scontrol scancel sinfo; do
  command -v "$c" >/dev/null || missing+=("$c")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "slurm_test: SKIP: ${missing[*]} not installed" \
    "(scripts/install-deps.sh installs them: slurmctld slurmd slurm-client munge)"
  exit 77
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "slurm_test: SKIP: must run as root (slurmd starts job steps as their users)"
  exit 77
fi

tmp=$(mktemp -d /tmp/gppf-slurm-test.XXXXXX)
chmod 755 "$tmp"
export SLURM_CONF=$tmp/slurm.conf
started=()
cleanup() {
  local rc=$?
  set +e
  [ -f "$SLURM_CONF" ] && [ -n "${job:-}" ] && scancel "$job" 2>/dev/null && sleep 1
  # Only the daemons this test started, by the pids they wrote; they save state while stopping, so
  # wait for them before removing the folder.
  local pids=() p
  for p in "${started[@]}"; do
    [ -f "$p" ] && pids+=("$(cat "$p")")
  done
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null
  for _ in $(seq 50); do
    local alive=0
    for p in "${pids[@]}"; do
      # A zombie (state Z) has exited; the container's init may never reap it.
      [ -r "/proc/$p/stat" ] && [ "$(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null)" != Z ] && alive=1
    done
    [ $alive -eq 1 ] || break
    sleep 0.2
  done
  if [ $rc -ne 0 ]; then
    for f in "$tmp"/job.out "$tmp"/ft.out "$tmp"/log/slurmctld.log "$tmp"/log/slurmd.log; do
      [ -f "$f" ] && { echo "---- $f (last 40 lines)"; tail -40 "$f"; }
    done
  fi
  if [ -n "${GPPF_KEEP_SLURM_TEST:-}" ]; then echo "slurm_test: kept $tmp"; else rm -rf "$tmp"; fi
  exit $rc
}
trap cleanup EXIT
t0=$SECONDS

# ---- munge and Slurm ----
mkdir -p "$tmp/munge" "$tmp/state" "$tmp/spool" "$tmp/log"
chmod 700 "$tmp/munge"
head -c 1024 /dev/urandom >"$tmp/munge/munge.key"
chmod 400 "$tmp/munge/munge.key"
munged --force --key-file="$tmp/munge/munge.key" --socket="$tmp/munge/munge.sock" \
  --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/log/munged.log" --seed-file="$tmp/munge/munged.seed" ||
  fail "munged did not start ($tmp/log/munged.log)"
started+=("$tmp/munge/munged.pid")

host=$(hostname -s)
node=$(slurmd -C | head -1 | sed 's/ UpTime=.*//')
[[ $node == NodeName=* ]] || fail "slurmd -C printed no node line: $node"
port=$((20000 + RANDOM % 20000))  # two test runs side by side must not share ports
cat >"$SLURM_CONF" <<EOF
ClusterName=gppftest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/munge.sock
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
KillWait=10
MinJobAge=600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -f "$SLURM_CONF" -i || fail "slurmctld did not start"
started+=("$tmp/slurmctld.pid")
slurmd -f "$SLURM_CONF" || fail "slurmd did not start"
started+=("$tmp/slurmd.pid")
for _ in $(seq 100); do
  [ "$(sinfo -h -o %T 2>/dev/null)" = idle ] && break
  sleep 0.2
done
[ "$(sinfo -h -o %T)" = idle ] || fail "the node did not come up: $(sinfo -h -o '%T %E' 2>&1)"
echo "slurm_test: Slurm up after $((SECONDS - t0)) s"

# ---- tiny data: 8x8 IDX images, class 0 bright left half, class 1 bright right half ----
be32() {  # a big-endian 32-bit number
  local b
  for b in 24 16 8 0; do printf "\\x$(printf %02x $(($1 >> b & 255)))"; done
}
idx() {  # prefix count
  local row0='\xc8\xc8\xc8\xc8\x14\x14\x14\x14' row1='\x14\x14\x14\x14\xc8\xc8\xc8\xc8' i r
  {
    printf '\x00\x00\x08\x03'
    be32 "$2"; be32 8; be32 8
    for ((i = 0; i < $2; i++)); do
      for ((r = 0; r < 8; r++)); do if ((i % 2)); then printf "$row1"; else printf "$row0"; fi; done
    done
  } >"$tmp/idx/$1-images-idx3-ubyte"
  {
    printf '\x00\x00\x08\x01'
    be32 "$2"
    for ((i = 0; i < $2; i++)); do printf "\\x0$((i % 2))"; done
  } >"$tmp/idx/$1-labels-idx1-ubyte"
}
mkdir -p "$tmp/idx"
idx train 128
idx t10k 32
"$gppf" convert --format idx --src "$tmp/idx" --out "$tmp/bars" --classes left,right >"$tmp/convert.log" 2>&1 ||
  fail "gppf convert: $(tail -3 "$tmp/convert.log")"

# Long enough (7 s here at 0.75 ms a step) that both signals land mid-run on a faster machine too.
steps=10000
# The run keys of both jobs (the training job's and the finetune job's config).
run_keys="steps: $steps
log_every: 250
threads: 1
eval_every: 0
bn_calibration_batches: 1
optimizer: {type: sgd, lr: 0.05, momentum: 0.9}"
cat >"$tmp/tiny.yaml" <<EOF
$run_keys
checkpoint_every: 0
model:
  backbone: gppf-mini
  stem_channels: 4
  stages: [[8, 1, 1], [8, 1, 2]]
  legos: 2
  top_k: 1
  neck: {first_stage: 0, channels: 8}
tasks:
  - {name: bars, type: classification, dataset: $tmp/bars, batch_size: 16}
EOF

# ---- submit, warn, requeue, resume ----
# Submits jobs/gppf-cpu.sbatch with config $1 into $run, output to $out; more VAR=value follow.
submit() {
  local config=$1; shift
  job=$(cd "$tmp" && env GPPF_BIN="$gppf" GPPF_CONFIG="$config" GPPF_RUN_DIR="$run" "$@" \
    sbatch --parsable --output="$out" "$src/jobs/gppf-cpu.sbatch") || fail "sbatch of $config failed"
}
run=$tmp/run
out=$tmp/job.out
submit "$tmp/tiny.yaml"
echo "slurm_test: submitted job $job"
job_field() { scontrol show job "$job" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -1; }
wait_for() {  # seconds description command...
  local until=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    [ $SECONDS -lt $until ] || fail "timed out waiting for $what (job state $(job_field JobState))"
    sleep 0.2
  done
}
steps_logged() { [ -f "$run/metrics.jsonl" ] && [ -s "$run/metrics.jsonl" ]; }
wait_for 60 "the first training steps" steps_logged

restarts() { [ "$(job_field Restarts)" -ge "$1" ]; }
step_gone() { ! ps -eo args | grep -q "^slurmstepd: \[$job\.0\]"; }
pending_or_running() { case "$(job_field JobState)" in PENDING | RUNNING) return 0 ;; esac; return 1; }
# After a signal: gppf exited 75, `latest` names a verified checkpoint newer than $2, the job requeued
# itself; prints the checkpoint's step. A requeued job is held until its BeginTime (Slurm's requeue
# delay): the test releases it at once.
checkpointed_and_requeued() {  # restarts-expected previous-step
  wait_for 60 "requeue number $1" restarts "$1"
  [ "$(grep -c "gppf exited with status 75" "$out")" -eq "$1" ] ||
    fail "gppf did not exit with 75 on signal $1"
  local ckpt step
  ckpt=$(cat "$run/checkpoints/latest" 2>/dev/null) || fail "no checkpoints/latest after signal $1"
  step=$(echo "$ckpt" | sed -n 's/^step-0*\([0-9][0-9]*\)\.h5$/\1/p')
  [ -n "$step" ] && [ "$step" -gt "$2" ] && [ "$step" -lt $steps ] ||
    fail "latest is '$ckpt' after signal $1; expected a step in ($2, $steps)"
  "$gppf" inspect "$run/checkpoints/$ckpt" >/dev/null || fail "the checkpoint $ckpt of signal $1 does not verify"
  echo "slurm_test: signal $1: checkpoint $ckpt" >&2
  wait_for 30 "the requeued job to be pending" pending_or_running
  echo "slurm_test: job $(job_field JobState), reason $(job_field Reason)," \
    "eligible at $(job_field EligibleTime) (now $(date +%T))" >&2
  # Slurm's delay also lets the last start's step finish tearing down: released early, a new step
  # with the same id could find its PMIx socket still bound and fail to launch.
  wait_for 30 "the previous start's job step to exit" step_gone
  [ "$(job_field JobState)" = PENDING ] && scontrol update JobId="$job" StartTime=now
  echo "$step"
}
# metrics.jsonl goes back to step K on resume; a line past K means the training loop (and with it
# gppf's signal handlers) runs. gppf's log on stdout may come in bursts: it is not a terminal.
last_step() { tail -1 "$run/metrics.jsonl" | sed -n 's/.*"step": *\([0-9]*\).*/\1/p'; }
trained_past() { [ "$(last_step)" -gt "$1" ] 2>/dev/null; }

# 1: the time-limit warning, as --signal=B:USR1@T sends it: USR1 to the batch shell only.
scancel --batch --signal=USR1 "$job"
k1=$(checkpointed_and_requeued 1 0)
wait_for 60 "the resumed run (from step $k1) to train" trained_past "$k1"
# 2: scancel --signal=TERM (and --signal=TERM@T without B:): TERM to the job steps only.
scancel --signal=TERM "$job"
k2=$(checkpointed_and_requeued 2 "$k1")

finished() { [ "$(job_field JobState)" = COMPLETED ]; }
failed() {
  case "$(job_field JobState)" in FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) return 0 ;; esac
  return 1
}
until finished; do
  failed && fail "job ended $(job_field JobState) with exit code $(job_field ExitCode)"
  [ $SECONDS -lt $((t0 + 150)) ] || fail "timed out waiting for the resumed job to finish"
  sleep 0.2
done
for k in "$k1" "$k2"; do
  grep -q "resumed from $run/checkpoints/$(printf 'step-%08d.h5' "$k") at step $k\$" "$tmp/job.out" ||
    fail "no start resumed from step $k: $(grep -i resum "$tmp/job.out" || echo 'no resume line')"
done
[ -f "$run/summary.json" ] || fail "no summary.json"
grep -q "\"steps\": *$steps" "$run/summary.json" || fail "summary.json: $(cat "$run/summary.json")"
[ "$(job_field Restarts)" -eq 2 ] || fail "expected exactly two restarts, got $(job_field Restarts)"
[ "$(job_field ExitCode)" = 0:0 ] || fail "exit code $(job_field ExitCode)"
echo "slurm_test: train: checkpoints at step $k1 (USR1) and $k2 (TERM), two requeues and resumes," \
  "$steps steps in $((SECONDS - t0)) s"

# ---- the same template running gppf finetune from that run: TERM in the fine-tune phase ----
t1=$SECONDS
cat >"$tmp/ft.yaml" <<YAML
$run_keys
finetune: {probe_steps: 200, probe_lr: 0.05}
tasks:
  - {name: bars2, type: classification, dataset: $tmp/bars, batch_size: 16}
YAML
run=$tmp/ft
out=$tmp/ft.out
submit "$tmp/ft.yaml" GPPF_FINETUNE_FROM="$tmp/run"
echo "slurm_test: submitted finetune job $job"
tuning() { [ -f "$run/probe/summary.json" ] && steps_logged; }
wait_for 60 "the fine-tune phase's first steps" tuning
scancel --signal=TERM "$job"
k3=$(checkpointed_and_requeued 1 0)
until finished; do
  failed && fail "finetune job ended $(job_field JobState) with exit code $(job_field ExitCode)"
  [ $SECONDS -lt $((t1 + 150)) ] || fail "timed out waiting for the resumed finetune job to finish"
  sleep 0.2
done
grep -q "the probe finished before" "$out" || fail "the requeued finetune ran its probe again"
grep -q "resumed from $run/checkpoints/$(printf 'step-%08d.h5' "$k3") at step $k3\$" "$out" ||
  fail "the finetune did not resume from step $k3: $(grep -i resum "$out" || echo 'no resume line')"
grep -q "\"steps\": *$steps" "$run/summary.json" 2>/dev/null || fail "finetune summary.json missing or short"
[ -f "$run/transfer.json" ] || fail "finetune wrote no transfer.json"
[ "$(job_field ExitCode)" = 0:0 ] || fail "finetune exit code $(job_field ExitCode)"
echo "slurm_test: PASS: train checkpointed at $k1 (USR1) and $k2 (TERM); finetune at $k3 (TERM) kept its" \
  "probe; every requeue resumed; $((SECONDS - t0)) s"
