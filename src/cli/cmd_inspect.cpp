#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "io/verify.hpp"
#include "src/cli/commands.hpp"
#include "src/core/error.hpp"

namespace gppf::cli {

void register_inspect(CLI::App& app) {
  struct Options {
    std::string path;
    bool decode = false;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("inspect", "describe a data set or a checkpoint; non-zero exit when it is damaged");
  cmd->add_option("path", o->path, "data set directory or checkpoint")->required();
  cmd->add_flag("--decode", o->decode, "data sets: also decode every PNG/JPEG image");
  cmd->callback([o] {
    namespace fs = std::filesystem;
    if (!fs::is_directory(o->path)) {
      GPPF_CHECK(fs::exists(o->path), "inspect: ", o->path, " does not exist");
      GPPF_NOT_IMPLEMENTED("checkpoint inspection arrives with issue 7");
    }
    const io::VerifyReport r = io::verify_dataset(o->path, {o->decode});
    std::printf("%s", io::describe(r.manifest, o->path).c_str());
    std::printf("  checked: %lld samples, %zu problems\n", static_cast<long long>(r.samples_checked),
                r.problems.size());
    for (std::size_t i = 0; i < r.problems.size() && i < 20; ++i) std::fprintf(stderr, "  %s\n", r.problems[i].c_str());
    GPPF_CHECK(r.ok(), "data set ", o->path, " is damaged: ", r.problems.front());
  });
}

}  // namespace gppf::cli
