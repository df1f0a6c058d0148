#pragma once
// A task's active legos of one layer run as one wide block (DESIGN.md, "Where the speed must come
// from"): their first 1x1 convolutions share the input and concatenate into one, the 3x3s become a
// grouped convolution, and each batch norm runs once over the concatenated channels (batch norm is
// per channel, so this is exact). The last 1x1s are never run as such: lego j's
// z_j = W3_j a_j is linear in its narrow input a_j, so the last batch norm's statistics follow from a's
// mean and w x w covariance, and the gated sum of the normalised outputs is one ungrouped 1x1
// convolution of a (C wide, not k*C) with folded weights; backward gets the statistics' terms from
// a's covariance and da^T (a - mean) in the same way. The shortcut (and the projection's BN) and the
// ReLU join in one pass.
// gppf-mini's legos are 4-16 channels wide; run one by one, their memory-bound kernels read the same
// input k times and the wide outputs several times, and its step ran 1.45x slower (docs/PERFORMANCE.md).
// One object per training step of a layer: it is the merged strategy's saved context
// (src/nn/lego_strategy.hpp). f32 on one process; the expert-parallel exchange runs legos one by one.
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
    Tensor in, z, out;           // conv input, conv output (BN input), BN output (stages 1 and 2)
    Tensor save_mean, save_invstd;
  };
  // Stage i's concatenated parameters and running statistics of rs.task, and their way back.
  void gather(const RunState& rs, int i, Stage& st, Tensor& running_mean, Tensor& running_var);
  void scatter_running(const RunState& rs, int i, const Tensor& running_mean, const Tensor& running_var);
  // Stages 1 and 2: convolution and batch norm (+ReLU).
  void run_stage(const RunState& rs, int i, const Tensor& in, Stage& st);
  // m_abar, m_ac and m_cg: the channel means of a, a - mean, and each lego's w x w block of
  // sum (a-mean)(a-mean)^T.
  void moments(const RunState& rs, const Tensor& a);
  // Stage 3 folded: its BN statistics from a's moments (training) or the running ones, then
  // u = sum_j gate_j * bn3_j(conv3_j(a_j)) as one 1x1 convolution of a to C channels.
  Tensor fold_last(const RunState& rs, const Tensor& a, std::int64_t C);
  // Stage 3's backward from the gradient of y: dgate, the shortcut's gradient da, with a projection
  // the gradient dzp of its conv's output, the stage's parameter gradients; returns the gradient of a.
  Tensor backward_last(const RunState& rs, const Tensor& dy, std::vector<float>& dgate, Tensor& da, Tensor& dzp);
  // Training: batch statistics of z for bn (running statistics updated); inference: the running ones.
  static void batch_stats(const RunState& rs, BatchNorm& bn, const Tensor& z, Tensor& mean, Tensor& invstd);
  // Parameter gradients of stage i (concatenated along the first dimension) into the legos'
  // parameters. dw undefined: the stage's weights get no gradient (frozen legos).
  void scatter_grads(int i, const Tensor& dw, const Tensor& dgamma, const Tensor& dbeta);
  // The projection BN's parameter gradients and its input gradient dzp, from the ReLU's sums A and P.
  Tensor projection_backward(const RunState& rs, const Tensor& da, const double* A, const double* P);
  // Stages 1 and 2 backward: BN (+ReLU), then the convolution's input (when din) and filter gradients.
  void backward_stage(const RunState& rs, int i, Stage& st, const Tensor& dout, Tensor* din,
                      kernels::GradMode din_mode);

  std::vector<Bottleneck*> m_legos;
  std::vector<float> m_gates;
  Conv2d* m_proj = nullptr;
  BatchNorm* m_proj_bn = nullptr;
  Stage m_stages[3];
  Tensor m_zp, m_pmean, m_pinvstd;   // the projection's conv output and batch statistics
  Tensor m_proj_x;                   // the projection conv's saved input (Conv2d::take_saved)
  std::vector<double> m_abar, m_cg;  // moments of stage 3's input (see moments())
  Tensor m_ac;
  Tensor m_weff;  // stage 3's folded weights [C, 1, 1, m*w]
  Tensor m_y;
  Shape m_x_shape;
};

}  // namespace gppf::nn
