// The streaming loader: order independent of threads, resume, rank sharding, normalisation and
// box/mask-aware augmentation.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "io/image_codec.hpp"
#include "io/loader.hpp"
#include "tests/data/fixtures.hpp"

using namespace gppf;

namespace {

// All ids (and the first pixel of each image) of `batches` batches.
std::vector<std::int64_t> take(io::Loader& l, int batches, std::vector<float>* first_px = nullptr) {
  std::vector<std::int64_t> ids;
  for (int b = 0; b < batches; ++b) {
    io::Batch batch = l.next();
    ids.insert(ids.end(), batch.ids.begin(), batch.ids.end());
    if (first_px) {
      const float* p = batch.images.data_as<float>();
      const std::int64_t per = batch.images.numel() / std::max<std::int64_t>(1, batch.size());
      for (std::int64_t i = 0; i < batch.size(); ++i) first_px->push_back(p[i * per + 1]);
    }
  }
  return ids;
}

// A 6x5 grey image whose pixels (and so PNG size) depend on i.
io::Image test_image(std::int64_t i) {
  io::Image im{6, 5, 1, {}};
  for (int p = 0; p < 30; ++p) im.pixels.push_back(static_cast<std::uint8_t>((p * (i % 7 + 1) + i) % 256));
  return im;
}

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override { test::make_raw_dataset(dir / "ds", 1000, 6, 5, 1, 32, 300); }
  test::TempDir dir;
};

TEST_F(LoaderTest, EpochIsAPermutationAndPixelsAreNormalised) {
  const io::Dataset ds = io::Dataset::open(dir / "ds");
  io::LoaderConfig cfg;
  cfg.batch_size = 64;
  cfg.drop_last = false;
  cfg.mean = {0.5f};
  cfg.std = {0.25f};
  io::Loader l(ds, cfg);
  EXPECT_EQ(l.batches_per_epoch(0), 16);
  std::vector<std::int64_t> ids;
  for (int b = 0; b < 16; ++b) {
    io::Batch batch = l.next();
    EXPECT_EQ(batch.epoch, 0);
    EXPECT_EQ(batch.index, b);
    ASSERT_EQ(batch.images.shape(), (Shape{batch.size(), 6, 5, 1}));
    const float* px = batch.images.data_as<float>();
    const std::int32_t* lb = batch.labels.data_as<std::int32_t>();
    for (std::int64_t i = 0; i < batch.size(); ++i) {
      const std::int64_t id = batch.ids[i];
      EXPECT_EQ(lb[i], id % 10);
      for (std::size_t k = 0; k < 30; ++k)
        ASSERT_NEAR(px[i * 30 + k], (test::pattern(id, k) / 255.0f - 0.5f) / 0.25f, 1e-5) << id << " " << k;
    }
    ids.insert(ids.end(), batch.ids.begin(), batch.ids.end());
  }
  EXPECT_EQ(l.epoch(), 1);
  std::vector<std::int64_t> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  // shuffled, and differently in the next epoch
  EXPECT_NE(ids, sorted);
  EXPECT_NE(take(l, 16), ids);
}

TEST_F(LoaderTest, SameOrderForOneAndFourWorkers) {
  const io::Dataset ds = io::Dataset::open(dir / "ds");
  io::LoaderConfig cfg;
  cfg.batch_size = 24;
  cfg.seed = 7;
  cfg.augment.enabled = true;
  cfg.augment.hflip = 0.5;
  cfg.augment.brightness = 0.3;
  cfg.augment.crop_area_min = 0.5;
  std::vector<float> px1, px4;
  cfg.workers = 1;
  io::Loader one(ds, cfg);
  const auto a = take(one, 90, &px1);  // past the end of epoch 0 (41 batches)
  cfg.workers = 4;
  cfg.prefetch = 7;
  io::Loader four(ds, cfg);
  const auto b = take(four, 90, &px4);
  EXPECT_EQ(a, b);
  EXPECT_EQ(px1, px4);  // augmentations too
  cfg.seed = 8;
  io::Loader other(ds, cfg);
  EXPECT_NE(take(other, 5), std::vector<std::int64_t>(a.begin(), a.begin() + 120));
}

