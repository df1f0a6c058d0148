// CUDA segment ops. Each launch takes up to kMaxSegments segments in its by-value parameters (a
// "pack"). Element-wise passes walk the pack's flat index range with a grid-stride loop, finding an
// index's segment by binary search once per thread and then by stepping forward, since a thread's
// indices only grow. Reductions are deterministic: fixed blocks summed in a fixed order, then folded
// by a second kernel in order; no float atomics.
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <limits>

#include "kernels/cuda/bn_sums.cuh"
#include "kernels/cuda/context.hpp"
#include "kernels/functors/batchnorm.hpp"
#include "kernels/functors/elementwise.hpp"
#include "kernels/functors/norm_add.hpp"
#include "kernels/segments.hpp"

namespace gppf::kernels::cuda {
namespace {

constexpr int kThreads = 256;
// As parallel_for_cuda: enough blocks to fill an H100 several times over.
constexpr std::int64_t kMaxBlocks = 132 * 32;

unsigned grid_for(std::int64_t n) {
  return static_cast<unsigned>(std::clamp<std::int64_t>((n + kThreads - 1) / kThreads, 1, kMaxBlocks));
}

// 32-bit index math (cheaper division and address arithmetic) when every index fits.
bool fits_32(std::int64_t n) { return n <= std::numeric_limits<std::int32_t>::max(); }

// Segment k of a pack covers [begin[k], begin[k + 1]) of a flat index range; ranges may be empty.
template <class I>
struct Ranges {
  int count = 0;
  I begin[kMaxSegments + 1] = {};
};

// The k with begin[k] <= i < begin[k + 1], for i inside the pack's range (never an empty segment).
template <class I>
__device__ int find_range(const I* begin, int count, I i) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (begin[mid] <= i)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// f(i, k) for every index i of the pack's range, k its segment. The grid's block size is kThreads.
template <class I, class F>
__device__ void for_each_in_ranges(const Ranges<I>& r, const F& f) {
  const I end = r.begin[r.count];
  I i = r.begin[0] + static_cast<I>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= end) return;
  int k = find_range(r.begin, r.count, i);
  for (const I stride = static_cast<I>(gridDim.x) * kThreads; i < end; i += stride) {
    while (i >= r.begin[k + 1]) ++k;
    f(i, k);
  }
}

// A fixed-order sum over the block (shuffle tree in each warp, then the warps in order); the result
// is valid in thread 0.
__device__ double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  return total;
}

// ---- segment_copy ------------------------------------------------------------------------------

// V elements moved as one 16-byte access when V > 1.
template <class T, int V>
struct alignas(sizeof(T) * V) Chunk {
  T v[V];
};

template <class I>
struct CopyPack {
  Ranges<I> r;                                       // in chunks of V elements, over the concatenated segments
  I src[kMaxSegments] = {}, dst[kMaxSegments] = {};  // each segment's first chunk in src and dst
  float scale[kMaxSegments] = {};
  const float* scale_at[kMaxSegments] = {};  // non-null: the scale in device memory (SegmentCopy::scale_at)
};

template <class T, int V, class I>
__global__ void copy_kernel(const T* src, T* dst, const __grid_constant__ CopyPack<I> p, bool accumulate) {
  const auto* s = reinterpret_cast<const Chunk<T, V>*>(src);
  auto* d = reinterpret_cast<Chunk<T, V>*>(dst);
  for_each_in_ranges(p.r, [&](I i, int k) {
    const I off = i - p.r.begin[k];
    const Chunk<T, V> in = s[p.src[k] + off];
    Chunk<T, V> out = accumulate ? d[p.dst[k] + off] : Chunk<T, V>{};
    const float scale = p.scale_at[k] ? *p.scale_at[k] : p.scale[k];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float v = scale * to_f32(in.v[j]);
      out.v[j] = from_f32<T>(accumulate ? to_f32(out.v[j]) + v : v);
    }
    d[p.dst[k] + off] = out;
  });
}

template <class T, int V, class I>
std::int64_t launch_copy(const Tensor& src, Tensor& dst, const std::vector<SegmentCopy>& live, std::int64_t row,
                         bool accumulate, cudaStream_t st) {
  const std::int64_t chunks_per_row = row / V;
  std::int64_t launches = 0;
  for (std::size_t first = 0; first < live.size(); first += kMaxSegments) {
    CopyPack<I> p;
    p.r.count = static_cast<int>(std::min<std::size_t>(kMaxSegments, live.size() - first));
    std::int64_t end = 0;
    for (int k = 0; k < p.r.count; ++k) {
      const SegmentCopy& g = live[first + static_cast<std::size_t>(k)];
      p.r.begin[k] = static_cast<I>(end);
      p.src[k] = static_cast<I>(g.src * chunks_per_row);
      p.dst[k] = static_cast<I>(g.dst * chunks_per_row);
      p.scale[k] = g.scale;
      p.scale_at[k] = g.scale_at;
      end += g.count * chunks_per_row;
    }
    p.r.begin[p.r.count] = static_cast<I>(end);
    copy_kernel<T, V, I><<<grid_for(end), kThreads, 0, st>>>(data_ptr<const T>(src), data_ptr<T>(dst), p, accumulate);
    GPPF_CUDA_CHECK(cudaGetLastError());
    ++launches;
  }
  return launches;
}

