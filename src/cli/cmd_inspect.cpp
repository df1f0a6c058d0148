#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "io/verify.hpp"
#include "src/cli/commands.hpp"
#include "src/nn/backbone.hpp"
#include "src/train/auto_layout.hpp"
#include "src/train/bench_step.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/config.hpp"
#include "src/train/describe.hpp"
#include "src/train/network.hpp"

namespace gppf::cli {
namespace {

using json = nlohmann::json;

std::string text(const json& v) { return printable(v.is_string() ? v.get<std::string>() : v.dump()); }

// Parameter counts by part of the network, from the checkpoint's file; the backbone's parts by their
// owner tags.
struct PartCounts {
  std::int64_t total = 0, always_on = 0, routers = 0, legos_total = 0;
  std::map<std::string, std::int64_t> heads;          // head.<task>
  std::map<std::pair<int, int>, std::int64_t> legos;  // (layer, index among its legos, shared first)
};

PartCounts count_parts(const std::string& path, nn::Backbone& backbone, int num_shared) {
  PartCounts c;
  std::map<std::string, nn::Owner> owners;
  std::vector<nn::Parameter*> backbone_params;
  backbone.collect_parameters(backbone_params);
  for (nn::Parameter* p : backbone_params) owners[p->name] = p->owner;
  for (const auto& [name, shape] : train::checkpoint_tensor_shapes(path, "params")) {
    const std::int64_t n = shape_numel(shape);
    c.total += n;
    const auto it = owners.find(name);
    if (it == owners.end()) {
      c.heads[name.substr(5, name.find('.', 5) - 5)] += n;  // not the backbone's: "head.<task>. ..."
      continue;
    }
    const nn::Owner& o = it->second;
    if (o.kind == nn::Owner::Kind::Router)
      c.routers += n;
    else if (o.kind == nn::Owner::Kind::Lego)
      c.legos[{o.layer, num_shared + o.lego}] += n;
    else if (o.layer >= 0 && o.lego >= 0)
      c.legos[{o.layer, o.lego}] += n;  // an always-on shared lego
    else
      c.always_on += n;
  }
  for (const auto& [k, n] : c.legos) c.legos_total += n;
  return c;
}

// What a checkpoint holds: its metadata, parameter counts by part of the network, and every task's
// routing at inference. Throws when the checkpoint is damaged or incomplete.
json checkpoint_json(const std::string& path) {
  const train::CheckpointMeta meta = train::verify_checkpoint(path);
  const train::TrainConfig config = train::parse_config(meta.config_yaml, {}, path + ":/config");
  json j = {{"kind", "checkpoint"},
            {"path", path},
            {"complete", true},
            {"format_version", meta.format_version},
            {"gppf_version", meta.gppf_version},
            {"git_sha", meta.git_sha},
            {"step", meta.step},
            {"steps", config.steps},
            {"world_size", meta.world_size},
            {"layout", meta.layout},
            {"optimizer", meta.optimizer_type},
            {"model",
             {{"backbone", config.backbone.name},
              {"legos", config.backbone.num_legos},
              {"top_k", config.backbone.top_k},
              {"shared", config.backbone.num_shared}}}};

  // The routing at inference: the checkpoint's routers through each routed layer's route().
  const int num_tasks = static_cast<int>(config.tasks.size());
  nn::BackboneSpec spec = config.backbone;
  if (spec.vit && spec.vit->grid_h == 0) spec.vit->grid_h = spec.vit->grid_w = 1;  // only the routers are read
  nn::Backbone backbone(spec, num_tasks, config.seed);
  std::vector<nn::Parameter*> routers;
  auto layers = backbone.routed_layers();
  for (auto* l : layers)
    for (int t = 0; t < num_tasks; ++t) routers.push_back(&l->router(t));
  train::ReadOptions ro;
  ro.exact = false;
  ro.optimizer = false;
  (void)train::read_checkpoint(path, {routers, {}, {}}, ro);
  backbone.refresh_routing(Stream::host());

  PartCounts c = count_parts(path, backbone, config.backbone.num_shared);
  j["parameters"] = {{"total", c.total},
                     {"backbone_outside_legos", c.always_on},
                     {"legos", c.legos_total},
                     {"routers", c.routers},
                     {"heads", c.total - c.always_on - c.legos_total - c.routers}};
  j["tasks"] = json::array();
  for (std::size_t i = 0; i < meta.tasks.size(); ++i) {
    const auto& t = meta.tasks[i];
    std::int64_t active = c.always_on + c.heads[t.name];
    json routes = json::array();  // in layer order
    for (std::size_t li = 0; li < layers.size(); ++li) {
      const nn::RoutedLayer* l = layers[li];
      const nn::Route r = l->route(static_cast<int>(i), std::numeric_limits<std::int64_t>::max(), false);
      json used = json::array();
      for (int lego : r.legos) {
        const int shared = config.backbone.num_shared;
        used.push_back(lego < shared ? str("shared", lego) : str("lego", lego - shared));
        active += c.legos[{static_cast<int>(li), lego}];  // owner tags number the layers in this order
      }
      routes.push_back({{"layer", l->name()}, {"legos", used}});
    }
    j["tasks"].push_back({{"name", t.name},
                          {"type", t.type},
                          {"dataset", t.dataset},
                          {"loader", {{"epoch", t.loader.epoch}, {"batch", t.loader.batch}}},
                          {"active_parameters", active},
                          {"head_parameters", c.heads[t.name]},
                          {"routes", routes}});
  }
  return j;
}

void print_checkpoint(const json& j) {
  std::printf("checkpoint %s\n", text(j["path"]).c_str());
  std::printf("  format version %s, written by gppf %s (git %s)\n", text(j["format_version"]).c_str(),
              text(j["gppf_version"]).c_str(), text(j["git_sha"]).c_str());
  std::printf("  step: %s of %s\n", text(j["step"]).c_str(), text(j["steps"]).c_str());
  const int world = j["world_size"].get<int>();
  if (world == 1)
    std::printf("  layout: 1 process (world size 1)\n");
  else
    std::printf("  layout: %d processes (world size %d: this file and %d shard files)\n", world, world, world - 1);
  if (!j["layout"].get<std::string>().empty()) std::printf("  layout detail: %s\n", text(j["layout"]).c_str());
  std::printf("  optimizer: %s\n", text(j["optimizer"]).c_str());
  const json& m = j["model"];
  std::printf("  model: %s, %s legos per layer (top-%s, %s shared)\n", text(m["backbone"]).c_str(),
              text(m["legos"]).c_str(), text(m["top_k"]).c_str(), text(m["shared"]).c_str());
  const json& p = j["parameters"];
  std::printf("  parameters: %s total (backbone outside legos %s, legos %s, routers %s, heads %s)\n",
              text(p["total"]).c_str(), text(p["backbone_outside_legos"]).c_str(), text(p["legos"]).c_str(),
              text(p["routers"]).c_str(), text(p["heads"]).c_str());
  std::printf("  tasks:\n");
  for (const json& t : j["tasks"]) {
    std::printf("  - %s: %s on %s (loader epoch %s, batch %s); %s parameters active, head %s\n",
                text(t["name"]).c_str(), text(t["type"]).c_str(), text(t["dataset"]).c_str(),
                text(t["loader"]["epoch"]).c_str(), text(t["loader"]["batch"]).c_str(),
                text(t["active_parameters"]).c_str(), text(t["head_parameters"]).c_str());
    for (const json& r : t["routes"]) {
      std::string line = str("    ", text(r["layer"]), ":");
      for (const json& u : r["legos"]) line += str(" ", text(u));
      std::printf("%s\n", line.c_str());
    }
  }
  std::printf("  complete: yes\n");
}

void inspect_checkpoint(const std::string& path, bool as_json) {
  json j;
  try {
    j = checkpoint_json(path);
  } catch (const Error&) {
    if (!as_json) std::printf("checkpoint %s\n  complete: no\n", printable(path).c_str());
    throw;
  }
  if (as_json)
    std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str());
  else
    print_checkpoint(j);
}

// The manifest with its free-text fields (class names, source) made safe for a terminal.
io::Manifest printable_manifest(io::Manifest m) {
  for (auto& c : m.classes) c = printable(c);
  m.source = printable(m.source);
  for (auto& s : m.splits) s.name = printable(s.name);
  return m;
}

void print(const json& j) { std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str()); }

