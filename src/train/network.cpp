#include "src/train/network.hpp"

#include <algorithm>
#include <limits>

#include "core/cuda_runtime.hpp"
#include "core/graph.hpp"
#include "core/log.hpp"
#include "kernels/cast.hpp"
#include "kernels/common.hpp"
#include "kernels/loss.hpp"
#include "src/dist/comm.hpp"
#include "src/dist/exchange.hpp"
#include "src/dist/exchange_strategy.hpp"
#include "src/dist/launch.hpp"
#include "src/dist/mlp_exchange.hpp"
#include "src/train/centernet.hpp"

namespace gppf::train {

TaskSpec resolve_task(const TaskConfig& config, const io::Manifest& manifest) {
  // A scene data set with boxes and masks serves detection and segmentation tasks alike.
  GPPF_CHECK(config.type != io::TaskType::Classification || manifest.task == io::TaskType::Classification, "task '",
             config.name, "': classification needs a classification data set; ", config.dataset, " holds ",
             io::task_name(manifest.task), " data");
  GPPF_CHECK(!manifest.classes.empty(), "task '", config.name, "': data set ", config.dataset, " lists no classes");
  GPPF_CHECK(manifest.height > 0 && manifest.width > 0, "task '", config.name, "': data set ", config.dataset,
             " has images of varying size; convert it with a fixed size");
  TaskSpec t;
  t.config = config;
  t.manifest = manifest;
  t.num_classes = static_cast<int>(manifest.classes.size()) + (config.type == io::TaskType::Segmentation ? 1 : 0);
  t.height = manifest.height;
  t.width = manifest.width;
  t.channels = manifest.channels;
  GPPF_CHECK(t.channels == 1 || t.channels == 3, "task '", config.name, "': ", t.channels,
             " image channels; gppf takes grey (1) or RGB (3)");
  if (config.type == io::TaskType::Detection)
    GPPF_CHECK(manifest.has_boxes, "task '", config.name, "': data set ", config.dataset, " has no boxes");
  if (config.type == io::TaskType::Segmentation)
    GPPF_CHECK(manifest.has_masks, "task '", config.name, "': data set ", config.dataset, " has no masks");
  return t;
}

TaskData open_tasks(const TrainConfig& config) {
  TaskData d;
  for (const auto& t : config.tasks) {
    d.datasets.push_back(io::Dataset::open(t.dataset));
    d.specs.push_back(resolve_task(t, d.datasets.back().manifest()));
  }
  return d;
}

// ---- evaluation -----------------------------------------------------------------------

TaskEvaluator::TaskEvaluator(const TaskSpec& spec)
    : m_type(spec.config.type), m_det(spec.num_classes), m_seg(std::max(1, spec.num_classes)) {}

void TaskEvaluator::add_classification(const Tensor& logits, const Tensor& labels) {
  const auto correct = kernels::topk_correct(logits, labels, std::min<int>(5, static_cast<int>(logits.dim(1))));
  m_top1 += correct.front();
  m_top5 += correct.back();
  m_samples += logits.dim(0);
}

void TaskEvaluator::add_detection(const std::vector<std::vector<Detection>>& dets,
                                  const std::vector<std::vector<io::Box>>& truth) {
  for (std::size_t i = 0; i < dets.size(); ++i) m_det.add_image(dets[i], truth[i]);
  m_samples += static_cast<std::int64_t>(dets.size());
}

void TaskEvaluator::add_segmentation(const Tensor& logits, const Tensor& masks) {
  const Tensor h = logits.device().is_host() ? logits : logits.to(Device::host());
  const Tensor m = masks.device().is_host() ? masks : masks.to(Device::host());
  const std::int64_t pixels = h.numel() / h.dim(-1);
  const std::int64_t c = h.dim(-1);
  std::vector<std::int32_t> pred(static_cast<std::size_t>(pixels));
  std::vector<std::uint8_t> truth(static_cast<std::size_t>(pixels));
  const float* l = h.data_as<float>();
  const std::int32_t* t = m.data_as<std::int32_t>();
  for (std::int64_t i = 0; i < pixels; ++i) {
    const float* row = l + i * c;
    pred[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(std::max_element(row, row + c) - row);
    truth[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(t[i]);
  }
  m_seg.add(pred, truth);
  m_samples += logits.dim(0);
}

std::map<std::string, double> TaskEvaluator::metrics() const {
  const double n = static_cast<double>(std::max<std::int64_t>(1, m_samples));
  switch (m_type) {
    case io::TaskType::Classification:
      return {{"top1", static_cast<double>(m_top1) / n}, {"top5", static_cast<double>(m_top5) / n}};
    case io::TaskType::Detection: return {{"map50", m_det.map50()}, {"map", m_det.map()}};
    case io::TaskType::Segmentation: return m_seg.metrics();
  }
  return {};
}

// ---- the network -----------------------------------------------------------------------

namespace {

// Synchronised BN's statistics summed over the data-parallel replicas.
class CommStatSync final : public nn::StatSync {
 public:
  explicit CommStatSync(dist::Comm& comm) : m_comm(comm) {}
  void allreduce_sum(double* data, std::int64_t n, const std::string& what) override {
    m_comm.allreduce_sum(data, n, what);
  }

 private:
  dist::Comm& m_comm;
};

// `device: cuda` without an index in a job of several ranks: the launcher's local rank picks the GPU
// (dist::choose_cuda_device), so that the ranks of a node do not all bind device 0.
Device rank_device(const TrainConfig& config) {
  Device d = config.target_device;
  int initialised = 0, world = 1;
  MPI_Initialized(&initialised);
  if (initialised) MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (!d.is_cuda() || config.device != "cuda" || world == 1 || !cuda::built_with_cuda()) return d;
  const dist::LaunchInfo launch = dist::detect_launch();
  const dist::CudaDeviceChoice c = dist::choose_cuda_device(launch, cuda::device_count());
  GPPF_CHECK(c.device >= 0, config.config_path, ": key 'device': cuda, but rank ", launch.rank,
             " sees no CUDA device (CUDA_VISIBLE_DEVICES, or the job's --gpus-per-node)");
  d.index = c.device;
  return d;
}

// The local lego strategy of a run (config `lego_strategy`): merged, but per-lego where the merged
// block's kernels are missing (kernels/merged.hpp: host f32 only so far) or a step graph is captured
// (the merged backward reads sums back mid-pass).
std::shared_ptr<nn::LegoStrategy> local_strategy(const TrainConfig& config, Device device, DType act) {
  const std::string& choice = config.lego_strategy;
  const bool merged_runs = device.is_host() && act == DType::F32 && config.cuda_graphs != "on";
  GPPF_CHECK(choice != "merged" || merged_runs, "key 'lego_strategy': merged runs on the host in fp32 only so far (",
             device.str(), ", ", dtype_name(act), "); use per-lego or auto");
  return choice != "per-lego" && merged_runs ? nn::make_merged_strategy() : nn::make_per_lego_strategy();
}

}  // namespace

struct Network::Heads {
  std::vector<std::unique_ptr<nn::ClassificationHead>> cls;
  std::vector<std::unique_ptr<nn::DetectionHead>> det;
  std::vector<std::unique_ptr<nn::SegmentationHead>> seg;
};

Network::Network(const TrainConfig& config, const std::vector<TaskSpec>& tasks)
    : m_tasks(tasks), m_heads(std::make_unique<Heads>()), m_config(config) {
  m_device = rank_device(config);
  m_stream = m_device.is_cuda() ? Stream{m_device, nullptr} : Stream::host();
  if (m_device.is_cuda()) {
    GPPF_CHECK(cuda::built_with_cuda(), config.config_path, ": key 'device': ", config.device,
               " needs a build with CUDA (GPPF_CUDA=ON)");
    GPPF_CHECK(m_device.index < cuda::device_count(), config.config_path, ": key 'device': ", config.device,
               " asked for, ", cuda::device_count(), " CUDA devices visible");
    cuda::set_device(m_device.index);
    kernels::set_allow_tf32(config.tf32);
    // The legacy stream cannot be captured; a blocking stream keeps its ordering with the code that
    // still queues there.
    if (config.cuda_graphs == "on") m_stream = cuda::create_stream(m_device.index, /*blocking=*/true);
  }
  const int n = static_cast<int>(tasks.size());
  nn::BackboneSpec spec = config.backbone;
  if (spec.vit && spec.vit->grid_h == 0 && !tasks.empty()) {
    // The position embeddings' grid: the largest input's (the first of those), the others interpolate.
    // Down, not up: a 7x7 grid stretched over 16x16 tokens gave segmentation a coarse sense of place
    // (docs/ARCHITECTURE.md).
    const TaskSpec* big = &tasks[0];
    for (const TaskSpec& t : tasks)
      if (static_cast<std::int64_t>(t.height) * t.width > static_cast<std::int64_t>(big->height) * big->width) big = &t;
    GPPF_CHECK(big->height % spec.vit->patch == 0 && big->width % spec.vit->patch == 0, config.config_path, ": task '",
               big->config.name, "' input ", big->height, "x", big->width, " is not a multiple of model.vit.patch ",
               spec.vit->patch);
    spec.vit->grid_h = big->height / spec.vit->patch;
    spec.vit->grid_w = big->width / spec.vit->patch;
  }
  m_backbone = std::make_unique<nn::Backbone>(spec, n, config.seed);
  const auto channels = m_backbone->stage_channels();
  std::mt19937_64 rng(config.seed + 1000);
  m_heads->cls.resize(tasks.size());
  m_heads->det.resize(tasks.size());
  m_heads->seg.resize(tasks.size());
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    const TaskSpec& s = tasks[t];
    const std::string name = "head." + s.config.name;
    nn::NeckSpec neck = config.neck;
    neck.context_levels = std::max(0, s.config.context_levels);
    switch (s.config.type) {
      case io::TaskType::Classification:
        m_heads->cls[t] = std::make_unique<nn::ClassificationHead>(name, channels.back(), s.num_classes, rng,
                                                                   !(spec.vit && spec.vit->pool != "grid"));
        break;
      case io::TaskType::Detection:
        m_heads->det[t] = std::make_unique<nn::DetectionHead>(name, channels, neck, s.num_classes, n, rng);
        break;
      case io::TaskType::Segmentation:
        m_heads->seg[t] = std::make_unique<nn::SegmentationHead>(name, channels, neck, s.num_classes, n, rng);
        break;
    }
  }
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    const nn::Owner head{nn::Owner::Kind::Head, -1, -1, static_cast<int>(t)};
    if (m_heads->cls[t]) nn::set_owner(*m_heads->cls[t], head);
    if (m_heads->det[t]) nn::set_owner(*m_heads->det[t], head);
    if (m_heads->seg[t]) nn::set_owner(*m_heads->seg[t], head);
  }
  // Built and initialised on the host (same seeds, same values on every device), then moved.
  if (m_device.is_cuda()) {
    for (nn::Parameter* p : parameters()) {
      p->value = p->value.to(m_device);
      p->grad = p->grad.defined() ? p->grad.to(m_device) : Tensor::zeros(p->value.shape(), DType::F32, m_device);
    }
    for (auto& b : buffers()) *b.second = b.second->to(m_device);
    if (config.precision == "bf16") {
      m_act = DType::BF16;
      for (nn::Parameter* p : parameters())
        if (p->name.ends_with(".weight")) p->working = Tensor::empty(p->value.shape(), DType::BF16, m_device);
    }
    cuda::synchronize(stream());
  }
  m_backbone->set_strategy(local_strategy(m_config, m_device, m_act));
  GPPF_CHECK(!spec.vit || config.task_batching != "on", config.config_path,
             ": key 'task_batching': on is not supported by gppf-vit yet (its MLP legos run per task)");
  m_batch_tasks = !spec.vit && (config.task_batching == "on" || (config.task_batching == "auto" && m_device.is_cuda()));
  if (config.cuda_graphs == "on") m_graph = std::make_unique<StepGraph>();
  parameters_changed();
}

void Network::set_distributed(const NetworkDist& d) {
  m_dist = d;
  m_bn_sync = d.bn_sync ? std::make_unique<CommStatSync>(*d.bn_sync) : nullptr;
  const bool experts = d.exchange && d.exchange->size() > 1;
  m_backbone->set_strategy(experts ? dist::make_exchange_strategy(*d.exchange)
                                   : local_strategy(m_config, m_device, m_act));
  m_backbone->set_mlp_runner(experts ? dist::make_mlp_exchange(*d.exchange) : nullptr);
  GPPF_CHECK(!m_graph, m_config.config_path,
             ": key 'cuda_graphs': on runs in a single process so far (a distributed step's collectives and rounds "
             "are not captured); set it off");
  // A distributed step runs one task per round (its exchange and replicas are per task).
  m_batch_tasks = false;
}

Stream Network::stream() const { return m_stream; }

Tensor Network::to_device(const Tensor& t) const {
  return t.defined() && t.device() != m_device ? t.to(m_device, stream()) : t;
}

Tensor Network::input_on_device(const Tensor& images) const {
  const Tensor x = to_device(images);
  return x.dtype() == m_act ? x : kernels::cast(x, m_act, stream());
}

io::Batch Network::on_device(const io::Batch& batch) const {
  if (m_device.is_host()) return batch;
  io::Batch b = batch;
  b.images = input_on_device(b.images);
  b.labels = to_device(b.labels);
  b.masks = to_device(b.masks);
  return b;
}

void Network::refresh_working_copies() {
  if (m_act == DType::F32) return;
  for (nn::Parameter* p : parameters())
    if (p->working.defined()) kernels::cast(p->value, p->working, stream());
}

std::vector<float> Network::refresh_host_copies(const std::vector<const Tensor*>& extra) {
  refresh_working_copies();
  std::vector<const Tensor*> all = m_backbone->router_values();
  const std::size_t routers = all.size();
  all.insert(all.end(), extra.begin(), extra.end());
  const std::vector<float> values = read_back_all(all, stream());
  m_step_inputs.clear();  // synchronised: their uploads are done
  ++m_syncs;
  const std::size_t end = m_backbone->set_router_copies(values, 0);
  GPPF_CHECK(all.size() - routers == values.size() - end, "refresh_host_copies: extras are f32 [1] each");
  return {values.begin() + static_cast<std::ptrdiff_t>(end), values.end()};
}

void Network::check_labels(const std::vector<PendingLoss>& pending) const {
  if (!m_device.is_cuda()) return;
  try {
    kernels::check_label_errors(stream(), /*wait=*/false);  // the caller's read_back synchronised
  } catch (const Error& e) {
    std::string tasks;
    for (const PendingLoss& p : pending) {
      const TaskSpec& spec = m_tasks[static_cast<std::size_t>(p.task)];
      if (spec.config.type != io::TaskType::Detection)
        tasks += str(tasks.empty() ? "" : ", ", "'", spec.config.name, "' (", spec.config.dataset, ")");
    }
    GPPF_THROW("task ", tasks, ": ", e.reason());
  }
}

void Network::parameters_changed() { (void)refresh_host_copies({}); }

namespace {
// A pass's losses from their values read back (values[i] for pending.losses[i]).
TaskLoss task_loss(const PendingLoss& pending, const float* values) {
  TaskLoss result;
  result.task = pending.task;
  for (std::size_t i = 0; i < pending.losses.size(); ++i) {
    const std::string& name = pending.losses[i].first;
    result.total += values[i];
    result.parts[name] = values[i] * pending.inv_weight * (name == "size" ? pending.part_scale_size : 1.0f);
  }
  return result;
}
}  // namespace

std::vector<TaskLoss> Network::end_step(const std::vector<PendingLoss>& pending) {
  std::vector<const Tensor*> losses;
  for (const PendingLoss& p : pending)
    for (const auto& named : p.losses) losses.push_back(&named.second);
  const std::vector<float> values = refresh_host_copies(losses);
  check_labels(pending);
  std::vector<TaskLoss> out;
  std::size_t at = 0;
  for (const PendingLoss& p : pending) {
    out.push_back(task_loss(p, values.data() + at));
    at += p.losses.size();
  }
  return out;
}

TaskLoss Network::read_loss(const PendingLoss& pending) {
  std::vector<const Tensor*> losses;
  for (const auto& named : pending.losses) losses.push_back(&named.second);
  const std::vector<float> values = read_back_all(losses, stream());
  m_step_inputs.clear();
  ++m_syncs;
  check_labels({pending});
  return task_loss(pending, values.data());
}

Network::~Network() {
  m_graph.reset();
  if (m_stream.handle) cuda::destroy_stream(m_stream);
}

nn::Backbone& Network::backbone() { return *m_backbone; }

std::vector<nn::Parameter*> Network::resident_parameters() {
  std::vector<nn::Parameter*> out;
  for (nn::Parameter* p : parameters())
    if (!p->released()) out.push_back(p);
  return out;
}

std::vector<nn::Parameter*> Network::parameters() {
  std::vector<nn::Parameter*> out;
  m_backbone->collect_parameters(out);
  for (std::size_t t = 0; t < m_tasks.size(); ++t) {
    if (m_heads->cls[t]) m_heads->cls[t]->collect_parameters(out);
    if (m_heads->det[t]) m_heads->det[t]->collect_parameters(out);
    if (m_heads->seg[t]) m_heads->seg[t]->collect_parameters(out);
  }
  return out;
}

std::vector<nn::NamedTensor> Network::buffers() { return nn::named(tagged_buffers()); }

std::vector<nn::Buffer> Network::tagged_buffers() {
  std::vector<nn::Buffer> out;
  m_backbone->collect_buffers(out);
  for (std::size_t t = 0; t < m_tasks.size(); ++t) {
    if (m_heads->det[t]) m_heads->det[t]->collect_buffers(out);
    if (m_heads->seg[t]) m_heads->seg[t]->collect_buffers(out);
  }
  return out;
}

float Network::apply_balance(const std::vector<int>& tasks) { return m_backbone->apply_balance(tasks); }

std::int64_t Network::backbone_macs(int task) const {
  const TaskSpec& s = m_tasks[static_cast<std::size_t>(task)];
  const auto& b = m_backbone->spec();
  return m_backbone->macs({1, s.height, s.width, s.channels}, b.num_shared + b.top_k);
}

std::int64_t Network::path_macs(int task) const {
  const auto t = static_cast<std::size_t>(task);
  const TaskSpec& s = m_tasks[t];
  const auto features = m_backbone->stage_shapes({1, s.height, s.width, s.channels});
  std::int64_t head = 0;
  if (m_heads->cls[t]) head = m_heads->cls[t]->macs(features);
  if (m_heads->det[t]) head = m_heads->det[t]->macs(features);
  if (m_heads->seg[t]) head = m_heads->seg[t]->macs(features);
  return backbone_macs(task) + head;
}

nn::RunState Network::begin(int task, bool training, bool backward, float bn_momentum, std::int64_t step,
                            const Shape& input) {
  nn::RunState rs;
  rs.task = task;
  rs.training = training;
  rs.device = m_device;
  rs.stream = stream();
  if (training && backward && m_dist.replicas > 1) rs.bn_sync = m_bn_sync.get();
  if (m_dist.exchange && m_dist.exchange->size() > 1) {
    dist::PeerWork w;
    w.task = task;
    w.training = training;
    w.backward = backward;
    w.bn_momentum = bn_momentum;
    w.step = step;
    w.input = input;
    m_dist.exchange->begin_round(w);
  }
  if (training && backward && m_grads_final) rs.grads_final = &m_grads_final;
  return rs;
}

bool Network::serve_round(std::int64_t step) {
  if (!m_dist.exchange || m_dist.exchange->size() == 1) return false;
  nn::RunState rs = begin(-1, false, false, -1.0f, step, {});
  if (!m_dist.exchange->anyone_working()) return false;
  if (m_dist.replicas > 1) rs.bn_sync = m_bn_sync.get();
  if (m_grads_final) rs.grads_final = &m_grads_final;
  nn::BackboneSaved saved;
  m_backbone->forward(rs, Tensor(), step, &saved);
  if (m_dist.exchange->anyone_backward()) m_backbone->backward(rs, {}, saved);
  return true;
}

Network::HeadPass Network::head_pass(int task, nn::RunState& rs, const std::vector<Tensor>& features,
                                     const io::Batch& batch, float w, const CenterNetTargets& staged) {
  const auto t = static_cast<std::size_t>(task);
  const TaskSpec& spec = m_tasks[t];
  // The losses stay where they were computed until the backward pass is queued: on a GPU, reading
  // them first would make the host wait for the forward before it could launch the backward.
  auto loss_slot = [&] { return Tensor::empty({1}, DType::F32, m_device); };
  HeadPass hp;
  switch (spec.config.type) {
    case io::TaskType::Classification: {
      Tensor loss = loss_slot();
      Tensor logits = m_heads->cls[t]->forward(rs, features);
      Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
      kernels::CrossEntropyParams p;
      p.scale = w;
      kernels::softmax_cross_entropy(p, logits, batch.labels, loss, kernels::GradMode::Overwrite, &dlogits, rs.stream);
      hp.losses.emplace_back("ce", loss);
      hp.dfeat = m_heads->cls[t]->backward(rs, dlogits);
      break;
    }
    case io::TaskType::Detection: {
      nn::DetectionOutputs out = m_heads->det[t]->forward(rs, features);
      const int oh = static_cast<int>(out.heatmap.dim(1)), ow = static_cast<int>(out.heatmap.dim(2));
      const int stride = spec.height / oh;
      m_det_grid[task] = {oh, ow, stride};  // later batches of the task are staged with their targets
      const bool fits = staged.heatmap.defined() && staged.heatmap.shape() == out.heatmap.shape();
      // Page-locked on a GPU: an upload from pageable memory would wait for the device (four per pass).
      CenterNetTargets tg =
          fits ? staged : encode_centernet(batch.boxes, oh, ow, stride, spec.num_classes, m_device.is_cuda());
      for (Tensor* x : {&tg.heatmap, &tg.size, &tg.offset, &tg.weight}) {
        if (m_device.is_cuda() && x->device().is_host()) m_step_inputs.push_back(*x);  // kept to the next sync
        *x = to_device(*x);
      }
      nn::DetectionOutputs grads{Tensor::empty(out.heatmap.shape(), m_act, m_device),
                                 Tensor::empty(out.size.shape(), m_act, m_device),
                                 Tensor::empty(out.offset.shape(), m_act, m_device)};
      // CenterNet's weights (kSizeLossWeight; L1 averaged over centre cells).
      Tensor lh = loss_slot(), ls = loss_slot(), lo = loss_slot();
      kernels::FocalParams fp;
      fp.scale = w;
      kernels::centernet_focal_loss(fp, out.heatmap, tg.heatmap, lh, kernels::GradMode::Overwrite, &grads.heatmap,
                                    rs.stream);
      kernels::RegressionParams rp;
      rp.scale = kSizeLossWeight * w;
      kernels::l1_loss(rp, out.size, tg.size, tg.weight, ls, kernels::GradMode::Overwrite, &grads.size, rs.stream);
      rp.scale = w;
      kernels::l1_loss(rp, out.offset, tg.offset, tg.weight, lo, kernels::GradMode::Overwrite, &grads.offset,
                       rs.stream);
      hp.losses = {{"heatmap", lh}, {"size", ls}, {"offset", lo}};
      hp.part_scale_size = 1.0f / kSizeLossWeight;
      hp.dfeat = m_heads->det[t]->backward(rs, grads);
      break;
    }
    case io::TaskType::Segmentation: {
      Tensor loss = loss_slot();
      Tensor logits = m_heads->seg[t]->forward(rs, features, spec.height, spec.width);
      Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
      kernels::CrossEntropyParams p;
      p.scale = w;
      p.ignore_index = 255;
      kernels::softmax_cross_entropy(p, logits, batch.masks, loss, kernels::GradMode::Overwrite, &dlogits, rs.stream);
      hp.losses.emplace_back("ce", loss);
      hp.dfeat = m_heads->seg[t]->backward(rs, dlogits);
      break;
    }
  }
  return hp;
}

namespace {
// A pass's input tensors, in a fixed order (some undefined).
std::array<Tensor*, 7> input_slots(io::Batch& b, CenterNetTargets& t) {
  return {&b.images, &b.labels, &b.masks, &t.heatmap, &t.size, &t.offset, &t.weight};
}

// Parameter::touched of each parameter, and setting them back (a step graph's host side).
std::vector<char> touched_flags(const std::vector<nn::Parameter*>& params) {
  std::vector<char> out;
  for (const nn::Parameter* p : params) out.push_back(p->touched ? 1 : 0);
  return out;
}
void set_touched(const std::vector<nn::Parameter*>& params, const std::vector<char>& flags) {
  for (std::size_t k = 0; k < params.size(); ++k) params[k]->touched = flags[k] != 0;
}
}  // namespace

StagedBatch Network::stage(int task, const io::Batch& batch) {
  const auto t = static_cast<std::size_t>(task);
  GPPF_CHECK(t < m_tasks.size(), "stage: task ", task, " of ", m_tasks.size());
  StagedBatch s;
  s.task = task;
  s.batch = batch;
  // The targets depend on the boxes and the head's output grid only: encoded now, they go up with the
  // batch (on the host, the pass reads the same values it would encode).
  if (auto it = m_det_grid.find(task); it != m_det_grid.end() && m_tasks[t].config.type == io::TaskType::Detection) {
    const auto [oh, ow, stride] = it->second;
    s.targets = encode_centernet(batch.boxes, oh, ow, stride, m_tasks[t].num_classes, m_device.is_cuda());
  }
  if (!m_device.is_cuda()) return s;
  // Pageable tensors stay on the host: an asynchronous copy from them makes the host wait anyway, so
  // the pass uploads them on the compute stream as before.
  std::vector<std::pair<int, Tensor*>> pinned;
  const std::array<Tensor*, 7> all = input_slots(s.batch, s.targets);  // the upload buffers' slots
  for (std::size_t k = 0; k < all.size(); ++k)
    if (all[k]->defined() && all[k]->device().is_host() && all[k]->is_pinned() && all[k]->numel() > 0)
      pinned.emplace_back(static_cast<int>(k), all[k]);
  if (pinned.empty()) return s;
  std::vector<Tensor> dst;
  bool fresh = false;
  for (const auto& [slot, x] : pinned) {
    bool f = false;
    dst.push_back(m_upload_buffers.acquire(task, slot, x->shape(), x->dtype(), m_device, m_syncs, f));
    fresh = fresh || f;
  }
  s.upload = std::make_unique<Upload>(m_device);
  if (fresh) s.upload->after(stream());
  for (std::size_t k = 0; k < pinned.size(); ++k) {
    s.upload->copy(dst[k], *pinned[k].second);
    *pinned[k].second = dst[k];
  }
  s.upload->finish();
  return s;
}

io::Batch Network::take(StagedBatch& staged) {
  if (staged.upload) {
    // The compute stream waits for the copies on the device, so its next sync covers them: what they
    // read and wrote is kept to that sync, and their buffers are free after it.
    for (Tensor& x : staged.upload->await(stream())) m_step_inputs.push_back(std::move(x));
    staged.upload.reset();
    for (const Tensor* x : input_slots(staged.batch, staged.targets))
      m_upload_buffers.read_until(staged.task, *x, m_syncs + 1);
  }
  // A page-locked tensor still on the host goes up on the compute stream below: its block must not go
  // back to the pinned cache (and the loader) before the step's sync.
  if (m_device.is_cuda())
    for (const Tensor* x : {&staged.batch.images, &staged.batch.labels, &staged.batch.masks})
      if (x->defined() && x->device().is_host()) m_step_inputs.push_back(*x);
  return on_device(staged.batch);
}

std::vector<PendingLoss> Network::train_tasks(const std::vector<int>& tasks, const std::vector<io::Batch>& batches,
                                              std::int64_t step) {
  GPPF_CHECK(tasks.size() == batches.size(), "train_tasks: ", batches.size(), " batches for ", tasks.size(), " tasks");
  std::vector<StagedBatch> staged;
  for (std::size_t i = 0; i < tasks.size(); ++i) staged.push_back(stage(tasks[i], batches[i]));
  return train_staged(std::move(staged), step);
}

std::vector<PendingLoss> Network::train_staged(std::vector<StagedBatch> batches, std::int64_t step) {
  std::vector<int> tasks;
  std::vector<io::Batch> taken;
  std::vector<CenterNetTargets> targets;
  for (StagedBatch& b : batches) {
    tasks.push_back(b.task);
    taken.push_back(take(b));
    targets.push_back(b.targets);
  }
  const bool prepared =
      m_prepared_step == step && std::all_of(tasks.begin(), tasks.end(), [&](int t) {
        return std::find(m_prepared_tasks.begin(), m_prepared_tasks.end(), t) != m_prepared_tasks.end();
      });
  if (!prepared) prepare_step(tasks, step);
  if (m_graph) return run_graphed(tasks, taken, targets, step, m_routing);
  return run_passes(tasks, taken, targets, step);
}

void Network::prepare_step(const std::vector<int>& tasks, std::int64_t step) {
  m_routing = m_backbone->prepare_routes(tasks, step, true, stream());
  m_prepared_step = step;
  m_prepared_tasks = tasks;
}

std::vector<PendingLoss> Network::run_passes(const std::vector<int>& tasks, const std::vector<io::Batch>& batches,
                                             const std::vector<CenterNetTargets>& targets, std::int64_t step) {
  std::vector<PendingLoss> out(batches.size());
  std::vector<bool> done(batches.size(), false);
  for (std::size_t i = 0; i < batches.size(); ++i) {
    if (done[i]) continue;
    // With task batching on, a task alone runs the same way (its legos' batches stacked).
    if (!m_batch_tasks) {
      out[i] = train_one(tasks[i], batches[i], targets[i], step);
      done[i] = true;
      continue;
    }
    // The tasks from i on whose input has task i's shape (all samples but the batch size).
    std::vector<std::size_t> group{i};
    const Shape& si = batches[i].images.shape();
    for (std::size_t j = i + 1; j < batches.size(); ++j) {
      const Shape& sj = batches[j].images.shape();
      if (!done[j] && sj.size() == si.size() && std::equal(si.begin() + 1, si.end(), sj.begin() + 1))
        group.push_back(j);
    }
    std::vector<int> group_tasks;
    std::vector<const io::Batch*> group_batches;
    std::vector<const CenterNetTargets*> group_targets;
    for (std::size_t j : group) {
      group_tasks.push_back(tasks[j]);
      group_batches.push_back(&batches[j]);
      group_targets.push_back(&targets[j]);
    }
    std::vector<PendingLoss> losses = train_batched(group_tasks, group_batches, group_targets, step);
    for (std::size_t k = 0; k < group.size(); ++k) {
      out[group[k]] = std::move(losses[k]);
      done[group[k]] = true;
    }
  }
  return out;
}

struct Network::StepGraph {
  runtime::Graph graph;
  std::vector<std::int64_t> key;   // of the captured passes: tasks, routing, every input's dtype and shape
  std::vector<std::int64_t> seen;  // of the last step run eagerly
  std::vector<Tensor> inputs;      // what the captured passes read: a launch's batches are copied in
  std::vector<PendingLoss> losses;
  std::vector<char> touched;  // Parameter::touched after the passes, per parameters()
  std::int64_t captures = 0, launches = 0;
  bool off = false;  // a capture failed: the run goes on eagerly
};

Network::GraphStats Network::graph_stats() const {
  if (!m_graph) return {};
  return {m_graph->captures, m_graph->launches, m_graph->graph.nodes(), m_graph->graph.pool_bytes()};
}

std::vector<PendingLoss> Network::run_graphed(const std::vector<int>& tasks, const std::vector<io::Batch>& batches,
                                              const std::vector<CenterNetTargets>& targets, std::int64_t step,
                                              const std::vector<int>& routing) {
  StepGraph& g = *m_graph;
  if (g.off) return run_passes(tasks, batches, targets, step);
  std::vector<io::Batch> in = batches;
  std::vector<CenterNetTargets> tg = targets;
  std::vector<std::int64_t> key(routing.begin(), routing.end());
  std::vector<Tensor*> slots;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    // A detection task's first pass encodes its targets from the boxes on the host (the head's grid
    // is not known before): that pass runs as it is, and the task's later batches come with targets.
    if (m_tasks[static_cast<std::size_t>(tasks[i])].config.type == io::TaskType::Detection &&
        !targets[i].heatmap.defined())
      return run_passes(tasks, batches, targets, step);
    key.push_back(tasks[i]);
    for (Tensor* x : input_slots(in[i], tg[i])) {
      key.push_back(x->defined() ? static_cast<std::int64_t>(x->dtype()) : -1);
      if (!x->defined()) continue;
      key.insert(key.end(), x->shape().begin(), x->shape().end());
      key.push_back(-2);
      slots.push_back(x);
    }
  }
  const std::vector<nn::Parameter*> params = parameters();
  if (!g.graph.ready() || key != g.key) {
    // A key's first step runs eagerly: it creates the stream's library handles, sizes the scratch
    // memory and chooses the convolution algorithms, none of which a capture may do. The next step
    // with the same key is captured.
    if (key != g.seen) {
      g.seen = key;
      return run_passes(tasks, batches, targets, step);
    }
    g.graph.reset();
    g.key = key;
    g.inputs.clear();
    for (Tensor* x : slots) {
      // Outside the pool: the graph's fixed input addresses.
      g.inputs.push_back(Tensor::empty(x->shape(), x->dtype(), x->device()));
      g.inputs.back().copy_from(*x, stream());
      *x = g.inputs.back();
    }
    const std::vector<char> before = touched_flags(params);
    try {
      g.graph.begin_capture(stream());
      g.losses = run_passes(tasks, in, tg, step);
      g.graph.end_capture();
    } catch (const std::exception& e) {
      // Nothing captured has run: the step runs eagerly, and the rest of the run without graphs (an
      // error of the data, not of the capture, comes back from the eager passes).
      g.graph.abort_capture();
      g.graph.reset();
      g.key.clear();
      g.inputs.clear();
      g.off = true;
      log::warn("cuda_graphs: the capture of step ", step, " failed (", e.what(), "); this run goes on without graphs");
      set_touched(params, before);
      return run_passes(tasks, batches, targets, step);
    }
    g.touched = touched_flags(params);
    ++g.captures;
  } else {
    for (std::size_t k = 0; k < slots.size(); ++k) g.inputs[k].copy_from(*slots[k], stream());
    // What the passes leave on the host: which gradients they wrote.
    set_touched(params, g.touched);
  }
  g.graph.launch();
  ++g.launches;
  return g.losses;
}

