#include "src/train/describe.hpp"

#include <cstdio>

#include "src/train/network.hpp"

namespace gppf::train {
namespace {

using json = nlohmann::json;

std::int64_t count_params(nn::Module& m) {
  std::vector<nn::Parameter*> ps;
  m.collect_parameters(ps);
  std::int64_t n = 0;
  for (const auto* p : ps) n += p->numel();
  return n;
}

double mflop(std::int64_t macs) { return 2.0 * static_cast<double>(macs) / 1e6; }

std::string fixed2(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string cell(const std::string& s, std::size_t w) {
  return s.size() >= w ? s + " " : s + std::string(w - s.size(), ' ');
}

std::string text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// One row of the layer table: layer name, out channels, stride, lego width, parameters, legos the
// router chooses from, and MFLOP per sample for each task.
json layer_row(const std::string& name, int out, int stride, const json& lego_width, std::int64_t params,
               const json& legos) {
  return {{"layer", name},    {"out_channels", out},   {"stride", stride},       {"lego_width", lego_width},
          {"params", params}, {"router_legos", legos}, {"mflop", json::object()}};
}

// The stem's row and one per residual lego layer, each task's shape carried through them.
void append_residual_rows(json& d, nn::Backbone& backbone, const nn::BackboneSpec& b,
                          const std::vector<TaskSpec>& specs, int active) {
  std::vector<Shape> h;
  for (const auto& s : specs) h.push_back({1, s.height, s.width, s.channels});
  std::vector<nn::Parameter*> stem_params;
  backbone.collect_parameters(stem_params);
  std::int64_t stem = 0;
  for (const auto* p : stem_params)
    if (p->name.rfind("stem.", 0) == 0) stem += p->numel();
  json row = layer_row("stem", b.stem_channels, b.stem_stride, nullptr, stem, nullptr);
  for (std::size_t t = 0; t < specs.size(); ++t) {
    row["mflop"][specs[t].config.name] = mflop(backbone.stem_macs(h[t]));
    h[t] = backbone.stem_output_shape(h[t]);
  }
  d["layers"].push_back(row);
  for (nn::LegoLayer* l : backbone.lego_layers()) {
    const auto& ls = l->spec();
    // Router logits (one per lego and task) are counted with the routers, not the layer.
    const std::int64_t params = count_params(*l) - static_cast<std::int64_t>(specs.size()) * ls.num_legos;
    row = layer_row(l->name(), ls.out_channels, ls.stride, ls.lego_width, params, ls.num_legos);
    for (std::size_t t = 0; t < specs.size(); ++t) {
      row["mflop"][specs[t].config.name] = mflop(l->macs(h[t], active));
      h[t] = l->output_shape(h[t]);
    }
    d["layers"].push_back(row);
  }
}

}  // namespace

json describe_network_json(const TrainConfig& config, const std::vector<TaskSpec>& specs) {
  TrainConfig on_host = config;  // shapes and counts only: a CUDA config is described on any machine
  on_host.device = "host";
  on_host.target_device = Device::host();
  Network net(on_host, specs);
  nn::Backbone& backbone = net.backbone();
  const nn::BackboneSpec& b = config.backbone;
  const int active = b.num_shared + b.top_k;
  json d = {{"backbone", b.name},     {"legos", b.num_legos},    {"top_k", b.top_k},
            {"shared", b.num_shared}, {"layers", json::array()}, {"tasks", json::array()}};

  if (backbone.is_vit()) {  // one row: the transformer (its blocks alike), routers counted apart
    const nn::VitSpec& v = *b.vit;
    const std::int64_t routers =
        static_cast<std::int64_t>(specs.size()) * b.num_legos * static_cast<std::int64_t>(v.depth);
    json row = layer_row(str("vit x", v.depth), v.dim, v.patch, nullptr, count_params(backbone) - routers, b.num_legos);
    for (const auto& s : specs)
      row["mflop"][s.config.name] = mflop(backbone.macs({1, s.height, s.width, s.channels}, active));
    d["layers"].push_back(row);
  } else {
    append_residual_rows(d, backbone, b, specs, active);
  }
  for (std::size_t t = 0; t < specs.size(); ++t) {
    const auto& s = specs[t];
    d["tasks"].push_back({{"name", s.config.name},
                          {"type", io::task_name(s.config.type)},
                          {"input", {s.height, s.width, s.channels}},
                          {"classes", s.num_classes},
                          {"backbone_mflop", mflop(net.backbone_macs(static_cast<int>(t)))},
                          {"path_mflop", mflop(net.path_macs(static_cast<int>(t)))}});
  }
  std::int64_t backbone_params = count_params(backbone), total = 0;
  for (const auto* p : net.parameters()) total += p->numel();
  d["parameters"] = {{"total", total}, {"backbone", backbone_params}, {"heads", total - backbone_params}};
  return d;
}

std::string describe_network(const TrainConfig& config, const std::vector<TaskSpec>& specs) {
  const json d = describe_network_json(config, specs);
  std::string out =
      str(text(d["backbone"]), ": ", d["legos"], " routed legos per layer (top-", d["top_k"], "), ", d["shared"],
          " shared; ", specs.size(), " tasks. Forward MFLOP per sample on each task's path.\n\n");
  out += cell("layer", 16) + cell("out", 6) + cell("stride", 7) + cell("lego w", 7) + cell("params", 10) +
         cell("router/task", 12);
  for (const auto& s : specs) out += cell(s.config.name, 14);
  out += "\n";
  for (const json& r : d["layers"]) {
    const auto dash = [](const json& v) { return v.is_null() ? std::string("-") : text(v); };
    out += cell(text(r["layer"]), 16) + cell(text(r["out_channels"]), 6) + cell(text(r["stride"]), 7) +
           cell(dash(r["lego_width"]), 7) + cell(text(r["params"]), 10) + cell(dash(r["router_legos"]), 12);
    for (const auto& s : specs) out += cell(fixed2(r["mflop"][s.config.name].get<double>()), 14);
    out += "\n";
  }
  out += '\n';
  out += cell("task", 16) + cell("type", 16) + cell("input", 12) + cell("backbone", 10) + cell("path", 10) +
         "MFLOP forward per sample\n";
  for (const json& t : d["tasks"]) {
    const json& in = t["input"];
    out += cell(text(t["name"]), 16) + cell(text(t["type"]), 16) + cell(str(in[0], "x", in[1], "x", in[2]), 12) +
           cell(fixed2(t["backbone_mflop"].get<double>()), 10) + cell(fixed2(t["path_mflop"].get<double>()), 10) + "\n";
  }
  const json& p = d["parameters"];
  out += str("\nparameters: ", p["total"], " in all, ", p["backbone"], " in the backbone (routers included), ",
             p["heads"], " in the heads\n");
  return out;
}

}  // namespace gppf::train
