// Asynchronous checkpoints (AsyncCheckpointer) in one process: the snapshot is a copy, the published
// checkpoint equals a synchronous save, a second begin() publishes the first, errors surface in
// finish(), the destructor publishes nothing; large `layout` attributes. The time begin() costs
// training is measured by bench/bench_checkpoint.cpp (BM_AsyncCheckpointBegin), not here.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "core/error.hpp"
#include "io/checksum.hpp"
#include "io/h5.hpp"
#include "src/train/async_checkpoint.hpp"
#include "src/train/checkpoint.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;

// Named tensors shaped like a model with AdamW state: per parameter, two f32 moments and an i64
// step counter, plus one BN running-mean buffer per parameter group of 4.
struct Model {
  std::vector<std::unique_ptr<nn::Parameter>> params;
  std::vector<std::pair<std::string, std::unique_ptr<Tensor>>> buffers, optimizer;

  Model(const std::vector<Shape>& shapes, float seed) {
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      auto p = std::make_unique<nn::Parameter>();
      p->name = str("layer", i, ".weight");
      p->value = filled(shapes[i], seed + static_cast<float>(i));
      optimizer.emplace_back(p->name + ".exp_avg", std::make_unique<Tensor>(filled(shapes[i], seed * 2)));
      optimizer.emplace_back(p->name + ".exp_avg_sq", std::make_unique<Tensor>(filled(shapes[i], seed * 3)));
      auto step = std::make_unique<Tensor>(Tensor::empty({1}, DType::I64));
      step->data_as<std::int64_t>()[0] = static_cast<std::int64_t>(i) + 100;
      optimizer.emplace_back(p->name + ".step", std::move(step));
      if (i % 4 == 0)
        buffers.emplace_back(p->name + ".running_mean.task0",
                             std::make_unique<Tensor>(filled({shapes[i][0]}, seed + 0.5f)));
      params.push_back(std::move(p));
    }
  }
  static Tensor filled(const Shape& s, float base) {
    Tensor t = Tensor::empty(s, DType::F32);
    float* d = t.data_as<float>();
    for (std::int64_t i = 0; i < t.numel(); ++i) d[i] = base + 1e-3f * static_cast<float>(i % 1000);
    return t;
  }
  CheckpointTensors tensors() const {
    CheckpointTensors t;
    for (const auto& p : params) t.params.push_back(p.get());
    for (const auto& [n, x] : buffers) t.buffers.emplace_back(n, x.get());
    for (const auto& [n, x] : optimizer) t.optimizer.emplace_back(n, x.get());
    return t;
  }
  std::size_t bytes() const {
    std::size_t n = 0;
    const auto t = tensors();
    for (auto* p : t.params) n += p->value.nbytes();
    for (const auto& [s, x] : t.buffers) n += x->nbytes();
    for (const auto& [s, x] : t.optimizer) n += x->nbytes();
    return n;
  }
};

std::vector<Shape> small_shapes() { return {{8, 3, 3, 4}, {16}, {32, 8}, {5}, {4, 4}, {1}}; }

int count_different(const Model& a, const Model& b) {
  const auto x = a.tensors(), y = b.tensors();
  int diff = 0;
  auto cmp = [&](const Tensor& s, const Tensor& t) {
    diff += s.nbytes() != t.nbytes() || std::memcmp(s.data(), t.data(), s.nbytes()) != 0;
  };
  for (std::size_t i = 0; i < x.params.size(); ++i) cmp(x.params[i]->value, y.params[i]->value);
  for (std::size_t i = 0; i < x.buffers.size(); ++i) cmp(*x.buffers[i].second, *y.buffers[i].second);
  for (std::size_t i = 0; i < x.optimizer.size(); ++i) cmp(*x.optimizer[i].second, *y.optimizer[i].second);
  return diff;
}

CheckpointMeta meta_for(std::int64_t step) {
  CheckpointMeta m;
  m.step = step;
  m.config_yaml = "steps: 10\n";
  m.optimizer_type = "adamw";
  m.tasks.push_back({"bars", "classification", "/data/bars", io::LoaderState{"train", 1, 0, 1, 0, 3}, "4 5 6"});
  m.layout = "{\"ranks\": 1}";
  m.rank_rng = {"rank zero's rng"};
  return m;
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

class AsyncCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    m_dir = fs::temp_directory_path() /
            str("gppf-async-", ::getpid(), "-", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(m_dir);
    fs::create_directories(m_dir);
  }
  void TearDown() override { fs::remove_all(m_dir); }
  fs::path m_dir;
};

