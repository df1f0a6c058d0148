// `gppf convert` options: the canvas coverage warning, every option in the manifest's `source` (and a
// rebuild from it), --channels per converter (checks, help and docs agree), --background, and
// byte-reproducible conversions.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "io/convert.hpp"
#include "io/dataset.hpp"
#include "io/image_codec.hpp"
#include "tests/data/fixtures.hpp"

namespace fs = std::filesystem;
using namespace gppf;

namespace {

struct CliRun {
  int status = 0;
  std::string output;
};

CliRun run_cli(const std::string& args) {
  const std::string cmd = std::string(GPPF_BINARY) + " " + args + " 2>&1";
  CliRun r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return {-1, "popen failed"};
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  r.status = ::pclose(p);
  return r;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// `source` ("FORMAT:SRC key=value ...", values possibly "quoted") as gppf convert arguments.
std::string source_to_args(const std::string& source) {
  const std::size_t colon = source.find(':');
  std::vector<std::string> tokens;
  std::string cur;
  bool quoted = false, any = false;
  for (std::size_t i = colon + 1; i < source.size(); ++i) {
    const char c = source[i];
    if (quoted && c == '\\' && i + 1 < source.size()) {
      cur += source[++i];
    } else if (c == '"') {
      quoted = !quoted;
      any = true;
    } else if (c == ' ' && !quoted) {
      if (any || !cur.empty()) tokens.push_back(cur);
      cur.clear();
      any = false;
    } else {
      cur += c;
    }
  }
  if (any || !cur.empty()) tokens.push_back(cur);
  std::string args = "--format " + source.substr(0, colon) + " --src " + shell_quote(tokens.at(0));
  for (std::size_t i = 1; i < tokens.size(); ++i) {
    const std::size_t eq = tokens[i].find('=');
    args += " --" + tokens[i].substr(0, eq) + " " + shell_quote(tokens[i].substr(eq + 1));
  }
  return args;
}

// Sleeps into the next second of the wall clock, so that anything stamped with the time differs.
void next_second() {
  const std::time_t t = std::time(nullptr);
  while (std::time(nullptr) == t) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

io::Image rgba_image() {  // transparent, half-transparent and opaque pixels
  io::Image im{2, 2, 4, {10, 20, 30, 0, 200, 100, 50, 128, 200, 100, 50, 255, 0, 0, 0, 0}};
  return im;
}

// A tiny image folder: two classes of RGBA and RGB PNGs.
void write_image_folder(const std::string& dir) {
  for (const std::string cls : {"ant", "bee"}) {
    fs::create_directories(dir + "/" + cls);
    test::write_bytes(dir + "/" + cls + "/rgba.png", io::encode_png(rgba_image()));
    test::write_bytes(dir + "/" + cls + "/rgb.png", io::encode_png({3, 2, 3, std::vector<std::uint8_t>(18, 77)}));
  }
}

// A tiny COCO source: instances_train.json with two RGBA images, one box each.
void write_coco(const std::string& dir) {
  fs::create_directories(dir);
  nlohmann::json doc = {{"categories", {{{"id", 1}, {"name", "thing"}}}},
                        {"images", nlohmann::json::array()},
                        {"annotations", nlohmann::json::array()}};
  for (int i = 0; i < 2; ++i) {
    const std::string name = "im" + std::to_string(i) + ".png";
    test::write_bytes(dir + "/" + name, io::encode_png(rgba_image()));
    doc["images"].push_back({{"id", i}, {"file_name", name}, {"height", 2}, {"width", 2}});
    doc["annotations"].push_back({{"id", 10 + i}, {"image_id", i}, {"category_id", 1}, {"bbox", {0, 0, 1, 1}}});
  }
  const std::string text = doc.dump();
  test::write_bytes(dir + "/instances_train.json", std::vector<std::uint8_t>(text.begin(), text.end()));
}

void write_idx(const std::string& dir) {
  fs::create_directories(dir);
  std::vector<std::uint8_t> px(12 * 4 * 4), labels(12);
  for (std::size_t k = 0; k < px.size(); ++k) px[k] = test::pattern(0, k);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::uint8_t>(i % 3);
  test::write_bytes(dir + "/train-images-idx3-ubyte", test::idx_bytes({12, 4, 4}, px));
  test::write_bytes(dir + "/train-labels-idx1-ubyte", test::idx_bytes({12}, labels));
}

io::CanvasOptions small_canvas(const std::string& src) {
  io::CanvasOptions cv;
  cv.src = src;
  cv.size = 32;
  cv.max_objects = 2;
  cv.overlap = "allow";
  cv.train = 6;
  cv.val = 3;
  cv.test = 3;
  return cv;
}

// The first stored 2x2 image (rgba_image's) of `split`, decoded as a loader decodes it.
io::Image first_decoded(const std::string& dir, const std::string& split) {
  const io::Dataset ds = io::Dataset::open(dir);
  for (const io::Sample& s : test::read_split(ds, split))
    if (s.height == 2 && s.width == 2)
      return io::decode_image(s.image.data(), s.image.size(), ds.manifest().channels, dir);
  ADD_FAILURE() << dir << " has no 2x2 image in " << split;
  return {};
}

}  // namespace

// Item 1: gray objects whose faint pixels fall below the alpha threshold lose them from their boxes.
TEST(ConvertCanvas, WarnsWhenBoxesMissMuchOfTheObjectsVisiblePixels) {
  test::TempDir dir;
  test::make_halo_objects(dir / "objects", 8, 12, 60);
  io::ConvertOptions opt;
  opt.val_fraction = 0;
  opt.out = dir / "scenes";
  io::CanvasOptions cv = small_canvas(dir / "objects");
  testing::internal::CaptureStderr();
  io::convert_canvas(cv, opt);
  std::string log = testing::internal::GetCapturedStderr();
  // the box is the 4x4 core of an 8x8 halo: a quarter of the visible pixels
  EXPECT_NE(log.find("boxes cover 25% and masks 25% of the objects' visible pixels (alpha > 0)"), std::string::npos)
      << log;
  const std::size_t warn = log.find("[warn] convert canvas: boxes cover 25%");
  ASSERT_NE(warn, std::string::npos) << log;  // one line, naming the option
  EXPECT_NE(log.substr(warn, log.find('\n', warn) - warn).find("lower --alpha-threshold"), std::string::npos) << log;
  // a threshold below the halo boxes every visible pixel: no warning
  cv.alpha_threshold = 50;
  opt.force = true;
  testing::internal::CaptureStderr();
  io::convert_canvas(cv, opt);
  log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(log.find("lower --alpha-threshold"), std::string::npos) << log;
}

// Item 1: every option of every converter is in `source`, and the data set rebuilds from it.
TEST(ConvertSource, RecordsEveryOptionAndRebuildsTheDataSet) {
  test::TempDir dir;
  test::make_halo_objects(dir / "objects", 8, 12, 60);
  write_image_folder(dir / "folder");
  write_coco(dir / "coco");
  write_idx(dir / "idx");
  io::ConvertOptions opt;
  opt.seed = 9;
  opt.val_fraction = 0.25;
  opt.test_fraction = 0.125;
  opt.shard_samples = 7;
  opt.skip_bad = true;
  const std::string common = " seed=9 val-fraction=0.25 test-fraction=0.125 shard-samples=7 on-error=skip";

  io::CanvasOptions cv = small_canvas(dir / "objects");
  cv.scale_max = 1.5;
  cv.alpha_threshold = 77;
  cv.single_class = "any thing";
  opt.out = dir / "canvas";
  EXPECT_EQ(io::convert_canvas(cv, opt).source,
            "canvas:" + cv.src +
                " backgrounds=\"\" size=32 min-objects=1 max-objects=2 scale-min=1 scale-max=1.5 overlap=allow "
                "channels=1 alpha-threshold=77 single-class=\"any thing\" train-count=6 val-count=3 test-count=3" +
                common);
  opt.out = dir / "folder-out";
  EXPECT_EQ(io::convert_imagefolder({dir / "folder", 1, 40}, opt).source,
            "imagefolder:" + (dir / "folder") + " channels=1 background=40" + common);
  opt.out = dir / "folder4-out";  // alpha kept: no background
  EXPECT_EQ(io::convert_imagefolder({dir / "folder", 4}, opt).source,
            "imagefolder:" + (dir / "folder") + " channels=4" + common);
  opt.out = dir / "coco-out";
  EXPECT_EQ(io::convert_coco({dir / "coco", "", 3, 0}, opt).source,
            "coco:" + (dir / "coco") + " images=\"\" channels=3 background=0" + common);
  opt.out = dir / "idx-out";
  EXPECT_EQ(io::convert_idx({dir / "idx", {"x", "y", "z"}}, opt).source,
            "idx:" + (dir / "idx") + " classes=x,y,z" + common);

  for (const std::string name : {"canvas", "folder-out", "folder4-out", "coco-out", "idx-out"}) {
    const io::Dataset ds = io::Dataset::open(dir / name);
    const std::string args = source_to_args(ds.manifest().source);
    const CliRun r = run_cli("--log-level warn convert " + args + " --out " + (dir / (name + "-again")));
    ASSERT_EQ(r.status, 0) << args << "\n" << r.output;
    EXPECT_EQ(test::folder_bytes(dir / name), test::folder_bytes(dir / (name + "-again"))) << args;
  }
}

// Item 2: the --channels values each converter accepts, its help and docs/DATA_FORMAT.md agree.
TEST(ConvertChannels, ChecksHelpAndDocsAgree) {
  test::TempDir dir;
  test::make_halo_objects(dir / "objects", 8, 12, 60);
  write_image_folder(dir / "folder");
  write_coco(dir / "coco");
  EXPECT_EQ(io::channels_text("imagefolder"), "1, 3 or 4");
  EXPECT_EQ(io::channels_text("coco"), "1, 3 or 4");
  EXPECT_EQ(io::channels_text("canvas"), "1 or 3");
  EXPECT_EQ(io::channels_text("emoji"), "3");
  EXPECT_EQ(io::channels_text("idx"), "");
  io::ConvertOptions opt;
  opt.force = true;
  for (int c = 1; c <= 5; ++c) {
    const std::vector<std::pair<std::string, std::function<void()>>> converters = {
        {"imagefolder",
         [&] {
           io::convert_imagefolder({dir / "folder", c}, opt);
         }},
        {"coco",
         [&] {
           io::convert_coco({dir / "coco", "", c}, opt);
         }},
        {"canvas", [&] {
           io::CanvasOptions cv = small_canvas(dir / "objects");
           cv.channels = c;
           io::convert_canvas(cv, opt);
         }}};
    for (const auto& [format, convert] : converters) {
      const std::vector<int> ok = io::accepted_channels(format);
      opt.out = dir / (format + std::to_string(c));
      if (std::find(ok.begin(), ok.end(), c) != ok.end()) {
        EXPECT_NO_THROW(convert()) << format << " " << c;
        EXPECT_EQ(io::Dataset::open(opt.out).manifest().channels, c) << format;
        continue;
      }
      try {
        convert();
        ADD_FAILURE() << format << " accepted --channels " << c;
      } catch (const Error& e) {
        EXPECT_NE(e.reason().find("convert " + format + ": --channels " + std::to_string(c) + " (" + format +
                                  " accepts " + io::channels_text(format) + ")"),
                  std::string::npos)
            << e.reason();
      }
    }
  }
  // idx and emoji take no other value on the command line (idx: none at all)
  const CliRun idx = run_cli("convert --format idx --src " + (dir / "none") + " --channels 1 --out " + (dir / "x"));
  EXPECT_NE(idx.status, 0);
  EXPECT_NE(idx.output.find("convert idx: --channels 1 (idx takes the channels from its files"), std::string::npos)
      << idx.output;
  const CliRun emoji = run_cli("convert --format emoji --src " + (dir / "none") + " --channels 4 --out " + (dir / "x"));
  EXPECT_NE(emoji.status, 0);
  EXPECT_NE(emoji.output.find("convert emoji: --channels 4 (emoji accepts 3)"), std::string::npos) << emoji.output;

  const CliRun help = run_cli("convert --help");
  ASSERT_EQ(help.status, 0) << help.output;
  std::string flat;  // CLI11 wraps long descriptions
  for (char c : help.output)
    if (c != '\n' && !(c == ' ' && !flat.empty() && flat.back() == ' ')) flat += c;
  for (const std::string want : {"imagefolder and coco 1, 3 or 4", "canvas 1 or 3", "emoji 3", "idx: none"})
    EXPECT_NE(flat.find(want), std::string::npos) << want << " not in:\n" << help.output;

  // docs/DATA_FORMAT.md: each converter's entry names exactly its values
  const std::string doc = io::read_text_file(std::string(GPPF_SOURCE_DIR) + "/docs/DATA_FORMAT.md");
  for (const std::string format : {"idx", "imagefolder", "coco", "canvas", "emoji"}) {
    const std::size_t at = doc.find("\n- `" + format + "`:");
    ASSERT_NE(at, std::string::npos) << format;
    const std::string entry = doc.substr(at, doc.find("\n- `", at + 1) - at);
    std::string want = "`--channels";
    for (int c : io::accepted_channels(format)) {
      want += want.back() == 's' ? ' ' : '|';
      want += std::to_string(c);
    }
    want = want.back() == 's' ? "no `--channels`" : want + "`";
    EXPECT_NE(entry.find(want), std::string::npos) << format << ": " << want << " not in\n" << entry;
  }
}

// Item 3: transparent pixels go onto --background (default white) when the output has no alpha.
TEST(ConvertBackground, TransparentPixelsOnTheBackground) {
  test::TempDir dir;
  write_image_folder(dir / "folder");
  write_coco(dir / "coco");
  io::ConvertOptions opt;
  opt.val_fraction = 0;
  const auto blend = [](int c, int a, int bg) { return (c * a + bg * (255 - a) + 127) / 255; };
  for (const int bg : {255, 0, 90}) {
    opt.out = dir / ("folder" + std::to_string(bg));
    io::ImageFolderOptions folder{dir / "folder", 3};
    if (bg != 255) folder.background = bg;  // 255: the default
    io::convert_imagefolder(folder, opt);
    opt.out = dir / ("coco" + std::to_string(bg));
    io::CocoOptions coco{dir / "coco", "", 3};
    if (bg != 255) coco.background = bg;
    io::convert_coco(coco, opt);
    for (const std::string name : {"folder", "coco"}) {
      const io::Image im = first_decoded(dir / (name + std::to_string(bg)), "train");
      ASSERT_EQ(im.pixels.size(), 12u) << name;
      const std::vector<std::uint8_t> want = {std::uint8_t(bg),
                                              std::uint8_t(bg),
                                              std::uint8_t(bg),  // transparent
                                              std::uint8_t(blend(200, 128, bg)),
                                              std::uint8_t(blend(100, 128, bg)),
                                              std::uint8_t(blend(50, 128, bg)),
                                              200,
                                              100,
                                              50,
                                              std::uint8_t(bg),
                                              std::uint8_t(bg),
                                              std::uint8_t(bg)};
      EXPECT_EQ(im.pixels, want) << name << " background " << bg;
    }
  }
  // 4 channels keep the alpha and the file's bytes; opaque files are stored unchanged too
  opt.out = dir / "rgba";
  io::convert_imagefolder({dir / "folder", 4}, opt);
  const std::vector<std::uint8_t> rgba = io::encode_png(rgba_image());
  std::int64_t kept = 0;
  for (const io::Sample& s : test::read_split(io::Dataset::open(opt.out), "train")) kept += s.image == rgba;
  EXPECT_EQ(kept, 2);
  // the CLI: --background names, and is refused where it cannot apply
  EXPECT_EQ(io::parse_background("white"), 255);
  EXPECT_EQ(io::parse_background("black"), 0);
  EXPECT_EQ(io::parse_background("17"), 17);
  for (const std::string bad : {"256", "-1", "grey", "", "12x"}) EXPECT_THROW(io::parse_background(bad), Error) << bad;
  const CliRun black = run_cli("--log-level warn convert --format imagefolder --src " + (dir / "folder") +
                               " --channels 3 --background black --val-fraction 0 --out " + (dir / "cli"));
  ASSERT_EQ(black.status, 0) << black.output;
  EXPECT_EQ(first_decoded(dir / "cli", "train").pixels, first_decoded(dir / "folder0", "train").pixels);
  const CliRun with4 = run_cli("convert --format imagefolder --src " + (dir / "folder") +
                               " --channels 4 --background black --out " + (dir / "cli4"));
  EXPECT_NE(with4.status, 0);
  EXPECT_NE(with4.output.find("--background applies to imagefolder and coco with --channels 1 or 3"), std::string::npos)
      << with4.output;
}

// Item 4: the same conversion twice, a second apart, gives the same bytes in every file.
TEST(ConvertReproducible, SameSourceSameBytes) {
  test::TempDir dir;
  test::make_halo_objects(dir / "objects", 8, 12, 60);
  write_image_folder(dir / "folder");
  write_coco(dir / "coco");
  write_idx(dir / "idx");
  const auto convert_all = [&](const std::string& out) {
    io::ConvertOptions opt;
    opt.shard_samples = 4;
    opt.val_fraction = 0.2;
    opt.out = out + "/canvas";
    testing::internal::CaptureStderr();  // the coverage warning
    io::convert_canvas(small_canvas(dir / "objects"), opt);
    testing::internal::GetCapturedStderr();
    opt.out = out + "/folder";
    io::convert_imagefolder({dir / "folder", 3}, opt);
    opt.out = out + "/coco";
    io::convert_coco({dir / "coco", "", 3}, opt);
    opt.out = out + "/idx";
    io::convert_idx({dir / "idx", {}}, opt);
  };
  convert_all(dir / "a");
  next_second();
  convert_all(dir / "b");
  const auto a = test::folder_bytes(dir / "a"), b = test::folder_bytes(dir / "b");
  ASSERT_EQ(a.size(), b.size());
  EXPECT_GT(a.size(), 8u);
  for (const auto& [file, bytes] : a) {
    ASSERT_TRUE(b.count(file)) << file;
    EXPECT_TRUE(bytes == b.at(file)) << file << " differs between two conversions";
  }
}
