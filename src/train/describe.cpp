#include "src/train/describe.hpp"

#include <cstdio>

#include "src/train/network.hpp"

namespace gppf::train {
namespace {

std::int64_t count_params(nn::Module& m) {
  std::vector<nn::Parameter*> ps;
  m.collect_parameters(ps);
  std::int64_t n = 0;
  for (const auto* p : ps) n += p->value.numel();
  return n;
}

std::string mflop(std::int64_t macs) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", 2.0 * static_cast<double>(macs) / 1e6);
  return buf;
}

std::string cell(const std::string& s, std::size_t w) {
  return s.size() >= w ? s + " " : s + std::string(w - s.size(), ' ');
}

}  // namespace

std::string describe_network(const TrainConfig& config) {
  const std::vector<TaskSpec> specs = open_tasks(config).specs;
  TrainConfig on_host = config;  // shapes and counts only: a CUDA config is described on any machine
  on_host.device = "host";
  on_host.target_device = Device::host();
  Network net(on_host, specs);
  nn::Backbone& backbone = net.backbone();
  const nn::BackboneSpec& b = config.backbone;
  const int active = b.num_shared + b.top_k;

  std::string out = str(b.name, ": ", b.num_legos, " routed legos per layer (top-", b.top_k, "), ", b.num_shared,
                        " shared; ", specs.size(), " tasks. Forward MFLOP per sample on each task's path.\n\n");
  out += cell("layer", 16) + cell("out", 6) + cell("stride", 7) + cell("lego w", 7) + cell("params", 10) +
         cell("router/task", 12);
  for (const auto& s : specs) out += cell(s.config.name, 14);
  out += "\n";

  std::vector<Shape> h;
  for (const auto& s : specs) h.push_back({1, s.height, s.width, s.channels});
  std::vector<nn::Parameter*> stem_params;
  backbone.collect_parameters(stem_params);
  std::int64_t stem = 0;
  for (const auto* p : stem_params)
    if (p->name.rfind("stem.", 0) == 0) stem += p->value.numel();
  out += cell("stem", 16) + cell(std::to_string(b.stem_channels), 6) + cell(std::to_string(b.stem_stride), 7) +
         cell("-", 7) + cell(std::to_string(stem), 10) + cell("-", 12);
  for (std::size_t t = 0; t < specs.size(); ++t) {
    out += cell(mflop(backbone.stem_macs(h[t])), 14);
    h[t] = backbone.stem_output_shape(h[t]);
  }
  out += "\n";
  for (nn::LegoLayer* l : backbone.lego_layers()) {
    const auto& ls = l->spec();
    const std::int64_t params = count_params(*l) - static_cast<std::int64_t>(specs.size()) * ls.num_legos;
    out += cell(l->name(), 16) + cell(std::to_string(ls.out_channels), 6) + cell(std::to_string(ls.stride), 7) +
           cell(std::to_string(ls.lego_width), 7) + cell(std::to_string(params), 10) +
           cell(std::to_string(ls.num_legos), 12);
    for (std::size_t t = 0; t < specs.size(); ++t) {
      out += cell(mflop(l->macs(h[t], active)), 14);
      h[t] = l->output_shape(h[t]);
    }
    out += "\n";
  }
  out += '\n';
  out += cell("task", 16) + cell("type", 16) + cell("input", 12) + cell("backbone", 10) + cell("path", 10) +
         "MFLOP forward per sample\n";
  for (std::size_t t = 0; t < specs.size(); ++t) {
    const auto& s = specs[t];
    out += cell(s.config.name, 16) + cell(io::task_name(s.config.type), 16) +
           cell(str(s.height, "x", s.width, "x", s.channels), 12) +
           cell(mflop(net.backbone_macs(static_cast<int>(t))), 10) +
           cell(mflop(net.path_macs(static_cast<int>(t))), 10) + "\n";
  }
  std::int64_t backbone_params = count_params(backbone), total = 0;
  for (const auto* p : net.parameters()) total += p->value.numel();
  out += str("\nparameters: ", total, " in all, ", backbone_params, " in the backbone (routers included), ",
             total - backbone_params, " in the heads\n");
  return out;
}

}  // namespace gppf::train
