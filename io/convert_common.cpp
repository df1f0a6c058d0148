#include <algorithm>
#include <charconv>

#include "core/error.hpp"
#include "io/convert.hpp"
#include "io/random.hpp"

namespace gppf::io {

std::string derive_split(std::uint64_t seed, std::int64_t index, double val_fraction, double test_fraction) {
  GPPF_CHECK(val_fraction >= 0 && val_fraction < 1 && test_fraction >= 0 && test_fraction < 1,
             "convert: --val-fraction ", val_fraction, " and --test-fraction ", test_fraction, " must be in [0, 1)");
  Rng rng(hash_seed({seed, static_cast<std::uint64_t>(index), 0x5a17ULL}));
  const double u = rng.uniform();
  if (u < test_fraction) return "test";
  // val is a fraction of what test left, so that adding a test split does not shrink val's share
  if ((u - test_fraction) / (1 - test_fraction) < val_fraction) return "val";
  return "train";
}

std::string carve_split(const ConvertOptions& opt, const std::string& source_split, std::uint64_t key,
                        bool source_has_val, bool source_has_test) {
  if (!source_split.empty() && source_split != "train") return source_split;
  return derive_split(opt.seed, static_cast<std::int64_t>(key), source_has_val ? 0.0 : opt.val_fraction,
                      source_has_test ? 0.0 : opt.test_fraction);
}

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::vector<int> accepted_channels(const std::string& format) {
  if (format == "imagefolder" || format == "coco") return {1, 3, 4};  // 4 keeps alpha (cut-outs)
  if (format == "canvas") return {1, 3};                              // scenes are opaque
  if (format == "emoji") return {3};                                  // composited RGB
  return {};                                                          // idx: the files' own channels
}

std::string channels_text(const std::string& format) {
  const std::vector<int> ok = accepted_channels(format);
  std::string list;
  for (std::size_t i = 0; i < ok.size(); ++i)
    list += (i == 0 ? "" : i + 1 == ok.size() ? " or " : ", ") + std::to_string(ok[i]);
  return list;
}

void check_channels(const std::string& format, int channels) {
  const std::vector<int> ok = accepted_channels(format);
  if (std::find(ok.begin(), ok.end(), channels) != ok.end()) return;
  GPPF_THROW("convert ", format, ": --channels ", channels,
             ok.empty() ? std::string(" (idx takes the channels from its files; leave --channels out)")
                        : str(" (", format, " accepts ", channels_text(format), ")"));
}

int parse_background(const std::string& value) {
  if (value == "white") return 255;
  if (value == "black") return 0;
  int v = -1;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  GPPF_CHECK(ec == std::errc() && end == value.data() + value.size() && v >= 0 && v <= 255, "convert: --background '",
             value, "' (white, black or a grey level 0..255)");
  return v;
}

std::string number_text(double v) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : str(v);
}

std::string source_text(const std::string& format, const std::string& src,
                        const std::vector<std::pair<std::string, std::string>>& options, const ConvertOptions& opt) {
  const auto quoted = [](const std::string& v) {
    if (!v.empty() && v.find_first_of(" \t\n\"\\") == std::string::npos) return v;
    std::string q = "\"";
    for (char c : v) {
      if (c == '"' || c == '\\') q += '\\';
      q += c;
    }
    return q + "\"";
  };
  std::string s = format + ":" + quoted(src);
  const std::vector<std::pair<std::string, std::string>> common = {{"seed", std::to_string(opt.seed)},
                                                                   {"val-fraction", number_text(opt.val_fraction)},
                                                                   {"test-fraction", number_text(opt.test_fraction)},
                                                                   {"shard-samples", std::to_string(opt.shard_samples)},
                                                                   {"on-error", opt.skip_bad ? "skip" : "error"}};
  for (const auto* list : {&options, &common})
    for (const auto& [key, value] : *list) s += " " + key + "=" + quoted(value);
  return s;
}

std::vector<std::uint8_t> flatten_transparency(std::vector<std::uint8_t> bytes, int channels, int background,
                                               const std::string& what, Image& decoded) {
  GPPF_CHECK(background >= 0 && background <= 255, what, ": background ", background, " (0..255)");
  if (channels == 4) {
    decoded = decode_image(bytes.data(), bytes.size(), 4, what);
    return bytes;
  }
  // The file's own channels: 4 whenever it has transparency (gray+alpha and tRNS included).
  Image im = decode_image(bytes.data(), bytes.size(), 0, what);
  if (im.channels != 4) {
    decoded = im.channels == channels ? std::move(im) : decode_image(bytes.data(), bytes.size(), channels, what);
    return bytes;
  }
  // Decoding RGBA into fewer channels would leave transparent pixels to the decoder (libpng: black).
  const std::size_t n = static_cast<std::size_t>(im.height) * im.width;
  Image rgb{im.height, im.width, 3, std::vector<std::uint8_t>(n * 3)};
  const auto bg = static_cast<unsigned>(background);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* p = im.pixels.data() + i * 4;
    for (int k = 0; k < 3; ++k)
      rgb.pixels[i * 3 + k] = static_cast<std::uint8_t>((p[k] * p[3] + bg * (255u - p[3]) + 127) / 255);
  }
  std::vector<std::uint8_t> out = encode_png(rgb);
  decoded = channels == 3 ? std::move(rgb) : decode_image(out.data(), out.size(), channels, what);
  return out;
}

}  // namespace gppf::io

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "io/file_util.hpp"

namespace gppf::io {

std::vector<std::string> list_images(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (ext == ".png" || ext == ".jpg" || ext == ".jpeg") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  // A folder opens as a stream, and reading it throws std::ios_base::failure, not our Error. The
  // error_code form: a name too long for the file system threw std::filesystem_error (fuzzing).
  std::error_code ec;
  const bool regular = std::filesystem::is_regular_file(path, ec);
  GPPF_CHECK(!ec || ec == std::errc::no_such_file_or_directory, "cannot read ", path, ": ", ec.message());
  GPPF_CHECK(regular, "cannot read ", path, ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  GPPF_CHECK(in, "cannot read ", path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace gppf::io
