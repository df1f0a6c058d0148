#include "kernels/cast.hpp"
#include "kernels/cuda/parallel_for.cuh"
#include "kernels/functors/cast.hpp"

namespace gppf::kernels::cuda {

void cast(const Tensor& src, Tensor& dst, const Stream& stream) {
  const CastFunctor f{src.data(), dst.data(), float_kind("cast", src.dtype()), float_kind("cast", dst.dtype())};
  parallel_for_cuda(src.numel(), f, gppf::cuda::native(stream));
}
}  // namespace gppf::kernels::cuda
