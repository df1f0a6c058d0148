#include "src/train/finetune.hpp"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/log.hpp"
#include "src/dist/mpi.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/network.hpp"
#include "src/train/run_record.hpp"

namespace gppf::train {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

// The newest intact checkpoint of run_dir when it is at `steps` (that run finished), else "".
std::string finished_checkpoint(const std::string& run_dir, std::int64_t steps) {
  const std::string path = find_resume_checkpoint(run_dir);
  return !path.empty() && read_checkpoint_meta(path).step == steps ? path : std::string();
}

// The fine-tune config with phase-specific keys replaced (the text keeps the checkpoint's model).
TrainConfig phase_config(const TrainConfig& config, const std::vector<std::string>& overrides) {
  return parse_config(config.yaml, overrides, config.config_path);
}

std::vector<nn::Parameter*> backbone_parameters(Network& net) {
  std::vector<nn::Parameter*> out;
  net.backbone().collect_parameters(out);
  return out;
}

// "<bn>.running_mean.task3" -> "<bn>.running_mean"; names without a task suffix stay as they are.
std::string without_task(const std::string& name) {
  const auto pos = name.rfind(".task");
  return pos == std::string::npos ? name : name.substr(0, pos);
}

std::string legos_text(const std::vector<int>& legos) {
  std::string s = "[";
  for (std::size_t i = 0; i < legos.size(); ++i) s += str(i ? " " : "", legos[i]);
  return s + "]";
}

// The routed legos every task takes in every layer (inference routing: top-k of the logits).
std::vector<std::vector<std::vector<int>>> chosen_legos(Network& net) {
  std::vector<std::vector<std::vector<int>>> out(net.tasks().size());
  for (std::size_t t = 0; t < out.size(); ++t)
    for (auto* layer : net.backbone().routed_layers()) {
      std::vector<int> legos;
      for (int r : layer->route(static_cast<int>(t), 0, false).routed)
        if (r >= 0) legos.push_back(r);
      out[t].push_back(legos);
    }
  return out;
}

void write_transfer_json(const fs::path& path, const TrainConfig& config, const FinetuneOptions& options, Network* net,
                         const std::vector<std::vector<std::vector<int>>>& legos) {
  // Absolute: the record stays true wherever it is read from (the run may have started anywhere).
  json j = {{"checkpoint", fs::absolute(options.checkpoint).lexically_normal().string()},
            {"from_scratch", options.from_scratch},
            {"probe_steps", options.from_scratch ? 0 : config.finetune.probe_steps},
            {"steps", options.from_scratch ? config.steps + config.finetune.probe_steps : config.steps},
            {"freeze_backbone", config.finetune.freeze_backbone},
            {"tasks", json::object()}};
  if (net) {
    const auto layers = net->backbone().routed_layers();
    for (std::size_t t = 0; t < legos.size(); ++t) {
      json per_layer = json::object();
      for (std::size_t l = 0; l < layers.size(); ++l)
        per_layer[layers[l]->name()] = {{"legos", legos[t][l]},
                                        {"logits", layers[l]->router(static_cast<int>(t)).value.to_float_vector()}};
      j["tasks"][config.tasks[t].name] = {{"layers", per_layer}};
    }
  }
  std::ofstream out(path, std::ios::trunc);
  GPPF_CHECK(out, path.string(), ": cannot write");
  out << j.dump(2) << '\n';
  GPPF_CHECK(out, path.string(), ": write failed (disk full?)");
}

}  // namespace

bool is_router(const std::string& parameter_name) { return parameter_name.find(".router.task") != std::string::npos; }