TEST_F(LoaderTest, ResumeMidEpochYieldsTheRemainingSequence) {
  const io::Dataset ds = io::Dataset::open(dir / "ds");
  io::LoaderConfig cfg;
  cfg.batch_size = 16;
  cfg.seed = 3;
  cfg.workers = 3;
  io::Loader full(ds, cfg);
  const auto all = take(full, 100);  // epoch 0 has 62 batches: crosses into epoch 1
  io::Loader first(ds, cfg);
  take(first, 45);
  const io::LoaderState st = first.state();
  EXPECT_EQ(st.epoch, 0);
  EXPECT_EQ(st.batch, 45);
  const std::string saved = st.to_json();
  io::Loader resumed(ds, cfg);  // a new process: fresh loader, restored position
  resumed.restore(io::LoaderState::from_json(saved));
  EXPECT_EQ(resumed.epoch(), 0);
  const auto rest = take(resumed, 55);
  EXPECT_EQ(rest, std::vector<std::int64_t>(all.begin() + 45 * 16, all.end()));
  // restoring on a loader that has run ahead works too, and a different seed is refused
  first.restore(st);
  EXPECT_EQ(take(first, 55), rest);
  io::LoaderState bad = st;
  bad.seed = 4;
  EXPECT_THROW(first.restore(bad), Error);
}

TEST_F(LoaderTest, RanksGetDisjointSharesInStep) {
  const io::Dataset ds = io::Dataset::open(dir / "ds");
  std::set<std::int64_t> seen;
  std::int64_t batches = -1;
  for (int r = 0; r < 4; ++r) {
    io::LoaderConfig cfg;
    cfg.batch_size = 10;
    cfg.world = 4;
    cfg.rank = r;
    cfg.repeat = false;
    io::Loader l(ds, cfg);
    if (batches < 0) batches = l.batches_per_epoch(0);
    EXPECT_EQ(l.batches_per_epoch(0), batches);  // every rank the same number of steps
    io::Batch b;
    std::int64_t n = 0;
    while (l.next(b)) {
      for (auto id : b.ids) EXPECT_TRUE(seen.insert(id).second) << "sample " << id << " on two ranks";
      ++n;
    }
    EXPECT_EQ(n, batches);
  }
  EXPECT_GE(static_cast<std::int64_t>(seen.size()), 1000 - 4 * 32);  // only the tail of a share is dropped
}

