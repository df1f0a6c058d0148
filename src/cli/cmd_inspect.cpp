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
#include "src/train/checkpoint.hpp"
#include "src/train/config.hpp"
#include "src/train/describe.hpp"

namespace gppf::cli {
namespace {

void inspect_checkpoint(const std::string& path) {
  std::printf("checkpoint %s\n", printable(path).c_str());
  train::CheckpointMeta meta;
  try {
    meta = train::verify_checkpoint(path);
  } catch (const Error&) {
    std::printf("  complete: no\n");
    throw;
  }
  const train::TrainConfig config = train::parse_config(meta.config_yaml, {}, path + ":/config");
  std::printf("  format version %lld, written by gppf %s (git %s)\n", static_cast<long long>(meta.format_version),
              printable(meta.gppf_version).c_str(), printable(meta.git_sha).c_str());
  std::printf("  step: %lld of %lld\n", static_cast<long long>(meta.step), static_cast<long long>(config.steps));
  if (meta.world_size == 1)
    std::printf("  layout: 1 process (world size 1)\n");
  else
    std::printf("  layout: %d processes (world size %d: this file and %d shard files)\n", meta.world_size,
                meta.world_size, meta.world_size - 1);
  if (!meta.layout.empty()) std::printf("  layout detail: %s\n", printable(meta.layout).c_str());
  std::printf("  optimizer: %s\n", printable(meta.optimizer_type).c_str());
  std::printf("  model: %s, %d legos per layer (top-%d, %d shared)\n", config.backbone.name.c_str(),
              config.backbone.num_legos, config.backbone.top_k, config.backbone.num_shared);

  // The routing at inference: the checkpoint's routers through LegoLayer::route.
  const int num_tasks = static_cast<int>(config.tasks.size());
  nn::Backbone backbone(config.backbone, num_tasks, config.seed);
  std::vector<nn::Parameter*> routers;
  auto layers = backbone.lego_layers();
  for (auto* l : layers)
    for (int t = 0; t < num_tasks; ++t) routers.push_back(&l->router(t));
  train::ReadOptions ro;
  ro.exact = false;
  ro.optimizer = false;
  (void)train::read_checkpoint(path, {routers, {}, {}}, ro);

  // Parameter counts by part of the network, from the file; the backbone's parts by their owner tags.
  std::map<std::string, nn::Owner> owners;
  std::vector<nn::Parameter*> backbone_params;
  backbone.collect_parameters(backbone_params);
  for (nn::Parameter* p : backbone_params) owners[p->name] = p->owner;
  std::int64_t total = 0, always_on = 0, router_total = 0;
  std::map<std::string, std::int64_t> heads;          // head.<task>
  std::map<std::pair<int, int>, std::int64_t> legos;  // (layer, index among its legos, shared first)
  for (const auto& [name, shape] : train::checkpoint_tensor_shapes(path, "params")) {
    const std::int64_t n = shape_numel(shape);
    total += n;
    const auto it = owners.find(name);
    if (it == owners.end()) {
      heads[name.substr(5, name.find('.', 5) - 5)] += n;  // not the backbone's: "head.<task>. ..."
      continue;
    }
    const nn::Owner& o = it->second;
    if (o.kind == nn::Owner::Kind::Router)
      router_total += n;
    else if (o.kind == nn::Owner::Kind::Lego)
      legos[{o.layer, config.backbone.num_shared + o.lego}] += n;
    else if (o.layer >= 0 && o.lego >= 0)
      legos[{o.layer, o.lego}] += n;  // an always-on shared lego
    else
      always_on += n;
  }
  std::int64_t lego_total = 0;
  for (const auto& [k, n] : legos) lego_total += n;
  std::printf("  parameters: %lld total (backbone outside legos %lld, legos %lld, routers %lld, heads %lld)\n",
              static_cast<long long>(total), static_cast<long long>(always_on), static_cast<long long>(lego_total),
              static_cast<long long>(router_total),
              static_cast<long long>(total - always_on - lego_total - router_total));

  std::printf("  tasks:\n");
  for (std::size_t i = 0; i < meta.tasks.size(); ++i) {
    const auto& t = meta.tasks[i];
    const int ti = static_cast<int>(i);
    std::int64_t active = always_on + heads[t.name];
    std::string routes;
    for (auto* l : layers) {
      const nn::Route r = l->route(ti, std::numeric_limits<std::int64_t>::max(), false);
      routes += str("    ", l->name(), ":");
      for (int lego : r.legos) {
        const int shared = l->spec().num_shared;
        routes += lego < shared ? str(" shared", lego) : str(" lego", lego - shared);
        active += legos[{l->index(), lego}];
      }
      routes += "\n";
    }
    std::printf("  - %s: %s on %s (loader epoch %lld, batch %lld); %lld parameters active, head %lld\n",
                printable(t.name).c_str(), printable(t.type).c_str(), printable(t.dataset).c_str(),
                static_cast<long long>(t.loader.epoch), static_cast<long long>(t.loader.batch),
                static_cast<long long>(active), static_cast<long long>(heads[t.name]));
    std::printf("%s", routes.c_str());
  }
  std::printf("  complete: yes\n");
}

// The manifest with its free-text fields (class names, source) made safe for a terminal.
io::Manifest printable_manifest(io::Manifest m) {
  for (auto& c : m.classes) c = printable(c);
  m.source = printable(m.source);
  for (auto& s : m.splits) s.name = printable(s.name);
  return m;
}

void inspect_dataset(const std::string& dir, bool decode) {
  io::VerifyReport r = io::verify_dataset(dir, {decode});
  // A data set that holds nothing is as unusable as a damaged one: training would fail later.
  const std::string manifest = dir + "/manifest.json";
  if (r.manifest.splits.empty()) r.problems.push_back(str(manifest, ": lists no splits"));
  for (const io::SplitInfo& s : r.manifest.splits)
    if (s.count == 0) r.problems.push_back(str(manifest, ": split '", s.name, "' has no samples"));
  std::printf("%s", io::describe(printable_manifest(r.manifest), printable(dir)).c_str());
  std::printf("  checked: %lld samples, %zu problems\n", static_cast<long long>(r.samples_checked), r.problems.size());
  for (std::size_t i = 0; i < r.problems.size() && i < 20; ++i)
    std::fprintf(stderr, "  %s\n", printable(r.problems[i]).c_str());
  GPPF_CHECK(r.ok(), "data set ", dir, " is damaged: ", r.problems.front());
}

// A run directory: whether it finished, how far its metrics go, then its latest checkpoint.
void inspect_run(const std::string& dir) {
  namespace fs = std::filesystem;
  std::printf("run directory %s\n", printable(dir).c_str());
  std::printf("  finished: %s\n",
              fs::exists(fs::path(dir) / "summary.json") ? "yes (summary.json)" : "no (no summary.json)");
  // run.json: the last invocation's command and how it ended ("running": still, or killed).
  std::ifstream record_file(fs::path(dir) / "run.json");
  const auto record = nlohmann::json::parse(record_file, nullptr, false);
  if (record.is_object() && record.contains("invocations") && record["invocations"].is_array() &&
      !record["invocations"].empty()) {
    const nlohmann::json& e = record["invocations"].back();
    const auto text = [&](const char* key) {
      return e.contains(key) ? printable(e[key].is_string() ? e[key].get<std::string>() : e[key].dump()) : "?";
    };
    std::printf("  run.json: %zu invocations; the last: %s, exit %s, steps %s to %s, started %s\n    %s\n",
                record["invocations"].size(), text("status").c_str(), text("exit_code").c_str(),
                text("start_step").c_str(), text("end_step").c_str(), text("start_time").c_str(),
                text("command_line").c_str());
  }
  std::ifstream metrics(fs::path(dir) / "metrics.jsonl");
  std::string line, last;
  std::int64_t lines = 0;
  while (std::getline(metrics, line))
    if (!line.empty()) last = line, ++lines;
  if (lines > 0) {
    const auto j = nlohmann::json::parse(last, nullptr, false);
    const bool has_step = j.is_object() && j.contains("step") && j["step"].is_number_integer();
    std::printf("  metrics.jsonl: %lld records, the last at step %s\n", static_cast<long long>(lines),
                has_step ? std::to_string(j["step"].get<std::int64_t>()).c_str() : "?");
  } else {
    std::printf("  metrics.jsonl: no records\n");
  }
  if (!fs::exists(fs::path(dir) / "checkpoints" / "latest")) {
    std::printf("  checkpoint: none yet\n");
    return;
  }
  inspect_checkpoint(train::resolve_checkpoint(dir));
}

}  // namespace

void register_inspect(CLI::App& app) {
  struct Options {
    std::string path;
    bool decode = false;
    std::vector<std::string> overrides;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "inspect", "describe a data set, a checkpoint or a config's network; non-zero exit when it is damaged");
  cmd->add_option("path", o->path,
                  "data set directory, run directory, checkpoint file (or RUN/checkpoints/latest), or YAML config")
      ->required();
  cmd->add_option("--set", o->overrides, "config: override a key, key=value (repeatable)");
  cmd->add_flag("--decode", o->decode, "data sets: also decode every PNG/JPEG image");
  cmd->callback([o] {
    namespace fs = std::filesystem;
    if (!fs::is_directory(o->path)) {
      GPPF_CHECK(fs::exists(o->path), "inspect: ", o->path, " does not exist");
      const std::string ext = fs::path(o->path).extension().string();
      if (ext == ".yaml" || ext == ".yml") {
        std::printf("%s", train::describe_network(train::load_config(o->path, o->overrides)).c_str());
        return;
      }
      // RUN/checkpoints/latest is a pointer to a checkpoint, resolved as --resume does.
      const fs::path p(o->path);
      if (p.filename() == "latest" && p.parent_path().filename() == "checkpoints") {
        inspect_checkpoint(train::resolve_checkpoint(p.parent_path().parent_path().string()));
        return;
      }
      inspect_checkpoint(o->path);
      return;
    }
    if (fs::is_directory(fs::path(o->path) / "checkpoints") || fs::exists(fs::path(o->path) / "metrics.jsonl")) {
      inspect_run(o->path);
      return;
    }
    inspect_dataset(o->path, o->decode);
  });
}

}  // namespace gppf::cli
