#include "src/dist/nccl.hpp"

#include "core/error.hpp"

namespace gppf::dist {
namespace {
[[noreturn]] void no_cuda(const char* op) { GPPF_THROW("NCCL ", op, ": this gppf was built without CUDA"); }
}  // namespace

std::string NcclComm::unique_id() { no_cuda("unique_id"); }
NcclComm NcclComm::create(Comm&, int) { no_cuda("create"); }
NcclComm::NcclComm(int, int, const std::string&, int) { no_cuda("communicator"); }
NcclComm::~NcclComm() = default;
NcclComm::NcclComm(NcclComm&& o) noexcept : m_comm(o.m_comm), m_rank(o.m_rank), m_size(o.m_size), m_device(o.m_device) {
  o.m_comm = nullptr;
}
void NcclComm::allreduce_sum(float*, std::int64_t, const Stream&) { no_cuda("all-reduce"); }
void NcclComm::broadcast(float*, std::int64_t, int, const Stream&) { no_cuda("broadcast"); }
NcclComm NcclComm::split(int, int) const { no_cuda("split"); }
void NcclComm::alltoallv(const float*, const std::vector<std::int64_t>&, float*, const std::vector<std::int64_t>&,
                         const Stream&) {
  no_cuda("all-to-all");
}

}  // namespace gppf::dist
