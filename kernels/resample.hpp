#pragma once
// Upsampling (and general resizing) of NHWC images. The output size is y's shape; align_corners =
// false semantics as PyTorch's F.interpolate(size=...): nearest takes src = floor(dst * in / out)
// (computed exactly in integers), bilinear samples at src = (dst + 0.5) * in / out - 0.5, clamped at 0.
// Host tensors are f32; CUDA tensors are f32 or bf16 (x and y in one dtype).
#include "kernels/common.hpp"

namespace gppf::kernels {

enum class UpsampleMode { Nearest, Bilinear };
struct UpsampleParams {
  UpsampleMode mode = UpsampleMode::Nearest;
};

// x [N, H, W, C] -> y [N, OH, OW, C]
void upsample_fwd(const UpsampleParams& p, const Tensor& x, Tensor& y, const Stream& s = Stream::host());
// dy [N, OH, OW, C] -> dx [N, H, W, C], written or accumulated per mode. Each input pixel gathers from
// the outputs it fed: no atomics, deterministic.
void upsample_bwd(const UpsampleParams& p, const Tensor& dy, Tensor& dx, GradMode mode,
                  const Stream& s = Stream::host());

const char* upsample_mode_name(UpsampleMode mode);

namespace host {
void upsample_fwd(const UpsampleParams& p, const Tensor& x, Tensor& y);
void upsample_bwd(const UpsampleParams& p, const Tensor& dy, Tensor& dx, bool accumulate);
}  // namespace host
namespace cuda {
void upsample_fwd(const UpsampleParams& p, const Tensor& x, Tensor& y, const Stream& s);
void upsample_bwd(const UpsampleParams& p, const Tensor& dy, Tensor& dx, bool accumulate, const Stream& s);
}  // namespace cuda

}  // namespace gppf::kernels
