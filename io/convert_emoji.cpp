// Emoji artwork by category (docs/DATA_FORMAT.md). The RGBA artwork is composited onto a fixed
// background here, once: decoding RGBA into RGB at load time would leave the transparent pixels'
// colour to the decoder, and raw pixels need no decoding per step.
#include "io/convert_emoji.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/log.hpp"
#include "io/augment.hpp"
#include "io/file_util.hpp"
#include "io/image_codec.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace gppf::io {
namespace {

// RGBA -> RGB on `bg`, then resized to size x size when the artwork has another size.
std::vector<std::uint8_t> flatten(const Image& im, const std::array<std::uint8_t, 3>& bg, int size) {
  const std::size_t n = static_cast<std::size_t>(im.height) * im.width;
  std::vector<std::uint8_t> rgb(n * 3);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* p = im.pixels.data() + i * 4;
    for (int k = 0; k < 3; ++k)
      rgb[i * 3 + k] = static_cast<std::uint8_t>((p[k] * p[3] + bg[k] * (255 - p[3]) + 127) / 255);
  }
  if (im.height == size && im.width == size) return rgb;
  const Window win{0, 0, double(im.width), double(im.height), false, size, size};
  std::vector<float> f(static_cast<std::size_t>(size) * size * 3);
  resample_image(rgb.data(), im.height, im.width, 3, win, 0, f.data());
  std::vector<std::uint8_t> out(f.size());
  for (std::size_t i = 0; i < f.size(); ++i)
    out[i] = static_cast<std::uint8_t>(std::clamp(std::lround(f[i]), 0L, 255L));
  return out;
}

}  // namespace

Manifest convert_emoji(const EmojiOptions& emoji, const ConvertOptions& opt) {
  const std::string json_path = emoji.src + "/emoji.json";
  GPPF_CHECK(fs::is_regular_file(json_path), "convert emoji: ", json_path,
             " not found (--src is the unpacked emoji-datasource package)");
  const std::string images = emoji.images.empty() ? emoji.src + "/img/google/64" : emoji.images;
  GPPF_CHECK(fs::is_directory(images), "convert emoji: image folder ", images, " does not exist (set --images)");
  GPPF_CHECK(emoji.size >= 8 && emoji.size <= 1024, "convert emoji: --size ", emoji.size, " (8 to 1024)");
  json list;
  try {
    const std::vector<std::uint8_t> bytes = read_file(json_path);
    list = json::parse(bytes.begin(), bytes.end());
  } catch (const json::exception& e) {
    GPPF_THROW("convert emoji: ", json_path, ": ", e.what());
  }
  GPPF_CHECK(list.is_array(), "convert emoji: ", json_path, ": expected a JSON array of emoji");

  struct Entry {
    std::int64_t index;
    std::string category, image, code;
  };
  std::vector<Entry> entries;
  std::map<std::string, std::int64_t> first_order;  // category -> smallest sort_order (Unicode's order)
  for (std::size_t i = 0; i < list.size(); ++i) {
    const json& e = list[i];
    const std::string what = str(json_path, " entry ", i);
    GPPF_CHECK(e.is_object() && e.contains("category") && e["category"].is_string() && e.contains("image") &&
                   e["image"].is_string() && e.contains("unified") && e["unified"].is_string(),
               "convert emoji: ", what, ": needs string fields category, image and unified");
    const std::string category = e["category"].get<std::string>();
    if (category == "Component") continue;
    const std::int64_t order = e.value("sort_order", static_cast<std::int64_t>(i));
    auto [it, fresh] = first_order.emplace(category, order);
    if (!fresh) it->second = std::min(it->second, order);
    entries.push_back(
        {static_cast<std::int64_t>(i), category, e["image"].get<std::string>(), e["unified"].get<std::string>()});
  }
  GPPF_CHECK(!entries.empty(), "convert emoji: ", json_path, " lists no emoji");
  std::vector<std::pair<std::int64_t, std::string>> by_order;
  for (const auto& [name, order] : first_order) by_order.emplace_back(order, name);
  std::sort(by_order.begin(), by_order.end());
  Manifest h;
  h.task = TaskType::Classification;
  std::map<std::string, std::int32_t> label;
  for (const auto& [order, name] : by_order) {
    label[name] = static_cast<std::int32_t>(h.classes.size());
    h.classes.push_back(name);
  }
  h.encoding = "raw";
  h.height = h.width = emoji.size;
  h.channels = 3;
  h.block = 64;
  const auto& bg = emoji.background;
  h.source = source_text(
      "emoji", emoji.src,
      {{"images", images},
       {"size", std::to_string(emoji.size)},
       {"channels", "3"},
       {"background",
        bg[0] == bg[1] && bg[1] == bg[2] ? std::to_string(bg[0]) : str(int(bg[0]), ",", int(bg[1]), ",", int(bg[2]))}},
      opt);
  DatasetWriter writer(opt.out, {h, opt.shard_samples, std::int64_t(128) << 20, 4, opt.force});
  std::int64_t skipped = 0;
  for (const Entry& e : entries) {
    const std::string file = images + "/" + e.image;
    try {
      GPPF_CHECK(fs::is_regular_file(file), file, ": missing (emoji.json lists it)");
      const std::vector<std::uint8_t> bytes = read_file(file);
      const Image im = decode_image(bytes.data(), bytes.size(), 4, file);
      Sample s;
      s.image = flatten(im, emoji.background, emoji.size);
      s.height = s.width = emoji.size;
      s.channels = 3;
      s.label = label.at(e.category);
      s.id = e.index;
      writer.add(carve_split(opt, "", fnv1a(e.code), false, false), std::move(s), file);
    } catch (const Error& err) {
      if (!opt.skip_bad) throw;
      ++skipped;
      log::warn("convert emoji: skipped ", err.reason());
    }
  }
  Manifest m = writer.finish();
  log::info("convert emoji: ", opt.out, ": ", entries.size() - static_cast<std::size_t>(skipped), " images, ",
            h.classes.size(), " classes", skipped ? str(", ", skipped, " skipped") : std::string());
  return m;
}

}  // namespace gppf::io
