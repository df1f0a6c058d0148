#include "src/train/config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>

#include "core/log.hpp"
#include "core/suggest.hpp"
#include "kernels/functors/routing.hpp"

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

// A mapping key as text. YAML allows a list or a mapping as a key (`? [a, b]: 1`); yaml-cpp's as<string>()
// then threw its own exception past our handlers (fuzzing, fuzz/regressions/config/complex-key.yaml).
std::string key_text(const std::string& where, const YAML::Node& key, const std::string& path) {
  GPPF_CHECK(key.IsScalar(), where, ": a key ", path.empty() ? std::string("at the top level") : "in '" + path + "'",
             " is a YAML ",
             key.IsSequence() ? "list"
             : key.IsMap()    ? "mapping"
                              : "null",
             ", not a name (line ", key.Mark().line + 1, ")");
  return key.Scalar();
}

// Typed reads that name the key and the file in every error, and refuse unknown keys.
class Reader {
 public:
  explicit Reader(std::string where) : m_where(std::move(where)) {}

  // The same reader, not recording defaults: for a section whose absence means "off" (augment).
  Reader without_defaults() const {
    Reader r = *this;
    r.m_record = false;
    return r;
  }
  // Every key read but absent, as (dotted path, the default it took): the run record's resolved config.
  const std::vector<std::pair<std::string, YAML::Node>>& defaults() const { return *m_defaults; }

  void expect_map(const YAML::Node& node, const std::string& path) const {
    GPPF_CHECK(!node || node.IsNull() || node.IsMap(), m_where, ": key '", path, "' must be a mapping");
  }
  void allow_keys(const YAML::Node& node, const std::string& path, const std::vector<std::string>& known) const {
    if (!node || !node.IsMap()) return;
    for (const auto& kv : node) {
      const std::string key = key_text(m_where, kv.first, path);
      bool ok = false;
      for (const auto& k : known) ok |= k == key;
      GPPF_CHECK(ok, m_where, ": unknown key '", path.empty() ? key : path + "." + key, "'", did_you_mean(key, known),
                 " (known here: ", join(known), ")");
    }
  }
  template <class T>
  void get(const YAML::Node& node, const std::string& path, const std::string& key, T& out) const {
    const YAML::Node v = child(node, key);
    if (!v || v.IsNull()) {
      if (m_record) m_defaults->emplace_back(path.empty() ? key : path + "." + key, YAML::Node(out));
      return;
    }
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
  bool m_record = true;
  std::shared_ptr<std::vector<std::pair<std::string, YAML::Node>>> m_defaults =
      std::make_shared<std::vector<std::pair<std::string, YAML::Node>>>();
};

// yaml-cpp keeps both entries of a repeated key and node[key] returns the first, so a second value
// would be ignored without a word: refuse it, naming the key and its line.
void reject_duplicate_keys(const YAML::Node& node, const std::string& path, const std::string& where) {
  if (node.IsSequence()) {
    for (std::size_t i = 0; i < node.size(); ++i) reject_duplicate_keys(node[i], str(path, "[", i, "]"), where);
    return;
  }
  if (!node.IsMap()) return;
  std::set<std::string> seen;
  for (const auto& kv : node) {
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : std::string();
    const std::string full = path.empty() ? key : path + "." + key;
    GPPF_CHECK(key.empty() || seen.insert(key).second, where, ":", kv.first.Mark().line + 1, ": key '", full,
               "' is given twice");
    reject_duplicate_keys(kv.second, full, where);
  }
}

void set_path(YAML::Node node, const std::vector<std::string>& parts, std::size_t i, const YAML::Node& value,
              const std::string& full) {
  const std::string& part = parts[i];
  if (node.IsSequence()) {
    std::vector<std::string> names;
    for (std::size_t j = 0; j < node.size(); ++j) {
      YAML::Node item = node[j];
      if (!item.IsMap() || !item["name"] || !item["name"].IsScalar()) continue;
      names.push_back(item["name"].Scalar());
      if (names.back() == part) {
        GPPF_CHECK(i + 1 < parts.size(), "--set ", full, ": cannot replace a whole task entry");
        set_path(item, parts, i + 1, value, full);
        return;
      }
    }
    GPPF_THROW("--set ", full, ": no entry named '", part, "' in that list", did_you_mean(part, names),
               " (there: ", join(names), ")");
  }
  GPPF_CHECK(!node.IsScalar(), "--set ", full, ": '", part, "' is below a plain value");
  if (i + 1 == parts.size()) {
    node[part] = value;
    return;
  }
  if (!node[part]) node[part] = YAML::Node(YAML::NodeType::Map);
  set_path(node[part], parts, i + 1, value, full);
}

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
  return parts;
}

