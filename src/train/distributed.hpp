#pragma once
// A training run over several MPI ranks (docs/SCALING.md): the layout and its communicators, the
// expert-parallel exchange, gradient synchronisation, the lockstep of rounds, and who writes what.
// The MpiExecutor (executor_mpi.hpp) wraps one when the job has more than one rank; with one rank
// the trainer runs a LocalExecutor.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/loader.hpp"
#include "src/dist/comm.hpp"
#include "src/dist/exchange.hpp"
#include "src/dist/grad_sync.hpp"
#include "src/dist/layout.hpp"
#include "src/nn/module.hpp"
#include "src/optim/optimizer.hpp"
#include "src/train/config.hpp"
#include "src/train/task_gradients.hpp"

namespace gppf::train {

class Network;

// The predicted traffic of one training step of a layout (printed by the planner, `gppf bench comm`).
struct TrafficEstimate {
  double alltoall_bytes = 0;       // activations and their gradients, all ranks together
  double alltoall_internode = 0;   // the part that crosses nodes
  double grad_payload_bytes = 0;   // gradient bytes entering all-reduces, all ranks together
  double grad_wire_bytes = 0;      // what ring all-reduces send for them, all ranks together
  double naive_payload_bytes = 0;  // every parameter all-reduced on every rank
  double naive_wire_bytes = 0;
  double lego_payload_bytes = 0, shared_payload_bytes = 0;  // grad_payload_bytes split by kind
};

// The traffic of one training step of `layout` for this network at its current routing (top-k after
// warm-up), activations of `bytes_per_value` (4: f32 on the host, 2: bf16 on GPUs).
TrafficEstimate estimate_traffic(const dist::Layout& layout, Network& net, double bytes_per_value);
// The planner's request for `net`'s tasks (names, batches, forward+backward FLOPs of each path) and
// lego layers, for a layout of `world` ranks; rank 0.
dist::LayoutRequest layout_request(Network& net, int world, int ranks_per_node, int task_groups, int expert_parallel,
                                   int replicas);

class Distributed {
 public:
  // Null when MPI is not initialised or the job has one rank (even_one_rank: a layout of one rank
  // then, for the tests that compare it with one process).
  static std::unique_ptr<Distributed> create(const TrainConfig& config, Network& net, bool even_one_rank = false);
  ~Distributed();

  const dist::Layout& layout() const { return m_layout; }
  int rank() const { return m_layout.rank; }
  int world() const { return m_layout.world; }
  bool root() const { return m_layout.rank == 0; }
  // This rank runs task t (some replica of it).
  bool runs(int task) const { return m_layout.runs_task(task); }
  // This rank reports task t's numbers (the replica-0 rank of its task group).
  bool reports(int task) const { return runs(task) && m_layout.replica == 0; }

  // What this rank's optimizer updates: replicated parameters, its tasks' heads, its legos.
  std::vector<nn::Parameter*> held_parameters() const;
  optim::Optimizer::NormReducer norm_reducer();
  // A training step: begin_step() plans the gradient all-reduces from the active tasks and their
  // routing; run_train_rounds() runs this rank's tasks (`run_task`) and serves its block in lockstep,
  // starting the all-reduces of every segment during the last round's backward pass; finish_step()
  // waits for them.
  void begin_step(const std::vector<int>& active, std::int64_t step);
  void run_train_rounds(Network& net, std::int64_t step, const std::vector<int>& active,
                        const std::function<void(int)>& run_task);
  void finish_step() { m_sync->finish(); }
  // Deterministic mode (config `deterministic`, task_gradients.hpp): run_train_rounds() then runs the
  // passes alone (no all-reduces), the caller takes each task's gradients after its pass, and
  // fold_task_gradients() sums them in task order on every rank (a broadcast per task from its rank).
  bool deterministic() const { return m_task_grads != nullptr; }
  TaskGradients& task_gradients() { return *m_task_grads; }
  void fold_task_gradients(const std::vector<int>& active);

  // Lockstep: calls `next` until it returns false (it runs one of this rank's items, each one a
  // Network call), then serves the other members of the block until none has work left.
  void run_rounds(Network& net, std::int64_t step, const std::function<bool()>& next);

  // World-wide helpers (every rank calls them at the same point).
  // Element-wise maximum over the ranks, in one collective.
  std::vector<int> agree_max(std::vector<int> values, const std::string& what);
  int agree_max(int value, const std::string& what) { return agree_max(std::vector<int>{value}, what)[0]; }
  std::vector<std::string> gather(const std::string& mine, const std::string& what);
  void barrier(const std::string& what) { m_world.barrier(what); }
  dist::Comm& world_comm() { return m_world; }

  // Checkpoints: the names this rank writes (each tensor by exactly one rank).
  bool writes_parameter(const nn::Parameter& p) const;
  bool writes_buffer(const nn::Buffer& b) const;

  // The plan with its predicted traffic, as text (rank 0 prints it at start).
  std::string describe(const Network& net) const;
  TrafficEstimate estimate(const Network& net) const;
  // Bytes this rank moved so far, by kind.
  dist::CommStats stats() const;

 private:
  Distributed(const TrainConfig& config, Network& net, dist::Layout layout, int ranks_per_node);
  enum class Kind { Replicated, Head, Lego };
  struct Owner {
    Kind kind = Kind::Replicated;
    int task = -1;  // Head
    int lego = -1;  // Lego
  };
  // Parameters and buffers by their owner tag (nn::Owner, set where they are made).
  Owner classify(const nn::Owner& tag) const;
  // Backward-order segment of a parameter: 0 heads, then the lego layers from the last, then the stem.
  int segment_of(const nn::Parameter& p) const;

  Network& m_net;
  TrainConfig m_config;
  dist::Layout m_layout;
  std::vector<std::string> m_task_names;
  dist::Comm m_world, m_block, m_group, m_expert;
  // The gradient all-reduces' view of m_world, m_group and m_expert (src/dist/communicator.hpp).
  std::unique_ptr<dist::Communicator> m_world_sums, m_group_sums, m_expert_sums;
  std::unique_ptr<dist::LegoExchange> m_exchange;
  std::unique_ptr<dist::GradSync> m_sync;
  std::unique_ptr<TaskGradients> m_task_grads;  // deterministic mode only
  std::vector<std::size_t> m_global_index;      // per held parameter: its place in Network::parameters()
  std::vector<nn::Parameter*> m_held;
  std::vector<char> m_primary;  // per held parameter: counted in the global gradient norm here
  std::vector<std::vector<nn::Parameter*>> m_group_params;  // the sync groups' parameters
  std::map<std::string, int> m_layer_index;                 // lego layer name -> index
};

}  // namespace gppf::train
