#include "src/train/checkpoint_files.hpp"

#include <cstdio>
#include <regex>

#include "src/train/checkpoint.hpp"

namespace gppf::train {
namespace ckpt {

std::int64_t step_of(const std::string& file_name) {
  static const std::regex re(R"(step-(\d+)\.h5)");
  std::smatch m;
  if (!std::regex_match(file_name, m, re)) return -1;
  return std::stoll(m[1].str());
}

std::pair<std::int64_t, std::int64_t> shard_of(const std::string& file_name) {
  static const std::regex re(R"(step-(\d+)\.rank-(\d+)\.h5)");
  std::smatch m;
  if (!std::regex_match(file_name, m, re)) return {-1, -1};
  return {std::stoll(m[1].str()), std::stoll(m[2].str())};
}

std::filesystem::path rank_file(const std::filesystem::path& dir, std::int64_t step, int rank) {
  return dir / (rank == 0 ? checkpoint_file_name(step) : checkpoint_shard_name(step, rank));
}

std::filesystem::path tmp_of(const std::filesystem::path& p) { return p.string() + ".tmp"; }

}  // namespace ckpt

std::string checkpoint_file_name(std::int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "step-%08lld.h5", static_cast<long long>(step));
  return buf;
}

std::string checkpoint_shard_name(std::int64_t step, int rank) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "step-%08lld.rank-%05d.h5", static_cast<long long>(step), rank);
  return buf;
}

std::int64_t checkpoint_step(const std::string& path) {
  return ckpt::step_of(std::filesystem::path(path).filename().string());
}

}  // namespace gppf::train
