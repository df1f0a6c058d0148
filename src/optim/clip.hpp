#pragma once
// Global-norm gradient clipping and the per-tensor sums it is built from. Sums of squares are
// reduced per tensor on the tensors' device (kernels/optim.hpp, fixed order), fetched with one
// synchronisation, and added on the host in parameter order: the norm is bitwise reproducible.
#include <cstddef>
#include <vector>

#include "core/tensor.hpp"
#include "src/nn/parameter.hpp"

namespace gppf::optim {

// Two doubles per slot on one device, written by the reduction kernels and read back together.
class SumBuffer {
 public:
  // Room for `slots` pairs on `device`; storage is kept between steps when large enough.
  void reset(Device device, std::size_t slots);
  double* slot(std::size_t i);
  // The 2 * slots values on the host (one device-to-host copy and a stream sync on CUDA).
  const std::vector<double>& fetch(const Stream& stream);

 private:
  Tensor m_storage;  // i64 storage reinterpreted as doubles: there is no f64 dtype
  std::vector<double> m_host;
  std::size_t m_slots = 0;
};

// The parameters whose gradients count this step: trainable and touched.
std::vector<std::size_t> touched_indices(const std::vector<nn::Parameter*>& params);

// sqrt(sum of squares) of the gradients of touched, trainable parameters. Non-finite when any
// gradient element is inf or NaN.
double global_grad_norm(const std::vector<nn::Parameter*>& params, const Stream& stream = Stream::host());

// max_norm / (norm + 1e-6) when norm > max_norm > 0, else 1 (PyTorch's clip_grad_norm_ factor).
float clip_factor(double norm, float max_norm);

// Scales the touched gradients in place by clip_factor and returns the norm before clipping. The
// optimizers fold the factor into their update instead (OptimizerConfig::max_grad_norm); this is for
// callers that need clipped gradients themselves.
double clip_grad_norm(const std::vector<nn::Parameter*>& params, float max_norm, const Stream& stream = Stream::host());

}  // namespace gppf::optim
