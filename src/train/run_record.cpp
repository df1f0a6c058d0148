#include "src/train/run_record.hpp"

#include <unistd.h>

#include <array>
#include <ctime>
#include <fstream>

#include "core/error.hpp"
#include "gppf/build_info.hpp"
#include "src/train/config.hpp"

namespace gppf::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

void write_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    GPPF_CHECK(out, tmp.string(), ": cannot write");
    out << text;
    out.flush();
    GPPF_CHECK(out, tmp.string(), ": write failed (disk full?)");
    out.close();
    GPPF_CHECK(out, tmp.string(), ": close failed (disk full?)");
  }
  fs::rename(tmp, path);
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::array<char, 32> buf{};
  std::strftime(buf.data(), buf.size(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf.data();
}

namespace {

std::string host_name() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) return "unknown";
  return buf.data();
}

json build_json() {
  return {{"version", build::kVersion},           {"git", build::kGitSha}, {"git_dirty", build::kGitDirty},
          {"build_type", build::kBuildType},      {"cuda", build::kCuda},  {"onednn", build::kOneDnn},
          {"hdf5_parallel", build::kParallelHdf5}};
}

}  // namespace

RunRecord::RunRecord(const fs::path& run_dir, const TrainConfig& config, const Start& start)
    : m_path(run_dir / "run.json") {
  write_atomically(run_dir / "config.yaml", config.resolved_yaml);
  // A resume appends to the record of the invocations before it; a fresh start (or an unreadable
  // record) starts anew.
  if (std::ifstream in(m_path); start.append && in) {
    try {
      m_doc = json::parse(in);
    } catch (const json::exception&) {
      m_doc = json();
    }
  }
  if (!m_doc.is_object() || !m_doc.contains("invocations") || !m_doc["invocations"].is_array())
    m_doc = {{"config", "config.yaml"}, {"invocations", json::array()}};
  json entry = {{"command_line", start.command_line},
                {"config_file", config.config_path},
                {"gppf", build_json()},
                {"host", host_name()},
                {"ranks", start.ranks},
                {"layout", start.layout},
                {"start_time", utc_now()},
                {"start_step", start.start_step},
                {"resumed_from", start.resumed_from},
                {"status", "running"}};
  m_doc["invocations"].push_back(entry);
  write();
}

void RunRecord::end(const std::string& status, int exit_code, std::int64_t step, const std::string& error) {
  json& e = m_doc["invocations"].back();
  e["status"] = status;
  e["exit_code"] = exit_code;
  e["end_time"] = utc_now();
  e["end_step"] = step;
  e["wall_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - m_start).count();
  if (!error.empty()) e["error"] = error;
  write();
}

// Arguments and errors may hold bytes that are not UTF-8: replaced, not thrown on.
void RunRecord::write() const {
  write_atomically(m_path, m_doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
}

}  // namespace gppf::train
