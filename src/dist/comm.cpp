#include "src/dist/comm.hpp"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "core/error.hpp"
#include "core/log.hpp"
#include "src/dist/mpi.hpp"

namespace gppf::dist {
namespace {

using Clock = std::chrono::steady_clock;

int to_int(std::int64_t v, const std::string& what) {
  GPPF_CHECK(v >= 0 && v <= INT_MAX, what, ": ", v, " elements exceed MPI's int counts");
  return static_cast<int>(v);
}

std::string join_ranks(const std::vector<int>& r) {
  std::string s;
  for (int v : r) {
    if (!s.empty()) s += ',';
    s += std::to_string(v);
  }
  return s;
}

}  // namespace

Comm::Comm(MPI_Comm comm, std::string name, double watchdog_seconds)
    : m_comm(comm), m_name(std::move(name)), m_watchdog(watchdog_seconds) {
  GPPF_MPI_CHECK(MPI_Comm_rank(comm, &m_rank));
  GPPF_MPI_CHECK(MPI_Comm_size(comm, &m_size));
  // The world ranks of the members, for watchdog messages.
  int me = world_rank_or_zero();
  m_members.assign(static_cast<std::size_t>(m_size), 0);
  GPPF_MPI_CHECK(MPI_Allgather(&me, 1, MPI_INT, m_members.data(), 1, MPI_INT, comm));
}

Comm::~Comm() {
  if (m_comm != MPI_COMM_NULL && m_comm != MPI_COMM_WORLD) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&m_comm);
  }
}

Comm::Comm(Comm&& o) noexcept
    : m_comm(o.m_comm),
      m_name(std::move(o.m_name)),
      m_watchdog(o.m_watchdog),
      m_rank(o.m_rank),
      m_size(o.m_size),
      m_members(std::move(o.m_members)),
      m_stats(o.m_stats) {
  o.m_comm = MPI_COMM_NULL;
}

Comm& Comm::operator=(Comm&& o) noexcept {
  if (this != &o) {
    this->~Comm();
    new (this) Comm(std::move(o));
  }
  return *this;
}

Comm Comm::split(const Comm& parent, int color, int key, std::string name) {
  MPI_Comm c = MPI_COMM_NULL;
  GPPF_MPI_CHECK(MPI_Comm_split(parent.raw(), color, key, &c));
  return Comm(c, std::move(name), parent.m_watchdog);
}

void Comm::wait(MPI_Request& request, const std::string& what) {
  const auto t0 = Clock::now();
  int done = 0;
  GPPF_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
  // Spin briefly (collectives of a step are short), then back off so that a waiting rank does not
  // steal the cores of ranks that share its node.
  auto pause = std::chrono::microseconds(0);
  for (long polls = 0; !done; ++polls) {
    if (polls > 2000) {
      pause =
          std::min<std::chrono::microseconds>(std::chrono::microseconds(1000), pause + std::chrono::microseconds(20));
      std::this_thread::sleep_for(pause);
    }
    GPPF_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!done && waited > m_watchdog) {
      std::fprintf(stderr,
                   "gppf: error: rank %d: watchdog: %s on communicator '%s' (world ranks %s) did not finish within "
                   "%.0f s; a rank of it died or is stuck. Stopping the job.\n",
                   world_rank_or_zero(), what.c_str(), m_name.c_str(), join_ranks(m_members).c_str(), m_watchdog);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 3);
      std::_Exit(3);
    }
  }
  m_stats.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  ++m_stats.collectives;
}

void Comm::allreduce_sum(float* data, std::int64_t n, const std::string& what) {
  if (m_size == 1 || n == 0) return;
  MPI_Request req = start_allreduce_sum(data, n, what);
  wait(req, what);
}

MPI_Request Comm::start_allreduce_sum(float* data, std::int64_t n, const std::string& what) {
  MPI_Request req = MPI_REQUEST_NULL;
  if (m_size == 1 || n == 0) return req;
  GPPF_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, to_int(n, what), MPI_FLOAT, MPI_SUM, m_comm, &req));
  const std::int64_t bytes = n * static_cast<std::int64_t>(sizeof(float));
  m_stats.allreduce_bytes += bytes;
  m_stats.allreduce_wire_bytes += 2 * (m_size - 1) * bytes / m_size;
  return req;
}

