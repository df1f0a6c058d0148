#include "core/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace gppf::log {
namespace {
std::atomic<Level> g_level{Level::Info};
std::mutex g_mutex;

const char* tag(Level level) {
  switch (level) {
    case Level::Debug: return "debug";
    case Level::Info: return "info";
    case Level::Warn: return "warn";
    case Level::Error: return "error";
    default: return "";
  }
}
}  // namespace

void set_level(Level level) { g_level.store(level); }
Level level() { return g_level.load(); }

Level parse_level(const std::string& name) {
  if (name == "debug") return Level::Debug;
  if (name == "info") return Level::Info;
  if (name == "warn") return Level::Warn;
  if (name == "error") return Level::Error;
  if (name == "off") return Level::Off;
  GPPF_THROW("log level '", name, "' is not one of debug, info, warn, error, off");
}

void write(Level lvl, bool all_ranks, const std::string& message) {
  const int rank = process_rank();
  if (!all_ranks && rank > 0) return;
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  localtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
  // Messages carry names from files (tasks, classes, paths): no raw control characters on a terminal.
  const std::string text = printable(message);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (rank >= 0)
    std::fprintf(stderr, "%s [%s] [rank %d] %s\n", stamp, tag(lvl), rank, text.c_str());
  else
    std::fprintf(stderr, "%s [%s] %s\n", stamp, tag(lvl), text.c_str());
}

}  // namespace gppf::log