void apply_override(YAML::Node& root, const std::string& assignment) {
  const auto eq = assignment.find('=');
  GPPF_CHECK(eq != std::string::npos && eq > 0, "--set ", assignment, ": expected key=value");
  const std::string key = assignment.substr(0, eq);
  const std::vector<std::string> parts = split_key(key);
  for (const auto& p : parts) GPPF_CHECK(!p.empty(), "--set ", assignment, ": empty component in the key");
  // YAML reads "" as null, which every key takes as "keep the default": a typo'd or unset shell
  // variable would silently drop the override.
  GPPF_CHECK(eq + 1 < assignment.size(), "--set ", assignment, ": empty value for key '", key,
             "' (drop the --set to keep the config's value)");
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

// model.vit: gppf-vit's layout (docs/CONFIG.md).
void read_vit(const Reader& r, const YAML::Node& vn, nn::VitSpec& v) {
  r.expect_map(vn, "model.vit");
  r.allow_keys(vn, "model.vit", {"patch", "dim", "depth", "heads", "mlp_hidden", "grid", "pool"});
  r.get(vn, "model.vit", "pool", v.pool);
  GPPF_CHECK(v.pool == "grid" || v.pool == "mean" || v.pool == "token", r.where(), ": key 'model.vit.pool': '", v.pool,
             "' is not grid, mean or token");
  r.get(vn, "model.vit", "patch", v.patch);
  r.get(vn, "model.vit", "dim", v.dim);
  r.get(vn, "model.vit", "depth", v.depth);
  r.get(vn, "model.vit", "heads", v.heads);
  r.get(vn, "model.vit", "mlp_hidden", v.mlp_hidden);
  if (!child(vn, "grid").IsNull()) {
    std::vector<int> grid;
    r.get(vn, "model.vit", "grid", grid);
    GPPF_CHECK(grid.size() == 2 && grid[0] > 0 && grid[1] > 0, r.where(),
               ": key 'model.vit.grid' is [rows, columns] of tokens, both positive");
    v.grid_h = grid[0];
    v.grid_w = grid[1];
  }
  GPPF_CHECK(v.patch > 0 && v.dim > 0 && v.depth > 0 && v.heads > 0 && v.dim % v.heads == 0 && v.mlp_hidden >= 0,
             r.where(), ": keys 'model.vit': patch ", v.patch, ", dim ", v.dim, ", depth ", v.depth, " and heads ",
             v.heads, " must be positive, dim a multiple of heads");
}

// model.neck.pyramid: the simple feature pyramid's scales (gppf-vit only; its default [2, 1, 0.5]),
// kept as log2 exponents. [] turns it off (the neck reads the token map alone).
void read_pyramid(const Reader& r, const YAML::Node& nk, const nn::BackboneSpec& b, nn::NeckSpec& neck) {
  neck.pyramid.clear();
  if (b.vit) neck.pyramid = {1, 0, -1};
  if (child(nk, "pyramid").IsNull()) return;
  GPPF_CHECK(b.vit, r.where(), ": key 'model.neck.pyramid' is for model.backbone: gppf-vit");
  std::vector<double> scales;
  r.get(nk, "model.neck", "pyramid", scales);
  neck.pyramid.clear();
  for (double scale : scales) {
    const int e = static_cast<int>(std::lround(std::log2(scale > 0 ? scale : 1e-30)));
    GPPF_CHECK(scale > 0 && e >= -4 && e <= 3 && std::ldexp(1.0, e) == scale &&
                   (neck.pyramid.empty() || e < neck.pyramid.back()),
               r.where(),
               ": key 'model.neck.pyramid': scales must be powers of two from 0.0625 to 8, fine to coarse "
               "without repeats, got ",
               scale);
    neck.pyramid.push_back(e);
  }
  for (int e : neck.pyramid)
    GPPF_CHECK(e <= 0 || b.vit->dim % (1 << e) == 0, r.where(), ": key 'model.neck.pyramid': scale ", 1 << e,
               " halves model.vit.dim ", b.vit->dim, " ", e, " times");
}

void read_model(const Reader& r, const YAML::Node& n, nn::BackboneSpec& b, nn::NeckSpec& neck) {
  r.expect_map(n, "model");
  r.allow_keys(n, "model",
               {"backbone", "stem_channels", "stages", "legos", "top_k", "shared_legos", "routing", "neck", "vit"});
  std::string name = "gppf-mini";
  r.get(n, "model", "backbone", name);
  if (name == "gppf-mini")
    b = nn::BackboneSpec::mini();
  else if (name == "gppf-r50")
    b = nn::BackboneSpec::r50();
  else if (name == "gppf-vit")
    b = nn::BackboneSpec::vit_mini();
  else
    GPPF_THROW(r.where(), ": key 'model.backbone': '", name, "' is not gppf-mini, gppf-r50 or gppf-vit");
  const YAML::Node vn = child(n, "vit");
  GPPF_CHECK(vn.IsNull() || b.vit, r.where(), ": key 'model.vit' is for model.backbone: gppf-vit");
  if (b.vit) read_vit(r, vn, *b.vit);
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
  // The router's gradient kernel carries a route's values in its parameters (kernels/routing.hpp).
  GPPF_CHECK(b.num_legos + b.num_shared <= kernels::kMaxRouteEntries, r.where(),
             ": keys 'model.legos' + "
             "'model.shared_legos' must be at most ",
             kernels::kMaxRouteEntries, ", got ", b.num_legos + b.num_shared);
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
  r.allow_keys(nk, "model.neck", {"first_stage", "channels", "pyramid"});
  r.get(nk, "model.neck", "first_stage", neck.first_stage);
  r.get(nk, "model.neck", "channels", neck.channels);
  read_pyramid(r, nk, b, neck);
  // A ViT's one output, the token map, or the levels of its simple feature pyramid.
  const int stages =
      b.vit ? std::max<int>(1, static_cast<int>(neck.pyramid.size())) : static_cast<int>(b.stages.size());
  GPPF_CHECK(neck.first_stage >= 0 && neck.first_stage < stages, r.where(),
             ": key 'model.neck.first_stage' must be in [0, ", stages, ")");
}

void read_finetune(const Reader& r, const YAML::Node& n, FinetuneConfig& f) {
  r.expect_map(n, "finetune");
  r.allow_keys(n, "finetune", {"probe_steps", "probe_lr", "freeze_backbone"});
  r.get(n, "finetune", "probe_steps", f.probe_steps);
  r.get(n, "finetune", "probe_lr", f.probe_lr);
  r.get(n, "finetune", "freeze_backbone", f.freeze_backbone);
  GPPF_CHECK(f.probe_steps >= 1, r.where(), ": key 'finetune.probe_steps' must be >= 1, got ", f.probe_steps);
  GPPF_CHECK(f.probe_lr > 0, r.where(), ": key 'finetune.probe_lr' must be > 0, got ", f.probe_lr);
}

// Deep-merges mapping `src` into `dst`: mappings merge key by key, anything else replaces.
void merge_into(YAML::Node dst, const YAML::Node& src) {
  if (!src || !src.IsMap()) return;
  for (const auto& kv : src) {
    const std::string key = key_text("the fine-tune config", kv.first, "");
    const YAML::Node existing = child(dst, key);
    if (kv.second.IsMap() && existing && existing.IsMap())
      merge_into(dst[key], kv.second);
    else
      dst[key] = YAML::Clone(kv.second);
  }
}

std::string stages_text(const std::vector<nn::StageSpec>& stages) {
  std::string s = "[";
  for (const auto& st : stages)
    s += str(s.size() > 1 ? ", " : "", "[", st.channels, ", ", st.blocks, ", ", st.stride, "]");
  return s + "]";
}

const char* warmup_text(nn::RoutingOptions::Warmup w) {
  switch (w) {
    case nn::RoutingOptions::Warmup::None: return "none";
    case nn::RoutingOptions::Warmup::Noisy: return "noisy";
    case nn::RoutingOptions::Warmup::Soft: return "soft";
  }
  return "?";
}

std::string pyramid_text(const std::vector<int>& exponents) {
  std::string s = "[";
  for (int e : exponents) s += str(s.size() > 1 ? ", " : "", std::ldexp(1.0, e));
  return s + "]";
}

std::string vit_text(const std::optional<nn::VitSpec>& v) {
  if (!v) return "none";
  return str("{patch: ", v->patch, ", dim: ", v->dim, ", depth: ", v->depth, ", heads: ", v->heads,
             ", mlp_hidden: ", v->mlp_hidden, ", pool: ", v->pool, "}");
}

struct ModelSection {
  nn::BackboneSpec backbone;
  nn::NeckSpec neck;
};

// The first model key whose effective value differs, with both values as text; empty when they agree.
struct Difference {
  std::string key, mine, theirs;
};
Difference first_difference(const ModelSection& a, const ModelSection& b) {
  const nn::BackboneSpec &x = a.backbone, &y = b.backbone;
  const std::vector<Difference> all = {
      {"backbone", x.name, y.name},
      {"stem_channels", str(x.stem_channels), str(y.stem_channels)},
      {"stages", stages_text(x.stages), stages_text(y.stages)},
      {"legos", str(x.num_legos), str(y.num_legos)},
      {"top_k", str(x.top_k), str(y.top_k)},
      {"shared_legos", str(x.num_shared), str(y.num_shared)},
      {"routing.warmup", warmup_text(x.routing.warmup), warmup_text(y.routing.warmup)},
      {"routing.warmup_steps", str(x.routing.warmup_steps), str(y.routing.warmup_steps)},
      {"routing.noise_std", str(x.routing.noise_std), str(y.routing.noise_std)},
      {"routing.balance_weight", str(x.routing.balance_weight), str(y.routing.balance_weight)},
      {"routing.init_std", str(x.routing.init_std), str(y.routing.init_std)},
      {"neck.first_stage", str(a.neck.first_stage), str(b.neck.first_stage)},
      {"neck.channels", str(a.neck.channels), str(b.neck.channels)},
      {"neck.pyramid", pyramid_text(a.neck.pyramid), pyramid_text(b.neck.pyramid)},
      {"vit", vit_text(x.vit), vit_text(y.vit)},
  };
  for (const auto& d : all)
    if (d.mine != d.theirs) return d;
  return {};
}

constexpr const char* kTaskNameChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";

TaskConfig read_task(const Reader& r, const YAML::Node& n, std::size_t index) {
  const std::string path = str("tasks[", index, "]");
  GPPF_CHECK(n.IsMap(), r.where(), ": ", path, " must be a mapping");
  TaskConfig t;
  r.get(n, path, "name", t.name);
  GPPF_CHECK(!t.name.empty(), r.where(), ": key '", path, ".name' is required");
  // The name becomes part of file and HDF5 group names (checkpoints, reports) and of --set paths.
  GPPF_CHECK(t.name.find_first_not_of(kTaskNameChars) == std::string::npos, r.where(), ": key '", path, ".name': '",
             t.name, "' may use only letters, digits, '_' and '-'");
  const std::string tp = "tasks." + t.name;
  r.allow_keys(n, tp,
               {"name", "type", "dataset", "batch_size", "loss_weight", "sampling_weight", "augment", "max_detections",
                "context_levels"});
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
  r.get(n, tp, "context_levels", t.context_levels);
  if (t.type == io::TaskType::Classification) {
    GPPF_CHECK(t.context_levels == -1, r.where(), ": key '", tp,
               ".context_levels' applies to detection and segmentation tasks only");
  } else {
    if (t.context_levels == -1) t.context_levels = t.type == io::TaskType::Segmentation ? 3 : 0;
    GPPF_CHECK(t.context_levels >= 0 && t.context_levels <= 6, r.where(), ": key '", tp,
               ".context_levels' must be in [0, 6], got ", t.context_levels);
  }
  const YAML::Node a = child(n, "augment");
  const std::string ap = tp + ".augment";
  r.expect_map(a, ap);
  r.allow_keys(a, ap,
               {"crop_area_min", "crop_area_max", "crop_ratio_min", "crop_ratio_max", "scale_min", "scale_max", "hflip",
                "brightness", "contrast", "saturation", "min_box_visible"});
  io::AugmentConfig& g = t.augment;
  g.enabled = a && a.IsMap() && a.size() > 0;
  // Written out, an absent section's defaults would turn augmentation on.
  const Reader ar = g.enabled ? r : r.without_defaults();
  ar.get(a, ap, "crop_area_min", g.crop_area_min);
  ar.get(a, ap, "crop_area_max", g.crop_area_max);
  ar.get(a, ap, "crop_ratio_min", g.crop_ratio_min);
  ar.get(a, ap, "crop_ratio_max", g.crop_ratio_max);
  ar.get(a, ap, "scale_min", g.scale_min);
  ar.get(a, ap, "scale_max", g.scale_max);
  ar.get(a, ap, "hflip", g.hflip);
  ar.get(a, ap, "brightness", g.brightness);
  ar.get(a, ap, "contrast", g.contrast);
  ar.get(a, ap, "saturation", g.saturation);
  ar.get(a, ap, "min_box_visible", g.min_box_visible);
  GPPF_CHECK(g.crop_area_min > 0 && g.crop_area_min <= g.crop_area_max && g.crop_area_max <= 1, r.where(), ": keys '",
             ap, ".crop_area_min/max' must satisfy 0 < min <= max <= 1");
  GPPF_CHECK(g.hflip >= 0 && g.hflip <= 1, r.where(), ": key '", ap, ".hflip' is a probability in [0, 1]");
  return t;
}

YAML::Node load_root(const std::string& yaml_text, const std::vector<std::string>& overrides,
                     const std::string& where) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    GPPF_THROW(where, ": not valid YAML: ", e.what());
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  GPPF_CHECK(root.IsMap(), where, ": the top level must be a mapping");
  reject_duplicate_keys(root, "", where);
  for (const auto& o : overrides) apply_override(root, o);
  return root;
}

