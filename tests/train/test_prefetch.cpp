// Input staging and the trainer's prefetch (src/train/staging.hpp, TrainOptions::prefetch): step s+1's
// tasks and batches drawn during step s change nothing a run computes or saves. The same batches in
// the same steps, bitwise equal checkpoints at every boundary (loader positions and sampling RNGs
// included), and a resume from a checkpoint written while a batch was drawn ahead continues bitwise.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>

#include "io/dataset.hpp"
#include "src/optim/optimizer.hpp"
#include "src/train/centernet.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/network.hpp"
#include "src/train/staging.hpp"
#include "src/train/trainer.hpp"
#include "tests/common/datasets.hpp"
#include "tests/common/files.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;
using test::ckpt;

// A network and optimizer of `c`, with everything a checkpoint holds.
struct Model {
  std::vector<TaskSpec> specs;
  std::unique_ptr<Network> net;
  std::unique_ptr<optim::Optimizer> opt;
  explicit Model(const TrainConfig& c) {
    for (const auto& t : c.tasks) specs.push_back(resolve_task(t, io::Dataset::open(t.dataset).manifest()));
    net = std::make_unique<Network>(c, specs);
    opt = optim::Optimizer::create(c.optimizer, net->parameters());
  }
  CheckpointTensors tensors() { return {net->parameters(), net->buffers(), opt->state()}; }
};

// Names of the tensors whose bytes differ between the two checkpoints.
std::vector<std::string> different_tensors(const TrainConfig& c, const std::string& a, const std::string& b) {
  Model ma(c), mb(c);
  (void)read_checkpoint(a, ma.tensors(), {});
  (void)read_checkpoint(b, mb.tensors(), {});
  std::vector<std::pair<std::string, const Tensor*>> ta, tb;
  for (Model* m : {&ma, &mb}) {
    auto& out = m == &ma ? ta : tb;
    const CheckpointTensors t = m->tensors();
    for (auto* p : t.params) out.emplace_back("params/" + p->name, &p->value);
    for (const auto& [n, x] : t.buffers) out.emplace_back("buffers/" + n, x);
    for (const auto& [n, x] : t.optimizer) out.emplace_back("optimizer/" + n, x);
  }
  std::vector<std::string> diff;
  EXPECT_EQ(ta.size(), tb.size());
  for (std::size_t i = 0; i < ta.size() && i < tb.size(); ++i) {
    const Tensor &x = *ta[i].second, &y = *tb[i].second;
    if (ta[i].first != tb[i].first || x.nbytes() != y.nbytes() || std::memcmp(x.data(), y.data(), x.nbytes()) != 0)
      diff.push_back(ta[i].first);
  }
  return diff;
}

class Prefetch : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-prefetch-" + std::to_string(::getpid()));
    fs::create_directories(s_dir);
    test::write_bars((s_dir / "bars").string(), 128, 40, 1);
    test::write_squares((s_dir / "squares").string(), 64, 20, 2);
  }
  static void TearDownTestSuite() { fs::remove_all(s_dir); }

  // A checkpoint at every step boundary (the timer: the kind of checkpoint no step can foresee), an
  // evaluation every 4 steps, one task sampled half the time (its RNG is drawn ahead too), AdamW.
  static TrainConfig config(const std::vector<std::string>& overrides = {}) {
    const std::string yaml = str(R"(
steps: 10
log_every: 1
threads: 1
eval_every: 4
eval_batches: 1
bn_calibration_batches: 2
checkpoint_every: 0
checkpoint_minutes: 1e-9
keep_checkpoints: 20
optimizer: {type: adamw, lr: 0.01, weight_decay: 0.01}
schedule: {type: cosine, warmup_steps: 2}
model:
  backbone: gppf-mini
  stem_channels: 4
  stages: [[8, 1, 1], [8, 1, 2]]
  legos: 3
  top_k: 1
  routing: {warmup: noisy, warmup_steps: 4}
  neck: {first_stage: 0, channels: 8}
tasks:
  - {name: bars, type: classification, dataset: )",
                                 (s_dir / "bars").string(), R"(, batch_size: 16}
  - {name: det, type: detection, dataset: )",
                                 (s_dir / "squares").string(), R"(, batch_size: 8, sampling_weight: 0.5}
  - {name: seg, type: segmentation, dataset: )",
                                 (s_dir / "squares").string(), R"(, batch_size: 8}
)");
    return parse_config(yaml, overrides, "prefetch.yaml");
  }

  static TrainSummary run(const fs::path& dir, bool prefetch, const std::string& resume = "") {
    TrainOptions o{dir.string(), resume};
    o.prefetch = prefetch;
    return run_training(config(), o);
  }

  static fs::path s_dir;
};
fs::path Prefetch::s_dir;

