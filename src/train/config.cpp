#include "src/train/config.hpp"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace gppf::train {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// node[key] when node is a mapping that has it, else a null node (yaml-cpp throws on indexing an
// absent node).
YAML::Node child(const YAML::Node& node, const std::string& key) {
  if (!node || !node.IsMap() || !node[key]) return YAML::Node();
  return node[key];
}

// Typed reads that name the key and the file in every error, and refuse unknown keys.
class Reader {
 public:
  explicit Reader(std::string where) : m_where(std::move(where)) {}

  void expect_map(const YAML::Node& node, const std::string& path) const {
    GPPF_CHECK(!node || node.IsNull() || node.IsMap(), m_where, ": key '", path, "' must be a mapping");
  }
  void allow_keys(const YAML::Node& node, const std::string& path, const std::vector<std::string>& known) const {
    if (!node || !node.IsMap()) return;
    for (const auto& kv : node) {
      const std::string key = kv.first.as<std::string>();
      bool ok = false;
      for (const auto& k : known) ok |= k == key;
      GPPF_CHECK(ok, m_where, ": unknown key '", path.empty() ? key : path + "." + key, "' (known here: ", join(known),
                 ")");
    }
  }
  template <class T>
  void get(const YAML::Node& node, const std::string& path, const std::string& key, T& out) const {
    const YAML::Node v = child(node, key);
    if (!v || v.IsNull()) return;
    try {
      out = v.as<T>();
    } catch (const YAML::Exception&) {
      std::ostringstream os;
      os << v;
      GPPF_THROW(m_where, ": key '", path.empty() ? key : path + "." + key, "' has a value of the wrong type: '",
                 os.str(), "'");
    }
  }
  const std::string& where() const { return m_where; }

 private:
  std::string m_where;
};

void set_path(YAML::Node node, const std::vector<std::string>& parts, std::size_t i, const YAML::Node& value,
              const std::string& full) {
  const std::string& part = parts[i];
  if (node.IsSequence()) {
    for (std::size_t j = 0; j < node.size(); ++j) {
      YAML::Node item = node[j];
      if (item.IsMap() && item["name"] && item["name"].as<std::string>() == part) {
        GPPF_CHECK(i + 1 < parts.size(), "--set ", full, ": cannot replace a whole task entry");
        set_path(item, parts, i + 1, value, full);
        return;
      }
    }
    GPPF_THROW("--set ", full, ": no entry named '", part, "' in that list");
  }
  GPPF_CHECK(!node.IsScalar(), "--set ", full, ": '", part, "' is below a plain value");
  if (i + 1 == parts.size()) {
    node[part] = value;
    return;
  }
  if (!node[part]) node[part] = YAML::Node(YAML::NodeType::Map);
  set_path(node[part], parts, i + 1, value, full);
}

void apply_override(YAML::Node& root, const std::string& assignment) {
  const auto eq = assignment.find('=');
  GPPF_CHECK(eq != std::string::npos && eq > 0, "--set ", assignment, ": expected key=value");
  const std::string key = assignment.substr(0, eq);
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string p; std::getline(ss, p, '.');) {
    GPPF_CHECK(!p.empty(), "--set ", assignment, ": empty component in the key");
    parts.push_back(p);
  }
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    GPPF_THROW("--set ", assignment, ": the value is not valid YAML: ", e.msg);
  }
  set_path(root, parts, 0, value, assignment);
}

void read_optimizer(const Reader& r, const YAML::Node& n, optim::OptimizerConfig& o) {
  r.expect_map(n, "optimizer");
  r.allow_keys(n, "optimizer",
               {"type", "lr", "momentum", "nesterov", "weight_decay", "beta1", "beta2", "eps", "trust_coefficient",
                "max_grad_norm"});
  r.get(n, "optimizer", "type", o.type);
  r.get(n, "optimizer", "lr", o.lr);
  r.get(n, "optimizer", "momentum", o.momentum);
  r.get(n, "optimizer", "nesterov", o.nesterov);
  r.get(n, "optimizer", "weight_decay", o.weight_decay);
  r.get(n, "optimizer", "beta1", o.beta1);
  r.get(n, "optimizer", "beta2", o.beta2);
  r.get(n, "optimizer", "eps", o.eps);
  r.get(n, "optimizer", "trust_coefficient", o.trust_coefficient);
  r.get(n, "optimizer", "max_grad_norm", o.max_grad_norm);
  try {
    optim::validate(o);
  } catch (const Error& e) {
    GPPF_THROW(r.where(), ": optimizer: ", e.reason());
  }
}

