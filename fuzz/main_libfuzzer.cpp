// libFuzzer's entry point for the target named by GPPF_FUZZ_TARGET (one binary per target).
#include <cstring>

#include "fuzz/targets.hpp"

namespace {
gppf::fuzz::Entry entry() {
  for (const auto& t : gppf::fuzz::targets())
    if (std::strcmp(t.name, GPPF_FUZZ_TARGET) == 0) return t.entry;
  return nullptr;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const gppf::fuzz::Entry e = entry();
  e(data, size);
  return 0;
}
