// Bad input: truncated, byte-flipped or missing shards, wrong schema, undecodable images, bad boxes.
// With on_error = Fail the error names the file and the sample; with Skip the sample is counted and
// left out, and every sample that is delivered is still right.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>

#include "io/image_codec.hpp"
#include "io/loader.hpp"
#include "io/verify.hpp"
#include "tests/data/fixtures.hpp"

namespace fs = std::filesystem;
using namespace gppf;

namespace {

struct EpochResult {
  std::int64_t delivered = 0, skipped = 0;
  std::vector<std::string> reasons;
};

// One epoch with the skip policy; checks every delivered sample against its pattern.
EpochResult skip_epoch(const std::string& dir, int h, int w) {
  io::LoaderConfig cfg;
  cfg.batch_size = 50;
  cfg.drop_last = false;
  cfg.repeat = false;
  cfg.on_error = io::OnError::Skip;
  cfg.mean = {0.0f};
  cfg.std = {1.0f};
  io::Loader l(io::Dataset::open(dir), cfg);
  io::Batch b;
  EpochResult r;
  while (l.next(b)) {
    EXPECT_EQ(b.images.dim(0), b.size());
    const float* px = b.images.data_as<float>();
    for (std::int64_t i = 0; i < b.size(); ++i)
      for (int k = 0; k < h * w; ++k)
        EXPECT_NEAR(px[i * h * w + k] * 255.0f, test::pattern(b.ids[i], static_cast<std::size_t>(k)), 1e-3)
            << "wrong pixel in delivered sample " << b.ids[i];
    r.delivered += b.size();
  }
  const io::LoaderStats st = l.stats();
  r.skipped = st.skipped;
  r.reasons = st.skip_reasons;
  return r;
}

std::string fail_message(const std::string& dir) {
  try {
    io::LoaderConfig cfg;
    cfg.batch_size = 50;
    cfg.repeat = false;
    cfg.drop_last = false;
    io::Loader l(io::Dataset::open(dir), cfg);
    io::Batch b;
    while (l.next(b)) {
    }
  } catch (const Error& e) {
    return e.reason();
  }
  return "";
}

class CorruptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::make_raw_dataset(dir / "ds", 400, 4, 4, 1, 25, 200, 10, "train", 0);  // uncompressed: bytes findable
  }
  std::string shard(int i) const { return dir / ("ds/train-0000" + std::to_string(i) + ".h5"); }
  test::TempDir dir;
};

