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
#include <set>

#include "core/error.hpp"
#include "core/log.hpp"
#include "io/coco_mask.hpp"
#include "io/convert.hpp"
#include "io/file_util.hpp"
#include "io/image_codec.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace gppf::io {
namespace {

// Whether `path` names something, without throwing: a file name from a JSON file may be longer than
// the file system allows, and the throwing std::filesystem::exists then aborted the conversion
// (fuzzing, fuzz/regressions/coco/file-name-too-long.json). Such a name exists nowhere.
bool exists_quietly(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec) && !ec;
}

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

// The JSON files of `src`: one file (splits derived), or a folder's *train*/*val*/*test* files.
std::vector<JsonSplit> find_json_files(const std::string& src) {
  std::vector<JsonSplit> files;
  if (!fs::is_directory(src)) {
    GPPF_CHECK(fs::exists(src), "convert coco: ", src, " does not exist");
    return {{"", src, ""}};
  }
  for (const auto& e : fs::recursive_directory_iterator(src)) {
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
  GPPF_CHECK(!files.empty(), "convert coco: no *train*/*val*/*test* JSON files under ", src);
  return files;
}

// Class ids in category-id order, from the first file's categories.
Manifest coco_header(const json& doc, const std::string& path, std::map<std::int64_t, std::int32_t>& cat_index) {
  std::map<std::int64_t, std::string> cats;
  try {
    for (const auto& c : doc.at("categories")) cats[integer(c.at("id"))] = c.at("name").get<std::string>();
  } catch (const json::exception& e) {
    GPPF_THROW("convert coco: ", path, ": bad categories (", e.what(), ")");
  }
  GPPF_CHECK(!cats.empty(), "convert coco: ", path, " has no categories");
  Manifest h;
  for (const auto& [id, name] : cats) {
    cat_index[id] = static_cast<std::int32_t>(h.classes.size());
    h.classes.push_back(name);
  }
  GPPF_CHECK(h.classes.size() < 255, "convert coco: ", h.classes.size(), " categories; masks hold at most 254");
  return h;
}

// Paints the image's annotations into its class-id mask and adds their boxes to `s`.
void add_annotations(std::vector<const json*> list, const std::map<std::int64_t, std::int32_t>& cat_index,
                     const std::string& what, Sample& s) {
  const int ih = s.height, iw = s.width;
  // larger objects first so that smaller ones painted later stay visible
  std::stable_sort(list.begin(), list.end(),
                   [](const json* a, const json* b) { return a->value("area", 0.0) > b->value("area", 0.0); });
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(ih) * iw, 0);
  for (const json* a : list) {
    const std::int64_t cat = integer(a->at("category_id"));
    const auto it = cat_index.find(cat);
    GPPF_CHECK(it != cat_index.end(), what, ": annotation ", a->value("id", json(-1)), " has unknown category ", cat);
    const std::int32_t cls = it->second;
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
    GPPF_CHECK(x1 >= -1 && y1 >= -1 && x2 <= iw + 1 && y2 <= ih + 1 && bb[2] > 0 && bb[3] > 0, what, ": bbox [", bb[0],
               ", ", bb[1], ", ", bb[2], ", ", bb[3], "] outside the ", iw, "x", ih, " image");
    x1 = std::max(0.0, x1);
    y1 = std::max(0.0, y1);
    x2 = std::min<double>(iw, x2);
    y2 = std::min<double>(ih, y2);
    if (x2 > x1 && y2 > y1) s.boxes.push_back({float(x1), float(y1), float(x2), float(y2), cls});
  }
  s.mask = encode_png({ih, iw, 1, mask});
}

// What was dropped and why, reported once per JSON file instead of once per item.
struct Dropped {
  std::int64_t orphans = 0;  // annotations whose image_id is not in "images"
  std::string orphan_example;
  std::int64_t missing_images = 0, missing_annotations = 0;  // image files not found (--on-error skip)
  std::string missing_example;
  void report(const std::string& json_path) const {
    if (orphans > 0)
      log::warn("convert coco: ", json_path, ": ", orphans, " annotations name an image id missing from its images",
                " list and were dropped (e.g. ", orphan_example, ")");
    if (missing_images > 0)
      log::warn("convert coco: ", json_path, ": ", missing_images, " image files not found, skipped with their ",
                missing_annotations, " annotations (e.g. ", missing_example, ")");
  }
};

// Annotations by image id; those naming no listed image are counted in `dropped`.
std::map<std::int64_t, std::vector<const json*>> annotations_by_image(const json& doc, Dropped& dropped) {
  std::map<std::int64_t, std::vector<const json*>> anns;
  if (!doc.contains("annotations")) return anns;
  std::set<std::int64_t> ids;
  for (const auto& img : doc.at("images"))
    if (img.contains("id") && img["id"].is_number_integer()) ids.insert(img["id"].get<std::int64_t>());
  for (const auto& a : doc["annotations"]) {
    const std::int64_t id = integer(a.at("image_id"));
    if (!ids.count(id)) {
      if (dropped.orphans++ == 0)
        dropped.orphan_example = str("annotation ", a.value("id", json(-1)), ", image id ", id);
      continue;
    }
    anns[id].push_back(&a);
  }
  return anns;
}

}  // namespace

