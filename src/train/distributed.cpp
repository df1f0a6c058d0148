#include "src/train/distributed.hpp"

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <set>

#include "core/log.hpp"
#include "src/dist/mpi.hpp"
#include "src/train/auto_layout.hpp"
#include "src/train/network.hpp"

namespace gppf::train {
namespace {

std::string mb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f MB", bytes / 1e6);
  return buf;
}

}  // namespace

std::unique_ptr<Distributed> Distributed::create(const TrainConfig& config, Network& net, bool even_one_rank) {
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) return nullptr;
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (world == 1 && !even_one_rank) return nullptr;
  MPI_Comm node = MPI_COMM_NULL;
  GPPF_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  int per_node = 1;
  MPI_Comm_size(node, &per_node);
  MPI_Comm_free(&node);

  dist::LayoutRequest q = layout_request(net, world, per_node, config.distributed.task_groups,
                                         config.distributed.expert_parallel, config.distributed.replicas);
  q.rank = rank;
  if (config.distributed.auto_layout) {
    const LinkModel links = auto_link_model(config);
    const AutoPlan plan = plan_auto_layout(config, net, world, per_node, links);
    if (rank == 0) log::info(plan.table(world, per_node, links));
    q.task_groups = plan.best().task_groups;
    q.expert_parallel = plan.best().expert_parallel;
    q.replicas = plan.best().replicas;
  }
  dist::Layout layout = dist::plan_layout(q);
  GPPF_CHECK(layout.expert_parallel == 1 || config.precision == "fp32", config.config_path,
             ": key 'precision': ", config.precision, " with expert_parallel ", layout.expert_parallel,
             ": the expert exchange moves f32 activations; use precision: fp32");
  GPPF_CHECK(!config.deterministic || (layout.replicas == 1 && layout.expert_parallel == 1), config.config_path,
             ": key 'deterministic': needs whole task batches on one rank (replicas 1, expert_parallel 1), got "
             "replicas ",
             layout.replicas, " and expert_parallel ", layout.expert_parallel,
             "; a split batch or a lego on another rank would change the order of the sums");
  return std::unique_ptr<Distributed>(new Distributed(config, net, std::move(layout), per_node));
}