void read_schedule(const Reader& r, const YAML::Node& n, optim::ScheduleConfig& s) {
  r.expect_map(n, "schedule");
  r.allow_keys(n, "schedule", {"type", "warmup_steps", "warmup_start_factor", "min_lr", "milestones", "gamma"});
  r.get(n, "schedule", "type", s.type);
  r.get(n, "schedule", "warmup_steps", s.warmup_steps);
  r.get(n, "schedule", "warmup_start_factor", s.warmup_start_factor);
  r.get(n, "schedule", "min_lr", s.min_lr);
  r.get(n, "schedule", "milestones", s.milestones);
  r.get(n, "schedule", "gamma", s.gamma);
}

void read_model(const Reader& r, const YAML::Node& n, nn::BackboneSpec& b, nn::NeckSpec& neck) {
  r.expect_map(n, "model");
  r.allow_keys(n, "model",
               {"backbone", "stem_channels", "stages", "legos", "top_k", "shared_legos", "routing", "neck"});
  std::string name = "gppf-mini";
  r.get(n, "model", "backbone", name);
  if (name == "gppf-mini")
    b = nn::BackboneSpec::mini();
  else if (name == "gppf-r50")
    b = nn::BackboneSpec::r50();
  else
    GPPF_THROW(r.where(), ": key 'model.backbone': '", name, "' is not gppf-mini or gppf-r50");
  r.get(n, "model", "stem_channels", b.stem_channels);
  if (!child(n, "stages").IsNull()) {
    std::vector<std::vector<int>> stages;
    r.get(n, "model", "stages", stages);
    b.stages.clear();
    for (const auto& s : stages) {
      GPPF_CHECK(s.size() == 3, r.where(), ": key 'model.stages': each stage is [channels, blocks, stride]");
      b.stages.push_back({s[0], s[1], s[2]});
    }
  }
  r.get(n, "model", "legos", b.num_legos);
  r.get(n, "model", "top_k", b.top_k);
  r.get(n, "model", "shared_legos", b.num_shared);
  GPPF_CHECK(b.num_legos >= 1, r.where(), ": key 'model.legos' must be >= 1, got ", b.num_legos);
  GPPF_CHECK(b.top_k >= 1 && b.top_k <= b.num_legos, r.where(),
             ": key 'model.top_k' must be in [1, legos = ", b.num_legos, "], got ", b.top_k);
  GPPF_CHECK(b.num_shared >= 0, r.where(), ": key 'model.shared_legos' must be >= 0");
  const YAML::Node ro = child(n, "routing");
  r.expect_map(ro, "model.routing");
  r.allow_keys(ro, "model.routing", {"warmup", "warmup_steps", "noise_std", "balance_weight", "init_std"});
  std::string warm = "noisy";
  r.get(ro, "model.routing", "warmup", warm);
  if (warm == "none")
    b.routing.warmup = nn::RoutingOptions::Warmup::None;
  else if (warm == "noisy")
    b.routing.warmup = nn::RoutingOptions::Warmup::Noisy;
  else if (warm == "soft")
    b.routing.warmup = nn::RoutingOptions::Warmup::Soft;
  else
    GPPF_THROW(r.where(), ": key 'model.routing.warmup': '", warm, "' is not none, noisy or soft");
  r.get(ro, "model.routing", "warmup_steps", b.routing.warmup_steps);
  r.get(ro, "model.routing", "noise_std", b.routing.noise_std);
  r.get(ro, "model.routing", "balance_weight", b.routing.balance_weight);
  r.get(ro, "model.routing", "init_std", b.routing.init_std);
  const YAML::Node nk = child(n, "neck");
  r.expect_map(nk, "model.neck");
  r.allow_keys(nk, "model.neck", {"first_stage", "channels"});
  r.get(nk, "model.neck", "first_stage", neck.first_stage);
  r.get(nk, "model.neck", "channels", neck.channels);
  GPPF_CHECK(neck.first_stage >= 0 && neck.first_stage < static_cast<int>(b.stages.size()), r.where(),
             ": key 'model.neck.first_stage' must be in [0, ", b.stages.size(), ")");
}

