// Runs saved inputs through the fuzz targets with any compiler (the ctest fuzz.regressions):
//   fuzz_replay DIR                 every file under DIR/<target>/ through that target
//   fuzz_replay --target T FILE...  the given files through target T
//   fuzz_replay --write-seeds DIR   the seed corpora (scripts/fuzz-corpus.sh)
// A finding aborts (sanitizer report, uncaught exception); a clean run prints what it replayed.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "fuzz/targets.hpp"

namespace {

namespace fs = std::filesystem;

void replay(const gppf::fuzz::Target& t, const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::fprintf(stderr, "fuzz_replay: %s %s\n", t.name, file.c_str());
  t.entry(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
}

int replay_dir(const fs::path& root) {
  int files = 0;
  for (const auto& t : gppf::fuzz::targets()) {
    if (!fs::is_directory(root / t.name)) continue;
    for (const auto& e : fs::recursive_directory_iterator(root / t.name))
      if (e.is_regular_file() && e.path().filename() != "README.md") {
        replay(t, e.path());
        ++files;
      }
  }
  std::printf("fuzz_replay: %d inputs under %s replayed without a finding\n", files, root.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--write-seeds") == 0) {
    gppf::fuzz::write_seeds(argv[2]);
    return 0;
  }
  if (argc >= 4 && std::strcmp(argv[1], "--target") == 0) {
    for (const auto& t : gppf::fuzz::targets())
      if (std::strcmp(t.name, argv[2]) == 0) {
        for (int i = 3; i < argc; ++i) replay(t, argv[i]);
        return 0;
      }
    std::fprintf(stderr, "fuzz_replay: no target '%s'\n", argv[2]);
    return 2;
  }
  if (argc == 2 && argv[1][0] != '-') return replay_dir(argv[1]);
  std::fprintf(stderr, "usage: fuzz_replay DIR | --target T FILE... | --write-seeds DIR\n");
  return 2;
}