// The top-level scalar keys: run length, device, logging, evaluation and checkpoint cadence.
void read_run_keys(Reader& r, const YAML::Node& root, const std::string& where, TrainConfig& c) {
  r.get(root, "", "seed", c.seed);
  r.get(root, "", "steps", c.steps);
  GPPF_CHECK(c.steps >= 1, where, ": key 'steps' must be >= 1, got ", c.steps);
  r.get(root, "", "device", c.device);
  try {
    c.target_device = Device::parse(c.device);
  } catch (const Error& e) {
    GPPF_THROW(where, ": key 'device': ", e.reason());
  }
  r.get(root, "", "tf32", c.tf32);
  r.get(root, "", "precision", c.precision);
  GPPF_CHECK(c.precision == "fp32" || c.precision == "bf16", where, ": key 'precision': '", c.precision,
             "' is not fp32 or bf16");
  GPPF_CHECK(c.precision == "fp32" || c.target_device.is_cuda(), where,
             ": key 'precision': bf16 trains on CUDA only (device is ", c.device, ")");
  r.get(root, "", "lego_strategy", c.lego_strategy);
  GPPF_CHECK(c.lego_strategy == "auto" || c.lego_strategy == "merged" || c.lego_strategy == "per-lego", where,
             ": key 'lego_strategy': '", c.lego_strategy, "' is not auto, merged or per-lego");
  r.get(root, "", "task_batching", c.task_batching);
  GPPF_CHECK(c.task_batching == "auto" || c.task_batching == "on" || c.task_batching == "off", where,
             ": key 'task_batching': '", c.task_batching, "' is not auto, on or off");
  r.get(root, "", "deterministic", c.deterministic);
  GPPF_CHECK(!c.deterministic || c.task_batching != "on", where,
             ": key 'task_batching': on is not deterministic across layouts (a rank batches only its own tasks); "
             "use off or auto with deterministic: true");
  if (c.deterministic) c.task_batching = "off";
  r.get(root, "", "cuda_graphs", c.cuda_graphs);
  GPPF_CHECK(c.cuda_graphs == "on" || c.cuda_graphs == "off", where, ": key 'cuda_graphs': '", c.cuda_graphs,
             "' is not on or off");
  GPPF_CHECK(c.cuda_graphs == "off" || !c.deterministic, where,
             ": key 'cuda_graphs': on captures all tasks' passes together; deterministic: true runs them one by one");
  GPPF_CHECK(c.cuda_graphs == "off" || c.lego_strategy != "merged", where,
             ": key 'cuda_graphs': the merged lego strategy reads values back mid-pass and cannot be captured; use "
             "lego_strategy: per-lego or auto");
  r.get(root, "", "threads", c.threads);
  GPPF_CHECK(c.threads >= 0, where, ": key 'threads' must be >= 0 (0: the OpenMP default), got ", c.threads);
  r.get(root, "", "log_every", c.log_every);
  r.get(root, "", "eval_every", c.eval_every);
  r.get(root, "", "eval_batches", c.eval_batches);
  r.get(root, "", "final_eval_batches", c.final_eval_batches);
  GPPF_CHECK(c.eval_batches >= 0, where, ": key 'eval_batches' must be >= 0 (0: the whole split)");
  GPPF_CHECK(c.final_eval_batches >= 0, where, ": key 'final_eval_batches' must be >= 0 (0: the whole splits)");
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
  r.get(root, "", "checkpoint_async", c.checkpoint_async);
  r.get(root, "", "max_nonfinite_steps", c.max_nonfinite_steps);
  GPPF_CHECK(c.max_nonfinite_steps >= 1, where, ": key 'max_nonfinite_steps' must be >= 1");
  GPPF_CHECK(c.checkpoint_minutes >= 0, where, ": key 'checkpoint_minutes' must be >= 0 (0: off)");
}

