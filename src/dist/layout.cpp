#include "src/dist/layout.hpp"

#include <algorithm>
#include <numeric>
#include <sstream>

#include "core/error.hpp"

namespace gppf::dist {

std::vector<int> Layout::my_tasks() const {
  std::vector<int> out;
  for (std::size_t t = 0; t < task_group.size(); ++t)
    if (task_group[t] == group) out.push_back(static_cast<int>(t));
  return out;
}

std::string Layout::to_json(const std::vector<std::string>& task_names) const {
  std::ostringstream os;
  os << "{\"world\": " << world << ", \"replicas\": " << replicas << ", \"task_groups\": " << task_groups
     << ", \"expert_parallel\": " << expert_parallel << ", \"tasks\": {";
  for (std::size_t t = 0; t < task_group.size(); ++t)
    os << (t ? ", " : "") << '"' << (t < task_names.size() ? task_names[t] : std::to_string(t))
       << "\": " << task_group[t];
  os << "}, \"lego_owner\": [";
  for (std::size_t i = 0; i < lego_owner.size(); ++i) os << (i ? ", " : "") << lego_owner[i];
  os << "]}";
  return os.str();
}

Layout plan_layout(const LayoutRequest& q) {
  const std::size_t num_tasks = q.task_names.size();
  GPPF_CHECK(q.world >= 1 && q.rank >= 0 && q.rank < q.world, "distributed: rank ", q.rank, " of ", q.world);
  GPPF_CHECK(q.replicas >= 1 && q.world % q.replicas == 0, "distributed: key 'distributed.replicas' = ", q.replicas,
             " does not divide the ", q.world, " ranks of this job");
  const int groups = q.task_groups > 0 ? q.task_groups : q.world / q.replicas;
  GPPF_CHECK(groups * q.replicas == q.world, "distributed: task_groups (", groups, ") x replicas (", q.replicas,
             ") must equal the ", q.world,
             " ranks of this job; set key 'distributed.task_groups' or "
             "'distributed.replicas' accordingly");
  GPPF_CHECK(q.expert_parallel >= 1 && groups % q.expert_parallel == 0,
             "distributed: key 'distributed.expert_parallel' = ", q.expert_parallel, " must divide the ", groups,
             " task groups");
  GPPF_CHECK(q.expert_parallel <= q.num_legos, "distributed: key 'distributed.expert_parallel' = ", q.expert_parallel,
             " exceeds the ", q.num_legos, " routed legos per layer: some ranks would hold none");
  for (std::size_t t = 0; t < num_tasks; ++t)
    GPPF_CHECK(q.batch_sizes[t] % q.replicas == 0, "distributed: task '", q.task_names[t], "': batch_size ",
               q.batch_sizes[t], " does not split into ", q.replicas, " replicas (key 'distributed.replicas')");

  Layout l;
  l.world = q.world;
  l.rank = q.rank;
  l.ranks_per_node = std::max(1, q.ranks_per_node);
  l.replicas = q.replicas;
  l.task_groups = groups;
  l.expert_parallel = q.expert_parallel;
  l.replica = q.rank / groups;
  l.group = q.rank % groups;

  // Tasks: longest processing time first onto the least loaded group (ties: lowest group), which is
  // within 4/3 of the best makespan and deterministic on every rank.
  std::vector<std::size_t> order(num_tasks);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return q.step_flops[a] > q.step_flops[b]; });
  std::vector<double> load(static_cast<std::size_t>(groups), 0.0);
  l.task_group.assign(num_tasks, 0);
  for (std::size_t t : order) {
    const auto g = static_cast<std::size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    l.task_group[t] = static_cast<int>(g);
    load[g] += q.step_flops[t];
  }

  l.lego_owner.resize(static_cast<std::size_t>(q.num_legos));
  for (int i = 0; i < q.num_legos; ++i) l.lego_owner[static_cast<std::size_t>(i)] = i % q.expert_parallel;
  return l;
}

}  // namespace gppf::dist
