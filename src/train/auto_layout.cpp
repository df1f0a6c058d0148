#include "src/train/auto_layout.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/cuda_runtime.hpp"
#include "src/dist/layout.hpp"
#include "src/train/distributed.hpp"
#include "src/train/network.hpp"

namespace gppf::train {
namespace {

// Optimizer state tensors per parameter (momentum; AdamW's and LAMB's two moments).
int state_per_parameter(const optim::OptimizerConfig& o) {
  if (o.type == "adamw" || o.type == "lamb") return 2;
  return o.momentum > 0 ? 1 : 0;
}

LayoutChoice price(const TrainConfig& config, Network& net, const dist::LayoutRequest& q, const LinkModel& m) {
  LayoutChoice c;
  c.replicas = q.replicas;
  c.task_groups = q.task_groups;
  c.expert_parallel = q.expert_parallel;
  dist::Layout layout;
  try {
    layout = dist::plan_layout(q);
  } catch (const Error& e) {
    c.refused = e.reason();
    return c;
  }
  // Compute: the busiest group of a replica.
  std::vector<double> load(static_cast<std::size_t>(layout.task_groups), 0.0);
  for (std::size_t t = 0; t < q.step_flops.size(); ++t)
    load[static_cast<std::size_t>(layout.task_group[t])] += q.step_flops[t] / layout.replicas;
  const double busiest = *std::max_element(load.begin(), load.end());
  c.compute_ms = busiest / m.flops_per_s * 1e3;
  if (std::count(load.begin(), load.end(), 0.0) > 0 && layout.expert_parallel == 1)
    c.refused = str(std::count(load.begin(), load.end(), 0.0), " task group(s) would run no task");
  // Traffic (activations in the network's dtype: 2 bytes in bf16).
  const double act_bytes = config.precision == "bf16" ? 2 : 4;
  const TrafficEstimate e = estimate_traffic(layout, net, act_bytes);
  const double W = layout.world;
  c.alltoall_bytes = e.alltoall_bytes / W;
  c.grad_wire_bytes = e.grad_wire_bytes / W;
  const double intra = (e.alltoall_bytes - e.alltoall_internode) / W, inter = e.alltoall_internode / W;
  c.alltoall_ms = (intra / (m.nvlink_gbs * 1e9) + inter / (m.net_gbs * 1e9)) * 1e3;
  if (c.alltoall_bytes > 0)
    c.alltoall_ms += 4.0 * static_cast<double>(q.num_layers) * (inter > 0 ? m.net_us : m.nvlink_us) * 1e-3;
  const bool spans_nodes = layout.world > std::max(1, q.ranks_per_node);
  const double gbs = spans_nodes ? m.net_gbs : m.nvlink_gbs, us = spans_nodes ? m.net_us : m.nvlink_us;
  const double buckets = std::ceil(e.grad_payload_bytes / W / (config.distributed.bucket_mb * 1e6));
  c.grad_ms = (c.grad_wire_bytes / (gbs * 1e9) + buckets * 2.0 * (W - 1) * us * 1e-6) * 1e3;
  if (c.grad_wire_bytes == 0) c.grad_ms = 0;
  c.step_ms = c.compute_ms + c.alltoall_ms + c.grad_ms;
  // Memory of the rank holding the most: replicated parameters, its lego shard, its tasks' heads.
  double replicated = 0, legos = 0;
  std::vector<double> heads(net.tasks().size(), 0.0);
  for (nn::Parameter* p : net.parameters()) {
    const double b = static_cast<double>(p->numel()) * 4;
    if (p->owner.kind == nn::Owner::Kind::Head)
      heads[static_cast<std::size_t>(p->owner.task)] += b;
    else if (p->owner.kind == nn::Owner::Kind::Lego)
      legos += b / layout.expert_parallel;
    else
      replicated += b;
  }
  std::vector<double> group_heads(static_cast<std::size_t>(layout.task_groups), 0.0);
  for (std::size_t t = 0; t < heads.size(); ++t)
    group_heads[static_cast<std::size_t>(layout.task_group[t])] += heads[t];
  const double held = replicated + legos + *std::max_element(group_heads.begin(), group_heads.end());
  c.memory_bytes = held * (2 + state_per_parameter(config.optimizer));
  if (c.refused.empty() && m.memory_bytes > 0 && c.memory_bytes > m.memory_bytes)
    c.refused = str("needs ", std::round(c.memory_bytes / 1e9 * 10) / 10,
                    " GB per rank for parameters, gradients and "
                    "optimizer state; the device has ",
                    std::round(m.memory_bytes / 1e9 * 10) / 10);
  return c;
}

std::string fmt(double v, int prec) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

}  // namespace

LinkModel auto_link_model(const TrainConfig& config) {
  LinkModel m;
  if (config.target_device.is_cuda()) {
    m.flops_per_s = 3969.0 * 3 * 2 * 4.11e9;  // dense ResNet-50, bf16, H100: images/s x training FLOPs
    m.memory_bytes = cuda::available() ? static_cast<double>(cuda::device_memory_bytes(0)) : 80e9;
  } else {  // MPI over shared memory inside a node (measured 2.5-5 GB/s, docs/SCALING.md), 10 GbE across
    m.flops_per_s = 20e9;
    m.nvlink_gbs = 2.5;
    m.nvlink_us = 10;
    m.net_gbs = 1.25;
    m.net_us = 30;
  }
  return m;
}

const LayoutChoice& AutoPlan::best() const {
  GPPF_CHECK(chosen >= 0, "distributed: auto: no layout can run");
  return choices[static_cast<std::size_t>(chosen)];
}

AutoPlan plan_auto_layout(const TrainConfig& config, Network& net, int world, int ranks_per_node,
                          const LinkModel& links) {
  GPPF_CHECK(world >= 1, "distributed: auto: world size ", world);
  LinkModel m = links;
  if (m.flops_per_s <= 0) m.flops_per_s = auto_link_model(config).flops_per_s;
  AutoPlan plan;
  const int legos = net.backbone().spec().num_legos;
  for (int replicas = 1; replicas <= world; ++replicas) {
    if (world % replicas != 0) continue;
    const int groups = world / replicas;
    for (int experts = 1; experts <= std::min(groups, legos); ++experts) {
      if (groups % experts != 0) continue;
      LayoutChoice c = price(config, net, layout_request(net, world, ranks_per_node, groups, experts, replicas), m);
      // Deterministic mode sums whole task batches in task order: task groups only.
      if (c.refused.empty() && config.deterministic && (replicas > 1 || experts > 1))
        c.refused = "deterministic: true sums whole task batches per rank";
      plan.choices.push_back(std::move(c));
    }
  }
  // Fastest first; ties: fewer replicas (no synchronised BN), then fewer expert shards.
  std::stable_sort(plan.choices.begin(), plan.choices.end(), [](const LayoutChoice& a, const LayoutChoice& b) {
    if (a.refused.empty() != b.refused.empty()) return a.refused.empty();
    if (a.step_ms != b.step_ms) return a.step_ms < b.step_ms;
    if (a.replicas != b.replicas) return a.replicas < b.replicas;
    return a.expert_parallel < b.expert_parallel;
  });
  if (!plan.choices.empty() && plan.choices.front().refused.empty()) plan.chosen = 0;
  GPPF_CHECK(plan.chosen == 0, "distributed: auto: no layout of ", world, " ranks can run this config: ",
             plan.choices.empty() ? std::string("none to try") : plan.choices.front().refused);
  return plan;
}

std::string AutoPlan::table(int world, int ranks_per_node, const LinkModel& links) const {
  std::string out =
      str("distributed: auto, ", world, " ranks (", ranks_per_node, " per node); predicted per step and rank at ",
          fmt(links.flops_per_s / 1e12, 3), " TFLOP/s, inside a node ", links.nvlink_gbs, " GB/s, across nodes ",
          links.net_gbs, " GB/s:\n");
  char line[256];
  std::snprintf(line, sizeof line, "  %-3s %8s %6s %7s %11s %9s %9s %9s %11s %9s  %s\n", "", "replicas", "groups",
                "experts", "compute ms", "a2a ms", "grad ms", "step ms", "a2a+grad MB", "memory MB", "");
  out += line;
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const LayoutChoice& c = choices[i];
    std::snprintf(line, sizeof line, "  %-3s %8d %6d %7d %11s %9s %9s %9s %11s %9s  %s\n",
                  static_cast<int>(i) == chosen ? "->" : "", c.replicas, c.task_groups, c.expert_parallel,
                  fmt(c.compute_ms, 2).c_str(), fmt(c.alltoall_ms, 2).c_str(), fmt(c.grad_ms, 2).c_str(),
                  fmt(c.step_ms, 2).c_str(), fmt((c.alltoall_bytes + c.grad_wire_bytes) / 1e6, 2).c_str(),
                  fmt(c.memory_bytes / 1e6, 0).c_str(), c.refused.empty() ? "" : ("cannot: " + c.refused).c_str());
    out += line;
  }
  return out;
}

}  // namespace gppf::train
