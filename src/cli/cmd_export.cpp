// gppf export --format onnx: one task's routed path as a static ONNX graph (docs/INTEROP.md).
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/log.hpp"
#include "src/cli/commands.hpp"
#include "src/train/inference.hpp"
#ifdef GPPF_HAVE_ONNX
#include "src/train/onnx_export.hpp"
#endif

namespace gppf::cli {
namespace {

[[maybe_unused]] std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + (shape[i] < 0 ? "N" : std::to_string(shape[i]));
  return s + "]";
}

}  // namespace

void register_export(CLI::App& app) {
  struct Options {
    std::string format, checkpoint, task, out;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("export", "write one task's inference path as an ONNX graph");
  cmd->add_option("--format", opts->format, "output format (onnx)")->required()->check(CLI::IsMember({"onnx"}));
  cmd->add_option("--checkpoint", opts->checkpoint, "checkpoint file or run directory (its checkpoints/latest)")
      ->required();
  cmd->add_option("--task", opts->task, "the task whose path to export")->required();
  cmd->add_option("--out", opts->out, "output file (default: TASK.onnx)");
  cmd->callback([opts] {
#ifndef GPPF_HAVE_ONNX
    // Not a failure of the work: this binary cannot do it (exit 2, as an unbuilt command).
    throw NotImplemented(
        "this build has no ONNX support; install libonnx-dev and libprotobuf-dev (scripts/install-deps.sh) and rebuild",
        __FILE__, __LINE__);
#else
    train::LoadedModel model = train::load_model(opts->checkpoint, "host", "export");
    const int task = model.task_index(opts->task, "export");
    const std::string out = opts->out.empty() ? opts->task + ".onnx" : opts->out;
    const train::OnnxExportResult r = train::export_onnx(model, task, out);
    std::string outputs;
    for (const auto& o : r.outputs) outputs += (outputs.empty() ? "" : ", ") + o.name + " " + shape_text(o.shape);
    std::printf("wrote %s: task '%s', opset %d, %d nodes, %.1f KiB of weights\n", out.c_str(), opts->task.c_str(),
                train::kOnnxOpset, r.nodes, static_cast<double>(r.weight_bytes) / 1024.0);
    std::printf("  input  %s %s (pixel values 0..255, normalised in the graph)\n", r.input.name.c_str(),
                shape_text(r.input.shape).c_str());
    std::printf("  output %s\n", outputs.c_str());
    log::info("exported ", model.path, " (step ", model.meta.step, ")");
#endif
  });
}

}  // namespace gppf::cli