TaskConfig read_task(const Reader& r, const YAML::Node& n, std::size_t index) {
  const std::string path = str("tasks[", index, "]");
  GPPF_CHECK(n.IsMap(), r.where(), ": ", path, " must be a mapping");
  TaskConfig t;
  r.get(n, path, "name", t.name);
  GPPF_CHECK(!t.name.empty(), r.where(), ": key '", path, ".name' is required");
  const std::string tp = "tasks." + t.name;
  r.allow_keys(
      n, tp, {"name", "type", "dataset", "batch_size", "loss_weight", "sampling_weight", "augment", "max_detections"});
  std::string type;
  r.get(n, tp, "type", type);
  GPPF_CHECK(!type.empty(), r.where(), ": key '", tp, ".type' is required (classification, detection, segmentation)");
  try {
    t.type = io::parse_task(type);
  } catch (const Error&) {
    GPPF_THROW(r.where(), ": key '", tp, ".type': '", type, "' is not classification, detection or segmentation");
  }
  r.get(n, tp, "dataset", t.dataset);
  GPPF_CHECK(!t.dataset.empty(), r.where(), ": key '", tp, ".dataset' is required");
  r.get(n, tp, "batch_size", t.batch_size);
  GPPF_CHECK(t.batch_size >= 1, r.where(), ": key '", tp, ".batch_size' must be >= 1, got ", t.batch_size);
  r.get(n, tp, "loss_weight", t.loss_weight);
  GPPF_CHECK(t.loss_weight >= 0, r.where(), ": key '", tp, ".loss_weight' must be >= 0");
  r.get(n, tp, "sampling_weight", t.sampling_weight);
  GPPF_CHECK(t.sampling_weight > 0 && t.sampling_weight <= 1, r.where(), ": key '", tp,
             ".sampling_weight' must be in (0, 1]");
  r.get(n, tp, "max_detections", t.max_detections);
  const YAML::Node a = child(n, "augment");
  const std::string ap = tp + ".augment";
  r.expect_map(a, ap);
  r.allow_keys(a, ap,
               {"crop_area_min", "crop_area_max", "crop_ratio_min", "crop_ratio_max", "scale_min", "scale_max", "hflip",
                "brightness", "contrast", "saturation", "min_box_visible"});
  io::AugmentConfig& g = t.augment;
  g.enabled = a && a.IsMap() && a.size() > 0;
  r.get(a, ap, "crop_area_min", g.crop_area_min);
  r.get(a, ap, "crop_area_max", g.crop_area_max);
  r.get(a, ap, "crop_ratio_min", g.crop_ratio_min);
  r.get(a, ap, "crop_ratio_max", g.crop_ratio_max);
  r.get(a, ap, "scale_min", g.scale_min);
  r.get(a, ap, "scale_max", g.scale_max);
  r.get(a, ap, "hflip", g.hflip);
  r.get(a, ap, "brightness", g.brightness);
  r.get(a, ap, "contrast", g.contrast);
  r.get(a, ap, "saturation", g.saturation);
  r.get(a, ap, "min_box_visible", g.min_box_visible);
  GPPF_CHECK(g.crop_area_min > 0 && g.crop_area_min <= g.crop_area_max && g.crop_area_max <= 1, r.where(), ": keys '",
             ap, ".crop_area_min/max' must satisfy 0 < min <= max <= 1");
  GPPF_CHECK(g.hflip >= 0 && g.hflip <= 1, r.where(), ": key '", ap, ".hflip' is a probability in [0, 1]");
  return t;
}

}  // namespace

