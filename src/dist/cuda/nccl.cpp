#include "src/dist/nccl.hpp"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "core/cuda/check.hpp"
#include "core/error.hpp"
#include "src/dist/comm.hpp"

namespace gppf::dist {
namespace {
ncclComm_t as_comm(void* p) { return static_cast<ncclComm_t>(p); }
cudaStream_t as_stream(const Stream& s) { return static_cast<cudaStream_t>(s.handle); }
}  // namespace

std::string NcclComm::unique_id() {
  ncclUniqueId id;
  GPPF_NCCL_CHECK(ncclGetUniqueId(&id));
  return std::string(reinterpret_cast<const char*>(&id), sizeof id);
}

NcclComm NcclComm::create(Comm& mpi, int device) {
  std::string id = mpi.rank() == 0 ? unique_id() : std::string();
  const auto all = mpi.allgather(id, "the NCCL unique id");
  return NcclComm(mpi.size(), mpi.rank(), all.front(), device);
}

NcclComm::NcclComm(int nranks, int rank, const std::string& id, int device)
    : m_rank(rank), m_size(nranks), m_device(device) {
  ncclUniqueId uid;
  GPPF_CHECK(id.size() == sizeof uid, "NCCL: a unique id has ", sizeof uid, " bytes, got ", id.size());
  std::memcpy(&uid, id.data(), sizeof uid);
  GPPF_CUDA_CHECK(cudaSetDevice(device));
  ncclComm_t c = nullptr;
  GPPF_NCCL_CHECK(ncclCommInitRank(&c, nranks, uid, rank));
  m_comm = c;
}

NcclComm::~NcclComm() {
  if (m_comm) ncclCommDestroy(as_comm(m_comm));
}

NcclComm::NcclComm(NcclComm&& o) noexcept : m_comm(o.m_comm), m_rank(o.m_rank), m_size(o.m_size), m_device(o.m_device) {
  o.m_comm = nullptr;
}

void NcclComm::allreduce_sum(float* data, std::int64_t n, const Stream& stream) {
  if (n == 0) return;
  GPPF_NCCL_CHECK(
      ncclAllReduce(data, data, static_cast<std::size_t>(n), ncclFloat, ncclSum, as_comm(m_comm), as_stream(stream)));
}

void NcclComm::broadcast(float* data, std::int64_t n, int root, const Stream& stream) {
  if (n == 0) return;
  GPPF_NCCL_CHECK(
      ncclBroadcast(data, data, static_cast<std::size_t>(n), ncclFloat, root, as_comm(m_comm), as_stream(stream)));
}

NcclComm NcclComm::split(int color, int key) const {
  GPPF_CHECK(color >= 0, "NCCL split: color ", color, " must be >= 0");
  GPPF_CUDA_CHECK(cudaSetDevice(m_device));
  ncclComm_t c = nullptr;
  GPPF_NCCL_CHECK(ncclCommSplit(as_comm(m_comm), color, key, &c, nullptr));
  NcclComm out;
  out.m_comm = c;
  out.m_device = m_device;
  int n = 0, r = 0;
  GPPF_NCCL_CHECK(ncclCommCount(c, &n));
  GPPF_NCCL_CHECK(ncclCommUserRank(c, &r));
  out.m_size = n;
  out.m_rank = r;
  return out;
}

void NcclComm::alltoallv(const float* send, const std::vector<std::int64_t>& send_counts, float* recv,
                         const std::vector<std::int64_t>& recv_counts, const Stream& stream) {
  GPPF_CHECK(
      send_counts.size() == static_cast<std::size_t>(m_size) && recv_counts.size() == static_cast<std::size_t>(m_size),
      "NCCL all-to-all: counts for ", send_counts.size(), "/", recv_counts.size(), " ranks, communicator of ", m_size);
  std::int64_t so = 0, ro = 0;
  GPPF_NCCL_CHECK(ncclGroupStart());
  for (int r = 0; r < m_size; ++r) {
    const auto i = static_cast<std::size_t>(r);
    if (send_counts[i] > 0)
      GPPF_NCCL_CHECK(ncclSend(send + so, static_cast<std::size_t>(send_counts[i]), ncclFloat, r, as_comm(m_comm),
                               as_stream(stream)));
    if (recv_counts[i] > 0)
      GPPF_NCCL_CHECK(ncclRecv(recv + ro, static_cast<std::size_t>(recv_counts[i]), ncclFloat, r, as_comm(m_comm),
                               as_stream(stream)));
    so += send_counts[i];
    ro += recv_counts[i];
  }
  GPPF_NCCL_CHECK(ncclGroupEnd());
}

}  // namespace gppf::dist