Distributed::Distributed(const TrainConfig& config, Network& net, dist::Layout layout, int ranks_per_node)
    : m_net(net), m_config(config), m_layout(std::move(layout)) {
  m_layout.ranks_per_node = ranks_per_node;
  for (const auto& s : net.tasks()) m_task_names.push_back(s.config.name);
  // All-to-alls should stay on the fast intra-node links: a block that spans nodes pays the network.
  if (m_layout.rank == 0 && m_layout.expert_parallel > 1) {
    const int per = std::max(1, ranks_per_node), E = m_layout.expert_parallel;
    bool spans = false;
    for (int r = 0; r < m_layout.world && !spans; r += E) spans = r / per != (r + E - 1) / per;
    if (spans)
      log::warn("distributed: expert-parallel blocks of ", E, " ranks span nodes of ", per,
                " ranks: their all-to-alls cross the network; prefer distributed.expert_parallel dividing the ranks "
                "per node (and task_groups a multiple of it)");
  }
  if (m_layout.rank == 0)
    for (int g = 0; g < m_layout.task_groups; ++g)
      if (std::find(m_layout.task_group.begin(), m_layout.task_group.end(), g) == m_layout.task_group.end())
        log::warn("distributed: task group ", g, " runs no task (", m_task_names.size(), " tasks on ",
                  m_layout.task_groups, " groups); it only serves the legos it holds");
  const double wd = config.distributed.watchdog_seconds;
  m_world = dist::Comm(MPI_COMM_WORLD, "world", wd);
  const int blocks = m_layout.task_groups / m_layout.expert_parallel;
  m_block = dist::Comm::split(m_world, m_layout.replica * blocks + m_layout.block(), m_layout.group,
                              str("expert-parallel block ", m_layout.block(), " of replica ", m_layout.replica));
  m_group =
      dist::Comm::split(m_world, m_layout.group, m_layout.replica, str("replicas of task group ", m_layout.group));
  m_expert = dist::Comm::split(m_world, m_layout.expert_index(), m_layout.rank,
                               str("holders of lego shard ", m_layout.expert_index()));
  nn::Backbone& backbone = net.backbone();
  // Activations move over NCCL on GPUs (buffers on the GPU), over MPI on the host.
  m_exchange = std::make_unique<dist::LegoExchange>(
      m_block, m_layout, [&backbone](const Shape& x) { return backbone.layer_input_shapes(x); },
      net.device().is_cuda() ? dist::make_nccl_communicator(m_block, net.device().index, m_block.name() + " (NCCL)")
                             : nullptr);

  std::vector<nn::Parameter*> replicated, heads, legos;
  for (nn::Parameter* p : net.parameters()) {
    const Owner o = classify(p->owner);
    switch (o.kind) {
      case Kind::Replicated: replicated.push_back(p); break;
      case Kind::Head:
        if (runs(o.task)) heads.push_back(p);
        break;
      case Kind::Lego:
        if (m_layout.holds_lego(o.lego))
          legos.push_back(p);
        else
          p->release();  // its holders run it for this process's tasks (the exchange)
        break;
    }
  }
  for (auto* p : replicated) {
    m_held.push_back(p);
    m_primary.push_back(m_world.rank() == 0);
  }
  for (auto* p : heads) {
    m_held.push_back(p);
    m_primary.push_back(m_group.rank() == 0);
  }
  for (auto* p : legos) {
    m_held.push_back(p);
    m_primary.push_back(m_expert.rank() == 0);
  }
  const auto layers = net.backbone().routed_layers();
  for (std::size_t l = 0; l < layers.size(); ++l) m_layer_index[layers[l]->name()] = static_cast<int>(l);
  std::vector<dist::SyncGroup> groups;
  if (net.device().is_cuda()) {
    // Gradient buckets on the GPU, summed by NCCL (one communicator per group, from an id the MPI
    // communicator's rank 0 broadcasts).
    const int d = net.device().index;
    m_world_sums = dist::make_nccl_communicator(m_world, d, "world (NCCL)");
    m_group_sums = dist::make_nccl_communicator(m_group, d, m_group.name() + " (NCCL)");
    m_expert_sums = dist::make_nccl_communicator(m_expert, d, m_expert.name() + " (NCCL)");
  } else {
    m_world_sums = dist::make_mpi_communicator_on(m_world);
    m_group_sums = dist::make_mpi_communicator_on(m_group);
    m_expert_sums = dist::make_mpi_communicator_on(m_expert);
  }
  groups.push_back({"replicated parameters", m_world_sums.get(), replicated, {}});
  groups.push_back({"task heads", m_group_sums.get(), heads, {}});
  groups.push_back({"legos", m_expert_sums.get(), legos, {}});
  for (auto& g : groups) {
    for (nn::Parameter* p : g.params) g.segments.push_back(segment_of(*p));
    m_group_params.push_back(g.params);
  }
  m_sync = std::make_unique<dist::GradSync>(std::move(groups), static_cast<int>(layers.size()) + 2,
                                            config.distributed.bucket_mb);

  if (config.deterministic) m_task_grads = std::make_unique<TaskGradients>(net.parameters());
  const std::vector<nn::Parameter*> all = net.parameters();
  for (nn::Parameter* p : m_held)
    m_global_index.push_back(static_cast<std::size_t>(std::find(all.begin(), all.end(), p) - all.begin()));

  NetworkDist nd;
  nd.exchange = m_exchange.get();
  nd.bn_sync = &m_group;
  nd.replicas = m_layout.replicas;
  net.set_distributed(nd);
}

Distributed::~Distributed() { m_net.set_distributed({}); }

Distributed::Owner Distributed::classify(const nn::Owner& tag) const {
  Owner o;
  if (tag.kind == nn::Owner::Kind::Head) {
    o.kind = Kind::Head;
    o.task = tag.task;
  } else if (tag.kind == nn::Owner::Kind::Lego) {
    o.kind = Kind::Lego;
    o.lego = tag.lego;
  }
  return o;
}

int Distributed::segment_of(const nn::Parameter& p) const {
  const int L = static_cast<int>(m_layer_index.size());
  if (p.owner.kind == nn::Owner::Kind::Head) return 0;
  return p.owner.layer >= 0 ? L - p.owner.layer : L + 1;
}

