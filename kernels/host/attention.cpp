// Host GELU and softmax (the functors of kernels/functors/attention.hpp over OpenMP), batched GEMMs on
// OpenBLAS, and attention as their composite: GEMM, softmax, GEMM forward; four GEMMs and the softmax
// backward, through a scratch dP, backward.
#include "kernels/attention.hpp"

#include <cblas.h>
#include <omp.h>

#include <vector>

#include "kernels/functors/attention.hpp"

namespace gppf::kernels::host {
namespace {

// Below this many multiply-adds OpenBLAS runs a GEMM on one thread anyway (its SMP threshold).
constexpr std::int64_t kSmallGemm = std::int64_t{1} << 18;

// One cblas_sgemm per batch item. Many items, or items too small for OpenBLAS to thread, run in
// parallel over the items, each GEMM on one thread (OpenBLAS's OpenMP build runs single-threaded inside
// a parallel region); otherwise the items run in turn, each threaded by OpenBLAS. Either way every
// item's result is the same: OpenBLAS splits M and N across threads, never K.
void batched_sgemm(const BmmShape& g, float alpha, const float* a, const float* b, float beta, float* c) {
  const auto m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k);
  const std::int64_t sa = g.m * g.k, sb = g.k * g.n, sc = g.m * g.n;
  const bool over_items = g.batch > 1 && (g.batch >= omp_get_max_threads() || g.m * g.n * g.k <= kSmallGemm);
#pragma omp parallel for schedule(static) if (over_items)
  for (std::int64_t i = 0; i < g.batch; ++i)
    cblas_sgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans, g.trans_b ? CblasTrans : CblasNoTrans, m, n, k,
                alpha, a + i * sa, g.trans_a ? m : k, b + i * sb, g.trans_b ? k : n, beta, c + i * sc, n);
}

template <class T>
void gelu_fwd_t(const Tensor& x, Tensor& y) {
  parallel_for_host(x.numel(), GeluFwdFunctor<T>{static_cast<const T*>(x.data()), static_cast<T*>(y.data())});
}

template <class T, bool Accumulate>
void gelu_bwd_t(const Tensor& x, const Tensor& dy, Tensor& dx) {
  parallel_for_host(x.numel(),
                    GeluBwdFunctor<T, Accumulate>{static_cast<const T*>(x.data()), static_cast<const T*>(dy.data()),
                                                  static_cast<T*>(dx.data())});
}

template <class T>
void softmax_fwd_t(const Tensor& x, Tensor& y) {
  const std::int64_t cols = x.dim(-1);
  for_each_row_host(x.numel() / cols, cols,
                    SoftmaxFwdRow<T, T, SerialLanes>{static_cast<const T*>(x.data()), static_cast<T*>(y.data()), cols});
}

template <class T>
void softmax_bwd_t(const Tensor& y, const Tensor& dy, Tensor& dx) {
  const std::int64_t cols = y.dim(-1);
  for_each_row_host(
      y.numel() / cols, cols,
      SoftmaxBwdRow<T, T, T, SerialLanes>{static_cast<const T*>(y.data()), static_cast<const T*>(dy.data()),
                                          static_cast<T*>(dx.data()), cols});
}

}  // namespace

void gelu_fwd(const Tensor& x, Tensor& y) {
  if (x.dtype() == DType::BF16)
    gelu_fwd_t<bf16>(x, y);
  else
    gelu_fwd_t<float>(x, y);
}

void gelu_bwd(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate) {
  if (x.dtype() == DType::BF16) {
    if (accumulate)
      gelu_bwd_t<bf16, true>(x, dy, dx);
    else
      gelu_bwd_t<bf16, false>(x, dy, dx);
  } else {
    if (accumulate)
      gelu_bwd_t<float, true>(x, dy, dx);
    else
      gelu_bwd_t<float, false>(x, dy, dx);
  }
}

void softmax_fwd(const Tensor& x, Tensor& y) {
  if (x.dtype() == DType::BF16)
    softmax_fwd_t<bf16>(x, y);
  else
    softmax_fwd_t<float>(x, y);
}

void softmax_bwd(const Tensor& y, const Tensor& dy, Tensor& dx) {
  if (y.dtype() == DType::BF16)
    softmax_bwd_t<bf16>(y, dy, dx);
  else
    softmax_bwd_t<float>(y, dy, dx);
}

void bmm(const BmmShape& g, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor& c) {
  batched_sgemm(g, alpha, a.data_as<float>(), b.data_as<float>(), beta, c.data_as<float>());
}

void sdpa_fwd(const SdpaShape& g, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& probs) {
  float* p = probs.data_as<float>();
  batched_sgemm({false, true, g.batch, g.tq, g.tk, g.dh}, g.scale, q.data_as<float>(), k.data_as<float>(), 0.0f, p);
  for_each_row_host(g.batch * g.tq, g.tk, SoftmaxFwdRow<float, float, SerialLanes>{p, p, g.tk});
  batched_sgemm({false, false, g.batch, g.tq, g.dv, g.tk}, 1.0f, p, v.data_as<float>(), 0.0f, out.data_as<float>());
}

void sdpa_bwd(const SdpaShape& g, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs,
              const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv) {
  const float* p = probs.data_as<float>();
  const float* go = dout.data_as<float>();
  batched_sgemm({true, false, g.batch, g.tk, g.dv, g.tq}, 1.0f, p, go, 0.0f, dv.data_as<float>());  // P^T dO
  // dP = dO V^T, then dS = P * (dP - rowsum(dP * P)) in place.
  std::vector<float> ds(static_cast<std::size_t>(g.batch * g.tq * g.tk));
  batched_sgemm({false, true, g.batch, g.tq, g.tk, g.dv}, 1.0f, go, v.data_as<float>(), 0.0f, ds.data());
  for_each_row_host(g.batch * g.tq, g.tk,
                    SoftmaxBwdRow<float, float, float, SerialLanes>{p, ds.data(), ds.data(), g.tk});
  batched_sgemm({false, false, g.batch, g.tq, g.dh, g.tk}, g.scale, ds.data(), k.data_as<float>(), 0.0f,
                dq.data_as<float>());  // scale dS K
  batched_sgemm({true, false, g.batch, g.tk, g.dh, g.tq}, g.scale, ds.data(), q.data_as<float>(), 0.0f,
                dk.data_as<float>());  // scale dS^T Q
}

}  // namespace gppf::kernels::host