template <class T, int V>
std::int64_t copy_with_width(const Tensor& src, Tensor& dst, const std::vector<SegmentCopy>& live, std::int64_t row,
                             bool accumulate, cudaStream_t st) {
  if (fits_32(std::max(src.numel(), dst.numel()) / V))
    return launch_copy<T, V, std::uint32_t>(src, dst, live, row, accumulate, st);
  return launch_copy<T, V, std::int64_t>(src, dst, live, row, accumulate, st);
}

// ---- segment_dot -------------------------------------------------------------------------------

struct DotPack {
  Ranges<std::int64_t> chunks;  // each segment's kDotChunk-element chunks, numbered within the pack
  std::int64_t a[kMaxSegments] = {}, b[kMaxSegments] = {}, n[kMaxSegments] = {};  // first element, elements
  std::int64_t slot[kMaxSegments] = {};
};

// Block c sums chunk c of its segment: the chunks depend on the segment alone, so the order of the
// additions does too.
template <class T>
__global__ void dot_partial_kernel(const T* a, const T* b, const __grid_constant__ DotPack p, double* partial) {
  const std::int64_t c = blockIdx.x;
  const int k = find_range(p.chunks.begin, p.chunks.count, c);
  const std::int64_t lo = (c - p.chunks.begin[k]) * kDotChunk;
  const std::int64_t hi = lo + kDotChunk < p.n[k] ? lo + kDotChunk : p.n[k];
  const T* pa = a + p.a[k];
  const T* pb = b + p.b[k];
  double s = 0.0;
  for (std::int64_t i = lo + threadIdx.x; i < hi; i += kThreads)
    s += static_cast<double>(to_f32(pa[i])) * static_cast<double>(to_f32(pb[i]));
  s = block_sum(s);
  if (threadIdx.x == 0) partial[c] = s;
}

// Block k folds segment k's chunks into its slot (0 for a segment without rows).
__global__ void dot_fold_kernel(const double* partial, const __grid_constant__ DotPack p, float* out) {
  const int k = blockIdx.x;
  double s = 0.0;
  for (std::int64_t c = p.chunks.begin[k] + threadIdx.x; c < p.chunks.begin[k + 1]; c += kThreads) s += partial[c];
  s = block_sum(s);
  if (threadIdx.x == 0) out[p.slot[k]] = static_cast<float>(s);
}

// The packs of a dot's segments (rows of `row` values), and the partial sums' workspace (chunks of
// the largest pack: they are reused pack after pack).
std::vector<DotPack> dot_packs(const std::vector<SegmentDot>& segments, std::int64_t row, std::int64_t& most) {
  std::vector<DotPack> packs;
  most = 1;
  for (std::size_t first = 0; first < segments.size(); first += kMaxSegments) {
    DotPack& p = packs.emplace_back();
    p.chunks.count = static_cast<int>(std::min<std::size_t>(kMaxSegments, segments.size() - first));
    for (int k = 0; k < p.chunks.count; ++k) {
      const SegmentDot& g = segments[first + static_cast<std::size_t>(k)];
      p.a[k] = g.a * row;
      p.b[k] = g.b * row;
      p.n[k] = g.count * row;
      p.slot[k] = g.slot;
      p.chunks.begin[k + 1] = p.chunks.begin[k] + (p.n[k] + kDotChunk - 1) / kDotChunk;
    }
    most = std::max(most, p.chunks.begin[p.chunks.count]);
  }
  return packs;
}

// Per pack: `partial_sums(index, pack, chunks, partial)` launches the partial-sum kernel when the
// pack has rows, then the fold writes the slots. Returns the launches.
template <class F>
std::int64_t run_dot_packs(const std::vector<DotPack>& packs, double* partial, float* out, cudaStream_t st,
                           const F& partial_sums) {
  std::int64_t launches = 0;
  for (std::size_t i = 0; i < packs.size(); ++i) {
    const DotPack& p = packs[i];
    const std::int64_t chunks = p.chunks.begin[p.chunks.count];
    if (chunks > 0) {
      partial_sums(i, p, static_cast<unsigned>(chunks), partial);
      GPPF_CUDA_CHECK(cudaGetLastError());
      ++launches;
    }
    dot_fold_kernel<<<static_cast<unsigned>(p.chunks.count), kThreads, 0, st>>>(partial, p, out);
    GPPF_CUDA_CHECK(cudaGetLastError());
    ++launches;
  }
  return launches;
}

// ---- batch norm --------------------------------------------------------------------------------
// As kernels/cuda/batchnorm.cu: blocks of kTileC channels x kTileR row-threads sum slices of a
// segment's rows (coalesced along the channels), a per-(segment, channel) kernel folds the slices in
// f64, and the element-wise pass runs the functors the host runs too, with the segment's coefficients.

