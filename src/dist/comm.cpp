#include "src/dist/comm.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <mutex>
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

constexpr int kAskTag = 1, kAnswerTag = 2;

// Every live communicator with a probe channel: a rank waiting on one communicator answers the
// questions asked on any of them (it may have joined a collective there and be waiting elsewhere).
std::mutex g_registry_mutex;
std::vector<Comm*>& registry() {
  static std::vector<Comm*> comms;
  return comms;
}
void enrol(Comm* c) {
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  registry().push_back(c);
}
void withdraw(Comm* c) {
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  auto& r = registry();
  r.erase(std::remove(r.begin(), r.end(), c), r.end());
}

Comm::WatchdogAction& watchdog_action() {
  static Comm::WatchdogAction action;
  return action;
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
  if (m_size > 1) {
    GPPF_MPI_CHECK(MPI_Comm_dup(comm, &m_probe));
    // Questions may go to a dead rank: an error there must not end the job before the message is out.
    GPPF_MPI_CHECK(MPI_Comm_set_errhandler(m_probe, MPI_ERRORS_RETURN));
    enrol(this);
  }
}

Comm::~Comm() {
  if (m_probe != MPI_COMM_NULL) withdraw(this);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (m_probe != MPI_COMM_NULL) MPI_Comm_free(&m_probe);
  if (m_comm != MPI_COMM_NULL && m_comm != MPI_COMM_WORLD) MPI_Comm_free(&m_comm);
}

Comm::Comm(Comm&& o) noexcept
    : m_comm(o.m_comm),
      m_probe(o.m_probe),
      m_started(o.m_started),
      m_pending(std::move(o.m_pending)),
      m_name(std::move(o.m_name)),
      m_watchdog(o.m_watchdog),
      m_rank(o.m_rank),
      m_size(o.m_size),
      m_members(std::move(o.m_members)),
      m_stats(o.m_stats) {
  if (m_probe != MPI_COMM_NULL) {
    withdraw(&o);
    enrol(this);
  }
  o.m_comm = MPI_COMM_NULL;
  o.m_probe = MPI_COMM_NULL;
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

void Comm::set_watchdog_action(WatchdogAction action) { watchdog_action() = std::move(action); }

void Comm::answer_probes() {
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  for (Comm* c : registry()) {
    for (;;) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, kAskTag, c->m_probe, &flag, &st);
      if (!flag) break;
      std::int64_t asked = 0;
      MPI_Recv(&asked, 1, MPI_INT64_T, st.MPI_SOURCE, kAskTag, c->m_probe, MPI_STATUS_IGNORE);
      // One small message to a rank that posted its receive first: an eager send that returns at once.
      MPI_Send(&c->m_started, 1, MPI_INT64_T, st.MPI_SOURCE, kAnswerTag, c->m_probe);
    }
  }
}

// Asks every other member how many collectives it has started, and names those that have not
// started collective `index` (no answer within the grace time: dead, stuck, or busy outside MPI).
std::string Comm::watchdog_message(const std::string& what, std::int64_t index) {
  const auto n = static_cast<std::size_t>(m_size);
  std::vector<std::int64_t> answers(n, -1);
  std::vector<MPI_Request> recvs(n, MPI_REQUEST_NULL);
  for (std::size_t j = 0; j < n; ++j) {
    if (static_cast<int>(j) == m_rank) continue;
    MPI_Irecv(&answers[j], 1, MPI_INT64_T, static_cast<int>(j), kAnswerTag, m_probe, &recvs[j]);
    static const std::int64_t kQuestion = 0;  // the tag is the question; outlives the send
    MPI_Request ask;
    MPI_Isend(&kQuestion, 1, MPI_INT64_T, static_cast<int>(j), kAskTag, m_probe, &ask);
    MPI_Request_free(&ask);  // a dead rank never takes it; nobody waits for it
  }
  const double grace = std::clamp(m_watchdog * 0.1, 1.0, 10.0);
  const auto t0 = Clock::now();
  for (bool all = false; !all && std::chrono::duration<double>(Clock::now() - t0).count() < grace;) {
    answer_probes();  // members that time out too ask at the same moment
    all = true;
    for (MPI_Request& r : recvs) {
      int got = 1;
      if (r != MPI_REQUEST_NULL) MPI_Test(&r, &got, MPI_STATUS_IGNORE);
      all = all && got;
    }
    if (!all) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  std::vector<int> silent;
  std::string behind;
  for (std::size_t j = 0; j < n; ++j) {
    if (static_cast<int>(j) == m_rank) continue;
    if (recvs[j] != MPI_REQUEST_NULL) {
      MPI_Cancel(&recvs[j]);
      MPI_Request_free(&recvs[j]);
      silent.push_back(m_members[j]);
    } else if (answers[j] < index) {
      behind += str(behind.empty() ? "" : ", ", "world rank ", m_members[j], " has started ", answers[j]);
    }
  }
  std::string who;
  if (!silent.empty())
    who = str(silent.size() == 1 ? "world rank " : "world ranks ", join_ranks(silent),
              " did not arrive and did not answer (dead, stuck, or busy outside MPI)");
  if (!behind.empty()) who += str(who.empty() ? "" : "; ", "did not arrive: ", behind);
  if (who.empty()) who = str("every member (world ranks ", join_ranks(m_members), ") has arrived; MPI itself hangs");
  return str("rank ", world_rank_or_zero(), ": watchdog: ", what, " (collective ", index, ") on communicator '", m_name,
             "' did not finish within ", m_watchdog, " s: ", who, ". Stopping the job.");
}

void Comm::wait(MPI_Request& request, const std::string& what, std::int64_t index) {
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
      answer_probes();
    }
    GPPF_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!done && waited > m_watchdog) {
      const std::string message = watchdog_message(what, index);
      if (watchdog_action()) watchdog_action()(message);  // tests throw; one that returns still stops the job
      std::fprintf(stderr, "gppf: error: %s\n", message.c_str());
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 3);
      std::_Exit(3);
    }
  }
  m_stats.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  ++m_stats.collectives;
}

