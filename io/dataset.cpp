#include "io/dataset.hpp"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.hpp"
#include "core/log.hpp"
#include "io/checksum.hpp"
#include "io/image_codec.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace gppf::io {

namespace {
// An integer field; nlohmann's get<int>() casts a float as it is, undefined out of the type's range
// (a manifest with "count": 5e106 was).
template <class T>
T integer(const json& v) {
  if (!v.is_number_integer()) throw json::type_error::create(302, "expected an integer, got " + v.dump(), &v);
  return v.get<T>();
}
}  // namespace

const char* task_name(TaskType t) {
  switch (t) {
    case TaskType::Classification: return "classification";
    case TaskType::Detection: return "detection";
    case TaskType::Segmentation: return "segmentation";
  }
  return "?";
}

TaskType parse_task(const std::string& name) {
  if (name == "classification") return TaskType::Classification;
  if (name == "detection") return TaskType::Detection;
  if (name == "segmentation") return TaskType::Segmentation;
  GPPF_THROW("unknown task type '", name, "' (classification, detection or segmentation)");
}

// ---- manifest ----------------------------------------------------------------------
const SplitInfo* Manifest::find_split(const std::string& name) const {
  for (const auto& s : splits)
    if (s.name == name) return &s;
  return nullptr;
}

const SplitInfo& Manifest::split(const std::string& name, const std::string& where) const {
  if (const SplitInfo* s = find_split(name)) return *s;
  std::string have;
  for (const auto& s : splits) have += (have.empty() ? "" : ", ") + s.name;
  GPPF_THROW(where, " has no split '", name, "' (it has: ", have, ")");
}

std::string Manifest::to_json() const {
  json j;
  j["format"] = "gppf-dataset";
  j["version"] = version;
  j["task"] = task_name(task);
  j["classes"] = classes;
  j["image"] = {{"encoding", encoding}, {"height", height}, {"width", width}, {"channels", channels}};
  j["fields"] = {{"label", true}, {"boxes", has_boxes}, {"masks", has_masks}};
  j["block"] = block;
  if (!mean.empty()) j["stats"] = {{"mean", mean}, {"std", std}};
  j["source"] = source;
  json sp = json::object();
  for (const auto& s : splits) {
    json shards = json::array();
    for (const auto& sh : s.shards)
      shards.push_back({{"file", sh.file}, {"count", sh.count}, {"bytes", sh.bytes}, {"sha256", sh.sha256}});
    sp[s.name] = {{"count", s.count}, {"shards", shards}};
  }
  j["splits"] = sp;
  return j.dump(2) + "\n";
}