Manifest convert_coco(const CocoOptions& coco, const ConvertOptions& opt) {
  check_channels("coco", coco.channels);
  const std::vector<JsonSplit> files = find_json_files(coco.src);
  std::vector<json> docs;
  for (const auto& f : files) {
    try {
      docs.push_back(json::parse(read_file(f.path)));
    } catch (const json::exception& e) {
      GPPF_THROW("convert coco: ", f.path, " is not valid JSON (", e.what(), ")");
    }
  }
  std::map<std::int64_t, std::int32_t> cat_index;  // every file must use the first file's categories
  Manifest h = coco_header(docs.front(), files.front().path, cat_index);
  h.task = TaskType::Detection;
  h.encoding = "encoded";
  h.channels = coco.channels;
  h.has_boxes = h.has_masks = true;
  h.block = 64;
  std::vector<std::pair<std::string, std::string>> options = {{"images", coco.images},
                                                              {"channels", std::to_string(coco.channels)}};
  if (coco.channels != 4) options.emplace_back("background", std::to_string(coco.background));  // as imagefolder
  h.source = source_text("coco", coco.src, options, opt);
  const auto has = [&](const char* s) {
    return std::any_of(files.begin(), files.end(), [&](const JsonSplit& f) { return f.split == s; });
  };
  const bool has_val = has("val"), has_test = has("test");
  DatasetWriter writer(opt.out, {h, opt.shard_samples, std::int64_t(256) << 20, 0, opt.force});
  std::int64_t skipped = 0, index = 0;
  for (std::size_t fi = 0; fi < files.size(); ++fi) {
    const JsonSplit& f = files[fi];
    const std::string image_dir = coco.images.empty() ? fs::path(f.path).parent_path().string() : coco.images;
    Dropped dropped;
    std::map<std::int64_t, std::vector<const json*>> anns;
    const json* images = nullptr;
    try {  // a JSON error here is the file's, not one image's
      anns = annotations_by_image(docs[fi], dropped);
      images = &docs[fi].at("images");
    } catch (const json::exception& e) {
      GPPF_THROW("convert coco: ", f.path, ": bad images or annotations (", e.what(), ")");
    }
    for (const auto& img : *images) {
      const std::int64_t entry = index++;
      std::string name, what;
      try {
        name = img.value("file_name", "");
        what = str(f.path, " image ", img.value("id", json(-1)), " (", name, ")");
      } catch (const json::exception& e) {
        GPPF_THROW("convert coco: ", f.path, ": bad image entry ", entry, " (", e.what(), ")");
      }
      try {
        std::string path = image_dir + "/" + name;
        if (!exists_quietly(path) && !f.image_dir_hint.empty()) path = image_dir + "/" + f.image_dir_hint + "/" + name;
        if (!exists_quietly(path) && opt.skip_bad) {
          if (dropped.missing_images++ == 0) dropped.missing_example = path;
          // Not value("id", -1): that casts a float id to an integer as it is (UB out of range; fuzzing).
          const auto a = img.contains("id") && img["id"].is_number_integer() ? anns.find(img["id"].get<std::int64_t>())
                                                                             : anns.end();
          dropped.missing_annotations += a == anns.end() ? 0 : static_cast<std::int64_t>(a->second.size());
          ++skipped;
          continue;
        }
        GPPF_CHECK(exists_quietly(path), what, ": image file not found under ", image_dir);
        Sample s;
        Image im;
        s.image = flatten_transparency(read_file(path), coco.channels, coco.background, path, im);
        // at(), not operator[]: a const json's operator[] on an absent key reads freed memory (fuzz).
        GPPF_CHECK((!img.contains("height") || img.at("height") == im.height) &&
                       (!img.contains("width") || img.at("width") == im.width),
                   what, ": JSON says ", img.value("width", json(0)), "x", img.value("height", json(0)),
                   ", the file is ", im.width, "x", im.height);
        s.height = im.height;
        s.width = im.width;
        s.channels = im.channels;
        s.id = integer(img.at("id"));
        add_annotations(anns[s.id], cat_index, what, s);
        // keyed by the image id: val and train never share an image
        const std::string split = carve_split(opt, f.split, static_cast<std::uint64_t>(s.id), has_val, has_test);
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
    dropped.report(f.path);
  }
  Manifest m = writer.finish();
  log::info("convert coco: ", opt.out, ": ", index - skipped, " images, ", h.classes.size(), " classes",
            skipped ? str(", ", skipped, " skipped") : std::string());
  return m;
}

}  // namespace gppf::io
