// COCO-style JSON: "images" (id, file_name, height, width), "categories" (id, name) and
// "annotations" (image_id, category_id, bbox [x, y, w, h], segmentation as polygons or RLE,
// iscrowd). Categories become classes in id order; boxes are stored as x1, y1, x2, y2; the masks
// of all annotations of an image are merged into one class-id mask (larger objects first, so small
// ones stay visible; crowd regions are 255, ignore), stored as PNG.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "io/coco_mask.hpp"
#include "io/convert.hpp"
#include "io/file_util.hpp"
#include "io/image_codec.hpp"
#include "src/core/error.hpp"
#include "src/core/log.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace gppf::io {
namespace {

// Integers from JSON: nlohmann's get<int>() casts a float as it is, undefined out of the type's range.
template <class T = std::int64_t>
T integer(const json& v) {
  if (!v.is_number_integer()) throw json::type_error::create(302, "expected an integer, got " + v.dump(), &v);
  return v.get<T>();
}
template <class T>
std::vector<T> integers(const json& v) {
  if (!v.is_array()) throw json::type_error::create(302, "expected an array, got " + v.dump(), &v);
  std::vector<T> out;
  for (const auto& e : v) out.push_back(integer<T>(e));
  return out;
}

// The 0/1 mask of one annotation's segmentation.
std::vector<std::uint8_t> segmentation_mask(const json& seg, int h, int w) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(h) * w, 0);
  auto merge = [&](const std::vector<std::uint8_t>& m) {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] |= m[i];
  };
  if (seg.is_array()) {  // polygons
    for (const auto& poly : seg) merge(rle_decode(rle_from_polygon(poly.get<std::vector<double>>(), h, w), h, w));
  } else if (seg.is_object()) {  // RLE, uncompressed (list) or compressed (string)
    const auto size = integers<int>(seg.at("size"));
    GPPF_CHECK(size.size() == 2 && size[0] == h && size[1] == w, "RLE size differs from the image's ", h, "x", w);
    const json& counts = seg.at("counts");
    merge(rle_decode(counts.is_string() ? rle_from_string(counts.get<std::string>()) : integers<std::uint32_t>(counts),
                     h, w));
  } else {
    GPPF_THROW("segmentation is neither polygons nor RLE");
  }
  return out;
}

struct JsonSplit {
  std::string split;  // "" = derive
  std::string path;
  std::string image_dir_hint;  // e.g. "val2017" for instances_val2017.json
};

}  // namespace

