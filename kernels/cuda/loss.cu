// CUDA losses. Every reduction runs in a fixed order for a given shape (per-thread grid-stride sums, a
// fixed shared-memory tree per block, the block partials summed by one block), so results are
// deterministic; nothing waits for the device except the invalid-label error path.
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "core/cuda/check.hpp"
#include "core/cuda_runtime.hpp"
#include "kernels/cast.hpp"
#include "kernels/cuda/context.hpp"
#include "kernels/functors/loss.hpp"
#include "kernels/loss.hpp"

namespace gppf::kernels::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int kMaxBlocks = 1024;

int grid_for(std::int64_t n) {
  return static_cast<int>(std::clamp<std::int64_t>((n + kBlock - 1) / kBlock, 1, kMaxBlocks));
}

// Sum over the block in a fixed tree; every thread gets the result.
__device__ double block_sum(double v) {
  __shared__ double s[kBlock];
  s[threadIdx.x] = v;
  __syncthreads();
  for (int w = kBlock / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  const double r = s[0];
  __syncthreads();  // s is reused by the next call
  return r;
}

// part[0..count) summed in the same order by every block that asks.
__device__ double sum_parts(const double* part, int count) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += part[i];
  return block_sum(acc);
}

__device__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ std::int64_t global_thread() { return blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; }
__device__ std::int64_t grid_threads() { return static_cast<std::int64_t>(gridDim.x) * blockDim.x; }

// ---- element-wise losses (kernels/functors/loss.hpp) ----

template <class Op>
__global__ void norm_kernel(Op op, std::int64_t n, double* part) {
  double acc = 0.0;
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) acc += op.norm(i);
  acc = block_sum(acc);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

// norm_part == nullptr: the normaliser is known_norm.
__device__ double normaliser(const double* norm_part, int norm_blocks, double known_norm) {
  return norm_part ? sum_parts(norm_part, norm_blocks) : known_norm;
}

template <class Op>
__global__ void loss_kernel(Op op, std::int64_t n, const double* norm_part, int norm_blocks, double known_norm,
                            float scale, double* loss_part) {
  const float gscale = static_cast<float>(scale / Op::denom(normaliser(norm_part, norm_blocks, known_norm)));
  double acc = 0.0;
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) acc += op(i, gscale);
  acc = block_sum(acc);
  if (threadIdx.x == 0) loss_part[blockIdx.x] = acc;
}

// One block: loss = scale * sum / denom(normaliser), written or added.
template <class Op>
__global__ void finish_kernel(const double* loss_part, int loss_blocks, const double* norm_part, int norm_blocks,
                              double known_norm, float scale, float* loss, bool accumulate) {
  const double sum = sum_parts(loss_part, loss_blocks);
  const double denom = Op::denom(normaliser(norm_part, norm_blocks, known_norm));
  if (threadIdx.x == 0) {
    const float v = static_cast<float>(scale * sum / denom);
    loss[0] = accumulate ? loss[0] + v : v;
  }
}

double* scratch(const Stream& s) { return static_cast<double*>(workspace(s, 2 * kMaxBlocks * sizeof(double))); }

// known_norm >= 0: the normaliser is known on the host and its pass is skipped.
template <class Op>
void run_elementwise(const Op& op, std::int64_t n, double known_norm, float scale, Tensor& loss, GradMode mode,
                     const Stream& s) {
  const cudaStream_t st = gppf::cuda::native(s);
  double* ws = scratch(s);
  double* norm_part = known_norm >= 0.0 ? nullptr : ws;
  double* loss_part = ws + kMaxBlocks;
  const int blocks = grid_for(n);
  if (norm_part) norm_kernel<<<blocks, kBlock, 0, st>>>(op, n, norm_part);
  loss_kernel<<<blocks, kBlock, 0, st>>>(op, n, norm_part, blocks, known_norm, scale, loss_part);
  finish_kernel<Op><<<1, kBlock, 0, st>>>(loss_part, blocks, norm_part, blocks, known_norm, scale,
                                          loss.data_as<float>(), mode == GradMode::Accumulate);
  GPPF_CUDA_CHECK(cudaGetLastError());
}

// ---- softmax cross-entropy: one warp per row ----

// Labels outside [0, C) seen on a device since the last report: their count and the smallest
// (row << 32 | label bits), so the first offending row and its value can be named.
struct LabelRecord {
  unsigned long long bad;
  unsigned long long first;
};
struct LabelSlot {
  LabelRecord* dev = nullptr;
  LabelRecord* host = nullptr;  // pinned; refreshed by an asynchronous copy after every call
};
std::mutex g_label_mutex;
std::map<int, LabelSlot> g_label_slots;