void read_distributed(Reader& r, const YAML::Node& d, const std::string& where, DistributedConfig& dc) {
  if (d && d.IsScalar()) {  // `distributed: auto`
    GPPF_CHECK(d.Scalar() == "auto", where, ": key 'distributed' is 'auto' or a mapping, got '", d.Scalar(), "'");
    dc.auto_layout = true;
    return;
  }
  r.expect_map(d, "distributed");
  r.allow_keys(d, "distributed",
               {"layout", "task_groups", "expert_parallel", "replicas", "watchdog_seconds", "bucket_mb"});
  std::string layout = "manual";
  r.get(d, "distributed", "layout", layout);
  GPPF_CHECK(layout == "auto" || layout == "manual", where, ": key 'distributed.layout' is auto or manual, got '",
             layout, "'");
  dc.auto_layout = layout == "auto";
  for (const char* k : {"task_groups", "expert_parallel", "replicas"})
    GPPF_CHECK(!dc.auto_layout || child(d, k).IsNull(), where, ": key 'distributed.", k,
               "' is chosen by layout: auto; remove it, or write the whole layout by hand (layout: manual)");
  if (!dc.auto_layout) {  // read (and written out in the resolved config) only when written by hand
    r.get(d, "distributed", "task_groups", dc.task_groups);
    r.get(d, "distributed", "expert_parallel", dc.expert_parallel);
    r.get(d, "distributed", "replicas", dc.replicas);
  }
  r.get(d, "distributed", "watchdog_seconds", dc.watchdog_seconds);
  r.get(d, "distributed", "bucket_mb", dc.bucket_mb);
  GPPF_CHECK(dc.task_groups >= 0, where, ": key 'distributed.task_groups' must be >= 0 (0: one per rank)");
  GPPF_CHECK(dc.expert_parallel >= 1, where, ": key 'distributed.expert_parallel' must be >= 1");
  GPPF_CHECK(dc.replicas >= 1, where, ": key 'distributed.replicas' must be >= 1");
  GPPF_CHECK(dc.watchdog_seconds > 0, where, ": key 'distributed.watchdog_seconds' must be > 0");
  GPPF_CHECK(dc.bucket_mb > 0, where, ": key 'distributed.bucket_mb' must be > 0");
}

