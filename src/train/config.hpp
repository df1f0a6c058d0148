#pragma once
// The training configuration: a YAML file, every key overridable with `--set key=value` (dotted
// paths; list entries of `tasks` are addressed by their name: `tasks.mnist.batch_size=32`). Unknown
// keys, wrong types and impossible values are one-line errors naming the key.
#include <cstdint>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "io/augment.hpp"
#include "io/dataset.hpp"
#include "src/nn/backbone.hpp"
#include "src/nn/heads.hpp"
#include "src/optim/optimizer.hpp"
#include "src/optim/schedule.hpp"

namespace gppf::train {

struct TaskConfig {
  std::string name;
  io::TaskType type = io::TaskType::Classification;
  std::string dataset;
  int batch_size = 32;
  float loss_weight = 1.0f;
  // Relative frequency with which the task takes part in a step (1: every step).
  float sampling_weight = 1.0f;
  io::AugmentConfig augment;  // enabled when any key of `augment:` is given
  // Detection: top detections kept per image, and the heat-map Gaussian radius factor.
  int max_detections = 20;
  // Detection and segmentation: stride-2 context levels of the task's FPN neck below the last stage
  // (nn::NeckSpec::context_levels); -1 in a config means the type's default, 0 and 3 respectively.
  int context_levels = -1;
};

// How the ranks of an MPI job split the work (docs/SCALING.md). world = replicas x task_groups; the
// legos of every layer are sharded over blocks of `expert_parallel` consecutive task groups.
struct DistributedConfig {
  // `distributed: auto` or `layout: auto`: the planner picks task groups, expert shards and replicas
  // from the world size and a cost model (src/train/auto_layout.hpp); the three keys below must then
  // stay unset.
  bool auto_layout = false;
  int task_groups = 0;            // 0: one per rank (world size / replicas)
  int expert_parallel = 1;        // ranks of a block that share one copy of the legos, each holding a shard
  int replicas = 1;               // data-parallel copies; each takes 1/replicas of every task's batch
  double watchdog_seconds = 600;  // a collective that takes longer stops the job, naming what it waited for
  double bucket_mb = 4;           // gradient all-reduce bucket size
};

// `gppf finetune` (docs/FINETUNE.md): the routing probe that picks a new task's legos on the frozen
// pre-trained network, and what the fine-tuning after it trains. `gppf train` ignores this section.
struct FinetuneConfig {
  std::int64_t probe_steps = 100;  // steps of the probe (soft routing over all legos, backbone frozen)
  float probe_lr = 0.05f;          // constant learning rate of the probe (routers and heads)
  // false: fine-tune the task's path (selected legos, stem, shortcuts) and its head; true: the head only.
  bool freeze_backbone = false;
};

struct TrainConfig {
  std::string config_path;
  // The effective config as YAML text (after --set overrides, data set paths made absolute): what a
  // checkpoint stores, so that `gppf eval` and resumed runs rebuild exactly this network.
  std::string yaml;
  // The same with every key the parser read and left at its default written out (RUN_DIR/config.yaml):
  // loaded again, it gives the same run.
  std::string resolved_yaml;
  // Whether the text had a `model` section (a fine-tune config usually has none: its network is the
  // checkpoint's, and without one the defaults describe a different network).
  bool model_given = false;
  std::uint64_t seed = 1;
  std::int64_t steps = 1000;
  std::string device = "host";  // as written in the config (messages, the stored YAML)
  Device target_device;         // `device`, parsed once by the config reader
  // CUDA: fp32 convolutions and GEMMs on TF32 tensor cores (10-bit mantissa products, fp32
  // accumulation), as PyTorch's cudnn.allow_tf32. Off: fp32 results match the host to ~1e-5.
  bool tf32 = false;
  // Activations: "fp32", or "bf16" (CUDA only): bf16 activations and working copies of the conv and
  // linear weights, f32 master weights, gradients, BN statistics, losses and optimizer state.
  std::string precision = "fp32";
  // How lego layers run a routed step (src/nn/lego_strategy.hpp): "merged", "per-lego", or "auto"
  // (merged where its kernels exist: host f32; per-lego otherwise). Expert parallelism always
  // exchanges. The function is the same; the speed and the host syncs differ.
  std::string lego_strategy = "auto";
  // Whether tasks of the same input shape run the backbone as one batch in a training step, each lego
  // once on the samples of the tasks that routed to it (src/nn/lego_strategy_batched.cpp): "on",
  // "off", or "auto" (on for CUDA, where it halves the launches; off on the host). One process only.
  std::string task_batching = "auto";
  // Bitwise-identical training on every task-parallel layout (docs/SCALING.md, "Deterministic mode"):
  // each task's gradient contributions are summed in task order by the same code on every rank, so
  // 1, 2 and 4 ranks end each step with the same bits. Needs replicas 1 and expert_parallel 1, and
  // runs tasks one by one (task_batching auto means off; on is refused).
  bool deterministic = false;
  // Capture the training passes of a step as a graph and launch it again while the routing, the tasks
  // and the input shapes stay the same (core/graph.hpp; docs/PERFORMANCE.md, "CUDA graphs"): "on" or
  // "off". A CUDA graph on CUDA; on the host a recording of the same calls (what the tests check).
  // One process, per-lego or task-batched lego layers, not with deterministic: true.
  std::string cuda_graphs = "off";
  int threads = 0;  // OpenMP threads; 0: the runtime's default
  std::int64_t log_every = 50;
  std::int64_t eval_every = 0;    // 0: only at the end
  std::int64_t eval_batches = 0;  // 0: the whole split
  // Batches per task and split of the final evaluation (test and val); 0: the whole splits. A cap is
  // for quick trials: summary.json and the table say so.
  std::int64_t final_eval_batches = 0;
  // Training batches per task over which BN statistics are re-estimated before each evaluation.
  int bn_calibration_batches = 10;
  int loader_workers = 1;
  std::int64_t checkpoint_every = 0;  // steps between checkpoints; 0: only the final one
  int keep_checkpoints = 3;           // newest checkpoint files kept in RUN_DIR/checkpoints
  double checkpoint_minutes = 0;      // also checkpoint when this much wall time passed since the last; 0: off
  // Periodic checkpoints snapshot to host memory and write on a background thread (docs/CHECKPOINT_FORMAT.md).
  bool checkpoint_async = false;
  // Steps in a row whose gradient norm may be non-finite (each skipped) before the run stops.
  int max_nonfinite_steps = 10;
  optim::OptimizerConfig optimizer;
  optim::ScheduleConfig schedule;
  nn::BackboneSpec backbone;
  nn::NeckSpec neck;
  std::vector<TaskConfig> tasks;
  DistributedConfig distributed;
  FinetuneConfig finetune;
};

// Where relative data set paths in a config point: below `dir` (empty: the working directory).
// cwd_fallback: a path found only below the working directory is accepted with a warning (configs
// written before paths were relative to their file).
struct DataPaths {
  std::string dir;
  bool cwd_fallback = false;
};
// `config_path`'s folder, or `data_root` when given (--data-root; it must exist).
DataPaths data_paths_of(const std::string& config_path, const std::string& data_root);

// Parses `path` after applying `overrides` ("key=value"). Relative dataset paths are resolved below
// `data_root` when given, else below the config file's folder (docs/CONFIG.md, "Data paths"); the
// parsed config holds them absolute.
TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides,
                        const std::string& data_root = "");
// Same, from YAML text (tests, a checkpoint's stored config).
TrainConfig parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                         const std::string& where, const DataPaths& data = {});

// The config of a fine-tune run: the YAML text `yaml_text` (after `overrides`) with the `model`
// section of the pre-training config `pretrained_yaml` (a checkpoint's config_yaml, read from
// `pretrained_where`). Keys the fine-tune config gives in its own `model` section must agree with the
// pre-trained network; the first that does not is a one-line error naming it.
TrainConfig parse_finetune_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                                  const std::string& where, const std::string& pretrained_yaml,
                                  const std::string& pretrained_where, const DataPaths& data = {});
TrainConfig load_finetune_config(const std::string& path, const std::vector<std::string>& overrides,
                                 const std::string& pretrained_yaml, const std::string& pretrained_where,
                                 const std::string& data_root = "");

}  // namespace gppf::train
