#include "core/error.hpp"
#include "io/convert.hpp"
#include "io/random.hpp"

namespace gppf::io {

std::string derive_split(std::uint64_t seed, std::int64_t index, double val_fraction, double test_fraction) {
  GPPF_CHECK(val_fraction >= 0 && val_fraction < 1 && test_fraction >= 0 && test_fraction < 1,
             "convert: --val-fraction ", val_fraction, " and --test-fraction ", test_fraction, " must be in [0, 1)");
  Rng rng(hash_seed({seed, static_cast<std::uint64_t>(index), 0x5a17ULL}));
  const double u = rng.uniform();
  if (u < test_fraction) return "test";
  // val is a fraction of what test left, so that adding a test split does not shrink val's share
  if ((u - test_fraction) / (1 - test_fraction) < val_fraction) return "val";
  return "train";
}

std::string carve_split(const ConvertOptions& opt, const std::string& source_split, std::uint64_t key,
                        bool source_has_val, bool source_has_test) {
  if (!source_split.empty() && source_split != "train") return source_split;
  return derive_split(opt.seed, static_cast<std::int64_t>(key), source_has_val ? 0.0 : opt.val_fraction,
                      source_has_test ? 0.0 : opt.test_fraction);
}

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace gppf::io

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "io/file_util.hpp"

namespace gppf::io {

std::vector<std::string> list_images(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (ext == ".png" || ext == ".jpg" || ext == ".jpeg") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  // A folder opens as a stream, and reading it throws std::ios_base::failure, not our Error.
  GPPF_CHECK(std::filesystem::is_regular_file(path), "cannot read ", path, ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  GPPF_CHECK(in, "cannot read ", path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace gppf::io