// A relative data set path names a folder below data.dir (the config file's folder, or --data-root;
// empty: the working directory). For configs written before that rule, a path found only below the
// working directory is still accepted, with a warning that says how to write it.
std::string resolve_dataset(const std::string& dataset, const DataPaths& data, const std::string& what) {
  namespace fs = std::filesystem;
  const fs::path p(dataset);
  if (p.is_absolute() || data.dir.empty()) return fs::absolute(p).lexically_normal().string();
  const fs::path below = (fs::absolute(data.dir) / p).lexically_normal();
  if (data.cwd_fallback && !fs::exists(below) && fs::exists(p)) {
    const fs::path cwd = fs::absolute(p).lexically_normal();
    log::warn(what, ": dataset '", dataset, "' is not in the config's folder (", below.string(),
              ") but is in the working directory: using ", cwd.string(), "; write it as ",
              fs::relative(cwd, fs::absolute(data.dir)).string(), " or pass --data-root");
    return cwd.string();
  }
  return below.string();
}

// The task list; data set paths are stored absolute in `tasks` (the resolved YAML) so that the text
// means the same from anywhere (checkpoints, `gppf eval`).
void read_tasks(Reader& r, YAML::Node tasks, const std::string& where, const DataPaths& data, TrainConfig& c) {
  GPPF_CHECK(tasks && tasks.IsSequence() && tasks.size() > 0, where, ": key 'tasks' must be a non-empty list");
  std::set<std::string> names;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    c.tasks.push_back(read_task(r, tasks[i], i));
    GPPF_CHECK(names.insert(c.tasks.back().name).second, where, ": task name '", c.tasks.back().name,
               "' appears twice");
  }
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    c.tasks[i].dataset = resolve_dataset(c.tasks[i].dataset, data, str(where, ": task ", c.tasks[i].name));
    YAML::Node t = tasks[i];
    t["dataset"] = c.tasks[i].dataset;
  }
}

