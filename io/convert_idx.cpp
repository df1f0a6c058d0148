// IDX (MNIST, Fashion-MNIST): big-endian magic 0x00000803 for images [n, rows, cols], 0x00000801 for
// labels [n]; gzread reads both gzipped and plain files.
#include <zlib.h>

#include <algorithm>
#include <filesystem>

#include "core/error.hpp"
#include "core/log.hpp"
#include "io/convert.hpp"

namespace fs = std::filesystem;

namespace gppf::io {
namespace {

struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;
};

IdxArray read_idx(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  GPPF_CHECK(f, "cannot open IDX file ", path);
  IdxArray a;
  try {
    auto read = [&](void* dst, std::size_t n, const char* what) {
      const int got = gzread(f, dst, static_cast<unsigned>(n));
      GPPF_CHECK(got == static_cast<int>(n), "IDX file ", path, ": truncated while reading ", what, " (", got, " of ",
                 n, " bytes)");
    };
    std::uint8_t magic[4];
    read(magic, 4, "the magic number");
    GPPF_CHECK(magic[0] == 0 && magic[1] == 0 && magic[2] == 0x08 && magic[3] >= 1 && magic[3] <= 4, "IDX file ", path,
               ": bad magic (not an unsigned-byte IDX file)");
    std::int64_t n = 1;
    for (int d = 0; d < magic[3]; ++d) {
      std::uint8_t b[4];
      read(b, 4, "the dimensions");
      const std::int64_t v = (std::int64_t(b[0]) << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
      a.dims.push_back(v);
      n *= v;
    }
    a.data.resize(static_cast<std::size_t>(n));
    for (std::size_t off = 0; off < a.data.size(); off += std::size_t(1) << 28)
      read(a.data.data() + off, std::min(a.data.size() - off, std::size_t(1) << 28), "the data");
    std::uint8_t extra;
    GPPF_CHECK(gzread(f, &extra, 1) == 0, "IDX file ", path, ": trailing bytes after ", n, " values");
  } catch (...) {
    gzclose(f);
    throw;
  }
  gzclose(f);
  return a;
}

// The file in `dir` whose name starts with one of `prefixes` and contains `kind`.
std::string find_file(const std::string& dir, const std::vector<std::string>& prefixes, const char* kind) {
  std::vector<std::string> hits;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    for (const std::string& p : prefixes)
      if (name.rfind(p, 0) == 0 && name.find(kind) != std::string::npos) hits.push_back(e.path().string());
  }
  std::sort(hits.begin(), hits.end());
  return hits.empty() ? std::string() : hits.front();
}

}  // namespace

Manifest convert_idx(const IdxOptions& idx, const ConvertOptions& opt) {
  GPPF_CHECK(fs::is_directory(idx.src), "convert idx: source folder ", idx.src, " does not exist");
  struct Part {
    std::string split, images, labels;
  };
  std::vector<Part> parts;
  const std::vector<std::pair<std::string, std::vector<std::string>>> layout = {{"train", {"train"}},
                                                                                {"test", {"t10k", "test"}}};
  for (const auto& [split, prefixes] : layout) {
    Part p{split, find_file(idx.src, prefixes, "images"), find_file(idx.src, prefixes, "labels")};
    if (p.images.empty() && p.labels.empty()) continue;
    GPPF_CHECK(!p.images.empty() && !p.labels.empty(), "convert idx: ", idx.src, " has ",
               p.images.empty() ? "labels" : "images", " but no ", p.images.empty() ? "images" : "labels", " for ",
               split);
    parts.push_back(p);
  }
  GPPF_CHECK(!parts.empty(), "convert idx: no train-images*/t10k-images* IDX files in ", idx.src);

  std::vector<IdxArray> images, labels;
  int max_label = 0;
  for (const Part& p : parts) {
    images.push_back(read_idx(p.images));
    labels.push_back(read_idx(p.labels));
    const IdxArray& im = images.back();
    const IdxArray& lb = labels.back();
    GPPF_CHECK(im.dims.size() == 3 || im.dims.size() == 4, "IDX file ", p.images, ": expected [n, rows, cols(, ch)]");
    GPPF_CHECK(lb.dims.size() == 1 && lb.dims[0] == im.dims[0], "IDX files ", p.images, " and ", p.labels,
               ": image and label counts differ");
    GPPF_CHECK(im.dims == images.front().dims ||
                   (im.dims.size() == images.front().dims.size() &&
                    std::equal(im.dims.begin() + 1, im.dims.end(), images.front().dims.begin() + 1)),
               "IDX file ", p.images, ": image size differs from ", parts.front().images);
    for (std::uint8_t v : lb.data) max_label = std::max<int>(max_label, v);
  }
  const auto& d0 = images.front().dims;
  Manifest h;
  h.task = TaskType::Classification;
  h.classes = idx.classes;
  if (h.classes.empty())
    for (int c = 0; c <= max_label; ++c) h.classes.push_back(std::to_string(c));
  GPPF_CHECK(static_cast<int>(h.classes.size()) > max_label, "convert idx: labels go up to ", max_label, " but only ",
             h.classes.size(), " class names were given");
  h.encoding = "raw";
  h.height = static_cast<int>(d0[1]);
  h.width = static_cast<int>(d0[2]);
  h.channels = d0.size() == 4 ? static_cast<int>(d0[3]) : 1;
  h.block = 256;
  GPPF_CHECK(h.channels == 1 || h.channels == 3 || h.channels == 4, "IDX file ", parts.front().images, ": ", h.channels,
             " channels per pixel (1, 3 or 4)");
  std::string class_list;
  for (const std::string& c : idx.classes) class_list += (class_list.empty() ? "" : ",") + c;
  h.source = source_text("idx", idx.src, {{"classes", class_list}}, opt);
  DatasetWriter writer(opt.out, {h, opt.shard_samples, std::int64_t(128) << 20, 4, opt.force});
  const std::size_t px = static_cast<std::size_t>(h.height) * h.width * h.channels;
  const bool has_test = std::any_of(parts.begin(), parts.end(), [](const Part& p) { return p.split == "test"; });
  for (std::size_t p = 0; p < parts.size(); ++p) {
    const auto n = images[p].dims[0];
    for (std::int64_t i = 0; i < n; ++i) {
      Sample s;
      s.image.assign(images[p].data.begin() + px * i, images[p].data.begin() + px * (i + 1));
      s.label = labels[p].data[static_cast<std::size_t>(i)];
      s.id = i;
      // IDX sources have train and test; val comes out of train (keyed by the index in its file).
      const std::string split = carve_split(opt, parts[p].split, static_cast<std::uint64_t>(i), false, has_test);
      writer.add(split, std::move(s), str(parts[p].images, " sample ", i));
    }
  }
  Manifest m = writer.finish();
  log::info("convert idx: ", opt.out, ": ", h.height, "x", h.width, "x", h.channels, ", ", h.classes.size(),
            " classes");
  return m;
}

}  // namespace gppf::io