Manifest Manifest::from_json(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& e) {
    GPPF_THROW(where, ": not valid JSON (", e.what(), ")");
  }
  Manifest m;
  try {
    GPPF_CHECK(j.value("format", "") == "gppf-dataset", where,
               ": not a GPPF data set manifest (format != gppf-dataset)");
    m.version = integer<int>(j.at("version"));
    GPPF_CHECK(m.version == kFormatVersion, where, ": format version ", m.version, ", this build reads version ",
               kFormatVersion);
    m.task = parse_task(j.at("task").get<std::string>());
    m.classes = j.at("classes").get<std::vector<std::string>>();
    GPPF_CHECK(!m.classes.empty(), where, ": empty class list");
    const json& im = j.at("image");
    m.encoding = im.at("encoding").get<std::string>();
    GPPF_CHECK(m.encoding == "raw" || m.encoding == "encoded", where, ": image encoding '", m.encoding,
               "' (raw or encoded)");
    m.height = integer<int>(im.at("height"));
    m.width = integer<int>(im.at("width"));
    m.channels = integer<int>(im.at("channels"));
    GPPF_CHECK(m.channels == 1 || m.channels == 3 || m.channels == 4, where, ": ", m.channels, " channels");
    GPPF_CHECK(m.height >= 0 && m.width >= 0, where, ": negative image size");
    GPPF_CHECK(!m.raw() || (m.height > 0 && m.width > 0), where, ": raw images need a fixed height and width");
    const json& f = j.at("fields");
    m.has_boxes = f.at("boxes").get<bool>();
    m.has_masks = f.at("masks").get<bool>();
    m.block = integer<std::int64_t>(j.at("block"));
    GPPF_CHECK(m.block > 0, where, ": block must be positive");
    if (j.contains("stats")) {
      m.mean = j["stats"].at("mean").get<std::vector<double>>();
      m.std = j["stats"].at("std").get<std::vector<double>>();
      GPPF_CHECK(m.mean.size() == static_cast<std::size_t>(m.channels) && m.std.size() == m.mean.size(), where,
                 ": stats need one mean and std per channel");
    }
    m.source = j.value("source", "");
    for (const auto& [name, s] : j.at("splits").items()) {
      SplitInfo si;
      si.name = name;
      si.count = integer<std::int64_t>(s.at("count"));
      std::int64_t total = 0;
      for (const auto& sh : s.at("shards")) {
        ShardInfo info{sh.at("file").get<std::string>(), integer<std::int64_t>(sh.at("count")),
                       integer<std::int64_t>(sh.at("bytes")), sh.at("sha256").get<std::string>()};
        GPPF_CHECK(info.file.find("..") == std::string::npos && !info.file.empty() && info.file[0] != '/', where,
                   ": shard file name '", info.file, "' must stay inside the data set folder");
        GPPF_CHECK(info.count >= 0, where, ": negative count for shard ", info.file);
        total += info.count;
        si.shards.push_back(std::move(info));
      }
      GPPF_CHECK(total == si.count, where, ": split ", name, " counts ", si.count, " samples but its shards hold ",
                 total);
      m.splits.push_back(std::move(si));
    }
  } catch (const gppf::Error&) {
    throw;
  } catch (const std::exception& e) {
    GPPF_THROW(where, ": wrong manifest schema (", e.what(), ")");
  }
  return m;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  GPPF_CHECK(in, "cannot read ", path);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

void write_text_file(const std::string& path, const std::string& text) {
  const std::string tmp = str(path, ".tmp-", ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    GPPF_CHECK(out, "cannot write ", tmp);
    out << text;
    out.close();
    GPPF_CHECK(out, "write to ", tmp, " failed (disk full?)");
  }
  fs::rename(tmp, path);
}

Dataset Dataset::open(const std::string& dir) {
  GPPF_CHECK(fs::is_directory(dir), "data set ", dir, " does not exist (run scripts/fetch-data.sh or gppf convert)");
  const std::string mpath = dir + "/manifest.json";
  GPPF_CHECK(fs::exists(mpath), "data set ", dir, " has no manifest.json (not converted, or a half-written copy)");
  Dataset d;
  d.m_dir = dir;
  d.m_manifest = Manifest::from_json(read_text_file(mpath), mpath);
  return d;
}

