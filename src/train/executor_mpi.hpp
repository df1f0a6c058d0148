#pragma once
// One rank of a multi-rank run (docs/SCALING.md): the layout's tasks, lockstep rounds with the other
// members of its expert-parallel block, gradient all-reduces, per-rank checkpoint shares. Wraps
// Distributed (distributed.hpp), which holds the layout and its communicators.
#include <memory>

#include "src/train/distributed.hpp"
#include "src/train/executor.hpp"

namespace gppf::train {

class MpiExecutor final : public Executor {
 public:
  explicit MpiExecutor(std::unique_ptr<Distributed> distributed);

  bool root() const override { return m_dist->root(); }
  int rank() const override { return m_dist->rank(); }
  int world() const override { return m_dist->world(); }
  bool runs(int task) const override { return m_dist->runs(task); }
  bool reports(int task) const override { return m_dist->reports(task); }
  std::string describe(const Network& net) const override { return m_dist->describe(net); }

  std::vector<nn::Parameter*> held_parameters() override { return m_dist->held_parameters(); }
  void attach(optim::Optimizer& optimizer) override { optimizer.set_norm_reducer(m_dist->norm_reducer()); }

  int share() const override { return m_dist->layout().replica; }
  int shares() const override { return m_dist->layout().replicas; }
  float run_step(Network& net, std::int64_t step, const std::vector<int>& active, const TaskRunner& run_task) override;

  EvalResults evaluate(Network& net, const std::vector<io::Dataset>& datasets, const TrainConfig& config,
                       const EvalRequest& request) override;

  std::vector<int> agree_max(std::vector<int> values, const std::string& what) override {
    return m_dist->agree_max(std::move(values), what);
  }
  void share(std::vector<nlohmann::json>& per_task, const std::string& what) override;
  void barrier(const std::string& what) override { m_dist->barrier(what); }

  CheckpointTensors checkpoint_tensors(Network& net, optim::Optimizer& optimizer) override;
  bool exact_resume() const override { return false; }
  MPI_Comm comm() const override { return m_dist->world_comm().raw(); }
  void describe_checkpoint(CheckpointMeta& meta, const std::vector<std::string>& task_names) const override;

  void log_traffic(Network& net, std::int64_t steps_run) override;

 private:
  std::unique_ptr<Distributed> m_dist;
};

}  // namespace gppf::train
