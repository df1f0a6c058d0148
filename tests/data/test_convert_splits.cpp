// Validation splits: every converter writes val by default, carved from the training source only,
// deterministic and disjoint by source sample (canvas scenes: by object instance); test stays the
// source's test split.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "io/convert.hpp"
#include "io/image_codec.hpp"
#include "tests/data/fixtures.hpp"

namespace fs = std::filesystem;
using namespace gppf;

namespace {

TEST(ConvertSplits, DeriveSplitFractionsAndDeterminism) {
  int val = 0, test = 0;
  for (std::int64_t i = 0; i < 20000; ++i) {
    const std::string s = io::derive_split(3, i, 0.1, 0.2);
    val += s == "val";
    test += s == "test";
    EXPECT_EQ(s, io::derive_split(3, i, 0.1, 0.2));
    // val is carved from what test left: adding val never moves a test sample
    EXPECT_EQ(s == "test", io::derive_split(3, i, 0.0, 0.2) == "test");
  }
  EXPECT_NEAR(test / 20000.0, 0.2, 0.015);
  EXPECT_NEAR(val / 20000.0, 0.1 * 0.8, 0.015);
  EXPECT_THROW(io::derive_split(3, 0, 1.0, 0.0), Error);
  EXPECT_THROW(io::derive_split(3, 0, 0.1, -0.1), Error);
  io::ConvertOptions opt;
  EXPECT_EQ(io::carve_split(opt, "test", 5, false, false), "test");  // the source's test stays test
  EXPECT_EQ(io::carve_split(opt, "val", 5, false, false), "val");
}

TEST(ConvertSplits, IdxValComesFromTrainByDefault) {
  test::TempDir dir;
  fs::create_directories(dir / "src");
  const std::uint32_t n = 500, n_test = 20;
  std::vector<std::uint8_t> px(n * 4), lb(n, 1), tpx(n_test * 4, 7), tlb(n_test, 2);
  for (std::size_t k = 0; k < px.size(); ++k) px[k] = test::pattern(static_cast<std::int64_t>(k / 4), k);
  test::write_bytes(dir / "src/train-images-idx3-ubyte", test::idx_bytes({n, 2, 2}, px));
  test::write_bytes(dir / "src/train-labels-idx1-ubyte", test::idx_bytes({n}, lb));
  test::write_bytes(dir / "src/t10k-images-idx3-ubyte", test::idx_bytes({n_test, 2, 2}, tpx));
  test::write_bytes(dir / "src/t10k-labels-idx1-ubyte", test::idx_bytes({n_test}, tlb));
  io::ConvertOptions opt;  // defaults: val 0.1 of train
  opt.out = dir / "a";
  io::convert_idx({dir / "src", {}}, opt);
  const io::Dataset ds = io::Dataset::open(opt.out);
  const auto train = test::read_split(ds, "train"), val = test::read_split(ds, "val");
  EXPECT_EQ(test::read_split(ds, "test").size(), n_test);
  EXPECT_GT(val.size(), 25u);
  EXPECT_LT(val.size(), 80u);
  // disjoint by source sample (the id is its index in the train file), together all of it
  std::set<std::int64_t> ids;
  for (const auto* part : {&train, &val})
    for (const io::Sample& s : *part) {
      EXPECT_TRUE(ids.insert(s.id).second) << "sample " << s.id << " in train and val";
      EXPECT_EQ(s.image, std::vector<std::uint8_t>(px.begin() + s.id * 4, px.begin() + s.id * 4 + 4));
    }
  EXPECT_EQ(ids.size(), n);
  // deterministic: a second conversion puts the same samples into val
  opt.out = dir / "b";
  io::convert_idx({dir / "src", {}}, opt);
  const auto val_b = test::read_split(io::Dataset::open(opt.out), "val");
  ASSERT_EQ(val_b.size(), val.size());
  for (std::size_t i = 0; i < val.size(); ++i) EXPECT_EQ(val_b[i].id, val[i].id);
}

// A classification source of 4x4 objects, each one solid gray value: on a blank canvas the value
// shows which source object a scene pixel came from.
void write_objects(const std::string& out, const std::map<std::string, std::pair<int, int>>& values) {
  io::Manifest m;
  m.classes = {"a", "b"};
  m.height = m.width = 4;
  m.channels = 1;
  io::DatasetWriter::Options wo;
  wo.header = m;
  io::DatasetWriter wr(out, wo);
  for (const auto& [split, range] : values)
    for (int v = range.first; v < range.second; ++v) {
      io::Sample s;
      s.image.assign(16, static_cast<std::uint8_t>(v));
      s.label = v % 2;
      s.id = v;
      wr.add(split, std::move(s), "object");
    }
  wr.finish();
}

// The object values each split's scenes show.
std::map<std::string, std::set<int>> values_by_split(const io::Dataset& ds) {
  std::map<std::string, std::set<int>> out;
  for (const io::SplitInfo& sp : ds.manifest().splits)
    for (const io::Sample& s : test::read_split(ds, sp.name))
      for (std::uint8_t v : s.image)
        if (v != 0) out[sp.name].insert(v);
  return out;
}

TEST(ConvertSplits, CanvasObjectsNeverAppearInTwoSplits) {
  test::TempDir dir;
  io::CanvasOptions cv;
  cv.size = 16;
  cv.min_objects = 1;
  cv.max_objects = 2;
  io::ConvertOptions opt;
  opt.val_fraction = 0.25;
  // a source without val: val scenes are made of train objects that no train scene uses
  write_objects(dir / "objs", {{"train", {130, 190}}, {"test", {200, 220}}});
  cv.src = dir / "objs";
  opt.out = dir / "det";
  io::convert_canvas(cv, opt);
  auto seen = values_by_split(io::Dataset::open(opt.out));
  ASSERT_EQ(seen.size(), 3u);
  for (int v : seen["train"]) EXPECT_EQ(seen["val"].count(v), 0u) << "object " << v << " in train and val scenes";
  for (int v : seen["val"]) EXPECT_TRUE(v >= 130 && v < 190) << v;
  for (int v : seen["test"]) EXPECT_TRUE(v >= 200 && v < 220) << v;
  EXPECT_GT(seen["val"].size(), 5u);
  EXPECT_GT(seen["train"].size(), 20u);
  // a source with its own val: scenes of each split use exactly that split's objects
  write_objects(dir / "objs2", {{"train", {130, 190}}, {"val", {220, 240}}, {"test", {200, 220}}});
  cv.src = dir / "objs2";
  opt.out = dir / "det2";
  io::convert_canvas(cv, opt);
  seen = values_by_split(io::Dataset::open(opt.out));
  for (int v : seen["train"]) EXPECT_TRUE(v >= 130 && v < 190) << v;
  for (int v : seen["val"]) EXPECT_TRUE(v >= 220 && v < 240) << v;
  for (int v : seen["test"]) EXPECT_TRUE(v >= 200 && v < 220) << v;
}

void write_json(const std::string& path, const nlohmann::json& j) {
  const std::string s = j.dump();
  test::write_bytes(path, std::vector<std::uint8_t>(s.begin(), s.end()));
}

nlohmann::json coco_doc(int first_id, int n) {
  nlohmann::json images = nlohmann::json::array(), anns = nlohmann::json::array();
  for (int i = first_id; i < first_id + n; ++i) {
    images.push_back({{"id", i}, {"file_name", std::to_string(i) + ".png"}});
    anns.push_back({{"id", i}, {"image_id", i}, {"category_id", 1}, {"bbox", {1, 1, 2, 2}}});
  }
  return {{"images", images}, {"categories", {{{"id", 1}, {"name", "thing"}}}}, {"annotations", anns}};
}

TEST(ConvertSplits, CocoValFromTrainJsonAndDroppedAnnotationsAreCounted) {
  test::TempDir dir;
  fs::create_directories(dir / "src");
  const std::vector<std::uint8_t> png = io::encode_png({4, 4, 3, std::vector<std::uint8_t>(48, 9)});
  for (int i = 0; i < 48; ++i) test::write_bytes(dir / ("src/" + std::to_string(i) + ".png"), png);
  nlohmann::json train = coco_doc(0, 40);
  // two annotations of images the file does not list, and one listed image whose file is missing
  train["annotations"].push_back({{"id", 900}, {"image_id", 77}, {"category_id", 1}, {"bbox", {1, 1, 2, 2}}});
  train["annotations"].push_back({{"id", 901}, {"image_id", 78}, {"category_id", 1}, {"bbox", {1, 1, 2, 2}}});
  train["images"].push_back({{"id", 60}, {"file_name", "gone.png"}});
  train["annotations"].push_back({{"id", 960}, {"image_id", 60}, {"category_id", 1}, {"bbox", {1, 1, 2, 2}}});
  write_json(dir / "src/instances_train.json", train);
  write_json(dir / "src/instances_test.json", coco_doc(40, 8));
  io::ConvertOptions opt;
  opt.out = dir / "out";
  opt.val_fraction = 0.25;
  opt.skip_bad = true;
  testing::internal::CaptureStderr();
  const io::Manifest m = io::convert_coco({dir / "src", "", 3}, opt);
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(m.split("test", "x").count, 8);
  EXPECT_EQ(m.split("train", "x").count + m.split("val", "x").count, 40);
  EXPECT_GT(m.split("val", "x").count, 3);
  EXPECT_NE(log.find("instances_train.json: 2 annotations name an image id missing"), std::string::npos) << log;
  EXPECT_NE(log.find("image id 77"), std::string::npos) << log;
  EXPECT_NE(log.find("1 image files not found, skipped with their 1 annotations (e.g. "), std::string::npos) << log;
  EXPECT_NE(log.find("gone.png"), std::string::npos) << log;
  for (const io::Sample& s : test::read_split(io::Dataset::open(opt.out), "val")) EXPECT_LT(s.id, 40);
}

}  // namespace