void Distributed::begin_step(const std::vector<int>& active, std::int64_t step) {
  // Which routed legos of each layer some active task runs (routing is the same on every rank).
  auto layers = m_net.backbone().routed_layers();
  std::vector<std::vector<char>> used(layers.size());
  for (std::size_t l = 0; l < layers.size(); ++l) {
    used[l].assign(static_cast<std::size_t>(m_config.backbone.num_legos), 0);
    for (int t : active)
      for (int i : layers[l]->route(t, step, true).routed)
        if (i >= 0) used[l][static_cast<std::size_t>(i)] = 1;
  }
  std::vector<char> is_active(m_task_names.size(), 0);
  for (int t : active) is_active[static_cast<std::size_t>(t)] = 1;
  std::vector<std::vector<char>> touched;
  for (const auto& params : m_group_params) {
    std::vector<char> flags;
    for (nn::Parameter* p : params) {
      const nn::Owner& o = p->owner;
      bool t = !active.empty();
      if (o.kind == nn::Owner::Kind::Head || o.kind == nn::Owner::Kind::Router) {
        t = is_active[static_cast<std::size_t>(o.task)];
      } else if (o.kind == nn::Owner::Kind::Lego) {
        t = used[static_cast<std::size_t>(o.layer)][static_cast<std::size_t>(o.lego)];
      }
      flags.push_back(t ? 1 : 0);
    }
    touched.push_back(std::move(flags));
  }
  m_sync->begin(std::move(touched));
}

void Distributed::run_train_rounds(Network& net, std::int64_t step, const std::vector<int>& active,
                                   const std::function<void(int)>& run_task) {
  // Rounds of the block: the most tasks any member runs in this step (the same number on every member).
  const int first = m_layout.block() * m_layout.expert_parallel;
  int rounds = 0;
  std::vector<int> mine;
  for (int g = first; g < first + m_layout.expert_parallel; ++g) {
    int n = 0;
    for (int t : active)
      if (m_layout.task_group[static_cast<std::size_t>(t)] == g) {
        ++n;
        if (g == m_layout.group) mine.push_back(t);
      }
    rounds = std::max(rounds, n);
  }
  const int L = static_cast<int>(m_layer_index.size());
  for (int k = 0; k < rounds; ++k) {
    if (k == rounds - 1 && !deterministic())
      net.set_grads_final_hook([this, L](int layer) { m_sync->ready(layer == L ? 0 : layer < 0 ? L + 1 : L - layer); });
    if (k < static_cast<int>(mine.size())) {
      run_task(mine[static_cast<std::size_t>(k)]);
    } else {
      GPPF_CHECK(net.serve_round(step), "distributed: rank ", rank(), " expected round ", k, " of ", rounds,
                 " in its block at step ", step, ", but no member had work");
    }
  }
  net.set_grads_final_hook(nullptr);
}

std::vector<nn::Parameter*> Distributed::held_parameters() const { return m_held; }

void Distributed::fold_task_gradients(const std::vector<int>& active) {
  m_task_grads->fold(
      active,
      [this](int task, bool root, std::vector<float>& mask, std::vector<float>& data) {
        const int from = m_layout.world_rank(0, m_layout.task_group[static_cast<std::size_t>(task)]);
        GPPF_CHECK(root == (from == rank()), "deterministic mode: task ", task, " ran on rank ", rank(),
                   ", its layout places it on rank ", from);
        m_world.broadcast(mask.data(), static_cast<std::int64_t>(mask.size()), from, "a task's gradient mask");
        std::int64_t n = 0;
        const std::vector<nn::Parameter*> all = m_net.parameters();
        for (std::size_t i = 0; i < mask.size(); ++i)
          if (mask[i] != 0.0f) n += all[i]->numel();
        data.resize(static_cast<std::size_t>(n));
        m_world.broadcast(data.data(), n, from, "a task's gradients");
      },
      [this](const nn::Parameter& p) { return classify(p.owner).kind != Kind::Head; });
}

optim::Optimizer::NormReducer Distributed::norm_reducer() {
  if (deterministic())
    // Each touched parameter's sum of squares from the one rank counting it, zeros from the others
    // (exact), then added in Network::parameters() order: one process's order.
    return [this](const std::vector<std::size_t>& touched, const std::vector<double>& sums) {
      std::vector<double> global(m_net.parameters().size(), 0.0);
      for (std::size_t k = 0; k < touched.size(); ++k)
        if (m_primary[touched[k]]) global[m_global_index[touched[k]]] = sums[2 * k];
      m_world.allreduce_sum(global.data(), static_cast<std::int64_t>(global.size()), "the global gradient norm");
      double total = 0.0;
      for (double v : global) total += v;
      return total;
    };
  return [this](const std::vector<std::size_t>& touched, const std::vector<double>& sums) {
    double local = 0;
    for (std::size_t k = 0; k < touched.size(); ++k)
      if (m_primary[touched[k]]) local += sums[2 * k];
    m_world.allreduce_sum(&local, 1, "the global gradient norm");
    return local;
  };
}