TEST_F(CorruptTest, TruncatedShard) {
  fs::resize_file(shard(1), fs::file_size(shard(1)) / 2);
  const std::string msg = fail_message(dir / "ds");
  EXPECT_NE(msg.find(shard(1)), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  const EpochResult r = skip_epoch(dir / "ds", 4, 4);
  EXPECT_EQ(r.delivered, 200);
  EXPECT_EQ(r.skipped, 200);
  ASSERT_FALSE(r.reasons.empty());
  EXPECT_NE(r.reasons[0].find(shard(1)), std::string::npos);
  EXPECT_NE(r.reasons[0].find(" sample "), std::string::npos);
  EXPECT_FALSE(io::verify_dataset(dir / "ds").ok());
}

TEST_F(CorruptTest, MissingShard) {
  fs::remove(shard(0));
  const std::string msg = fail_message(dir / "ds");
  EXPECT_NE(msg.find(shard(0)), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  const EpochResult r = skip_epoch(dir / "ds", 4, 4);
  EXPECT_EQ(r.delivered, 200);
  EXPECT_EQ(r.skipped, 200);
}

TEST_F(CorruptTest, FlippedByteInOneSample) {
  // find sample 237's pixels (shard 1, sample 37) in the uncompressed shard and flip one byte
  auto bytes = test::read_bytes(shard(1));
  std::vector<std::uint8_t> needle(16);
  for (std::size_t k = 0; k < 16; ++k) needle[k] = test::pattern(237, k);
  auto it = std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end());
  ASSERT_NE(it, bytes.end());
  it[5] ^= 0x40;
  test::write_bytes(shard(1), bytes);
  const std::string msg = fail_message(dir / "ds");
  EXPECT_NE(msg.find(shard(1) + " sample 37"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CRC"), std::string::npos) << msg;
  const EpochResult r = skip_epoch(dir / "ds", 4, 4);
  EXPECT_EQ(r.skipped, 1);
  EXPECT_EQ(r.delivered, 399);
  const io::VerifyReport v = io::verify_dataset(dir / "ds");
  EXPECT_FALSE(v.ok());
  EXPECT_EQ(v.samples_checked, 399);
}

TEST(Corrupt, FlippedBytesInCompressedShard) {
  test::TempDir dir;
  test::make_raw_dataset(dir / "ds", 400, 8, 8, 1, 25, 400);
  const std::string path = dir / "ds/train-00000.h5";
  // The middle of the third compressed chunk of `images` (where it lies depends on HDF5's layout).
  haddr_t addr = 0;
  hsize_t size = 0;
  {
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    const hid_t ds = H5Dopen2(f, "images", H5P_DEFAULT);
    unsigned filters = 0;
    hsize_t offset[4] = {};
    const hid_t space = H5Dget_space(ds);
    const herr_t st = H5Dget_chunk_info(ds, space, 2, offset, &filters, &addr, &size);
    H5Sclose(space);
    H5Dclose(ds);
    ASSERT_GE(st, 0);
    H5Fclose(f);
  }
  ASSERT_GT(size, 64u);
  auto bytes = test::read_bytes(path);
  for (std::size_t k = addr + size / 2 - 32; k < addr + size / 2 + 32; ++k) bytes[k] ^= 0xa5;
  test::write_bytes(path, bytes);
  const std::string msg = fail_message(dir / "ds");
  EXPECT_NE(msg.find(path), std::string::npos) << msg;  // the file is named
  const EpochResult r = skip_epoch(dir / "ds", 8, 8);
  EXPECT_GT(r.skipped, 0);
  EXPECT_EQ(r.delivered + r.skipped, 400);
}

TEST(Corrupt, WrongSchema) {
  test::TempDir dir;
  test::make_raw_dataset(dir / "ds", 10, 2, 2, 1, 5, 10);
  // a manifest field of the wrong type
  auto text = io::read_text_file(dir / "ds/manifest.json");
  text.replace(text.find("\"block\": 5"), 10, "\"block\": \"five\"");
  io::write_text_file(dir / "ds/manifest.json", text);
  try {
    io::Dataset::open(dir / "ds");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("manifest.json"), std::string::npos) << e.reason();
  }
  // an HDF5 file that is no shard
  io::h5::File::create(dir / "other.h5").write<std::int32_t>("labels", {2}, {1, 2});
  io::Manifest m;
  m.classes = {"a"};
  m.height = m.width = 2;
  try {
    io::ShardReader(dir / "other.h5", m, 2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("other.h5"), std::string::npos);
    EXPECT_NE(e.reason().find("schema"), std::string::npos) << e.reason();
  }
}

// Offsets must end at exactly the rows of the data they index: a fuzzed shard whose last box offset
// claimed 2^58 boxes made the reader allocate them (fuzz/regressions/shard/offsets-past-the-data.h5).
TEST(Corrupt, OffsetsPastTheDataAreRefused) {
  test::TempDir dir;
  io::DatasetWriter::Options opt;
  opt.header.task = io::TaskType::Detection;
  opt.header.classes = {"a"};
  opt.header.height = opt.header.width = 4;
  opt.header.channels = 1;
  opt.header.has_boxes = true;
  opt.header.block = 8;
  {
    io::DatasetWriter w(dir / "det", opt);
    for (const std::string split : {"train", "val", "test"})
      for (int i = 0; i < 4; ++i) {
        io::Sample s;
        s.height = s.width = 4;
        s.channels = 1;
        s.id = i;
        s.image.assign(16, 50);
        s.boxes.push_back({0, 0, 2, 2, 0});
        w.add(split, s, "det");
      }
    w.finish();
  }
  EXPECT_EQ(fail_message(dir / "det"), "");
  const std::string shard = dir / "det/train-00000.h5";
  ASSERT_TRUE(fs::exists(shard));
  {
    const hid_t f = H5Fopen(shard.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t ds = H5Dopen2(f, "box_offsets", H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    std::array<std::int64_t, 5> offsets{};
    ASSERT_GE(H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, offsets.data()), 0);
    EXPECT_EQ(offsets[4], 4);
    offsets[4] = std::int64_t{1} << 58;
    ASSERT_GE(H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, offsets.data()), 0);
    H5Dclose(ds);
    H5Fclose(f);
  }
  std::string msg = fail_message(dir / "det");
  EXPECT_NE(msg.find(shard), std::string::npos) << msg;
  EXPECT_NE(msg.find("box_offsets ends at 288230376151711744 but 'boxes' has 4 rows"), std::string::npos) << msg;
  // An offsets dataset of the wrong shape is refused before it is read (a fuzzed one claimed 2^48 rows).
  {
    const hid_t f = H5Fopen(shard.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    ASSERT_GE(H5Ldelete(f, "box_offsets", H5P_DEFAULT), 0);
    const std::array<hsize_t, 2> dims{5, 3};
    const hid_t space = H5Screate_simple(2, dims.data(), nullptr);
    const hid_t ds = H5Dcreate2(f, "box_offsets", H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    H5Dclose(ds);
    H5Sclose(space);
    H5Fclose(f);
  }
  const io::Dataset d = io::Dataset::open(dir / "det");
  try {
    io::ShardReader(shard, d.manifest(), 4);
    FAIL() << "a 5x3 box_offsets was read";
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("dataset 'box_offsets' has the wrong shape"), std::string::npos) << e.reason();
  }
}

TEST(Corrupt, UndecodableImageBytes) {
  test::TempDir dir;
  io::Manifest m;
  m.classes = {"a", "b"};
  m.encoding = "encoded";
  m.channels = 1;
  m.block = 4;
  io::DatasetWriter::Options opt;
  opt.header = m;
  io::DatasetWriter wr(dir / "enc", opt);
  for (int i = 0; i < 10; ++i) {
    io::Sample s;
    s.image = io::encode_png({3, 3, 1, std::vector<std::uint8_t>(9, static_cast<std::uint8_t>(i))});
    if (i == 6) s.image.resize(20);  // PNG magic, then nothing decodable
    s.height = s.width = 3;
    s.channels = 1;
    s.label = i % 2;
    s.id = i;
    wr.add(i < 8 ? "val" : "test", std::move(s), "png " + std::to_string(i));
  }
  wr.finish();
  io::LoaderConfig cfg;
  cfg.split = "val";
  cfg.batch_size = 8;
  cfg.shuffle = false;
  cfg.height = cfg.width = 3;
  io::Loader fail(io::Dataset::open(dir / "enc"), cfg);
  try {
    fail.next();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("val-00000.h5 sample 6"), std::string::npos) << e.reason();
    EXPECT_NE(e.reason().find("PNG"), std::string::npos) << e.reason();
  }
  cfg.on_error = io::OnError::Skip;
  io::Loader skip(io::Dataset::open(dir / "enc"), cfg);
  const io::Batch b = skip.next();
  EXPECT_EQ(b.size(), 7);
  EXPECT_EQ(b.skipped, 1);
  EXPECT_EQ(std::count(b.ids.begin(), b.ids.end(), 6), 0);
  EXPECT_EQ(b.images.shape(), (Shape{7, 3, 3, 1}));
}

TEST(Corrupt, BadBoxesAreRejected) {
  test::TempDir dir;
  io::Manifest m;
  m.task = io::TaskType::Detection;
  m.classes = {"a"};
  m.height = m.width = 4;
  m.has_boxes = true;
  m.block = 2;
  io::DatasetWriter::Options opt;
  opt.header = m;
  {
    io::DatasetWriter wr(dir / "det", opt);
    io::Sample s;
    s.image.assign(16, 1);
    s.boxes = {{0, 0, 2, std::numeric_limits<float>::quiet_NaN(), 0}};
    EXPECT_THROW(wr.add("train", s, "nan box"), Error);
    s.boxes = {{0, 0, 5, 2, 0}};
    EXPECT_THROW(wr.add("train", s, "box outside"), Error);
    for (int i = 0; i < 4; ++i) {
      s.boxes = {{0, 0, 2, 2, 0}};
      s.id = i;
      wr.add("train", s, "ok");
    }
    wr.finish();
  }
  // a box edited in place to lie outside the image, with a matching CRC: caught by validation
  const std::string path = dir / "det/train-00000.h5";
  {
    io::h5::File f = io::h5::File::open(path, true);
    const float bad[4] = {1, 1, 9, 3};
    f.open_dataset("boxes").write_rows(2, 1, io::h5::Type::F32, bad);
    io::Sample s;
    s.image.assign(16, 1);
    s.label = -1;
    s.boxes = {{1, 1, 9, 3, 0}};
    const std::uint32_t crc = io::sample_crc(s);
    f.open_dataset("crc32").write_rows(2, 1, io::h5::Type::U32, &crc);
    f.close();
  }
  io::LoaderConfig cfg;
  cfg.batch_size = 4;
  cfg.shuffle = false;
  try {
    io::Loader l(io::Dataset::open(dir / "det"), cfg);
    l.next();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("train-00000.h5 sample 2"), std::string::npos) << e.reason();
    EXPECT_NE(e.reason().find("outside"), std::string::npos) << e.reason();
  }
}

TEST(Corrupt, InspectFailsNamingTheFile) {
  test::TempDir dir;
  test::make_raw_dataset(dir / "ds", 30, 2, 2, 1, 5, 30);
  auto run = [](const std::string& args) {
    std::string out;
    FILE* p = popen((std::string(GPPF_BINARY) + " inspect " + args + " 2>&1").c_str(), "r");
    std::array<char, 512> buf{};
    while (fgets(buf.data(), buf.size(), p)) out += buf.data();
    const int st = pclose(p);
    return std::make_pair(WIFEXITED(st) ? WEXITSTATUS(st) : -1, out);
  };
  auto [ok, text] = run(dir / "ds");
  EXPECT_EQ(ok, 0) << text;
  EXPECT_NE(text.find("train: 30 samples"), std::string::npos) << text;
  fs::resize_file(dir / "ds/train-00000.h5", 500);
  auto [bad, msg] = run(dir / "ds");
  EXPECT_NE(bad, 0);
  EXPECT_NE(msg.find("train-00000.h5"), std::string::npos) << msg;
}

}  // namespace
