#include "kernels/concat.hpp"
#include "kernels/cuda/parallel_for.cuh"
#include "kernels/functors/concat.hpp"

namespace gppf::kernels::cuda {

void concat_slice(const ChannelSlice& sl, const Tensor& x, Tensor& y, const Stream& s) {
  if (sl.x_cols == 0) return;
  dispatch_float("concat_channels", x, [&](auto tag) {
    using T = decltype(tag);
    parallel_for_cuda(x.numel(), ConcatSliceFunctor<T>{data_ptr<T>(x), data_ptr<T>(y), sl}, gppf::cuda::native(s));
  });
}

void split_slice(const ChannelSlice& sl, const Tensor& y, Tensor& x, bool accumulate, const Stream& s) {
  if (sl.x_cols == 0) return;
  dispatch_float("split_channels", y, [&](auto tag) {
    using T = decltype(tag);
    const SplitSliceFunctor<T> f{data_ptr<T>(y), data_ptr<T>(x), sl, accumulate};
    parallel_for_cuda(x.numel(), f, gppf::cuda::native(s));
  });
}

}  // namespace gppf::kernels::cuda