// ---- samples -----------------------------------------------------------------------
void validate_sample(const Manifest& m, const Sample& s, const std::string& what) {
  const auto ncls = static_cast<std::int32_t>(m.classes.size());
  if (m.raw()) {
    GPPF_CHECK(s.height == m.height && s.width == m.width && s.channels == m.channels, what, ": image ", s.height, "x",
               s.width, "x", s.channels, ", the data set stores ", m.height, "x", m.width, "x", m.channels);
    GPPF_CHECK(s.image.size() == static_cast<std::size_t>(m.height) * m.width * m.channels, what, ": ", s.image.size(),
               " image bytes for ", m.height, "x", m.width, "x", m.channels);
  } else {
    GPPF_CHECK(sniff_image(s.image.data(), s.image.size()) != ImageFormat::Unknown, what,
               ": image bytes are neither PNG nor JPEG");
    GPPF_CHECK(s.height > 0 && s.width > 0 && s.channels == m.channels, what, ": image shape ", s.height, "x", s.width,
               "x", s.channels, " (data set channels ", m.channels, ")");
  }
  if (m.task == TaskType::Classification)
    GPPF_CHECK(s.label >= 0 && s.label < ncls, what, ": label ", s.label, " outside [0, ", ncls, ")");
  else
    GPPF_CHECK(s.label >= -1 && s.label < ncls, what, ": label ", s.label, " outside [-1, ", ncls, ")");
  GPPF_CHECK(m.has_boxes || s.boxes.empty(), what, ": boxes given but the data set has none");
  for (const Box& b : s.boxes) {
    const bool finite = std::isfinite(b.x1) && std::isfinite(b.y1) && std::isfinite(b.x2) && std::isfinite(b.y2);
    GPPF_CHECK(finite, what, ": box with NaN or infinite coordinates");
    GPPF_CHECK(b.x1 >= 0 && b.y1 >= 0 && b.x1 < b.x2 && b.y1 < b.y2 && b.x2 <= s.width && b.y2 <= s.height, what,
               ": box (", b.x1, ", ", b.y1, ", ", b.x2, ", ", b.y2, ") outside the ", s.width, "x", s.height,
               " image or empty");
    GPPF_CHECK(b.cls >= 0 && b.cls < ncls, what, ": box class ", b.cls, " outside [0, ", ncls, ")");
  }
  if (!m.has_masks) {
    GPPF_CHECK(s.mask.empty(), what, ": a mask given but the data set has none");
  } else if (m.raw()) {
    GPPF_CHECK(s.mask.size() == static_cast<std::size_t>(s.height) * s.width, what, ": mask of ", s.mask.size(),
               " bytes for a ", s.width, "x", s.height, " image");
    for (std::uint8_t v : s.mask)
      GPPF_CHECK(v <= ncls || v == 255, what, ": mask value ", int(v), " is no class id (0..", ncls, " or 255)");
  } else {
    GPPF_CHECK(sniff_image(s.mask.data(), s.mask.size()) == ImageFormat::Png, what, ": mask bytes are not a PNG");
  }
}

std::uint32_t sample_crc(const Sample& s) {
  std::uint32_t c = crc32(0, s.image.data(), s.image.size());
  c = crc32(c, &s.label, sizeof s.label);
  for (const Box& b : s.boxes) {
    const float v[4] = {b.x1, b.y1, b.x2, b.y2};
    c = crc32(c, v, sizeof v);
    c = crc32(c, &b.cls, sizeof b.cls);
  }
  c = crc32(c, s.mask.data(), s.mask.size());
  return c;
}

// ---- writer ------------------------------------------------------------------------
struct DatasetWriter::SplitState {
  std::string name;
  std::vector<Sample> pending;
  std::int64_t pending_bytes = 0;
  SplitInfo info;
};

DatasetWriter::DatasetWriter(std::string out_dir, Options options)
    : m_out(std::move(out_dir)), m_opt(std::move(options)) {
  while (m_out.size() > 1 && m_out.back() == '/') m_out.pop_back();
  GPPF_CHECK(!m_out.empty(), "convert: empty output path");
  if (fs::exists(m_out) && !m_opt.force) GPPF_THROW("convert: ", m_out, " already exists; pass --force to replace it");
  const Manifest& h = m_opt.header;
  GPPF_CHECK(!h.classes.empty(), "convert: no class names");
  GPPF_CHECK(!h.raw() || (h.height > 0 && h.width > 0), "convert: raw images need a fixed size");
  GPPF_CHECK(h.block > 0 && m_opt.shard_samples > 0, "convert: block and shard size must be positive");
  m_tmp = str(m_out, ".tmp-", ::getpid());
  std::error_code ec;
  fs::remove_all(m_tmp, ec);
  fs::create_directories(m_tmp);
  m_sum.assign(static_cast<std::size_t>(h.channels), 0.0);
  m_sumsq.assign(static_cast<std::size_t>(h.channels), 0.0);
}

DatasetWriter::~DatasetWriter() {
  if (m_done) return;
  std::error_code ec;
  fs::remove_all(m_tmp, ec);
}

