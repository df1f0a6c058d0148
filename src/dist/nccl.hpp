#pragma once
// NCCL communicators for GPU runs (DESIGN.md "processes"): created from a unique id that rank 0 of an
// MPI communicator broadcasts; all-reduce and the all-to-all of routed activations (grouped
// ncclSend/ncclRecv with exact counts, as MPI_Alltoallv on the host). Buffers are device pointers;
// work is ordered on the given stream. Without CUDA every call throws "built without CUDA".
#include <cstdint>
#include <string>
#include <vector>

#include "core/device.hpp"

namespace gppf::dist {

class Comm;

class NcclComm {
 public:
  // A new unique id (on the rank that creates the communicator), as bytes.
  static std::string unique_id();
  // Collective over `mpi`: rank 0 makes the id, broadcasts it, every rank joins on `device`.
  static NcclComm create(Comm& mpi, int device);

  NcclComm(int nranks, int rank, const std::string& id, int device);
  int device() const { return m_device; }
  ~NcclComm();
  NcclComm(NcclComm&& o) noexcept;
  NcclComm& operator=(NcclComm&&) = delete;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const { return m_rank; }
  int size() const { return m_size; }
  void allreduce_sum(float* data, std::int64_t n, const Stream& stream);
  void broadcast(float* data, std::int64_t n, int root, const Stream& stream);
  // ncclCommSplit: the members with the same color (>= 0), ordered by key.
  NcclComm split(int color, int key) const;
  // Counts in floats, one per rank; offsets are the running sums of the counts.
  void alltoallv(const float* send, const std::vector<std::int64_t>& send_counts, float* recv,
                 const std::vector<std::int64_t>& recv_counts, const Stream& stream);

 private:
  NcclComm() = default;
  void* m_comm = nullptr;  // ncclComm_t
  int m_rank = 0, m_size = 1, m_device = 0;
};

}  // namespace gppf::dist