// Data-parallel replicas: share k of n builds exactly samples [k b/n, (k+1) b/n) of each batch of the
// one loader (pixels with augmentation, labels, ids), on a raw data set (samples from whole blocks)
// and on an encoded one, where a share reads only its own samples' bytes.
void check_replica_shares(const io::Dataset& ds, bool encoded) {
  io::LoaderConfig cfg;
  cfg.batch_size = 12;
  cfg.seed = 5;
  cfg.height = 6;
  cfg.width = 5;
  cfg.augment.enabled = true;
  cfg.augment.scale_min = 0.8;
  cfg.augment.scale_max = 1.2;
  cfg.augment.hflip = 0.5;
  constexpr int kBatches = 6;
  io::Loader whole(ds, cfg);
  std::vector<io::Batch> ref;
  for (int i = 0; i < kBatches; ++i) ref.push_back(whole.next());
  std::map<std::int64_t, std::int64_t> stored;  // sample id -> its stored bytes
  if (encoded)
    for (const auto& b : ref)
      for (std::int64_t id : b.ids) stored[id] = static_cast<std::int64_t>(io::encode_png(test_image(id)).size());
  for (int shares : {2, 4}) {
    std::int64_t bytes = 0;
    for (int k = 0; k < shares; ++k) {
      io::LoaderConfig part = cfg;
      part.share = k;
      part.shares = shares;
      io::Loader l(ds, part);
      const std::int64_t n = 12 / shares;
      std::int64_t own = 0;
      for (int i = 0; i < kBatches; ++i) {
        const io::Batch b = l.next();
        const io::Batch& r = ref[static_cast<std::size_t>(i)];
        ASSERT_EQ(b.size(), n);
        EXPECT_EQ(b.ids, std::vector<std::int64_t>(r.ids.begin() + k * n, r.ids.begin() + (k + 1) * n));
        EXPECT_EQ(b.images.to_float_vector(), r.images.narrow0(k * n, n).to_float_vector()) << shares << " " << k;
        EXPECT_EQ(b.labels.to_float_vector(), r.labels.narrow0(k * n, n).to_float_vector());
        for (std::int64_t id : b.ids) own += encoded ? stored.at(id) : 30;
      }
      if (encoded) {
        EXPECT_EQ(l.stats().bytes_read, own) << "share " << k << " of " << shares << " read other samples";
      } else {
        EXPECT_GE(l.stats().bytes_read, own);  // whole blocks
      }
      bytes += l.stats().bytes_read;
    }
    if (encoded) {
      EXPECT_LE(bytes, whole.stats().bytes_read);  // the shares together: no more than one loader
    }
  }
  io::LoaderConfig bad = cfg;
  bad.shares = 5;  // 12 does not split into 5
  EXPECT_THROW(io::Loader(ds, bad), Error);
}

TEST_F(LoaderTest, ReplicaSharesOfARawDataSetAreSlicesOfTheWholeBatch) {
  check_replica_shares(io::Dataset::open(dir / "ds"), false);
}

TEST(LoaderReplicas, ReplicaSharesOfAnEncodedDataSetReadOnlyTheirSamples) {
  test::TempDir dir;
  io::Manifest m;
  m.classes = {"a", "b"};
  m.encoding = "encoded";
  m.channels = 1;
  m.block = 16;
  io::DatasetWriter::Options opt;
  opt.header = m;
  io::DatasetWriter wr(dir / "enc", opt);
  for (int i = 0; i < 200; ++i) {
    io::Sample s;
    s.image = io::encode_png(test_image(i));
    s.height = 6;
    s.width = 5;
    s.channels = 1;
    s.label = i % 2;
    s.id = i;
    wr.add("train", std::move(s), "png");
  }
  wr.finish();
  check_replica_shares(io::Dataset::open(dir / "enc"), true);
}