void load_pretrained_backbone(Network& net, const std::string& checkpoint) {
  const CheckpointMeta meta = read_checkpoint_meta(checkpoint);
  const std::size_t pretrained_tasks = meta.tasks.size();
  GPPF_CHECK(pretrained_tasks > 0, "checkpoint ", checkpoint, " lists no tasks; it is not a pre-training checkpoint");

  std::vector<nn::Parameter*> params;
  for (auto* p : backbone_parameters(net))
    if (!is_router(p->name)) params.push_back(p);

  // Each per-task statistic once per pre-training task, read into scratch tensors, then averaged.
  std::vector<nn::Buffer> mine;
  net.backbone().collect_buffers(mine);
  std::map<std::string, std::vector<Tensor>> theirs;
  for (const nn::Buffer& b : mine) {
    GPPF_CHECK(b.task >= 0, "backbone buffer ", b.name, " is not per task; cannot map it to the new tasks");
    const std::string base = without_task(b.name);
    const Tensor* tensor = b.tensor;
    auto& v = theirs[base];
    if (v.empty())
      for (std::size_t i = 0; i < pretrained_tasks; ++i) v.push_back(Tensor::zeros(tensor->shape(), DType::F32));
  }
  std::vector<nn::NamedTensor> to_read;
  for (auto& [base, tensors] : theirs)
    for (std::size_t i = 0; i < tensors.size(); ++i) to_read.emplace_back(str(base, ".task", i), &tensors[i]);
  ReadOptions ro;
  ro.exact = false;
  ro.optimizer = false;
  (void)read_checkpoint(checkpoint, {params, to_read, {}}, ro);

  for (const nn::Buffer& b : mine) {
    Tensor* tensor = b.tensor;
    const auto& src = theirs.at(without_task(b.name));
    std::vector<double> mean(static_cast<std::size_t>(tensor->numel()), 0.0);
    for (const Tensor& s : src) {
      const float* v = s.data_as<float>();
      for (std::size_t k = 0; k < mean.size(); ++k) mean[k] += v[k];
    }
    std::vector<float> avg(mean.size());
    for (std::size_t k = 0; k < mean.size(); ++k)
      avg[k] = static_cast<float>(mean[k] / static_cast<double>(src.size()));
    tensor->copy_from(Tensor::from_vector(tensor->shape(), avg), net.stream());
  }
  log::info("finetune: loaded ", params.size(), " backbone parameters from ", checkpoint, " (step ", meta.step,
            ", tasks pre-trained: ", pretrained_tasks, "); new tasks' BN statistics start as their mean");
}

namespace {

// One phase's TrainOptions: its run directory, the shared resume and process choices, its set-up.
TrainOptions phase_options(const FinetuneOptions& options, const std::string& run_dir,
                           std::function<void(Network&)> prepare) {
  TrainOptions t;
  t.run_dir = run_dir;
  t.resume = options.resume;
  t.single_process = options.single_process;
  t.force = options.force;
  t.command_line = options.command_line;
  t.prepare = std::move(prepare);
  return t;
}

void notify(const FinetuneOptions& options, const char* phase, Network& net) {
  if (options.on_prepared) options.on_prepared(phase, net);
}

FinetuneResult run_from_scratch(const TrainConfig& config, const FinetuneOptions& options, bool root) {
  const FinetuneConfig& f = config.finetune;
  log::info("finetune --from-scratch: ", config.steps + f.probe_steps, " steps (probe_steps ", f.probe_steps,
            " + steps ", config.steps, ") from random initialisation; ", options.checkpoint,
            " gives only the network's shape");
  const TrainConfig c = phase_config(config, {str("steps=", config.steps + f.probe_steps)});
  FinetuneResult result;
  result.summary =
      run_training(c, phase_options(options, options.run_dir, [&](Network& net) { notify(options, "scratch", net); }));
  if (!result.summary.interrupted && root)
    write_transfer_json(fs::path(options.run_dir) / "transfer.json", config, options, nullptr, {});
  return result;
}

// 1. The probe: frozen pre-trained backbone, soft routing from uniform gates, new heads. Skipped
// when a resumed run's probe had finished.
TrainSummary run_probe(const TrainConfig& config, const FinetuneOptions& options, const fs::path& probe_dir,
                       bool root) {
  const FinetuneConfig& f = config.finetune;
  const TrainConfig probe =
      phase_config(config, {str("steps=", f.probe_steps), str("optimizer.lr=", f.probe_lr), "schedule={type: constant}",
                            "model.routing.warmup=soft", str("model.routing.warmup_steps=", f.probe_steps),
                            "model.routing.balance_weight=0", "eval_every=0", "checkpoint_every=0",
                            "checkpoint_minutes=0", "keep_checkpoints=1"});
  const TrainOptions po = phase_options(options, probe_dir.string(), [&](Network& net) {
    load_pretrained_backbone(net, options.checkpoint);
    for (auto* p : backbone_parameters(net)) {
      p->trainable = is_router(p->name);
      if (is_router(p->name)) p->value.zero_(net.stream());
    }
    net.parameters_changed();
    notify(options, "probe", net);
  });
  const std::string probe_done = options.resume.empty() ? std::string() : finished_checkpoint(po.run_dir, probe.steps);
  if (!probe_done.empty()) {
    if (root) log::info("finetune --resume auto: the probe finished before (", probe_done, "); not run again");
    TrainSummary done;
    done.steps = probe.steps;
    return done;
  }
  log::info("finetune: probe of ", f.probe_steps, " steps at lr ", f.probe_lr, " -> ", probe_dir.string());
  return run_training(probe, po);
}

// 2.-3. Top-k of the probe's logits, routers frozen; fine-tune the paths (or only the heads).
void run_tune(const TrainConfig& config, const FinetuneOptions& options, const std::string& probe_checkpoint, bool root,
              FinetuneResult& result) {
  const FinetuneConfig& f = config.finetune;
  const TrainConfig tune = phase_config(
      config, {"model.routing.warmup=none", "model.routing.warmup_steps=0", "model.routing.balance_weight=0"});
  const TrainOptions fo = phase_options(options, options.run_dir, [&](Network& net) {
    ReadOptions ro;
    ro.exact = false;  // the same network: every name must be there; the probe's optimizer state is not wanted
    ro.optimizer = false;
    (void)read_checkpoint(probe_checkpoint, {net.parameters(), net.buffers(), {}}, ro);
    net.parameters_changed();  // chosen_legos routes by the probe's routers
    for (auto* p : backbone_parameters(net)) p->trainable = !is_router(p->name) && !f.freeze_backbone;
    result.legos = chosen_legos(net);
    const auto layers = net.backbone().routed_layers();
    for (std::size_t t = 0; t < result.legos.size(); ++t) {
      std::string line = str("finetune: the probe chose for task '", config.tasks[t].name, "':");
      for (std::size_t l = 0; l < layers.size(); ++l)
        line += str(" ", layers[l]->name(), " ", legos_text(result.legos[t][l]));
      if (root) log::info(line);
    }
    if (root) write_transfer_json(fs::path(options.run_dir) / "transfer.json", config, options, &net, result.legos);
    notify(options, "finetune", net);
  });
  log::info("finetune: ", config.steps, " steps of ", f.freeze_backbone ? "the heads" : "the chosen paths and heads",
            " -> ", options.run_dir);
  result.summary = run_training(tune, fo);
}

// summary.json times its own phase: the fine-tune's also gets the probe's time and the sum.
void add_phase_times(const fs::path& run_dir) {
  const auto read = [](const fs::path& p) {
    std::ifstream in(p);
    return json::parse(in, nullptr, false);
  };
  json s = read(run_dir / "summary.json");
  const json probe = read(run_dir / "probe" / "summary.json");
  if (!s.is_object() || !s.contains("wall_seconds") || !probe.is_object() || !probe.contains("wall_seconds")) return;
  const double p = probe["wall_seconds"].get<double>(), t = s["wall_seconds"].get<double>();
  s["phases"] = {{"probe", {{"steps", probe["steps"]}, {"wall_seconds", p}}},
                 {"finetune", {{"steps", s["steps"]}, {"wall_seconds", t}}}};
  s["total_wall_seconds"] = p + t;
  write_atomically(run_dir / "summary.json", s.dump(2) + "\n");
}

}  // namespace

