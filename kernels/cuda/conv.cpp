// conv2d on CUDA through cuDNN's legacy convolution API, NHWC descriptors for x/y and NHWC (= OHWI)
// for the filters. f32 runs FMA-only kernels unless kernels::allow_tf32(); bf16 runs tensor-op
// kernels with f32 accumulation. The algorithm of each (pass, device, dtype, shape, params, TF32)
// is measured once with cudnnFind*Algorithm and cached with its descriptors, so the steady state
// is one cuDNN call per op. The first call of a shape must therefore not be inside a CUDA graph
// capture (Find synchronises the device).
#include "kernels/conv.hpp"

#include <algorithm>
#include <compare>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/log.hpp"
#include "kernels/cast.hpp"
#include "kernels/cuda/context.hpp"
#include "kernels/cuda/conv_bias.hpp"

namespace gppf::kernels::cuda {
namespace {

// Algorithms that need more scratch than this are passed over.
constexpr std::size_t kMaxWorkspace = std::size_t{1} << 30;

enum class Pass : int { Fwd, BwdData, BwdFilter };

struct Key {
  Pass pass;
  int device;
  DType dtype;
  bool tf32;
  std::int64_t n, h, w, c, k, r, s;
  int sh, sw, ph, pw, dh, dw, groups;
  auto operator<=>(const Key&) const = default;
};

struct Plan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  int algo = 0;
  std::size_t workspace = 0;
  // False when cuDNN has no bf16 algorithm for this shape: the op then runs in f32 (see via_f32).
  bool supported = true;
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
  }
};

cudnnDataType_t cudnn_dtype(DType t) { return t == DType::BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT; }
FloatKind kind_of(DType t) { return t == DType::BF16 ? FloatKind::BF16 : FloatKind::F32; }

// The first measured algorithm that succeeded, fits kMaxWorkspace and, for strict f32, is not a
// tensor-op (TF32) kernel. Perf structs of the three passes share these fields.
template <class Perf>
const Perf* pick(const std::vector<Perf>& perfs, int count, bool strict_fp32) {
  for (int i = 0; i < count; ++i) {
    const Perf& pf = perfs[static_cast<std::size_t>(i)];
    if (pf.status != CUDNN_STATUS_SUCCESS || pf.memory > kMaxWorkspace) continue;
    if (strict_fp32 && pf.mathType != CUDNN_FMA_MATH && pf.mathType != CUDNN_DEFAULT_MATH) continue;
    return &pf;
  }
  return nullptr;
}

std::string describe(const Conv2dParams& p, const Conv2dGeometry& g) {
  return str("x ", shape_str(g.x_shape()), ", w ", shape_str(g.w_shape()), " (stride ", p.stride_h, "x", p.stride_w,
             ", pad ", p.pad_h, "x", p.pad_w, ", dilation ", p.dilation_h, "x", p.dilation_w, ", groups ", p.groups,
             ")");
}

