#include "kernels/cast.hpp"

#include "kernels/functors/cast.hpp"

namespace gppf::kernels {

namespace host {
void cast(const Tensor& src, Tensor& dst) {
  const CastFunctor f{src.data(), dst.data(), float_kind("cast", src.dtype()), float_kind("cast", dst.dtype())};
  parallel_for_host(src.numel(), f);
}
}  // namespace host

}  // namespace gppf::kernels