DatasetWriter::SplitState& DatasetWriter::state(const std::string& split) {
  for (auto& s : m_splits)
    if (s->name == split) return *s;
  GPPF_CHECK(!split.empty() && split.find_first_of("/. ") == std::string::npos, "convert: bad split name '", split,
             "'");
  m_splits.push_back(std::make_unique<SplitState>());
  m_splits.back()->name = split;
  m_splits.back()->info.name = split;
  return *m_splits.back();
}

std::int64_t DatasetWriter::count(const std::string& split) const {
  for (const auto& s : m_splits)
    if (s->name == split) return s->info.count + static_cast<std::int64_t>(s->pending.size());
  return 0;
}

void DatasetWriter::add(const std::string& split, Sample sample, const std::string& what) {
  GPPF_CHECK(!m_done, "convert: add after finish");
  const Manifest& h = m_opt.header;
  if (h.raw() && sample.height == 0) {
    sample.height = h.height;
    sample.width = h.width;
    sample.channels = h.channels;
  }
  validate_sample(h, sample, what);
  // Normalisation statistics over the train split (pixel/255); encoded images: the first 2000.
  if (split == "train" && (h.raw() || m_stat_pixels < std::int64_t(2000) * 224 * 224)) {
    Image decoded;
    const std::uint8_t* px = sample.image.data();
    std::size_t n = sample.image.size();
    if (!h.raw()) {
      decoded = decode_image(sample.image.data(), sample.image.size(), h.channels, what);
      px = decoded.pixels.data();
      n = decoded.pixels.size();
    }
    const auto c = static_cast<std::size_t>(h.channels);
    for (std::size_t i = 0; i < n; ++i) {
      const double v = px[i] / 255.0;
      m_sum[i % c] += v;
      m_sumsq[i % c] += v * v;
    }
    m_stat_pixels += static_cast<std::int64_t>(n / c);
  }
  SplitState& s = state(split);
  s.pending_bytes += static_cast<std::int64_t>(sample.image.size() + sample.mask.size());
  s.pending.push_back(std::move(sample));
  if (static_cast<std::int64_t>(s.pending.size()) >= m_opt.shard_samples || s.pending_bytes >= m_opt.shard_bytes)
    flush(s);
}

void DatasetWriter::flush(SplitState& s) {
  if (s.pending.empty()) return;
  const Manifest& h = m_opt.header;
  const auto n = static_cast<std::int64_t>(s.pending.size());
  ShardInfo info;
  info.file =
      str(s.name, "-", std::string(5 - std::min<std::size_t>(5, std::to_string(s.info.shards.size()).size()), '0'),
          s.info.shards.size(), ".h5");
  info.count = n;
  const std::string path = m_tmp + "/" + info.file;
  {
    h5::File f = h5::File::create(path);
    f.set_attr("format", std::string("gppf-shard"));
    f.set_attr("version", std::int64_t(kFormatVersion));
    f.set_attr("split", s.name);
    f.set_attr("shard", static_cast<std::int64_t>(s.info.shards.size()));
    f.set_attr("count", n);
    f.set_attr("encoding", h.encoding);
    std::vector<std::int32_t> labels;
    std::vector<std::int64_t> ids;
    std::vector<std::uint32_t> crcs;
    for (const Sample& x : s.pending) {
      labels.push_back(x.label);
      ids.push_back(x.id);
      crcs.push_back(sample_crc(x));
    }
    f.write("labels", {n}, labels);
    f.write("ids", {n}, ids);
    f.write("crc32", {n}, crcs);
    h5::Group::CreateOptions chunked{{h.block, h.height, h.width, h.channels}, m_opt.deflate};
    if (h.raw()) {
      std::vector<std::uint8_t> px;
      px.reserve(static_cast<std::size_t>(n) * h.height * h.width * h.channels);
      for (const Sample& x : s.pending) px.insert(px.end(), x.image.begin(), x.image.end());
      f.write("images", {n, h.height, h.width, h.channels}, px, chunked);
    } else {
      std::vector<std::uint8_t> bytes;
      std::vector<std::int64_t> offsets{0};
      std::vector<std::int32_t> shapes;
      for (const Sample& x : s.pending) {
        bytes.insert(bytes.end(), x.image.begin(), x.image.end());
        offsets.push_back(static_cast<std::int64_t>(bytes.size()));
        shapes.insert(shapes.end(), {x.height, x.width, x.channels});
      }
      f.write("image_bytes", {static_cast<std::int64_t>(bytes.size())}, bytes);
      f.write("image_offsets", {n + 1}, offsets);
      f.write("image_shapes", {n, 3}, shapes);
    }
    if (h.has_boxes) {
      std::vector<float> coords;
      std::vector<std::int32_t> classes;
      std::vector<std::int64_t> offsets{0};
      for (const Sample& x : s.pending) {
        for (const Box& b : x.boxes) {
          coords.insert(coords.end(), {b.x1, b.y1, b.x2, b.y2});
          classes.push_back(b.cls);
        }
        offsets.push_back(static_cast<std::int64_t>(classes.size()));
      }
      const auto m = static_cast<std::int64_t>(classes.size());
      f.write("boxes", {m, 4}, coords);
      f.write("box_classes", {m}, classes);
      f.write("box_offsets", {n + 1}, offsets);
    }
    if (h.has_masks) {
      std::vector<std::uint8_t> bytes;
      std::vector<std::int64_t> offsets{0};
      for (const Sample& x : s.pending) {
        bytes.insert(bytes.end(), x.mask.begin(), x.mask.end());
        offsets.push_back(static_cast<std::int64_t>(bytes.size()));
      }
      if (h.raw()) {
        f.write("masks", {n, h.height, h.width}, bytes, {{h.block, h.height, h.width}, m_opt.deflate});
      } else {
        f.write("mask_bytes", {static_cast<std::int64_t>(bytes.size())}, bytes);
        f.write("mask_offsets", {n + 1}, offsets);
      }
    }
    f.close();
  }
  info.bytes = static_cast<std::int64_t>(fs::file_size(path));
  info.sha256 = sha256_file(path);
  s.info.count += n;
  s.info.shards.push_back(std::move(info));
  s.pending.clear();
  s.pending_bytes = 0;
}

