#include "src/report/run_log.hpp"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.hpp"
#include "src/nn/backbone.hpp"

namespace gppf::report {
namespace {

using json = nlohmann::json;

// Thrown inside a line's parser; parse_metrics adds the file name and line number.
struct BadLine {
  std::string reason;
};

std::int64_t get_step(const json& j) {
  const auto it = j.find("step");
  if (it == j.end()) throw BadLine{"no \"step\""};
  if (!it->is_number_integer()) throw BadLine{"\"step\" is not an integer"};
  return it->get<std::int64_t>();
}

std::string get_string(const json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end()) throw BadLine{str("no \"", key, "\"")};
  if (!it->is_string()) throw BadLine{str("\"", key, "\" is not a string")};
  return it->get<std::string>();
}

// A JSON number, or NaN for null (the trainer's json writes a non-finite double as null).
std::optional<double> get_number(const json& j, const std::string& key, bool required) {
  const auto it = j.find(key);
  if (it == j.end()) {
    if (required) throw BadLine{str("no \"", key, "\"")};
    return std::nullopt;
  }
  if (it->is_null()) return std::numeric_limits<double>::quiet_NaN();
  if (!it->is_number()) throw BadLine{str("\"", key, "\" is not a number")};
  return it->get<double>();
}

std::vector<int> get_int_list(const json& j, const char* what) {
  if (!j.is_array()) throw BadLine{str(what, " is not an array")};
  std::vector<int> out;
  for (const auto& v : j) {
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() >= 4096)
      throw BadLine{str(what, " holds ", v.dump(), ", not a lego index")};
    out.push_back(v.get<int>());
  }
  return out;
}

void parse_train(const json& j, TaskLog& t, std::int64_t step) {
  TrainPoint p;
  p.step = step;
  p.loss = *get_number(j, "loss", true);
  p.lr = get_number(j, "lr", false);
  p.samples_per_s = get_number(j, "samples_per_s", false);
  p.balance = get_number(j, "balance", false);
  for (const auto& [k, v] : j.items())
    if (k.rfind("loss_", 0) == 0 && k.size() > 5) p.parts[k.substr(5)] = *get_number(j, k, true);
  t.train.push_back(std::move(p));
}

void parse_routing(const json& j, TaskLog& t, std::int64_t step) {
  RoutingRecord r;
  r.step = step;
  const auto it = j.find("legos");
  if (it == j.end()) throw BadLine{"a routing record without \"legos\""};
  if (!it->is_array()) throw BadLine{"\"legos\" is not an array of layers"};
  for (const auto& layer : *it) r.legos.push_back(get_int_list(layer, "a layer of \"legos\""));
  if (const auto n = j.find("num_legos"); n != j.end()) r.num_legos = get_int_list(*n, "\"num_legos\"");
  t.routing.push_back(std::move(r));
}

void parse_eval(const json& j, TaskLog& t, std::int64_t step) {
  EvalPoint p;
  p.step = step;
  p.samples = get_number(j, "samples", false);
  for (const auto& [k, v] : j.items()) {
    if (k == "step" || k == "task" || k == "split" || k == "samples") continue;
    if (v.is_number()) p.metrics[k] = v.get<double>();
    if (v.is_null()) p.metrics[k] = std::numeric_limits<double>::quiet_NaN();
  }
  t.eval.push_back(std::move(p));
}

std::string clip(const std::string& s) { return s.size() <= 60 ? s : s.substr(0, 57) + "..."; }

}  // namespace

TaskLog& RunLog::task(const std::string& name) {
  for (auto& t : tasks)
    if (t.name == name) return t;
  tasks.push_back(TaskLog{name, {}, {}, {}});
  return tasks.back();
}

const TaskLog* RunLog::find(const std::string& name) const {
  for (const auto& t : tasks)
    if (t.name == name) return &t;
  return nullptr;
}

