#pragma once
// A communicator with a watchdog and byte counters. Every collective is started non-blocking and
// polled: one that has not finished after `watchdog_seconds` makes this rank find the members that did
// not arrive (it asks every member, on a side communicator, how many collectives it has started; ranks
// waiting in a collective answer, dead or stuck ones cannot), print them and abort the whole job, so a
// dead or stuck rank never leaves the others hanging until the allocation runs out.
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace gppf::dist {

// Bytes this rank put on the wire, by kind (what `gppf bench comm` reports).
struct CommStats {
  std::int64_t alltoall_bytes = 0;        // activations and their gradients (sent by this rank)
  std::int64_t allreduce_bytes = 0;       // gradient payload this rank contributed (before the ring factor)
  std::int64_t allreduce_wire_bytes = 0;  // 2 (n-1)/n x payload: what a ring all-reduce sends per rank
  std::int64_t broadcast_bytes = 0;       // sent as the root of a broadcast (deterministic mode's gradients)
  std::int64_t collectives = 0;
  double seconds = 0;  // wall time inside collectives (waiting included)
};

class Comm {
 public:
  Comm() = default;
  // Takes ownership of `comm` (freed on destruction unless it is MPI_COMM_WORLD or MPI_COMM_NULL).
  Comm(MPI_Comm comm, std::string name, double watchdog_seconds);
  ~Comm();
  Comm(Comm&& o) noexcept;
  Comm& operator=(Comm&& o) noexcept;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  // MPI_Comm_split of `parent` by color (ranks ordered by key).
  static Comm split(const Comm& parent, int color, int key, std::string name);

  int rank() const { return m_rank; }
  int size() const { return m_size; }
  MPI_Comm raw() const { return m_comm; }
  const std::string& name() const { return m_name; }
  // World ranks of the members, in this communicator's order.
  const std::vector<int>& members() const { return m_members; }

  // In-place sums; `what` names the operation in watchdog messages.
  void allreduce_sum(float* data, std::int64_t n, const std::string& what);
  void allreduce_sum(double* data, std::int64_t n, const std::string& what);
  void allreduce_max(int* data, std::int64_t n, const std::string& what);
  // Counts and displacements in floats, one per member.
  void alltoallv(const float* send, const std::vector<std::int64_t>& send_counts, float* recv,
                 const std::vector<std::int64_t>& recv_counts, const std::string& what);
  // Every member's `mine`, concatenated in member order (fixed-size records).
  std::vector<std::int64_t> allgather(const std::vector<std::int64_t>& mine, const std::string& what);
  // Variable-length strings, one per member.
  std::vector<std::string> allgather(const std::string& mine, const std::string& what);
  void barrier(const std::string& what);
  // Member `root`'s n floats to every member.
  void broadcast(float* data, std::int64_t n, int root, const std::string& what);
  // Non-blocking sum: started now, completed by finish() (which polls under the watchdog).
  MPI_Request start_allreduce_sum(float* data, std::int64_t n, const std::string& what);
  void finish(MPI_Request& request, const std::string& what);

  CommStats& stats() { return m_stats; }
  void set_watchdog(double seconds) { m_watchdog = seconds; }

  // What a watchdog timeout does with its one-line message; the default prints it and aborts the job
  // (MPI_Abort). Tests install one that throws. Process-wide; nullptr restores the default.
  using WatchdogAction = std::function<void(const std::string& message)>;
  static void set_watchdog_action(WatchdogAction action);

 private:
  // `index`: which collective of this communicator (1-based count of those started) is awaited.
  void wait(MPI_Request& request, const std::string& what, std::int64_t index);
  std::int64_t begin() { return ++m_started; }
  std::string watchdog_message(const std::string& what, std::int64_t index);
  // Answers the arrival questions of other ranks, for every communicator of this process.
  static void answer_probes();

  MPI_Comm m_comm = MPI_COMM_NULL;
  MPI_Comm m_probe = MPI_COMM_NULL;  // a duplicate for the watchdog's questions and answers
  std::int64_t m_started = 0;        // collectives started on this communicator
  // Non-blocking collectives started and not finished yet, with their index.
  std::vector<std::pair<MPI_Request, std::int64_t>> m_pending;
  std::string m_name;
  double m_watchdog = 600;
  int m_rank = 0, m_size = 1;
  std::vector<int> m_members;
  CommStats m_stats;
};

// The test hook of the fault tests: GPPF_FAULT="die:RANK:STEP" or "stall:RANK:STEP" makes world rank
// RANK kill itself (SIGKILL) or stop responding at the start of step STEP. No effect when unset.
void maybe_inject_fault(int world_rank, std::int64_t step);

}  // namespace gppf::dist
