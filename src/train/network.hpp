#pragma once
// The GPPF network of a training run: one lego backbone shared by every task, one head per task.
// A task's path is the backbone with that task's routing and BN statistics, then its head.
#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/loader.hpp"
#include "src/train/centernet.hpp"
#include "src/train/config.hpp"
#include "src/train/metrics.hpp"
#include "src/train/staging.hpp"

namespace gppf::dist {
class Comm;
class LegoExchange;
}  // namespace gppf::dist

namespace gppf::train {

// A task as the network sees it, resolved from its config and its data set's manifest.
struct TaskSpec {
  TaskConfig config;
  io::Manifest manifest;
  int num_classes = 0;  // output channels of the head (segmentation: classes + background)
  int height = 0, width = 0, channels = 0;
};

TaskSpec resolve_task(const TaskConfig& config, const io::Manifest& manifest);

// The config's data sets, opened, and its tasks resolved against them (same order as config.tasks).
struct TaskData {
  std::vector<io::Dataset> datasets;
  std::vector<TaskSpec> specs;
};
TaskData open_tasks(const TrainConfig& config);

struct TaskLoss {
  int task = -1;
  float total = 0;                     // weighted by the task's loss_weight
  std::map<std::string, float> parts;  // unweighted components ("ce"; "heatmap", "size", "offset")
};

// A training pass's losses, still where they were computed: reading them is a sync on a GPU, so a
// step reads all of them at once, after its update (Network::end_step).
struct PendingLoss {
  int task = -1;
  std::vector<std::pair<std::string, Tensor>> losses;  // name, weighted loss [1]
  float inv_weight = 0;                                // undoes the task's loss weight in `parts`
  float part_scale_size = 1;                           // undoes the size loss's weight in `parts`
};

// Accumulates a task's test metrics over batches.
class TaskEvaluator {
 public:
  explicit TaskEvaluator(const TaskSpec& spec);
  void add_classification(const Tensor& logits, const Tensor& labels);
  void add_detection(const std::vector<std::vector<Detection>>& dets, const std::vector<std::vector<io::Box>>& truth);
  void add_segmentation(const Tensor& logits, const Tensor& masks);
  // Keys as DESIGN.md names them: top1, top5 | map50, map | miou, miou_fg, pixel_acc; fractions in [0, 1].
  std::map<std::string, double> metrics() const;
  std::int64_t samples() const { return m_samples; }

