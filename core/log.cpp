#include "core/log.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>

namespace gppf::log {
namespace {
std::atomic<Level> g_level{Level::Info};
std::mutex g_mutex;
std::FILE* g_file = nullptr;  // the FileSink's, under g_mutex

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

namespace {
std::string stamp(const char* format) {
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

// "[info] [rank 1] text": the part of a line after its time stamp.
std::string body(Level lvl, int rank, const std::string& text) {
  return rank >= 0 ? str("[", tag(lvl), "] [rank ", rank, "] ", text) : str("[", tag(lvl), "] ", text);
}

void to_file(Level lvl, int rank, const std::string& text) {
  if (g_file) {
    std::fprintf(g_file, "%s %s\n", stamp("%Y-%m-%d %H:%M:%S").c_str(), body(lvl, rank, text).c_str());
    std::fflush(g_file);
  }
}
}  // namespace

void write(Level lvl, bool all_ranks, const std::string& message) {
  const int rank = process_rank();
  if (!all_ranks && rank > 0) return;
  // Messages carry names from files (tasks, classes, paths): no raw control characters on a terminal.
  const std::string text = printable(message);
  std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(stderr, "%s %s\n", stamp("%H:%M:%S").c_str(), body(lvl, rank, text).c_str());
  to_file(lvl, rank, text);
}

FileSink::FileSink(const std::string& path, bool append) {
  std::FILE* f = std::fopen(path.c_str(), append ? "a" : "w");
  GPPF_CHECK(f, path, ": cannot open the log file: ", std::strerror(errno));
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_file) std::fclose(g_file);
  g_file = f;
}

FileSink::~FileSink() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_file) std::fclose(g_file);
  g_file = nullptr;
}

void file_only(Level lvl, const std::string& message) {
  if (level() > lvl) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  to_file(lvl, process_rank(), printable(message));
}

void file_raw(const std::string& text) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_file) return;
  std::fputs(text.c_str(), g_file);
  std::fflush(g_file);
}

}  // namespace gppf::log
