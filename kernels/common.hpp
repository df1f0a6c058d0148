#pragma once
// Conventions shared by every op family in kernels/.
//
// - Images are NHWC; conv weights are [K, R, S, C/groups] (OHWI), the layout cuDNN and oneDNN both
//   run channels-last convolutions with.
// - Entry points take a params struct, the tensors, and a Stream; they check shapes and dtypes and
//   dispatch on the device of their first tensor. Outputs are allocated by the caller.
// - Host kernels compute in f32. CUDA kernels take f32 or bf16 (activations and their gradients in
//   the same dtype; BN scale/shift and statistics always f32; parameter gradients in the parameter's
//   dtype).
// - Gradients of parameters are written or accumulated, per GradMode: SIMT sums the gradients of
//   every task's path into one buffer before the optimizer step.
#include "core/tensor.hpp"

namespace gppf::kernels {

enum class GradMode { Overwrite, Accumulate };

// TF32 on tensor cores for fp32 GEMM/conv on CUDA. Off by default so that fp32 results are
// comparable with the host to 1e-3; training configs may turn it on.
void set_allow_tf32(bool allow);
bool allow_tf32();

// For the entry points: counts one launch (core/counters.hpp, on every device, so host tests see a
// GPU step's launches) and says whether the op goes to CUDA.
bool launch_on_cuda(const Device& device);

}  // namespace gppf::kernels