constexpr int kTileC = kBnTileC;
constexpr int kTileR = kBnTileR;

struct BnPack {
  int count = 0;
  int first = 0;                                  // the pack's first segment: row first + k of the [S, C] statistics
  std::int64_t row_begin[kMaxSegments + 1] = {};  // segment k: rows [row_begin[k], row_begin[k + 1]) of x as [rows, C]
  int slice_begin[kMaxSegments + 1] = {};         // segment k: slices [slice_begin[k], slice_begin[k + 1]) of the pack
  float* running_mean[kMaxSegments] = {};
  float* running_var[kMaxSegments] = {};
  const float* gamma[kMaxSegments] = {};  // each segment's own affine parameters, else the call's
  const float* beta[kMaxSegments] = {};
  float* dgamma[kMaxSegments] = {};  // backward: each segment's gradient targets, its own or the call's
  float* dbeta[kMaxSegments] = {};
  bool overwrite_dgamma[kMaxSegments] = {};  // the first writer of an Overwrite target (bn_overwrites)
  bool overwrite_dbeta[kMaxSegments] = {};
};

// Forward (kBwd false): sums of x - x[segment's row 0] and its square; backward: of g and
// g * (x - mean) (see bn_sums.cuh). Writes part_a/part_b[slice][channel].
template <class T, bool kBwd>
__global__ void bn_partial_kernel(const T* x, const T* y, const T* dy, const float* mean, std::int64_t channels,
                                  bool relu, const __grid_constant__ BnPack p, float* part_a, float* part_b) {
  const int slice = blockIdx.y;
  const int k = find_range(p.slice_begin, p.count, slice);
  const int local = slice - p.slice_begin[k], slices = p.slice_begin[k + 1] - p.slice_begin[k];
  const std::int64_t r0 = p.row_begin[k], r1 = p.row_begin[k + 1];
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kTileC + threadIdx.x;
  const float center = c >= channels ? 0.0f
                       : kBwd        ? mean[(p.first + k) * channels + c]
                                     : normpool::load(x[r0 * channels + c]);
  const std::int64_t at = slice * channels + c;
  bn_tile_sums<T, kBwd>(x, y, dy, center, r0 + static_cast<std::int64_t>(local) * kTileR, r1,
                        static_cast<std::int64_t>(slices) * kTileR, channels, relu, part_a + at, part_b + at);
}

// Segment k's sums of the slices of one channel, in slice order.
__device__ void fold_slices(const BnPack& p, int k, const float* part_a, const float* part_b, std::int64_t channels,
                            std::int64_t c, double& a, double& b) {
  a = 0.0;
  b = 0.0;
  for (int j = p.slice_begin[k]; j < p.slice_begin[k + 1]; ++j) {
    a += part_a[j * channels + c];
    b += part_b[j * channels + c];
  }
}

struct BnFwdFinalize {
  const float* part_a;
  const float* part_b;
  std::int64_t channels;
  float eps, momentum;
  float* save_mean;
  float* save_invstd;
  float* scale;  // [S, C] each: the segment's gamma * invstd, and its beta
  float* shift;
};

// grid (channel blocks, segments of the pack): one thread per (segment, channel).
template <class T>
__global__ void bn_finalize_fwd_kernel(const T* x, BnFwdFinalize f, const __grid_constant__ BnPack p) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int k = blockIdx.y;
  if (c >= f.channels) return;
  double s, q;
  fold_slices(p, k, f.part_a, f.part_b, f.channels, c, s, q);
  const double n = static_cast<double>(p.row_begin[k + 1] - p.row_begin[k]);
  const double mean_d = s / n;
  const double var = fmax(q / n - mean_d * mean_d, 0.0);
  const double mean = static_cast<double>(normpool::load(x[p.row_begin[k] * f.channels + c])) + mean_d;
  const double invstd = 1.0 / sqrt(var + static_cast<double>(f.eps));
  const double m = f.momentum;
  const std::int64_t i = (p.first + k) * f.channels + c;
  f.save_mean[i] = static_cast<float>(mean);
  f.save_invstd[i] = static_cast<float>(invstd);
  f.scale[i] = static_cast<float>(p.gamma[k][c] * invstd);
  f.shift[i] = p.beta[k][c];
  p.running_mean[k][c] = static_cast<float>((1.0 - m) * p.running_mean[k][c] + m * mean);
  p.running_var[k][c] = static_cast<float>((1.0 - m) * p.running_var[k][c] + m * var * n / (n - 1.0));
}

struct BnBwdFinalize {
  const float* part_a;
  const float* part_b;
  std::int64_t channels;
  const float* invstd;  // [S, C]
  float* ca;            // [S, C] each: BatchNormBwdDataFunctor's a, b, k
  float* cb;
  float* ck;
};

