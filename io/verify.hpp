#pragma once
// Full check of a data set (`gppf inspect`): every shard's size and SHA-256, schema, and every
// sample's CRC and contents.
#include <cstdint>
#include <string>
#include <vector>

#include "io/dataset.hpp"

namespace gppf::io {

struct VerifyOptions {
  bool decode = false;  // also decode every encoded image
};

struct VerifyReport {
  Manifest manifest;
  std::int64_t samples_checked = 0;
  std::vector<std::string> problems;  // each names the file (and the sample)
  bool ok() const { return problems.empty(); }
};

// Throws only when the manifest itself cannot be read; shard problems go to the report.
VerifyReport verify_dataset(const std::string& dir, const VerifyOptions& options = {});

// A human-readable summary: task, classes, image format, splits and shards.
std::string describe(const Manifest& m, const std::string& dir);

}  // namespace gppf::io
