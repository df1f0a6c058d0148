#include "io/verify.hpp"

#include <filesystem>
#include <sstream>

#include "core/error.hpp"
#include "io/checksum.hpp"
#include "io/image_codec.hpp"

namespace fs = std::filesystem;

namespace gppf::io {

VerifyReport verify_dataset(const std::string& dir, const VerifyOptions& options) {
  Dataset ds = Dataset::open(dir);
  VerifyReport r;
  r.manifest = ds.manifest();
  const Manifest& m = r.manifest;
  for (const SplitInfo& split : m.splits) {
    for (const ShardInfo& sh : split.shards) {
      const std::string path = ds.shard_path(sh);
      if (!fs::exists(path)) {
        r.problems.push_back(str("shard ", path, " is missing"));
        continue;
      }
      const auto size = static_cast<std::int64_t>(fs::file_size(path));
      if (size != sh.bytes) {
        r.problems.push_back(str("shard ", path, ": ", size, " bytes, the manifest says ", sh.bytes, " (truncated?)"));
        continue;
      }
      const std::string sum = sha256_file(path);
      if (sum != sh.sha256)
        r.problems.push_back(str("shard ", path, ": SHA-256 ", sum, " differs from the manifest's"));
      try {
        ShardReader reader(path, m, sh.count);
        std::vector<Sample> samples;
        std::vector<std::uint32_t> crc;
        for (std::int64_t start = 0; start < sh.count; start += m.block) {
          const std::int64_t n = std::min(m.block, sh.count - start);
          try {
            reader.read(start, n, samples, crc);
          } catch (const Error& e) {
            r.problems.push_back(str("shard ", path, " samples ", start, "..", start + n - 1, ": ", e.reason()));
            continue;
          }
          for (std::int64_t i = 0; i < n; ++i) {
            const std::string what = str("shard ", path, " sample ", start + i);
            try {
              GPPF_CHECK(sample_crc(samples[i]) == crc[i], what, ": CRC-32 mismatch (corrupt data)");
              validate_sample(m, samples[i], what);
              if (options.decode && !m.raw()) {
                const Image im = decode_image(samples[i].image.data(), samples[i].image.size(), m.channels, what);
                GPPF_CHECK(im.height == samples[i].height && im.width == samples[i].width, what,
                           ": decoded size differs from the stored shape");
              }
              ++r.samples_checked;
            } catch (const Error& e) {
              r.problems.push_back(e.reason());
            }
          }
        }
      } catch (const Error& e) {
        r.problems.push_back(e.reason());
      }
    }
  }
  return r;
}

std::string describe(const Manifest& m, const std::string& dir) {
  std::ostringstream os;
  os << "data set " << dir << "\n  task: " << task_name(m.task) << ", " << m.classes.size() << " classes (";
  for (std::size_t i = 0; i < m.classes.size() && i < 12; ++i) os << (i ? ", " : "") << m.classes[i];
  if (m.classes.size() > 12) os << ", ...";
  os << ")\n  images: " << m.encoding << ", ";
  if (m.height > 0)
    os << m.height << "x" << m.width;
  else
    os << "variable size";
  os << "x" << m.channels << "; fields: label" << (m.has_boxes ? ", boxes" : "") << (m.has_masks ? ", masks" : "")
     << "\n";
  if (!m.mean.empty()) {
    os << "  mean/std:";
    for (std::size_t c = 0; c < m.mean.size(); ++c) os << " " << m.mean[c] << "/" << m.std[c];
    os << "\n";
  }
  for (const SplitInfo& s : m.splits)
    os << "  " << s.name << ": " << s.count << " samples in " << s.shards.size() << " shards\n";
  if (!m.source.empty()) os << "  source: " << m.source << "\n";
  return os.str();
}

}  // namespace gppf::io