// Adds segment k's gradient v to the run of consecutive segments writing target[k], and writes the
// run's sum when the run ends: written when the run starts with a segment that overwrites its
// target (bn_overwrites), added otherwise.
__device__ void add_to_target(float* const* target, const bool* overwrites, int k, int count, std::int64_t c, double v,
                              double& run, bool& overwrite) {
  if (k == 0 || target[k] != target[k - 1]) overwrite = overwrites[k];
  run += v;
  if (k + 1 < count && target[k + 1] == target[k]) return;
  float& t = target[k][c];
  t = static_cast<float>(overwrite ? run : t + run);
  run = 0.0;
}

// One thread per channel, over the pack's segments in order: each target's gradients are summed in
// a fixed order, and targets shared by several segments are read and written by one thread only.
__global__ void bn_finalize_bwd_kernel(BnBwdFinalize f, const __grid_constant__ BnPack p) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= f.channels) return;
  double dgamma = 0.0, dbeta = 0.0;
  bool dgamma_overwrite = false, dbeta_overwrite = false;
  for (int k = 0; k < p.count; ++k) {
    double sg, sgx;
    fold_slices(p, k, f.part_a, f.part_b, f.channels, c, sg, sgx);
    const std::int64_t i = (p.first + k) * f.channels + c;
    const double is = f.invstd[i], n = static_cast<double>(p.row_begin[k + 1] - p.row_begin[k]);
    f.ca[i] = static_cast<float>(p.gamma[k][c] * is);
    f.cb[i] = static_cast<float>(sg / n);
    f.ck[i] = static_cast<float>(sgx * is * is / n);
    add_to_target(p.dgamma, p.overwrite_dgamma, k, p.count, c, sgx * is, dgamma, dgamma_overwrite);
    add_to_target(p.dbeta, p.overwrite_dbeta, k, p.count, c, sg, dbeta, dbeta_overwrite);
  }
}

template <class T, bool kRelu, class I>
__global__ void bn_apply_kernel(const __grid_constant__ Ranges<I> r, int first, I channels, const T* x, T* y,
                                const float* mean, const float* scale, const float* shift) {
  for_each_in_ranges(r, [&](I i, int k) {
    const std::int64_t s = static_cast<std::int64_t>(first + k) * channels;
    const BatchNormApplyFunctor<T, kRelu> f{x, y, mean + s, scale + s, shift + s, channels};
    f.at(i, i % channels);
  });
}

template <class T, bool kRelu, class I>
__global__ void bn_bwd_data_kernel(const __grid_constant__ Ranges<I> r, int first, I channels, const T* x, const T* y,
                                   const T* dy, T* dx, const float* mean, const float* ca, const float* cb,
                                   const float* ck) {
  for_each_in_ranges(r, [&](I i, int k) {
    const std::int64_t s = static_cast<std::int64_t>(first + k) * channels;
    const BatchNormBwdDataFunctor<T, kRelu> f{x, y, dy, dx, mean + s, ca + s, cb + s, ck + s, channels};
    f.at(i, i % channels);
  });
}

// The packs of a batch norm's segments, with their partial-sum slices: about as many blocks per pack
// as batchnorm.cu gives one batch, shared by the segments in proportion to their rows, each at least
// one and at most one per kTileR rows.
std::vector<BnPack> bn_packs(const Tensor& x, const std::vector<BatchNormSegment>& segments, bool with_stats) {
  const std::int64_t channels = x.dim(-1), rows_per_sample = x.numel() / std::max<std::int64_t>(x.dim(0), 1) / channels;
  const std::int64_t tiles = (channels + kTileC - 1) / kTileC;
  const std::int64_t want = std::clamp<std::int64_t>(132 * 8 / tiles, 1, 4096);
  std::vector<BnPack> packs;
  std::int64_t row = 0;
  for (std::size_t first = 0; first < segments.size(); first += kMaxSegments) {
    BnPack& p = packs.emplace_back();
    p.count = static_cast<int>(std::min<std::size_t>(kMaxSegments, segments.size() - first));
    p.first = static_cast<int>(first);
    for (int k = 0; k < p.count; ++k) {
      const BatchNormSegment& g = segments[first + static_cast<std::size_t>(k)];
      p.row_begin[k] = row;
      row += g.count * rows_per_sample;
      if (with_stats) {
        p.running_mean[k] = g.running_mean->data_as<float>();
        p.running_var[k] = g.running_var->data_as<float>();
      }
    }
    p.row_begin[p.count] = row;
    const std::int64_t pack_rows = row - p.row_begin[0];
    for (int k = 0; k < p.count; ++k) {
      const std::int64_t rows = p.row_begin[k + 1] - p.row_begin[k];
      const std::int64_t share = (want * rows + pack_rows - 1) / pack_rows;
      const auto slices = std::clamp<std::int64_t>(share, 1, (rows + kTileR - 1) / kTileR);
      p.slice_begin[k + 1] = p.slice_begin[k] + static_cast<int>(slices);
    }
  }
  return packs;
}

