#pragma once
// `distributed: auto` (docs/SCALING.md, "Layouts chosen for you"): every layout the world size allows
// (replicas x task groups, expert-parallel blocks) is priced by a cost model, and the fastest one
// that fits the device memory is taken. The model, per step and rank:
//  - compute: the most loaded task group's forward+backward FLOPs (tasks placed longest-first, each
//    replica doing 1/replicas of a batch) at `flops_per_s`;
//  - all-to-all: the activations of legos held by another block member (estimate_traffic), over
//    NVLink inside a node and the network across nodes;
//  - gradient sync: what ring all-reduces send (estimate_traffic), over the slowest link the job
//    spans, and a latency per bucket;
//  - memory: parameters, gradients and optimizer state of what the rank holds (activations not
//    counted).
// All of it predicted; nothing here is measured.
#include <string>
#include <vector>

#include "src/train/config.hpp"

namespace gppf::train {

class Network;

struct LinkModel {
  double flops_per_s = 0;                  // 0: by the network's device (see auto_link_model)
  double nvlink_gbs = 450, nvlink_us = 2;  // per GPU, one direction (NVLink 4)
  double net_gbs = 50, net_us = 5;         // per GPU across nodes (one 400 Gb/s NDR port)
  double memory_bytes = 0;                 // per rank; 0: no limit
};
// The model for the config's device: a GPU at the dense ResNet-50 bf16 rate PyTorch reached on an H100
// (3969 img/s; about 98 TFLOP/s of training) with the memory of GPU 0 (80 GB where none is visible);
// the host at 20 GFLOP/s per rank, no memory limit.
LinkModel auto_link_model(const TrainConfig& config);

struct LayoutChoice {
  int replicas = 1, task_groups = 1, expert_parallel = 1;
  double compute_ms = 0, alltoall_ms = 0, grad_ms = 0, step_ms = 0;
  double alltoall_bytes = 0, grad_wire_bytes = 0;  // per rank and step
  double memory_bytes = 0;                         // per rank (the busiest one)
  std::string refused;                             // why it cannot run (empty: it can)
};

struct AutoPlan {
  std::vector<LayoutChoice> choices;  // every candidate, fastest runnable first
  int chosen = -1;                    // index into choices; -1: none runs
  const LayoutChoice& best() const;
  // The candidates as a table, the chosen one marked, with what the model assumed.
  std::string table(int world, int ranks_per_node, const LinkModel& links) const;
};

// The layouts of `world` ranks (`ranks_per_node` per node) for `net` (built from `config`, on any
// device: only its shapes and routes are read), priced and ordered. Throws a one-line error when none
// can run, naming the first reason.
AutoPlan plan_auto_layout(const TrainConfig& config, Network& net, int world, int ranks_per_node,
                          const LinkModel& links);

}  // namespace gppf::train
