// Finding checkpoints: the published ones of a run directory, the one `--resume auto` takes, and
// what `latest` names (docs/CHECKPOINT_FORMAT.md, "Resuming").
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <utility>

#include "core/error.hpp"
#include "core/log.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/checkpoint_files.hpp"

namespace gppf::train {

namespace fs = std::filesystem;

std::vector<std::string> list_checkpoints(const std::string& run_dir) {
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  std::vector<std::pair<std::int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::int64_t s = ckpt::step_of(e.path().filename().string());
    if (s >= 0 && e.is_regular_file()) found.emplace_back(s, e.path().string());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& [s, p] : found) out.push_back(std::move(p));
  return out;
}

std::string find_resume_checkpoint(const std::string& run_dir) {
  for (const auto& path : list_checkpoints(run_dir)) {
    try {
      (void)verify_checkpoint(path);
      return path;
    } catch (const Error& e) {
      log::warn("--resume auto: skipping ", e.reason());
    }
  }
  return "";
}

std::string resolve_checkpoint(const std::string& file_or_run_dir) {
  const fs::path p(file_or_run_dir);
  if (!fs::is_directory(p)) {
    GPPF_CHECK(fs::exists(p), "checkpoint ", file_or_run_dir, " does not exist");
    return file_or_run_dir;
  }
  const fs::path latest = p / "checkpoints" / "latest";
  std::ifstream in(latest);
  GPPF_CHECK(in, file_or_run_dir,
             " is a directory without checkpoints/latest (not a run directory, or no "
             "checkpoint written yet)");
  std::string name;
  std::getline(in, name);
  GPPF_CHECK(!name.empty(), latest.string(), " is empty");
  return (p / "checkpoints" / name).string();
}

}  // namespace gppf::train
