#pragma once
// Checkpoints of a training run (docs/CHECKPOINT_FORMAT.md): one HDF5 file per checkpoint with the
// parameters, BN running statistics and optimizer state by name, the trainer's per-task progress
// (loader position, sampling RNG), the step and the effective config. Every dataset carries a CRC-32
// so that a damaged file is refused with one line naming it.
//
// Single process for now: the file holds the whole model (world_size 1). Parallel writing, resharding
// and asynchronous saving are later work; the hooks are the `world_size`/`rank` attributes and
// save_checkpoint(), through which every save goes.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "io/loader.hpp"
#include "src/core/tensor.hpp"
#include "src/nn/module.hpp"
#include "src/nn/parameter.hpp"

namespace gppf::train {

inline constexpr std::int64_t kCheckpointFormatVersion = 1;

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
  std::string gppf_version, git_sha;  // filled by write_checkpoint
  std::int64_t step = 0;              // optimizer steps taken
  std::string config_yaml;            // TrainConfig::yaml
  std::string optimizer_type;
  std::vector<TaskProgress> tasks;  // config order
  bool complete = false;
};

// The tensors a checkpoint holds, by name. Reading fills them in place.
struct CheckpointTensors {
  std::vector<nn::Parameter*> params;
  std::vector<nn::NamedTensor> buffers;
  std::vector<std::pair<std::string, Tensor*>> optimizer;
};

struct ReadOptions {
  // true: the file must hold exactly the given names in every group (a resume); false: the given
  // names must be present, others are ignored (inspection, partial loads).
  bool exact = true;
  bool optimizer = true;  // also read the optimizer state
};

// Writes a checkpoint file at `path` (plain write; save_checkpoint makes it atomic).
void write_checkpoint(const std::string& path, const CheckpointMeta& meta, const CheckpointTensors& tensors);
// Reads a checkpoint into `tensors` (names, shapes and checksums checked) and returns its metadata.
// Throws gppf::Error "checkpoint PATH is damaged: ..." for truncated, corrupt or incomplete files.
CheckpointMeta read_checkpoint(const std::string& path, const CheckpointTensors& tensors, const ReadOptions& options);
// The metadata only (attributes and their checksum, `complete`); cheap, tensors not checked.
CheckpointMeta read_checkpoint_meta(const std::string& path);
// Checks a file fully (every checksum) without loading it anywhere; returns its metadata.
CheckpointMeta verify_checkpoint(const std::string& path);

// Name and shape of every tensor of a group ("params", "buffers", "optimizer"), file order.
std::vector<std::pair<std::string, Shape>> checkpoint_tensor_shapes(const std::string& path, const std::string& group);

// ---- run directories: RUN_DIR/checkpoints/step-00001234.h5 and RUN_DIR/checkpoints/latest ----

std::string checkpoint_file_name(std::int64_t step);
// The step of a checkpoint file's name ("step-00001234.h5" -> 1234; directories ignored), else -1.
std::int64_t checkpoint_step(const std::string& path);
// Writes step-XXXXXXXX.h5.tmp, fsyncs it, renames it, atomically rewrites `latest`, then removes all
// but the newest `keep` checkpoints and stale .tmp files. Returns the checkpoint's path.
std::string save_checkpoint(const std::string& run_dir, int keep, const CheckpointMeta& meta,
                            const CheckpointTensors& tensors);
// The complete checkpoints of a run, newest first (by step; .tmp leftovers ignored; not verified).
std::vector<std::string> list_checkpoints(const std::string& run_dir);
// `--resume auto`: the newest checkpoint that verifies, logging every damaged one it skips; "" when
// the run has none.
std::string find_resume_checkpoint(const std::string& run_dir);
// A checkpoint file as is, or a run directory's checkpoints/latest.
std::string resolve_checkpoint(const std::string& file_or_run_dir);

}  // namespace gppf::train
