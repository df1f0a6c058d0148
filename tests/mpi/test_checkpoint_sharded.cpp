// Sharded checkpoints under MPI (run with 1, 2 and 4 ranks): each rank writes the tensors it owns;
// every rank reads everything back (resharding to the same world); a 2-rank checkpoint is read by one
// process and by 4, a 1-rank one by all ranks; a missing, truncated or foreign shard is named and
// `--resume auto` falls back past it; a failed write on one rank fails the save on all of them.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include "core/error.hpp"
#include "src/dist/mpi.hpp"
#include "src/train/checkpoint.hpp"
#include "tests/common/files.hpp"

namespace gppf::train {
namespace {

using test::error_of;

namespace fs = std::filesystem;

int world_rank(MPI_Comm c = MPI_COMM_WORLD) {
  int r = 0;
  MPI_Comm_rank(c, &r);
  return r;
}
int world_size(MPI_Comm c = MPI_COMM_WORLD) {
  int s = 0;
  MPI_Comm_size(c, &s);
  return s;
}
void barrier() { MPI_Barrier(MPI_COMM_WORLD); }

// A model-like set of named tensors: params of several shapes, BN buffers, optimizer moments and
// i64 step counters. Values depend on `seed` and the tensor, so any mix-up shows.
struct Model {
  std::vector<std::unique_ptr<nn::Parameter>> params;
  std::vector<std::pair<std::string, std::unique_ptr<Tensor>>> buffers, optimizer;