// gppf-vit's position embeddings keep the pre-trained grid (by default the pre-training's largest
// input / patch): the new tasks' inputs interpolate them, as any other input size does.
TrainConfig with_pretrained_grid(TrainConfig config, const std::string& checkpoint) {
  if (!config.backbone.vit || config.backbone.vit->grid_h > 0) return config;
  // Into the config's text: each phase re-reads it (phase_config).
  for (const auto& [name, shape] : checkpoint_tensor_shapes(checkpoint, "params"))
    if (name == "pos_embed" && shape.size() == 3)
      return phase_config(config, {str("model.vit.grid=[", shape[0], ", ", shape[1], "]")});
  return config;
}

FinetuneResult run_finetune(const TrainConfig& given, const FinetuneOptions& options) {
  GPPF_CHECK(!options.run_dir.empty(), "finetune: --out RUN_DIR is required");
  GPPF_CHECK(!options.checkpoint.empty(), "finetune: --checkpoint is required");
  const TrainConfig config = with_pretrained_grid(given, options.checkpoint);
  GPPF_CHECK(options.resume.empty() || options.resume == "auto", "finetune: --resume takes 'auto', got '",
             options.resume, "' (each phase resumes from its own checkpoints in ", options.run_dir, ")");
  const bool root = options.single_process || dist::world_rank_or_zero() == 0;  // writes transfer.json, logs
  fs::create_directories(options.run_dir);
  if (options.from_scratch) return run_from_scratch(config, options, root);
  const fs::path probe_dir = fs::path(options.run_dir) / "probe";
  FinetuneResult result;
  result.probe = run_probe(config, options, probe_dir, root);
  if (result.probe.interrupted) return result;
  run_tune(config, options, resolve_checkpoint(probe_dir.string()), root, result);
  if (root && !result.summary.interrupted) add_phase_times(options.run_dir);
  return result;
}

}  // namespace gppf::train
