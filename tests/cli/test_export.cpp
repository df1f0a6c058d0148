// `gppf export --format onnx` (docs/INTEROP.md): tiny runs of every task type are exported, then
// tests/interop/check_onnx.py runs onnx's checker and OpenCV's DNN module on a few test images and
// compares with the outputs of our own forward pass (max abs diff <= 1e-4); tests/interop/numpy_forward.py
// recomputes them from the checkpoint by docs/INTEROP.md's rules. Skips, saying what to install, when
// python3, numpy, onnx or cv2 is missing (the numpy check also needs h5py and yaml).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "io/dataset.hpp"
#include "io/loader.hpp"
#include "src/nn/heads.hpp"
#include "src/train/inference.hpp"
#include "tests/common/command.hpp"
#include "tests/common/datasets.hpp"

namespace {

namespace fs = std::filesystem;
using gppf::Tensor;

using gppf::test::CommandResult;

CommandResult shell(const std::string& cmd) { return gppf::test::run_command(cmd); }

CommandResult gppf_run(const std::string& args) { return shell(std::string(GPPF_BINARY) + " " + args); }

const std::string kChecker = std::string(GPPF_SOURCE_DIR) + "/tests/interop/check_onnx.py";

// The first python with numpy, onnx and cv2 ($GPPF_PYTHON, python3, /usr/bin/python3: a pyenv or
// venv python3 first on PATH often lacks Debian's python3-onnx); empty with the reason otherwise.
std::string find_python(std::string& why) {
  std::vector<std::string> candidates;
  if (const char* p = std::getenv("GPPF_PYTHON")) candidates.emplace_back(p);
  candidates.insert(candidates.end(), {"python3", "/usr/bin/python3"});
  why.clear();
  for (const auto& py : candidates) {
    const CommandResult r = shell(py + " " + kChecker + " --modules");
    if (r.status == 0) return py;
    if (r.status == 3 && why.empty()) why = py + ": " + r.output.substr(0, r.output.find('\n'));
  }
  if (why.empty()) why = "no python3 found";
  why +=
      " (python3 with numpy, onnx and cv2 needed: apt-get install python3-numpy python3-onnx python3-opencv, "
      "as scripts/install-deps.sh does)";
  return {};
}

// size x size classification images: class 0 has a bright left half, class 1 a bright right half;
// `channels` 1 or 3 (colour: a tint per class), plus noise.
void write_halves(const std::string& dir, int size, int channels, int n_train, int n_test, std::uint64_t seed) {
  gppf::io::DatasetWriter::Options o;
  o.header.task = gppf::io::TaskType::Classification;
  o.header.classes = {"left", "right"};
  o.header.height = o.header.width = size;
  o.header.channels = channels;
  o.header.block = 16;
  o.force = true;
  gppf::io::DatasetWriter w(dir, o);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> noise(0, 60);
  for (const auto& [split, n] : {std::pair<std::string, int>{"train", n_train}, {"test", n_test}, {"val", n_test}})
    for (int i = 0; i < n; ++i) {
      gppf::io::Sample s;
      s.height = s.width = size;
      s.channels = channels;
      s.label = i % 2;
      s.id = i;
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x)
          for (int c = 0; c < channels; ++c)
            s.image.push_back(static_cast<std::uint8_t>(((x < size / 2) == (s.label == 0) ? 150 : 20) +
                                                        (c == s.label ? 40 : 0) + noise(rng)));
      w.add(split, s, "halves");
    }
  w.finish();
}

void write_floats(const fs::path& p, const std::vector<float>& v) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
}