void inspect_dataset(const std::string& dir, bool decode, bool as_json) {
  io::VerifyReport r = io::verify_dataset(dir, {decode});
  // A data set that holds nothing is as unusable as a damaged one: training would fail later.
  const std::string manifest = dir + "/manifest.json";
  if (r.manifest.splits.empty()) r.problems.push_back(str(manifest, ": lists no splits"));
  for (const io::SplitInfo& s : r.manifest.splits)
    if (s.count == 0) r.problems.push_back(str(manifest, ": split '", s.name, "' has no samples"));
  if (as_json) {
    print({{"kind", "data set"},
           {"path", dir},
           {"manifest", json::parse(r.manifest.to_json())},
           {"samples_checked", r.samples_checked},
           {"decoded", decode},
           {"problems", r.problems},
           {"ok", r.ok()}});
  } else {
    std::printf("%s", io::describe(printable_manifest(r.manifest), printable(dir)).c_str());
    std::printf("  checked: %lld samples, %zu problems\n", static_cast<long long>(r.samples_checked),
                r.problems.size());
    for (std::size_t i = 0; i < r.problems.size() && i < 20; ++i)
      std::fprintf(stderr, "  %s\n", printable(r.problems[i]).c_str());
  }
  GPPF_CHECK(r.ok(), "data set ", dir, " is damaged: ", r.problems.front());
}