std::vector<PendingLoss> Network::train_batched(const std::vector<int>& tasks,
                                                const std::vector<const io::Batch*>& batches,
                                                const std::vector<const CenterNetTargets*>& targets,
                                                std::int64_t step) {
  nn::RunState rs = begin(-1, true, true, -1.0f, step, {});
  rs.task = -1;
  std::int64_t n = 0;
  for (std::size_t k = 0; k < tasks.size(); ++k) {
    rs.segments.push_back({tasks[k], batches[k]->images.dim(0)});
    n += rs.segments.back().count;
  }
  const bool alone = tasks.size() == 1;  // a task alone: its own tensors, nothing to gather
  Tensor x = batches[0]->images;
  std::int64_t at = 0;
  if (!alone) {
    Shape shape = x.shape();
    shape[0] = n;
    x = Tensor::empty(shape, x.dtype(), m_device);
    for (const io::Batch* b : batches) {
      x.narrow0(at, b->images.dim(0)).copy_from(b->images, rs.stream);
      at += b->images.dim(0);
    }
  }
  nn::BackboneSaved saved;
  const std::vector<Tensor> features = m_backbone->forward(rs, x, step, &saved);
  // Each task's head on its rows of the features; their gradients gathered into the batch's.
  std::vector<Tensor> dfeat(features.size());
  std::vector<PendingLoss> out;
  at = 0;
  for (std::size_t k = 0; k < tasks.size(); ++k) {
    const int task = tasks[k];
    const std::int64_t count = rs.segments[k].count;
    nn::RunState rt = rs;
    rt.task = task;
    rt.segments.clear();
    std::vector<Tensor> mine;
    for (const Tensor& f : features) mine.push_back(f.narrow0(at, count));
    const float w = m_tasks[static_cast<std::size_t>(task)].config.loss_weight;
    HeadPass hp = head_pass(task, rt, mine, *batches[k], w, *targets[k]);
    if (alone) dfeat = hp.dfeat;
    for (std::size_t i = 0; i < features.size() && !alone; ++i) {
      const bool has = i < hp.dfeat.size() && hp.dfeat[i].defined();
      if (!has && !dfeat[i].defined()) continue;
      if (!dfeat[i].defined()) {
        dfeat[i] = Tensor::empty(features[i].shape(), features[i].dtype(), m_device);
        if (at > 0) dfeat[i].narrow0(0, at).zero_(rs.stream);  // earlier tasks sent no gradient here
      }
      Tensor rows = dfeat[i].narrow0(at, count);
      if (has)
        rows.copy_from(hp.dfeat[i], rs.stream);
      else
        rows.zero_(rs.stream);
    }
    out.push_back({task, hp.losses, w > 0 ? 1.0f / w : 0.0f, hp.part_scale_size});
    at += count;
  }
  m_backbone->backward(rs, dfeat, saved);
  return out;
}

