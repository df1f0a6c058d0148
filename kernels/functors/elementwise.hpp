#pragma once
// Element-wise kernels written once for the host (T = float) and CUDA (T = float or bf16). Math is
// always f32; bf16 is a storage type, loaded and stored with round-to-nearest-even.
#include <cstdint>

#include "core/dtype.hpp"
#include "core/tensor.hpp"
#include "kernels/parallel_for.hpp"

namespace gppf::kernels {

GPPF_HD GPPF_INLINE float to_f32(float v) { return v; }
GPPF_HD GPPF_INLINE float to_f32(bf16 v) { return load_bf16(v.bits); }

template <class T>
GPPF_HD GPPF_INLINE T from_f32(float v);
template <>
GPPF_HD GPPF_INLINE float from_f32<float>(float v) {
  return v;
}
template <>
GPPF_HD GPPF_INLINE bf16 from_f32<bf16>(float v) {
  return bf16{store_bf16(v)};
}

// dst = v (overwrite) or dst += v (accumulate).
template <class T>
GPPF_HD GPPF_INLINE void write_grad(T* dst, std::int64_t i, float v, bool accumulate) {
  dst[i] = from_f32<T>(accumulate ? to_f32(dst[i]) + v : v);
}

template <class T>
struct ReluFwdFunctor {
  const T* x;
  T* y;
  GPPF_HD void operator()(std::int64_t i) const {
    const float v = to_f32(x[i]);
    y[i] = from_f32<T>(v < 0.0f ? 0.0f : v);  // NaN passes through, as in PyTorch
  }
};

// The flags that change the memory traffic are template parameters, so that the host loops vectorize.
template <class T, bool Accumulate>
struct ReluBwdFunctor {
  const T* y;
  const T* dy;
  T* dx;
  GPPF_HD void operator()(std::int64_t i) const {
    const float d = to_f32(dy[i]);  // loaded unconditionally: a select vectorizes, a branch does not
    const float g = to_f32(y[i]) > 0.0f ? d : 0.0f;
    dx[i] = from_f32<T>(Accumulate ? to_f32(dx[i]) + g : g);
  }
};

template <class T, bool Relu>
struct AddFunctor {
  const T* a;
  const T* b;
  T* y;
  GPPF_HD void operator()(std::int64_t i) const {
    const float v = to_f32(a[i]) + to_f32(b[i]);
    y[i] = from_f32<T>(Relu && v < 0.0f ? 0.0f : v);
  }
};

// alpha as a value (host, or known on the host) or read from memory (a routing gate on the device,
// read by the kernel so that the host never waits for it).
struct AlphaValue {
  float value;
  GPPF_HD GPPF_INLINE float get() const { return value; }
};
struct AlphaPointer {
  const float* ptr;
  GPPF_HD GPPF_INLINE float get() const { return *ptr; }
};

// y = alpha * x + beta * y; ReadY = (beta != 0): beta == 0 never reads y (it may hold NaN).
template <class TX, class TY, class Alpha, bool ReadY>
struct AxpbyFunctor {
  Alpha alpha;
  const TX* x;
  float beta;
  TY* y;
  GPPF_HD void operator()(std::int64_t i) const {
    const float ax = alpha.get() * to_f32(x[i]);
    y[i] = from_f32<TY>(ReadY ? ax + beta * to_f32(y[i]) : ax);
  }
};

template <class T>
struct FillFunctor {
  T* y;
  T value;
  GPPF_HD void operator()(std::int64_t i) const { y[i] = value; }
};

// y[r, c] = v[c] (the bias of a linear layer, written before a GEMM with beta = 1).
template <class TV, class TY>
struct BroadcastRowsFunctor {
  const TV* v;
  TY* y;
  std::int64_t cols;
  GPPF_HD void operator()(std::int64_t i) const { y[i] = from_f32<TY>(to_f32(v[i % cols])); }
};

// Reductions (dot, reduce_rows) are deterministic: they cut the input into fixed chunks whose size
// depends only on the problem, sum each chunk in double in a fixed order, then sum the chunks in
// order. The thread count only decides who computes which chunk.
inline constexpr std::int64_t kDotChunk = 8192;

// Calls f(T{}) with T = float or bf16 after a tensor's dtype (the CUDA backends' storage types).
template <class F>
void dispatch_float(const char* op, const Tensor& t, F&& f) {
  if (t.dtype() == DType::F32)
    f(float{});
  else if (t.dtype() == DType::BF16)
    f(bf16{});
  else
    GPPF_THROW(op, ": ", t.desc(), " must be f32 or bf16");
}

template <class T>
T* data_ptr(const Tensor& t) {
  return static_cast<T*>(t.data());
}

}  // namespace gppf::kernels
