#pragma once
// Where a training step runs: one process (LocalExecutor) or one rank of many (MpiExecutor,
// docs/SCALING.md). The Trainer (trainer.cpp) owns the loop (schedule, logging, evaluation,
// checkpoints, signals) and asks its Executor for everything that differs between the two: which
// tasks this process trains and reports, how a step's micro-batches run and their gradients are
// reduced, how evaluation results and log lines reach the root, which tensors it saves.
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/dataset.hpp"
#include "io/loader.hpp"
#include "src/optim/optimizer.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/config.hpp"
#include "src/train/network.hpp"

namespace gppf::train {

// One task's evaluation on one split.
struct TaskEval {
  std::int64_t samples = 0;
  std::map<std::string, double> metrics;
};

// An evaluation: BN re-calibration of every task, then each split in turn (whole splits when
// max_batches is 0).
struct EvalRequest {
  std::int64_t step = 0;
  std::vector<std::string> splits;
  std::int64_t max_batches = 0;
};
// Per split (request order), per task (config order); every process gets every task's numbers.
using EvalResults = std::vector<std::vector<TaskEval>>;

// Runs the micro-batches (forward, loss, backward) of these tasks in a step; one call may batch them
// (Network::train_tasks).
using TaskRunner = std::function<void(const std::vector<int>& tasks)>;

class Executor {
 public:
  virtual ~Executor() = default;

  // Who this process is: the root writes the run directory's files and logs.
  virtual bool root() const = 0;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // This process trains task t (some replica of it), and reports its numbers.
  virtual bool runs(int task) const = 0;
  virtual bool reports(int task) const = 0;
  // The layout as text for the start of the log; empty for one process.
  virtual std::string describe(const Network& net) const = 0;

  // What this process's optimizer updates, and how it learns the global gradient norm.
  virtual std::vector<nn::Parameter*> held_parameters() = 0;
  virtual void attach(optim::Optimizer& optimizer) = 0;

  // This process's share of a task's micro-batch (its loader builds only that part), and how many
  // such shares make it up.
  virtual int share() const = 0;
  virtual int shares() const = 0;
  // A step's gradients: `run_task` for every active task this process runs (in lockstep with the
  // other ranks), the routing regulariser, the gradient reduction. Returns the regulariser's value.
  virtual float run_step(Network& net, std::int64_t step, const std::vector<int>& active,
                         const TaskRunner& run_task) = 0;

  // BN re-calibration and evaluation of every task (datasets in config order).
  virtual EvalResults evaluate(Network& net, const std::vector<io::Dataset>& datasets, const TrainConfig& config,
                               const EvalRequest& request) = 0;

  // Collectives of the loop (every process calls them at the same point).
  // Element-wise maximum over the processes.
  virtual std::vector<int> agree_max(std::vector<int> values, const std::string& what) = 0;
  // Per-task entries: each process fills those it reports (others null); afterwards every process
  // has them all.
  virtual void share(std::vector<nlohmann::json>& per_task, const std::string& what) = 0;
  virtual void barrier(const std::string& what) = 0;

  // Checkpoints: the tensors this process writes (each by exactly one process), whether a resume
  // must find exactly this process's names, the communicator of sharded writes, the layout.
  virtual CheckpointTensors checkpoint_tensors(Network& net, optim::Optimizer& optimizer) = 0;
  virtual bool exact_resume() const = 0;
  virtual MPI_Comm comm() const = 0;
  virtual void describe_checkpoint(CheckpointMeta& meta, const std::vector<std::string>& task_names) const = 0;

  // At the end: bytes moved against the prediction (root logs); nothing for one process.
  virtual void log_traffic(Network& net, std::int64_t steps_run) = 0;
};

// An MpiExecutor when MPI runs several ranks (and !single_process), else a LocalExecutor.
std::unique_ptr<Executor> make_executor(const TrainConfig& config, Network& net, bool single_process);

// The SIMT step shared by `gppf train` and `gppf bench step`: the executor's gradients (`run_passes`
// runs the passes of some tasks: Network::train_tasks), the optimizer's update at `lr` (`before_update`, if
// set, runs in between: the benchmark's timer), then Network::end_step: the host's copies of the
// routers and the losses of every pass, with one sync. A step makes at most two syncs on a GPU:
// that one and the optimizer's gradient norm.
struct StepResult {
  float balance = 0;             // the routing regulariser's value
  std::vector<TaskLoss> losses;  // one per pass, in the order they ran
};
StepResult simt_step(Executor& executor, Network& net, optim::Optimizer& optimizer, std::int64_t step, float lr,
                     const std::vector<int>& active,
                     const std::function<std::vector<PendingLoss>(const std::vector<int>& tasks)>& run_passes,
                     const std::function<void()>& before_update = nullptr);

}  // namespace gppf::train