std::unique_ptr<Plan> make_plan(const Key& key, const Conv2dParams& p, const Conv2dGeometry& g, cudnnHandle_t handle) {
  auto plan = std::make_unique<Plan>();
  const cudnnDataType_t dt = cudnn_dtype(key.dtype);
  GPPF_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->x));
  GPPF_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->y));
  GPPF_CUDNN_CHECK(cudnnCreateFilterDescriptor(&plan->w));
  GPPF_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&plan->conv));
  auto i32 = [](std::int64_t v) { return static_cast<int>(v); };
  GPPF_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->x, CUDNN_TENSOR_NHWC, dt, i32(g.n), i32(g.c), i32(g.h), i32(g.w)));
  GPPF_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->y, CUDNN_TENSOR_NHWC, dt, i32(g.n), i32(g.k), i32(g.p), i32(g.q)));
  GPPF_CUDNN_CHECK(
      cudnnSetFilter4dDescriptor(plan->w, dt, CUDNN_TENSOR_NHWC, i32(g.k), i32(g.cg()), i32(g.r), i32(g.s)));
  GPPF_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(plan->conv, p.pad_h, p.pad_w, p.stride_h, p.stride_w, p.dilation_h,
                                                   p.dilation_w, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  GPPF_CUDNN_CHECK(cudnnSetConvolutionGroupCount(plan->conv, p.groups));
  const bool strict_fp32 = key.dtype == DType::F32 && !key.tf32;
  GPPF_CUDNN_CHECK(cudnnSetConvolutionMathType(plan->conv, strict_fp32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));

  int count = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  bool found = false;
  auto take = [&](const auto* pf) {
    if (!pf) return;
    plan->algo = static_cast<int>(pf->algo);
    plan->workspace = pf->memory;
    math = pf->mathType;
    found = true;
  };
  // A failed search is not fatal for bf16 (some shapes have no bf16 kernel): it falls back below.
  auto searched = [&](cudnnStatus_t st, const char* call) {
    GPPF_CHECK(st == CUDNN_STATUS_SUCCESS || key.dtype == DType::BF16, call, " failed: ", cudnnGetErrorString(st),
               " for ", describe(p, g), " in ", dtype_name(key.dtype));
    return st == CUDNN_STATUS_SUCCESS;
  };
  if (key.pass == Pass::Fwd) {
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perfs(CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
    if (searched(cudnnFindConvolutionForwardAlgorithm(handle, plan->x, plan->w, plan->conv, plan->y,
                                                      static_cast<int>(perfs.size()), &count, perfs.data()),
                 "cudnnFindConvolutionForwardAlgorithm"))
      take(pick(perfs, count, strict_fp32));
  } else if (key.pass == Pass::BwdData) {
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perfs(CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
    if (searched(cudnnFindConvolutionBackwardDataAlgorithm(handle, plan->w, plan->y, plan->conv, plan->x,
                                                           static_cast<int>(perfs.size()), &count, perfs.data()),
                 "cudnnFindConvolutionBackwardDataAlgorithm"))
      take(pick(perfs, count, strict_fp32));
  } else {
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perfs(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
    if (searched(cudnnFindConvolutionBackwardFilterAlgorithm(handle, plan->x, plan->y, plan->conv, plan->w,
                                                             static_cast<int>(perfs.size()), &count, perfs.data()),
                 "cudnnFindConvolutionBackwardFilterAlgorithm"))
      take(pick(perfs, count, strict_fp32));
  }
  if (!found && key.dtype == DType::BF16) {
    log::warn("conv2d on CUDA: cuDNN has no bf16 algorithm for ", describe(p, g),
              "; this shape runs in f32 (cast in and out)");
    plan->supported = false;
    return plan;
  }
  GPPF_CHECK(found, "conv2d on CUDA: cuDNN has no ", strict_fp32 ? "FMA-only " : "", "algorithm for ", describe(p, g),
             " in ", dtype_name(key.dtype));
  // Run with the math type the measurement used (cuDNN's own advice for Find results), but never
  // let strict f32 drift onto TF32.
  if (strict_fp32) math = CUDNN_FMA_MATH;
  GPPF_CUDNN_CHECK(cudnnSetConvolutionMathType(plan->conv, math));
  return plan;
}

const Plan& plan_for(Pass pass, DType dtype, const Conv2dParams& p, const Conv2dGeometry& g, const Context& ctx) {
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<Plan>> plans;
  const Key key{pass, ctx.device, dtype,      allow_tf32(), g.n,     g.h,     g.w,          g.c,          g.k,
                g.r,  g.s,        p.stride_h, p.stride_w,   p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, p.groups};
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = plans[key];
  if (!slot) slot = make_plan(key, p, g, ctx.cudnn);
  return *slot;
}

// The rare bf16 shape cuDNN cannot run: cast the bf16 operands to f32, run the f32 op, cast the
// outputs back. The stream is synchronised before the f32 temporaries are freed (a fallback, not a
// fast path).
Tensor to_f32(const Tensor& t, const Stream& s) { return kernels::cast(t, DType::F32, s); }
void finish_f32(const Stream& s) { GPPF_CUDA_CHECK(cudaStreamSynchronize(gppf::cuda::native(s))); }

}  // namespace

void conv2d_fwd(const Conv2dParams& p, const Conv2dGeometry& g, const Tensor& x, const Tensor& w, const Tensor& bias,
                Tensor& y, const Stream& s) {
  Context& ctx = context(s);
  const Plan& plan = plan_for(Pass::Fwd, x.dtype(), p, g, ctx);
  if (!plan.supported) {
    Tensor yf = Tensor::empty(y.shape(), DType::F32, y.device());
    conv2d_fwd(p, g, to_f32(x, s), to_f32(w, s), bias, yf, s);
    kernels::cast(yf, y, s);
    finish_f32(s);
    return;
  }
  void* ws = plan.workspace ? workspace(s, plan.workspace) : nullptr;
  const float one = 1.0f, zero = 0.0f;
  GPPF_CUDNN_CHECK(cudnnConvolutionForward(ctx.cudnn, &one, plan.x, x.data(), plan.w, w.data(), plan.conv,
                                           static_cast<cudnnConvolutionFwdAlgo_t>(plan.algo), ws, plan.workspace, &zero,
                                           plan.y, y.data()));
  if (bias.defined())
    conv2d_add_bias(y.data(), kind_of(y.dtype()), bias.data(), kind_of(bias.dtype()), g.n * g.p * g.q, g.k, s);
}

void conv2d_bwd_data(const Conv2dParams& p, const Conv2dGeometry& g, const Tensor& dy, const Tensor& w, Tensor& dx,
                     GradMode mode, const Stream& s) {
  Context& ctx = context(s);
  const Plan& plan = plan_for(Pass::BwdData, dy.dtype(), p, g, ctx);
  if (!plan.supported) {
    Tensor dxf = mode == GradMode::Accumulate ? to_f32(dx, s) : Tensor::empty(dx.shape(), DType::F32, dx.device());
    conv2d_bwd_data(p, g, to_f32(dy, s), to_f32(w, s), dxf, mode, s);
    kernels::cast(dxf, dx, s);
    finish_f32(s);
    return;
  }
  void* ws = plan.workspace ? workspace(s, plan.workspace) : nullptr;
  const float one = 1.0f, beta = mode == GradMode::Accumulate ? 1.0f : 0.0f;
  GPPF_CUDNN_CHECK(cudnnConvolutionBackwardData(ctx.cudnn, &one, plan.w, w.data(), plan.y, dy.data(), plan.conv,
                                                static_cast<cudnnConvolutionBwdDataAlgo_t>(plan.algo), ws,
                                                plan.workspace, &beta, plan.x, dx.data()));
}

void conv2d_bwd_filter(const Conv2dParams& p, const Conv2dGeometry& g, const Tensor& x, const Tensor& dy, Tensor& dw,
                       Tensor* dbias, GradMode mode, const Stream& s) {
  Context& ctx = context(s);
  const bool acc = mode == GradMode::Accumulate;
  // Before the convolution takes the workspace: the bias reduction uses it for its partial sums.
  if (dbias)
    conv2d_bias_grad(dy.data(), kind_of(dy.dtype()), dbias->data(), kind_of(dbias->dtype()), g.n * g.p * g.q, g.k, acc,
                     s);
  const Plan& plan = plan_for(Pass::BwdFilter, x.dtype(), p, g, ctx);
  if (!plan.supported) {
    Tensor dwf = acc ? to_f32(dw, s) : Tensor::empty(dw.shape(), DType::F32, dw.device());
    conv2d_bwd_filter(p, g, to_f32(x, s), to_f32(dy, s), dwf, nullptr, mode, s);
    kernels::cast(dwf, dw, s);
    finish_f32(s);
    return;
  }
  void* ws = plan.workspace ? workspace(s, plan.workspace) : nullptr;
  const float one = 1.0f, beta = acc ? 1.0f : 0.0f;
  GPPF_CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx.cudnn, &one, plan.x, x.data(), plan.y, dy.data(), plan.conv,
                                                  static_cast<cudnnConvolutionBwdFilterAlgo_t>(plan.algo), ws,
                                                  plan.workspace, &beta, plan.w, dw.data()));
}

}  // namespace gppf::kernels::cuda
