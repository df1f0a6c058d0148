#pragma once
// Explicit forward/backward modules (Caffe/LBANN style, DESIGN.md "gradients"). A module keeps what
// its backward needs from the last forward; SIMT runs each task's path forward then backward before
// the next task's forward, so one saved context per module is enough. Parameter gradients follow
// Parameter::take_grad_mode(): the first task to touch a parameter in a step overwrites, the others
// accumulate.
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.hpp"
#include "src/nn/parameter.hpp"

namespace gppf::nn {

// Sums synchronised batch norm's statistics over the replicas that share a task's micro-batch
// (src/train/network.cpp adapts the data-parallel communicator; nn knows no MPI).
class StatSync {
 public:
  virtual ~StatSync() = default;
  virtual void allreduce_sum(double* data, std::int64_t n, const std::string& what) = 0;
};

// Several tasks' samples batched along dim 0 (the task-batched step, src/nn/lego_strategy_batched.cpp):
// one task's `count` consecutive samples.
struct TaskSegment {
  int task = 0;
  std::int64_t count = 0;
};

// What a forward pass runs for: which task (routing, BN statistics), training or inference, and where.
struct RunState {
  int task = 0;
  // Non-empty: the batch holds these tasks' samples in this order, and `task` is -1 (a layer that
  // cannot tell tasks apart then fails loudly instead of using one task's state for all).
  std::vector<TaskSegment> segments;
  bool training = true;
  Device device = Device::host();
  Stream stream = Stream::host();
  // When >= 0, replaces every BN layer's momentum for this pass (BN recalibration uses 1/(i+1) to
  // average the statistics of i+1 batches exactly).
  float bn_momentum = -1.0f;
  // Data-parallel runs: where training BN statistics are summed (null: local batch statistics).
  StatSync* bn_sync = nullptr;
  // Distributed runs, in a step's last round: called with a lego layer's index once its backward is
  // done (-1 after the stem), when the gradients of its parameters are final and can be all-reduced.
  const std::function<void(int)>* grads_final = nullptr;
};

using NamedTensor = std::pair<std::string, Tensor*>;

// Non-trainable state a checkpoint keeps, tagged where it is made as parameters are: `owner` is that
// of the module keeping it (a BN layer's: its gamma's tag), `task` the task whose batches a per-task
// statistic averages (-1: not per task).
struct Buffer {
  std::string name;
  Tensor* tensor = nullptr;
  Owner owner{};
  int task = -1;
};
// The (name, tensor) pairs checkpoints read and write.
std::vector<NamedTensor> named(const std::vector<Buffer>& buffers);

class Module {
 public:
  virtual ~Module() = default;
  // Trainable parameters, in a fixed order (the checkpoint and the optimizer rely on it).
  virtual void collect_parameters(std::vector<Parameter*>& out) = 0;
  // Non-trainable state that a checkpoint must keep (per-task BN running statistics, ...).
  virtual void collect_buffers(std::vector<Buffer>& out) { (void)out; }
};

// Seeded initialisers (He-normal for conv/linear weights, as torchvision's ResNet).
Tensor he_normal(const Shape& shape, std::int64_t fan_in, std::mt19937_64& rng, float gain = 1.0f);
Tensor constant(const Shape& shape, float value);

// A new f32 Parameter with its gradient buffer.
Parameter make_parameter(std::string name, Tensor value, bool decay);
// Tags every parameter of `m` (Parameter::owner).
void set_owner(Module& m, const Owner& owner);

}  // namespace gppf::nn
