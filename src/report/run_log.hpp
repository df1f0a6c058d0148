#pragma once
// What `gppf report` reads from a run directory: metrics.jsonl (train, eval and routing records, one
// JSON object a line, written by the trainer) and summary.json (written at the end of a run).
#include <cstdint>
#include <filesystem>
#include <istream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace gppf::report {

struct TrainPoint {
  std::int64_t step = 0;
  double loss = 0;
  std::optional<double> lr, samples_per_s, balance;
  std::map<std::string, double> parts;  // "loss_<part>" keys, without the prefix
};

struct EvalPoint {
  std::int64_t step = 0;
  std::optional<double> samples;
  std::map<std::string, double> metrics;  // every other numeric key (top1, map50, miou, ...)
};

struct RoutingRecord {
  std::int64_t step = 0;
  std::vector<std::vector<int>> legos;  // per lego layer: the legos the task routed through
  std::vector<int> num_legos;           // per layer, when the trainer wrote it (empty otherwise)
};

struct TaskLog {
  std::string name;
  std::vector<TrainPoint> train;
  std::vector<EvalPoint> eval;
  std::vector<RoutingRecord> routing;
};

struct RunLog {
  std::vector<TaskLog> tasks;  // in order of first appearance
  std::string eval_split;      // the split name of the eval records ("test" unless configured)
  std::int64_t last_step = 0;
  std::size_t lines = 0;  // records read

  TaskLog& task(const std::string& name);
  const TaskLog* find(const std::string& name) const;
};

// Parses metrics.jsonl text; `source` names the file in errors ("<source> line N: ..."). Blank lines are
// skipped; anything else that is not a record with step, task and split throws gppf::Error.
RunLog parse_metrics(std::istream& in, const std::string& source);
RunLog read_metrics(const std::filesystem::path& path);

struct TaskSummary {
  std::string name, type, dataset;
  std::map<std::string, double> metrics;
};

struct RunSummary {
  std::int64_t steps = 0;
  double wall_seconds = 0;
  std::vector<TaskSummary> tasks;
};

// What the report takes from RUN_DIR/config.yaml, the resolved config `gppf train` writes.
struct RunConfig {
  // Lego layer names in the order of a routing record's "legos" (src/nn/backbone.cpp names them):
  // "stage1.block0", ...; empty when the config has no model section.
  std::vector<std::string> layers;
  std::map<std::string, double> loss_weight;  // per task name
  std::string problem;                        // why the file could not be read; empty when it could
};

// Never throws: without config.yaml the report still shows everything else, with plainer labels.
RunConfig parse_run_config(const std::string& yaml_text, const std::string& source);
RunConfig read_run_config(const std::filesystem::path& path);  // an empty RunConfig when there is no file

// std::nullopt when the file does not exist (the run is still going); throws when it is garbled.
std::optional<RunSummary> read_summary(const std::filesystem::path& path);
RunSummary parse_summary(const std::string& text, const std::string& source);

}  // namespace gppf::report