TEST(LoaderAugment, FlipMovesImageMaskAndBoxesTogether) {
  test::TempDir dir;
  io::Manifest m;
  m.task = io::TaskType::Detection;
  m.classes = {"a", "b"};
  m.height = 8;
  m.width = 10;
  m.channels = 1;
  m.has_boxes = m.has_masks = true;
  m.block = 4;
  io::DatasetWriter::Options opt;
  opt.header = m;
  io::DatasetWriter wr(dir / "det", opt);
  for (int i = 0; i < 6; ++i) {
    io::Sample s;
    s.image.assign(80, 0);
    s.mask.assign(80, 0);
    // a bright 3x2 object of class i%2 at x = i..i+3, y = 2..4
    for (int y = 2; y < 4; ++y)
      for (int x = i; x < i + 3; ++x) {
        s.image[y * 10 + x] = 200;
        s.mask[y * 10 + x] = static_cast<std::uint8_t>(i % 2 + 1);
      }
    s.boxes.push_back({float(i), 2.f, float(i + 3), 4.f, i % 2});
    s.id = i;
    wr.add("train", std::move(s), "s");
  }
  wr.finish();
  io::LoaderConfig cfg;
  cfg.batch_size = 6;
  cfg.shuffle = false;
  cfg.augment.enabled = true;
  cfg.augment.hflip = 0.5;
  cfg.augment.scale_min = 0.8;
  cfg.augment.scale_max = 1.3;
  cfg.height = 16;
  cfg.width = 20;
  io::Loader l(io::Dataset::open(dir / "det"), cfg);
  for (int rep = 0; rep < 3; ++rep) {
    io::Batch b = l.next();
    ASSERT_EQ(b.masks.shape(), (Shape{6, 16, 20}));
    for (std::int64_t i = 0; i < b.size(); ++i) {
      const float* px = b.images.data_as<float>() + i * 320;
      const std::int32_t* mk = b.masks.data_as<std::int32_t>() + i * 320;
      ASSERT_EQ(b.boxes[i].size(), 1u);
      const io::Box& box = b.boxes[i][0];
      EXPECT_EQ(box.cls, b.ids[i] % 2);
      int in_mask = 0;
      for (int y = 0; y < 16; ++y)
        for (int x = 0; x < 20; ++x) {
          const bool obj = mk[y * 20 + x] == box.cls + 1;
          if (!obj) continue;
          ++in_mask;
          // object pixels are bright and lie inside the box (pixel centres)
          EXPECT_GT(px[y * 20 + x], 0.5f);
          EXPECT_TRUE(x + 0.5f > box.x1 && x + 0.5f < box.x2 && y + 0.5f > box.y1 && y + 0.5f < box.y2)
              << "pixel " << x << "," << y << " box " << box.x1 << "," << box.y1 << "," << box.x2 << "," << box.y2;
        }
      EXPECT_GT(in_mask, 4);
      EXPECT_NEAR(in_mask, (box.x2 - box.x1) * (box.y2 - box.y1), 0.5 * (box.x2 - box.x1 + box.y2 - box.y1) + 2);
    }
  }
}

TEST_F(LoaderTest, GrayIntoRgbAndResize) {
  io::LoaderConfig cfg;
  cfg.batch_size = 4;
  cfg.shuffle = false;
  cfg.channels = 3;
  cfg.height = 12;  // 2x the stored 6x5: every source pixel becomes a 2x2 block (bilinear, exact at centres)
  cfg.width = 10;
  cfg.mean = {0.0f};
  cfg.std = {1.0f};
  io::Loader l(io::Dataset::open(dir / "ds"), cfg);
  const io::Batch b = l.next();
  ASSERT_EQ(b.images.shape(), (Shape{4, 12, 10, 3}));
  const float* px = b.images.data_as<float>();
  // corners are copies of the source corners in every channel
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(px[c] * 255.0f, test::pattern(b.ids[0], 0), 1e-3);
    EXPECT_NEAR(px[(11 * 10 + 9) * 3 + c] * 255.0f, test::pattern(b.ids[0], 29), 1e-3);
  }
}

TEST(LoaderAugment, WindowMathIsExact) {
  io::Window w{2, 1, 4, 4, false, 8, 8};
  std::vector<io::Box> in = {{2, 1, 4, 3, 0}, {0, 0, 1, 1, 1}};
  auto out = io::transform_boxes(in, w, 0.25);
  ASSERT_EQ(out.size(), 1u);  // the second is outside the window
  EXPECT_EQ(out[0], (io::Box{0, 0, 4, 4, 0}));
  w.flip = true;
  out = io::transform_boxes(in, w, 0.25);
  EXPECT_EQ(out[0], (io::Box{4, 0, 8, 4, 0}));
  // identity resampling copies pixels
  std::vector<std::uint8_t> src = {1, 2, 3, 4, 5, 6};
  std::vector<float> dst(6);
  io::resample_image(src.data(), 2, 3, 1, {0, 0, 3, 2, false, 2, 3}, 0, dst.data());
  EXPECT_EQ(dst, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  io::resample_image(src.data(), 2, 3, 1, {0, 0, 3, 2, true, 2, 3}, 0, dst.data());
  EXPECT_EQ(dst, (std::vector<float>{3, 2, 1, 6, 5, 4}));
}

}  // namespace
