#include <memory>
#include <sstream>
#include <string>

#include "core/error.hpp"
#include "io/convert.hpp"
#include "io/convert_emoji.hpp"
#include "src/cli/commands.hpp"

namespace gppf::cli {
namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

void register_convert(CLI::App& app) {
  struct Options {
    std::string format, src, classes, on_error = "error", background;
    io::ConvertOptions common;
    io::CocoOptions coco;
    io::CanvasOptions canvas;
    int channels = 0;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("convert", "convert a source data set into a sharded HDF5 data set");
  cmd->footer(
      "Examples:\n"
      "  gppf convert --format idx --src mnist-idx/ --out data/mnist\n"
      "  gppf convert --format imagefolder --src photos/ --out data/photos --val-fraction 0.1 --test-fraction 0.1\n"
      "  gppf convert --format coco --src instances_train.json --images imgs/ --out data/coco\n"
      "  gppf convert --format canvas --src data/mnist --size 64 --max-objects 4 --out data/mnist-det\n"
      "  gppf convert --format emoji --src emoji-datasource-google/ --out data/emoji --test-fraction 0.2\n"
      "The output is written to a temporary folder and renamed at the end; an existing --out is only\n"
      "replaced with --force. Format: docs/DATA_FORMAT.md.");
  cmd->add_option("--format", o->format, "idx, imagefolder, coco, canvas or emoji")
      ->required()
      ->check(CLI::IsMember({"idx", "imagefolder", "coco", "canvas", "emoji"}));
  cmd->add_option("--out", o->common.out, "output data set directory")->required();
  cmd->add_option("--src", o->src,
                  "source: IDX folder (idx), class folders (imagefolder), JSON file or folder (coco), converted "
                  "classification data set (canvas), unpacked emoji-datasource package (emoji)");
  cmd->add_flag("--force", o->common.force, "replace an existing output data set");
  cmd->add_option("--seed", o->common.seed, "seed for derived splits and canvas scenes")->capture_default_str();
  cmd->add_option("--val-fraction", o->common.val_fraction, "fraction to val when the source has no val split")
      ->capture_default_str();
  cmd->add_option("--test-fraction", o->common.test_fraction, "fraction to test when the source has no test split")
      ->capture_default_str();
  cmd->add_option("--shard-samples", o->common.shard_samples, "samples per shard at most")->capture_default_str();
  cmd->add_option("--on-error", o->on_error, "bad source samples: error or skip (counted and reported)")
      ->check(CLI::IsMember({"error", "skip"}))
      ->capture_default_str();
  cmd->add_option("--classes", o->classes, "idx: comma-separated class names (default 0,1,...)");
  const std::string channels_help = str(
      "imagefolder and coco ", io::channels_text("imagefolder"), " (decoded by the loader; 4 keeps alpha; default 3), ",
      "canvas ", io::channels_text("canvas"), " (default: 1 on a blank canvas, 3 on backgrounds), emoji ",
      io::channels_text("emoji"), "; idx: none (its files decide)");
  auto* channels = cmd->add_option("--channels", o->channels, channels_help);
  auto* background = cmd->add_option(
      "--background", o->background,
      "imagefolder and coco with --channels 1 or 3, emoji: white, black or a grey level 0..255 under transparent "
      "pixels (default white)");
  cmd->add_option("--images", o->coco.images,
                  "coco: image folder (default: the JSON's folder); emoji: default SRC/img/google/64");
  cmd->add_option("--backgrounds", o->canvas.backgrounds, "canvas: folder of background photos (default: blank)");
  cmd->add_option("--size", o->canvas.size, "canvas: side of the square canvas; emoji: image side (resized)")
      ->capture_default_str();
  cmd->add_option("--min-objects", o->canvas.min_objects, "canvas: objects per scene, at least")->capture_default_str();
  cmd->add_option("--max-objects", o->canvas.max_objects, "canvas: objects per scene, at most")->capture_default_str();
  cmd->add_option("--scale-min", o->canvas.scale_min, "canvas: smallest object scale")->capture_default_str();
  cmd->add_option("--scale-max", o->canvas.scale_max, "canvas: largest object scale")->capture_default_str();
  cmd->add_option("--overlap", o->canvas.overlap, "canvas: none, allow, or the largest covered fraction in (0,1)")
      ->capture_default_str();
  cmd->add_option("--alpha-threshold", o->canvas.alpha_threshold,
                  "canvas: alpha (or gray) value from which a pasted "
                  "pixel belongs to the object's mask")
      ->capture_default_str();
  cmd->add_option("--single-class", o->canvas.single_class,
                  "canvas: one class of this name for every object (class-agnostic scenes)");
  cmd->add_option("--train-count", o->canvas.train, "canvas: train scenes (0: as many as source samples)");
  cmd->add_option("--val-count", o->canvas.val, "canvas: val scenes");
  cmd->add_option("--test-count", o->canvas.test, "canvas: test scenes");
  cmd->callback([o, channels, background] {
    GPPF_CHECK(!o->src.empty(), "convert: --src is required");
    o->common.skip_bad = o->on_error == "skip";
    const bool has_channels = channels->count() > 0, has_background = background->count() > 0;
    if (has_channels) io::check_channels(o->format, o->channels);
    const int channel_count = has_channels ? o->channels : o->format == "canvas" ? 0 : 3;
    int grey = 255;  // transparent pixels on white by default (emoji artwork is drawn for light pages)
    if (has_background) {
      GPPF_CHECK(o->format == "emoji" || ((o->format == "imagefolder" || o->format == "coco") && channel_count != 4),
                 "convert ", o->format,
                 ": --background applies to imagefolder and coco with --channels 1 or 3, and to emoji",
                 o->format == "canvas" ? " (canvas scenes lie on --backgrounds DIR photos or black)" : "");
      grey = io::parse_background(o->background);
    }
    if (o->format == "idx") {
      io::convert_idx({o->src, split_list(o->classes)}, o->common);
    } else if (o->format == "imagefolder") {
      io::convert_imagefolder({o->src, channel_count, grey}, o->common);
    } else if (o->format == "coco") {
      o->coco.src = o->src;
      o->coco.channels = channel_count;
      o->coco.background = grey;
      io::convert_coco(o->coco, o->common);
    } else if (o->format == "emoji") {
      io::EmojiOptions emoji;
      emoji.src = o->src;
      emoji.images = o->coco.images;
      emoji.size = o->canvas.size;
      const auto g = static_cast<std::uint8_t>(grey);
      emoji.background = {g, g, g};
      io::convert_emoji(emoji, o->common);
    } else {
      o->canvas.src = o->src;
      o->canvas.channels = channel_count;
      io::convert_canvas(o->canvas, o->common);
    }
  });
}

}  // namespace gppf::cli