// One style for every mapping and list, whether it came from the file (often flow) or from a
// default: the resolved text is then the same however the config was written.
void block_style(YAML::Node node) {
  if (!node.IsMap() && !node.IsSequence()) return;
  node.SetStyle(YAML::EmitterStyle::Block);
  if (node.IsMap())
    for (auto kv : node) block_style(kv.second);
  else
    for (auto item : node) block_style(item);
}

TrainConfig parse_root(YAML::Node root, const std::string& where, const DataPaths& data) {
  Reader r(where);
  r.allow_keys(root, "",
               {"seed",
                "steps",
                "device",
                "tf32",
                "precision",
                "lego_strategy",
                "task_batching",
                "deterministic",
                "cuda_graphs",
                "threads",
                "log_every",
                "eval_every",
                "eval_batches",
                "final_eval_batches",
                "bn_calibration_batches",
                "loader_workers",
                "checkpoint_every",
                "keep_checkpoints",
                "checkpoint_minutes",
                "checkpoint_async",
                "max_nonfinite_steps",
                "optimizer",
                "schedule",
                "model",
                "tasks",
                "distributed",
                "finetune"});
  TrainConfig c;
  c.config_path = where;
  read_run_keys(r, root, where, c);
  read_optimizer(r, child(root, "optimizer"), c.optimizer);
  c.schedule.base_lr = c.optimizer.lr;
  c.schedule.total_steps = c.steps;
  read_schedule(r, child(root, "schedule"), c.schedule);
  // The common case of a short trial run (--set steps=5): name both keys and the way out.
  GPPF_CHECK(c.schedule.type != "cosine" || c.steps > c.schedule.warmup_steps, "steps (", c.steps,
             ") must exceed schedule.warmup_steps (", c.schedule.warmup_steps,
             ") for the cosine schedule: shorten the warm-up as well, e.g. --set schedule.warmup_steps=", c.steps / 10,
             " (config ", where, ")");
  try {
    optim::Schedule check(c.schedule);
  } catch (const Error& e) {
    GPPF_THROW(where, ": ", e.reason());  // the schedule names itself
  }
  c.model_given = !child(root, "model").IsNull();
  read_model(r, child(root, "model"), c.backbone, c.neck);
  read_finetune(r, child(root, "finetune"), c.finetune);
  read_distributed(r, child(root, "distributed"), where, c.distributed);
  read_tasks(r, child(root, "tasks"), where, data, c);
  YAML::Emitter out;
  out << root;
  c.yaml = std::string(out.c_str()) + "\n";
  YAML::Node resolved = YAML::Clone(root);
  for (const auto& [key, value] : r.defaults()) set_path(resolved, split_key(key), 0, value, key);
  block_style(resolved);
  YAML::Emitter all;
  all << resolved;
  c.resolved_yaml = std::string(all.c_str()) + "\n";
  return c;
}

}  // namespace

