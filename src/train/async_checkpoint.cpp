#include "src/train/async_checkpoint.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"

namespace gppf::train {
namespace {

// Pieces of at most this many bytes: big tensors are copied by several threads at once.
constexpr std::size_t kPiece = std::size_t{4} << 20;
constexpr std::size_t kParallelBytes = std::size_t{64} << 20;

struct Piece {
  char* dst;
  const char* src;
  std::size_t bytes;
};

// Makes `slot` a host tensor shaped like `src` (reusing its buffer when it already is) and queues
// the copy: host sources as pieces for the parallel memcpy, CUDA sources right away.
void stage(const std::string& name, const Tensor& src, std::string& slot_name, Tensor& slot, std::vector<Piece>& pieces,
           std::set<int>& devices) {
  slot_name = name;
  if (!slot.defined() || slot.shape() != src.shape() || slot.dtype() != src.dtype())
    slot = Tensor::empty(src.shape(), src.dtype(), Device::host(), /*pinned=*/src.device().is_cuda());
  if (src.nbytes() == 0) return;
  if (src.device().is_cuda()) {
    slot.copy_from(src, Stream{src.device(), nullptr});
    devices.insert(src.device().index);
    return;
  }
  auto* d = static_cast<char*>(slot.data());
  const auto* s = static_cast<const char*>(src.data());
  for (std::size_t at = 0; at < src.nbytes(); at += kPiece)
    pieces.push_back({d + at, s + at, std::min(kPiece, src.nbytes() - at)});
}

}  // namespace

AsyncCheckpointer::AsyncCheckpointer(int keep, MPI_Comm comm) : m_keep(keep), m_comm(comm) {}

AsyncCheckpointer::~AsyncCheckpointer() { abandon(); }

void AsyncCheckpointer::snapshot(const CheckpointTensors& tensors) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Piece> pieces;
  std::set<int> devices;
  m_params.resize(tensors.params.size());
  m_buffers.resize(tensors.buffers.size());
  m_optimizer.resize(tensors.optimizer.size());
  for (std::size_t i = 0; i < tensors.params.size(); ++i)
    stage(tensors.params[i]->name, tensors.params[i]->value, m_params[i].name, m_params[i].value, pieces, devices);
  for (std::size_t i = 0; i < tensors.buffers.size(); ++i)
    stage(tensors.buffers[i].first, *tensors.buffers[i].second, m_buffers[i].name, m_buffers[i].host, pieces, devices);
  for (std::size_t i = 0; i < tensors.optimizer.size(); ++i)
    stage(tensors.optimizer[i].first, *tensors.optimizer[i].second, m_optimizer[i].name, m_optimizer[i].host, pieces,
          devices);
  const auto n = static_cast<std::int64_t>(pieces.size());
  // Threads pay off for large sets only: waking the team (measured 10-20 ms on a loaded 2-core VM)
  // costs more than copying a few MB (0.2 ms for gppf-mini's 1 MB).
  std::size_t host_bytes = 0;
  for (const Piece& p : pieces) host_bytes += p.bytes;
  const bool parallel = host_bytes >= kParallelBytes;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (std::int64_t i = 0; i < n; ++i) {
    const Piece& p = pieces[static_cast<std::size_t>(i)];
    std::memcpy(p.dst, p.src, p.bytes);
  }
  for (int d : devices) cuda::synchronize(Stream{Device::cuda(d), nullptr});

  m_view.params.resize(m_params.size());
  m_view.buffers.resize(m_buffers.size());
  m_view.optimizer.resize(m_optimizer.size());
  m_snapshot_bytes = 0;
  for (std::size_t i = 0; i < m_params.size(); ++i) {
    m_view.params[i] = &m_params[i];
    m_snapshot_bytes += m_params[i].value.nbytes();
  }
  for (std::size_t i = 0; i < m_buffers.size(); ++i) {
    m_view.buffers[i] = {m_buffers[i].name, &m_buffers[i].host};
    m_snapshot_bytes += m_buffers[i].host.nbytes();
  }
  for (std::size_t i = 0; i < m_optimizer.size(); ++i) {
    m_view.optimizer[i] = {m_optimizer[i].name, &m_optimizer[i].host};
    m_snapshot_bytes += m_optimizer[i].host.nbytes();
  }
  m_snapshot_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void AsyncCheckpointer::reserve(const CheckpointTensors& tensors) {
  if (!m_in_flight) snapshot(tensors);
}

void AsyncCheckpointer::begin(const std::string& run_dir, std::int64_t step, int rank, int world,
                              const CheckpointMeta& meta, const CheckpointTensors& tensors) {
  if (m_in_flight) (void)finish(m_keep, m_comm);
  snapshot(tensors);
  m_meta = meta;
  m_run_dir = run_dir;
  m_step = step;
  m_tmp_path.clear();
  m_error.clear();
  m_done.store(false, std::memory_order_relaxed);
  m_in_flight = true;
  m_thread = std::thread([this, rank, world] {
    try {
      m_tmp_path = write_checkpoint_shard(m_run_dir, m_step, rank, world, m_meta, m_view);
    } catch (const Error& e) {
      m_error = e.reason();
    } catch (const std::exception& e) {
      m_error = e.what();
    }
    if (m_error.empty() && m_tmp_path.empty()) m_error = "the background write ended without a file";
    m_done.store(true, std::memory_order_release);
  });
}

void AsyncCheckpointer::wait() {
  if (m_thread.joinable()) m_thread.join();
}

std::string AsyncCheckpointer::finish(int keep, MPI_Comm comm) {
  if (!m_in_flight) return "";
  wait();
  m_in_flight = false;
  return publish_checkpoint(m_run_dir, m_step, keep, comm, m_error);
}

void AsyncCheckpointer::abandon() {
  wait();
  if (!m_in_flight) return;
  m_in_flight = false;
  if (!m_tmp_path.empty()) {
    std::error_code ec;
    std::filesystem::remove(m_tmp_path, ec);
  }
}

}  // namespace gppf::train
