#include "core/error.hpp"

#include <atomic>
#include <cstring>

namespace gppf {
namespace {
std::atomic<int> g_rank{-1};

const char* base_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}
}  // namespace

void set_process_rank(int rank) { g_rank.store(rank); }
int process_rank() { return g_rank.load(); }

Error::Error(const std::string& what, const char* file, int line)
    : std::runtime_error(str(process_rank() >= 0 ? str("[rank ", process_rank(), "] ") : std::string(), what, " (",
                             base_name(file), ":", line, ")")),
      m_reason(what),
      m_file(file),
      m_line(line),
      m_rank(process_rank()) {}

}  // namespace gppf