TEST_F(Prefetch, StepsTrainOnTheBatchesTheyWouldDrawThemselvesAndCheckpointsAgree) {
  const fs::path ahead = s_dir / "ahead", each = s_dir / "each";
  const TrainSummary a = run(ahead, true), e = run(each, false);
  EXPECT_EQ(a.metrics, e.metrics);
  EXPECT_EQ(a.val, e.val);
  // The loaders read the same bytes.
  EXPECT_EQ(a.bytes_read, e.bytes_read);
  // Every step's losses (so every step trained on the same batches), the evaluations and routing.
  EXPECT_EQ(test::metrics_lines(ahead), test::metrics_lines(each));
  const TrainConfig c = config();
  for (std::int64_t step = 1; step <= 10; ++step) {
    SCOPED_TRACE(str("step ", step));
    EXPECT_EQ(different_tensors(c, ckpt(ahead, step), ckpt(each, step)), std::vector<std::string>{});
    // Written while step+1's batches were drawn (but the last): the positions from before the draws.
    const CheckpointMeta ma = verify_checkpoint(ckpt(ahead, step)), me = verify_checkpoint(ckpt(each, step));
    ASSERT_EQ(ma.tasks.size(), 3u);
    for (std::size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(ma.tasks[i].loader, me.tasks[i].loader) << ma.tasks[i].name;
      EXPECT_EQ(ma.tasks[i].sampling_rng, me.tasks[i].sampling_rng) << ma.tasks[i].name;
    }
  }
}

TEST_F(Prefetch, AResumeFromACheckpointWrittenWithABatchDrawnAheadIsBitwise) {
  const fs::path straight = s_dir / "straight", resumed = s_dir / "resumed";
  const TrainSummary s = run(straight, true);
  // Step 5: after the step-4 evaluation, with step 6's det sampling drawn ahead.
  fs::create_directories(resumed);
  fs::copy_file(straight / "metrics.jsonl", resumed / "metrics.jsonl");
  const TrainSummary r = run(resumed, true, ckpt(straight, 5));
  EXPECT_EQ(r.metrics, s.metrics);
  EXPECT_EQ(test::metrics_lines(resumed), test::metrics_lines(straight));
  EXPECT_EQ(different_tensors(config(), ckpt(resumed, 10), ckpt(straight, 10)), std::vector<std::string>{});
}

// Network::stage on the host: the loader's tensors as they are, and a detection task's CenterNet
// targets encoded ahead once a pass has shown the head's output grid, equal to the pass's own.
TEST_F(Prefetch, StagingOnTheHostKeepsTheBatchAndEncodesTheTargetsAhead) {
  const TrainConfig c = config();
  Model m(c);
  const io::Batch b = test::first_batch(c.tasks[1]);
  StagedBatch before = m.net->stage(1, b);
  EXPECT_FALSE(before.on_copy_stream());
  EXPECT_EQ(before.batch.images.data(), b.images.data());
  EXPECT_FALSE(before.targets.heatmap.defined());  // no pass yet: the grid is unknown
  std::vector<StagedBatch> one;
  one.push_back(std::move(before));
  (void)m.net->train_staged(std::move(one), 0);
  const StagedBatch after = m.net->stage(1, b);
  ASSERT_TRUE(after.targets.heatmap.defined());
  const Shape& hs = after.targets.heatmap.shape();
  ASSERT_EQ(hs.size(), 4u);
  const auto oh = static_cast<int>(hs[1]), ow = static_cast<int>(hs[2]);
  const CenterNetTargets own = encode_centernet(b.boxes, oh, ow, m.specs[1].height / oh, m.specs[1].num_classes);
  EXPECT_EQ(after.targets.heatmap.to_float_vector(), own.heatmap.to_float_vector());
  EXPECT_EQ(after.targets.size.to_float_vector(), own.size.to_float_vector());
  EXPECT_EQ(after.targets.offset.to_float_vector(), own.offset.to_float_vector());
  EXPECT_EQ(after.targets.weight.to_float_vector(), own.weight.to_float_vector());
}

// The upload buffers' ordering: a buffer a queued pass reads is not handed out again before the
// compute stream's next sync; two per tensor let step s+1's upload land beside step s's.
TEST(UploadBuffers, ABufferIsTakenAgainOnlyAfterASyncFollowedItsReads) {
  UploadBuffers ub;
  const Shape shape{4, 3};
  bool fresh = false;
  // Step 0, uploaded at its start: a new buffer.
  const Tensor a = ub.acquire(0, 0, shape, DType::F32, Device::host(), 0, fresh);
  EXPECT_TRUE(fresh);
  ub.read_until(0, a, 1);  // step 0's pass reads it before sync 1
  // Step 1's upload during step 0: `a` is still read, so the other buffer.
  const Tensor b = ub.acquire(0, 0, shape, DType::F32, Device::host(), 0, fresh);
  EXPECT_TRUE(fresh);
  EXPECT_NE(a.data(), b.data());
  ub.read_until(0, b, 2);  // step 1 reads it before sync 2
  // Step 2's upload during step 1 (after sync 1): `a` again, no allocation.
  const Tensor a2 = ub.acquire(0, 0, shape, DType::F32, Device::host(), 1, fresh);
  EXPECT_FALSE(fresh);
  EXPECT_EQ(a2.data(), a.data());
  // Staged but not yet read (no read_until): taken; `b` is read until sync 2, so a new one.
  const Tensor c = ub.acquire(0, 0, shape, DType::F32, Device::host(), 1, fresh);
  EXPECT_TRUE(fresh);
  EXPECT_NE(c.data(), a.data());
  // Other tasks and tensors have their own buffers; another shape is a new buffer.
  (void)ub.acquire(1, 0, shape, DType::F32, Device::host(), 0, fresh);
  EXPECT_TRUE(fresh);
  ub.read_until(0, a2, 2);
  (void)ub.acquire(0, 0, Shape{5, 3}, DType::F32, Device::host(), 5, fresh);
  EXPECT_TRUE(fresh);
}

}  // namespace
}  // namespace gppf::train
