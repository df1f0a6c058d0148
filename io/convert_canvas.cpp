// Canvas scenes: objects (samples of a converted classification data set) pasted onto a blank canvas
// or a background photo. An object's alpha is its alpha channel, or its gray value when it has none
// (MNIST digits: white strokes on black); its pixels are blended as out = a * colour + (1 - a) * out
// (colour: the object's own RGB, or white for gray objects). Mask and box come from the pixels with
// alpha >= alpha_threshold that stay visible after every paste, so both are exact.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.hpp"
#include "core/log.hpp"
#include "io/augment.hpp"
#include "io/convert.hpp"
#include "io/image_codec.hpp"
#include "io/random.hpp"

namespace fs = std::filesystem;

namespace gppf::io {
namespace {

// Below this average fraction of the objects' visible pixels inside their boxes, the conversion warns
// (Fashion-MNIST items at the default threshold 128: 87 %, sneakers 76 %).
constexpr double kMinBoxCover = 0.9;

struct Object {
  int h = 0, w = 0;
  std::vector<float> colour;  // h*w*channels, 0..255
  std::vector<float> alpha;   // h*w, 0..1
};

Object make_object(const Sample& s, const Manifest& m, int out_c, const std::string& what) {
  Image im;
  if (m.raw()) {
    im.height = s.height;
    im.width = s.width;
    im.channels = s.channels;
    im.pixels = s.image;
  } else {
    im = decode_image(s.image.data(), s.image.size(), 0, what);
  }
  Object o;
  o.h = im.height;
  o.w = im.width;
  const std::size_t n = static_cast<std::size_t>(o.h) * o.w;
  o.colour.resize(n * out_c);
  o.alpha.resize(n);
  const int c = im.channels;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* p = im.pixels.data() + i * c;
    const bool has_alpha = c == 2 || c == 4;
    const float gray = c >= 3 ? 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2] : p[0];
    o.alpha[i] = has_alpha ? p[c - 1] / 255.0f : gray / 255.0f;
    for (int k = 0; k < out_c; ++k) {
      float v = 255.0f;  // gray objects without alpha: white, shaped by alpha
      if (has_alpha) v = out_c == 1 ? gray : (c >= 3 ? p[k] : p[0]);
      o.colour[i * out_c + k] = v;
    }
  }
  return o;
}

// Resizes an object by `scale` (bilinear, colour and alpha alike).
Object scale_object(const Object& o, double scale, int out_c, int max_side) {
  // Objects longer than half the canvas are first fitted into half of it (photo cut-outs are large),
  // and none may outgrow the canvas; the aspect ratio is kept.
  const double longest = std::max(o.h, o.w);
  double s = scale;
  if (longest > max_side / 2.0) s *= (max_side / 2.0) / longest;
  s = std::min(s, max_side / longest);
  const int nh = std::clamp(static_cast<int>(std::lround(o.h * s)), 1, max_side);
  const int nw = std::clamp(static_cast<int>(std::lround(o.w * s)), 1, max_side);
  if (nh == o.h && nw == o.w) return o;
  Object r;
  r.h = nh;
  r.w = nw;
  const Window win{0, 0, double(o.w), double(o.h), false, nh, nw};
  std::vector<std::uint8_t> c8(o.colour.size()), a8(o.alpha.size());
  for (std::size_t i = 0; i < c8.size(); ++i) c8[i] = static_cast<std::uint8_t>(std::lround(o.colour[i]));
  for (std::size_t i = 0; i < a8.size(); ++i) a8[i] = static_cast<std::uint8_t>(std::lround(o.alpha[i] * 255));
  r.colour.resize(static_cast<std::size_t>(nh) * nw * out_c);
  r.alpha.resize(static_cast<std::size_t>(nh) * nw);
  resample_image(c8.data(), o.h, o.w, out_c, win, 0, r.colour.data());
  resample_image(a8.data(), o.h, o.w, 1, win, 0, r.alpha.data());
  // 8-bit alpha, like the source's: on a blank canvas the pasted value is then exactly alpha * 255
  for (float& a : r.alpha) a = std::round(a) / 255.0f;
  return r;
}

std::vector<Image> load_backgrounds(const std::string& dir, int channels) {
  std::vector<Image> out;
  if (dir.empty()) return out;
  GPPF_CHECK(fs::is_directory(dir), "convert canvas: background folder ", dir, " does not exist");
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
    if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::vector<std::uint8_t> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    try {
      Image im = decode_image(bytes.data(), bytes.size(), channels, f);
      if (std::min(im.height, im.width) >= 64)  // icons and palettes are no backgrounds
        out.push_back(std::move(im));
    } catch (const Error& e) {
      log::warn("convert canvas: skipping background ", e.reason());
    }
  }
  GPPF_CHECK(!out.empty(), "convert canvas: no decodable PNG/JPEG photos in ", dir);
  return out;
}

