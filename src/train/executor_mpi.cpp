#include "src/train/executor_mpi.hpp"

#include <algorithm>
#include <cstdio>

#include "core/log.hpp"
#include "src/train/network.hpp"
#include "src/train/trainer.hpp"

namespace gppf::train {
namespace {

using json = nlohmann::json;

std::string fmt(double v, int prec) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

// This rank's evaluation work as a sequence of Network calls, one per lockstep round: for each task
// it runs, calibrate the BN statistics, then evaluate each split.
class EvalWork {
 public:
  EvalWork(Network& net, const std::vector<io::Dataset>& datasets, const TrainConfig& config,
           const EvalRequest& request, std::vector<int> tasks)
      : m_net(net), m_datasets(datasets), m_config(config), m_request(request), m_tasks(std::move(tasks)) {}

  // Runs the next call; false when this rank has none left.
  bool next() {
    while (m_item < m_tasks.size()) {
      const int t = m_tasks[m_item];
      if (!m_loader) open(t);
      if (m_phase < 0) {
        if (m_batches < m_config.bn_calibration_batches && m_loader->next(m_batch)) {
          m_net.calibrate(t, m_batch, static_cast<int>(m_batches++));
          return true;
        }
      } else if ((m_request.max_batches == 0 || m_batches < m_request.max_batches) && m_loader->next(m_batch)) {
        m_net.evaluate(t, m_batch, *m_evals[static_cast<std::size_t>(m_phase)][t]);
        ++m_batches;
        return true;
      }
      advance();
    }
    return false;
  }
  // Split s's evaluator of task t (null when this rank does not run t).
  const TaskEvaluator* evaluator(std::size_t s, int t) const {
    const auto it = m_evals[s].find(t);
    return it == m_evals[s].end() ? nullptr : it->second.get();
  }

 private:
  void open(int t) {
    const auto ti = static_cast<std::size_t>(t);
    const TaskSpec& spec = m_net.tasks()[ti];
    const Device device = m_net.device();
    m_loader = std::make_unique<io::Loader>(
        m_datasets[ti],
        m_phase < 0 ? calibration_loader_config(m_config, spec, device)
                    : eval_loader_config(m_config, spec, m_request.splits[static_cast<std::size_t>(m_phase)], device));
    if (m_phase >= 0) m_evals[static_cast<std::size_t>(m_phase)][t] = std::make_unique<TaskEvaluator>(spec);
    m_batches = 0;
  }
  // The next split of this task, or the next task.
  void advance() {
    m_loader.reset();
    if (++m_phase < static_cast<int>(m_request.splits.size())) return;
    m_phase = -1;
    ++m_item;
  }

