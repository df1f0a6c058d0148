#include "src/train/bench_comm.hpp"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "src/dist/layout.hpp"
#include "src/train/distributed.hpp"
#include "src/train/network.hpp"

namespace gppf::train {
namespace {

using json = nlohmann::json;

dist::Layout layout_of(Network& net, int world, int groups, int experts, int replicas, int per_node) {
  dist::LayoutRequest q;
  q.world = world;
  q.ranks_per_node = per_node;
  q.task_groups = groups;
  q.expert_parallel = experts;
  q.replicas = replicas;
  for (std::size_t t = 0; t < net.tasks().size(); ++t) {
    const TaskSpec& s = net.tasks()[t];
    q.task_names.push_back(s.config.name);
    q.batch_sizes.push_back(s.config.batch_size * replicas);  // weak scaling: every replica keeps its share
    q.step_flops.push_back(static_cast<double>(net.path_macs(static_cast<int>(t))) * s.config.batch_size);
  }
  q.num_layers = static_cast<int>(net.backbone().lego_layers().size());
  q.num_legos = net.backbone().spec().num_legos;
  return dist::plan_layout(q);
}

struct Sizes {
  double replicated = 0, lego_per_shard = 0, head_max = 0;  // bytes of f32 gradients
};

// Gradient bytes a rank holds, by kind, when legos are sharded `experts` ways.
Sizes gradient_sizes(Network& net, int experts) {
  Sizes s;
  std::map<int, double> heads;
  for (nn::Parameter* p : net.parameters()) {
    const double b = static_cast<double>(p->numel()) * 4;
    if (p->owner.kind == nn::Owner::Kind::Head)
      heads[p->owner.task] += b;
    else if (p->owner.kind == nn::Owner::Kind::Lego)
      s.lego_per_shard += b / experts;
    else
      s.replicated += b;
  }
  for (const auto& [k, v] : heads) s.head_max = std::max(s.head_max, v);
  return s;
}

// Ring all-reduce time of `bytes` over n members on one link kind.
double ring_s(double bytes, int n, double gbs, double us) {
  if (n <= 1) return 0;
  return 2.0 * (n - 1) / n * bytes / (gbs * 1e9) + 2.0 * (n - 1) * us * 1e-6;
}

std::string mb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", bytes / 1e6);
  return buf;
}

std::string fixed(double v, int prec) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

// MPI bandwidth of this host's ranks: all-to-all (per-peer message sizes) and all-reduce.
json measure_mpi() {
  int initialised = 0, world = 1;
  MPI_Initialized(&initialised);
  if (!initialised) return json();
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world < 2) return json();
  json out = json::array();
  for (const std::size_t per_peer : {std::size_t{64} << 10, std::size_t{1} << 20, std::size_t{4} << 20}) {
    const std::size_t n = per_peer / sizeof(float);
    std::vector<float> send(n * static_cast<std::size_t>(world), 1.0f), recv(send.size());
    const int reps = 10;
    MPI_Barrier(MPI_COMM_WORLD);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i)
      MPI_Alltoall(send.data(), static_cast<int>(n), MPI_FLOAT, recv.data(), static_cast<int>(n), MPI_FLOAT,
                   MPI_COMM_WORLD);
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    out.push_back({{"op", "alltoall"},
                   {"bytes_per_peer", per_peer},
                   {"seconds", t},
                   {"gbs_per_rank", static_cast<double>(per_peer) * (world - 1) / t / 1e9}});
  }
  for (const std::size_t bytes : {std::size_t{1} << 20, std::size_t{16} << 20}) {
    std::vector<float> buf(bytes / sizeof(float), 1.0f);
    const int reps = 10;
    MPI_Barrier(MPI_COMM_WORLD);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i)
      MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(buf.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    out.push_back({{"op", "allreduce"},
                   {"bytes", bytes},
                   {"seconds", t},
                   {"bus_gbs", 2.0 * (world - 1) / world * static_cast<double>(bytes) / t / 1e9}});
  }
  return out;
}

// gppf-r50 with `tasks` classification tasks of 224x224x3 images, 1000 classes, `batch` images each.
std::unique_ptr<Network> r50_network(const TrainConfig& base, int tasks, int batch, int legos, int top_k) {
  TrainConfig c = base;
  c.backbone = nn::BackboneSpec::r50();
  c.backbone.num_legos = legos;
  c.backbone.top_k = top_k;
  c.backbone.routing = base.backbone.routing;
  c.tasks.clear();
  std::vector<TaskSpec> specs;
  for (int t = 0; t < tasks; ++t) {
    TaskSpec s;
    s.config.name = str("task", t);
    s.config.type = io::TaskType::Classification;
    s.config.batch_size = batch;
    s.num_classes = 1000;
    s.height = s.width = 224;
    s.channels = 3;
    c.tasks.push_back(s.config);
    specs.push_back(s);
  }
  return std::make_unique<Network>(c, specs);
}

