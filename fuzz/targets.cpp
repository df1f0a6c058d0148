// The readers of untrusted files, one fuzz target each: images (PNG/JPEG), the data set manifest,
// the HDF5 shards, the COCO JSON converter, the training config, the checkpoint reader. HDF5 opens
// files by name, so those inputs go through a temporary file (slow, but it is the real code path).
#include "fuzz/targets.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/log.hpp"
#include "io/convert.hpp"
#include "io/dataset.hpp"
#include "io/image_codec.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/config.hpp"

namespace gppf::fuzz {
namespace {

namespace fs = std::filesystem;

// A gppf::Error is the expected answer to a bad input; everything else escapes and is a finding.
template <class F>
void expect_errors_only(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    // fuzz_replay sets it: what a regression input or a seed is answered with.
    static const bool verbose = std::getenv("GPPF_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "  error: %s\n", e.what());
  }
}

io::Image tiny_image(int h, int w, int c) {
  io::Image im{h, w, c, std::vector<std::uint8_t>(static_cast<std::size_t>(h * w * c))};
  for (std::size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = static_cast<std::uint8_t>(i * 37);
  return im;
}

void write_bytes(const fs::path& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// A private scratch folder per process (libFuzzer's -fork/-jobs run several), removed at exit; the
// COCO inputs find a.png and b.jpg next to them.
const fs::path& scratch() {
  static const fs::path dir = [] {
    log::set_level(log::Level::Off);
    fs::path d = fs::temp_directory_path() / ("gppf-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d / "coco");
    fs::create_directories(d / "ckpt");
    write_bytes(d / "coco" / "a.png", io::encode_png(tiny_image(6, 5, 1)));
    write_bytes(d / "coco" / "b.jpg", io::encode_jpeg(tiny_image(8, 8, 3)));
    std::atexit([] { fs::remove_all(scratch()); });
    return d;
  }();
  return dir;
}

void write_file(const fs::path& path, const std::uint8_t* data, std::size_t size) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

std::string text(const std::uint8_t* data, std::size_t size) { return {reinterpret_cast<const char*>(data), size}; }

void fuzz_image(const std::uint8_t* data, std::size_t size) {
  io::Image out;
  for (int channels : {0, 1, 3}) expect_errors_only([&] { io::decode_image_into(data, size, channels, "fuzz", out); });
}

void fuzz_manifest(const std::uint8_t* data, std::size_t size) {
  expect_errors_only([&] {
    const io::Manifest m = io::Manifest::from_json(text(data, size), "fuzz/manifest.json");
    // What the writer makes of it must read back.
    io::Manifest::from_json(m.to_json(), "fuzz/manifest.json (rewritten)");
  });
}

void fuzz_config(const std::uint8_t* data, std::size_t size) {
  expect_errors_only([&] { train::parse_config(text(data, size), {}, "fuzz.yaml"); });
}

// The two manifests a shard is read with: raw detection (8x8 grey, boxes, masks) and encoded.
std::vector<io::Manifest> shard_manifests() {
  io::Manifest raw;
  raw.task = io::TaskType::Detection;
  raw.classes = {"a", "b"};
  raw.height = raw.width = 8;
  raw.has_boxes = raw.has_masks = true;
  raw.block = 16;
  io::Manifest enc = raw;
  enc.encoding = "encoded";
  enc.height = enc.width = 0;
  return {raw, enc};
}

void read_shard(const std::string& path, const io::Manifest& m) {
  std::int64_t count = 0;
  {
    const io::h5::File f = io::h5::File::open(path);
    count = f.attr_int("count");
  }
  const io::ShardReader reader(path, m, count);
  std::vector<io::Sample> samples;
  std::vector<std::uint32_t> crc;
  io::Image image;
  // At most 256 samples: a shard may claim any count, the loader reads `block` at a time too.
  for (std::int64_t start = 0; start < std::min<std::int64_t>(reader.size(), 256); start += m.block) {
    reader.read(start, std::min(m.block, reader.size() - start), samples, crc);
    for (std::size_t i = 0; i < samples.size(); ++i) {
      if (io::sample_crc(samples[i]) != crc[i]) continue;
      io::validate_sample(m, samples[i], "fuzz sample");
      if (!m.raw()) io::decode_image_into(samples[i].image.data(), samples[i].image.size(), 0, "fuzz", image);
    }
  }
}

void fuzz_shard(const std::uint8_t* data, std::size_t size) {
  const fs::path path = scratch() / "shard.h5";
  write_file(path, data, size);
  static const std::vector<io::Manifest> manifests = shard_manifests();
  for (const auto& m : manifests) expect_errors_only([&] { read_shard(path.string(), m); });
}

void fuzz_coco(const std::uint8_t* data, std::size_t size) {
  const fs::path json = scratch() / "coco" / "instances.json";
  write_file(json, data, size);
  io::CocoOptions coco;
  coco.src = json.string();
  coco.channels = 1;
  io::ConvertOptions opt;
  opt.out = (scratch() / "coco-out").string();
  opt.force = true;
  opt.skip_bad = size % 2 == 0;  // both: skipping bad samples and failing on the first
  opt.val_fraction = 0.25;
  expect_errors_only([&] { io::convert_coco(coco, opt); });
}

void fuzz_checkpoint(const std::uint8_t* data, std::size_t size) {
  const fs::path dir = scratch() / "ckpt";
  const fs::path path = dir / train::checkpoint_file_name(1);
  write_file(path, data, size);
  expect_errors_only([&] { train::verify_checkpoint(path.string()); });
  expect_errors_only([&] { train::checkpoint_tensor_shapes(path.string(), "params"); });
  expect_errors_only([&] {
    nn::Parameter w{"w", Tensor::zeros({2, 3}, DType::F32), Tensor::zeros({2, 3}, DType::F32)};
    train::CheckpointTensors t;
    t.params.push_back(&w);
    train::read_checkpoint(path.string(), t, train::ReadOptions{false, false});
  });
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> all{{"image", fuzz_image},   {"manifest", fuzz_manifest},
                                       {"config", fuzz_config}, {"shard", fuzz_shard},
                                       {"coco", fuzz_coco},     {"checkpoint", fuzz_checkpoint}};
  return all;
}

}  // namespace gppf::fuzz
