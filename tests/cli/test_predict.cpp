// gppf predict: image files through the evaluation's transform and network path, its outputs (text,
// JSON, overlays) and its errors. One tiny three-task run (classification, detection, segmentation)
// is trained once for the whole suite; the test splits are written out as PNG files.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/dataset.hpp"
#include "io/image_codec.hpp"
#include "io/loader.hpp"
#include "src/train/inference.hpp"
#include "src/train/predict.hpp"
#include "src/train/trainer.hpp"
#include "tests/common/command.hpp"
#include "tests/common/datasets.hpp"
#include "tests/common/files.hpp"

namespace {

namespace fs = std::filesystem;
using namespace gppf;

struct CommandResult {
  int status = -1;
  std::string out, err;
};

// stdout and stderr apart: --json must leave stdout to the JSON document alone.
CommandResult run(const std::string& args) {
  static int counter = 0;
  const std::string err_file =
      (fs::temp_directory_path() / ("gppf-predict-err-" + std::to_string(::getpid()) + "-" + std::to_string(counter++)))
          .string();
  const test::CommandResult c = test::run_command(std::string(GPPF_BINARY) + " " + args, err_file);
  CommandResult r;
  r.status = c.status;
  r.out = c.output;
  r.err = test::read_text(err_file);
  fs::remove(err_file);
  return r;
}

bool one_line(const std::string& s) { return !s.empty() && s.find('\n') == s.size() - 1; }

// The samples of a split in file order.
std::vector<io::Sample> split_samples(const std::string& dir, const std::string& split) {
  const io::Dataset ds = io::Dataset::open(dir);
  std::vector<io::Sample> all;
  for (const io::ShardInfo& sh : ds.manifest().split(split, dir).shards) {
    io::ShardReader reader(ds.shard_path(sh), ds.manifest(), sh.count);
    std::vector<io::Sample> samples;
    std::vector<std::uint32_t> crc;
    reader.read(0, sh.count, samples, crc);
    all.insert(all.end(), samples.begin(), samples.end());
  }
  return all;
}

io::Image image_of(const io::Sample& s) { return {s.height, s.width, s.channels, s.image}; }

// Each pixel repeated f x f times: the same picture at another size.
io::Image upscale(const io::Image& im, int f) {
  io::Image out{im.height * f, im.width * f, im.channels, {}};
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x)
      for (int k = 0; k < im.channels; ++k)
        out.pixels.push_back(im.pixels[static_cast<std::size_t>(((y / f) * im.width + x / f) * im.channels + k)]);
  return out;
}

void write_png(const fs::path& p, const io::Image& im) {
  const std::vector<std::uint8_t> bytes = io::encode_png(im);
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

class Predict : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-predict-" + std::to_string(::getpid()));
    fs::remove_all(s_dir);
    fs::create_directories(s_dir / "images");
    test::write_bars((s_dir / "bars").string(), 64, 16, 1);
    test::write_squares((s_dir / "squares").string(), 32, 8, 2);
    std::ofstream(s_dir / "tiny.yaml") << "steps: 200\nlog_every: 10\nthreads: 1\nbn_calibration_batches: 2\n"
                                          "optimizer: {type: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0}\n"
                                          "schedule: {type: constant}\n"
                                          "model: {backbone: gppf-mini, stem_channels: 4, stages: [[8, 1, 1], [8, "
                                          "1, 2]], legos: 2, top_k: 1, routing: {warmup: none}, neck: "
                                          "{first_stage: 0, channels: 8}}\n"
                                       << test::tiny_tasks_yaml(s_dir.string());
    const CommandResult r =
        run("train --config " + (s_dir / "tiny.yaml").string() + " --out " + (s_dir / "run").string());
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    for (const auto& [name, set] : {std::pair<std::string, std::string>{"bars", "bars"}, {"sq", "squares"}}) {
      const auto samples = split_samples((s_dir / set).string(), "test");
      for (std::size_t i = 0; i < samples.size(); ++i) {
        const fs::path p = s_dir / "images" / (name + "-" + std::to_string(i) + ".png");
        write_png(p, image_of(samples[i]));
        (name == "bars" ? s_bars : s_squares).push_back(p.string());
        if (name == "bars") s_labels.push_back(samples[i].label);
      }
    }
  }
  static void TearDownTestSuite() { fs::remove_all(s_dir); }

  static std::string run_dir() { return (s_dir / "run").string(); }
  static std::string joined(const std::vector<std::string>& files) {
    std::string s;
    for (const auto& f : files) s += " " + f;
    return s;
  }
  // The evaluation loader's first (and, for these splits, only) batch of task `t`'s test split.
  static io::Batch eval_batch(const train::LoadedModel& m, int t) {
    const auto& spec = m.data.specs[static_cast<std::size_t>(t)];
    io::Loader loader(m.data.datasets[static_cast<std::size_t>(t)],
                      train::eval_loader_config(m.config, spec, "test", Device::host()));
    return loader.next();
  }

  static fs::path s_dir;
  static std::vector<std::string> s_bars, s_squares;
  static std::vector<int> s_labels;
};
fs::path Predict::s_dir;
std::vector<std::string> Predict::s_bars, Predict::s_squares;
std::vector<int> Predict::s_labels;

