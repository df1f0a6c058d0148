#pragma once
// Progress of a long loop (training steps, evaluation batches). On a terminal: one line on stderr,
// rewritten at most about once a second. Off a terminal (Slurm and mpirun logs): a plain log line at
// most every `plain_seconds`, so batch logs stay readable. Only the root process (rank <= 0) prints.
#include <chrono>
#include <cstdint>
#include <string>

namespace gppf {

// Whether stderr is a terminal (GPPF_PROGRESS=plain or =tty overrides it: tests, `script` sessions).
bool stderr_is_terminal();

class Progress {
 public:
  // what: "eval val digits-det"; total: the units to come (0: unknown).
  Progress(std::string what, std::int64_t total, double plain_seconds = 30.0);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  // `done` units so far; `detail` is appended ("loss 0.31"). Prints only when the interval passed.
  void update(std::int64_t done, const std::string& detail = "");
  // Ends the terminal line (once; also done by the destructor).
  void finish();

 private:
  using Clock = std::chrono::steady_clock;
  std::string line(std::int64_t done, const std::string& detail) const;
  std::string m_what;
  std::int64_t m_total = 0;
  double m_plain_seconds = 30.0;
  bool m_tty = false, m_root = false, m_open = false;
  Clock::time_point m_start = Clock::now(), m_last = Clock::now();
};

}  // namespace gppf