void Distributed::run_rounds(Network& net, std::int64_t step, const std::function<bool()>& next) {
  while (next()) {
  }
  while (net.serve_round(step)) {
  }
}

std::vector<int> Distributed::agree_max(std::vector<int> values, const std::string& what) {
  m_world.allreduce_max(values.data(), static_cast<std::int64_t>(values.size()), what);
  return values;
}

std::vector<std::string> Distributed::gather(const std::string& mine, const std::string& what) {
  return m_world.allgather(mine, what);
}

bool Distributed::writes_parameter(const nn::Parameter& p) const {
  const Owner o = classify(p.owner);
  switch (o.kind) {
    case Kind::Replicated: return rank() == 0;
    case Kind::Head: return rank() == m_layout.world_rank(0, m_layout.task_group[static_cast<std::size_t>(o.task)]);
    case Kind::Lego: return rank() == m_layout.world_rank(0, m_layout.lego_owner[static_cast<std::size_t>(o.lego)]);
  }
  return false;
}

bool Distributed::writes_buffer(const nn::Buffer& b) const {
  const Owner o = classify(b.owner);
  // A head's buffers (kept per task index, but only its task runs it) are its task group's.
  if (o.kind == Kind::Head)
    return rank() == m_layout.world_rank(0, m_layout.task_group[static_cast<std::size_t>(o.task)]);
  const int t = b.task;
  if (t < 0 || t >= static_cast<int>(m_task_names.size())) return rank() == 0;
  const int g = m_layout.task_group[static_cast<std::size_t>(t)];
  if (o.kind != Kind::Lego) return rank() == m_layout.world_rank(0, g);
  const int lego = o.lego;
  // The task's statistics of a lego are kept by the lego's holder in the task's block.
  const int holder =
      m_layout.block_of_group(g) * m_layout.expert_parallel + m_layout.lego_owner[static_cast<std::size_t>(lego)];
  return rank() == m_layout.world_rank(0, holder);
}

dist::LayoutRequest layout_request(Network& net, int world, int ranks_per_node, int task_groups, int expert_parallel,
                                   int replicas) {
  dist::LayoutRequest q;
  q.world = world;
  q.ranks_per_node = ranks_per_node;
  q.task_groups = task_groups;
  q.expert_parallel = expert_parallel;
  q.replicas = replicas;
  for (std::size_t t = 0; t < net.tasks().size(); ++t) {
    const TaskSpec& s = net.tasks()[t];
    q.task_names.push_back(s.config.name);
    q.batch_sizes.push_back(s.config.batch_size);
    q.step_flops.push_back(6.0 * static_cast<double>(net.path_macs(static_cast<int>(t))) * s.config.batch_size);
  }
  q.num_layers = static_cast<int>(net.backbone().routed_layers().size());
  q.num_legos = net.backbone().spec().num_legos;
  return q;
}