// The PNG files of a test split become bit for bit the evaluation loader's batch, and predict's
// top-1 scores exactly the top1 that Network::evaluate counts on that batch.
TEST_F(Predict, ClassificationInputsAndTop1MatchEvaluation) {
  train::LoadedModel m = train::load_model(run_dir(), "host", "predict");
  const int t = m.task_index("bars", "predict");
  const auto& spec = m.data.specs[static_cast<std::size_t>(t)];
  const io::Batch batch = eval_batch(m, t);
  ASSERT_EQ(batch.size(), static_cast<std::int64_t>(s_bars.size()));
  std::vector<train::InputImage> images;
  for (const auto& f : s_bars) images.push_back(train::read_image(f, spec.manifest.channels));
  const Tensor x = train::make_inputs(images, train::task_input_format(m.config, spec));
  ASSERT_EQ(x.shape(), batch.images.shape());
  EXPECT_EQ(std::memcmp(x.data_as<float>(), batch.images.data_as<float>(), x.numel() * sizeof(float)), 0);
  const Tensor a = m.net->infer(t, x).logits, b = m.net->infer(t, batch.images).logits;
  EXPECT_EQ(std::memcmp(a.data_as<float>(), b.data_as<float>(), a.numel() * sizeof(float)), 0);

  train::TaskEvaluator eval(spec);
  m.net->evaluate(t, batch, eval);
  const auto preds = train::predict(*m.net, m.config, t, s_bars, {});
  int correct = 0;
  for (std::size_t i = 0; i < preds.size(); ++i) {
    ASSERT_EQ(preds[i].top.size(), 2u);  // top-5 of two classes
    EXPECT_GE(preds[i].top[0].probability, preds[i].top[1].probability);
    EXPECT_NEAR(preds[i].top[0].probability + preds[i].top[1].probability, 1.0, 1e-5);
    correct += preds[i].top[0].index == s_labels[i];
  }
  EXPECT_EQ(static_cast<double>(correct) / static_cast<double>(preds.size()), eval.metrics().at("top1"));
}

