#pragma once
// The run directory's record of how it was made, written by the root process:
//   RUN_DIR/config.yaml  the resolved config (every key the parser read, defaults written out);
//                        `gppf train --config RUN_DIR/config.yaml` repeats the run
//   RUN_DIR/run.json     one entry per invocation on this directory (a resume adds one): command
//                        line, gppf version and build, host, ranks and layout, start and end time
//                        (UTC), wall seconds, the steps it ran, status and exit code
// An entry is written with status "running" when training starts and rewritten when it ends:
// "finished" (exit 0), "stopped" (a stop signal checkpointed the run: exit 75) or "failed" (exit 1,
// with the error). An entry still "running" belongs to a process that was killed.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace gppf::train {

struct TrainConfig;

// Writes `text` to a temporary file and renames it over `path`: a reader never sees half a file.
// Errors (a full disk) name the file.
void write_atomically(const std::filesystem::path& path, const std::string& text);

class RunRecord {
 public:
  struct Start {
    std::string command_line;  // as typed; empty when not run from the command line
    int ranks = 1;
    std::string layout;  // the executor's description of the distributed layout; empty for one process
    std::int64_t start_step = 0;
    std::string resumed_from;  // checkpoint path, or empty
    bool append = false;       // keep the entries of earlier invocations (--resume)
  };
  RunRecord(const std::filesystem::path& run_dir, const TrainConfig& config, const Start& start);
  // status: "finished", "stopped" or "failed"; error only for "failed".
  void end(const std::string& status, int exit_code, std::int64_t step, const std::string& error = "");

 private:
  void write() const;
  std::filesystem::path m_path;
  nlohmann::json m_doc;
  std::chrono::steady_clock::time_point m_start = std::chrono::steady_clock::now();
};

// The current time as ISO 8601 UTC, to the second ("2026-12-06T17:39:10Z").
std::string utc_now();

}  // namespace gppf::train