// Forward: each segment's gamma and beta, its own or the call's.
void set_fwd_affine(std::vector<BnPack>& packs, const std::vector<BatchNormSegment>& segments, const Tensor& gamma,
                    const Tensor& beta) {
  for (BnPack& p : packs)
    for (int k = 0; k < p.count; ++k) {
      const BatchNormSegment& g = segments[static_cast<std::size_t>(p.first + k)];
      p.gamma[k] = (g.gamma ? *g.gamma : gamma).data_as<float>();
      p.beta[k] = (g.beta ? *g.beta : beta).data_as<float>();
    }
}

// Backward: each segment's gamma and gradient targets, and whether it writes its targets first. A
// target first written in an earlier pack is added to in later ones.
void set_bwd_affine(std::vector<BnPack>& packs, const std::vector<BatchNormSegment>& segments, const Tensor& gamma,
                    Tensor& dgamma, Tensor& dbeta, GradMode param_mode) {
  const std::vector<bool> overwrite_dgamma = bn_overwrites(segments, dgamma, false, param_mode);
  const std::vector<bool> overwrite_dbeta = bn_overwrites(segments, dbeta, true, param_mode);
  for (BnPack& p : packs)
    for (int k = 0; k < p.count; ++k) {
      const auto j = static_cast<std::size_t>(p.first + k);
      const BatchNormSegment& g = segments[j];
      p.gamma[k] = (g.gamma ? *g.gamma : gamma).data_as<float>();
      p.dgamma[k] = (g.dgamma ? *g.dgamma : dgamma).data_as<float>();
      p.dbeta[k] = (g.dbeta ? *g.dbeta : dbeta).data_as<float>();
      p.overwrite_dgamma[k] = overwrite_dgamma[j];
      p.overwrite_dbeta[k] = overwrite_dbeta[j];
    }
}

int max_slices(const std::vector<BnPack>& packs) {
  int most = 0;
  for (const BnPack& p : packs) most = std::max(most, p.slice_begin[p.count]);
  return most;
}

template <class T>
void launch_bn_partial(bool bwd, const T* x, const T* y, const T* dy, const float* mean, std::int64_t channels,
                       bool relu, const BnPack& p, float* part_a, float* part_b, cudaStream_t st) {
  const dim3 grid(static_cast<unsigned>((channels + kTileC - 1) / kTileC),
                  static_cast<unsigned>(p.slice_begin[p.count]));
  const dim3 block(kTileC, kTileR);
  if (bwd)
    bn_partial_kernel<T, true><<<grid, block, 0, st>>>(x, y, dy, mean, channels, relu, p, part_a, part_b);
  else
    bn_partial_kernel<T, false><<<grid, block, 0, st>>>(x, y, dy, mean, channels, relu, p, part_a, part_b);
  GPPF_CUDA_CHECK(cudaGetLastError());
}

// The pack's elements of x (rows times channels), as the element-wise kernels' ranges.
template <class I>
Ranges<I> element_ranges(const BnPack& p, std::int64_t channels) {
  Ranges<I> r;
  r.count = p.count;
  for (int k = 0; k <= p.count; ++k) r.begin[k] = static_cast<I>(p.row_begin[k] * channels);
  return r;
}

unsigned channel_blocks(std::int64_t channels) { return static_cast<unsigned>((channels + kThreads - 1) / kThreads); }

template <class T, bool kRelu, class I>
std::int64_t fwd_train(const BatchNormParams& p, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       const std::vector<BatchNormSegment>& segments, Tensor& y, Tensor& save_mean, Tensor& save_invstd,
                       const Stream& s) {
  const std::int64_t channels = x.dim(-1), n_seg = static_cast<std::int64_t>(segments.size());
  std::vector<BnPack> packs = bn_packs(x, segments, true);
  set_fwd_affine(packs, segments, gamma, beta);
  const std::int64_t slices = max_slices(packs);
  // Slices are reused pack after pack (the stream orders them); scale and shift have a row per segment.
  auto* ws =
      static_cast<float*>(workspace(s, sizeof(float) * static_cast<std::size_t>((2 * slices + 2 * n_seg) * channels)));
  float* part_a = ws;
  float* part_b = ws + slices * channels;
  float* scale = ws + 2 * slices * channels;
  float* shift = scale + n_seg * channels;
  const cudaStream_t st = gppf::cuda::native(s);
  const T* xs = data_ptr<const T>(x);
  const BnFwdFinalize f{
      part_a, part_b, channels, p.eps, p.momentum, save_mean.data_as<float>(), save_invstd.data_as<float>(),
      scale,  shift};
  for (const BnPack& pk : packs) {
    launch_bn_partial<T>(false, xs, nullptr, nullptr, nullptr, channels, false, pk, part_a, part_b, st);
    bn_finalize_fwd_kernel<T>
        <<<dim3(channel_blocks(channels), static_cast<unsigned>(pk.count)), kThreads, 0, st>>>(xs, f, pk);
    GPPF_CUDA_CHECK(cudaGetLastError());
    if (!y.defined()) continue;  // statistics only
    const Ranges<I> r = element_ranges<I>(pk, channels);
    bn_apply_kernel<T, kRelu, I><<<grid_for(r.begin[r.count] - r.begin[0]), kThreads, 0, st>>>(
        r, pk.first, static_cast<I>(channels), xs, data_ptr<T>(y), f.save_mean, scale, shift);
    GPPF_CUDA_CHECK(cudaGetLastError());
  }
  return (y.defined() ? 3 : 2) * static_cast<std::int64_t>(packs.size());
}