PendingLoss Network::train_step(int task, const io::Batch& host_batch, std::int64_t step) {
  std::vector<StagedBatch> one;
  one.push_back(stage(task, host_batch));
  return std::move(train_staged(std::move(one), step)[0]);
}

PendingLoss Network::train_one(int task, const io::Batch& batch, const CenterNetTargets& targets, std::int64_t step) {
  const auto t = static_cast<std::size_t>(task);
  const TaskSpec& spec = m_tasks[t];
  // Replicas each hold 1/R of the micro-batch: the loss of a slice counts 1/R, and the all-reduce sums.
  const float w = spec.config.loss_weight / static_cast<float>(m_dist.replicas);
  nn::RunState rs = begin(task, true, true, -1.0f, step, batch.images.shape());
  nn::BackboneSaved saved;
  std::vector<Tensor> features = m_backbone->forward(rs, batch.images, step, &saved);
  const HeadPass hp = head_pass(task, rs, features, batch, w, targets);
  if (rs.grads_final) (*rs.grads_final)(static_cast<int>(m_backbone->routed_layers().size()));
  m_backbone->backward(rs, hp.dfeat, saved);
  // Labels outside [0, C) found on the GPU are recorded there and reported after the step's sync
  // (end_step, read_loss); on the host the loss throws at once.
  return {task, hp.losses, w > 0 ? 1.0f / w : 0.0f, hp.part_scale_size};
}