Manifest DatasetWriter::finish() {
  GPPF_CHECK(!m_done, "convert: finish called twice");
  Manifest m = m_opt.header;
  m.splits.clear();
  for (auto& s : m_splits) {
    flush(*s);
    m.splits.push_back(s->info);
  }
  GPPF_CHECK(!m.splits.empty(), "convert: no samples were written to ", m_out);
  if (m_stat_pixels > 0) {
    m.mean.clear();
    m.std.clear();
    for (std::size_t c = 0; c < m_sum.size(); ++c) {
      const double mu = m_sum[c] / static_cast<double>(m_stat_pixels);
      const double var = std::max(0.0, m_sumsq[c] / static_cast<double>(m_stat_pixels) - mu * mu);
      m.mean.push_back(mu);
      m.std.push_back(std::max(1e-3, std::sqrt(var)));
    }
  }
  write_text_file(m_tmp + "/manifest.json", m.to_json());
  // Swap into place: the old data set (with --force) goes only once the new one is complete.
  std::string old;
  if (fs::exists(m_out)) {
    GPPF_CHECK(m_opt.force, "convert: ", m_out, " appeared while converting; pass --force to replace it");
    old = str(m_out, ".old-", ::getpid());
    fs::rename(m_out, old);
  }
  fs::rename(m_tmp, m_out);
  m_done = true;
  if (!old.empty()) {
    std::error_code ec;
    fs::remove_all(old, ec);
  }
  return m;
}

