// imagefolder, COCO (with hand-made polygon and RLE cases) and canvas conversions, read back.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/coco_mask.hpp"
#include "io/convert.hpp"
#include "io/image_codec.hpp"
#include "io/loader.hpp"
#include "io/random.hpp"
#include "io/verify.hpp"
#include "tests/data/fixtures.hpp"

namespace fs = std::filesystem;
using namespace gppf;

namespace {

io::Image random_image(int h, int w, int c, std::uint64_t seed) {
  io::Rng rng(seed);
  io::Image im{h, w, c, {}};
  for (int i = 0; i < h * w * c; ++i) im.pixels.push_back(static_cast<std::uint8_t>(rng.below(256)));
  return im;
}

TEST(ConvertImageFolder, StoresTheFileBytesAndKeepsSplits) {
  test::TempDir dir;
  std::map<std::string, std::pair<std::vector<std::uint8_t>, int>> files;  // path -> bytes, class
  int k = 0;
  for (const std::string split : {"train", "test"})
    for (const std::string cls : {"ant", "bee", "cat"})
      for (int i = 0; i < 3; ++i, ++k) {
        fs::create_directories(dir / (split + "/" + cls + "/sub"));
        const io::Image im = random_image(5 + i, 7, 3, k);
        const bool png = (k % 2) == 0;
        const std::string path = dir / (split + "/" + cls + "/sub/f" + std::to_string(i) + (png ? ".png" : ".JPG"));
        const auto bytes = png ? io::encode_png(im) : io::encode_jpeg(im, 85);
        test::write_bytes(path, bytes);
        files[path] = {bytes, cls == "ant" ? 0 : cls == "bee" ? 1 : 2};
      }
  io::ConvertOptions opt;
  opt.out = dir / "out";
  opt.val_fraction = 0.3;
  io::convert_imagefolder({dir.path, 3}, opt);
  const io::Dataset ds = io::Dataset::open(opt.out);
  EXPECT_EQ(ds.manifest().classes, (std::vector<std::string>{"ant", "bee", "cat"}));
  EXPECT_EQ(ds.manifest().height, 0);  // sizes differ
  // val is carved from the train folder (there is no val folder); test is the test folder
  EXPECT_EQ(test::read_split(ds, "train").size() + test::read_split(ds, "val").size(), 9u);
  EXPECT_EQ(test::read_split(ds, "test").size(), 9u);
  for (const std::string split : {"train", "val", "test"}) {
    const auto samples = test::read_split(ds, split);
    const std::string folder = split == "test" ? "test" : "train";
    for (const auto& s : samples) {
      bool found = false;
      for (const auto& [path, f] : files)
        if (f.first == s.image && path.find("/" + folder + "/") != std::string::npos) {
          found = true;
          EXPECT_EQ(s.label, f.second) << path;
        }
      EXPECT_TRUE(found) << "stored bytes match no source file";
    }
  }
  // the loader decodes them (resized to the asked size)
  io::LoaderConfig cfg;
  cfg.batch_size = 9;
  cfg.height = cfg.width = 8;
  cfg.split = "test";
  io::Loader l(ds, cfg);
  EXPECT_EQ(l.next().images.shape(), (Shape{9, 8, 8, 3}));
}

TEST(ConvertImageFolder, DerivedSplitsAndBadFiles) {
  test::TempDir dir;
  for (int i = 0; i < 40; ++i) {
    fs::create_directories(dir / ("src/c" + std::to_string(i % 2)));
    test::write_bytes(dir / ("src/c" + std::to_string(i % 2) + "/" + std::to_string(i) + ".png"),
                      io::encode_png(random_image(4, 4, 1, i)));
  }
  test::write_bytes(dir / "src/c0/broken.png", {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3});
  io::ConvertOptions opt;
  opt.out = dir / "out";
  opt.val_fraction = 0.25;
  opt.test_fraction = 0.25;
  try {
    io::convert_imagefolder({dir / "src", 1}, opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("broken.png"), std::string::npos) << e.reason();
  }
  EXPECT_FALSE(fs::exists(opt.out));
  opt.skip_bad = true;
  const io::Manifest m = io::convert_imagefolder({dir / "src", 1}, opt);
  std::int64_t total = 0;
  for (const auto& s : m.splits) total += s.count;
  EXPECT_EQ(total, 40);
  EXPECT_EQ(m.splits.size(), 3u);
  EXPECT_EQ(m.height, 4);  // one common size is recorded
}

TEST(CocoMask, RleByHand) {
  // 3x2 mask, column-major runs: 1 zero, 2 ones, 3 zeros
  EXPECT_EQ(io::rle_decode({1, 2, 3}, 3, 2), (std::vector<std::uint8_t>{0, 0, 1, 0, 1, 0}));
  EXPECT_THROW(io::rle_decode({1, 2, 4}, 3, 2), Error);
  const std::vector<std::uint8_t> m = {0, 0, 1, 0, 1, 0};
  EXPECT_EQ(io::rle_encode(m.data(), 3, 2), (std::vector<std::uint32_t>{1, 2, 3}));
  // compressed strings worked out by hand from pycocotools' rleToString
  EXPECT_EQ(io::rle_to_string({1, 2, 3}), "123");
  EXPECT_EQ(io::rle_to_string({0, 40, 3, 45}), "0X135");  // 40 needs two characters; 45 is stored as 45-40
  EXPECT_EQ(io::rle_to_string({5, 10, 2, 4}), "5:2J");    // 4-10 = -6: a negative delta
  EXPECT_EQ(io::rle_from_string("0X135"), (std::vector<std::uint32_t>{0, 40, 3, 45}));
  EXPECT_EQ(io::rle_from_string("5:2J"), (std::vector<std::uint32_t>{5, 10, 2, 4}));
  EXPECT_THROW(io::rle_from_string("X"), Error);
  // The largest run a mask can have round-trips; a number of more than 7 characters (a fuzzed
  // annotation had 47) is refused instead of shifting past 64 bits (UBSan).
  EXPECT_EQ(io::rle_from_string(io::rle_to_string({0xffffffffu})), (std::vector<std::uint32_t>{0xffffffffu}));
  EXPECT_THROW(io::rle_from_string("PPPPPPPP0"), Error);  // zero in nine characters: accepted before
}

TEST(CocoMask, PolygonRasterisation) {
  // an axis-aligned rectangle from (1,1) to (4,3) covers pixels x 1..3, y 1..2: area 3*2
  const auto rect = io::rle_decode(io::rle_from_polygon({1, 1, 4, 1, 4, 3, 1, 3}, 6, 6), 6, 6);
  for (int y = 0; y < 6; ++y)
    for (int x = 0; x < 6; ++x)
      EXPECT_EQ(rect[y * 6 + x], (x >= 1 && x < 4 && y >= 1 && y < 3) ? 1 : 0) << x << "," << y;
  // a right triangle: pixels well inside are set, pixels well outside are not, area close to 200
  const auto tri = io::rle_decode(io::rle_from_polygon({10, 10, 30, 10, 10, 30}, 40, 40), 40, 40);
  int area = 0;
  for (int i = 0; i < 1600; ++i) area += tri[i];
  EXPECT_NEAR(area, 200, 25);
  EXPECT_EQ(tri[12 * 40 + 12], 1);
  EXPECT_EQ(tri[28 * 40 + 28], 0);
  EXPECT_EQ(tri[5 * 40 + 5], 0);
  EXPECT_THROW(io::rle_from_polygon({1, 2, 3, 4}, 5, 5), Error);
  // A point far outside the image (a fuzzed 2e93) is refused, not converted to int.
  EXPECT_THROW(io::rle_from_polygon({10, 10, 30, 10, 2e93, 30}, 40, 40), Error);
  EXPECT_NO_THROW(io::rle_from_polygon({-1, -1, 41, -1, 41, 41}, 40, 40));  // just outside: fine
}

TEST(ConvertCoco, BoxesAndMasksFromPolygonsAndRle) {
  test::TempDir dir;
  fs::create_directories(dir / "imgs");
  test::write_bytes(dir / "imgs/a.png", io::encode_png(random_image(10, 12, 3, 1)));
  test::write_bytes(dir / "imgs/b.jpg", io::encode_jpeg(random_image(6, 5, 3, 2)));
  // b: 6x5; a column-major RLE for column 1 rows 2..4 of class "dog"
  std::vector<std::uint8_t> bmask(30, 0);
  for (int y = 2; y < 5; ++y) bmask[y * 5 + 1] = 1;
  const auto b_counts = io::rle_encode(bmask.data(), 6, 5);
  nlohmann::json j = {
      {"images",
       {{{"id", 11}, {"file_name", "a.png"}, {"height", 10}, {"width", 12}},
        {{"id", 12}, {"file_name", "b.jpg"}, {"height", 6}, {"width", 5}}}},
      {"categories", {{{"id", 7}, {"name", "dog"}}, {{"id", 3}, {"name", "cat"}}}},
      {"annotations",
       {{{"id", 1},
         {"image_id", 11},
         {"category_id", 3},
         {"bbox", {1, 1, 3, 2}},
         {"area", 6},
         {"segmentation", {{1, 1, 4, 1, 4, 3, 1, 3}}}},
        {{"id", 2},
         {"image_id", 11},
         {"category_id", 7},
         {"bbox", {6, 5, 4, 4}},
         {"area", 16},
         {"iscrowd", 0},
         {"segmentation",
          {{"size", {10, 12}},
           {"counts", io::rle_to_string(io::rle_encode(std::vector<std::uint8_t>(120, 0).data(), 10, 12))}}}},
        {{"id", 3},
         {"image_id", 12},
         {"category_id", 7},
         {"bbox", {1, 2, 1, 3}},
         {"area", 3},
         {"segmentation", {{"size", {6, 5}}, {"counts", b_counts}}}},
        {{"id", 4},
         {"image_id", 12},
         {"category_id", 3},
         {"bbox", {0, 0, 2, 1}},
         {"iscrowd", 1},
         {"segmentation", {{0, 0, 2, 0, 2, 1, 0, 1}}}}}}};
  test::write_bytes(dir / "ann.json", [&] {
    const std::string s = j.dump();
    return std::vector<std::uint8_t>(s.begin(), s.end());
  }());
  io::ConvertOptions opt;
  opt.out = dir / "out";
  opt.val_fraction = 0;  // both images in train
  io::convert_coco({dir / "ann.json", dir / "imgs", 3}, opt);
  const io::Dataset ds = io::Dataset::open(opt.out);
  EXPECT_EQ(ds.manifest().classes, (std::vector<std::string>{"cat", "dog"}));  // by category id
  const auto samples = test::read_split(ds, "train");
  ASSERT_EQ(samples.size(), 2u);
  const io::Sample& a = samples[0].id == 11 ? samples[0] : samples[1];
  const io::Sample& b = samples[0].id == 11 ? samples[1] : samples[0];
  EXPECT_EQ(a.image, test::read_bytes(dir / "imgs/a.png"));
  EXPECT_EQ(b.image, test::read_bytes(dir / "imgs/b.jpg"));
  EXPECT_EQ(a.boxes, (std::vector<io::Box>{{6, 5, 10, 9, 1}, {1, 1, 4, 3, 0}}));  // larger area first
  EXPECT_EQ(b.boxes, (std::vector<io::Box>{{1, 2, 2, 5, 1}}));                    // crowd: no box
  const io::Image am = io::decode_image(a.mask.data(), a.mask.size(), 1, "a mask");
  for (int y = 0; y < 10; ++y)
    for (int x = 0; x < 12; ++x) EXPECT_EQ(am.pixels[y * 12 + x], (x >= 1 && x < 4 && y >= 1 && y < 3) ? 1 : 0);
  const io::Image bm = io::decode_image(b.mask.data(), b.mask.size(), 1, "b mask");
  for (int y = 0; y < 6; ++y)
    for (int x = 0; x < 5; ++x) {
      const int want = (x == 1 && y >= 2 && y < 5) ? 2 : (y == 0 && x < 2) ? 255 : 0;
      EXPECT_EQ(bm.pixels[y * 5 + x], want) << x << "," << y;
    }
  EXPECT_TRUE(io::verify_dataset(opt.out, {true}).ok());
  // a box far outside its image is an error naming the file and the image
  j["annotations"][0]["bbox"] = {1, 1, 30, 2};
  const std::string s = j.dump();
  test::write_bytes(dir / "ann.json", std::vector<std::uint8_t>(s.begin(), s.end()));
  opt.force = true;
  try {
    io::convert_coco({dir / "ann.json", dir / "imgs", 3}, opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("ann.json image 11"), std::string::npos) << e.reason();
  }
  // A file name longer than the file system allows is an image not found, not a filesystem_error
  // past our handlers (fuzzing, fuzz/regressions/coco/file-name-too-long.json).
  j["annotations"][0]["bbox"] = {1, 1, 3, 2};
  j["images"][0]["file_name"] = std::string(300, 'a') + ".png";
  const std::string long_name = j.dump();
  test::write_bytes(dir / "ann.json", std::vector<std::uint8_t>(long_name.begin(), long_name.end()));
  try {
    io::convert_coco({dir / "ann.json", dir / "imgs", 3}, opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("image file not found"), std::string::npos) << e.reason();
  }
}

TEST(ConvertCanvas, BoxesAndMasksMatchThePastedPixels) {
  test::TempDir dir;
  // objects: 10x10 gray blobs (a filled diamond) with a class each
  io::Manifest m;
  m.classes = {"a", "b", "c"};
  m.height = m.width = 10;
  m.channels = 1;
  io::DatasetWriter::Options wo;
  wo.header = m;
  io::DatasetWriter wr(dir / "objs", wo);
  for (int i = 0; i < 30; ++i) {
    io::Sample s;
    s.image.assign(100, 0);
    const int r = 2 + i % 3;
    for (int y = 0; y < 10; ++y)
      for (int x = 0; x < 10; ++x)
        if (std::abs(x - 5) + std::abs(y - 5) <= r)
          s.image[y * 10 + x] = static_cast<std::uint8_t>(150 + 10 * (i % 10));
    s.label = i % 3;
    s.id = i;
    wr.add(i < 24 ? "train" : "test", std::move(s), "obj");
  }
  wr.finish();
  io::CanvasOptions cv;
  cv.src = dir / "objs";
  cv.size = 40;
  cv.min_objects = 2;
  cv.max_objects = 4;
  cv.scale_min = 0.7;
  cv.scale_max = 1.6;
  cv.train = 50;
  cv.test = 10;
  io::ConvertOptions opt;
  opt.out = dir / "det";
  opt.seed = 5;
  io::convert_canvas(cv, opt);
  const io::Dataset ds = io::Dataset::open(opt.out);
  EXPECT_EQ(ds.manifest().task, io::TaskType::Detection);
  const auto scenes = test::read_split(ds, "train");
  ASSERT_EQ(scenes.size(), 50u);
  int objects = 0;
  for (const auto& s : scenes) {
    ASSERT_GE(s.boxes.size(), 1u);
    objects += static_cast<int>(s.boxes.size());
    // blank canvas, no overlap: object pixels are exactly those >= the alpha threshold
    for (int i = 0; i < 1600; ++i) ASSERT_EQ(s.mask[i] != 0, s.image[i] >= 128) << i;
    for (std::size_t a = 0; a < s.boxes.size(); ++a) {
      const io::Box& b = s.boxes[a];
      // the box is the tight box of its class's mask pixels inside it
      int x1 = 99, y1 = 99, x2 = -1, y2 = -1;
      for (int y = int(b.y1); y < int(b.y2); ++y)
        for (int x = int(b.x1); x < int(b.x2); ++x)
          if (s.mask[y * 40 + x] == b.cls + 1) {
            x1 = std::min(x1, x);
            y1 = std::min(y1, y);
            x2 = std::max(x2, x + 1);
            y2 = std::max(y2, y + 1);
          }
      EXPECT_EQ((io::Box{float(x1), float(y1), float(x2), float(y2), b.cls}), b);
      for (std::size_t c = 0; c < s.boxes.size(); ++c) {  // boxes never overlap
        if (c == a) continue;
        const io::Box& o = s.boxes[c];
        EXPECT_FALSE(b.x1 < o.x2 && o.x1 < b.x2 && b.y1 < o.y2 && o.y1 < b.y2);
      }
    }
    // every mask pixel lies in a box of its class
    for (int i = 0; i < 1600; ++i) {
      if (!s.mask[i]) continue;
      const float x = i % 40 + 0.5f, y = i / 40 + 0.5f;
      bool in = false;
      for (const auto& b : s.boxes) in = in || (b.cls + 1 == s.mask[i] && x > b.x1 && x < b.x2 && y > b.y1 && y < b.y2);
      ASSERT_TRUE(in) << i;
    }
  }
  EXPECT_GT(objects, 50 * 2 - 10);
  // seeded: the same scenes again
  opt.out = dir / "det2";
  io::convert_canvas(cv, opt);
  EXPECT_EQ(test::read_split(io::Dataset::open(opt.out), "test")[3].image, test::read_split(ds, "test")[3].image);
  // one class for every object: the same scenes, boxes and object pixels, every label 0
  io::CanvasOptions one = cv;
  one.single_class = "object";
  opt.out = dir / "det-one";
  io::convert_canvas(one, opt);
  const io::Dataset ds_one = io::Dataset::open(opt.out);
  EXPECT_EQ(ds_one.manifest().classes, std::vector<std::string>{"object"});
  const auto scenes_one = test::read_split(ds_one, "train");
  ASSERT_EQ(scenes_one.size(), scenes.size());
  for (std::size_t i = 0; i < scenes.size(); ++i) {
    EXPECT_EQ(scenes_one[i].image, scenes[i].image);
    ASSERT_EQ(scenes_one[i].boxes.size(), scenes[i].boxes.size());
    for (std::size_t b = 0; b < scenes[i].boxes.size(); ++b) {
      io::Box expect = scenes[i].boxes[b];
      expect.cls = 0;
      EXPECT_EQ(scenes_one[i].boxes[b], expect);
    }
    for (int p = 0; p < 1600; ++p) ASSERT_EQ(scenes_one[i].mask[p], scenes[i].mask[p] ? 1 : 0) << p;
  }
  // overlap allowed: boxes come from the visible pixels only
  cv.overlap = "allow";
  cv.min_objects = cv.max_objects = 6;
  opt.out = dir / "det3";
  io::convert_canvas(cv, opt);
  for (const auto& s : test::read_split(io::Dataset::open(opt.out), "train"))
    for (const auto& b : s.boxes) {
      bool touches_left = false;
      for (int y = int(b.y1); y < int(b.y2); ++y)
        touches_left = touches_left || s.mask[y * 40 + int(b.x1)] == b.cls + 1;
      EXPECT_TRUE(touches_left);
    }
}

}  // namespace
