#include "src/train/checkpoint_files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>

#include "core/error.hpp"
#include "src/train/checkpoint.hpp"

namespace gppf::train {
namespace ckpt {
namespace {

// Writes left before injected failures start (0: none injected), and their errno.
std::atomic<int> g_writes_to_failure{0};
std::atomic<int> g_injected_errno{0};

void set_failure(int nth, int error) {
  g_injected_errno.store(error);
  g_writes_to_failure.store(std::max(nth, 0));
}

// Not through inject_write_failure: that calls this, and a static's initialiser that re-enters itself
// waits for itself forever.
void init_injection_from_env() {
  static const bool done = [] {
    if (const char* n = std::getenv("GPPF_FAULT_ENOSPC"); n && std::atoi(n) > 0) set_failure(std::atoi(n), ENOSPC);
    return true;
  }();
  (void)done;
}

// The errno an injected failure gives this write, 0 for none.
int injected_failure() {
  init_injection_from_env();
  int left = g_writes_to_failure.load();
  while (left > 1 && !g_writes_to_failure.compare_exchange_weak(left, left - 1)) {
  }
  return left == 1 ? g_injected_errno.load() : 0;
}

// Writes all of `size` bytes, retrying short writes and EINTR; false with errno set on failure.
bool write_all(int fd, const char* p, std::size_t size) {
  constexpr std::size_t kPiece = std::size_t{64} << 20;
  while (size > 0) {
    const ssize_t n = ::write(fd, p, std::min(size, kPiece));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

std::int64_t step_of(const std::string& file_name) {
  static const std::regex re(R"(step-(\d+)\.h5)");
  std::smatch m;
  if (!std::regex_match(file_name, m, re)) return -1;
  return std::stoll(m[1].str());
}

std::pair<std::int64_t, std::int64_t> shard_of(const std::string& file_name) {
  static const std::regex re(R"(step-(\d+)\.rank-(\d+)\.h5)");
  std::smatch m;
  if (!std::regex_match(file_name, m, re)) return {-1, -1};
  return {std::stoll(m[1].str()), std::stoll(m[2].str())};
}

std::filesystem::path rank_file(const std::filesystem::path& dir, std::int64_t step, int rank) {
  return dir / (rank == 0 ? checkpoint_file_name(step) : checkpoint_shard_name(step, rank));
}

std::filesystem::path tmp_of(const std::filesystem::path& p) { return p.string() + ".tmp"; }

void inject_write_failure(int nth, int error) {
  init_injection_from_env();
  set_failure(nth, error);
}

void write_file_bytes(const std::filesystem::path& path, const void* data, std::size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  GPPF_CHECK(fd >= 0, path.string(), ": cannot create: ", std::strerror(errno));
  const int injected = injected_failure();
  const char* failed = nullptr;  // the call that failed
  int err = 0;
  if (!write_all(fd, static_cast<const char*>(data), injected ? size / 2 : size)) {
    failed = "write";
    err = errno;
  } else if (injected) {
    failed = "write";
    err = injected;
  } else if (::fsync(fd) != 0) {
    failed = "fsync";
    err = errno;
  }
  // close() reports delayed write errors on NFS.
  if (::close(fd) != 0 && !failed) {
    failed = "close";
    err = errno;
  }
  if (!failed) return;
  std::error_code ec;
  std::filesystem::remove(path, ec);
  GPPF_THROW(path.string(), ": ", failed, " failed: ", std::strerror(err));
}

}  // namespace ckpt

std::string checkpoint_file_name(std::int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "step-%08lld.h5", static_cast<long long>(step));
  return buf;
}

std::string checkpoint_shard_name(std::int64_t step, int rank) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "step-%08lld.rank-%05d.h5", static_cast<long long>(step), rank);
  return buf;
}

std::int64_t checkpoint_step(const std::string& path) {
  return ckpt::step_of(std::filesystem::path(path).filename().string());
}

}  // namespace gppf::train