Manifest convert_coco(const CocoOptions& coco, const ConvertOptions& opt) {
  std::vector<JsonSplit> files;
  if (fs::is_directory(coco.src)) {
    for (const auto& e : fs::recursive_directory_iterator(coco.src)) {
      if (!e.is_regular_file() || e.path().extension() != ".json") continue;
      const std::string stem = e.path().stem().string();
      for (const char* s : {"train", "val", "test"})
        if (stem.find(s) != std::string::npos) {
          const auto pos = stem.find('_');
          files.push_back({s, e.path().string(), pos == std::string::npos ? stem : stem.substr(pos + 1)});
          break;
        }
    }
    std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
    GPPF_CHECK(!files.empty(), "convert coco: no *train*/*val*/*test* JSON files under ", coco.src);
  } else {
    GPPF_CHECK(fs::exists(coco.src), "convert coco: ", coco.src, " does not exist");
    files.push_back({"", coco.src, ""});
  }

  // Classes from the first file's categories; every file must agree.
  std::vector<json> docs;
  for (const auto& f : files) {
    try {
      docs.push_back(json::parse(read_file(f.path)));
    } catch (const json::exception& e) {
      GPPF_THROW("convert coco: ", f.path, " is not valid JSON (", e.what(), ")");
    }
  }
  std::map<std::int64_t, std::string> cats;
  try {
    for (const auto& c : docs.front().at("categories")) cats[integer(c.at("id"))] = c.at("name").get<std::string>();
  } catch (const json::exception& e) {
    GPPF_THROW("convert coco: ", files.front().path, ": bad categories (", e.what(), ")");
  }
  GPPF_CHECK(!cats.empty(), "convert coco: ", files.front().path, " has no categories");
  std::map<std::int64_t, std::int32_t> cat_index;
  Manifest h;
  for (const auto& [id, name] : cats) {
    cat_index[id] = static_cast<std::int32_t>(h.classes.size());
    h.classes.push_back(name);
  }
  GPPF_CHECK(h.classes.size() < 255, "convert coco: ", h.classes.size(), " categories; masks hold at most 254");
  h.task = TaskType::Detection;
  h.encoding = "encoded";
  h.channels = coco.channels;
  h.has_boxes = h.has_masks = true;
  h.block = 64;
  h.source = "coco:" + coco.src;
  DatasetWriter writer(opt.out, {h, opt.shard_samples, std::int64_t(256) << 20, 0, opt.force});
  std::int64_t skipped = 0, index = 0;
  for (std::size_t fi = 0; fi < files.size(); ++fi) {
    const JsonSplit& f = files[fi];
    const json& doc = docs[fi];
    const std::string image_dir = coco.images.empty() ? fs::path(f.path).parent_path().string() : coco.images;
    std::map<std::int64_t, std::vector<const json*>> anns;
    static const json kNone = json::array();
    const json* images = nullptr;
    try {  // a JSON error here is the file's, not one image's
      for (const auto& a : doc.contains("annotations") ? doc["annotations"] : kNone)
        anns[integer(a.at("image_id"))].push_back(&a);
      images = &doc.at("images");
    } catch (const json::exception& e) {
      GPPF_THROW("convert coco: ", f.path, ": bad images or annotations (", e.what(), ")");
    }
    for (const auto& img : *images) {
      const std::int64_t id = index++;
      std::string name, what;
      try {
        name = img.value("file_name", "");
        what = str(f.path, " image ", img.value("id", json(-1)), " (", name, ")");
      } catch (const json::exception& e) {
        GPPF_THROW("convert coco: ", f.path, ": bad image entry ", id, " (", e.what(), ")");
      }
      try {
        std::string path = image_dir + "/" + name;
        if (!fs::exists(path) && !f.image_dir_hint.empty()) path = image_dir + "/" + f.image_dir_hint + "/" + name;
        GPPF_CHECK(fs::exists(path), what, ": image file not found under ", image_dir);
        Sample s;
        s.image = read_file(path);
        const Image im = decode_image(s.image.data(), s.image.size(), coco.channels, path);
        const int ih = im.height, iw = im.width;
        GPPF_CHECK(!img.contains("height") || (img["height"] == ih && img["width"] == iw), what, ": JSON says ",
                   img.value("width", json(0)), "x", img.value("height", json(0)), ", the file is ", iw, "x", ih);
        s.height = ih;
        s.width = iw;
        s.channels = im.channels;
        s.id = integer(img.at("id"));
        std::vector<const json*> list = anns[s.id];
        // larger objects first so that smaller ones painted later stay visible
        std::stable_sort(list.begin(), list.end(),
                         [](const json* a, const json* b) { return a->value("area", 0.0) > b->value("area", 0.0); });
        std::vector<std::uint8_t> mask(static_cast<std::size_t>(ih) * iw, 0);
        for (const json* a : list) {
          const std::int64_t cat = integer(a->at("category_id"));
          GPPF_CHECK(cat_index.count(cat), what, ": annotation ", a->value("id", json(-1)), " has unknown category ",
                     cat);
          const std::int32_t cls = cat_index[cat];
          const bool crowd = a->value("iscrowd", json(0)) != json(0);
          if (a->contains("segmentation")) {
            const auto m = segmentation_mask(a->at("segmentation"), ih, iw);
            for (std::size_t i = 0; i < m.size(); ++i)
              if (m[i]) mask[i] = crowd ? 255 : static_cast<std::uint8_t>(cls + 1);
          }
          if (crowd || !a->contains("bbox")) continue;
          const auto bb = a->at("bbox").get<std::vector<double>>();
          GPPF_CHECK(bb.size() == 4, what, ": bbox needs 4 numbers");
          for (double v : bb) GPPF_CHECK(std::isfinite(v), what, ": bbox with NaN or infinite values");
          double x1 = bb[0], y1 = bb[1], x2 = bb[0] + bb[2], y2 = bb[1] + bb[3];
          // COCO boxes may exceed the image by rounding; a pixel's worth is clipped, more is an error
          GPPF_CHECK(x1 >= -1 && y1 >= -1 && x2 <= iw + 1 && y2 <= ih + 1 && bb[2] > 0 && bb[3] > 0, what, ": bbox [",
                     bb[0], ", ", bb[1], ", ", bb[2], ", ", bb[3], "] outside the ", iw, "x", ih, " image");
          x1 = std::max(0.0, x1);
          y1 = std::max(0.0, y1);
          x2 = std::min<double>(iw, x2);
          y2 = std::min<double>(ih, y2);
          if (x2 > x1 && y2 > y1) s.boxes.push_back({float(x1), float(y1), float(x2), float(y2), cls});
        }
        s.mask = encode_png({ih, iw, 1, mask});
        const std::string split =
            f.split.empty() ? derive_split(opt.seed, id, opt.val_fraction, opt.test_fraction) : f.split;
        writer.add(split, std::move(s), what);
      } catch (const Error& e) {
        if (!opt.skip_bad) throw;
        ++skipped;
        log::warn("convert coco: skipped ", e.reason());
      } catch (const json::exception& e) {
        if (!opt.skip_bad) GPPF_THROW(what, ": bad annotation (", e.what(), ")");
        ++skipped;
      }
    }
  }
  Manifest m = writer.finish();
  log::info("convert coco: ", opt.out, ": ", index - skipped, " images, ", h.classes.size(), " classes",
            skipped ? str(", ", skipped, " skipped") : std::string());
  return m;
}

}  // namespace gppf::io