// A run directory: whether it finished, its last invocation (run.json), how far its metrics go, and
// its latest checkpoint.
json run_json(const std::string& dir) {
  namespace fs = std::filesystem;
  json j = {{"kind", "run directory"}, {"path", dir}, {"finished", fs::exists(fs::path(dir) / "summary.json")}};
  std::ifstream record_file(fs::path(dir) / "run.json");
  const auto record = json::parse(record_file, nullptr, false);
  if (record.is_object() && record.contains("invocations") && record["invocations"].is_array() &&
      !record["invocations"].empty()) {
    j["invocations"] = record["invocations"].size();
    j["last_invocation"] = record["invocations"].back();  // "running": still, or killed
  }
  std::ifstream metrics(fs::path(dir) / "metrics.jsonl");
  std::string line, last;
  std::int64_t lines = 0;
  while (std::getline(metrics, line))
    if (!line.empty()) last = line, ++lines;
  j["metrics_records"] = lines;
  const auto l = json::parse(last, nullptr, false);
  j["last_step"] = l.is_object() && l.contains("step") && l["step"].is_number_integer() ? l["step"] : json();
  j["checkpoint"] = nullptr;
  return j;
}

void print_run(const json& j) {
  std::printf("run directory %s\n", text(j["path"]).c_str());
  std::printf("  finished: %s\n", j["finished"].get<bool>() ? "yes (summary.json)" : "no (no summary.json)");
  if (j.contains("last_invocation")) {
    const json& e = j["last_invocation"];
    const auto field = [&](const char* key) { return e.contains(key) ? text(e[key]) : "?"; };
    std::printf("  run.json: %s invocations; the last: %s, exit %s, steps %s to %s, started %s\n    %s\n",
                text(j["invocations"]).c_str(), field("status").c_str(), field("exit_code").c_str(),
                field("start_step").c_str(), field("end_step").c_str(), field("start_time").c_str(),
                field("command_line").c_str());
  }
  if (j["metrics_records"].get<std::int64_t>() > 0)
    std::printf("  metrics.jsonl: %s records, the last at step %s\n", text(j["metrics_records"]).c_str(),
                j["last_step"].is_null() ? "?" : text(j["last_step"]).c_str());
  else
    std::printf("  metrics.jsonl: no records\n");
}

void inspect_run(const std::string& dir, bool as_json) {
  namespace fs = std::filesystem;
  json j = run_json(dir);
  const bool has_checkpoint = fs::exists(fs::path(dir) / "checkpoints" / "latest");
  if (as_json) {
    if (has_checkpoint) j["checkpoint"] = checkpoint_json(train::resolve_checkpoint(dir));
    print(j);
    return;
  }
  print_run(j);
  if (!has_checkpoint) {
    std::printf("  checkpoint: none yet\n");
    return;
  }
  inspect_checkpoint(train::resolve_checkpoint(dir), false);
}

struct ConfigArgs {
  std::vector<std::string> overrides;
  std::string checkpoint, input, data_root;
  int world = 0, ranks_per_node = 8;  // world > 0: also the layout `distributed: auto` would pick
};

