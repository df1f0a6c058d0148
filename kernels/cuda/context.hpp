#pragma once
// Per-(device, stream) vendor handles and a scratch workspace, created on first use and kept for the
// life of the process: cuDNN and cuBLAS calls are ordered on the caller's stream without re-binding
// handles on every op.
#include <cstddef>

#include "core/cuda/check.hpp"

namespace gppf::kernels::cuda {

struct Context {
  cudnnHandle_t cudnn = nullptr;
  cublasHandle_t cublas = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
};

// The handles bound to `stream` (the device's legacy stream when its handle is null).
Context& context(const Stream& stream);

// Scratch memory ordered on `stream`, at least `bytes` long, valid until the next call with the same
// stream (ops use it for cuDNN/cuBLAS workspaces and never keep it across calls).
void* workspace(const Stream& stream, std::size_t bytes);

}  // namespace gppf::kernels::cuda