void Comm::finish(MPI_Request& request, const std::string& what) {
  std::int64_t index = m_started;
  for (auto it = m_pending.begin(); it != m_pending.end(); ++it)
    if (it->first == request) {
      index = it->second;
      m_pending.erase(it);
      break;
    }
  wait(request, what, index);
}

void Comm::allreduce_sum(float* data, std::int64_t n, const std::string& what) {
  if (m_size == 1 || n == 0) return;
  MPI_Request req = start_allreduce_sum(data, n, what);
  finish(req, what);
}

MPI_Request Comm::start_allreduce_sum(float* data, std::int64_t n, const std::string& what) {
  MPI_Request req = MPI_REQUEST_NULL;
  if (m_size == 1 || n == 0) return req;
  GPPF_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, to_int(n, what), MPI_FLOAT, MPI_SUM, m_comm, &req));
  m_pending.emplace_back(req, begin());
  const std::int64_t bytes = n * static_cast<std::int64_t>(sizeof(float));
  m_stats.allreduce_bytes += bytes;
  m_stats.allreduce_wire_bytes += 2 * (m_size - 1) * bytes / m_size;
  return req;
}

void Comm::allreduce_sum(double* data, std::int64_t n, const std::string& what) {
  if (m_size == 1 || n == 0) return;
  MPI_Request req;
  GPPF_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, to_int(n, what), MPI_DOUBLE, MPI_SUM, m_comm, &req));
  wait(req, what, begin());
}

void Comm::allreduce_max(int* data, std::int64_t n, const std::string& what) {
  if (m_size == 1 || n == 0) return;
  MPI_Request req;
  GPPF_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, to_int(n, what), MPI_INT, MPI_MAX, m_comm, &req));
  wait(req, what, begin());
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
  wait(req, what, begin());
}

std::vector<std::int64_t> Comm::allgather(const std::vector<std::int64_t>& mine, const std::string& what) {
  std::vector<std::int64_t> all(mine.size() * static_cast<std::size_t>(m_size));
  if (m_size == 1) return mine;
  MPI_Request req;
  GPPF_MPI_CHECK(MPI_Iallgather(mine.data(), to_int(static_cast<std::int64_t>(mine.size()), what), MPI_INT64_T,
                                all.data(), static_cast<int>(mine.size()), MPI_INT64_T, m_comm, &req));
  wait(req, what, begin());
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
  wait(req, what, begin());
  std::vector<std::string> out;
  for (std::size_t i = 0; i < lengths.size(); ++i)
    out.push_back(all.substr(static_cast<std::size_t>(displs[i]), static_cast<std::size_t>(counts[i])));
  return out;
}

void Comm::broadcast(float* data, std::int64_t n, int root, const std::string& what) {
  GPPF_CHECK(root >= 0 && root < m_size, m_name, ": ", what, ": broadcast root ", root, " of ", m_size, " members");
  if (m_size == 1 || n == 0) return;
  if (m_rank == root) m_stats.broadcast_bytes += n * static_cast<std::int64_t>(sizeof(float));
  MPI_Request req;
  GPPF_MPI_CHECK(MPI_Ibcast(data, to_int(n, what), MPI_FLOAT, root, m_comm, &req));
  wait(req, what, begin());
}

void Comm::barrier(const std::string& what) {
  if (m_size == 1) return;
  MPI_Request req;
  GPPF_MPI_CHECK(MPI_Ibarrier(m_comm, &req));
  wait(req, what, begin());
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
