#pragma once
// Deterministic mode (config `deterministic: true`, docs/SCALING.md "Deterministic mode"): a step's
// gradients are the same fixed-order sums on every layout. Each task's pass writes its own
// contributions (take() moves the touched gradients aside, so the next pass overwrites instead of
// adding); at the end of the step every parameter's gradient is its tasks' contributions added in
// ascending task order (a copy of the first, then one addition each), by the same code on every
// rank, from contributions that reach the other ranks unchanged (a broadcast from the rank that ran
// the task). With whole task batches on one rank (replicas 1, no expert shards) a contribution is the
// same computation on the same values as in one process, so 1, 2 and 4 ranks end every step with the
// same bits. Without the mode, a process accumulates in its pass order and ranks add their partial
// sums in the all-reduce's order: equal to rounding only.
#include <functional>
#include <map>
#include <vector>

#include "src/nn/parameter.hpp"

namespace gppf::train {

class TaskGradients {
 public:
  // The parameters in a fixed order (Network::parameters()), the same on every rank.
  explicit TaskGradients(std::vector<nn::Parameter*> params);

  // After task's pass on this process: its touched gradients move aside (buffers reused from step
  // to step) and every parameter is untouched again.
  void take(int task);

  // How a task's contributions reach a rank that did not run it: called for every active task in
  // ascending order on every rank; `root` is whether this rank ran it, `data` its n floats (filled by
  // the root, to be filled on the others), `mask` one flag per parameter (the same).
  using Share = std::function<void(int task, bool root, std::vector<float>& mask, std::vector<float>& data)>;
  // `exchanged(p)`: whether p's contributions go to the other ranks (parameters only the task's own
  // ranks hold, e.g. its head, stay). Null `share`: one process.
  void fold(const std::vector<int>& active, const Share& share,
            const std::function<bool(const nn::Parameter&)>& exchanged);

  // Floats of contributions that went through `share` in the last fold (this rank's sends).
  std::int64_t last_shared() const { return m_last_shared; }

 private:
  struct Taken {
    std::vector<Tensor> grads;  // per parameter; defined when this task touched it
    std::vector<char> touched;
  };
  std::vector<nn::Parameter*> m_params;
  std::map<int, Taken> m_taken;  // by task: buffers kept from step to step
  std::vector<int> m_ran;        // the tasks this process ran in this step
  std::int64_t m_last_shared = 0;
};

}  // namespace gppf::train
