#pragma once
// The basic layers of the network: convolution, batch norm with per-task statistics, linear.
#include <vector>

#include "kernels/batchnorm.hpp"
#include "kernels/conv.hpp"
#include "kernels/segments.hpp"
#include "src/nn/module.hpp"

namespace gppf::nn {

// The filter (and bias, when non-null) gradient of a convolution of x into the parameters' f32 grad,
// written or added per `mode`. bf16 activations: cuDNN writes the filter gradient in their dtype, so
// it goes through a bf16 buffer and is widened.
void conv2d_filter_grad(const kernels::Conv2dParams& p, const Tensor& x, const Tensor& dy, Parameter& weight,
                        Parameter* bias, kernels::GradMode mode, const Stream& stream);

struct ConvSpec {
  int in_channels = 0, out_channels = 0;
  int kernel = 1, stride = 1, padding = 0, groups = 1;
  bool bias = false;
};

class Conv2d final : public Module {
 public:
  Conv2d(std::string name, const ConvSpec& spec, std::mt19937_64& rng);
  Tensor forward(const RunState& rs, const Tensor& x);
  // dx (when non-null) is written or accumulated per dx_mode.
  void backward(const RunState& rs, const Tensor& dy, Tensor* dx, kernels::GradMode dx_mode);
  void collect_parameters(std::vector<Parameter*>& out) override;
  const ConvSpec& spec() const { return m_spec; }
  // The shape of the input saved by the last training forward (until backward consumes it).
  const Shape& input_shape() const { return m_x.shape(); }
  void fill_bias(float value) { m_bias.value.fill_(value); }
  Parameter& weight() { return m_weight; }
  const kernels::Conv2dParams& params() const { return m_params; }
  // Multiply-adds of one forward pass for an input of this shape (FLOPs = 2x).
  std::int64_t macs(const Shape& x) const;
  Shape output_shape(const Shape& x) const;
  // What the last training forward saved for backward, moved out and back: an expert-parallel lego
  // runs for several tasks in one round and keeps one saved context per call.
  Tensor take_saved() { return std::move(m_x); }
  void restore_saved(Tensor saved) { m_x = std::move(saved); }

 private:
  ConvSpec m_spec;
  kernels::Conv2dParams m_params;
  Parameter m_weight, m_bias;
  Tensor m_x;
};

// Batch norm whose affine parameters are shared by all tasks but whose running statistics are kept
// per task (DESIGN.md: shared running averages mix domains and cost 8 points of accuracy).
class BatchNorm final : public Module {
 public:
  BatchNorm(std::string name, int channels, int num_tasks, bool relu, float momentum = 0.1f, float eps = 1e-5f);
  Tensor forward(const RunState& rs, const Tensor& x);
  // dx is overwritten.
  Tensor backward(const RunState& rs, const Tensor& dy);
  void collect_parameters(std::vector<Parameter*>& out) override;
  void collect_buffers(std::vector<Buffer>& out) override;
  // The shape of the input saved by the last training forward (until backward consumes it).
  const Shape& input_shape() const { return m_x.shape(); }
  Parameter& gamma() { return m_gamma; }
  Parameter& beta() { return m_beta; }
  Tensor& running_mean(int task) { return m_running_mean.at(static_cast<std::size_t>(task)); }
  Tensor& running_var(int task) { return m_running_var.at(static_cast<std::size_t>(task)); }
  int num_tasks() const { return static_cast<int>(m_running_mean.size()); }
  const kernels::BatchNormParams& params() const { return m_params; }
  struct Saved {
    Tensor x, y, mean, invstd;
    double count = 0;
    std::vector<kernels::BatchNormSegment> segments;
  };
  Saved take_saved() {
    return {std::move(m_x),           std::move(m_y), std::move(m_save_mean),
            std::move(m_save_invstd), m_count,        std::move(m_segments)};
  }
  void restore_saved(Saved s) {
    m_x = std::move(s.x);
    m_y = std::move(s.y);
    m_save_mean = std::move(s.mean);
    m_save_invstd = std::move(s.invstd);
    m_count = s.count;
    m_segments = std::move(s.segments);
  }

 private:
  // Synchronised BN (RunState::bn_sync): statistics and their gradients summed over the replicas that
  // share the task's micro-batch; host f32.
  Tensor forward_synced(const RunState& rs, const Tensor& x, std::size_t task);
  Tensor backward_synced(const RunState& rs, const Tensor& dy);
  // Several tasks' samples (RunState::segments): statistics per task.
  Tensor forward_segments(const RunState& rs, const Tensor& x);

  std::string m_name;
  kernels::BatchNormParams m_params;
  Parameter m_gamma, m_beta;
  std::vector<Tensor> m_running_mean, m_running_var;  // one per task
  Tensor m_x, m_y, m_save_mean, m_save_invstd;
  double m_count = 0;                                 // synchronised BN: the global number of rows of the last forward
  std::vector<kernels::BatchNormSegment> m_segments;  // several tasks' samples: their counts
};

class Linear final : public Module {
 public:
  Linear(std::string name, int in_features, int out_features, std::mt19937_64& rng);
  Tensor forward(const RunState& rs, const Tensor& x);
  void backward(const RunState& rs, const Tensor& dy, Tensor* dx, kernels::GradMode dx_mode);
  void collect_parameters(std::vector<Parameter*>& out) override;
  std::int64_t macs(std::int64_t rows) const { return rows * m_weight.value.dim(0) * m_weight.value.dim(1); }
  // The last training forward's input, for callers that run one module for several inputs before
  // their backwards (expert parallelism).
  Tensor take_saved() { return std::move(m_x); }
  void restore_saved(Tensor x) { m_x = std::move(x); }

 private:
  Parameter m_weight, m_bias;
  Tensor m_x;
};

}  // namespace gppf::nn