// Through the binary: --json is one parseable document on stdout with the documented keys, and its
// top-1 agrees with `gppf eval` to the sample.
TEST_F(Predict, JsonMatchesGppfEval) {
  const CommandResult r = run("predict --checkpoint " + run_dir() + " --task bars --top-k 1 --json" + joined(s_bars));
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), s_bars.size());
  int correct = 0;
  for (std::size_t i = 0; i < j.size(); ++i) {
    const auto& e = j[i];
    EXPECT_EQ(e.at("file"), s_bars[i]);
    EXPECT_EQ(e.at("task"), "bars");
    EXPECT_EQ(e.at("type"), "classification");
    EXPECT_EQ(e.at("height"), 8);
    EXPECT_EQ(e.at("resized"), false);
    ASSERT_EQ(e.at("classes").size(), 1u);  // --top-k 1
    const auto& c = e["classes"][0];
    EXPECT_EQ(c.at("class"), c.at("index") == 0 ? "left" : "right");
    EXPECT_GE(c.at("probability").get<double>(), 0.5);
    correct += c.at("index").get<int>() == s_labels[i];
  }
  const CommandResult ev = run("eval --checkpoint " + run_dir() + " --task bars --json");
  ASSERT_EQ(ev.status, 0) << ev.err;
  EXPECT_EQ(static_cast<double>(correct) / static_cast<double>(j.size()),
            nlohmann::json::parse(ev.out).at("bars").at("top1").get<double>());
  // Text: a header line per image, then one line per class.
  const CommandResult text = run("predict --checkpoint " + run_dir() + " --task bars " + s_bars[0]);
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_EQ(text.out.rfind(s_bars[0] + ": classification 'bars'\n", 0), 0u) << text.out;
  EXPECT_NE(text.out.find(s_labels[0] == 0 ? "left" : "right"), std::string::npos) << text.out;
}

// Boxes are the evaluation's detections above the threshold, in the image's pixels; an image at
// twice the size is stretched to fit (back to the same network input), said so, and gets the same
// boxes at twice the coordinates.
TEST_F(Predict, DetectionBoxesAreInImagePixels) {
  train::LoadedModel m = train::load_model(run_dir(), "host", "predict");
  const int t = m.task_index("det", "predict");
  const io::Batch batch = eval_batch(m, t);
  const auto dets = m.net->infer(t, batch.images).detections;
  train::PredictOptions o;
  o.score_threshold = 0.05f;
  const auto preds = train::predict(*m.net, m.config, t, s_squares, o);
  ASSERT_EQ(preds.size(), dets.size());
  for (std::size_t i = 0; i < preds.size(); ++i) {
    std::size_t k = 0;
    for (const train::Detection& d : dets[i]) {
      if (d.score < o.score_threshold) continue;
      ASSERT_LT(k, preds[i].boxes.size());
      const train::Detection& p = preds[i].boxes[k++];
      EXPECT_EQ(p.score, d.score);
      EXPECT_EQ(p.cls, d.cls);
      EXPECT_EQ(p.x1, std::clamp(d.x1, 0.0f, 16.0f));
      EXPECT_EQ(p.y2, std::clamp(d.y2, 0.0f, 16.0f));
    }
    EXPECT_EQ(k, preds[i].boxes.size());
  }

  const fs::path big = s_dir / "images" / "big-square.png";
  write_png(big, upscale(train::read_image(s_squares[0], 1).image, 2));
  const CommandResult r =
      run("predict --checkpoint " + run_dir() + " --task det --score-threshold 0.01 --json " + big.string());
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json e = nlohmann::json::parse(r.out).at(0);
  EXPECT_EQ(e.at("resized"), true);
  EXPECT_EQ(e.at("width"), 32);
  EXPECT_EQ(e.at("input_width"), 16);
  const auto& native = dets[0];  // the evaluation's decode: threshold 0.01
  ASSERT_EQ(e.at("boxes").size(), native.size());
  for (std::size_t k = 0; k < native.size(); ++k) {
    const auto& b = e["boxes"][k];
    EXPECT_NEAR(b.at("score").get<double>(), native[k].score, 1e-5);
    EXPECT_EQ(b.at("class"), native[k].cls == 0 ? "dim" : "bright") << b;
    EXPECT_NEAR(b.at("x0").get<double>(), 2 * std::clamp(native[k].x1, 0.0f, 16.0f), 1e-3) << b;
    EXPECT_NEAR(b.at("y0").get<double>(), 2 * std::clamp(native[k].y1, 0.0f, 16.0f), 1e-3) << b;
    EXPECT_NEAR(b.at("x1").get<double>(), 2 * std::clamp(native[k].x2, 0.0f, 16.0f), 1e-3) << b;
    EXPECT_NEAR(b.at("y1").get<double>(), 2 * std::clamp(native[k].y2, 0.0f, 16.0f), 1e-3) << b;
  }
  const CommandResult text = run("predict --checkpoint " + run_dir() + " --task det " + big.string());
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("(resized from 32x32 to the network's 16x16): "), std::string::npos) << text.out;
}

