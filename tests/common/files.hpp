#pragma once
// Small helpers of the checkpoint and crash tests: whole files as strings, checkpoint paths of a run
// directory, a run's metrics lines, and the message of an expected error.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "src/train/checkpoint.hpp"

namespace gppf::test {

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

inline void write_text(const std::filesystem::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}

// RUN_DIR/checkpoints/step-XXXXXXXX.h5
inline std::string ckpt(const std::filesystem::path& run, std::int64_t step) {
  return (run / "checkpoints" / train::checkpoint_file_name(step)).string();
}

// RUN_DIR/metrics.jsonl without the wall-clock rates: what two runs that trained alike share.
inline std::vector<nlohmann::json> metrics_lines(const std::filesystem::path& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    j.erase("samples_per_s");
    out.push_back(j);
  }
  return out;
}

// The reason of the gppf::Error that `f` throws, "" if none.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.reason();
  }
  return "";
}

}  // namespace gppf::test
