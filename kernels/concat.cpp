#include "kernels/concat.hpp"

#include "core/graph.hpp"

namespace gppf::kernels {
namespace {

// Checks that xs are y's channel parts; returns the rows (product of all dims but the last).
std::int64_t check_parts(const char* op, const std::vector<Tensor>& xs, const Tensor& y) {
  GPPF_CHECK(!xs.empty(), op, ": no parts");
  GPPF_CHECK(y.defined() && y.ndim() >= 1, op, ": y must have at least one dim");
  if (launch_on_cuda(y.device()))
    GPPF_CHECK(y.dtype() == DType::F32 || y.dtype() == DType::BF16, op, ": ", y.desc(), " must be f32 or bf16 on CUDA");
  else
    check_dtype(op, "y", y, DType::F32);
  std::int64_t channels = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    GPPF_CHECK(x.defined(), op, ": part ", i, " is undefined");
    check_same_device(op, x, y);
    check_dtype(op, "part", x, y.dtype());
    Shape expected = y.shape();
    expected.back() = x.ndim() == y.ndim() ? x.dim(-1) : -1;
    GPPF_CHECK(x.shape() == expected, op, ": part ", i, " ", x.desc(), " does not match ", y.desc(),
               " in all but the last dim");
    channels += x.dim(-1);
  }
  GPPF_CHECK(channels == y.dim(-1), op, ": parts have ", channels, " channels in all, y ", y.desc(), " has ",
             y.dim(-1));
  std::int64_t rows = 1;
  for (int d = 0; d + 1 < y.ndim(); ++d) rows *= y.dim(d);
  return rows;
}

}  // namespace

void concat_channels(const std::vector<Tensor>& xs, Tensor& y, const Stream& s) {
  const std::int64_t rows = check_parts("concat_channels", xs, y);
  if (y.device().is_host()) {
    runtime::host_launch([xs, y]() mutable { host::concat_channels(xs, y); });
    return;
  }
  std::int64_t offset = 0;
  for (const Tensor& x : xs) {
    cuda::concat_slice({rows, x.dim(-1), y.dim(-1), offset}, x, y, s);
    offset += x.dim(-1);
  }
}

void split_channels(const Tensor& y, std::vector<Tensor>& xs, GradMode mode, const Stream& s) {
  const std::int64_t rows = check_parts("split_channels", xs, y);
  const bool acc = mode == GradMode::Accumulate;
  if (y.device().is_host()) {
    runtime::host_launch([y, xs, acc]() mutable { host::split_channels(y, xs, acc); });
    return;
  }
  std::int64_t offset = 0;
  for (Tensor& x : xs) {
    cuda::split_slice({rows, x.dim(-1), y.dim(-1), offset}, y, x, acc, s);
    offset += x.dim(-1);
  }
}

}  // namespace gppf::kernels
