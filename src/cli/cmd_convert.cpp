#include <memory>
#include <string>

#include "src/cli/commands.hpp"
#include "src/core/error.hpp"

namespace gppf::cli {

void register_convert(CLI::App& app) {
  struct Options {
    std::string format, out;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("convert", "convert a source data set into a sharded HDF5 data set");
  cmd->add_option("--format", opts->format, "idx, imagefolder, coco or canvas")
      ->required()
      ->check(CLI::IsMember({"idx", "imagefolder", "coco", "canvas"}));
  cmd->add_option("--out", opts->out, "output data set directory")->required();
  cmd->callback([opts] { GPPF_NOT_IMPLEMENTED("data set conversion arrives with issue 4 (sharded HDF5 data sets)"); });
}

}  // namespace gppf::cli
