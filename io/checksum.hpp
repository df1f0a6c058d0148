#pragma once
// Checksums of the data set format: SHA-256 per shard (so `sha256sum` can check a copy) and CRC-32
// per sample (zlib's, as Python's zlib.crc32 computes it).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace gppf::io {

// SHA-256 from OpenSSL's libcrypto (EVP). Builds on a machine without libssl-dev (the lent GPU
// machine cannot install packages) use a built-in implementation checked against the same vectors.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, std::size_t size);
  // Lower-case hex digest; the object is spent afterwards.
  std::string hex();
  // "OpenSSL 3.0.19 ..." or "built-in": which implementation this build uses.
  static std::string implementation();

 private:
  struct State;
  std::unique_ptr<State> m_state;
};

// SHA-256 of a whole file; throws naming the file when it cannot be read.
std::string sha256_file(const std::string& path);

std::uint32_t crc32(std::uint32_t crc, const void* data, std::size_t size);

}  // namespace gppf::io