RunLog parse_metrics(std::istream& in, const std::string& source) {
  RunLog log;
  std::string line;
  std::size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception&) {
        throw BadLine{str("not JSON: '", clip(line), "'")};
      }
      if (!j.is_object()) throw BadLine{"not a JSON object"};
      const std::int64_t step = get_step(j);
      const std::string name = get_string(j, "task");
      const std::string split = get_string(j, "split");
      TaskLog& t = log.task(name);
      if (split == "train") {
        parse_train(j, t, step);
      } else if (split == "routing") {
        parse_routing(j, t, step);
      } else {
        if (log.eval_split.empty()) log.eval_split = split;
        if (split != log.eval_split)
          throw BadLine{str("eval split '", clip(split), "' after '", log.eval_split, "' records")};
        parse_eval(j, t, step);
      }
      log.last_step = std::max(log.last_step, step);
      ++log.lines;
    } catch (const BadLine& e) {
      GPPF_THROW(source, " line ", number, ": ", e.reason);
    } catch (const json::exception& e) {
      GPPF_THROW(source, " line ", number, ": ", e.what());
    }
  }
  if (log.eval_split.empty()) log.eval_split = "test";
  return log;
}

RunLog read_metrics(const std::filesystem::path& path) {
  std::ifstream in(path);
  GPPF_CHECK(in, path.string(), ": cannot read (is this the --out folder of gppf train?)");
  return parse_metrics(in, path.string());
}

RunSummary parse_summary(const std::string& text, const std::string& source) {
  RunSummary s;
  try {
    const json j = json::parse(text);
    GPPF_CHECK(j.is_object(), source, ": not a JSON object");
    if (j.contains("steps")) s.steps = j.at("steps").get<std::int64_t>();
    if (j.contains("wall_seconds")) s.wall_seconds = j.at("wall_seconds").get<double>();
    if (j.contains("tasks")) {
      for (const auto& [name, t] : j.at("tasks").items()) {
        TaskSummary ts;
        ts.name = name;
        ts.type = t.value("type", std::string());
        ts.dataset = t.value("dataset", std::string());
        if (t.contains("metrics"))
          for (const auto& [k, v] : t.at("metrics").items())
            ts.metrics[k] = v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
        s.tasks.push_back(std::move(ts));
      }
    }
  } catch (const json::exception& e) {
    GPPF_THROW(source, ": garbled summary (", e.what(), ")");
  }
  return s;
}

namespace {

// node[key] when the mapping has it, else a null node: yaml-cpp throws on using a missing key's node.
YAML::Node child(const YAML::Node& node, const char* key) {
  return node.IsMap() && node[key] ? node[key] : YAML::Node();
}

}  // namespace

RunConfig parse_run_config(const std::string& yaml_text, const std::string& source) {
  RunConfig c;
  try {
    const YAML::Node root = YAML::Load(yaml_text);
    if (!root.IsMap()) {
      c.problem = source + ": not a YAML mapping";
      return c;
    }
    if (const YAML::Node model = child(root, "model"); model.IsMap()) {
      // Layers are named as the backbone names them; a config without stages uses its backbone's.
      std::vector<int> blocks;
      if (const YAML::Node stages = child(model, "stages"); stages.IsSequence()) {
        for (const auto& st : stages) blocks.push_back(st.IsSequence() && st.size() == 3 ? st[1].as<int>() : 0);
      } else {
        const YAML::Node backbone = child(model, "backbone");
        const auto spec = backbone.IsScalar() && backbone.as<std::string>() == "gppf-r50" ? nn::BackboneSpec::r50()
                                                                                          : nn::BackboneSpec::mini();
        for (const auto& st : spec.stages) blocks.push_back(st.blocks);
      }
      for (std::size_t s = 0; s < blocks.size(); ++s)
        for (int b = 0; b < blocks[s]; ++b) c.layers.push_back(str("stage", s + 1, ".block", b));
    }
    if (const YAML::Node tasks = child(root, "tasks"); tasks.IsSequence())
      for (const auto& t : tasks)
        if (const YAML::Node name = child(t, "name"); name.IsScalar()) {
          const YAML::Node weight = child(t, "loss_weight");
          c.loss_weight[name.as<std::string>()] = weight.IsScalar() ? weight.as<double>() : 1.0;
        }
  } catch (const YAML::Exception& e) {
    c = RunConfig();
    c.problem = str(source, ": ", e.what());
  }
  return c;
}

RunConfig read_run_config(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) return RunConfig();
  std::ifstream in(path);
  if (!in) {
    RunConfig c;
    c.problem = path.string() + ": cannot read";
    return c;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_run_config(ss.str(), path.string());
}

std::optional<RunSummary> read_summary(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) return std::nullopt;
  std::ifstream in(path);
  GPPF_CHECK(in, path.string(), ": cannot read");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_summary(ss.str(), path.string());
}

}  // namespace gppf::report
