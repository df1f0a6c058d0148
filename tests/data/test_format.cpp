// The HDF5 wrapper, checksums, the manifest schema, the writer's atomicity and `convert --format idx`.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>

#include "core/error.hpp"
#include "io/checksum.hpp"
#include "io/convert.hpp"
#include "io/dataset.hpp"
#include "io/h5.hpp"
#include "io/image_codec.hpp"
#include "io/verify.hpp"
#include "tests/data/fixtures.hpp"

namespace fs = std::filesystem;
using namespace gppf;

namespace {

TEST(H5, RoundTripRowsAndAttributes) {
  test::TempDir dir;
  const std::string path = dir / "x.h5";
  {
    io::h5::File f = io::h5::File::create(path);
    std::vector<float> v(5 * 3);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.5f;
    f.write("a", {5, 3}, v, {{2, 3}, 4});
    io::h5::Group g = f.create_group("g");
    g.set_attr("name", std::string("lego"));
    g.set_attr("n", std::int64_t(42));
    g.set_attr("x", 2.5);
    f.close();
  }
  io::h5::File f = io::h5::File::open(path);
  io::h5::Dataset a = f.open_dataset("a");
  EXPECT_EQ(a.dims(), (std::vector<std::int64_t>{5, 3}));
  EXPECT_EQ(a.type(), io::h5::Type::F32);
  std::vector<float> rows(6);
  a.read_rows(3, 2, io::h5::Type::F32, rows.data());
  EXPECT_EQ(rows[0], 4.5f);
  EXPECT_EQ(rows[5], 7.0f);
  io::h5::Group g = f.open_group("g");
  EXPECT_EQ(g.attr_string("name"), "lego");
  EXPECT_EQ(g.attr_int("n"), 42);
  EXPECT_EQ(g.attr_double("x"), 2.5);
  EXPECT_FALSE(g.has_attr("missing"));
  EXPECT_THROW(a.read_rows(4, 2, io::h5::Type::F32, rows.data()), Error);
  try {
    f.open_dataset("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find(path), std::string::npos) << e.reason();
  }
}

TEST(H5, AtomicWriteLeavesNothingOnFailure) {
  test::TempDir dir;
  const std::string path = dir / "ck.h5";
  EXPECT_THROW(io::h5::atomic_write(path,
                                    [](const std::string& tmp) {
                                      io::h5::File::create(tmp);
                                      throw std::runtime_error("killed");
                                    }),
               std::runtime_error);
  EXPECT_TRUE(fs::is_empty(dir.path));
  io::h5::atomic_write(path, [](const std::string& tmp) { io::h5::File::create(tmp).set_attr("ok", std::int64_t(1)); });
  EXPECT_EQ(io::h5::File::open(path).attr_int("ok"), 1);
}

TEST(H5, OpenMissingOrGarbageNamesTheFile) {
  test::TempDir dir;
  test::write_bytes(dir / "bad.h5", std::vector<std::uint8_t>(100, 7));
  for (const std::string& p : {dir / "none.h5", dir / "bad.h5"}) {
    try {
      io::h5::File::open(p);
      FAIL() << p;
    } catch (const Error& e) {
      EXPECT_NE(e.reason().find(p), std::string::npos) << e.reason();
    }
  }
}

// Both read paths (rows and whole) of dataset "offsets" refuse it, naming it and saying `why`.
void expect_reads_refused(const io::h5::Dataset& d, const std::string& why) {
  std::vector<std::int64_t> v(4);
  for (int whole = 0; whole < 2; ++whole) {
    try {
      if (whole)
        d.read_all(io::h5::Type::I64, v.data());
      else
        d.read_rows(0, 4, io::h5::Type::I64, v.data());
      FAIL() << "dataset read although " << why;
    } catch (const Error& e) {
      EXPECT_NE(e.reason().find("offsets"), std::string::npos) << e.reason();
      EXPECT_NE(e.reason().find(why), std::string::npos) << e.reason();
    }
  }
}

// A file in the format gppf writes (1.8: checksummed superblock and object headers), made with the
// HDF5 API directly for tests that need what gppf's writer never makes. Close with H5Fclose.
hid_t create_checksummed(const std::string& path) {
  const hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  return f;
}

// Files without metadata checksums (HDF5's default superblock 0) are refused on open, naming the
// file and the way out: HDF5 1.10 crashes on some damaged ones instead of failing (fuzz/open/).
TEST(H5, FilesWithoutMetadataChecksumsAreRefused) {
  test::TempDir dir;
  const std::string path = dir / "old.h5";
  H5Fclose(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  try {
    (void)io::h5::File::open(path);
    FAIL() << "opened a file without checksums";
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find(path), std::string::npos) << e.reason();
    EXPECT_NE(e.reason().find("no metadata checksums (superblock version 0"), std::string::npos) << e.reason();
  }
  ::setenv("GPPF_ALLOW_UNCHECKSUMMED_HDF5", "1", 1);
  EXPECT_NO_THROW((void)io::h5::File::open(path));
  ::unsetenv("GPPF_ALLOW_UNCHECKSUMMED_HDF5");
  H5Fclose(create_checksummed(path));
  EXPECT_NO_THROW((void)io::h5::File::open(path));
  // What gppf writes is in that format.
  const std::string written = dir / "written.h5";
  { const io::h5::File w = io::h5::File::create(written); }
  const hid_t f = H5Fopen(written.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  H5F_info2_t info{};
  ASSERT_GE(H5Fget_info2(f, &info), 0);
  EXPECT_EQ(info.super.version, 2u);
  H5Fclose(f);
}

// A damaged file may claim elements of any size; HDF5 would allocate a conversion buffer of at least
// one element to read it (a fuzzed shard asked for 2.7 GB). Reads refuse anything wider than 8 bytes.
TEST(H5, ReadRefusesAnOversizedElementType) {
  test::TempDir dir;
  const std::string path = dir / "wide.h5";
  {
    const hid_t f = create_checksummed(path);
    const hid_t t = H5Tcopy(H5T_STD_I64LE);
    ASSERT_GE(H5Tset_size(t, 16), 0);
    const hsize_t n = 4;
    const hid_t space = H5Screate_simple(1, &n, nullptr);
    const hid_t ds = H5Dcreate2(f, "offsets", t, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    H5Dclose(ds);
    H5Sclose(space);
    H5Tclose(t);
    H5Fclose(f);
  }
  io::h5::File f = io::h5::File::open(path);
  io::h5::Dataset d = f.open_dataset("offsets");
  expect_reads_refused(d, "16 bytes");
  EXPECT_THROW(d.type(), Error);
}

// gppf writes contiguous and chunked datasets only; reads refuse any other layout.
TEST(H5, ReadRefusesACompactDataset) {
  test::TempDir dir;
  const std::string path = dir / "compact.h5";
  {
    const hid_t f = create_checksummed(path);
    const hsize_t n = 4;
    const hid_t space = H5Screate_simple(1, &n, nullptr);
    const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    ASSERT_GE(H5Pset_layout(dcpl, H5D_COMPACT), 0);
    const hid_t ds = H5Dcreate2(f, "offsets", H5T_NATIVE_INT64, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    const std::int64_t v[4] = {0, 1, 2, 3};
    ASSERT_GE(H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Fclose(f);
  }
  io::h5::File f = io::h5::File::open(path);
  io::h5::Dataset d = f.open_dataset("offsets");
  expect_reads_refused(d, "storage layout");
}

TEST(Checksum, KnownVectors) {
  io::Sha256 a;
  a.update("abc", 3);
  EXPECT_EQ(a.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  io::Sha256 b;
  const std::string s = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  b.update(s.data(), 10);
  b.update(s.data() + 10, s.size() - 10);
  EXPECT_EQ(b.hex(), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  io::Sha256 empty;
  EXPECT_EQ(empty.hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(io::crc32(0, "123456789", 9), 0xcbf43926u);
}

TEST(Manifest, WrongSchemaIsNamed) {
  EXPECT_THROW(io::Manifest::from_json("{", "m.json"), Error);
  try {
    io::Manifest::from_json(R"({"format": "gppf-dataset", "version": 1, "task": "classification"})", "m.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("m.json"), std::string::npos);
    EXPECT_NE(e.reason().find("schema"), std::string::npos) << e.reason();
  }
  io::Manifest m;
  m.classes = {"a"};
  m.height = m.width = 2;
  m.splits.push_back({"train", 3, {{"train-00000.h5", 2, 10, "x"}}});
  EXPECT_THROW(io::Manifest::from_json(m.to_json(), "m.json"), Error);  // counts disagree
  m.splits[0].count = 2;
  EXPECT_EQ(io::Manifest::from_json(m.to_json(), "m.json").splits[0].shards[0].count, 2);
}

TEST(Writer, RefusesToOverwriteAndNeverLeavesHalfADataset) {
  test::TempDir dir;
  const std::string out = dir / "ds";
  test::make_raw_dataset(out, 10, 2, 2, 1, 4, 4);
  io::Manifest m = io::Dataset::open(out).manifest();
  io::DatasetWriter::Options opt;
  opt.header = m;
  EXPECT_THROW(io::DatasetWriter(out, opt), Error);  // exists, no force
  opt.force = true;
  {
    io::DatasetWriter wr(out, opt);
    io::Sample s;
    s.image = {1, 2, 3, 4};
    s.label = 1;
    wr.add("train", s, "good");
    s.label = 99;
    EXPECT_THROW(wr.add("train", s, "bad label"), Error);
    // destroyed without finish(): the old data set stays, no temporary folder is left
  }
  EXPECT_EQ(io::Dataset::open(out).manifest().splits[0].count, 10);
  for (const auto& e : fs::directory_iterator(dir.path)) EXPECT_EQ(e.path().filename(), "ds");
}

TEST(ConvertIdx, ReadsBackExactBytesAndLabels) {
  test::TempDir dir;
  const int n_train = 300, n_test = 7, h = 5, w = 3;
  std::vector<std::uint8_t> tr(n_train * h * w), te(n_test * h * w), trl(n_train), tel(n_test);
  for (std::size_t k = 0; k < tr.size(); ++k) tr[k] = test::pattern(static_cast<std::int64_t>(k / 15), k);
  for (std::size_t k = 0; k < te.size(); ++k) te[k] = static_cast<std::uint8_t>(255 - k % 256);
  for (int i = 0; i < n_train; ++i) trl[i] = static_cast<std::uint8_t>((i * 7) % 10);
  for (int i = 0; i < n_test; ++i) tel[i] = static_cast<std::uint8_t>(i);
  fs::create_directories(dir / "src");
  test::write_bytes(dir / "src/train-images-idx3-ubyte.gz", test::idx_bytes({n_train, h, w}, tr), true);
  test::write_bytes(dir / "src/train-labels-idx1-ubyte.gz", test::idx_bytes({n_train}, trl), true);
  test::write_bytes(dir / "src/t10k-images-idx3-ubyte", test::idx_bytes({n_test, h, w}, te));
  test::write_bytes(dir / "src/t10k-labels-idx1-ubyte", test::idx_bytes({n_test}, tel));
  io::ConvertOptions opt;
  opt.out = dir / "out";
  opt.shard_samples = 128;  // several shards
  opt.val_fraction = 0;     // every train sample stays in train, in order
  io::convert_idx({dir / "src", {}}, opt);
  EXPECT_THROW(io::convert_idx({dir / "src", {}}, opt), Error);  // exists
  const io::Dataset ds = io::Dataset::open(opt.out);
  const io::Manifest& m = ds.manifest();
  EXPECT_EQ(m.height, h);
  EXPECT_EQ(m.width, w);
  EXPECT_EQ(m.classes.size(), 10u);
  const auto* train = m.find_split("train");
  ASSERT_TRUE(train);
  EXPECT_EQ(train->count, n_train);
  EXPECT_EQ(train->shards.size(), 3u);
  std::int64_t i = 0;
  for (const auto& sh : train->shards) {
    io::ShardReader r(ds.shard_path(sh), m, sh.count);
    std::vector<io::Sample> got;
    std::vector<std::uint32_t> crc;
    r.read(0, sh.count, got, crc);
    for (const auto& s : got) {
      ASSERT_EQ(s.image, std::vector<std::uint8_t>(tr.begin() + i * 15, tr.begin() + (i + 1) * 15)) << i;
      ASSERT_EQ(s.label, trl[i]);
      EXPECT_EQ(s.id, i);
      EXPECT_EQ(io::sample_crc(s), crc[&s - got.data()]);
      ++i;
    }
  }
  const auto& test_split = m.split("test", "x");
  io::ShardReader r(ds.shard_path(test_split.shards[0]), m, n_test);
  std::vector<io::Sample> got;
  std::vector<std::uint32_t> crc;
  r.read(2, 3, got, crc);
  EXPECT_EQ(got[0].image, std::vector<std::uint8_t>(te.begin() + 30, te.begin() + 45));
  EXPECT_EQ(got[2].label, 4);
  EXPECT_TRUE(io::verify_dataset(opt.out).ok());
}

TEST(ConvertIdx, ValSplitFromSeedAndBadFiles) {
  test::TempDir dir;
  fs::create_directories(dir / "src");
  std::vector<std::uint8_t> px(1000 * 4), lb(1000, 3);
  test::write_bytes(dir / "src/train-images-idx3-ubyte", test::idx_bytes({1000, 2, 2}, px));
  test::write_bytes(dir / "src/train-labels-idx1-ubyte", test::idx_bytes({1000}, lb));
  io::ConvertOptions opt;
  opt.out = dir / "out";
  opt.val_fraction = 0.2;
  io::convert_idx({dir / "src", {}}, opt);
  const io::Manifest m = io::Dataset::open(opt.out).manifest();
  const auto val = m.split("val", "x").count;
  EXPECT_GT(val, 150);
  EXPECT_LT(val, 250);
  EXPECT_EQ(val + m.split("train", "x").count, 1000);
  // a truncated IDX file is an error naming it, and nothing is written
  auto bytes = test::idx_bytes({1000, 2, 2}, px);
  bytes.resize(bytes.size() - 5);
  test::write_bytes(dir / "src/train-images-idx3-ubyte", bytes);
  opt.out = dir / "out2";
  try {
    io::convert_idx({dir / "src", {}}, opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("train-images-idx3-ubyte"), std::string::npos) << e.reason();
  }
  EXPECT_FALSE(fs::exists(opt.out));
}

}  // namespace

namespace gppf::io {
namespace {

// A transparent PNG decoded to RGB into a reused buffer: transparent pixels composite onto black,
// not onto what the buffer held (the loader reuses its decode buffers).
TEST(PngDecode, DroppingAlphaDoesNotShowTheReusedBuffer) {
  Image rgba;
  rgba.height = rgba.width = 2;
  rgba.channels = 4;
  rgba.pixels = {255, 0, 0, 255, 0, 255, 0, 0, 0, 0, 255, 128, 9, 9, 9, 0};
  const auto png = encode_png(rgba);
  Image out;
  out.pixels.assign(12, 7);
  decode_image_into(png.data(), png.size(), 3, "test.png", out);
  ASSERT_EQ(out.pixels.size(), 12u);
  EXPECT_EQ(std::vector<std::uint8_t>(out.pixels.begin(), out.pixels.begin() + 3),
            (std::vector<std::uint8_t>{255, 0, 0}));
  for (int i = 3; i < 6; ++i) EXPECT_EQ(out.pixels[static_cast<std::size_t>(i)], 0) << i;  // fully transparent
  for (int i = 9; i < 12; ++i) EXPECT_EQ(out.pixels[static_cast<std::size_t>(i)], 0) << i;
  EXPECT_GT(out.pixels[8], 100);  // half-transparent blue over black (libpng blends in linear light)
  EXPECT_LT(out.pixels[8], 255);
}

}  // namespace
}  // namespace gppf::io
