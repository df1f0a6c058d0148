#pragma once
// Small helpers of the checkpoint and crash tests: whole files as strings, checkpoint paths of a run
// directory, and the message of an expected error.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

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
