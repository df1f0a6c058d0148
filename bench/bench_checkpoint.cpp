// Checkpoint write and read speed (bytes of tensor data per second) for tensor sets the size of
// gppf-mini's and gppf-r50's (parameters plus SGD momentum), against raw writes and reads of the same
// number of bytes in the same folder: write()+fsync (what `dd conv=fsync` does) and O_DIRECT.
// The folder is GPPF_BENCH_DIR (default: the temp folder); point it at the file system to measure.
// Reads are cold: the files' pages are dropped from the page cache (posix_fadvise) before each read.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>

#include "core/error.hpp"
#include "src/train/async_checkpoint.hpp"
#include "src/train/checkpoint.hpp"

namespace fs = std::filesystem;
using namespace gppf;

namespace {

const fs::path& bench_dir() {
  static const fs::path dir = [] {
    const char* env = std::getenv("GPPF_BENCH_DIR");
    const fs::path d = fs::path(env && *env ? env : fs::temp_directory_path().string()) /
                       ("gppf-bench-ckpt-" + std::to_string(::getpid()));
    fs::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(bench_dir(), ec);
    });
    return d;
  }();
  return dir;
}

// A model's tensors as checkpoints see them: `tensors` parameter tensors holding `params` floats in
// all (a third are 256-float BN/bias vectors, the rest share the remainder), each with a momentum
// tensor of its shape. Counts from `gppf inspect` of configs/mini.yaml and of the same config with
// `backbone: gppf-r50` and its default stages.
struct ModelSet {
  std::vector<nn::Parameter> params;
  std::vector<Tensor> momentum;
  train::CheckpointTensors view;
  std::size_t bytes = 0;

  ModelSet(std::int64_t total, int tensors) : params(static_cast<std::size_t>(tensors)) {
    const int vectors = tensors / 3;
    const std::int64_t big = (total - std::int64_t(vectors) * 256) / (tensors - vectors);
    for (int i = 0; i < tensors; ++i) {
      auto& p = params[static_cast<std::size_t>(i)];
      p.name = str("layer", i, i < vectors ? ".bn.weight" : ".conv.weight");
      p.value = Tensor::empty({i < vectors ? 256 : big}, DType::F32);
      // Non-constant bytes: no file system or HDF5 layer may shortcut zeros.
      float* v = p.value.data_as<float>();
      for (std::int64_t k = 0; k < p.value.numel(); ++k) v[k] = static_cast<float>((k * 2654435761u) % 1000003);
      momentum.push_back(Tensor::empty(p.value.shape(), DType::F32));
      std::memcpy(momentum.back().data(), p.value.data(), p.value.nbytes());
      bytes += 2 * p.value.nbytes();
    }
    for (int i = 0; i < tensors; ++i) {
      view.params.push_back(&params[static_cast<std::size_t>(i)]);
      view.optimizer.emplace_back(params[static_cast<std::size_t>(i)].name + ".momentum",
                                  &momentum[static_cast<std::size_t>(i)]);
    }
  }
};

ModelSet& model(int which) {
  static std::unique_ptr<ModelSet> sets[2];
  if (!sets[which])
    sets[which] = which == 0 ? std::make_unique<ModelSet>(104429, 150)     // gppf-mini
                             : std::make_unique<ModelSet>(33307757, 600);  // gppf-r50
  return *sets[which];
}

const char* model_name(int which) { return which == 0 ? "gppf-mini" : "gppf-r50"; }

void drop_cache(const fs::path& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const int fd = ::open(e.path().c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

train::CheckpointMeta meta_at(std::int64_t step) {
  train::CheckpointMeta m;
  m.step = step;
  m.optimizer_type = "sgd";
  return m;
}

// save_checkpoint: temporary file, fsync, rename, `latest`, pruning to the newest one.
void BM_CheckpointWrite(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  ModelSet& m = model(which);
  const fs::path run = bench_dir() / "write";
  std::int64_t step = 0;
  for (auto _ : state) train::save_checkpoint(run.string(), 1, meta_at(++step), m.view);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(m.bytes));
  state.SetLabel(str(model_name(which), ", ", m.bytes >> 10, " KiB"));
  fs::remove_all(run);
}

// read_checkpoint (every checksum verified); range(1) = 1: from a cold page cache, 0: warm.
void BM_CheckpointRead(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  const bool cold = state.range(1) != 0;
  ModelSet& m = model(which);
  const fs::path run = bench_dir() / "read";
  const std::string path = train::save_checkpoint(run.string(), 1, meta_at(1), m.view);
  for (auto _ : state) {
    state.PauseTiming();
    if (cold) drop_cache(run);
    state.ResumeTiming();
    benchmark::DoNotOptimize(train::read_checkpoint(path, m.view, {}));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(m.bytes));
  state.SetLabel(str(model_name(which), cold ? ", cold cache" : ", warm cache"));
  fs::remove_all(run);
}

// AsyncCheckpointer::begin(): the snapshot copy, what a training step loses to a checkpoint (the
// write runs behind it); the counter `published_ms` is begin() to the published file. Was a printing
// test in tests/ckpt/test_async.cpp.
void BM_AsyncCheckpointBegin(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  ModelSet& m = model(which);
  const fs::path run = bench_dir() / "async";
  train::AsyncCheckpointer ckpt(1);
  ckpt.reserve(m.view);  // buffers allocated once, as training does at start-up
  std::int64_t step = 0;
  double published = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    ++step;
    ckpt.begin(run.string(), step, 0, 1, meta_at(step), m.view);
    state.PauseTiming();
    while (!ckpt.ready()) std::this_thread::sleep_for(std::chrono::microseconds(200));
    (void)ckpt.finish();
    published += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.ResumeTiming();
  }
  state.counters["published_ms"] = 1e3 * published / static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(m.bytes));
  state.SetLabel(str(model_name(which), ", ", m.bytes >> 10, " KiB"));
  fs::remove_all(run);
}