void reset_record(LabelRecord* dev, cudaStream_t st) {
  GPPF_CUDA_CHECK(cudaMemsetAsync(&dev->bad, 0, sizeof(unsigned long long), st));
  GPPF_CUDA_CHECK(cudaMemsetAsync(&dev->first, 0xff, sizeof(unsigned long long), st));
}

LabelSlot& label_slot(int device, const Stream& s) {
  std::lock_guard<std::mutex> lock(g_label_mutex);
  LabelSlot& slot = g_label_slots[device];
  if (!slot.dev) {
    slot.dev = static_cast<LabelRecord*>(gppf::cuda::malloc_device(sizeof(LabelRecord), device));
    slot.host = static_cast<LabelRecord*>(gppf::cuda::malloc_pinned(sizeof(LabelRecord)));
    slot.host->bad = 0;
    slot.host->first = ~0ull;
    reset_record(slot.dev, gppf::cuda::native(s));
  }
  return slot;
}

// Throws when the record holds errors. wait == false: look at the last copy without waiting, and wait
// for the stream only when it shows an error (the one synchronising path).
void report_label_errors(int device, const Stream& s, bool wait) {
  LabelSlot& slot = label_slot(device, s);
  const volatile LabelRecord* seen = slot.host;
  if (!wait && seen->bad == 0) return;
  gppf::cuda::synchronize(s);
  const unsigned long long bad = seen->bad, first = seen->first;
  if (bad == 0) return;
  slot.host->bad = 0;
  slot.host->first = ~0ull;
  reset_record(slot.dev, gppf::cuda::native(s));
  GPPF_THROW("softmax_cross_entropy on CUDA: ", bad,
             " label(s) outside [0, C) that are not ignore_index were treated as ignored; the first: label ",
             static_cast<std::int32_t>(static_cast<std::uint32_t>(first & 0xffffffffu)), " at row ", first >> 32,
             ". Reported by the next call on this device (the device is not waited for otherwise); fix the labels");
}

