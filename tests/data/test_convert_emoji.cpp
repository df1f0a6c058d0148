// `gppf convert --format emoji` on a small hand-made emoji-datasource package: classes, alpha
// compositing, resizing, the order-independent split, and bad sources.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "io/convert_emoji.hpp"
#include "io/image_codec.hpp"
#include "tests/data/fixtures.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace gppf;

namespace {

struct FakeEmoji {
  std::string code, category;
  std::uint8_t r, g, b, a;  // every pixel of its 16x16 artwork
};

// 24 emoji over three categories whose Unicode order (sort_order) is not alphabetical, plus a
// Component entry that must be left out.
std::vector<FakeEmoji> fake_emoji() {
  std::vector<FakeEmoji> out;
  const char* cats[] = {"Smileys", "Animals", "Flags"};
  for (int i = 0; i < 24; ++i) {
    const std::uint8_t alpha = i % 3 == 0 ? 255 : i % 3 == 1 ? 0 : 128;
    out.push_back({"1F" + std::to_string(600 + i), cats[i % 3], static_cast<std::uint8_t>(10 * i),
                   static_cast<std::uint8_t>(200 - 5 * i), 40, alpha});
  }
  out.push_back({"1F3FB", "Component", 1, 2, 3, 255});
  return out;
}

// Writes emoji.json (entries in `order`) and img/google/64/<code>.png under `dir`.
void write_package(const std::string& dir, const std::vector<FakeEmoji>& emoji, const std::vector<int>& order) {
  fs::create_directories(dir + "/img/google/64");
  json list = json::array();
  for (int i : order) {
    const FakeEmoji& e = emoji[static_cast<std::size_t>(i)];
    const std::string image = e.code + ".png";
    list.push_back({{"unified", e.code}, {"image", image}, {"category", e.category}, {"sort_order", i}});
    io::Image im{16, 16, 4, {}};
    for (int p = 0; p < 16 * 16; ++p) im.pixels.insert(im.pixels.end(), {e.r, e.g, e.b, e.a});
    test::write_bytes(dir + "/img/google/64/" + image, io::encode_png(im));
  }
  const std::string text = list.dump();
  test::write_bytes(dir + "/emoji.json", std::vector<std::uint8_t>(text.begin(), text.end()));
}

struct Stored {
  std::string split;
  io::Sample sample;
};

// Every stored sample by its emoji's code (ids are indices into the package's emoji.json).
std::map<std::string, Stored> read_by_code(const std::string& out, const std::vector<FakeEmoji>& emoji,
                                           const std::vector<int>& order) {
  const io::Dataset ds = io::Dataset::open(out);
  std::map<std::string, Stored> by_code;
  for (const io::SplitInfo& sp : ds.manifest().splits)
    for (const auto& sh : sp.shards) {
      io::ShardReader r(ds.shard_path(sh), ds.manifest(), sh.count);
      std::vector<io::Sample> part;
      std::vector<std::uint32_t> crc;
      r.read(0, sh.count, part, crc);
      for (io::Sample& s : part) {
        const std::string code = emoji[static_cast<std::size_t>(order[static_cast<std::size_t>(s.id)])].code;
        by_code[code] = {sp.name, std::move(s)};
      }
    }
  return by_code;
}

std::vector<int> iota_order(std::size_t n, bool reversed) {
  std::vector<int> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = static_cast<int>(reversed ? n - 1 - i : i);
  return order;
}

}  // namespace

TEST(ConvertEmoji, ClassesCompositingResizeAndAStableSplit) {
  test::TempDir dir;
  const std::vector<FakeEmoji> emoji = fake_emoji();
  const std::vector<int> forward = iota_order(emoji.size(), false), backward = iota_order(emoji.size(), true);
  write_package(dir / "a", emoji, forward);
  write_package(dir / "b", emoji, backward);
  io::ConvertOptions opt;
  opt.test_fraction = 0.5;
  opt.seed = 3;
  io::EmojiOptions src;
  src.size = 8;  // the 16x16 artwork is resized
  src.src = dir / "a";
  opt.out = dir / "out-a";
  const io::Manifest m = io::convert_emoji(src, opt);
  src.src = dir / "b";
  opt.out = dir / "out-b";
  io::convert_emoji(src, opt);

  EXPECT_EQ(m.classes, (std::vector<std::string>{"Smileys", "Animals", "Flags"}));  // by sort_order
  EXPECT_TRUE(m.raw());
  EXPECT_EQ(m.height, 8);
  EXPECT_EQ(m.width, 8);
  EXPECT_EQ(m.channels, 3);
  const auto a = read_by_code(dir / "out-a", emoji, forward);
  const auto b = read_by_code(dir / "out-b", emoji, backward);
  ASSERT_EQ(a.size(), 24u);  // Component left out
  ASSERT_EQ(b.size(), 24u);
  int test_count = 0;
  for (std::size_t i = 0; i < 24; ++i) {
    const FakeEmoji& e = emoji[i];
    const Stored& s = a.at(e.code);
    EXPECT_EQ(s.split, b.at(e.code).split) << e.code << ": the split depends on emoji.json's order";
    EXPECT_EQ(s.sample.image, b.at(e.code).sample.image) << e.code;
    test_count += s.split == "test";
    EXPECT_EQ(s.sample.label, static_cast<int>(i % 3)) << e.code;
    ASSERT_EQ(s.sample.image.size(), 8u * 8u * 3u);
    // Composited on white: out = (c * a + 255 * (255 - a) + 127) / 255, the same in every pixel.
    const std::uint8_t rgb[3] = {e.r, e.g, e.b};
    for (std::size_t p = 0; p < s.sample.image.size(); ++p) {
      const int want = (rgb[p % 3] * e.a + 255 * (255 - e.a) + 127) / 255;
      ASSERT_EQ(s.sample.image[p], want) << e.code << " byte " << p << " alpha " << int(e.a);
    }
  }
  EXPECT_GT(test_count, 4);
  EXPECT_LT(test_count, 20);
}