TEST_F(AsyncCheckpoint, TheSnapshotIsACopyAndThePublishedFileEqualsASynchronousSave) {
  Model model(small_shapes(), 1.0f);
  const Model before(small_shapes(), 1.0f);
  const std::string sync = save_checkpoint((m_dir / "sync").string(), 3, meta_for(5), model.tensors());

  AsyncCheckpointer ckpt(3);
  ckpt.begin((m_dir / "async").string(), 5, 0, 1, meta_for(5), model.tensors());
  // Training goes on and changes everything while the file is written.
  for (auto& p : model.params) p->value.fill_(42.0f);
  for (auto& [n, t] : model.optimizer)
    if (t->dtype() == DType::F32) t->fill_(-1.0f);
  EXPECT_EQ(ckpt.snapshot_bytes(), before.bytes());
  const std::string path = ckpt.finish();
  EXPECT_EQ(path, (m_dir / "async" / "checkpoints" / "step-00000005.h5").string());
  EXPECT_FALSE(ckpt.in_flight());
  EXPECT_TRUE(ckpt.ready());
  EXPECT_EQ(ckpt.finish(), "");  // nothing in flight

  Model from_async(small_shapes(), 9.0f), from_sync(small_shapes(), 8.0f);
  const CheckpointMeta ma = read_checkpoint(path, from_async.tensors(), {});
  const CheckpointMeta ms = read_checkpoint(sync, from_sync.tensors(), {});
  EXPECT_EQ(count_different(from_async, before), 0);
  EXPECT_EQ(count_different(from_sync, before), 0);
  EXPECT_EQ(ma.step, ms.step);
  EXPECT_EQ(ma.layout, ms.layout);
  EXPECT_EQ(ma.rank_rng, ms.rank_rng);
  EXPECT_EQ(ma.tasks[0].loader, ms.tasks[0].loader);
  EXPECT_EQ(checkpoint_tensor_shapes(path, "optimizer"), checkpoint_tensor_shapes(sync, "optimizer"));
  (void)verify_checkpoint(path);
  EXPECT_EQ(files_in(m_dir / "async" / "checkpoints"), files_in(m_dir / "sync" / "checkpoints"));
}

TEST_F(AsyncCheckpoint, BuffersAreReusedAndABeginPublishesTheOneInFlight) {
  Model model(small_shapes(), 2.0f);
  AsyncCheckpointer ckpt(2);
  ckpt.begin(m_dir.string(), 1, 0, 1, meta_for(1), model.tensors());
  std::vector<const void*> first;
  for (auto* p : ckpt.snapshot_view().params) first.push_back(p->value.data());
  for (const auto& [n, t] : ckpt.snapshot_view().optimizer) first.push_back(t->data());
  for (std::int64_t step = 2; step <= 3; ++step) {
    model.params[0]->value.fill_(static_cast<float>(step));
    ckpt.begin(m_dir.string(), step, 0, 1, meta_for(step), model.tensors());
    std::vector<const void*> now;
    for (auto* p : ckpt.snapshot_view().params) now.push_back(p->value.data());
    for (const auto& [n, t] : ckpt.snapshot_view().optimizer) now.push_back(t->data());
    EXPECT_EQ(now, first) << "step " << step;
  }
  // begin(2) published 1 and begin(3) published 2; 3 is still in flight.
  const auto ckpt_path = [&](int s) { return (m_dir / "checkpoints" / checkpoint_file_name(s)).string(); };
  EXPECT_EQ(list_checkpoints(m_dir.string()), (std::vector<std::string>{ckpt_path(2), ckpt_path(1)}));
  const std::string last = ckpt.finish(2, MPI_COMM_NULL);  // keep = 2 removes 1
  EXPECT_EQ(list_checkpoints(m_dir.string()), (std::vector<std::string>{last, ckpt_path(2)}));
  Model got(small_shapes(), 0.0f);
  (void)read_checkpoint(last, got.tensors(), {});
  EXPECT_EQ(got.params[0]->value.to_float_vector()[0], 3.0f);
}