 private:
  io::TaskType m_type;
  std::int64_t m_samples = 0, m_top1 = 0, m_top5 = 0;
  DetectionEvaluator m_det;
  SegmentationEvaluator m_seg;
};

// The raw outputs of one task's inference pass (Network::infer).
struct TaskOutputs {
  // Classification: the head's logits [N, C] on the network's device, in the activations' dtype.
  // Segmentation: per-pixel logits f32 [N, H, W, C] on the network's device. Detection: undefined.
  Tensor logits;
  // Detection: per image, the decoded boxes in input pixels, best first (at most max_detections).
  std::vector<std::vector<Detection>> detections;
};

// A task's micro-batch staged for a training pass (Network::stage). On a GPU its page-locked tensors
// are on their way to the device on the copy stream; the pass that takes it makes the compute stream
// wait for them there. On the host it holds the loader's tensors.
struct StagedBatch {
  int task = -1;
  io::Batch batch;                 // uploaded tensors on the device; the others go up with the pass (compute stream)
  CenterNetTargets targets;        // detection: encoded ahead (and uploaded) once the head's output grid is known
  std::unique_ptr<Upload> upload;  // null: nothing on the copy stream
  bool on_copy_stream() const { return upload != nullptr; }
};

// How a distributed run plugs into the network (src/train/distributed.hpp sets it up).
struct NetworkDist {
  dist::LegoExchange* exchange = nullptr;  // expert parallelism: the block's exchange (null: all legos local)
  dist::Comm* bn_sync = nullptr;           // data parallelism: BN statistics summed over the replicas
  int replicas = 1;                        // each replica holds 1/replicas of a task's micro-batch
};

class Network {
 public:
  Network(const TrainConfig& config, const std::vector<TaskSpec>& tasks);
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  // Forward, loss and backward of one task's micro-batch at training step `step`; parameter
  // gradients are written or accumulated (Parameter::take_grad_mode). No host sync: the losses stay
  // on the device until end_step (or read_loss) reads them.
  PendingLoss train_step(int task, const io::Batch& batch, std::int64_t step);
  // The passes of several tasks (batches[i] for tasks[i]); with task batching on (batches_tasks()),
  // tasks of the same input shape run the backbone as one batch, each its own head. One pending loss
  // per task, in `tasks` order.
  std::vector<PendingLoss> train_tasks(const std::vector<int>& tasks, const std::vector<io::Batch>& batches,
                                       std::int64_t step);
  // The batch's upload queued now, without a sync: on a GPU its page-locked tensors (and a detection
  // task's CenterNet targets) on the copy stream, into buffers no queued pass reads. The trainer
  // stages the next step's batches before the current step's syncs, so that the copies overlap the
  // GPU's work.
  StagedBatch stage(int task, const io::Batch& batch);
  // train_tasks on staged batches (tasks in their order).
  std::vector<PendingLoss> train_staged(std::vector<StagedBatch> batches, std::int64_t step);
  // The routes of every task this process trains in `step`, into the backbone's route table with one
  // upload (nn::Backbone::prepare_routes), before the step's first pass (simt_step). The passes of a
  // step whose tasks were not all prepared prepare their own.
  void prepare_step(const std::vector<int>& tasks, std::int64_t step);
  // What every training pass does first with its staged batch: the compute stream waits for its
  // upload on the device, the rest of it goes up on the compute stream, and the host tensors are kept
  // to the next sync. Returns the batch on the device.
  io::Batch take(StagedBatch& staged);
  // Config `task_batching`, in a single-process run.
  bool batches_tasks() const { return m_batch_tasks; }
  // cuda_graphs: on: captures and launches of the step graph so far, its recorded calls or graph
  // nodes, and its pool's bytes (zeros with graphs off).
  struct GraphStats {
    std::int64_t captures = 0, launches = 0;
    std::size_t nodes = 0, pool_bytes = 0;
  };
  GraphStats graph_stats() const;
  // After the optimizer's update: refreshes what the host keeps of the parameters (parameters_changed)
  // and reads the step's losses, with one sync for all of it.
  std::vector<TaskLoss> end_step(const std::vector<PendingLoss>& pending);
  // One pass's losses on their own (one sync), for callers outside a training step.
  TaskLoss read_loss(const PendingLoss& pending);
  // After anything wrote parameter values (an update, a checkpoint load, fine-tune set-up): the bf16
  // working copies and the host's copy of the router logits that routing reads. One sync.
  void parameters_changed();
  // Re-estimates the task's BN running statistics on its current routing: call with batches
  // 0, 1, ..., n-1 (a cumulative average; no gradients). Legos a task switched to late in training
  // otherwise carry stale or initial statistics for it.
  void calibrate(int task, const io::Batch& batch, int index);
  // Inference on a batch of input images (f32 [N, H, W, C] as the loader makes them; running BN
  // statistics of the task, no routing noise). Detections below `min_score` are dropped.
  TaskOutputs infer(int task, const Tensor& images, float min_score = 0.01f);
  // infer() on one batch into `eval`.
  void evaluate(int task, const io::Batch& batch, TaskEvaluator& eval);
  // Distributed runs: every call of train_step, calibrate, infer or evaluate (and serve_round) is one
  // round of the block's lockstep (one all-gather of what each member runs, all-to-alls per layer).
  // Also chooses how the lego layers run (expert-parallel exchange, or merged/per-lego locally).
  void set_distributed(const NetworkDist& d);
  // A round in which this rank runs no task but serves its legos to the other members of its block.
  // Returns false, having run nothing, when no member runs a task in it.
  bool serve_round(std::int64_t step);
  // Set for a step's last round: called with the number of lego layers when the heads' gradients are
  // final, then with each layer's index after its backward, then -1 after the stem's (null: off).
  void set_grads_final_hook(std::function<void(int)> hook) { m_grads_final = std::move(hook); }
  // Adds the routing balance regulariser over `tasks`; returns its value.
  float apply_balance(const std::vector<int>& tasks);

  std::vector<nn::Parameter*> parameters();
  // The parameters this process keeps in memory: all but the legos other ranks hold under expert
  // parallelism (nn::Parameter::release).
  std::vector<nn::Parameter*> resident_parameters();
  std::vector<nn::NamedTensor> buffers();
  // The same, with their owner tags (which rank keeps which in a distributed checkpoint).
  std::vector<nn::Buffer> tagged_buffers();
  nn::Backbone& backbone();
  const std::vector<TaskSpec>& tasks() const { return m_tasks; }
  // Where the parameters live and the passes run (the config's `device`), and the stream they use.
  Device device() const { return m_device; }
  Stream stream() const;
  // The batch's tensors on the network's device (the boxes stay on the host); the passes call it,
  // so a batch already there is not copied again.
  io::Batch on_device(const io::Batch& batch) const;
  // The dtype of the activations (f32, or bf16 with precision: bf16).
  DType activation_dtype() const { return m_act; }
  // Multiply-adds of one sample's forward pass through task's path (backbone, at the routed k).
  std::int64_t backbone_macs(int task) const;
  // The same for the whole path: backbone and the task's head.
  std::int64_t path_macs(int task) const;