// ---- reader ------------------------------------------------------------------------
ShardReader::ShardReader(const std::string& path, const Manifest& manifest, std::int64_t expected_count)
    : m_path(path), m_manifest(&manifest) {
  GPPF_CHECK(fs::exists(path), "shard ", path, " is missing");
  m_file = h5::File::open(path);
  auto l = h5::lock();
  try {
    GPPF_CHECK(m_file.has_attr("format") && m_file.attr_string("format") == "gppf-shard", "shard ", path,
               ": wrong schema (no format=gppf-shard attribute)");
    m_count = m_file.attr_int("count");
    GPPF_CHECK(m_count == expected_count, "shard ", path, ": holds ", m_count, " samples, the manifest says ",
               expected_count);
    const auto need = [&](const char* name, std::int64_t rows) {
      GPPF_CHECK(m_file.has(name), "shard ", path, ": wrong schema (no dataset '", name, "')");
      const auto dims = m_file.open_dataset(name).dims();
      GPPF_CHECK(!dims.empty() && (rows < 0 || dims[0] == rows), "shard ", path, ": dataset '", name,
                 "' has the wrong shape");
      return dims;
    };
    // An offsets dataset is read whole: its shape is checked first, or a damaged one claiming 2^48
    // entries would be allocated (fuzz).
    const auto offsets = [&](const char* name) {
      const auto dims = need(name, m_count + 1);
      GPPF_CHECK(dims.size() == 1, "shard ", path, ": dataset '", name, "' has the wrong shape");
      return m_file.read<std::int64_t>(name);
    };
    std::int64_t image_rows = 0, mask_rows = 0, box_rows = 0;
    need("labels", m_count);
    need("ids", m_count);
    need("crc32", m_count);
    if (manifest.raw()) {
      const auto d = need("images", m_count);
      GPPF_CHECK(d.size() == 4 && d[1] == manifest.height && d[2] == manifest.width && d[3] == manifest.channels,
                 "shard ", path, ": images are not ", manifest.height, "x", manifest.width, "x", manifest.channels);
      if (manifest.has_masks) {
        const auto dm = need("masks", m_count);
        GPPF_CHECK(dm.size() == 3 && dm[1] == manifest.height && dm[2] == manifest.width, "shard ", path,
                   ": masks have the wrong shape");
      }
    } else {
      image_rows = need("image_bytes", -1)[0];
      need("image_shapes", m_count);
      m_image_offsets = offsets("image_offsets");
      if (manifest.has_masks) {
        mask_rows = need("mask_bytes", -1)[0];
        m_mask_offsets = offsets("mask_offsets");
      }
    }
    if (manifest.has_boxes) {
      box_rows = need("boxes", -1)[0];
      need("box_classes", box_rows);
      m_box_offsets = offsets("box_offsets");
    }
    // Offsets from 0 up to exactly the rows of the data they index: a damaged last offset would make
    // read() allocate and read whatever it claims (a fuzzed shard: 2^58 boxes).
    const auto check_offsets = [&](const std::vector<std::int64_t>& o, const char* what, std::int64_t rows,
                                   const char* data) {
      GPPF_CHECK(static_cast<std::int64_t>(o.size()) == m_count + 1, "shard ", path, ": ", what, " has ", o.size(),
                 " entries for ", m_count, " samples");
      for (std::size_t i = 1; i < o.size(); ++i)
        GPPF_CHECK(o[i] >= o[i - 1] && o[0] == 0, "shard ", path, ": ", what, " not increasing at sample ", i - 1);
      GPPF_CHECK(o.back() == rows, "shard ", path, ": ", what, " ends at ", o.back(), " but '", data, "' has ", rows,
                 " rows");
    };
    if (!manifest.raw()) check_offsets(m_image_offsets, "image_offsets", image_rows, "image_bytes");
    if (!manifest.raw() && manifest.has_masks) check_offsets(m_mask_offsets, "mask_offsets", mask_rows, "mask_bytes");
    if (manifest.has_boxes) check_offsets(m_box_offsets, "box_offsets", box_rows, "boxes");
  } catch (const gppf::Error& e) {
    if (e.reason().find(path) != std::string::npos) throw;
    GPPF_THROW("shard ", path, ": ", e.reason());
  }
}

