#pragma once
// `gppf report RUN_DIR`: one self-contained HTML page (inline SVG and CSS, no scripts, no network) with
// the run's record (command, version, host, status), its summary, per-task loss and metric curves, the task-by-lego
// usage heat maps, throughput and the learning rate. See docs/REPORT.md.
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "src/report/run_log.hpp"

namespace gppf::report {

struct ReportInput {
  std::string run_dir;                // shown in the header
  RunLog log;                         // from metrics.jsonl
  std::optional<RunSummary> summary;  // from summary.json; nullopt while the run is still going
  // RUN_DIR/run.json (src/train/run_record.hpp): how each invocation was run and ended; null when absent.
  nlohmann::json record = nlohmann::json();
  RunConfig config = {};  // from RUN_DIR/config.yaml: layer names, loss weights
};

std::string render_report(const ReportInput& input);

// A task's loss parts as the loss chart draws them: loss_<part> x its weight in the task's total x the task's
// loss_weight (config.yaml's; inferred from the data without it), so that they add up to the total.
struct WeightedParts {
  std::vector<std::string> names;        // the parts drawn: one equal to the total would hide the total's curve
  std::map<std::string, double> weight;  // per part: its weight in the total x loss_weight
  double loss_weight = 1;
  bool loss_weight_from_config = false;
  double largest_gap = 0;  // the largest |sum of weighted parts - total| / |total| over the points
};
WeightedParts weigh_parts(const TaskLog& task, const RunConfig& config);

// Reads RUN_DIR/metrics.jsonl, and RUN_DIR/summary.json, run.json and config.yaml when present, writes
// RUN_DIR/report.html through a temporary file and a rename, and returns its path. Throws gppf::Error naming the file
// (and line).
std::filesystem::path write_report(const std::filesystem::path& run_dir);

}  // namespace gppf::report
