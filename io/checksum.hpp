#pragma once
// Checksums of the data set format: SHA-256 per shard (so `sha256sum` can check a copy) and CRC-32
// per sample (zlib's, as Python's zlib.crc32 computes it).
#include <cstddef>
#include <cstdint>
#include <string>

namespace gppf::io {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t size);
  // Lower-case hex digest; the object is spent afterwards.
  std::string hex();

 private:
  void block(const std::uint8_t* p);
  std::uint32_t m_h[8];
  std::uint8_t m_buf[64];
  std::size_t m_fill = 0;
  std::uint64_t m_bytes = 0;
};

// SHA-256 of a whole file; throws naming the file when it cannot be read.
std::string sha256_file(const std::string& path);

std::uint32_t crc32(std::uint32_t crc, const void* data, std::size_t size);

}  // namespace gppf::io