void ShardReader::read(std::int64_t start, std::int64_t count, std::vector<Sample>& out,
                       std::vector<std::uint32_t>& crc) const {
  const Manifest& m = *m_manifest;
  GPPF_CHECK(start >= 0 && count >= 0 && start + count <= m_count, "shard ", m_path, ": samples [", start, ", ",
             start + count, ") out of range");
  out.assign(static_cast<std::size_t>(count), Sample{});
  crc.assign(static_cast<std::size_t>(count), 0);
  if (count == 0) return;
  auto l = h5::lock();
  std::vector<std::int32_t> labels(static_cast<std::size_t>(count));
  std::vector<std::int64_t> ids(static_cast<std::size_t>(count));
  m_file.open_dataset("labels").read_rows(start, count, h5::Type::I32, labels.data());
  m_file.open_dataset("ids").read_rows(start, count, h5::Type::I64, ids.data());
  m_file.open_dataset("crc32").read_rows(start, count, h5::Type::U32, crc.data());
  for (std::int64_t i = 0; i < count; ++i) {
    out[i].label = labels[i];
    out[i].id = ids[i];
  }
  if (m.raw()) {
    const std::size_t px = static_cast<std::size_t>(m.height) * m.width * m.channels;
    std::vector<std::uint8_t> buf(px * count);
    m_file.open_dataset("images").read_rows(start, count, h5::Type::U8, buf.data());
    for (std::int64_t i = 0; i < count; ++i) {
      out[i].image.assign(buf.begin() + px * i, buf.begin() + px * (i + 1));
      out[i].height = m.height;
      out[i].width = m.width;
      out[i].channels = m.channels;
    }
    if (m.has_masks) {
      const std::size_t mp = static_cast<std::size_t>(m.height) * m.width;
      buf.resize(mp * count);
      m_file.open_dataset("masks").read_rows(start, count, h5::Type::U8, buf.data());
      for (std::int64_t i = 0; i < count; ++i) out[i].mask.assign(buf.begin() + mp * i, buf.begin() + mp * (i + 1));
    }
  } else {
    const std::int64_t b0 = m_image_offsets[start], b1 = m_image_offsets[start + count];
    std::vector<std::uint8_t> buf(static_cast<std::size_t>(b1 - b0));
    m_file.open_dataset("image_bytes").read_rows(b0, b1 - b0, h5::Type::U8, buf.data());
    std::vector<std::int32_t> shapes(static_cast<std::size_t>(count) * 3);
    m_file.open_dataset("image_shapes").read_rows(start, count, h5::Type::I32, shapes.data());
    for (std::int64_t i = 0; i < count; ++i) {
      out[i].image.assign(buf.begin() + (m_image_offsets[start + i] - b0),
                          buf.begin() + (m_image_offsets[start + i + 1] - b0));
      out[i].height = shapes[3 * i];
      out[i].width = shapes[3 * i + 1];
      out[i].channels = shapes[3 * i + 2];
    }
    if (m.has_masks) {
      const std::int64_t c0 = m_mask_offsets[start], c1 = m_mask_offsets[start + count];
      buf.resize(static_cast<std::size_t>(c1 - c0));
      m_file.open_dataset("mask_bytes").read_rows(c0, c1 - c0, h5::Type::U8, buf.data());
      for (std::int64_t i = 0; i < count; ++i)
        out[i].mask.assign(buf.begin() + (m_mask_offsets[start + i] - c0),
                           buf.begin() + (m_mask_offsets[start + i + 1] - c0));
    }
  }
  if (m.has_boxes) {
    const std::int64_t k0 = m_box_offsets[start], k1 = m_box_offsets[start + count];
    std::vector<float> coords(static_cast<std::size_t>(k1 - k0) * 4);
    std::vector<std::int32_t> classes(static_cast<std::size_t>(k1 - k0));
    m_file.open_dataset("boxes").read_rows(k0, k1 - k0, h5::Type::F32, coords.data());
    m_file.open_dataset("box_classes").read_rows(k0, k1 - k0, h5::Type::I32, classes.data());
    for (std::int64_t i = 0; i < count; ++i)
      for (std::int64_t k = m_box_offsets[start + i]; k < m_box_offsets[start + i + 1]; ++k) {
        const std::size_t j = static_cast<std::size_t>(k - k0);
        out[i].boxes.push_back({coords[4 * j], coords[4 * j + 1], coords[4 * j + 2], coords[4 * j + 3], classes[j]});
      }
  }
}

}  // namespace gppf::io