TEST(ConvertEmoji, MissingImageFailsNamingTheFileOrIsSkipped) {
  test::TempDir dir;
  const std::vector<FakeEmoji> emoji = fake_emoji();
  write_package(dir.path, emoji, iota_order(emoji.size(), false));
  const std::string gone = dir / ("img/google/64/" + emoji[5].code + ".png");
  fs::remove(gone);
  io::ConvertOptions opt;
  opt.out = dir / "out";
  io::EmojiOptions src;
  src.src = dir.path;
  try {
    io::convert_emoji(src, opt);
    FAIL() << "a missing image was not reported";
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find(gone), std::string::npos) << e.reason();
  }
  EXPECT_FALSE(fs::exists(opt.out));  // nothing half-written
  opt.skip_bad = true;
  const io::Manifest m = io::convert_emoji(src, opt);
  std::int64_t total = 0;
  for (const auto& sp : m.splits) total += sp.count;
  EXPECT_EQ(total, 23);
  EXPECT_EQ(m.height, 64);  // default size
}

TEST(ConvertEmoji, BadPackageIsOneLineNamingTheFile) {
  test::TempDir dir;
  io::ConvertOptions opt;
  opt.out = dir / "out";
  io::EmojiOptions src;
  src.src = dir.path;
  EXPECT_THROW(io::convert_emoji(src, opt), Error);  // no emoji.json
  const std::vector<FakeEmoji> emoji = fake_emoji();
  write_package(dir.path, emoji, iota_order(emoji.size(), false));
  const std::string bad = R"([{"unified": "1F600", "image": "1f600.png"}])";  // no category
  test::write_bytes(dir / "emoji.json", std::vector<std::uint8_t>(bad.begin(), bad.end()));
  try {
    io::convert_emoji(src, opt);
    FAIL() << "an entry without a category was accepted";
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("emoji.json entry 0"), std::string::npos) << e.reason();
  }
}

TEST(ConvertEmoji, CommandLine) {
  test::TempDir dir;
  const std::vector<FakeEmoji> emoji = fake_emoji();
  write_package(dir.path, emoji, iota_order(emoji.size(), false));
  const std::string cmd = std::string(GPPF_BINARY) + " --log-level warn convert --format emoji --src " + dir.path +
                          " --size 16 --test-fraction 0.25 --out " + (dir / "out") + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const io::Dataset ds = io::Dataset::open(dir / "out");
  EXPECT_EQ(ds.manifest().height, 16);
  EXPECT_EQ(ds.manifest().classes.size(), 3u);
  ASSERT_NE(ds.manifest().find_split("test"), nullptr);
}

// The command line's default background is the library's (white): scripts/fetch-data.sh's emoji data
// set is unchanged by --background; the manifest's source rebuilds it; --background black differs.
TEST(ConvertEmoji, CommandLineBackgroundDefaultIsWhite) {
  test::TempDir dir;
  const std::vector<FakeEmoji> emoji = fake_emoji();
  write_package(dir / "pkg", emoji, iota_order(emoji.size(), false));
  io::ConvertOptions opt;
  opt.out = dir / "lib";
  opt.test_fraction = 0.25;
  io::EmojiOptions src;
  src.src = dir / "pkg";
  src.size = 16;
  const io::Manifest m = io::convert_emoji(src, opt);
  EXPECT_EQ(m.source, "emoji:" + src.src + " images=" + src.src +
                          "/img/google/64 size=16 channels=3 background=255 seed=0 val-fraction=0.1 "
                          "test-fraction=0.25 shard-samples=16384 on-error=error");
  const std::string base = std::string(GPPF_BINARY) + " --log-level warn convert --format emoji --src " + src.src +
                           " --size 16 --test-fraction 0.25 --out ";
  ASSERT_EQ(std::system((base + (dir / "cli") + " 2>&1").c_str()), 0);
  ASSERT_EQ(std::system((base + (dir / "black") + " --background black 2>&1").c_str()), 0);
  EXPECT_EQ(test::folder_bytes(dir / "lib"), test::folder_bytes(dir / "cli"));
  const auto black = read_by_code(dir / "black", emoji, iota_order(emoji.size(), false));
  const FakeEmoji& clear = emoji[1];  // alpha 0
  ASSERT_EQ(clear.a, 0);
  for (std::uint8_t v : black.at(clear.code).sample.image) ASSERT_EQ(v, 0);
}
