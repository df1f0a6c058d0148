#include "src/train/executor.hpp"

#include "src/train/executor_local.hpp"
#include "src/train/executor_mpi.hpp"
#include "src/train/network.hpp"

namespace gppf::train {

std::unique_ptr<Executor> make_executor(const TrainConfig& config, Network& net, bool single_process) {
  std::unique_ptr<Distributed> distributed = single_process ? nullptr : Distributed::create(config, net);
  if (!distributed) return std::make_unique<LocalExecutor>(net, config.deterministic);
  return std::make_unique<MpiExecutor>(std::move(distributed));
}

StepResult simt_step(Executor& executor, Network& net, optim::Optimizer& optimizer, std::int64_t step, float lr,
                     const std::vector<int>& active,
                     const std::function<std::vector<PendingLoss>(const std::vector<int>& tasks)>& run_passes,
                     const std::function<void()>& before_update) {
  std::vector<PendingLoss> pending;
  StepResult r;
  std::vector<int> mine;  // the routes of this process's tasks: one upload for the step
  for (int t : active)
    if (executor.runs(t)) mine.push_back(t);
  net.prepare_step(mine, step);
  r.balance = executor.run_step(net, step, active, [&](const std::vector<int>& tasks) {
    for (PendingLoss& p : run_passes(tasks)) pending.push_back(std::move(p));
  });
  if (before_update) before_update();
  optimizer.step(lr, net.stream());
  r.losses = net.end_step(pending);
  return r;
}

}  // namespace gppf::train
