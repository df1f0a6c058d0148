#pragma once
// One error type for the whole trainer: it carries the MPI rank, file and line so that a message from
// a 512-rank job says where it came from. Vendor calls are wrapped by the GPPF_CHECK_* macros.
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace gppf {

// Concatenates anything streamable; the project's printf (std::format needs g++ 13).
template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// `s` with control characters (C0, DEL, and C1 as UTF-8) written as \n, \t, \xNN or \u00NN, so that
// text from files (manifests, configs, checkpoints) cannot move the cursor or recolour a terminal, and
// an error stays one line. Other bytes, UTF-8 included, pass through.
std::string printable(std::string_view s);

// Set once by the process-group set-up; -1 means "not part of an MPI job".
void set_process_rank(int rank);
int process_rank();

class Error : public std::runtime_error {
 public:
  Error(const std::string& what, const char* file, int line);
  const std::string& reason() const { return m_reason; }
  const char* file() const { return m_file; }
  int line() const { return m_line; }
  int rank() const { return m_rank; }

 private:
  std::string m_reason;
  const char* m_file;
  int m_line;
  int m_rank;
};

// Thrown for a feature that is declared but not built yet; the CLI maps it to exit status 2.
class NotImplemented : public Error {
 public:
  using Error::Error;
};

}  // namespace gppf

#define GPPF_THROW(...) throw ::gppf::Error(::gppf::str(__VA_ARGS__), __FILE__, __LINE__)
#define GPPF_CHECK(cond, ...)                                            \
  do {                                                                   \
    if (!(cond)) [[unlikely]]                                            \
      throw ::gppf::Error(::gppf::str(__VA_ARGS__), __FILE__, __LINE__); \
  } while (0)
#define GPPF_NOT_IMPLEMENTED(...) throw ::gppf::NotImplemented(::gppf::str(__VA_ARGS__), __FILE__, __LINE__)
