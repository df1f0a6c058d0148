#pragma once
// The bias parts of conv2d on CUDA (kernels/cuda/conv_bias.cu): cuDNN's own bias routines want the
// bias in the activations' dtype, ours take f32 or bf16 either way.
#include <cstdint>

#include "core/cuda/check.hpp"
#include "kernels/functors/cast.hpp"

namespace gppf::kernels::cuda {

// y[m, j] += bias[j] for y [rows, k].
void conv2d_add_bias(void* y, FloatKind y_kind, const void* bias, FloatKind bias_kind, std::int64_t rows,
                     std::int64_t k, const Stream& stream);
// dbias[j] (=|+=) sum over m of dy[m, j], for dy [rows, k]; f32 accumulation, deterministic.
void conv2d_bias_grad(const void* dy, FloatKind dy_kind, void* dbias, FloatKind dbias_kind, std::int64_t rows,
                      std::int64_t k, bool accumulate, const Stream& stream);

}  // namespace gppf::kernels::cuda
