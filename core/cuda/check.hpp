#pragma once
// Wrappers for every vendor call on the CUDA side: a failure becomes a gppf::Error naming the call.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <nccl.h>

#include "core/device.hpp"
#include "core/error.hpp"

#define GPPF_CUDA_CHECK(call)                                                                \
  do {                                                                                       \
    const cudaError_t gppf_err_ = (call);                                                    \
    GPPF_CHECK(gppf_err_ == cudaSuccess, #call, " failed: ", cudaGetErrorString(gppf_err_)); \
  } while (0)
#define GPPF_CUDNN_CHECK(call)                                                                         \
  do {                                                                                                 \
    const cudnnStatus_t gppf_err_ = (call);                                                            \
    GPPF_CHECK(gppf_err_ == CUDNN_STATUS_SUCCESS, #call, " failed: ", cudnnGetErrorString(gppf_err_)); \
  } while (0)
#define GPPF_CUBLAS_CHECK(call)                                                                           \
  do {                                                                                                    \
    const cublasStatus_t gppf_err_ = (call);                                                              \
    GPPF_CHECK(gppf_err_ == CUBLAS_STATUS_SUCCESS, #call, " failed: ", cublasGetStatusString(gppf_err_)); \
  } while (0)
#define GPPF_NCCL_CHECK(call)                                                                \
  do {                                                                                       \
    const ncclResult_t gppf_err_ = (call);                                                   \
    GPPF_CHECK(gppf_err_ == ncclSuccess, #call, " failed: ", ncclGetErrorString(gppf_err_)); \
  } while (0)

namespace gppf::cuda {
inline cudaStream_t native(const Stream& s) { return static_cast<cudaStream_t>(s.handle); }
}  // namespace gppf::cuda