void Comm::allreduce_sum(double* data, std::int64_t n, const std::string& what) {
  if (m_size == 1 || n == 0) return;
  MPI_Request req;
  GPPF_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, to_int(n, what), MPI_DOUBLE, MPI_SUM, m_comm, &req));
  wait(req, what);
}

void Comm::allreduce_max(int* data, std::int64_t n, const std::string& what) {
  if (m_size == 1 || n == 0) return;
  MPI_Request req;
  GPPF_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, to_int(n, what), MPI_INT, MPI_MAX, m_comm, &req));
  wait(req, what);
}

void Comm::alltoallv(const float* send, const std::vector<std::int64_t>& send_counts, float* recv,
                     const std::vector<std::int64_t>& recv_counts, const std::string& what) {
  const auto n = static_cast<std::size_t>(m_size);
  GPPF_CHECK(send_counts.size() == n && recv_counts.size() == n, what, ": counts for ", send_counts.size(), "/",
             recv_counts.size(), " ranks on a communicator of ", m_size);
  std::vector<int> sc(n), sd(n), rc(n), rd(n);
  std::int64_t so = 0, ro = 0;
  for (std::size_t i = 0; i < n; ++i) {
    sc[i] = to_int(send_counts[i], what);
    rc[i] = to_int(recv_counts[i], what);
    sd[i] = to_int(so, what);
    rd[i] = to_int(ro, what);
    so += send_counts[i];
    ro += recv_counts[i];
    if (static_cast<int>(i) != m_rank)
      m_stats.alltoall_bytes += send_counts[i] * static_cast<std::int64_t>(sizeof(float));
  }
  if (m_size == 1) {
    std::copy(send, send + so, recv);
    return;
  }
  MPI_Request req;
  GPPF_MPI_CHECK(
      MPI_Ialltoallv(send, sc.data(), sd.data(), MPI_FLOAT, recv, rc.data(), rd.data(), MPI_FLOAT, m_comm, &req));
  wait(req, what);
}

std::vector<std::int64_t> Comm::allgather(const std::vector<std::int64_t>& mine, const std::string& what) {
  std::vector<std::int64_t> all(mine.size() * static_cast<std::size_t>(m_size));
  if (m_size == 1) return mine;
  MPI_Request req;
  GPPF_MPI_CHECK(MPI_Iallgather(mine.data(), to_int(static_cast<std::int64_t>(mine.size()), what), MPI_INT64_T,
                                all.data(), static_cast<int>(mine.size()), MPI_INT64_T, m_comm, &req));
  wait(req, what);
  return all;
}

std::vector<std::string> Comm::allgather(const std::string& mine, const std::string& what) {
  if (m_size == 1) return {mine};
  const auto lengths = allgather(std::vector<std::int64_t>{static_cast<std::int64_t>(mine.size())}, what);
  std::vector<int> counts(lengths.size()), displs(lengths.size());
  int total = 0;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    counts[i] = to_int(lengths[i], what);
    displs[i] = total;
    total += counts[i];
  }
  std::string all(static_cast<std::size_t>(total), '\0');
  MPI_Request req;
  GPPF_MPI_CHECK(MPI_Iallgatherv(mine.data(), static_cast<int>(mine.size()), MPI_CHAR, all.data(), counts.data(),
                                 displs.data(), MPI_CHAR, m_comm, &req));
  wait(req, what);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < lengths.size(); ++i)
    out.push_back(all.substr(static_cast<std::size_t>(displs[i]), static_cast<std::size_t>(counts[i])));
  return out;
}

void Comm::barrier(const std::string& what) {
  if (m_size == 1) return;
  MPI_Request req;
  GPPF_MPI_CHECK(MPI_Ibarrier(m_comm, &req));
  wait(req, what);
}

void maybe_inject_fault(int world_rank, std::int64_t step) {
  static const char* spec = std::getenv("GPPF_FAULT");
  if (!spec || !*spec) return;
  char kind[16] = {};
  int rank = -1;
  long long at = -1;
  if (std::sscanf(spec, "%15[a-z]:%d:%lld", kind, &rank, &at) != 3 || rank != world_rank || at != step) return;
  const std::string k(kind);
  if (k == "die") {
    log::warn("GPPF_FAULT: rank ", world_rank, " kills itself at step ", step);
    ::kill(::getpid(), SIGKILL);
  } else if (k == "stall") {
    log::warn("GPPF_FAULT: rank ", world_rank, " stalls at step ", step);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

}  // namespace gppf::dist