// The task's outputs from our own modules: the loaded network's backbone, and a head built as
// Network builds it with the loaded head's parameters and buffers copied in (Network keeps its
// heads private).
std::vector<std::pair<std::string, Tensor>> reference_outputs(gppf::train::LoadedModel& m, int t,
                                                              const Tensor& images) {
  using namespace gppf;
  train::Network& net = *m.net;
  const train::TaskSpec& spec = m.data.specs.at(static_cast<std::size_t>(t));
  nn::RunState rs;
  rs.task = t;
  rs.training = false;
  const std::vector<Tensor> f = net.backbone().forward(rs, images, 0);
  const std::string name = "head." + spec.config.name;
  nn::NeckSpec neck = m.config.neck;
  neck.context_levels = std::max(0, spec.config.context_levels);
  const std::vector<int> channels = net.backbone().stage_channels();
  const int tasks = static_cast<int>(m.data.specs.size());
  std::mt19937_64 rng(0);
  auto load = [&](nn::Module& head) {
    std::map<std::string, Tensor*> have;
    for (nn::Parameter* p : net.parameters()) have[p->name] = &p->value;
    for (const auto& [n, tensor] : net.buffers()) have[n] = tensor;
    std::vector<nn::Parameter*> params;
    head.collect_parameters(params);
    std::vector<nn::Buffer> buffers;
    head.collect_buffers(buffers);
    std::vector<std::pair<std::string, Tensor*>> mine;
    for (nn::Parameter* p : params) mine.emplace_back(p->name, &p->value);
    for (const auto& b : buffers) mine.emplace_back(b.name, b.tensor);
    for (const auto& [n, tensor] : mine) {
      GPPF_CHECK(have.count(n), "reference head: the loaded network has no ", n);
      tensor->copy_from(*have[n]);
    }
  };
  switch (spec.config.type) {
    case io::TaskType::Classification: {
      nn::ClassificationHead h(name, channels.back(), spec.num_classes, rng);
      load(h);
      return {{"logits", h.forward(rs, f)}};
    }
    case io::TaskType::Detection: {
      nn::DetectionHead h(name, channels, neck, spec.num_classes, tasks, rng);
      load(h);
      const nn::DetectionOutputs o = h.forward(rs, f);
      return {{"heatmap", o.heatmap}, {"size", o.size}, {"offset", o.offset}};
    }
    case io::TaskType::Segmentation: {
      nn::SegmentationHead h(name, channels, neck, spec.num_classes, tasks, rng);
      load(h);
      return {{"logits", h.forward(rs, f, spec.height, spec.width)}};
    }
  }
  return {};
}

class Export : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-export-" + std::to_string(::getpid()));
    fs::remove_all(s_dir);
    fs::create_directories(s_dir);
    const std::string d = s_dir.string();
    write_halves(d + "/halves", 16, 1, 64, 16, 1);
    write_halves(d + "/rgb", 32, 3, 64, 16, 2);
    gppf::test::write_squares(d + "/squares", 64, 16, 3);
    const std::string common = "steps: 12\nlog_every: 6\nthreads: 1\nschedule: {type: constant}\n";
    // Three tasks on a mini backbone: shared and routed legos, projection and identity shortcuts,
    // stage 0 at stride 2 (segmentation upsamples twice), necks from stage 1.
    std::ofstream(s_dir / "mini.yaml")
        << common
        << "model: {backbone: gppf-mini, stem_channels: 8, stages: [[8, 1, 2], [16, 2, 2], [16, 1, 2]], legos: 3,"
           " top_k: 2, shared_legos: 1, routing: {warmup: none}, neck: {first_stage: 1, channels: 8}}\n"
           "tasks:\n"
        << "  - {name: halves, type: classification, dataset: " << d << "/halves, batch_size: 8}\n"
        << "  - {name: det, type: detection, dataset: " << d << "/squares, batch_size: 8}\n"
        << "  - {name: seg, type: segmentation, dataset: " << d << "/squares, batch_size: 8}\n";
    // ResNet-50's stem (7x7/2 and a 3x3/2 max pool) on RGB input, one lego per task and layer.
    std::ofstream(s_dir / "r50.yaml")
        << common
        << "model: {backbone: gppf-r50, stem_channels: 8, stages: [[16, 1, 1], [16, 1, 2]], legos: 2, top_k: 1,"
           " neck: {first_stage: 0, channels: 8}}\n"
           "tasks:\n"
        << "  - {name: rgb, type: classification, dataset: " << d << "/rgb, batch_size: 8}\n";
    for (const char* run : {"mini", "r50"}) {
      const CommandResult r =
          gppf_run(gppf::str("--log-level warn train --config ", d, "/", run, ".yaml --out ", d, "/run-", run));
      s_train[run] = r.status == 0 ? std::string() : r.output;
    }
  }
  static void TearDownTestSuite() {
    if (!std::getenv("GPPF_KEEP")) fs::remove_all(s_dir);
  }

  // Exports `task` of run `run`, then compares OpenCV's outputs with ours on the first test images.
  static void check(const std::string& run, const std::string& task, int images) {
    ASSERT_EQ(s_train[run], "") << "training run " << run << " failed";
    const fs::path dir = s_dir / ("case-" + task);
    fs::create_directories(dir);
    const std::string run_dir = (s_dir / ("run-" + run)).string();
    const CommandResult e = gppf_run(gppf::str("export --format onnx --checkpoint ", run_dir, " --task ", task,
                                               " --out ", (dir / "model.onnx").string()));
#ifndef GPPF_HAVE_ONNX
    EXPECT_EQ(e.status, 2) << e.output;
    EXPECT_NE(e.output.find("this build has no ONNX support"), std::string::npos) << e.output;
    GTEST_SKIP() << "this build has no ONNX support (GPPF_HAVE_ONNX off)";
#endif
    ASSERT_EQ(e.status, 0) << e.output;
    ASSERT_GT(fs::file_size(dir / "model.onnx"), 0u);
    std::string why;
    const std::string python = find_python(why);
    if (python.empty()) GTEST_SKIP() << "ONNX parity not checked: " << why;

    gppf::train::LoadedModel m = gppf::train::load_model(run_dir, "host", "test");
    const int t = m.task_index(task, "test");
    const gppf::train::TaskSpec& spec = m.data.specs.at(static_cast<std::size_t>(t));
    const gppf::io::Dataset& ds = m.data.datasets.at(static_cast<std::size_t>(t));
    // Our normalised images come from the loader; the graph gets the same samples' raw pixels.
    gppf::io::LoaderConfig lc;
    lc.split = "test";
    lc.batch_size = images;
    lc.workers = 1;
    lc.shuffle = false;
    lc.drop_last = false;
    lc.repeat = false;
    lc.pinned = false;
    gppf::io::Loader loader(ds, lc);
    const gppf::io::Batch batch = loader.next();
    ASSERT_EQ(batch.size(), images);
    const gppf::io::ShardInfo& shard = ds.manifest().split("test", ds.dir()).shards.at(0);
    gppf::io::ShardReader reader(ds.shard_path(shard), ds.manifest(), shard.count);
    std::vector<gppf::io::Sample> samples;
    std::vector<std::uint32_t> crc;
    reader.read(0, images, samples, crc);
    const int c = spec.channels, h = spec.height, w = spec.width;
    std::vector<float> raw(static_cast<std::size_t>(images * c * h * w));
    for (int n = 0; n < images; ++n) {
      ASSERT_EQ(batch.ids[static_cast<std::size_t>(n)], n);
      const auto& px = samples[static_cast<std::size_t>(n)].image;
      ASSERT_EQ(px.size(), static_cast<std::size_t>(c * h * w)) << "expected a raw (not encoded) data set";
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          for (int k = 0; k < c; ++k)
            raw[static_cast<std::size_t>(((n * c + k) * h + y) * w + x)] =
                px[static_cast<std::size_t>((y * w + x) * c + k)];
    }
    write_floats(dir / "input.f32", raw);
    nlohmann::json j = {{"model", "model.onnx"},
                        {"tolerance", 1e-4},
                        {"input", {{"file", "input.f32"}, {"shape", {images, c, h, w}}}},
                        {"outputs", nlohmann::json::array()}};
    for (const auto& [name, y] : reference_outputs(m, t, batch.images)) {
      write_floats(dir / (name + ".f32"), y.to_float_vector());
      j["outputs"].push_back({{"name", name}, {"file", name + ".f32"}, {"shape", y.shape()}});
    }
    std::ofstream(dir / "case.json") << j.dump(2);
    const CommandResult r = shell(gppf::str(python, " ", kChecker, " ", (dir / "case.json").string()));
    std::printf("%s: %s", task.c_str(), r.output.c_str());
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("checker ok"), std::string::npos) << r.output;
    // The same outputs from the checkpoint file alone, by docs/INTEROP.md's rules (needs h5py and yaml).
    const CommandResult np = shell(gppf::str(python, " ", GPPF_SOURCE_DIR, "/tests/interop/numpy_forward.py ", m.path,
                                             " ", task, " ", (dir / "case.json").string()));
    std::printf("%s (numpy from the checkpoint): %s", task.c_str(), np.output.c_str());
    if (np.status != 3) {
      EXPECT_EQ(np.status, 0) << np.output;
    }
  }

  static fs::path s_dir;
  static std::map<std::string, std::string> s_train;  // run -> its output when it failed
};
fs::path Export::s_dir;
std::map<std::string, std::string> Export::s_train;

