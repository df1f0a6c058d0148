#pragma once
// Small data sets made by the tests themselves in a temporary folder (nothing binary is committed).
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "io/dataset.hpp"

namespace gppf::test {

struct TempDir {
  std::string path;
  TempDir() {
    static int counter = 0;
    path = (std::filesystem::temp_directory_path() /
            ("gppf-data-" + std::to_string(::getpid()) + "-" + std::to_string(counter++)))
               .string();
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

inline void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes, bool gzip = false) {
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
    return;
  }
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

inline std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// An IDX file: magic 0x0000080N, big-endian dims, then the bytes.
inline std::vector<std::uint8_t> idx_bytes(const std::vector<std::uint32_t>& dims,
                                           const std::vector<std::uint8_t>& data) {
  std::vector<std::uint8_t> out = {0, 0, 8, static_cast<std::uint8_t>(dims.size())};
  for (std::uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(d >> s));
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Pixel value of image `i` at byte `k`: distinct per sample so that order mistakes show.
inline std::uint8_t pattern(std::int64_t i, std::size_t k) {
  return static_cast<std::uint8_t>((i * 37 + k * 11) % 251);
}

// A raw classification data set of n samples of h x w x c (label = i % classes), `block` samples per
// read and `shard` samples per shard.
inline io::Manifest make_raw_dataset(const std::string& out, std::int64_t n, int h, int w, int c, std::int64_t block,
                                     std::int64_t shard, int classes = 10, const std::string& split = "train",
                                     int deflate = 4) {
  io::Manifest m;
  m.task = io::TaskType::Classification;
  for (int k = 0; k < classes; ++k) m.classes.push_back(std::to_string(k));
  m.height = h;
  m.width = w;
  m.channels = c;
  m.block = block;
  io::DatasetWriter::Options opt;
  opt.header = m;
  opt.shard_samples = shard;
  opt.force = true;
  opt.deflate = deflate;
  io::DatasetWriter wr(out, opt);
  for (std::int64_t i = 0; i < n; ++i) {
    io::Sample s;
    s.image.resize(static_cast<std::size_t>(h) * w * c);
    for (std::size_t k = 0; k < s.image.size(); ++k) s.image[k] = pattern(i, k);
    s.label = static_cast<std::int32_t>(i % classes);
    s.id = i;
    wr.add(split, std::move(s), "test sample " + std::to_string(i));
  }
  return wr.finish();
}

// A raw gray classification data set of n objects for canvas scenes: side x side, black (alpha 0)
// around a centred square of `halo` whose centre half is 255. The object's visible pixels are the
// halo square; with an alpha threshold above `halo`, its box is the bright core only.
inline io::Manifest make_halo_objects(const std::string& out, std::int64_t n, int side, std::uint8_t halo) {
  io::Manifest m;
  m.task = io::TaskType::Classification;
  m.classes = {"a", "b"};
  m.height = m.width = side;
  m.channels = 1;
  m.block = 16;
  io::DatasetWriter::Options opt;
  opt.header = m;
  opt.force = true;
  io::DatasetWriter wr(out, opt);
  const int outer = side - 4, inner = outer / 2;
  for (std::int64_t i = 0; i < n; ++i) {
    io::Sample s;
    s.image.assign(static_cast<std::size_t>(side) * side, 0);
    for (int y = 0; y < side; ++y)
      for (int x = 0; x < side; ++x) {
        const auto in = [&](int k) { return std::abs(2 * x + 1 - side) < k && std::abs(2 * y + 1 - side) < k; };
        if (in(outer)) s.image[static_cast<std::size_t>(y) * side + x] = in(inner) ? 255 : halo;
      }
    s.label = static_cast<std::int32_t>(i % 2);
    s.id = i;
    wr.add("train", std::move(s), "halo object " + std::to_string(i));
  }
  return wr.finish();
}

// Every file of a folder (relative path -> bytes).
inline std::map<std::string, std::vector<std::uint8_t>> folder_bytes(const std::string& dir) {
  std::map<std::string, std::vector<std::uint8_t>> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[std::filesystem::relative(e.path(), dir).string()] = read_bytes(e.path().string());
  return out;
}

// Every sample of one split, in stored order (CRCs not checked).
inline std::vector<io::Sample> read_split(const io::Dataset& ds, const std::string& split) {
  std::vector<io::Sample> all;
  for (const auto& sh : ds.manifest().split(split, ds.dir()).shards) {
    io::ShardReader r(ds.shard_path(sh), ds.manifest(), sh.count);
    std::vector<io::Sample> part;
    std::vector<std::uint32_t> crc;
    r.read(0, sh.count, part, crc);
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

}  // namespace gppf::test