TrafficEstimate estimate_traffic(const dist::Layout& L, Network& net, double bytes_per_value) {
  TrafficEstimate e;
  const int R = L.replicas, E = L.expert_parallel, blocks = L.task_groups / E;
  auto node_of = [&](int world_rank) { return world_rank / std::max(1, L.ranks_per_node); };
  auto layers = net.backbone().lego_layers();
  const auto routed = net.backbone().routed_layers();
  const std::int64_t after_warmup = std::numeric_limits<std::int64_t>::max();
  // Routed legos in use this step (by any task), per layer name.
  std::map<std::string, std::set<int>> used;
  for (std::size_t t = 0; t < net.tasks().size(); ++t)
    for (const nn::RoutedLayer* l : routed)
      for (int i : l->route(static_cast<int>(t), after_warmup, false).routed)
        if (i >= 0) used[l->name()].insert(i);
  // Activations exchanged by expert parallelism: each routed layer's input out and its output back
  // (gppf-vit's MLP legos: the normalised tokens, the same shape both ways).
  for (std::size_t t = 0; t < net.tasks().size(); ++t) {
    const TaskSpec& s = net.tasks()[t];
    const int g = L.task_group[t];
    const Shape x{std::max(1, s.config.batch_size / R), s.height, s.width, s.channels};
    const auto inputs = net.backbone().layer_input_shapes(x);
    for (std::size_t l = 0; l < routed.size(); ++l) {
      const nn::Route r = routed[l]->route(static_cast<int>(t), after_warmup, false);
      std::set<int> owners;
      for (int i : r.routed)
        if (i >= 0 && L.lego_owner[static_cast<std::size_t>(i)] != g % E)
          owners.insert(L.lego_owner[static_cast<std::size_t>(i)]);
      const double in = static_cast<double>(shape_numel(inputs[l])) * bytes_per_value;
      const Shape out_shape = layers.empty() ? inputs[l] : layers[l]->output_shape(inputs[l]);
      const double out = static_cast<double>(shape_numel(out_shape)) * bytes_per_value;
      for (int o : owners)
        for (int r2 = 0; r2 < R; ++r2) {
          const double bytes = 2 * (in + out);  // forward: input out, output back; backward: the same sizes
          e.alltoall_bytes += bytes;
          const int a = L.world_rank(r2, g), b = L.world_rank(r2, L.block_of_group(g) * E + o);
          if (node_of(a) != node_of(b)) e.alltoall_internode += bytes;
        }
    }
  }
  auto ring = [](double payload, int n) { return n > 1 ? 2.0 * (n - 1) / n * payload : 0.0; };
  const int W = L.world;
  for (nn::Parameter* p : net.parameters()) {
    const double bytes = static_cast<double>(p->numel()) * 4;
    e.naive_payload_bytes += W * bytes;
    e.naive_wire_bytes += W * ring(bytes, W);
    int n = 0;
    bool is_lego = false;
    if (p->owner.kind == nn::Owner::Kind::Head) {
      n = R;
    } else if (p->owner.kind == nn::Owner::Kind::Lego) {
      is_lego = true;
      n = used[routed[static_cast<std::size_t>(p->owner.layer)]->name()].count(p->owner.lego) ? R * blocks : 0;
    } else {
      n = W;
    }
    if (n > 1) {
      e.grad_payload_bytes += n * bytes;
      e.grad_wire_bytes += n * ring(bytes, n);
      (is_lego ? e.lego_payload_bytes : e.shared_payload_bytes) += n * bytes;
    }
  }
  return e;
}

TrafficEstimate Distributed::estimate(const Network& net) const {
  return estimate_traffic(m_layout, const_cast<Network&>(net), 4);
}

std::string Distributed::describe(const Network& net) const {
  const dist::Layout& L = m_layout;
  std::string s =
      str("distributed: ", L.world, " ranks (", L.ranks_per_node, " per node) = ", L.replicas, " replicas x ",
          L.task_groups, " task groups; legos sharded over blocks of ", L.expert_parallel, " groups\n");
  for (int g = 0; g < L.task_groups; ++g) {
    s += str("  task group ", g, " (world ranks");
    for (int r = 0; r < L.replicas; ++r) s += str(" ", L.world_rank(r, g));
    s += "): tasks";
    bool any = false;
    for (std::size_t t = 0; t < L.task_group.size(); ++t)
      if (L.task_group[t] == g) {
        s += " " + m_task_names[t];
        any = true;
      }
    if (!any) s += " (none)";
    s += "; routed legos";
    for (std::size_t i = 0; i < L.lego_owner.size(); ++i)
      if (L.lego_owner[i] == g % L.expert_parallel) s += str(" ", i);
    s += "\n";
  }
  const TrafficEstimate e = estimate(net);
  s += str("  predicted bytes per step (current routing): all-to-all ", mb(e.alltoall_bytes), " (",
           mb(e.alltoall_internode), " between nodes); gradient all-reduce payload ", mb(e.grad_payload_bytes),
           " (ring traffic ", mb(e.grad_wire_bytes), ") vs ", mb(e.naive_payload_bytes), " (", mb(e.naive_wire_bytes),
           ") all-reducing every parameter on every rank");
  return s;
}

dist::CommStats Distributed::stats() const {
  dist::CommStats s;
  for (const dist::Comm* c : {&m_world, &m_block, &m_group, &m_expert}) {
    const dist::CommStats& x = const_cast<dist::Comm*>(c)->stats();
    s.alltoall_bytes += x.alltoall_bytes;
    s.allreduce_bytes += x.allreduce_bytes;
    s.allreduce_wire_bytes += x.allreduce_wire_bytes;
    s.broadcast_bytes += x.broadcast_bytes;
    s.collectives += x.collectives;
    s.seconds += x.seconds;
  }
  return s;
}

}  // namespace gppf::train