// The same bytes written in 4 MiB blocks: range(1) = 0 buffered + fsync (dd conv=fsync), 1 O_DIRECT
// (dd oflag=direct). Reads: range(1) = 0 buffered from a cold cache, 1 O_DIRECT (dd iflag=direct).
constexpr std::size_t kBlock = std::size_t(4) << 20;

std::size_t raw_bytes(int which) { return model(which).bytes / kBlock * kBlock; }

char* aligned_block() {
  static char* block = [] {
    void* p = nullptr;
    GPPF_CHECK(::posix_memalign(&p, 4096, kBlock) == 0, "posix_memalign failed");
    for (std::size_t i = 0; i < kBlock; ++i) static_cast<char*>(p)[i] = static_cast<char>(i * 131);
    return static_cast<char*>(p);
  }();
  return block;
}

void write_raw(const fs::path& file, std::size_t bytes, bool direct) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | (direct ? O_DIRECT : 0), 0644);
  GPPF_CHECK(fd >= 0, "cannot open ", file.string(), (direct ? " with O_DIRECT" : ""), ": ", std::strerror(errno));
  for (std::size_t off = 0; off < bytes; off += kBlock)
    GPPF_CHECK(::write(fd, aligned_block(), kBlock) == static_cast<ssize_t>(kBlock), "write to ", file.string(),
               " failed: ", std::strerror(errno));
  GPPF_CHECK(::fsync(fd) == 0, "fsync ", file.string(), " failed");
  ::close(fd);
}

void BM_RawWrite(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  const bool direct = state.range(1) != 0;
  const fs::path file = bench_dir() / "raw-write";
  for (auto _ : state) write_raw(file, raw_bytes(which), direct);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(raw_bytes(which)));
  state.SetLabel(str(model_name(which), direct ? ", O_DIRECT (dd oflag=direct)" : ", write+fsync (dd conv=fsync)"));
  fs::remove(file);
}

void BM_RawRead(benchmark::State& state) {
  const int which = static_cast<int>(state.range(0));
  const bool direct = state.range(1) != 0;
  const fs::path file = bench_dir() / "raw-read";
  write_raw(file, raw_bytes(which), false);
  for (auto _ : state) {
    state.PauseTiming();
    drop_cache(file.parent_path());
    state.ResumeTiming();
    const int fd = ::open(file.c_str(), O_RDONLY | (direct ? O_DIRECT : 0));
    GPPF_CHECK(fd >= 0, "cannot open ", file.string(), (direct ? " with O_DIRECT" : ""), ": ", std::strerror(errno));
    for (std::size_t off = 0; off < raw_bytes(which); off += kBlock)
      GPPF_CHECK(::read(fd, aligned_block(), kBlock) == static_cast<ssize_t>(kBlock), "read failed");
    ::close(fd);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(raw_bytes(which)));
  state.SetLabel(
      str(model_name(which), direct ? ", O_DIRECT (dd iflag=direct)" : ", cold cache (dd after drop_caches)"));
  fs::remove(file);
}

}  // namespace

// Whole-file operations of up to a second each: a few iterations, wall time.
BENCHMARK(BM_CheckpointWrite)->Arg(0)->Iterations(20)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_CheckpointWrite)->Arg(1)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AsyncCheckpointBegin)->Arg(0)->Iterations(20)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_AsyncCheckpointBegin)->Arg(1)->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_CheckpointRead)->Args({0, 1})->Iterations(20)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_CheckpointRead)->Args({1, 1})->Args({1, 0})->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_RawWrite)->Args({1, 0})->Args({1, 1})->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_RawRead)->Args({1, 0})->Args({1, 1})->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