// Bytes per step of this config's network, for several layouts (f32 activations, the host path).
json layout_table(const TrainConfig& config, Network& net, int per_node) {
  json layouts = json::array();
  for (int w : {2, 4, 8}) {
    struct L {
      const char* name;
      int groups, experts, replicas;
    };
    std::vector<L> ls = {{"expert+task parallel", w, w, 1}, {"task parallel", w, 1, 1}, {"data parallel", 1, 1, w}};
    if (w >= 4) ls.push_back({"hybrid", w / 2, w / 2, 2});
    for (const L& l : ls) {
      if (l.experts > config.backbone.num_legos) continue;
      const dist::Layout layout = layout_of(net, w, l.groups, l.experts, l.replicas, per_node);
      const TrafficEstimate e = estimate_traffic(layout, net, 4);
      layouts.push_back({{"world", w},
                         {"layout", l.name},
                         {"task_groups", l.groups},
                         {"expert_parallel", l.experts},
                         {"replicas", l.replicas},
                         {"alltoall_bytes", e.alltoall_bytes},
                         {"grad_payload_bytes", e.grad_payload_bytes},
                         {"naive_payload_bytes", e.naive_payload_bytes},
                         {"naive_over_ours", e.naive_payload_bytes / std::max(1.0, e.grad_payload_bytes)}});
    }
  }
  return layouts;
}

// gppf-r50 at 8, 64, 512 GPUs: one task per GPU of a node (8 tasks), 8 legos per layer (top-2), the
// legos of a layer sharded over blocks of E GPUs of the node (E = 1: every GPU holds every lego, no
// activation moves), nodes as replicas. Weak-scaling efficiency as Horovod reports it: throughput per
// GPU against one GPU that does not communicate.
json r50_model(const TrainConfig& config, const CommBenchOptions& o) {
  const int per_node = o.gpus_per_node;
  const int legos = std::max(per_node, config.backbone.num_legos), top_k = 2;
  auto r50 = r50_network(config, per_node, o.images_per_gpu, legos, top_k);
  const int layers = static_cast<int>(r50->backbone().lego_layers().size());
  json scaling = json::array(), per_e = json::array();
  for (int experts = 1; experts <= per_node; experts *= 2) {
    const dist::Layout node = layout_of(*r50, per_node, per_node, experts, 1, per_node);
    const TrafficEstimate a2a = estimate_traffic(node, *r50, 2);  // bf16 activations
    const double a2a_per_gpu = a2a.alltoall_bytes / per_node;
    const Sizes sz = gradient_sizes(*r50, experts);
    const int copies = per_node / experts;  // holders of a lego shard in a node
    per_e.push_back({{"expert_parallel", experts},
                     {"alltoall_mb_per_gpu", a2a_per_gpu / 1e6},
                     {"grad_mb_per_gpu", (sz.replicated + sz.lego_per_shard + sz.head_max) / 1e6},
                     {"naive_grad_mb_per_gpu", a2a.naive_payload_bytes / node.world / 1e6}});
    for (const char* mode : {"weak", "strong"})
      for (int gpus : {8, 64, 512}) {
        const int nodes = std::max(1, gpus / per_node);
        // Strong scaling keeps the global batch of one node: each GPU's share shrinks with the GPU count.
        const double share = std::string(mode) == "weak" ? 1.0 : 1.0 / nodes;
        const double tc = o.step_ms * 1e-3 * share;
        const double t_a2a =
            a2a_per_gpu > 0 ? a2a_per_gpu * share / (o.nvlink_gbs * 1e9) + layers * 4 * o.nvlink_us * 1e-6 : 0.0;
        // Hierarchical all-reduces: in the node over NVLink, then a ring over the nodes on each GPU's share.
        const double t_rep = ring_s(sz.replicated, per_node, o.nvlink_gbs, o.nvlink_us) +
                             ring_s(sz.replicated / per_node, nodes, o.ib_gbs, o.ib_us);
        const double t_lego = ring_s(sz.lego_per_shard, copies, o.nvlink_gbs, o.nvlink_us) +
                              ring_s(sz.lego_per_shard / copies, nodes, o.ib_gbs, o.ib_us);
        const double t_head = ring_s(sz.head_max, nodes, o.ib_gbs, o.ib_us);
        const double t_grad = t_rep + t_lego + t_head;
        // Buckets overlapped with the backward pass (2/3 of the step): only what sticks out is exposed.
        scaling.push_back({{"mode", mode},
                           {"gpus", gpus},
                           {"expert_parallel", experts},
                           {"step_compute_ms", tc * 1e3},
                           {"alltoall_ms", t_a2a * 1e3},
                           {"grad_sync_ms", t_grad * 1e3},
                           {"efficiency_no_overlap", tc / (tc + t_a2a + t_grad)},
                           {"efficiency_overlap", tc / (tc + t_a2a + std::max(0.0, t_grad - tc * 2.0 / 3.0))}});
      }
  }
  return {{"legos", legos},
          {"top_k", top_k},
          {"tasks", per_node},
          {"images_per_gpu", o.images_per_gpu},
          {"layouts", per_e},
          {"links",
           {{"nvlink_gbs", o.nvlink_gbs},
            {"nvlink_us", o.nvlink_us},
            {"ib_gbs", o.ib_gbs},
            {"ib_us", o.ib_us},
            {"gpus_per_node", per_node},
            {"step_ms", o.step_ms}}},
          {"scaling", scaling}};
}

