#pragma once
// The SIMT training loop (DESIGN.md): every step takes a micro-batch from every participating task,
// runs that task's path forward and backward (gradients accumulate), adds the routing regulariser,
// and takes one optimizer step. Writes RUN_DIR/metrics.jsonl, RUN_DIR/summary.json, the run record
// (RUN_DIR/config.yaml and run.json: run_record.hpp) and checkpoints
// (RUN_DIR/checkpoints/, docs/CHECKPOINT_FORMAT.md): every `checkpoint_every` steps (after that
// step's evaluation, if any) and once at the end after the final evaluation, so that the saved BN
// statistics are the re-calibrated ones the summary's metrics were measured with.
//
// Resuming restores the step, parameters, BN statistics, optimizer state, loader positions and the
// per-task sampling RNGs: N steps straight and K steps + resume + N-K steps give bitwise equal
// parameters on the host (same thread count). Evaluations in between re-calibrate BN statistics
// only, which training (batch statistics) never reads, so they do not break the equivalence.
//
// Also checkpoints every `checkpoint_minutes` of wall time, and on SIGTERM/SIGUSR1/SIGINT/SIGHUP
// (handlers installed for the duration of run_training) at the next step boundary, then stops.
//
// Hostile input: every split (train, val, test) of every task is checked before step 1; periodic
// evaluations read val, the final one test (summary.json's `metrics`) and val (its `val`). A step
// whose gradient norm is non-finite is skipped with the BN running statistics restored; after
// `max_nonfinite_steps` such steps in a row the run stops with an error. RUN_DIR is locked
// (RUN_DIR/.lock) for the run, and a failed write of metrics.jsonl or summary.json is an error.
//
// One process or many ranks: the loop is the same (class Trainer in trainer.cpp); what differs is
// its Executor (executor.hpp).
#include <functional>
#include <map>
#include <string>

#include "core/device.hpp"
#include "io/dataset.hpp"
#include "io/loader.hpp"
#include "src/train/config.hpp"

namespace gppf::train {

struct TrainSummary {
  std::int64_t steps = 0;
  double wall_seconds = 0;
  std::map<std::string, std::map<std::string, double>> metrics;  // task -> metric -> value (test split)
  std::map<std::string, std::map<std::string, double>> val;      // the same keys on the val split
  // This process's training loaders: task -> stored sample bytes read from its shards (a replica
  // reads only its share of each micro-batch; tasks this process does not run are absent).
  std::map<std::string, std::int64_t> bytes_read;
  // SIGTERM, SIGUSR1, SIGINT or SIGHUP arrived: the run checkpointed at the next step boundary and stopped early
  // (no final evaluation, no summary.json); `gppf train` exits with kExitRequeue.
  bool interrupted = false;
  // cuda_graphs: on: the step graph's captures and launches (Network::graph_stats).
  std::int64_t graph_captures = 0, graph_launches = 0;
};

// EX_TEMPFAIL: "requeue me", after a signal-triggered checkpoint.
inline constexpr int kExitRequeue = 75;

class Network;
struct TrainOptions {
  std::string run_dir;
  std::string resume;  // "", "auto" or a checkpoint path
  // Called once on the freshly built network, before the optimizer is created and before a resume
  // loads its checkpoint: `gppf finetune` loads pre-trained weights and freezes parameters here
  // (Parameter::trainable = false keeps a parameter out of the optimizer).
  std::function<void(Network&)> prepare = nullptr;
  // Run as one process even when MPI has several ranks (the tests' single-process references).
  bool single_process = false;
  // A run directory that holds a previous run's outputs (metrics.jsonl, summary.json, checkpoints)
  // is refused unless `resume` is set, or `force`: then those outputs are removed first.
  bool force = false;
  // The command line as typed, for RUN_DIR/run.json (run_record.hpp); empty outside the CLI.
  std::string command_line = "";
  // Draws step s+1's tasks and batches during step s, before its optimizer update, and on a GPU queues
  // their uploads on the copy stream then, so that they overlap step s's compute (one process; not
  // before the last step). The same batches in the same order either way; off: each step draws its
  // own at its start (the tests' reference).
  bool prefetch = true;
};

// The loader of task `index` for training: its batch, augmentation and a seed of (config seed, index);
// page-locked host memory when the network runs on `device` (a GPU).
struct TaskSpec;
io::LoaderConfig train_loader_config(const TrainConfig& config, const TaskSpec& task, std::size_t index,
                                     const Device& device);
// Evaluation of `split`: whole batches of at least 64 in file order, once.
io::LoaderConfig eval_loader_config(const TrainConfig& config, const TaskSpec& task, const std::string& split,
                                    const Device& device);
// BN re-calibration: training batches in a fixed shuffled order.
io::LoaderConfig calibration_loader_config(const TrainConfig& config, const TaskSpec& task, const Device& device);

TrainSummary run_training(const TrainConfig& config, const TrainOptions& options);

// Re-estimates task's BN running statistics over config.bn_calibration_batches training batches.
void calibrate_task(Network& net, int task, const io::Dataset& dataset, const TrainConfig& config);
// Task's metrics on `split` with the running BN statistics as they are; max_batches 0: the whole split.
std::map<std::string, double> evaluate_task(Network& net, int task, const io::Dataset& dataset,
                                            const TrainConfig& config, const std::string& split,
                                            std::int64_t max_batches, std::int64_t* samples = nullptr);

}  // namespace gppf::train
