#include <omp.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/log.hpp"
#include "src/cli/commands.hpp"
#include "src/train/inference.hpp"
#include "src/train/predict.hpp"

namespace gppf::cli {

void register_predict(CLI::App& app) {
  struct Options {
    std::string checkpoint, task, device, out;
    std::vector<std::string> images;
    train::PredictOptions predict;
    bool json = false;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("predict", "run one task of a checkpoint on PNG or JPEG images");
  cmd->add_option("--checkpoint", opts->checkpoint, "checkpoint file or run directory (its checkpoints/latest)")
      ->required();
  cmd->add_option("--task", opts->task, "the task to run")->required();
  cmd->add_option("images", opts->images, "PNG or JPEG files")->required();
  cmd->add_option("--top-k", opts->predict.top_k, "classification: classes listed per image")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--score-threshold", opts->predict.score_threshold, "detection: boxes scoring below are left out")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  cmd->add_option("--out", opts->out, "segmentation: write an overlay PNG per image into this folder");
  cmd->add_option("--device", opts->device, "host or cuda[:N] (default: the device the checkpoint trained on)");
  cmd->add_flag("--json", opts->json, "print one JSON array (an object per image) instead of lines");
  cmd->callback([opts] {
    train::LoadedModel model = train::load_model(opts->checkpoint, opts->device, "predict");
    const int task = model.task_index(opts->task, "predict");
    const train::TaskSpec& spec = model.data.specs[static_cast<std::size_t>(task)];
    if (!opts->out.empty())
      GPPF_CHECK(spec.config.type == io::TaskType::Segmentation, "predict: --out writes segmentation overlays; task '",
                 spec.config.name, "' is ", io::task_name(spec.config.type));
    if (model.config.threads > 0) omp_set_num_threads(model.config.threads);
    opts->predict.overlay_dir = opts->out;
    const auto predictions = train::predict(*model.net, model.config, task, opts->images, opts->predict);
    if (opts->json)
      std::printf("%s\n", train::predictions_json(spec, predictions).dump(2).c_str());
    else
      std::fputs(train::predictions_text(spec, predictions, opts->predict).c_str(), stdout);
    log::info("predicted ", predictions.size(), " images with task '", spec.config.name, "' of ", model.path, " (step ",
              model.meta.step, ")");
  });
}

}  // namespace gppf::cli