TEST_F(Export, Classification) { check("mini", "halves", 5); }
TEST_F(Export, Detection) { check("mini", "det", 5); }
TEST_F(Export, Segmentation) { check("mini", "seg", 5); }
TEST_F(Export, RgbWithResNetStem) { check("r50", "rgb", 5); }

// Usage errors exit 2, a task the checkpoint lacks 1 with a suggestion; each in one line.
TEST_F(Export, BadArgumentsFailWithAReason) {
  ASSERT_EQ(s_train["mini"], "");
  const std::string ckpt = (s_dir / "run-mini").string();
  CommandResult r = gppf_run("export --format tflite --checkpoint " + ckpt + " --task det");
  EXPECT_EQ(r.status, 2) << r.output;
  r = gppf_run("export --format onnx --checkpoint " + ckpt);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--task is required"), std::string::npos) << r.output;
  r = gppf_run("export --format onnx --checkpoint " + ckpt + " --task dte --out " + (s_dir / "x.onnx").string());
#ifdef GPPF_HAVE_ONNX
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("has no task 'dte'; did you mean 'det'?"), std::string::npos) << r.output;
#else
  EXPECT_EQ(r.status, 2) << r.output;
#endif
  EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << r.output;
  EXPECT_FALSE(fs::exists(s_dir / "x.onnx"));
}

}  // namespace
