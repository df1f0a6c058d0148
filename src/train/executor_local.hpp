#pragma once
// One process trains every task: no lockstep, no reduction, the whole model in its checkpoints.
#include <optional>

#include "src/train/executor.hpp"
#include "src/train/task_gradients.hpp"

namespace gppf::train {

class LocalExecutor final : public Executor {
 public:
  // deterministic: each task's pass in turn, its gradients summed in task order (task_gradients.hpp).
  explicit LocalExecutor(Network& net, bool deterministic = false);

  bool root() const override { return true; }
  int rank() const override { return 0; }
  int world() const override { return 1; }
  bool runs(int) const override { return true; }
  bool reports(int) const override { return true; }
  std::string describe(const Network&) const override { return {}; }

  std::vector<nn::Parameter*> held_parameters() override;
  void attach(optim::Optimizer&) override {}

  int share() const override { return 0; }
  int shares() const override { return 1; }
  float run_step(Network& net, std::int64_t step, const std::vector<int>& active, const TaskRunner& run_task) override;

  EvalResults evaluate(Network& net, const std::vector<io::Dataset>& datasets, const TrainConfig& config,
                       const EvalRequest& request) override;

  std::vector<int> agree_max(std::vector<int> values, const std::string&) override { return values; }
  void share(std::vector<nlohmann::json>&, const std::string&) override {}
  void barrier(const std::string&) override {}

  CheckpointTensors checkpoint_tensors(Network& net, optim::Optimizer& optimizer) override;
  bool exact_resume() const override { return true; }
  MPI_Comm comm() const override { return MPI_COMM_NULL; }
  void describe_checkpoint(CheckpointMeta&, const std::vector<std::string>&) const override {}

  void log_traffic(Network&, std::int64_t) override {}

 private:
  Network& m_net;
  std::optional<TaskGradients> m_task_grads;
};

}  // namespace gppf::train