// The objects of each output split, read once (HDF5 blocks) and decoded per use: the source's
// splits, with val carved from its train objects when it has none. An object is pasted only into
// scenes of its own split, so no object instance appears in two splits.
std::map<std::string, std::vector<Sample>> object_pools(const Dataset& src, const ConvertOptions& opt) {
  const Manifest& sm = src.manifest();
  const bool has_val = sm.find_split("val") != nullptr, has_test = sm.find_split("test") != nullptr;
  std::map<std::string, std::vector<Sample>> pools;
  for (const SplitInfo& split : sm.splits) {
    std::uint64_t position = 0;  // the key: the object's place in its source split
    for (const ShardInfo& sh : split.shards) {
      ShardReader r(src.shard_path(sh), sm, sh.count);
      std::vector<Sample> part;
      std::vector<std::uint32_t> crc;
      r.read(0, sh.count, part, crc);
      for (std::size_t i = 0; i < part.size(); ++i) {
        GPPF_CHECK(sample_crc(part[i]) == crc[i], "shard ", src.shard_path(sh), " sample ", i, ": CRC-32 mismatch");
        pools[carve_split(opt, split.name, position++, has_val, has_test)].push_back(std::move(part[i]));
      }
    }
  }
  return pools;
}

}  // namespace

Manifest convert_canvas(const CanvasOptions& cv, const ConvertOptions& opt) {
  const Dataset src = Dataset::open(cv.src);
  const Manifest& sm = src.manifest();
  GPPF_CHECK(sm.task == TaskType::Classification, "convert canvas: ", cv.src, " is a ", task_name(sm.task),
             " data set; objects come from a classification data set");
  GPPF_CHECK(cv.size >= 8, "convert canvas: --size ", cv.size, " is too small");
  GPPF_CHECK(cv.min_objects >= 1 && cv.max_objects >= cv.min_objects, "convert canvas: objects per scene ",
             cv.min_objects, "..", cv.max_objects);
  GPPF_CHECK(cv.scale_min > 0 && cv.scale_max >= cv.scale_min, "convert canvas: scale range ", cv.scale_min, "..",
             cv.scale_max);
  GPPF_CHECK(cv.alpha_threshold >= 1 && cv.alpha_threshold <= 255, "convert canvas: alpha threshold in 1..255");
  double max_cover = 0.0;  // "none"
  if (cv.overlap == "allow") {
    max_cover = 1.0;
  } else if (cv.overlap != "none") {
    try {
      max_cover = std::stod(cv.overlap);
    } catch (...) {
      max_cover = -1;
    }
    GPPF_CHECK(max_cover > 0 && max_cover < 1, "convert canvas: --overlap '", cv.overlap,
               "' (none, allow, or a fraction in (0,1))");
  }
  const int out_c = cv.channels > 0 ? cv.channels : (cv.backgrounds.empty() ? 1 : 3);
  check_channels("canvas", out_c);
  const std::vector<Image> backgrounds = load_backgrounds(cv.backgrounds, out_c);

  Manifest h;
  h.task = TaskType::Detection;
  h.classes = cv.single_class.empty() ? sm.classes : std::vector<std::string>{cv.single_class};
  h.encoding = "raw";
  h.height = h.width = cv.size;
  h.channels = out_c;
  h.has_boxes = h.has_masks = true;
  h.block = 256;
  h.source = source_text("canvas", cv.src,
                         {{"backgrounds", cv.backgrounds},
                          {"size", std::to_string(cv.size)},
                          {"min-objects", std::to_string(cv.min_objects)},
                          {"max-objects", std::to_string(cv.max_objects)},
                          {"scale-min", number_text(cv.scale_min)},
                          {"scale-max", number_text(cv.scale_max)},
                          {"overlap", cv.overlap},
                          {"channels", std::to_string(out_c)},
                          {"alpha-threshold", std::to_string(cv.alpha_threshold)},
                          {"single-class", cv.single_class},
                          {"train-count", std::to_string(cv.train)},
                          {"val-count", std::to_string(cv.val)},
                          {"test-count", std::to_string(cv.test)}},
                         opt);
  DatasetWriter writer(opt.out, {h, opt.shard_samples, std::int64_t(128) << 20, 4, opt.force});
  const float thr = (cv.alpha_threshold - 0.5f) / 255.0f;  // alpha * 255 >= threshold, robust to rounding
  const int side = cv.size;
  const std::size_t npx = static_cast<std::size_t>(side) * side;
  std::int64_t skipped = 0;
  // Sums over the pasted objects of the fraction of their visible pixels (alpha > 0) inside their box
  // and inside their mask, before any occlusion: the alpha threshold's cost (gray objects lose much).
  double box_cover = 0, mask_cover = 0;
  std::int64_t pasted = 0;

  const std::map<std::string, std::vector<Sample>> pools = object_pools(src, opt);
  for (const auto& [name, objects] : pools) {
    // the scene seed's split number; train and test keep the numbers they had before val existed
    const std::uint64_t split_no = name == "train" ? 1 : name == "test" ? 2 : 3;
    std::int64_t count = static_cast<std::int64_t>(objects.size());
    if (name == "train" && cv.train > 0) count = cv.train;
    if (name == "val" && cv.val > 0) count = cv.val;
    if (name == "test" && cv.test > 0) count = cv.test;
    if (objects.empty()) continue;
    for (std::int64_t scene = 0; scene < count; ++scene) {
      Rng rng(hash_seed({opt.seed, split_no, static_cast<std::uint64_t>(scene), 0xca5ULL}));
      std::vector<float> img(npx * out_c, 0.0f);
      if (!backgrounds.empty()) {
        const Image& bg = backgrounds[rng.below(backgrounds.size())];
        // a random square window of the photo, at least half its shorter side
        const double s = std::min(bg.height, bg.width) * rng.uniform(0.5, 1.0);
        const Window win{rng.uniform(0, bg.width - s), rng.uniform(0, bg.height - s), s, s, false, side, side};
        resample_image(bg.pixels.data(), bg.height, bg.width, out_c, win, 0, img.data());
      }
      std::vector<std::int32_t> owner(npx, -1);
      std::vector<std::int64_t> area;  // mask pixels of each object when pasted
      std::vector<std::int32_t> cls;
      std::vector<Box> extents;
      const int k =
          cv.min_objects + static_cast<int>(rng.below(static_cast<std::uint64_t>(cv.max_objects - cv.min_objects + 1)));
      for (int j = 0; j < k; ++j) {
        const Sample& os = objects[rng.below(objects.size())];
        const Object obj = scale_object(make_object(os, sm, out_c, str(cv.src, " ", name, " sample ", os.id)),
                                        rng.uniform(cv.scale_min, cv.scale_max), out_c, side);
        // the object's own mask and its tight box within the object
        int bx1 = obj.w, by1 = obj.h, bx2 = -1, by2 = -1;
        for (int y = 0; y < obj.h; ++y)
          for (int x = 0; x < obj.w; ++x)
            if (obj.alpha[static_cast<std::size_t>(y) * obj.w + x] >= thr) {
              bx1 = std::min(bx1, x);
              by1 = std::min(by1, y);
              bx2 = std::max(bx2, x);
              by2 = std::max(by2, y);
            }
        if (bx2 < 0) continue;  // nothing above the threshold
        // the extent of every pixel it changes (alpha > 0), which must not meet another object's
        int ex1 = obj.w, ey1 = obj.h, ex2 = -1, ey2 = -1;
        for (int y = 0; y < obj.h; ++y)
          for (int x = 0; x < obj.w; ++x)
            if (obj.alpha[static_cast<std::size_t>(y) * obj.w + x] > 0) {
              ex1 = std::min(ex1, x);
              ey1 = std::min(ey1, y);
              ex2 = std::max(ex2, x);
              ey2 = std::max(ey2, y);
            }
        bool ok = false;
        int px0 = 0, py0 = 0;
        for (int attempt = 0; attempt < 50 && !ok; ++attempt) {
          px0 = static_cast<int>(rng.below(static_cast<std::uint64_t>(side - obj.w + 1)));
          py0 = static_cast<int>(rng.below(static_cast<std::uint64_t>(side - obj.h + 1)));
          if (max_cover >= 1.0) {
            ok = true;
          } else if (max_cover == 0.0) {  // boxes must not touch any earlier box
            const Box nb{float(px0 + ex1), float(py0 + ey1), float(px0 + ex2 + 1), float(py0 + ey2 + 1), 0};
            ok = std::none_of(extents.begin(), extents.end(), [&](const Box& b) {
              return nb.x1 < b.x2 && b.x1 < nb.x2 && nb.y1 < b.y2 && b.y1 < nb.y2;
            });
          } else {  // every earlier object keeps at least (1 - max_cover) of its pixels
            std::vector<std::int64_t> lost(area.size(), 0);
            for (int y = 0; y < obj.h; ++y)
              for (int x = 0; x < obj.w; ++x)
                if (obj.alpha[static_cast<std::size_t>(y) * obj.w + x] >= thr) {
                  const std::int32_t o = owner[static_cast<std::size_t>(py0 + y) * side + px0 + x];
                  if (o >= 0) ++lost[o];
                }
            std::vector<std::int64_t> visible(area.size(), 0);
            for (std::int32_t o : owner)
              if (o >= 0) ++visible[o];
            ok = true;
            for (std::size_t o = 0; o < area.size(); ++o)
              if (visible[o] > 0 && visible[o] - lost[o] < (1.0 - max_cover) * area[o]) ok = false;
          }
        }
        if (!ok) continue;
        std::int64_t visible = 0, in_box = 0, in_mask = 0;
        for (int y = 0; y < obj.h; ++y)
          for (int x = 0; x < obj.w; ++x) {
            const float a = obj.alpha[static_cast<std::size_t>(y) * obj.w + x];
            if (a <= 0) continue;
            ++visible;
            if (x >= bx1 && x <= bx2 && y >= by1 && y <= by2) ++in_box;
            if (a >= thr) ++in_mask;
          }
        box_cover += double(in_box) / double(visible);
        mask_cover += double(in_mask) / double(visible);
        ++pasted;
        const auto id = static_cast<std::int32_t>(area.size());
        std::int64_t pixels = 0;
        for (int y = 0; y < obj.h; ++y)
          for (int x = 0; x < obj.w; ++x) {
            const std::size_t oi = static_cast<std::size_t>(y) * obj.w + x;
            const std::size_t ci = static_cast<std::size_t>(py0 + y) * side + px0 + x;
            const float a = obj.alpha[oi];
            if (a <= 0) continue;
            for (int c = 0; c < out_c; ++c)
              img[ci * out_c + c] = a * obj.colour[oi * out_c + c] + (1 - a) * img[ci * out_c + c];
            if (a >= thr) {
              owner[ci] = id;
              ++pixels;
            }
          }
        area.push_back(pixels);
        const std::int32_t label = cv.single_class.empty() ? os.label : 0;
        cls.push_back(label);
        extents.push_back({float(px0 + ex1), float(py0 + ey1), float(px0 + ex2 + 1), float(py0 + ey2 + 1), label});
      }
      Sample s;
      s.image.resize(npx * out_c);
      for (std::size_t i = 0; i < s.image.size(); ++i)
        s.image[i] = static_cast<std::uint8_t>(std::clamp(std::lround(img[i]), 0L, 255L));
      s.mask.assign(npx, 0);
      std::vector<Box> boxes(area.size(), Box{float(side), float(side), -1.f, -1.f, 0});
      for (std::size_t i = 0; i < npx; ++i) {
        const std::int32_t o = owner[i];
        if (o < 0) continue;
        s.mask[i] = static_cast<std::uint8_t>(cls[o] + 1);
        const float x = float(i % side), y = float(i / side);
        Box& b = boxes[o];
        b.x1 = std::min(b.x1, x);
        b.y1 = std::min(b.y1, y);
        b.x2 = std::max(b.x2, x + 1);
        b.y2 = std::max(b.y2, y + 1);
        b.cls = cls[o];
      }
      for (const Box& b : boxes)
        if (b.x2 > 0) s.boxes.push_back(b);  // fully covered objects are gone
      if (s.boxes.empty()) {
        ++skipped;
        continue;
      }
      s.id = scene;
      writer.add(name, std::move(s), str("canvas scene ", name, " ", scene));
    }
  }
  if (skipped > 0) log::info("convert canvas: ", skipped, " scenes without a visible object were left out");
  if (pasted > 0) {
    const double box = box_cover / double(pasted), mask = mask_cover / double(pasted);
    const std::string cover =
        str("boxes cover ", std::lround(box * 1000) / 10.0, "% and masks ", std::lround(mask * 1000) / 10.0,
            "% of the objects' visible pixels (alpha > 0) on average");
    if (box < kMinBoxCover)
      log::warn("convert canvas: ", cover, " at --alpha-threshold ", cv.alpha_threshold,
                "; lower --alpha-threshold (1 boxes every visible pixel) unless the faint pixels are noise");
    else
      log::info("convert canvas: ", cover, " (--alpha-threshold ", cv.alpha_threshold, ")");
  }
  Manifest m = writer.finish();
  log::info("convert canvas: ", opt.out, ": ", side, "x", side, "x", out_c, " scenes of ", cv.min_objects, "-",
            cv.max_objects, " objects");
  return m;
}

}  // namespace gppf::io
