#include "kernels/cuda/parallel_for.cuh"
#include "kernels/functors/resample.hpp"
#include "kernels/resample.hpp"

namespace gppf::kernels::cuda {
namespace {
ResampleGeom geom(const Tensor& in, const Tensor& out) {
  return {in.dim(0), in.dim(1), in.dim(2), out.dim(1), out.dim(2), in.dim(3)};
}
}  // namespace

void upsample_fwd(const UpsampleParams& p, const Tensor& x, Tensor& y, const Stream& s) {
  dispatch_float("upsample_fwd", x, [&](auto tag) {
    using T = decltype(tag);
    const UpsampleFwdFunctor<T> f{data_ptr<T>(x), data_ptr<T>(y), geom(x, y), p.mode == UpsampleMode::Bilinear};
    parallel_for_cuda(y.numel(), f, gppf::cuda::native(s));
  });
}

void upsample_bwd(const UpsampleParams& p, const Tensor& dy, Tensor& dx, bool accumulate, const Stream& s) {
  dispatch_float("upsample_bwd", dy, [&](auto tag) {
    using T = decltype(tag);
    const UpsampleBwdFunctor<T> f{data_ptr<T>(dy), data_ptr<T>(dx), geom(dx, dy), p.mode == UpsampleMode::Bilinear,
                                  accumulate};
    parallel_for_cuda(dx.numel(), f, gppf::cuda::native(s));
  });
}

}  // namespace gppf::kernels::cuda
