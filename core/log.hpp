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
