#pragma once
// The tensor traffic of a distributed step behind one interface (issue "Scale out on GPUs"): sums
// (bucketed: several started, then waited for together), all-to-all-v with exact counts, broadcast,
// barrier and sub-groups. Two implementations:
//  - MPI over host buffers (dist::Comm: watchdog, byte counters), the reference;
//  - NCCL over device buffers (dist::NcclComm), ordered on the communicator's own stream; created
//    from a unique id that rank 0 of an MPI communicator broadcasts, sub-groups by ncclCommSplit.
// tests/mpi/test_communicator.cpp runs one conformance suite on each (NCCL where every rank has a GPU
// of its own). Buffers are floats; counts and displacements are in floats. A call with a count of 0
// moves nothing but is still collective.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/device.hpp"
#include "src/dist/comm.hpp"
#include "src/dist/nccl.hpp"

namespace gppf::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;
  // Where buffers live: the host (MPI) or this communicator's GPU (NCCL).
  virtual Device device() const = 0;

  // In-place sum over the members, done when it returns.
  void allreduce_sum(float* data, std::int64_t n, const std::string& what) {
    start_allreduce_sum(data, n, what);
    wait_all(what);
  }
  // Buckets: sums started in order and running while the caller goes on; wait_all returns when every
  // one started so far is done. `data` must stay untouched until then.
  virtual void start_allreduce_sum(float* data, std::int64_t n, const std::string& what) = 0;
  virtual void wait_all(const std::string& what) = 0;
  // Lets the sums in flight advance (MPI moves them only inside MPI calls); a no-op on NCCL.
  virtual void progress() {}
  // send holds send_counts[r] floats for member r, back to back; recv gets recv_counts[r] from r.
  virtual void alltoallv(const float* send, const std::vector<std::int64_t>& send_counts, float* recv,
                         const std::vector<std::int64_t>& recv_counts, const std::string& what) = 0;
  virtual void broadcast(float* data, std::int64_t n, int root, const std::string& what) = 0;
  virtual void barrier(const std::string& what) = 0;
  // The members that pass the same `color`, ordered by `key` (then by rank); collective over this
  // communicator. Splits with the same (color, key) on every member return the cached communicator.
  std::shared_ptr<Communicator> split(int color, int key, const std::string& name);

 protected:
  virtual std::shared_ptr<Communicator> make_split(int color, int key, const std::string& name) = 0;
  // Checks one count per member; names the communicator and the operation.
  void check_counts(const std::vector<std::int64_t>& send_counts, const std::vector<std::int64_t>& recv_counts,
                    const std::string& what) const;

 private:
  std::map<std::pair<int, int>, std::shared_ptr<Communicator>> m_splits;
};

// MPI over host buffers; owns `comm`, or (the second) uses one that the caller keeps alive and also
// uses for host metadata, so that its watchdog and byte counters cover both.
std::unique_ptr<Communicator> make_mpi_communicator(Comm comm);
std::unique_ptr<Communicator> make_mpi_communicator_on(Comm& comm);
// NCCL over `device`'s buffers, one member per rank of `mpi` (collective over it). Throws "built
// without CUDA" in a CUDA-less build.
std::unique_ptr<Communicator> make_nccl_communicator(Comm& mpi, int device, const std::string& name);

}  // namespace gppf::dist
