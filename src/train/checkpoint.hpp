#pragma once
// Checkpoints of a training run (docs/CHECKPOINT_FORMAT.md): the parameters, BN running statistics
// and optimizer state by name, the trainer's per-task progress (loader position, sampling RNG), the
// step, the effective config and the world layout. Every dataset carries a CRC-32 so that a damaged
// file is refused with one line naming it.
//
// A checkpoint written by W ranks is one main file (rank 0: the metadata, rank 0's tensors and an
// index of the shards) plus W-1 shard files (the tensors each other rank owns); names are global, so
// it reads back on any number of ranks (resharding). Saving is split into a write phase without MPI
// (can run on a background thread, see async_checkpoint.hpp) and a collective publish phase.
//
// This header is the public API; the code is split by concern: checkpoint_format (the HDF5 layout of
// one file), checkpoint_read (reading a main file and its shards), checkpoint_publish (renames,
// `latest`, keep-last pruning), checkpoint_discovery (listing, `--resume auto`, `latest`),
// checkpoint_collective (the write and publish phases across ranks), checkpoint_files (file names).
#include <mpi.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.hpp"
#include "io/loader.hpp"
#include "src/nn/module.hpp"
#include "src/nn/parameter.hpp"

namespace gppf::train {

// 2: sharded checkpoints (world_size, layout, rank_rng, /shards); version 1 files still read.
inline constexpr std::int64_t kCheckpointFormatVersion = 2;

// Where one task's stream stands.
struct TaskProgress {
  std::string name;
  std::string type;     // classification | detection | segmentation
  std::string dataset;  // absolute path
  io::LoaderState loader;
  std::string sampling_rng;  // std::mt19937_64 state as its operator<< writes it
};

struct CheckpointMeta {
  std::int64_t format_version = kCheckpointFormatVersion;
  std::string gppf_version, git_sha;  // filled by the writer
  std::int64_t step = 0;              // optimizer steps taken
  std::string config_yaml;            // TrainConfig::yaml
  std::string optimizer_type;
  std::vector<TaskProgress> tasks;  // config order (rank 0's meta is the one stored)
  // Written: the `world` argument of the save. Read: the number of ranks that wrote the checkpoint.
  int world_size = 1;
  std::string layout;  // free text (JSON) from the trainer: which rank held what; stored as is
  // Free text per rank (RNG states, loader positions: whatever the trainer needs per rank), index =
  // rank. Writing: rank r stores rank_rng[r] in its own file (empty or missing: ""). Reading: one
  // entry per writing rank (reads that open only the main file fill entry 0 only).
  std::vector<std::string> rank_rng;
  bool complete = false;
};

// The tensors a checkpoint holds, by name (unique across all ranks). Reading fills them in place.
struct CheckpointTensors {
  std::vector<nn::Parameter*> params;
  std::vector<nn::NamedTensor> buffers;
  std::vector<std::pair<std::string, Tensor*>> optimizer;
};

struct ReadOptions {
  // true: the checkpoint (all its files together) must hold exactly the given names in every group
  // (a resume on one rank); false: the given names must be present, others are ignored (inspection,
  // partial loads, each rank of a resharded resume loading its share).
  bool exact = true;
  bool optimizer = true;  // also read the optimizer state
};

// Writes a complete single-file checkpoint at `path` (world size 1; plain write, no publishing).
void write_checkpoint(const std::string& path, const CheckpointMeta& meta, const CheckpointTensors& tensors);
// Reads a checkpoint (its main file and every shard) into `tensors`, each name from whichever file
// holds it (names, shapes and checksums checked), and returns its metadata. Throws gppf::Error
// "checkpoint PATH is damaged: ..." for truncated, corrupt, incomplete or missing files, and
// "checkpoint PATH does not fit this run: ..." for a missing or extra name or another shape.
CheckpointMeta read_checkpoint(const std::string& path, const CheckpointTensors& tensors, const ReadOptions& options);
// The metadata: the main file's attributes and their checksum, and each shard's identity and
// rank_rng (every shard must be there and belong to this checkpoint); tensors not checked.
CheckpointMeta read_checkpoint_meta(const std::string& path);
// Checks a checkpoint fully (every file, every checksum) without loading it anywhere; its metadata.
CheckpointMeta verify_checkpoint(const std::string& path);

// Name and shape of every tensor of a group ("params", "buffers", "optimizer"): the main file's in
// file order, then each shard's, by rank.
std::vector<std::pair<std::string, Shape>> checkpoint_tensor_shapes(const std::string& path, const std::string& group);

// ---- run directories: RUN_DIR/checkpoints/step-00001234.h5 (+ step-00001234.rank-00001.h5 ...)
// ---- and RUN_DIR/checkpoints/latest

std::string checkpoint_file_name(std::int64_t step);
// "step-00001234.rank-00003.h5": rank r > 0's shard of a checkpoint.
std::string checkpoint_shard_name(std::int64_t step, int rank);
// The step of a checkpoint's main file name ("step-00001234.h5" -> 1234; directories ignored), else
// -1 (shards and .tmp files are not checkpoints).
std::int64_t checkpoint_step(const std::string& path);

// Write phase, no MPI: writes this rank's file under a temporary name (`<final name>.tmp`) in
// RUN_DIR/checkpoints and fsyncs it; rank 0's is the main file (meta, its tensors), rank r > 0's the
// shard (its tensors, meta.rank_rng[r]). Not yet a checkpoint: publish_checkpoint makes it one. On
// failure it removes its temporary file and throws. Thread-safe (HDF5 calls hold io/h5's lock).
// Returns the temporary file's path.
std::string write_checkpoint_shard(const std::string& run_dir, std::int64_t step, int rank, int world,
                                   const CheckpointMeta& meta, const CheckpointTensors& tensors);
// Publish phase, collective over `comm` (main thread only; MPI_COMM_NULL: one process, no MPI).
// Every rank reports whether its write succeeded (`local_error` empty and its temporary file
// complete); if any failed, every rank throws the same one line naming the failed ranks and their
// reasons, and the temporary files are removed. Else rank 0 adds the shard index to the main file,
// renames the shards, then the main file (its existence means complete), rewrites `latest`
// atomically, fsyncs the directory and removes all but the newest `keep` checkpoints (with their
// shards) and leftovers of interrupted saves; the other ranks wait. Returns the main file's path.
std::string publish_checkpoint(const std::string& run_dir, std::int64_t step, int keep, MPI_Comm comm,
                               const std::string& local_error = "");
// Both phases: this rank's share (rank and world from `comm`), then publish.
std::string save_checkpoint(const std::string& run_dir, int keep, const CheckpointMeta& meta,
                            const CheckpointTensors& tensors, MPI_Comm comm = MPI_COMM_NULL);
// Removes a checkpoint's main file first (it stops counting), then its shards. Missing files are fine.
void remove_checkpoint(const std::string& path);
// The published checkpoints of a run (main files), newest first (by step; shards and .tmp leftovers
// ignored; not verified).
std::vector<std::string> list_checkpoints(const std::string& run_dir);
// `--resume auto`: the newest checkpoint that verifies (all its shards included), logging every
// damaged one it skips; "" when the run has none.
std::string find_resume_checkpoint(const std::string& run_dir);
// A checkpoint file as is, or a run directory's checkpoints/latest.
std::string resolve_checkpoint(const std::string& file_or_run_dir);

}  // namespace gppf::train