template <class T, bool kRelu, class I>
std::int64_t bwd(const Tensor& x, const Tensor& y, const Tensor& dy, const Tensor& gamma,
                 const std::vector<BatchNormSegment>& segments, const Tensor& save_mean, const Tensor& save_invstd,
                 Tensor& dx, Tensor& dgamma, Tensor& dbeta, GradMode param_mode, const Stream& s) {
  const std::int64_t channels = x.dim(-1), n_seg = static_cast<std::int64_t>(segments.size());
  std::vector<BnPack> packs = bn_packs(x, segments, false);
  set_bwd_affine(packs, segments, gamma, dgamma, dbeta, param_mode);
  const std::int64_t slices = max_slices(packs);
  auto* ws =
      static_cast<float*>(workspace(s, sizeof(float) * static_cast<std::size_t>((2 * slices + 3 * n_seg) * channels)));
  float* part_a = ws;
  float* part_b = ws + slices * channels;
  float* ca = ws + 2 * slices * channels;
  float* cb = ca + n_seg * channels;
  float* ck = cb + n_seg * channels;
  const cudaStream_t st = gppf::cuda::native(s);
  const T* xs = data_ptr<const T>(x);
  const T* ys = kRelu ? data_ptr<const T>(y) : nullptr;
  const T* dys = data_ptr<const T>(dy);
  const float* mean = save_mean.data_as<float>();
  const BnBwdFinalize f{part_a, part_b, channels, save_invstd.data_as<float>(), ca, cb, ck};
  for (const BnPack& pk : packs) {
    launch_bn_partial<T>(true, xs, ys, dys, mean, channels, kRelu, pk, part_a, part_b, st);
    bn_finalize_bwd_kernel<<<channel_blocks(channels), kThreads, 0, st>>>(f, pk);
    GPPF_CUDA_CHECK(cudaGetLastError());
    const Ranges<I> r = element_ranges<I>(pk, channels);
    bn_bwd_data_kernel<T, kRelu, I><<<grid_for(r.begin[r.count] - r.begin[0]), kThreads, 0, st>>>(
        r, pk.first, static_cast<I>(channels), xs, ys, dys, data_ptr<T>(dx), mean, ca, cb, ck);
    GPPF_CUDA_CHECK(cudaGetLastError());
  }
  return 3 * static_cast<std::int64_t>(packs.size());
}

// Calls f.operator()<T, kRelu, I>() for x's dtype, the ReLU flag and the index type x's size allows.
template <class F>
void dispatch_bn(const char* op, const Tensor& x, bool relu, const F& f) {
  dispatch_float(op, x, [&](auto tag) {
    using T = decltype(tag);
    const bool narrow = fits_32(x.numel());
    if (relu && narrow)
      f.template operator()<T, true, std::uint32_t>();
    else if (relu)
      f.template operator()<T, true, std::int64_t>();
    else if (narrow)
      f.template operator()<T, false, std::uint32_t>();
    else
      f.template operator()<T, false, std::int64_t>();
  });
}

// ---- the task-batched tail: batch norm + gated sum + residual ReLU, and its gate gradients ---------

// Per part: where its rows are, its statistics row and affine parameters (by value, one launch).
template <class I>
struct NormPack {
  int count = 0;
  I src[kMaxSegments] = {}, dst[kMaxSegments] = {}, rows[kMaxSegments] = {};  // in rows
  const float* mean[kMaxSegments] = {};                                       // its row of the [S, C] tensors
  const float* invstd[kMaxSegments] = {};
  const float* gamma[kMaxSegments] = {};
  const float* beta[kMaxSegments] = {};
  float gate[kMaxSegments] = {};
  const float* gate_at[kMaxSegments] = {};  // non-null: the gate in device memory (NormPart::gate_at)
};

template <class I>
NormPack<I> norm_pack(const Tensor& mean, const Tensor& invstd, const std::vector<NormPart>& parts, std::size_t first) {
  const std::int64_t c = mean.dim(1);
  NormPack<I> p;
  p.count = static_cast<int>(std::min<std::size_t>(kMaxSegments, parts.size() - first));
  for (int k = 0; k < p.count; ++k) {
    const NormPart& g = parts[first + static_cast<std::size_t>(k)];
    p.src[k] = static_cast<I>(g.src);
    p.dst[k] = static_cast<I>(g.dst);
    p.rows[k] = static_cast<I>(g.count);
    p.mean[k] = mean.data_as<float>() + g.stats * c;
    p.invstd[k] = invstd.data_as<float>() + g.stats * c;
    p.gamma[k] = g.gamma->data_as<float>();
    p.beta[k] = g.beta->data_as<float>();
    p.gate[k] = g.gate;
    p.gate_at[k] = g.gate_at;
  }
  return p;
}

