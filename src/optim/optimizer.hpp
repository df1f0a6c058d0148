#pragma once
// Optimizers over nn::Parameter lists: SGD (momentum, Nesterov), AdamW, LARS and LAMB, with decoupled
// weight decay, parameter groups (Parameter::decay), global-norm clipping and dynamic loss scaling.
// Exact formulas: docs/OPTIMIZATION.md.
//
// A step updates only the parameters a backward pass touched (Parameter::touched): an untouched one
// gets no decay and no momentum step, and its step count (AdamW/LAMB bias correction) stays put. After
// every step, skipped or not, each Parameter's clear_grad() is called.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.hpp"
#include "src/nn/parameter.hpp"
#include "src/optim/clip.hpp"
#include "src/optim/mixed_precision.hpp"

namespace gppf::optim {

struct OptimizerConfig {
  std::string type = "sgd";  // sgd | adamw | lars | lamb
  float lr = 0.1f;           // the base rate for schedules; step() takes the current one
  float momentum = 0.9f;     // sgd, lars (0: no momentum buffer)
  bool nesterov = false;     // sgd, lars
  float weight_decay = 1e-4f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;  // adamw, lamb
  float trust_coefficient = 0.001f;                 // lars: eta in the trust ratio
  float max_grad_norm = 0.0f;                       // global-norm clipping; 0: off
};

// Throws gppf::Error naming the bad key (unknown type, negative rates, betas outside [0, 1), ...).
void validate(const OptimizerConfig& config);

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Parameters must be f32, uniquely named, all on one device; state lives next to them.
  static std::unique_ptr<Optimizer> create(const OptimizerConfig& config, std::vector<nn::Parameter*> params);

  // One step at learning rate `lr` over the touched, trainable parameters, ordered on `stream`.
  // Reduces the gradient norm first (one device-to-host sync), unscales by the loss scaler and clips
  // when configured, inside the fused update. Returns the global gradient norm over the touched
  // parameters, unscaled and before clipping. A non-finite norm skips the step (nothing is updated,
  // no step count advances; the loss scaler backs off) and is returned as is.
  float step(float lr, const Stream& stream = Stream::host());

  // Optimizer state by name, for checkpoints: "<param>.momentum" (sgd, lars with momentum > 0),
  // "<param>.exp_avg", "<param>.exp_avg_sq" (f32, on the parameters' device) and "<param>.step"
  // (adamw, lamb: host i64[1], the number of updates this parameter has had). Writing into these
  // tensors restores the state.
  virtual std::vector<std::pair<std::string, Tensor*>> state() = 0;

  // Optional: how the squared gradient norms of the touched parameters (sums[2k] for touched[k], an
  // index into params()) become the global sum of squares. Distributed runs count each parameter on one
  // rank and add over the ranks; the default adds them all here.
  using NormReducer = std::function<double(const std::vector<std::size_t>& touched, const std::vector<double>& sums)>;
  void set_norm_reducer(NormReducer reducer) { m_norm_reducer = std::move(reducer); }
  // Optional: divide gradients by scaler->scale() and report overflows to it (nullptr: off).
  void set_loss_scaler(LossScaler* scaler) { m_scaler = scaler; }
  // Optional: after each update of `param`, write its bf16/f16 working copy into `*copy`.
  void set_working_copy(const nn::Parameter& param, Tensor* copy);

  bool last_step_skipped() const { return m_last_skipped; }
  const OptimizerConfig& config() const { return m_config; }
  const std::vector<nn::Parameter*>& params() const { return m_params; }

 protected:
  Optimizer(const OptimizerConfig& config, std::vector<nn::Parameter*> params);

  struct StepContext {
    float lr;
    float grad_scale;                         // 1/loss scale * clip factor
    const std::vector<std::size_t>& touched;  // indices into params()
    const std::vector<double>& sums;          // per touched k: [2k] = sum g^2 (raw), [2k+1] = sum p^2 if asked
    const Stream& stream;
  };
  // Whether the norm pass should also reduce sum p^2 (LARS).
  virtual bool wants_param_norms() const { return false; }
  virtual void update(const StepContext& ctx) = 0;

  // A zero f32 tensor shaped and placed like parameter i.
  Tensor zeros_like(std::size_t i) const;
  // Host i64[1] step counters.
  static Tensor step_counter();

  OptimizerConfig m_config;
  std::vector<nn::Parameter*> m_params;
  SumBuffer m_sums;

 private:
  LossScaler* m_scaler = nullptr;
  NormReducer m_norm_reducer;
  std::vector<Tensor*> m_working;  // per parameter, may be null
  bool m_last_skipped = false;
};

// LARS trust ratio of one tensor: eta * |p| / (|g| + wd |p|) when both norms are positive, else 1.
double lars_trust_ratio(double param_norm, double grad_norm, double eta, double weight_decay);
// LAMB trust ratio: |p| / |r| when both norms are positive, else 1.
double lamb_trust_ratio(double param_norm, double update_norm);

}  // namespace gppf::optim