TrainConfig parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                         const std::string& where) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    GPPF_THROW(where, ": not valid YAML: ", e.what());
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  GPPF_CHECK(root.IsMap(), where, ": the top level must be a mapping");
  for (const auto& o : overrides) apply_override(root, o);

  Reader r(where);
  r.allow_keys(root, "",
               {"seed", "steps", "device", "threads", "log_every", "eval_every", "eval_batches", "eval_split",
                "bn_calibration_batches", "loader_workers", "checkpoint_every", "keep_checkpoints",
                "checkpoint_minutes", "optimizer", "schedule", "model", "tasks"});
  TrainConfig c;
  c.config_path = where;
  r.get(root, "", "seed", c.seed);
  r.get(root, "", "steps", c.steps);
  GPPF_CHECK(c.steps >= 1, where, ": key 'steps' must be >= 1, got ", c.steps);
  r.get(root, "", "device", c.device);
  (void)Device::parse(c.device);
  r.get(root, "", "threads", c.threads);
  r.get(root, "", "log_every", c.log_every);
  r.get(root, "", "eval_every", c.eval_every);
  r.get(root, "", "eval_batches", c.eval_batches);
  r.get(root, "", "eval_split", c.eval_split);
  r.get(root, "", "loader_workers", c.loader_workers);
  r.get(root, "", "bn_calibration_batches", c.bn_calibration_batches);
  GPPF_CHECK(c.bn_calibration_batches >= 0, where, ": key 'bn_calibration_batches' must be >= 0");
  GPPF_CHECK(c.log_every >= 1, where, ": key 'log_every' must be >= 1");
  GPPF_CHECK(c.loader_workers >= 1, where, ": key 'loader_workers' must be >= 1");
  r.get(root, "", "checkpoint_every", c.checkpoint_every);
  r.get(root, "", "keep_checkpoints", c.keep_checkpoints);
  GPPF_CHECK(c.checkpoint_every >= 0, where, ": key 'checkpoint_every' must be >= 0 (0: only at the end)");
  GPPF_CHECK(c.keep_checkpoints >= 1, where, ": key 'keep_checkpoints' must be >= 1");
  r.get(root, "", "checkpoint_minutes", c.checkpoint_minutes);
  GPPF_CHECK(c.checkpoint_minutes >= 0, where, ": key 'checkpoint_minutes' must be >= 0 (0: off)");
  read_optimizer(r, child(root, "optimizer"), c.optimizer);
  c.schedule.base_lr = c.optimizer.lr;
  c.schedule.total_steps = c.steps;
  read_schedule(r, child(root, "schedule"), c.schedule);
  try {
    optim::Schedule check(c.schedule);
  } catch (const Error& e) {
    GPPF_THROW(where, ": schedule: ", e.reason());
  }
  read_model(r, child(root, "model"), c.backbone, c.neck);
  const YAML::Node tasks = child(root, "tasks");
  GPPF_CHECK(tasks && tasks.IsSequence() && tasks.size() > 0, where, ": key 'tasks' must be a non-empty list");
  std::set<std::string> names;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    c.tasks.push_back(read_task(r, tasks[i], i));
    GPPF_CHECK(names.insert(c.tasks.back().name).second, where, ": task name '", c.tasks.back().name,
               "' appears twice");
  }
  // Data set paths are relative to the current directory: store them absolute so that the text
  // means the same from anywhere (checkpoints, `gppf eval`).
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    YAML::Node t = tasks[i];
    t["dataset"] = std::filesystem::absolute(c.tasks[i].dataset).lexically_normal().string();
  }
  YAML::Emitter out;
  out << root;
  c.yaml = std::string(out.c_str()) + "\n";
  return c;
}

TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  GPPF_CHECK(in, path, ": cannot read the config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), overrides, path);
}

}  // namespace gppf::train
