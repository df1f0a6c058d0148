#pragma once
// Channel slices of NHWC tensors: concat writes x into columns [offset, offset + x_cols) of y, split
// reads them back (kernels/concat.hpp).
#include <cstdint>

#include "kernels/concat.hpp"
#include "kernels/functors/elementwise.hpp"

namespace gppf::kernels {

template <class T>
struct ConcatSliceFunctor {
  const T* x;
  T* y;
  ChannelSlice sl;
  GPPF_HD void operator()(std::int64_t i) const {
    const std::int64_t r = i / sl.x_cols, k = i - r * sl.x_cols;
    y[r * sl.y_cols + sl.offset + k] = x[i];
  }
};

template <class T>
struct SplitSliceFunctor {
  const T* y;
  T* x;
  ChannelSlice sl;
  bool accumulate;
  GPPF_HD void operator()(std::int64_t i) const {
    const std::int64_t r = i / sl.x_cols, k = i - r * sl.x_cols;
    write_grad(x, i, to_f32(y[r * sl.y_cols + sl.offset + k]), accumulate);
  }
};

}  // namespace gppf::kernels
