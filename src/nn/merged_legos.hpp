#pragma once
// A task's active legos of one layer run as one wide block (DESIGN.md, "Where the speed must come
// from"): their first 1x1 convolutions share the input and concatenate into one, the 3x3s and the last
// 1x1s become grouped convolutions, and each batch norm runs once over the concatenated channels
// (batch norm is per channel, so this is exact). The last batch norm, the gates, the sum, the shortcut
// and the ReLU are one pass, forward and backward, so the legos' wide outputs are never written.
// gppf-mini's legos are 4-16 channels wide; run one by one, their memory-bound kernels read the same
// input k times and its step ran 1.4x slower (docs/PERFORMANCE.md).
// Host f32, one process; the expert-parallel exchange runs legos one by one.
#include <vector>

#include "src/nn/lego.hpp"

namespace gppf::nn {

class MergedLegos {
 public:
  // y = relu(shortcut(x) + sum_j gates[j] * legos[j](x)), the shortcut x itself or proj_bn(proj(x)).
  // In training, keeps what backward needs.
  Tensor forward(const RunState& rs, const Tensor& x, std::vector<Bottleneck*> legos, std::vector<float> gates,
                 Conv2d* proj, BatchNorm* proj_bn);
  // dy: the gradient of y; returns the gradient of x. dgate[j] = d loss / d gates[j].
  Tensor backward(const RunState& rs, const Tensor& dy, std::vector<float>& dgate);
  bool saved() const { return m_y.defined(); }

 private:
  struct Stage {  // one conv + BN of the wide block
    kernels::Conv2dParams conv;
    kernels::BatchNormParams bn;
    Tensor weight, gamma, beta;  // concatenated over the legos
    Tensor in, z, out;           // conv input, conv output (BN input), BN output (none in the last stage)
    Tensor save_mean, save_invstd;
  };
  // Stage i's convolution and batch-norm statistics, and in stages 1 and 2 the normalised output.
  void run_stage(const RunState& rs, int i, const Tensor& in, Stage& st);
  // The last stage's backward from the gradient of y: dgate, the shortcut's gradient da, the last
  // batch norm's parameter gradients (concatenated), and the gradient of the last convolution's output.
  // With a projection, also its BN's parameter gradients and the gradient dzp of its conv's output.
  Tensor backward_last(const Tensor& dy, std::vector<float>& dgate, Tensor& da, Tensor& dzp, std::vector<float>& dgamma,
                       std::vector<float>& dbeta);
  // Training: batch statistics of z for bn (running statistics updated); inference: the running ones.
  static void batch_stats(const RunState& rs, BatchNorm& bn, const Tensor& z, Tensor& mean, Tensor& invstd);
  // Parameter gradients of stage i (concatenated) into the legos' parameters.
  void scatter_grads(int i, const Tensor& dw, const float* dgamma, const float* dbeta);
  void backward_stage(const RunState& rs, int i, Stage& st, const Tensor& dout, Tensor* din,
                      kernels::GradMode din_mode);
  void backward_conv(const RunState& rs, int i, Stage& st, const Tensor& dz, Tensor* din, kernels::GradMode din_mode,
                     const float* dgamma, const float* dbeta);

  std::vector<Bottleneck*> m_legos;
  std::vector<float> m_gates;
  Conv2d* m_proj = nullptr;
  BatchNorm* m_proj_bn = nullptr;
  Stage m_stages[3];
  Tensor m_zp, m_pmean, m_pinvstd;  // the projection's conv output and batch statistics
  Tensor m_y;
  Shape m_x_shape;
};

}  // namespace gppf::nn
