// Loader throughput (samples/s) for 28x28 raw images and 224x224 JPEG, against the plain libjpeg
// decode rate of the same images on one core. Data sets are made once in a temporary folder.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cmath>
#include <ctime>
#include <filesystem>

#include "io/image_codec.hpp"
#include "io/loader.hpp"
#include "io/random.hpp"

namespace fs = std::filesystem;
using namespace gppf;

namespace {

std::string bench_dir() {
  static const std::string dir = [] {
    const std::string d = (fs::temp_directory_path() / ("gppf-bench-loader-" + std::to_string(::getpid()))).string();
    fs::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all((fs::temp_directory_path() / ("gppf-bench-loader-" + std::to_string(::getpid()))), ec);
    });
    return d;
  }();
  return dir;
}

// 60,000 28x28x1 raw samples, MNIST's shape.
const std::string& raw_dataset() {
  static const std::string path = [] {
    const std::string out = bench_dir() + "/raw28";
    io::Manifest m;
    for (int k = 0; k < 10; ++k) m.classes.push_back(std::to_string(k));
    m.height = m.width = 28;
    m.channels = 1;
    io::DatasetWriter::Options opt;
    opt.header = m;
    io::DatasetWriter wr(out, opt);
    io::Rng rng(1);
    for (int i = 0; i < 60000; ++i) {
      io::Sample s;
      s.image.resize(784);
      for (int k = 0; k < 784; ++k) s.image[k] = (k % 28 > 6 && k % 28 < 20 && rng.uniform() < 0.4) ? 255 : 0;
      s.label = i % 10;
      s.id = i;
      wr.add("train", std::move(s), "bench");
    }
    wr.finish();
    return out;
  }();
  return path;
}

// A photo-like 224x224 RGB image: smooth gradients, shapes and mild noise (JPEG of ~15-25 kB).
io::Image photo(std::uint64_t seed) {
  io::Rng rng(seed);
  io::Image im{224, 224, 3, std::vector<std::uint8_t>(224 * 224 * 3)};
  const double fx = rng.uniform(0.01, 0.05), fy = rng.uniform(0.01, 0.05), cx = rng.uniform(50, 170);
  for (int y = 0; y < 224; ++y)
    for (int x = 0; x < 224; ++x)
      for (int c = 0; c < 3; ++c) {
        double v = 128 + 60 * std::sin(fx * x * (c + 1) + fy * y) + 40 * std::cos(0.02 * (x - cx) * (y - cx) / 50);
        if ((x - cx) * (x - cx) + (y - 112) * (y - 112) < 1600) v = 200 - c * 40;
        v += rng.uniform(-12, 12);
        im.pixels[(y * 224 + x) * 3 + c] = static_cast<std::uint8_t>(std::clamp(v, 0.0, 255.0));
      }
  return im;
}

const std::vector<std::vector<std::uint8_t>>& jpegs() {
  static const auto files = [] {
    std::vector<std::vector<std::uint8_t>> out;
    for (int i = 0; i < 512; ++i) out.push_back(io::encode_jpeg(photo(i), 90));
    return out;
  }();
  return files;
}

const std::string& jpeg_dataset() {
  static const std::string path = [] {
    const std::string out = bench_dir() + "/jpeg224";
    io::Manifest m;
    for (int k = 0; k < 10; ++k) m.classes.push_back(std::to_string(k));
    m.encoding = "encoded";
    m.height = m.width = 224;
    m.channels = 3;
    m.block = 64;
    io::DatasetWriter::Options opt;
    opt.header = m;
    io::DatasetWriter wr(out, opt);
    for (int i = 0; i < 512; ++i) {
      io::Sample s;
      s.image = jpegs()[i];
      s.height = s.width = 224;
      s.channels = 3;
      s.label = i % 10;
      s.id = i;
      wr.add("val", std::move(s), "bench");
    }
    wr.finish();
    return out;
  }();
  return path;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// shares > 1: replica 0 of `shares` data-parallel replicas (its part of each batch, read sample by
// sample); its samples/cpu-s against the whole loader's is the cost per sample of those reads.
void run_loader(benchmark::State& state, const std::string& dir, const std::string& split, int batch,
                bool augment = false, int shares = 1) {
  io::LoaderConfig cfg;
  cfg.shares = shares;
  if (augment) {
    cfg.augment.enabled = true;
    cfg.augment.crop_area_min = 0.6;
    cfg.augment.hflip = 0.5;
    cfg.augment.brightness = cfg.augment.contrast = 0.2;
  }
  cfg.split = split;
  cfg.batch_size = batch;
  cfg.workers = static_cast<int>(state.range(0));
  cfg.prefetch = 2 * cfg.workers + 2;
  cfg.pinned = false;
  const io::Dataset ds = io::Dataset::open(dir);
  io::Loader loader(ds, cfg);
  for (int i = 0; i < 3; ++i) loader.next();  // warm-up: threads up, page cache hot
  std::int64_t samples = 0;
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    io::Batch b = loader.next();
    samples += b.size();
    benchmark::DoNotOptimize(b.images.data());
  }
  state.SetItemsProcessed(samples);
  // Per core of CPU time spent by the whole process: fair on a shared machine.
  state.counters["samples/cpu-s"] = static_cast<double>(samples) / (process_cpu_seconds() - cpu0);
  state.counters["samples/s/thread"] =
      benchmark::Counter(static_cast<double>(samples) / cfg.workers, benchmark::Counter::kIsRate);
}

void BM_LoaderRaw28(benchmark::State& state) { run_loader(state, raw_dataset(), "train", 256); }
void BM_LoaderRaw28Augment(benchmark::State& state) { run_loader(state, raw_dataset(), "train", 256, true); }
void BM_LoaderJpeg224(benchmark::State& state) { run_loader(state, jpeg_dataset(), "val", 32); }
void BM_LoaderRaw28Replica2(benchmark::State& state) { run_loader(state, raw_dataset(), "train", 256, false, 2); }
void BM_LoaderJpeg224Replica2(benchmark::State& state) { run_loader(state, jpeg_dataset(), "val", 32, false, 2); }

// The yardstick: libjpeg(-turbo) decoding the same files on one core, nothing else.
void BM_JpegDecodeOnly(benchmark::State& state) {
  const auto& files = jpegs();
  std::size_t i = 0;
  for (auto _ : state) {
    const auto& f = files[i++ % files.size()];
    io::Image im = io::decode_image(f.data(), f.size(), 3, "bench");
    benchmark::DoNotOptimize(im.pixels.data());
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(BM_LoaderRaw28)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK(BM_LoaderRaw28Augment)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK(BM_JpegDecodeOnly)->Unit(benchmark::kMicrosecond)->MinTime(1.0);
BENCHMARK(BM_LoaderJpeg224)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK(BM_LoaderRaw28Replica2)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK(BM_LoaderJpeg224Replica2)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);
