#pragma once
// Asynchronous checkpoints (docs/CHECKPOINT_FORMAT.md, "Asynchronous saving"): begin() copies the
// tensors into host memory this object owns (the only time training loses) and writes this rank's
// file on a background thread; finish() waits for that write and publishes the checkpoint
// (collective). One checkpoint in flight at a time; the snapshot buffers are reused, so checkpoints
// after the first allocate nothing large.
//
//   AsyncCheckpointer ckpt(keep, comm);
//   ckpt.begin(run_dir, step, rank, world, meta, tensors);   // at a step boundary, every rank
//   ... training goes on ...
//   if (all ranks agree that ckpt.ready()) ckpt.finish(keep, comm);  // or just call finish()
//
// MPI is initialised FUNNELED: the background thread makes no MPI call; begin() (when it must
// publish the previous checkpoint) and finish() are collective and belong to the main thread.
#include <mpi.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/tensor.hpp"
#include "src/nn/parameter.hpp"
#include "src/train/checkpoint.hpp"

namespace gppf::train {

class AsyncCheckpointer {
 public:
  // `keep` and `comm` publish a checkpoint that begin() finds still in flight.
  explicit AsyncCheckpointer(int keep = 3, MPI_Comm comm = MPI_COMM_NULL);
  // Waits for a write in flight and removes its unpublished file (no MPI: nothing is published).
  ~AsyncCheckpointer();
  AsyncCheckpointer(const AsyncCheckpointer&) = delete;
  AsyncCheckpointer& operator=(const AsyncCheckpointer&) = delete;

  // Snapshots `tensors` (host or CUDA; their producers must have finished) and `meta`, then writes
  // this rank's file (write_checkpoint_shard) on a background thread. A checkpoint still in flight
  // is first waited for and published with the constructor's keep and comm (collective: every rank
  // calls begin() at the same step).
  void begin(const std::string& run_dir, std::int64_t step, int rank, int world, const CheckpointMeta& meta,
             const CheckpointTensors& tensors);
  // Allocates (and touches) the snapshot buffers for tensors like these now, e.g. at start-up, so that
  // the first begin() costs no more than the later ones. Does nothing while a write is in flight.
  void reserve(const CheckpointTensors& tensors);
  // True when no write is in flight or the one in flight has finished (successfully or not).
  bool ready() const { return !m_in_flight || m_done.load(std::memory_order_acquire); }
  bool in_flight() const { return m_in_flight; }
  // Main thread, collective over `comm`: waits for the local write, then publish_checkpoint(). A
  // failure of any rank's write (the background thread's error included) throws one line there.
  // Returns the published checkpoint's path; "" when nothing was in flight.
  std::string finish(int keep, MPI_Comm comm);
  std::string finish() { return finish(m_keep, m_comm); }
  // Waits for a write in flight and removes its file without publishing (no MPI).
  void abandon();

  // The last begin(): seconds spent copying, and bytes copied.
  double snapshot_seconds() const { return m_snapshot_seconds; }
  std::size_t snapshot_bytes() const { return m_snapshot_bytes; }
  // The host copies the background thread writes (valid until the next begin()).
  const CheckpointTensors& snapshot_view() const { return m_view; }

 private:
  // A host copy that keeps its buffer while shape and dtype stay the same.
  struct Slot {
    std::string name;
    Tensor host;
  };
  void snapshot(const CheckpointTensors& tensors);
  void wait();

  int m_keep;
  MPI_Comm m_comm;
  std::vector<nn::Parameter> m_params;
  std::vector<Slot> m_buffers, m_optimizer;
  CheckpointTensors m_view;  // points into the slots above: what the writer writes
  CheckpointMeta m_meta;
  std::string m_run_dir;
  std::int64_t m_step = 0;

  std::thread m_thread;
  bool m_in_flight = false;
  std::atomic<bool> m_done{false};
  std::string m_tmp_path;  // set by the thread once its file is written
  std::string m_error;     // set by the thread when the write failed
  double m_snapshot_seconds = 0;
  std::size_t m_snapshot_bytes = 0;
};

}  // namespace gppf::train
