#pragma once
// `gppf report RUN_DIR`: one self-contained HTML page (inline SVG and CSS, no scripts, no network) with
// the run's record (command, version, host, status), its summary, per-task loss and metric curves, the task-by-lego
// usage heat maps, throughput and the learning rate. See docs/REPORT.md.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "src/report/run_log.hpp"

namespace gppf::report {

struct ReportInput {
  std::string run_dir;                // shown in the header
  RunLog log;                         // from metrics.jsonl
  std::optional<RunSummary> summary;  // from summary.json; nullopt while the run is still going
  // RUN_DIR/run.json (src/train/run_record.hpp): how each invocation was run and ended; null when absent.
  nlohmann::json record = nlohmann::json();
};

std::string render_report(const ReportInput& input);

// Reads RUN_DIR/metrics.jsonl and RUN_DIR/summary.json (optional), writes RUN_DIR/report.html through
// a temporary file and a rename, and returns its path. Throws gppf::Error naming the file (and line).
std::filesystem::path write_report(const std::filesystem::path& run_dir);

}  // namespace gppf::report