__global__ void ce_count_kernel(const std::int32_t* labels, std::int64_t rows, std::int64_t classes, int ignore,
                                double* part, LabelRecord* record) {
  double acc = 0.0;
  for (std::int64_t r = global_thread(); r < rows; r += grid_threads()) {
    const std::int32_t y = labels[r];
    if (y == ignore) continue;
    if (y >= 0 && y < classes) {
      acc += 1.0;
    } else {
      atomicAdd(&record->bad, 1ull);
      const unsigned long long row = r < 0xffffffffLL ? static_cast<unsigned long long>(r) : 0xffffffffull;
      atomicMin(&record->first, row << 32 | static_cast<std::uint32_t>(y));
    }
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

struct CeArgs {
  const void* logits;
  const std::int32_t* labels;
  void* grad;
  FloatKind logit_kind, grad_kind;
  std::int64_t rows, classes;
  int ignore;
  float eps, scale;
};

struct CountDenom {
  GPPF_HD static double denom(double n) { return n > 1.0 ? n : 1.0; }
};

__global__ void ce_loss_kernel(CeArgs a, const double* norm_part, int norm_blocks, double* loss_part) {
  const float gscale = static_cast<float>(a.scale / CountDenom::denom(sum_parts(norm_part, norm_blocks)));
  const int lane = static_cast<int>(threadIdx.x & 31);
  const std::int64_t warps = grid_threads() / 32;
  const float eps_c = a.eps / static_cast<float>(a.classes);
  double acc = 0.0;
  for (std::int64_t r = global_thread() / 32; r < a.rows; r += warps) {
    const std::int32_t y = a.labels[r];
    const std::int64_t base = r * a.classes;
    if (y == a.ignore || y < 0 || y >= a.classes) {
      if (a.grad)
        for (std::int64_t c = lane; c < a.classes; c += 32) store_float(a.grad, base + c, a.grad_kind, 0.0f);
      continue;
    }
    float m = -INFINITY;
    for (std::int64_t c = lane; c < a.classes; c += 32) m = fmaxf(m, load_float(a.logits, base + c, a.logit_kind));
    m = warp_max(m);
    float se = 0.0f, sd = 0.0f;
    for (std::int64_t c = lane; c < a.classes; c += 32) {
      const float x = load_float(a.logits, base + c, a.logit_kind) - m;
      se += expf(x);
      sd += x;
    }
    se = warp_sum(se);
    sd = warp_sum(sd);
    // Before the gradient, which may overwrite the logits.
    if (lane == 0)
      acc += static_cast<double>(logf(se) - (1.0f - a.eps) * (load_float(a.logits, base + y, a.logit_kind) - m) -
                                 eps_c * sd);
    __syncwarp();
    if (a.grad) {
      const float inv = 1.0f / se;
      for (std::int64_t c = lane; c < a.classes; c += 32) {
        const float pc = expf(load_float(a.logits, base + c, a.logit_kind) - m) * inv;
        store_float(a.grad, base + c, a.grad_kind, gscale * (pc - eps_c - (c == y ? 1.0f - a.eps : 0.0f)));
      }
    }
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) loss_part[blockIdx.x] = acc;
}

}  // namespace

void softmax_cross_entropy(const CrossEntropyParams& p, const Tensor& logits, const Tensor& labels, Tensor& loss,
                           GradMode loss_mode, Tensor* dlogits, const Stream& s) {
  const int device = logits.device().index;
  report_label_errors(device, s, false);
  LabelSlot& slot = label_slot(device, s);
  const cudaStream_t st = gppf::cuda::native(s);
  CeArgs a{logits.data(),
           labels.data_as<std::int32_t>(),
           dlogits ? dlogits->data() : nullptr,
           float_kind("softmax_cross_entropy", logits.dtype()),
           dlogits ? float_kind("softmax_cross_entropy", dlogits->dtype()) : FloatKind::F32,
           0,
           logits.dim(-1),
           p.ignore_index,
           p.label_smoothing,
           p.scale};
  a.rows = logits.numel() / a.classes;
  double* ws = scratch(s);
  double* norm_part = ws;
  double* loss_part = ws + kMaxBlocks;
  const int count_blocks = grid_for(a.rows);
  const int row_blocks = static_cast<int>(std::clamp<std::int64_t>((a.rows + 7) / 8, 1, kMaxBlocks));
  ce_count_kernel<<<count_blocks, kBlock, 0, st>>>(a.labels, a.rows, a.classes, a.ignore, norm_part, slot.dev);
  ce_loss_kernel<<<row_blocks, kBlock, 0, st>>>(a, norm_part, count_blocks, loss_part);
  finish_kernel<CountDenom><<<1, kBlock, 0, st>>>(loss_part, row_blocks, norm_part, count_blocks, 0.0, p.scale,
                                                  loss.data_as<float>(), loss_mode == GradMode::Accumulate);
  GPPF_CUDA_CHECK(cudaGetLastError());
  GPPF_CUDA_CHECK(cudaMemcpyAsync(slot.host, slot.dev, sizeof(LabelRecord), cudaMemcpyDeviceToHost, st));
}

void check_label_errors(const Stream& s, bool wait) { report_label_errors(s.device.index, s, wait); }

void centernet_focal_loss(const FocalParams& p, const Tensor& logits, const Tensor& target, Tensor& loss,
                          GradMode loss_mode, Tensor* dlogits, const Stream& s) {
  const char* op = "centernet_focal_loss";
  const CenterNetFocalOp f{logits.data(),
                           target.data(),
                           dlogits ? dlogits->data() : nullptr,
                           float_kind(op, logits.dtype()),
                           float_kind(op, target.dtype()),
                           float_kind(op, logits.dtype()),
                           p.alpha,
                           p.beta};
  run_elementwise(f, logits.numel(), -1.0, p.scale, loss, loss_mode, s);
}

void sigmoid_focal_loss(const SigmoidFocalParams& p, const Tensor& logits, const Tensor& target, Tensor& loss,
                        GradMode loss_mode, Tensor* dlogits, const Stream& s) {
  const char* op = "sigmoid_focal_loss";
  const SigmoidFocalOp f{logits.data(),
                         target.data(),
                         dlogits ? dlogits->data() : nullptr,
                         float_kind(op, logits.dtype()),
                         float_kind(op, target.dtype()),
                         float_kind(op, logits.dtype()),
                         p.alpha,
                         p.gamma};
  run_elementwise(f, logits.numel(), -1.0, p.scale, loss, loss_mode, s);
}

void smooth_l1_loss(const RegressionParams& p, const Tensor& pred, const Tensor& target, const Tensor& weight,
                    Tensor& loss, GradMode loss_mode, Tensor* dpred, const Stream& s) {
  const char* op = "smooth_l1_loss";
  const SmoothL1Op f{pred.data(),
                     target.data(),
                     weight.defined() ? weight.data() : nullptr,
                     dpred ? dpred->data() : nullptr,
                     float_kind(op, pred.dtype()),
                     float_kind(op, target.dtype()),
                     weight.defined() ? float_kind(op, weight.dtype()) : FloatKind::F32,
                     float_kind(op, pred.dtype()),
                     p.beta};
  // Without weights the normaliser is numel, known here: its pass is skipped.
  run_elementwise(f, pred.numel(), weight.defined() ? -1.0 : static_cast<double>(pred.numel()), p.scale, loss,
                  loss_mode, s);
}

}  // namespace gppf::kernels::cuda