 private:
  struct Heads;
  std::vector<TaskSpec> m_tasks;
  std::unique_ptr<nn::Backbone> m_backbone;
  std::unique_ptr<Heads> m_heads;
  TrainConfig m_config;
  NetworkDist m_dist;
  Device m_device;
  DType m_act = DType::F32;  // activations (config precision)
  std::function<void(int)> m_grads_final;
  std::unique_ptr<nn::StatSync> m_bn_sync;  // m_dist.bn_sync as nn sees it
  std::vector<Tensor> m_step_inputs;        // host tensors whose uploads may be queued, kept to the next sync
  std::int64_t m_syncs = 0;                 // syncs that released m_step_inputs (UploadBuffers' clock)
  UploadBuffers m_upload_buffers;
  std::map<int, std::array<int, 3>> m_det_grid;  // detection task -> its heat map's height, width, stride
  bool m_batch_tasks = false;
  // cuda_graphs: on (core/graph.hpp): the captured passes and what a launch needs (network.cpp).
  struct StepGraph;
  std::unique_ptr<StepGraph> m_graph;
  std::int64_t m_prepared_step = -1;  // prepare_step's step, tasks and routing key
  std::vector<int> m_prepared_tasks, m_routing;
  Stream m_stream;  // the passes' stream: the legacy one on CUDA, a blocking stream of its own with graphs
  // The passes of a step on batches already taken (on the device), targets[i] the staged CenterNet
  // targets of tasks[i]: one task at a time, or tasks of one input shape batched.
  std::vector<PendingLoss> run_passes(const std::vector<int>& tasks, const std::vector<io::Batch>& batches,
                                      const std::vector<CenterNetTargets>& targets, std::int64_t step);
  // The same through the step graph: captured when the tasks, routing or input shapes changed, else
  // the inputs are copied into the captured ones and the graph is launched.
  std::vector<PendingLoss> run_graphed(const std::vector<int>& tasks, const std::vector<io::Batch>& batches,
                                       const std::vector<CenterNetTargets>& targets, std::int64_t step,
                                       const std::vector<int>& routing);
  // One task's pass.
  PendingLoss train_one(int task, const io::Batch& batch, const CenterNetTargets& targets, std::int64_t step);
  // Tasks of one input shape as one backbone batch; losses in `tasks` order.
  std::vector<PendingLoss> train_batched(const std::vector<int>& tasks, const std::vector<const io::Batch*>& batches,
                                         const std::vector<const CenterNetTargets*>& targets, std::int64_t step);
  // A tensor on the network's device (itself when it is there), and the input images there in the
  // activations' dtype.
  Tensor to_device(const Tensor& t) const;
  Tensor input_on_device(const Tensor& images) const;
  // bf16: casts every weight's master value into its working copy (parameters_changed: once per step).
  void refresh_working_copies();
  // Reads the router logits and `extra` tensors (f32 [1] each) with one sync; returns the extras' values.
  std::vector<float> refresh_host_copies(const std::vector<const Tensor*>& extra);
  // After a sync: throws naming the passes' tasks when a CUDA loss saw labels outside [0, C).
  void check_labels(const std::vector<PendingLoss>& pending) const;
  // Starts a round on the exchange and returns the RunState of this rank's part.
  nn::RunState begin(int task, bool training, bool backward, float bn_momentum, std::int64_t step, const Shape& input);
  // A training step's head: forward, the task's losses (weighted by w, left on the device) and their
  // gradients, backward to the features' gradients.
  struct HeadPass {
    std::vector<Tensor> dfeat;
    std::vector<std::pair<std::string, Tensor>> losses;  // name, weighted loss
    float part_scale_size = 1.0f;                        // undoes the size loss's weight in the log
  };
  HeadPass head_pass(int task, nn::RunState& rs, const std::vector<Tensor>& features, const io::Batch& batch, float w,
                     const CenterNetTargets& staged);
};

}  // namespace gppf::train