TrainConfig parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                         const std::string& where, const DataPaths& data) {
  return parse_root(load_root(yaml_text, overrides, where), where, data);
}

TrainConfig parse_finetune_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                                  const std::string& where, const std::string& pretrained_yaml,
                                  const std::string& pretrained_where, const DataPaths& data) {
  YAML::Node root = load_root(yaml_text, overrides, where);
  const YAML::Node pretrained = load_root(pretrained_yaml, {}, pretrained_where);
  const YAML::Node theirs = child(pretrained, "model");
  ModelSection pre;
  read_model(Reader(pretrained_where), theirs, pre.backbone, pre.neck);
  const YAML::Node mine = child(root, "model");
  if (mine && !mine.IsNull()) {
    // The fine-tune config's keys laid over the pre-trained section: only keys it gives can differ.
    const Reader r(where);
    r.expect_map(mine, "model");
    YAML::Node overlay = theirs && theirs.IsMap() ? YAML::Clone(theirs) : YAML::Node(YAML::NodeType::Map);
    merge_into(overlay, mine);
    ModelSection given;
    read_model(r, overlay, given.backbone, given.neck);
    const Difference d = first_difference(given, pre);
    GPPF_CHECK(d.key.empty(), where, ": key 'model.", d.key, "' is ", d.mine, " but the pre-trained network (",
               pretrained_where, ") has ", d.theirs,
               "; the backbone comes from the checkpoint: drop the key or match it");
  }
  if (theirs && !theirs.IsNull())
    root["model"] = YAML::Clone(theirs);
  else if (root.IsMap() && child(root, "model"))
    root.remove("model");
  return parse_root(root, where, data);
}

// The text of the config file `path` (one-line error naming it when unreadable).
static std::string read_config_file(const std::string& path) {
  std::ifstream in(path);
  GPPF_CHECK(in, path, ": cannot read the config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

DataPaths data_paths_of(const std::string& config_path, const std::string& data_root) {
  if (!data_root.empty()) {
    GPPF_CHECK(std::filesystem::is_directory(data_root), "--data-root ", data_root, " is not a folder");
    return {data_root, false};
  }
  return {std::filesystem::absolute(config_path).parent_path().string(), true};
}

TrainConfig load_finetune_config(const std::string& path, const std::vector<std::string>& overrides,
                                 const std::string& pretrained_yaml, const std::string& pretrained_where,
                                 const std::string& data_root) {
  return parse_finetune_config(read_config_file(path), overrides, path, pretrained_yaml, pretrained_where,
                               data_paths_of(path, data_root));
}

TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides,
                        const std::string& data_root) {
  return parse_config(read_config_file(path), overrides, path, data_paths_of(path, data_root));
}

}  // namespace gppf::train