// One thread per V consecutive values of y (one 16-byte access when V > 1): V channels of one pixel,
// since C % V == 0. Each part covering the row adds its term; z is read once, y written once.
template <class T, int V, class I>
__global__ void add_relu_kernel(const T* z, const T* shortcut, T* y, I chunks, I row, I channels,
                                const __grid_constant__ NormPack<I> p) {
  const auto* zc = reinterpret_cast<const Chunk<T, V>*>(z);
  const auto* sc = reinterpret_cast<const Chunk<T, V>*>(shortcut);
  auto* yc = reinterpret_cast<Chunk<T, V>*>(y);
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < chunks; i += stride) {
    const I e = i * V, n = e / row, within = e - n * row, c0 = within % channels;
    const Chunk<T, V> s = sc[i];
    float acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = to_f32(s.v[j]);
    for (int k = 0; k < p.count; ++k) {
      if (n < p.dst[k] || n - p.dst[k] >= p.rows[k]) continue;
      const Chunk<T, V> zv = zc[((p.src[k] + n - p.dst[k]) * row + within) / V];
      const float gate = p.gate_at[k] ? *p.gate_at[k] : p.gate[k];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const I c = c0 + static_cast<I>(j);
        acc[j] = add_gated(acc[j], gate,
                           norm_value(to_f32(zv.v[j]), p.mean[k][c], p.gamma[k][c] * p.invstd[k][c], p.beta[k][c]));
      }
    }
    Chunk<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) out.v[j] = from_f32<T>(relu_value(acc[j]));
    yc[i] = out;
  }
}

template <class T, int V, class I>
void launch_add_relu(const Tensor& z, const Tensor& mean, const Tensor& invstd, const std::vector<NormPart>& parts,
                     const Tensor& shortcut, Tensor& y, cudaStream_t st) {
  const std::int64_t row = y.numel() / y.dim(0), chunks = y.numel() / V;
  add_relu_kernel<T, V, I><<<grid_for(chunks), kThreads, 0, st>>>(
      data_ptr<const T>(z), data_ptr<const T>(shortcut), data_ptr<T>(y), static_cast<I>(chunks), static_cast<I>(row),
      static_cast<I>(z.dim(-1)), norm_pack<I>(mean, invstd, parts, 0));
  GPPF_CUDA_CHECK(cudaGetLastError());
}

// The two packs ride in one launch's parameters: within the classic 4 KiB limit.
static_assert(sizeof(DotPack) + sizeof(NormPack<std::int64_t>) + 64 <= 4096, "dot_bn_partial_kernel parameters");

// segment_dot's partial sums (dot_partial_kernel) with b the normalised z; element i of a part is
// channel i % C, since parts start at a row.
template <class T>
__global__ void dot_bn_partial_kernel(const T* a, const T* z, std::int64_t channels, const __grid_constant__ DotPack p,
                                      const __grid_constant__ NormPack<std::int64_t> f, double* partial) {
  const std::int64_t c = blockIdx.x;
  const int k = find_range(p.chunks.begin, p.chunks.count, c);
  const std::int64_t lo = (c - p.chunks.begin[k]) * kDotChunk;
  const std::int64_t hi = lo + kDotChunk < p.n[k] ? lo + kDotChunk : p.n[k];
  const T* pa = a + p.a[k];
  const T* pz = z + p.b[k];
  double s = 0.0;
  for (std::int64_t i = lo + threadIdx.x; i < hi; i += kThreads) {
    const std::int64_t ch = i % channels;
    const float b = norm_value(to_f32(pz[i]), f.mean[k][ch], f.gamma[k][ch] * f.invstd[k][ch], f.beta[k][ch]);
    s += static_cast<double>(to_f32(pa[i])) * static_cast<double>(b);
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[c] = s;
}

}  // namespace

std::int64_t batchnorm_add_relu_segments(const Tensor& z, const Tensor& mean, const Tensor& invstd,
                                         const std::vector<NormPart>& parts, const Tensor& shortcut, Tensor& y,
                                         const Stream& s) {
  const cudaStream_t st = gppf::cuda::native(s);
  dispatch_float("batchnorm_add_relu_segments", z, [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = 16 / sizeof(T);
    const auto aligned16 = [](const Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data()) % 16 == 0; };
    const bool vec = z.dim(-1) % kVec == 0 && aligned16(z) && aligned16(shortcut) && aligned16(y);
    const bool narrow = fits_32(std::max(z.numel(), y.numel()));
    if (vec && narrow)
      launch_add_relu<T, kVec, std::uint32_t>(z, mean, invstd, parts, shortcut, y, st);
    else if (vec)
      launch_add_relu<T, kVec, std::int64_t>(z, mean, invstd, parts, shortcut, y, st);
    else if (narrow)
      launch_add_relu<T, 1, std::uint32_t>(z, mean, invstd, parts, shortcut, y, st);
    else
      launch_add_relu<T, 1, std::int64_t>(z, mean, invstd, parts, shortcut, y, st);
  });
  return 1;
}

