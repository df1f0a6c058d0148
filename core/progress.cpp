#include "core/progress.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/error.hpp"
#include "core/log.hpp"

namespace gppf {

bool stderr_is_terminal() {
  const char* mode = std::getenv("GPPF_PROGRESS");
  if (mode && std::strcmp(mode, "tty") == 0) return true;
  if (mode && std::strcmp(mode, "plain") == 0) return false;
  return isatty(STDERR_FILENO) != 0;
}

Progress::Progress(std::string what, std::int64_t total, double plain_seconds)
    : m_what(std::move(what)),
      m_total(total),
      m_plain_seconds(plain_seconds),
      m_tty(stderr_is_terminal()),
      m_root(process_rank() <= 0) {
  // A terminal shows the line from the first update on; a log gets its first after plain_seconds.
  if (m_tty) m_last -= std::chrono::seconds(2);
}

Progress::~Progress() { finish(); }

std::string Progress::line(std::int64_t done, const std::string& detail) const {
  const double s = std::chrono::duration<double>(Clock::now() - m_start).count();
  std::string out = str(m_what, " ", done);
  if (m_total > 0) out += str("/", m_total);
  char rate[64];
  std::snprintf(rate, sizeof rate, " | %.1f/s", s > 0 ? static_cast<double>(done) / s : 0.0);
  out += rate;
  if (m_total > 0 && done > 0) {
    char eta[64];
    std::snprintf(eta, sizeof eta, " | eta %.0f s",
                  s / static_cast<double>(done) * static_cast<double>(m_total - done));
    out += eta;
  }
  if (!detail.empty()) out += " | " + detail;
  return out;
}

void Progress::update(std::int64_t done, const std::string& detail) {
  if (!m_root) return;
  const auto now = Clock::now();
  const double since = std::chrono::duration<double>(now - m_last).count();
  if (since < (m_tty ? 1.0 : m_plain_seconds)) return;
  m_last = now;
  if (m_tty) {
    std::fprintf(stderr, "\r%s\033[K", printable(line(done, detail)).c_str());
    std::fflush(stderr);
    m_open = true;
  } else {
    log::info(line(done, detail));
  }
}

void Progress::finish() {
  if (m_open) std::fprintf(stderr, "\r\033[K");  // the table or log line that follows takes its place
  m_open = false;
}

}  // namespace gppf
