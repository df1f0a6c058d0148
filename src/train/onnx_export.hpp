#pragma once
// `gppf export --format onnx`: one task's inference path (its routed legos, gates and BN statistics,
// then its head) as a static ONNX graph (docs/INTEROP.md). Built only with ONNX and protobuf
// (GPPF_HAVE_ONNX); this header needs neither.
#include <cstdint>
#include <string>
#include <vector>

#include "src/train/inference.hpp"

namespace gppf::train {

struct OnnxValue {
  std::string name;
  std::vector<std::int64_t> shape;  // NCHW or [N, classes]; -1: the batch dimension (dynamic)
};

struct OnnxExportResult {
  OnnxValue input;
  std::vector<OnnxValue> outputs;
  int nodes = 0;
  std::int64_t weight_bytes = 0;
};

inline constexpr int kOnnxOpset = 13;

// Writes task `task` of `model` (loaded on the host in f32) to `path`. The graph passes onnx's own
// checker before it is written; errors name the file.
OnnxExportResult export_onnx(LoadedModel& model, int task, const std::string& path);

}  // namespace gppf::train
