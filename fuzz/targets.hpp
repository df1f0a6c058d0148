#pragma once
// The fuzz targets' entry points: each feeds one input to one reader and lets only a one-line
// gppf::Error through. Anything else (a crash, a sanitizer report, another exception) is a bug.
// fuzz/main_libfuzzer.cpp wraps one of them for libFuzzer; fuzz/replay.cpp runs the saved inputs
// under fuzz/regressions/ through all of them in the normal test suite.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gppf::fuzz {

using Entry = void (*)(const std::uint8_t* data, std::size_t size);

struct Target {
  const char* name;  // also the folder under fuzz/regressions and fuzz/corpus
  Entry entry;
};

const std::vector<Target>& targets();
// Writes the seed inputs of every target under `dir`/<target>/ (scripts/fuzz-corpus.sh).
void write_seeds(const std::string& dir);

}  // namespace gppf::fuzz