std::int64_t segment_dot_bn(const Tensor& g, const Tensor& z, const Tensor& mean, const Tensor& invstd,
                            const std::vector<NormPart>& parts, Tensor& out, const Stream& s) {
  // segment_dot's packs over g's rows (dst) and z's rows (src); the norm packs ride beside them.
  std::vector<SegmentDot> dots;
  for (const NormPart& q : parts) dots.push_back({q.dst, q.src, q.count, q.slot});
  std::int64_t most = 1;
  const std::vector<DotPack> packs = dot_packs(dots, z.numel() / z.dim(0), most);
  auto* partial = static_cast<double*>(workspace(s, sizeof(double) * static_cast<std::size_t>(most)));
  const cudaStream_t st = gppf::cuda::native(s);
  std::int64_t launches = 0;
  dispatch_float("segment_dot_bn", z, [&](auto tag) {
    using T = decltype(tag);
    launches = run_dot_packs(
        packs, partial, out.data_as<float>(), st, [&](std::size_t i, const DotPack& p, unsigned chunks, double* sums) {
          dot_bn_partial_kernel<T>
              <<<chunks, kThreads, 0, st>>>(data_ptr<const T>(g), data_ptr<const T>(z), z.dim(-1), p,
                                            norm_pack<std::int64_t>(mean, invstd, parts, i * kMaxSegments), sums);
        });
  });
  return launches;
}

std::int64_t segment_copy(const Tensor& src, Tensor& dst, const std::vector<SegmentCopy>& segments, bool accumulate,
                          const Stream& s) {
  std::vector<SegmentCopy> live;
  std::copy_if(segments.begin(), segments.end(), std::back_inserter(live),
               [](const SegmentCopy& g) { return g.count > 0; });
  const std::int64_t row = src.numel() / src.dim(0);
  const cudaStream_t st = gppf::cuda::native(s);
  std::int64_t launches = 0;
  dispatch_float("segment_copy", src, [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = 16 / sizeof(T);
    const bool aligned = row % kVec == 0 && reinterpret_cast<std::uintptr_t>(src.data()) % 16 == 0 &&
                         reinterpret_cast<std::uintptr_t>(dst.data()) % 16 == 0;
    launches = aligned ? copy_with_width<T, kVec>(src, dst, live, row, accumulate, st)
                       : copy_with_width<T, 1>(src, dst, live, row, accumulate, st);
  });
  return launches;
}

std::int64_t segment_dot(const Tensor& a, const Tensor& b, const std::vector<SegmentDot>& segments, Tensor& out,
                         const Stream& s) {
  std::int64_t most = 1;
  const std::vector<DotPack> packs = dot_packs(segments, a.dim(0) ? a.numel() / a.dim(0) : 0, most);
  auto* partial = static_cast<double*>(workspace(s, sizeof(double) * static_cast<std::size_t>(most)));
  const cudaStream_t st = gppf::cuda::native(s);
  std::int64_t launches = 0;
  dispatch_float("segment_dot", a, [&](auto tag) {
    using T = decltype(tag);
    launches = run_dot_packs(
        packs, partial, out.data_as<float>(), st, [&](std::size_t, const DotPack& p, unsigned chunks, double* sums) {
          dot_partial_kernel<T><<<chunks, kThreads, 0, st>>>(data_ptr<const T>(a), data_ptr<const T>(b), p, sums);
        });
  });
  return launches;
}

std::int64_t batchnorm_fwd_train_segments(const BatchNormParams& p, const Tensor& x, const Tensor& gamma,
                                          const Tensor& beta, const std::vector<BatchNormSegment>& segments, Tensor& y,
                                          Tensor& save_mean, Tensor& save_invstd, const Stream& s) {
  std::int64_t launches = 0;
  dispatch_bn("batchnorm_fwd_train_segments", x, p.relu, [&]<class T, bool kRelu, class I>() {
    launches = fwd_train<T, kRelu, I>(p, x, gamma, beta, segments, y, save_mean, save_invstd, s);
  });
  return launches;
}

std::int64_t batchnorm_bwd_segments(const BatchNormParams& p, const Tensor& x, const Tensor& y, const Tensor& dy,
                                    const Tensor& gamma, const std::vector<BatchNormSegment>& segments,
                                    const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor& dgamma,
                                    Tensor& dbeta, GradMode param_mode, const Stream& s) {
  std::int64_t launches = 0;
  dispatch_bn("batchnorm_bwd_segments", x, p.relu, [&]<class T, bool kRelu, class I>() {
    launches = bwd<T, kRelu, I>(x, y, dy, gamma, segments, save_mean, save_invstd, dx, dgamma, dbeta, param_mode, s);
  });
  return launches;
}

}  // namespace gppf::kernels::cuda
