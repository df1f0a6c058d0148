#include "src/dist/communicator.hpp"

#include "core/cuda_runtime.hpp"
#include "core/tensor.hpp"

namespace gppf::dist {

std::shared_ptr<Communicator> Communicator::split(int color, int key, const std::string& name) {
  auto& cached = m_splits[{color, key}];
  if (!cached) cached = make_split(color, key, name);
  return cached;
}

void Communicator::check_counts(const std::vector<std::int64_t>& send_counts,
                                const std::vector<std::int64_t>& recv_counts, const std::string& what) const {
  const auto n = static_cast<std::size_t>(size());
  GPPF_CHECK(send_counts.size() == n && recv_counts.size() == n, name(), ": ", what, ": counts for ",
             send_counts.size(), " and ", recv_counts.size(), " members, the communicator has ", n);
  for (std::size_t r = 0; r < n; ++r)
    GPPF_CHECK(send_counts[r] >= 0 && recv_counts[r] >= 0, name(), ": ", what, ": negative count for member ", r);
}

namespace {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(Comm comm) : m_owned(std::move(comm)), m_comm(&m_owned) {}
  explicit MpiCommunicator(Comm* comm) : m_comm(comm) {}
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  int rank() const override { return m_comm->rank(); }
  int size() const override { return m_comm->size(); }
  const std::string& name() const override { return m_comm->name(); }
  Device device() const override { return Device::host(); }
  void start_allreduce_sum(float* data, std::int64_t n, const std::string& what) override {
    m_pending.emplace_back(m_comm->start_allreduce_sum(data, n, what), what);
  }
  void wait_all(const std::string&) override {
    for (auto& [request, what] : m_pending) m_comm->finish(request, what);
    m_pending.clear();
  }
  void progress() override {
    for (auto& [request, what] : m_pending)
      if (request != MPI_REQUEST_NULL) {
        int done = 0;
        MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      }
  }
  void alltoallv(const float* send, const std::vector<std::int64_t>& send_counts, float* recv,
                 const std::vector<std::int64_t>& recv_counts, const std::string& what) override {
    check_counts(send_counts, recv_counts, what);
    m_comm->alltoallv(send, send_counts, recv, recv_counts, what);
  }
  void broadcast(float* data, std::int64_t n, int root, const std::string& what) override {
    m_comm->broadcast(data, n, root, what);
  }
  void barrier(const std::string& what) override { m_comm->barrier(what); }

 protected:
  std::shared_ptr<Communicator> make_split(int color, int key, const std::string& name) override {
    return std::make_shared<MpiCommunicator>(Comm::split(*m_comm, color, key, name));
  }

 private:
  Comm m_owned;
  Comm* m_comm;
  std::vector<std::pair<MPI_Request, std::string>> m_pending;
};

// Every call is enqueued on the communicator's stream; wait_all, broadcast's and barrier's callers
// get the data when the stream has run it (wait_all synchronises it).
class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(NcclComm comm, std::string name)
      : m_comm(std::move(comm)),
        m_name(std::move(name)),
        m_stream(cuda::create_stream(m_comm.device())),
        m_queued(cuda::create_event(m_comm.device())) {}
  ~NcclCommunicator() override {
    cuda::destroy_event(m_queued);
    cuda::destroy_stream(m_stream);
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;
  int rank() const override { return m_comm.rank(); }
  int size() const override { return m_comm.size(); }
  const std::string& name() const override { return m_name; }
  Device device() const override { return Device::cuda(m_comm.device()); }
  void start_allreduce_sum(float* data, std::int64_t n, const std::string&) override {
    after_compute();
    m_comm.allreduce_sum(data, n, m_stream);
  }
  void wait_all(const std::string&) override { cuda::synchronize(m_stream); }
  void alltoallv(const float* send, const std::vector<std::int64_t>& send_counts, float* recv,
                 const std::vector<std::int64_t>& recv_counts, const std::string& what) override {
    check_counts(send_counts, recv_counts, what);
    after_compute();
    m_comm.alltoallv(send, send_counts, recv, recv_counts, m_stream);
    cuda::synchronize(m_stream);
  }
  void broadcast(float* data, std::int64_t n, int root, const std::string& what) override {
    GPPF_CHECK(root >= 0 && root < size(), m_name, ": ", what, ": broadcast root ", root, " of ", size(), " members");
    after_compute();
    m_comm.broadcast(data, n, root, m_stream);
    cuda::synchronize(m_stream);
  }
  // A one-float sum: NCCL has no barrier, and every member must have reached it to finish it.
  void barrier(const std::string&) override {
    if (!m_token.defined()) m_token = Tensor::zeros({1}, DType::F32, device());
    m_comm.allreduce_sum(m_token.data_as<float>(), 1, m_stream);
    cuda::synchronize(m_stream);
  }

 protected:
  std::shared_ptr<Communicator> make_split(int color, int key, const std::string& name) override {
    return std::make_shared<NcclCommunicator>(m_comm.split(color, key), name);
  }

 private:
  // The communicator's stream is non-blocking: its next collective waits on the device for what the
  // compute stream (the legacy default stream) queued so far, e.g. the copies that filled a bucket.
  void after_compute() {
    cuda::record_event(m_queued, Stream{device(), nullptr});
    cuda::stream_wait_event(m_stream, m_queued);
  }

  NcclComm m_comm;
  std::string m_name;
  Stream m_stream;
  cuda::Event m_queued;
  Tensor m_token;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(Comm comm) {
  return std::make_unique<MpiCommunicator>(std::move(comm));
}

std::unique_ptr<Communicator> make_mpi_communicator_on(Comm& comm) { return std::make_unique<MpiCommunicator>(&comm); }

std::unique_ptr<Communicator> make_nccl_communicator(Comm& mpi, int device, const std::string& name) {
  return std::make_unique<NcclCommunicator>(NcclComm::create(mpi, device), name);
}

}  // namespace gppf::dist