// Pixel shares per class sum to 1 and follow the evaluation's per-pixel argmax; --out writes one
// overlay per image at the image's own size (RGB) and names it.
TEST_F(Predict, SegmentationOverlaysAreWrittenAtTheImageSize) {
  train::LoadedModel m = train::load_model(run_dir(), "host", "predict");
  const int t = m.task_index("seg", "predict");
  const io::Batch batch = eval_batch(m, t);
  const Tensor logits = m.net->infer(t, batch.images).logits;
  const auto preds = train::predict(*m.net, m.config, t, s_squares, {});
  ASSERT_EQ(static_cast<std::int64_t>(preds.size()), logits.dim(0));
  const std::int64_t c = logits.dim(3), pixels = logits.dim(1) * logits.dim(2);
  for (std::size_t i = 0; i < preds.size(); ++i) {
    ASSERT_EQ(static_cast<std::int64_t>(preds[i].fractions.size()), c);
    std::vector<double> share(static_cast<std::size_t>(c), 0.0);
    for (std::int64_t p = 0; p < pixels; ++p) {
      const float* row = logits.data_as<float>() + (static_cast<std::int64_t>(i) * pixels + p) * c;
      share[static_cast<std::size_t>(std::max_element(row, row + c) - row)] += 1.0 / static_cast<double>(pixels);
    }
    for (std::int64_t k = 0; k < c; ++k) EXPECT_NEAR(preds[i].fractions[k], share[k], 1e-9);
    EXPECT_TRUE(preds[i].overlay.empty());
  }
  // The overlay keeps the image where the class is background and tints every other pixel.
  train::PredictOptions o;
  o.overlay_dir = (s_dir / "overlays-lib").string();
  const auto with = train::predict(*m.net, m.config, t, {s_squares[0]}, o);
  ASSERT_EQ(with.size(), 1u);
  EXPECT_GT(with[0].fractions[0], 0.0);
  EXPECT_LT(with[0].fractions[0], 1.0);  // trained far enough to find the square
  const auto png = test::read_text(with[0].overlay);
  const io::Image ov = io::decode_image(reinterpret_cast<const std::uint8_t*>(png.data()), png.size(), 3, "overlay");
  const io::Image grey = train::read_image(s_squares[0], 1).image;
  for (std::int64_t p = 0; p < pixels; ++p) {
    const float* row = logits.data_as<float>() + p * c;
    const bool background = std::max_element(row, row + c) == row;
    const std::uint8_t v = grey.pixels[static_cast<std::size_t>(p)];
    const std::uint8_t* rgb = ov.pixels.data() + p * 3;
    EXPECT_EQ(rgb[0] == v && rgb[1] == v && rgb[2] == v, background) << "pixel " << p;
  }

  const fs::path out = s_dir / "overlays", big = s_dir / "images" / "big-seg.png";
  write_png(big, upscale(train::read_image(s_squares[1], 1).image, 2));
  const CommandResult r = run("predict --checkpoint " + run_dir() + " --task seg --out " + out.string() + " --json " +
                              s_squares[0] + " " + big.string());
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    double sum = 0;
    for (const char* k : {"background", "dim", "bright"}) sum += j[i].at("pixel_fractions").at(k).get<double>();
    EXPECT_NEAR(sum, 1.0, 1e-9);
    const std::string overlay = j[i].at("overlay");
    EXPECT_EQ(fs::path(overlay).parent_path(), out);
    const auto bytes = test::read_text(overlay);
    const io::Image im =
        io::decode_image(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), 0, overlay);
    EXPECT_EQ(im.height, i == 0 ? 16 : 32);
    EXPECT_EQ(im.width, i == 0 ? 16 : 32);
    EXPECT_EQ(im.channels, 3);
  }
  EXPECT_EQ(fs::path(j[0]["overlay"].get<std::string>()).filename(), "sq-0.seg.png");
  const CommandResult text =
      run("predict --checkpoint " + run_dir() + " --task seg --out " + out.string() + " " + s_squares[0]);
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("overlay written to " + (out / "sq-0.seg.png").string()), std::string::npos) << text.out;
}