std::string text_report(const json& report, const TrainConfig& config, const CommBenchOptions& o) {
  const int per_node = o.gpus_per_node;
  std::string t =
      str("gppf bench comm: ", config.config_path, " (", config.backbone.name, ", ", config.backbone.num_legos,
          " legos, top-", config.backbone.top_k, "), bytes per training step, all ranks together\n");
  t +=
      str("  world  layout                 groups  experts  replicas  all-to-all MB  grad all-reduce MB  naive MB  "
          "naive/ours\n");
  for (const auto& l : report["layouts"]) {
    char line[256];
    std::snprintf(line, sizeof line, "  %5d  %-21s  %6d  %7d  %8d  %13s  %18s  %8s  %10.1f\n", l["world"].get<int>(),
                  l["layout"].get<std::string>().c_str(), l["task_groups"].get<int>(), l["expert_parallel"].get<int>(),
                  l["replicas"].get<int>(), mb(l["alltoall_bytes"].get<double>()).c_str(),
                  mb(l["grad_payload_bytes"].get<double>()).c_str(), mb(l["naive_payload_bytes"].get<double>()).c_str(),
                  l["naive_over_ours"].get<double>());
    t += line;
  }
  if (report["mpi"].is_null()) {
    t += "MPI bandwidth: run under `mpirun -np 2` (or more) to measure it\n";
  } else {
    t += "MPI bandwidth of this host:\n";
    for (const auto& m : report["mpi"]) {
      if (m["op"] == "alltoall")
        t += str("  all-to-all  ", fixed(m["bytes_per_peer"].get<double>() / 1024, 0),
                 " KiB per peer: ", fixed(m["gbs_per_rank"].get<double>(), 2), " GB/s per rank\n");
      else
        t += str("  all-reduce  ", fixed(m["bytes"].get<double>() / 1048576, 0), " MiB: bus ",
                 fixed(m["bus_gbs"].get<double>(), 2), " GB/s\n");
    }
  }
  t += str("gppf-r50 model: ", report["r50"]["legos"].get<int>(), " legos, top-", report["r50"]["top_k"].get<int>(),
           ", ", per_node, " tasks (one per GPU of a node), ", o.images_per_gpu, " images per GPU, step ", o.step_ms,
           " ms; NVLink ", o.nvlink_gbs, " GB/s + ", o.nvlink_us, " us, IB ", o.ib_gbs, " GB/s + ", o.ib_us,
           " us per GPU\n");
  for (const auto& e : report["r50"]["layouts"])
    t += str("  expert_parallel ", e["expert_parallel"].get<int>(), ": per GPU and step ",
             fixed(e["alltoall_mb_per_gpu"].get<double>(), 1), " MB all-to-all (bf16), ",
             fixed(e["grad_mb_per_gpu"].get<double>(), 1),
             " MB gradients to all-reduce (naive: ", fixed(e["naive_grad_mb_per_gpu"].get<double>(), 1), " MB)\n");
  t += "  mode    GPUs  experts  compute ms  all-to-all ms  grad sync ms  efficiency (no overlap)  (overlapped)\n";
  for (const auto& sc : report["r50"]["scaling"]) {
    char line[200];
    std::snprintf(line, sizeof line, "  %-6s  %4d  %7d  %10.2f  %13.2f  %12.2f  %23.1f%%  %11.1f%%\n",
                  sc["mode"].get<std::string>().c_str(), sc["gpus"].get<int>(), sc["expert_parallel"].get<int>(),
                  sc["step_compute_ms"].get<double>(), sc["alltoall_ms"].get<double>(),
                  sc["grad_sync_ms"].get<double>(), 100 * sc["efficiency_no_overlap"].get<double>(),
                  100 * sc["efficiency_overlap"].get<double>());
    t += line;
  }
  return t;
}

}  // namespace

std::string bench_comm(const TrainConfig& config, const CommBenchOptions& o) {
  json report;
  TaskData data = open_tasks(config);
  TrainConfig on_host = config;  // the exchange and all-reduce measured here move host buffers
  on_host.device = "host";
  on_host.target_device = Device::host();
  Network net(on_host, data.specs);
  report["layouts"] = layout_table(config, net, o.gpus_per_node);
  report["config"] = config.config_path;
  report["legos"] = config.backbone.num_legos;
  report["top_k"] = config.backbone.top_k;
  report["mpi"] = measure_mpi();
  report["r50"] = r50_model(config, o);
  return o.json ? report.dump(2) + "\n" : text_report(report, config, o);
}

}  // namespace gppf::train
