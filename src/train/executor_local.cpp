#include "src/train/executor_local.hpp"

#include "src/train/network.hpp"
#include "src/train/trainer.hpp"

namespace gppf::train {

LocalExecutor::LocalExecutor(Network& net, bool deterministic) : m_net(net) {
  if (deterministic) m_task_grads.emplace(net.parameters());
}

std::vector<nn::Parameter*> LocalExecutor::held_parameters() { return m_net.parameters(); }

float LocalExecutor::run_step(Network& net, std::int64_t, const std::vector<int>& active, const TaskRunner& run_task) {
  if (m_task_grads) {
    // As every rank of a task-parallel layout does (executor_mpi.cpp): the passes, the fold, the
    // regulariser.
    for (int t : active) {
      run_task({t});
      m_task_grads->take(t);
    }
    m_task_grads->fold(active, nullptr, [](const nn::Parameter&) { return false; });
  } else if (!active.empty()) {
    run_task(active);
  }
  return net.apply_balance(active);
}

EvalResults LocalExecutor::evaluate(Network& net, const std::vector<io::Dataset>& datasets, const TrainConfig& config,
                                    const EvalRequest& request) {
  EvalResults results(request.splits.size(), std::vector<TaskEval>(datasets.size()));
  for (std::size_t i = 0; i < datasets.size(); ++i) {
    const int t = static_cast<int>(i);
    calibrate_task(net, t, datasets[i], config);
    for (std::size_t s = 0; s < request.splits.size(); ++s) {
      TaskEval& e = results[s][i];
      e.metrics = evaluate_task(net, t, datasets[i], config, request.splits[s], request.max_batches, &e.samples);
    }
  }
  return results;
}

CheckpointTensors LocalExecutor::checkpoint_tensors(Network& net, optim::Optimizer& optimizer) {
  return {net.parameters(), net.buffers(), optimizer.state()};
}

}  // namespace gppf::train