// An RGB PNG and a JPEG of a grey task decode into its channel count, as the loader decodes.
TEST_F(Predict, OtherChannelCountsAndJpegAreConverted) {
  const io::Image grey = train::read_image(s_bars[0], 1).image;
  io::Image rgb{grey.height, grey.width, 3, {}};
  for (std::uint8_t v : grey.pixels) rgb.pixels.insert(rgb.pixels.end(), {v, v, v});
  const fs::path png = s_dir / "images" / "rgb.png", jpg = s_dir / "images" / "grey.jpg";
  write_png(png, rgb);
  const auto jpeg = io::encode_jpeg(upscale(grey, 4), 95);
  std::ofstream(jpg, std::ios::binary)
      .write(reinterpret_cast<const char*>(jpeg.data()), static_cast<std::streamsize>(jpeg.size()));
  const CommandResult r = run("predict --checkpoint " + run_dir() + " --task bars --json " + png.string() + " " +
                              jpg.string() + " " + s_bars[0]);
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j[0].at("classes"), j[2].at("classes"));  // the same grey pixels
  EXPECT_EQ(j[1].at("resized"), true);
}

TEST_F(Predict, ErrorsAreOneLineAndNameWhatIsWrong) {
  const std::string ckpt = " --checkpoint " + run_dir();
  CommandResult r = run("predict" + ckpt + " --task brs " + s_bars[0]);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("has no task 'brs'; did you mean 'bars'?"), std::string::npos) << r.err;
  EXPECT_TRUE(one_line(r.err)) << r.err;

  const std::string missing = (s_dir / "images" / "no-such.png").string();
  r = run("predict" + ckpt + " --task bars " + s_bars[0] + " " + missing);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("gppf predict: error: " + missing + ": no such file"), std::string::npos) << r.err;
  EXPECT_TRUE(one_line(r.err)) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;  // nothing half printed

  const fs::path text = s_dir / "images" / "notes.png", broken = s_dir / "images" / "broken.png";
  test::write_text(text, "not an image\n");
  auto bytes = test::read_text(s_bars[0]);
  test::write_text(broken, bytes.substr(0, bytes.size() / 2));
  for (const fs::path& bad : {text, broken}) {
    r = run("predict" + ckpt + " --task bars " + bad.string());
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("gppf predict: error: " + bad.string() + ": "), std::string::npos) << r.err;
    EXPECT_TRUE(one_line(r.err)) << r.err;
  }

  r = run("predict --checkpoint " + (s_dir / "nowhere.h5").string() + " --task bars " + s_bars[0]);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find((s_dir / "nowhere.h5").string()), std::string::npos) << r.err;
  EXPECT_TRUE(one_line(r.err)) << r.err;

  r = run("predict" + ckpt + " --task bars --out " + (s_dir / "o").string() + " " + s_bars[0]);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--out writes segmentation overlays"), std::string::npos) << r.err;

  for (const std::string& args : {"predict" + ckpt + " --task bars", "predict --task bars " + s_bars[0],
                                  "predict" + ckpt + " " + s_bars[0], "predict" + ckpt + " --task bars --top-k 0 x.png",
                                  "predict" + ckpt + " --task det --score-threshold 2 x.png"}) {
    r = run(args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.err;
    EXPECT_TRUE(one_line(r.err)) << r.err;
  }
  r = run("predict --help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("--score-threshold"), std::string::npos) << r.out;
}

}  // namespace