void Network::calibrate(int task, const io::Batch& host_batch, int index) {
  const io::Batch batch = on_device(host_batch);
  if (m_device.is_cuda())  // no sync here: see train_step
    for (const Tensor* x : {&host_batch.images, &host_batch.labels, &host_batch.masks}) m_step_inputs.push_back(*x);
  const std::int64_t after_warmup = std::numeric_limits<std::int64_t>::max();
  nn::RunState rs = begin(task, true, false, 1.0f / static_cast<float>(index + 1), after_warmup, batch.images.shape());
  rs.bn_momentum = 1.0f / static_cast<float>(index + 1);
  const std::vector<Tensor> features = m_backbone->forward(rs, batch.images, after_warmup);
  const auto t = static_cast<std::size_t>(task);
  switch (m_tasks[t].config.type) {
    case io::TaskType::Classification: break;  // no BN in the head
    case io::TaskType::Detection: m_heads->det[t]->forward(rs, features); break;
    case io::TaskType::Segmentation: m_heads->seg[t]->forward(rs, features, m_tasks[t].height, m_tasks[t].width); break;
  }
}

TaskOutputs Network::infer(int task, const Tensor& host_images, float min_score) {
  const Tensor images = input_on_device(host_images);
  const auto t = static_cast<std::size_t>(task);
  const TaskSpec& spec = m_tasks[t];
  nn::RunState rs = begin(task, false, false, -1.0f, 0, images.shape());
  std::vector<Tensor> features = m_backbone->forward(rs, images, 0);
  TaskOutputs result;
  switch (spec.config.type) {
    case io::TaskType::Classification: result.logits = m_heads->cls[t]->forward(rs, features); break;
    case io::TaskType::Detection: {
      nn::DetectionOutputs out = m_heads->det[t]->forward(rs, features);
      if (m_device.is_cuda()) {
        for (Tensor* x : {&out.heatmap, &out.size, &out.offset})
          *x = (x->dtype() == DType::F32 ? *x : kernels::cast(*x, DType::F32, rs.stream)).to(Device::host(), rs.stream);
      }
      const int oh = static_cast<int>(out.heatmap.dim(1)), ow = static_cast<int>(out.heatmap.dim(2));
      const int c = spec.num_classes;
      for (std::int64_t b = 0; b < out.heatmap.dim(0); ++b)
        result.detections.push_back(decode_centernet(out.heatmap.data_as<float>() + b * oh * ow * c,
                                                     out.size.data_as<float>() + b * oh * ow * 2,
                                                     out.offset.data_as<float>() + b * oh * ow * 2, oh, ow, c,
                                                     spec.height / oh, spec.config.max_detections, min_score));
      break;
    }
    case io::TaskType::Segmentation: {
      result.logits = m_heads->seg[t]->forward(rs, features, spec.height, spec.width);
      if (result.logits.dtype() != DType::F32) result.logits = kernels::cast(result.logits, DType::F32, rs.stream);
      break;
    }
  }
  return result;
}

void Network::evaluate(int task, const io::Batch& batch, TaskEvaluator& eval) {
  TaskOutputs out = infer(task, batch.images);  // labels, boxes and masks are read on the host
  switch (m_tasks[static_cast<std::size_t>(task)].config.type) {
    case io::TaskType::Classification: eval.add_classification(out.logits, batch.labels); break;
    case io::TaskType::Detection: eval.add_detection(out.detections, batch.boxes); break;
    case io::TaskType::Segmentation: eval.add_segmentation(out.logits, batch.masks); break;
  }
}

}  // namespace gppf::train