TEST_F(AsyncCheckpoint, BackgroundErrorsSurfaceInFinishAsOneLine) {
  Model model(small_shapes(), 3.0f);
  AsyncCheckpointer ckpt(3);
  ckpt.begin(m_dir.string(), 1, 0, 1, meta_for(1), model.tensors());
  const std::string good = ckpt.finish();
  // A tensor the format cannot store: the background write fails.
  Tensor half = Tensor::zeros({2}, DType::BF16);
  CheckpointTensors bad = model.tensors();
  bad.buffers.emplace_back("odd.bf16", &half);
  ckpt.begin(m_dir.string(), 2, 0, 1, meta_for(2), bad);
  try {
    (void)ckpt.finish();
    FAIL() << "expected the write's error";
  } catch (const Error& e) {
    const std::string msg = e.reason();
    EXPECT_NE(msg.find("step-00000002.h5 was not saved"), std::string::npos) << msg;
    EXPECT_NE(msg.find("odd.bf16"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // The previous checkpoint stays the latest; nothing temporary is left.
  EXPECT_EQ(resolve_checkpoint(m_dir.string()), good);
  EXPECT_EQ(files_in(m_dir / "checkpoints"), (std::vector<std::string>{"latest", "step-00000001.h5"}));
  // A run directory that cannot be created (below a regular file).
  std::ofstream(m_dir / "file") << "x";
  ckpt.begin((m_dir / "file" / "run").string(), 3, 0, 1, meta_for(3), model.tensors());
  try {
    (void)ckpt.finish();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("was not saved"), std::string::npos) << e.reason();
  }
}

TEST_F(AsyncCheckpoint, DestroyingOneInFlightPublishesNothing) {
  Model model(small_shapes(), 4.0f);
  {
    AsyncCheckpointer ckpt(3);
    ckpt.begin(m_dir.string(), 1, 0, 1, meta_for(1), model.tensors());
    (void)ckpt.finish();
    ckpt.begin(m_dir.string(), 2, 0, 1, meta_for(2), model.tensors());
  }
  EXPECT_EQ(files_in(m_dir / "checkpoints"), (std::vector<std::string>{"latest", "step-00000001.h5"}));
  EXPECT_EQ(find_resume_checkpoint(m_dir.string()), (m_dir / "checkpoints" / "step-00000001.h5").string());
}

TEST_F(AsyncCheckpoint, LargeLayoutAndVersionedMetadataRoundTrip) {
  Model model(small_shapes(), 5.0f);
  CheckpointMeta meta = meta_for(4);
  meta.layout.clear();
  for (int r = 0; meta.layout.size() < 200000; ++r) meta.layout += str("{\"rank\": ", r, ", \"legos\": [1, 2, 3]}, ");
  meta.rank_rng = {std::string(7000, '7')};
  const std::string path = save_checkpoint(m_dir.string(), 1, meta, model.tensors());
  const CheckpointMeta got = verify_checkpoint(path);
  EXPECT_EQ(got.layout, meta.layout);
  EXPECT_EQ(got.rank_rng, meta.rank_rng);
  EXPECT_EQ(got.world_size, 1);
  EXPECT_EQ(got.format_version, kCheckpointFormatVersion);
}

// A version-1 file (written before sharding: no /layout, /rank_rng or shard_crc32, a shorter
// meta_crc32) still reads; a newer version is refused with one line.
TEST_F(AsyncCheckpoint, Version1FilesStillReadAndNewerOnesAreRefused) {
  const Model model(small_shapes(), 6.0f);
  CheckpointMeta meta = meta_for(8);
  meta.layout.clear();
  meta.rank_rng.clear();
  const std::string path = (m_dir / "v1.h5").string();
  write_checkpoint(path, meta, model.tensors());
  {
    io::h5::File f = io::h5::File::open(path, true);
    auto l = io::h5::lock();
    ASSERT_GE(H5Ldelete(f.id(), "layout", H5P_DEFAULT), 0);
    ASSERT_GE(H5Ldelete(f.id(), "rank_rng", H5P_DEFAULT), 0);
    ASSERT_GE(H5Adelete(f.id(), "shard_crc32"), 0);
    f.set_attr("format_version", std::int64_t{1});
    std::string text = str("1\n", meta.step, "\n", meta.config_yaml, "\n", meta.optimizer_type, "\n");
    for (const auto& t : meta.tasks) text += str(t.name, "\n", t.loader.to_json(), "\n", t.sampling_rng, "\n");
    f.set_attr("meta_crc32", static_cast<std::int64_t>(io::crc32(0, text.data(), text.size())));
    f.close();
  }
  Model got(small_shapes(), 0.0f);
  const CheckpointMeta m = read_checkpoint(path, got.tensors(), {});
  EXPECT_EQ(count_different(model, got), 0);
  EXPECT_EQ(m.format_version, 1);
  EXPECT_EQ(m.world_size, 1);
  EXPECT_EQ(verify_checkpoint(path).step, 8);
  {
    io::h5::File f = io::h5::File::open(path, true);
    f.set_attr("format_version", kCheckpointFormatVersion + 1);
  }
  try {
    (void)verify_checkpoint(path);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find(str(path, " is damaged: format version ", kCheckpointFormatVersion + 1)),
              std::string::npos)
        << e.reason();
  }
}

}  // namespace
}  // namespace gppf::train
