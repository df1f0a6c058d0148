#pragma once
// Where the work of a distributed run lives (docs/SCALING.md).
//
// world = replicas x task_groups. Rank r sits in replica r / task_groups at position (task group)
// g = r % task_groups. Every replica is a full copy of the model, split the same way:
//  - task parallelism: every task runs on exactly one task group of each replica;
//  - expert parallelism: consecutive task groups form blocks of `expert_parallel`; the routed legos of
//    every layer are sharded over the members of a block (member e holds the legos whose owner is e),
//    and a task whose legos sit on another member sends its activations there (all-to-all);
//  - data parallelism: each replica takes 1/replicas of every task's micro-batch; batch-norm statistics
//    are summed over the replicas (synchronised BN), so the result does not depend on the split.
// The stem, projection shortcuts, shared legos and routers are replicated on every rank.
#include <cstdint>
#include <string>
#include <vector>

namespace gppf::dist {

struct LayoutRequest {
  int world = 1, rank = 0;
  int ranks_per_node = 1;
  int task_groups = 0;  // 0: world / replicas
  int expert_parallel = 1;
  int replicas = 1;
  // Per task: its name, micro-batch and the forward+backward FLOPs of one step of its path.
  std::vector<std::string> task_names;
  std::vector<int> batch_sizes;
  std::vector<double> step_flops;
  int num_layers = 0;  // lego layers
  int num_legos = 0;   // routed legos per layer
};

struct Layout {
  int world = 1, rank = 0, ranks_per_node = 1;
  int replicas = 1, task_groups = 1, expert_parallel = 1;
  int replica = 0, group = 0;   // this rank
  std::vector<int> task_group;  // per task: the task group that runs it
  std::vector<int> lego_owner;  // per routed lego index: the block member (0..expert_parallel-1) holding it

  int block() const { return group / expert_parallel; }
  int expert_index() const { return group % expert_parallel; }
  int block_of_group(int g) const { return g / expert_parallel; }
  bool runs_task(int task) const { return task_group[static_cast<std::size_t>(task)] == group; }
  bool holds_lego(int lego) const { return lego_owner[static_cast<std::size_t>(lego)] == expert_index(); }
  // The tasks this rank runs, in task order.
  std::vector<int> my_tasks() const;
  // World rank of (replica, group).
  int world_rank(int replica_index, int group_index) const { return replica_index * task_groups + group_index; }
  // A one-line JSON description (stored in checkpoints and printed by the planner).
  std::string to_json(const std::vector<std::string>& task_names) const;
};

// Checks the request (one-line errors naming the distributed.* key) and places tasks on task groups
// (longest-processing-time first: the most expensive task goes to the least loaded group) and routed
// legos on block members (round robin, so every member holds num_legos / expert_parallel of a layer).
Layout plan_layout(const LayoutRequest& request);

}  // namespace gppf::dist