  explicit Model(float seed) {
    const std::vector<Shape> shapes = {{4, 3, 3, 2}, {7}, {16, 5}, {1}, {3, 2, 2, 8}, {9, 9}, {2}, {33}};
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      auto p = std::make_unique<nn::Parameter>();
      p->name = str("stage", i % 3, ".block", i, ".lego", i % 2, ".weight");
      p->value = filled(shapes[i], seed + static_cast<float>(i));
      optimizer.emplace_back(p->name + ".exp_avg", std::make_unique<Tensor>(filled(shapes[i], seed * 2 + i)));
      optimizer.emplace_back(p->name + ".exp_avg_sq", std::make_unique<Tensor>(filled(shapes[i], seed * 3 + i)));
      auto step = std::make_unique<Tensor>(Tensor::empty({1}, DType::I64));
      step->data_as<std::int64_t>()[0] = static_cast<std::int64_t>(seed * 10) + static_cast<std::int64_t>(i);
      optimizer.emplace_back(p->name + ".step", std::move(step));
      params.push_back(std::move(p));
    }
    for (int t = 0; t < 3; ++t)
      buffers.emplace_back(str("stem.bn.running_mean.task", t), std::make_unique<Tensor>(filled({6}, seed + 50 + t)));
  }
  static Tensor filled(const Shape& s, float base) {
    Tensor t = Tensor::empty(s, DType::F32);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = base + 0.25f * static_cast<float>(i);
    return t;
  }
  std::size_t count() const { return params.size() + buffers.size() + optimizer.size(); }
  // The tensors with index (params, then buffers, then optimizer) i such that owner(i) is true.
  template <class F>
  CheckpointTensors select(F owner) const {
    CheckpointTensors t;
    std::size_t i = 0;
    for (const auto& p : params)
      if (owner(i++)) t.params.push_back(p.get());
    for (const auto& [n, x] : buffers)
      if (owner(i++)) t.buffers.emplace_back(n, x.get());
    for (const auto& [n, x] : optimizer)
      if (owner(i++)) t.optimizer.emplace_back(n, x.get());
    return t;
  }
  CheckpointTensors all() const {
    return select([](std::size_t) { return true; });
  }
};

// Number of tensors whose bytes differ between a and b.
int count_different(const Model& a, const Model& b) {
  const CheckpointTensors x = a.all(), y = b.all();
  std::vector<std::pair<const Tensor*, const Tensor*>> pairs;
  for (std::size_t i = 0; i < x.params.size(); ++i) pairs.emplace_back(&x.params[i]->value, &y.params[i]->value);
  for (std::size_t i = 0; i < x.buffers.size(); ++i) pairs.emplace_back(x.buffers[i].second, y.buffers[i].second);
  for (std::size_t i = 0; i < x.optimizer.size(); ++i) pairs.emplace_back(x.optimizer[i].second, y.optimizer[i].second);
  int diff = 0;
  for (const auto& [s, t] : pairs)
    if (s->nbytes() != t->nbytes() || std::memcmp(s->data(), t->data(), s->nbytes()) != 0) ++diff;
  return diff;
}

CheckpointMeta meta_for(std::int64_t step, int world) {
  CheckpointMeta m;
  m.step = step;
  m.config_yaml = "steps: 100\n";
  m.optimizer_type = "adamw";
  m.tasks.push_back({"bars", "classification", "/data/bars", io::LoaderState{"train", 5, 0, 1, 2, 7}, "1 2 3"});
  m.layout = str("{\"world\": ", world, "}");
  for (int r = 0; r < world; ++r) m.rank_rng.push_back(str("rng of rank ", r));
  return m;
}

// A run directory shared by all ranks (rank 0's pid), created fresh.
fs::path shared_dir(const std::string& name) {
  long pid = world_rank() == 0 ? static_cast<long>(::getpid()) : 0;
  MPI_Bcast(&pid, 1, MPI_LONG, 0, MPI_COMM_WORLD);
  const fs::path dir = fs::temp_directory_path() / str("gppf-mpi-ckpt-", pid, "-", world_size(), "-", name);
  if (world_rank() == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  barrier();
  return dir;
}

void clean(const fs::path& dir) {
  barrier();
  if (world_rank() == 0) fs::remove_all(dir);
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(ShardedCheckpoint, EachRankWritesItsShareAndEveryRankReadsEverything) {
  const int rank = world_rank(), world = world_size();
  const fs::path run = shared_dir("roundtrip");
  const Model truth(1.0f);
  const std::string path =
      save_checkpoint(run.string(), 2, meta_for(7, world),
                      truth.select([&](std::size_t i) { return static_cast<int>(i) % world == rank; }), MPI_COMM_WORLD);
  EXPECT_EQ(path, (run / "checkpoints" / "step-00000007.h5").string());
  barrier();
  // The main file, one shard per other rank, `latest`; nothing temporary.
  std::vector<std::string> want = {"latest", "step-00000007.h5"};
  for (int r = 1; r < world; ++r) want.push_back(checkpoint_shard_name(7, r));
  std::sort(want.begin(), want.end());
  EXPECT_EQ(files_in(run / "checkpoints"), want);
  EXPECT_EQ(list_checkpoints(run.string()), std::vector<std::string>{path});

  Model got(-5.0f);
  ASSERT_GT(count_different(truth, got), 0);
  const CheckpointMeta m = read_checkpoint(path, got.all(), {});
  EXPECT_EQ(count_different(truth, got), 0);
  EXPECT_EQ(m.step, 7);
  EXPECT_EQ(m.world_size, world);
  EXPECT_EQ(m.layout, str("{\"world\": ", world, "}"));
  ASSERT_EQ(m.rank_rng.size(), static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) EXPECT_EQ(m.rank_rng[static_cast<std::size_t>(r)], str("rng of rank ", r));
  ASSERT_EQ(m.tasks.size(), 1u);
  EXPECT_EQ(m.tasks[0].loader.batch, 7);
  EXPECT_EQ(read_checkpoint_meta(path).rank_rng, m.rank_rng);
  EXPECT_EQ(verify_checkpoint(path).world_size, world);
  EXPECT_EQ(checkpoint_tensor_shapes(path, "params").size(), truth.params.size());
  EXPECT_EQ(checkpoint_tensor_shapes(path, "optimizer").size(), truth.optimizer.size());

  // Another ownership than the writers' (a resharded resume): each rank loads a different share.
  Model part(-7.0f);
  ReadOptions partial;
  partial.exact = false;
  (void)read_checkpoint(path, part.select([&](std::size_t i) { return static_cast<int>(i + 1) % world == rank; }),
                        partial);
  const CheckpointTensors mine = part.select([&](std::size_t i) { return static_cast<int>(i + 1) % world == rank; });
  const CheckpointTensors ref = truth.select([&](std::size_t i) { return static_cast<int>(i + 1) % world == rank; });
  for (std::size_t i = 0; i < mine.params.size(); ++i)
    EXPECT_EQ(mine.params[i]->value.to_float_vector(), ref.params[i]->value.to_float_vector());

  // A name held by no file: one line naming it.
  Model extra(0.0f);
  extra.params[0]->name = "stage9.nowhere.weight";
  const std::string e = error_of([&] { (void)read_checkpoint(path, extra.all(), partial); });
  EXPECT_NE(e.find("/params/stage9.nowhere.weight is missing"), std::string::npos) << e;
  EXPECT_NE(e.find("does not fit"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  clean(run);
}

// Written by the first min(2, W) ranks, read by one process (rank 0) and by every rank; written by
// rank 0 alone, read by every rank.
TEST(ShardedCheckpoint, ReshardsToOtherWorldSizes) {
  const int rank = world_rank(), world = world_size();
  const fs::path run = shared_dir("reshard");
  const Model truth(3.0f);
  MPI_Comm pair = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, rank < 2 ? 0 : MPI_UNDEFINED, rank, &pair);
  const std::string two = (run / "two" / "checkpoints" / "step-00000004.h5").string();
  if (pair != MPI_COMM_NULL) {
    const int w = world_size(pair);
    (void)save_checkpoint((run / "two").string(), 3, meta_for(4, w),
                          truth.select([&](std::size_t i) { return static_cast<int>(i * 7 % 5) % w == rank; }), pair);
    MPI_Comm_free(&pair);
  }
  if (rank == 0) (void)save_checkpoint((run / "one").string(), 3, meta_for(9, 1), truth.all(), MPI_COMM_SELF);
  barrier();
  if (rank == 0) {  // one process reads everything
    Model got(0.0f);
    const CheckpointMeta m = read_checkpoint(two, got.all(), {});
    EXPECT_EQ(count_different(truth, got), 0);
    EXPECT_EQ(m.world_size, std::min(world, 2));
  }
  barrier();
  for (const std::string& path : {two, (run / "one" / "checkpoints" / "step-00000009.h5").string()}) {
    Model got(0.0f);
    (void)read_checkpoint(path, got.all(), {});
    EXPECT_EQ(count_different(truth, got), 0) << path;
  }
  clean(run);
}

TEST(ShardedCheckpoint, DamagedShardsAreNamedAndResumeFallsBack) {
  const int rank = world_rank(), world = world_size();
  if (world < 2) GTEST_SKIP() << "needs shards: 2 or more ranks";
  const fs::path run = shared_dir("damaged");
  const Model truth(2.0f);
  const auto owned = truth.select([&](std::size_t i) { return static_cast<int>(i) % world == rank; });
  std::vector<std::string> paths;
  for (std::int64_t step : {3, 5, 7, 9})
    paths.push_back(save_checkpoint(run.string(), 4, meta_for(step, world), owned, MPI_COMM_WORLD));
  const fs::path dir = run / "checkpoints";
  const fs::path gone = dir / checkpoint_shard_name(9, 1), cut = dir / checkpoint_shard_name(7, world - 1);
  const fs::path foreign = dir / checkpoint_shard_name(5, 1);
  barrier();
  if (rank == 0) {
    fs::remove(gone);
    fs::resize_file(cut, fs::file_size(cut) / 2);
    // Step 3's shard under step 5's name: complete and checksummed, but from another save.
    fs::copy_file(dir / checkpoint_shard_name(3, 1), foreign, fs::copy_options::overwrite_existing);
  }
  barrier();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {paths[3], gone.string() + " is missing"},
      {paths[2], cut.string() + " has "},
      {paths[1], foreign.string() + " is rank 1 of " + std::to_string(world) + " at step 3"}};
  for (const auto& [path, want] : cases) {
    for (const auto& e : {error_of([&] { (void)verify_checkpoint(path); }),
                          error_of([&] { (void)read_checkpoint(path, Model(0.0f).all(), {}); }),
                          error_of([&] { (void)read_checkpoint_meta(path); })}) {
      EXPECT_NE(e.find("checkpoint " + path + " is damaged: shard " + want), std::string::npos) << e;
      EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    }
  }
  EXPECT_EQ(find_resume_checkpoint(run.string()), paths[0]);
  // A shard file is not a checkpoint, and reading one says which file to open instead.
  EXPECT_EQ(list_checkpoints(run.string()).size(), 4u);
  const std::string e = error_of([&] { (void)verify_checkpoint((dir / checkpoint_shard_name(3, 1)).string()); });
  EXPECT_NE(e.find("open step-00000003.h5 instead"), std::string::npos) << e;
  clean(run);
}

TEST(ShardedCheckpoint, AFailedWriteOnOneRankFailsTheSaveEverywhere) {
  const int rank = world_rank(), world = world_size();
  const fs::path run = shared_dir("failed");
  const Model truth(4.0f);
  const auto owned = truth.select([&](std::size_t i) { return static_cast<int>(i) % world == rank; });
  const std::string first = save_checkpoint(run.string(), 3, meta_for(2, world), owned, MPI_COMM_WORLD);
  const int bad = world - 1;
  // The last rank's write fails for real: a tensor of a dtype checkpoints do not store.
  Tensor half = Tensor::zeros({4}, DType::F16);
  CheckpointTensors mine = owned;
  if (rank == bad) mine.buffers.emplace_back("stem.half_precision", &half);
  const std::string e =
      error_of([&] { (void)save_checkpoint(run.string(), 3, meta_for(4, world), mine, MPI_COMM_WORLD); });
  EXPECT_NE(e.find("step-00000004.h5 was not saved"), std::string::npos) << e;
  EXPECT_NE(e.find("stem.half_precision"), std::string::npos) << e;
  if (world > 1) {
    EXPECT_NE(e.find(str("rank ", bad, ": ")), std::string::npos) << e;
  }
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  barrier();
  // Nothing of step 4 is left; step 2 is still the latest.
  std::vector<std::string> want = {"latest", "step-00000002.h5"};
  for (int r = 1; r < world; ++r) want.push_back(checkpoint_shard_name(2, r));
  std::sort(want.begin(), want.end());
  EXPECT_EQ(files_in(run / "checkpoints"), want);
  EXPECT_EQ(resolve_checkpoint(run.string()), first);
  barrier();  // nobody writes step 6 while another rank still lists the directory

  // The publish phase alone, told by one rank that its (background) write failed.
  (void)write_checkpoint_shard(run.string(), 6, rank, world, meta_for(6, world), owned);
  const std::string e2 = error_of([&] {
    (void)publish_checkpoint(run.string(), 6, 3, MPI_COMM_WORLD, rank == 0 ? "disk quota exceeded (test)" : "");
  });
  EXPECT_NE(e2.find(str(world > 1 ? "rank 0: " : "", "disk quota exceeded (test)")), std::string::npos) << e2;
  barrier();
  EXPECT_EQ(files_in(run / "checkpoints"), want);
  clean(run);
}

TEST(ShardedCheckpoint, KeepRemovesOldCheckpointsWithTheirShards) {
  const int rank = world_rank(), world = world_size();
  const fs::path run = shared_dir("keep");
  const Model truth(5.0f);
  const auto owned = truth.select([&](std::size_t i) { return static_cast<int>(i) % world == rank; });
  for (std::int64_t step = 1; step <= 4; ++step)
    (void)save_checkpoint(run.string(), 2, meta_for(step, world), owned, MPI_COMM_WORLD);
  barrier();
  std::vector<std::string> want = {"latest", "step-00000003.h5", "step-00000004.h5"};
  for (int r = 1; r < world; ++r) {
    want.push_back(checkpoint_shard_name(3, r));
    want.push_back(checkpoint_shard_name(4, r));
  }
  std::sort(want.begin(), want.end());
  EXPECT_EQ(files_in(run / "checkpoints"), want);
  clean(run);
}

}  // namespace
}  // namespace gppf::train
