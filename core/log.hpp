#pragma once
// One logger: levels, an optional rank-0 filter, lines prefixed with time and rank.
#include <string>

#include "core/error.hpp"

namespace gppf::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3, Off = 4 };

void set_level(Level level);
Level level();
// Parses "debug|info|warn|error|off"; throws gppf::Error naming the value otherwise.
Level parse_level(const std::string& name);
void write(Level level, bool all_ranks, const std::string& message);

// While one lives, the lines this process logs are also appended to `path` (RUN_DIR/train.log),
// stamped with the date. Errors opening it name the file.
class FileSink {
 public:
  FileSink(const std::string& path, bool append);
  ~FileSink();
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;
};
// Into the file only: what went to the terminal another way (the live progress line's last state,
// the results table). `text` is written as is; no-op without a sink.
void file_only(Level level, const std::string& message);
void file_raw(const std::string& text);

template <class... Args>
void debug(const Args&... a) {
  if (level() <= Level::Debug) write(Level::Debug, false, str(a...));
}
template <class... Args>
void info(const Args&... a) {
  if (level() <= Level::Info) write(Level::Info, false, str(a...));
}
template <class... Args>
void warn(const Args&... a) {
  if (level() <= Level::Warn) write(Level::Warn, false, str(a...));
}
template <class... Args>
void error(const Args&... a) {
  if (level() <= Level::Error) write(Level::Error, true, str(a...));
}
// Printed by every rank, for messages that differ between ranks.
template <class... Args>
void info_all(const Args&... a) {
  if (level() <= Level::Info) write(Level::Info, true, str(a...));
}

}  // namespace gppf::log