  Network& m_net;
  const std::vector<io::Dataset>& m_datasets;
  const TrainConfig& m_config;
  const EvalRequest& m_request;
  std::vector<int> m_tasks;
  std::size_t m_item = 0;
  int m_phase = -1;  // -1: calibration, s >= 0: evaluation of split s
  std::unique_ptr<io::Loader> m_loader;
  io::Batch m_batch;
  std::int64_t m_batches = 0;
  std::vector<std::map<int, std::unique_ptr<TaskEvaluator>>> m_evals{m_request.splits.size()};
};

}  // namespace

MpiExecutor::MpiExecutor(std::unique_ptr<Distributed> distributed) : m_dist(std::move(distributed)) {}

float MpiExecutor::run_step(Network& net, std::int64_t step, const std::vector<int>& active,
                            const TaskRunner& run_task) {
  dist::maybe_inject_fault(m_dist->rank(), step);
  if (m_dist->deterministic()) {
    // The passes of this rank's tasks, every task's contributions summed in task order on every rank,
    // then the regulariser on every rank (routers are replicated): as one process does it.
    m_dist->run_train_rounds(net, step, active, [&](int t) {
      run_task({t});
      m_dist->task_gradients().take(t);
    });
    m_dist->fold_task_gradients(active);
    return net.apply_balance(active);
  }
  // Routers are replicated: rank 0 adds the regulariser's gradient (before the rounds, so that the
  // routers' all-reduces can start during the backward pass), the all-reduce spreads it.
  m_dist->begin_step(active, step);
  float balance = 0.0f;
  if (m_dist->root()) balance = net.apply_balance(active);
  m_dist->run_train_rounds(net, step, active, [&](int t) { run_task({t}); });
  m_dist->finish_step();
  return balance;
}

EvalResults MpiExecutor::evaluate(Network& net, const std::vector<io::Dataset>& datasets, const TrainConfig& config,
                                  const EvalRequest& request) {
  // Every rank re-calibrates and evaluates the tasks it runs (replicas repeat the work of replica 0:
  // whole batches, no synchronisation), in one run of rounds, so that every member of a block leaves
  // it together; the numbers of the reporting ranks go to every rank.
  std::vector<int> mine;
  for (std::size_t i = 0; i < datasets.size(); ++i)
    if (runs(static_cast<int>(i))) mine.push_back(static_cast<int>(i));
  EvalWork work(net, datasets, config, request, mine);
  m_dist->run_rounds(net, request.step, [&] { return work.next(); });
  EvalResults results(request.splits.size(), std::vector<TaskEval>(datasets.size()));
  for (std::size_t s = 0; s < request.splits.size(); ++s) {
    std::vector<json> entries(datasets.size());
    for (int t : mine)
      if (const TaskEvaluator* e = work.evaluator(s, t); e && reports(t))
        entries[static_cast<std::size_t>(t)] = {{"samples", e->samples()}, {"metrics", e->metrics()}};
    share(entries, "the evaluation results");
    for (std::size_t t = 0; t < entries.size(); ++t) {
      if (entries[t].is_null()) continue;
      results[s][t].samples = entries[t].at("samples").get<std::int64_t>();
      results[s][t].metrics = entries[t].at("metrics").get<std::map<std::string, double>>();
    }
  }
  return results;
}

void MpiExecutor::share(std::vector<json>& per_task, const std::string& what) {
  json mine = json::object();
  for (std::size_t i = 0; i < per_task.size(); ++i)
    if (!per_task[i].is_null()) mine[std::to_string(i)] = per_task[i];
  for (const auto& text : m_dist->gather(mine.dump(), what)) {
    const json part = json::parse(text);
    for (const auto& [k, v] : part.items()) per_task[std::stoul(k)] = v;
  }
}

CheckpointTensors MpiExecutor::checkpoint_tensors(Network& net, optim::Optimizer& optimizer) {
  // An optimizer state tensor "<parameter>.<slot>" is written with its parameter.
  std::map<std::string, const nn::Parameter*> by_name;
  CheckpointTensors tensors;
  for (nn::Parameter* p : net.parameters()) {
    by_name[p->name] = p;
    if (m_dist->writes_parameter(*p)) tensors.params.push_back(p);
  }
  for (const nn::Buffer& b : net.tagged_buffers())
    if (m_dist->writes_buffer(b)) tensors.buffers.emplace_back(b.name, b.tensor);
  for (const auto& o : optimizer.state()) {
    const auto it = by_name.find(o.first.substr(0, o.first.rfind('.')));
    GPPF_CHECK(it != by_name.end(), "checkpoint: optimizer state ", o.first, " belongs to no parameter");
    if (m_dist->writes_parameter(*it->second)) tensors.optimizer.push_back(o);
  }
  return tensors;
}

void MpiExecutor::describe_checkpoint(CheckpointMeta& meta, const std::vector<std::string>& task_names) const {
  meta.world_size = m_dist->world();
  meta.layout = m_dist->layout().to_json(task_names);
}

void MpiExecutor::log_traffic(Network& net, std::int64_t steps_run) {
  // Bytes this job moved per step, against the planner's prediction (docs/SCALING.md).
  const dist::CommStats st = m_dist->stats();
  json mine = {{"alltoall", st.alltoall_bytes},
               {"allreduce", st.allreduce_bytes},
               {"broadcast", st.broadcast_bytes},
               {"seconds", st.seconds}};
  double a2a = 0, ar = 0, bc = 0, wait = 0;
  for (const auto& text : m_dist->gather(mine.dump(), "the communication statistics")) {
    const json part = json::parse(text);
    a2a += part["alltoall"].get<double>();
    ar += part["allreduce"].get<double>();
    bc += part["broadcast"].get<double>();
    wait = std::max(wait, part["seconds"].get<double>());
  }
  const TrafficEstimate e = m_dist->estimate(net);
  const double steps = static_cast<double>(std::max<std::int64_t>(1, steps_run));
  if (root())
    log::info("communication per step (all ranks, training and evaluation): all-to-all ", fmt(a2a / steps / 1e6, 3),
              " MB, all-reduce ", fmt(ar / steps / 1e6, 3),
              m_dist->deterministic() ? str(" MB, broadcast (deterministic mode) ", fmt(bc / steps / 1e6, 3)) : "",
              " MB; predicted for a training step: ", fmt(e.alltoall_bytes / 1e6, 3), " MB and ",
              fmt(e.grad_payload_bytes / 1e6, 3), " MB; at most ", fmt(wait, 1), " s in collectives on one rank");
}

}  // namespace gppf::train