// A config's network: the data sets give image sizes and class counts (--input stands in for data
// not on this machine); a fine-tune config takes its network from --checkpoint.
void inspect_config(const std::string& path, const ConfigArgs& a, bool as_json) {
  namespace fs = std::filesystem;
  train::TrainConfig config;
  std::vector<std::string> notes;
  std::string network_of;
  if (!a.checkpoint.empty()) {
    network_of = train::resolve_checkpoint(a.checkpoint);
    config = train::load_finetune_config(path, a.overrides, train::read_checkpoint_meta(network_of).config_yaml,
                                         network_of + ":/config", a.data_root);
    notes.push_back(str("fine-tune config ", path, " with the network of ", network_of));
  } else {
    config = train::load_config(path, a.overrides, a.data_root);
    if (!config.model_given)
      notes.push_back(str("note: ", path,
                          " has no model section: this is the default network; for a fine-tune config pass "
                          "--checkpoint PATH to describe the pre-trained one"));
  }
  std::vector<train::TaskSpec> specs;
  if (!a.input.empty()) {
    specs = train::synthetic_specs(config, train::parse_synthetic(a.input, "inspect: --input"));
    notes.push_back(str("every task on ", a.input, " input (--input), not its data set"));
  } else {
    for (const auto& t : config.tasks)
      GPPF_CHECK(fs::exists(fs::path(t.dataset) / "manifest.json"), "inspect: task ", t.name, ": data set ", t.dataset,
                 " is not here (no manifest.json); fetch it, or pass --input HxWxC[:CLASSES] to describe the network "
                 "on data of that shape");
    specs = train::open_tasks(config).specs;
  }
  if (as_json) {
    json j = {{"kind", "config"},
              {"path", path},
              {"model_given", config.model_given},
              {"network_of", network_of.empty() ? json() : json(network_of)},
              {"input", a.input.empty() ? json() : json(a.input)},
              {"network", train::describe_network_json(config, specs)}};
    print(j);
    return;
  }
  for (const auto& n : notes) std::printf("%s\n", printable(n).c_str());
  std::printf("%s", train::describe_network(config, specs).c_str());
  if (a.world > 0) {
    // Shapes and routes only: the network is built on the host whatever the config's device.
    train::TrainConfig host = config;
    host.target_device = Device::host();
    host.precision = "fp32";
    train::Network net(host, specs);
    const train::LinkModel links = train::auto_link_model(config);
    const train::AutoPlan plan = train::plan_auto_layout(config, net, a.world, a.ranks_per_node, links);
    std::printf("\n%s", plan.table(a.world, a.ranks_per_node, links).c_str());
  }
}

}  // namespace

void register_inspect(CLI::App& app) {
  struct Options {
    std::string path;
    bool decode = false, json = false;
    ConfigArgs config;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "inspect", "describe a data set, a checkpoint or a config's network; non-zero exit when it is damaged");
  cmd->add_option("path", o->path,
                  "data set directory, run directory, checkpoint file (or RUN/checkpoints/latest), or YAML config")
      ->required();
  cmd->add_flag("--json", o->json, "print one JSON document instead of text");
  cmd->add_option("--set", o->config.overrides, "config: override a key, key=value (repeatable)");
  cmd->add_option("--checkpoint", o->config.checkpoint,
                  "config: a fine-tune config's pre-trained checkpoint (file or run directory): its network");
  cmd->add_option("--input", o->config.input,
                  "config: describe every task on input of this shape, HxWxC[:CLASSES], instead of its data set");
  add_data_root_option(cmd, o->config.data_root);
  cmd->add_option("--world", o->config.world,
                  "config: also price every layout of this many ranks and show the one `distributed: auto` picks")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--ranks-per-node", o->config.ranks_per_node, "config, with --world: ranks (GPUs) per node")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_flag("--decode", o->decode, "data sets: also decode every PNG/JPEG image");
  cmd->callback([o] {
    namespace fs = std::filesystem;
    if (!fs::is_directory(o->path)) {
      GPPF_CHECK(fs::exists(o->path), "inspect: ", o->path, " does not exist");
      const std::string ext = fs::path(o->path).extension().string();
      if (ext == ".yaml" || ext == ".yml") {
        inspect_config(o->path, o->config, o->json);
        return;
      }
      // RUN/checkpoints/latest is a pointer to a checkpoint, resolved as --resume does.
      const fs::path p(o->path);
      if (p.filename() == "latest" && p.parent_path().filename() == "checkpoints") {
        inspect_checkpoint(train::resolve_checkpoint(p.parent_path().parent_path().string()), o->json);
        return;
      }
      inspect_checkpoint(o->path, o->json);
      return;
    }
    if (fs::is_directory(fs::path(o->path) / "checkpoints") || fs::exists(fs::path(o->path) / "metrics.jsonl")) {
      inspect_run(o->path, o->json);
      return;
    }
    inspect_dataset(o->path, o->decode, o->json);
  });
}

}  // namespace gppf::cli
