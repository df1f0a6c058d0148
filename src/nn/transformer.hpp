#pragma once
// The blocks of GPPF-ViT (issue "GPPF-ViT"): pre-norm transformer blocks over tokens [N, T, D],
//   x1 = x + proj(attention(split_heads(qkv(LN1(x)))))
//   y  = x1 + sum_{i in S_t} g_{t,i} * mlp_i(LN2(x1)),  mlp_i = fc2_i(GELU(fc1_i(.)))
// The MLP is a lego layer: L interchangeable MLPs (shared ones always on), task t's top-k of them
// chosen and gated by its router (src/nn/router.hpp), exactly as the residual legos. Layer norm has
// no running statistics, so nothing in a block is per task but the router.
// Training runs one task's pass forward then backward (each module keeps its last forward's input).
#include <memory>
#include <vector>

#include "kernels/attention.hpp"
#include "kernels/layernorm.hpp"
#include "src/nn/layers.hpp"
#include "src/nn/lego.hpp"
#include "src/nn/router.hpp"

namespace gppf::nn {

class LayerNorm final : public Module {
 public:
  LayerNorm(std::string name, int dim, float eps = 1e-6f);
  // x [..., D].
  Tensor forward(const RunState& rs, const Tensor& x);
  // dx overwritten.
  Tensor backward(const RunState& rs, const Tensor& dy);
  void collect_parameters(std::vector<Parameter*>& out) override;

 private:
  std::string m_name;
  kernels::LayerNormParams m_params;
  Parameter m_gamma, m_beta;
  Tensor m_x, m_mean, m_invstd;
};

// One MLP lego: [rows, D] -> fc1 (D -> hidden) -> GELU -> fc2 (hidden -> D).
class MlpLego final : public Module {
 public:
  MlpLego(const std::string& name, int dim, int hidden, std::mt19937_64& rng);
  Tensor forward(const RunState& rs, const Tensor& x);
  // dx written or accumulated per dx_mode.
  void backward(const RunState& rs, const Tensor& dy, Tensor& dx, kernels::GradMode dx_mode);
  void collect_parameters(std::vector<Parameter*>& out) override;
  std::int64_t macs(std::int64_t rows) const { return m_fc1.macs(rows) + m_fc2.macs(rows); }
  // What a backward needs of the last training forward (one lego serving several ranks' tasks).
  struct Saved {
    Tensor fc1, h, fc2;
  };
  Saved take_saved() { return {m_fc1.take_saved(), std::move(m_h), m_fc2.take_saved()}; }
  void restore_saved(Saved s);

 private:
  Linear m_fc1, m_fc2;
  Tensor m_h;  // fc1's output (GELU's input)
};

class MlpLegoLayer;

// Runs a layer's active MLP legos where they are held: expert parallelism (src/dist/mlp_exchange.hpp).
// A process that runs no task in a round still calls it, to serve the legos it holds to the others.
class MlpLegoRunner {
 public:
  virtual ~MlpLegoRunner() = default;
  // h: this process's normalised tokens as rows [rows, D], undefined when it only serves. Returns
  // sum_j g_j mlp_j(h) over its task's route (undefined when h is); `saved` gets what a backward needs.
  virtual Tensor forward(MlpLegoLayer& layer, const RunState& rs, const Tensor& h, std::int64_t step,
                         std::unique_ptr<LegoContext>& saved) = 0;
  // dy: the gradient of that sum (undefined when serving). Returns h's gradient (undefined when
  // serving); writes the legos' and rs.task's router gradients.
  virtual Tensor backward(MlpLegoLayer& layer, const RunState& rs, const Tensor& dy, LegoContext& saved) = 0;
};

struct MlpLegoSpec {
  int dim = 0;
  int hidden = 0;  // of one lego (k active legos of hidden/k cost one dense MLP of hidden)
  int num_legos = 4, top_k = 2, num_shared = 0;
};

// y = x + sum_{i in S_t} g_{t,i} mlp_i(LN(x)), tokens [N, T, D].
class MlpLegoLayer final : public Module, public RoutedLayer {
 public:
  MlpLegoLayer(const std::string& name, const MlpLegoSpec& spec, int num_tasks, const RoutingOptions& routing,
               std::mt19937_64& rng);
  // x undefined: a round in which this process runs no task (expert parallelism: it serves its legos).
  Tensor forward(const RunState& rs, const Tensor& x, std::int64_t step);
  // dx overwritten; writes the legos', the norm's and rs.task's router gradients. dy undefined: serving.
  Tensor backward(const RunState& rs, const Tensor& dy);
  void collect_parameters(std::vector<Parameter*>& out) override;
  Router& routing() override { return m_router; }
  // The layer's position among the backbone's routed layers: tags its legos' and routers' owners
  // (nn::Owner), which the distributed step groups gradients by.
  void set_index(int index);
  int index() const { return m_index; }
  // Null: every active lego runs here.
  void set_runner(std::shared_ptr<MlpLegoRunner> runner) { m_runner = std::move(runner); }
  MlpLego& lego(int i) { return *m_legos[static_cast<std::size_t>(i)]; }
  // RoutedLayer
  const std::string& name() const override { return m_name; }
  Route route(int task, std::int64_t step, bool training) const override {
    return m_router.route(task, step, training);
  }
  Parameter& router(int task) override { return m_router.logits(task); }
  int num_tasks() const override { return m_router.num_tasks(); }
  int num_legos_total() const override { return static_cast<int>(m_legos.size()); }
  void set_router_copy(int task, std::vector<float> logits) override { m_router.set_copy(task, std::move(logits)); }
  float apply_balance(const std::vector<int>& tasks) override { return m_router.apply_balance(tasks); }
  // Multiply-adds of one pass over `rows` tokens with `active` legos (the norm not counted).
  std::int64_t macs(std::int64_t rows, int active) const { return m_legos.front()->macs(rows) * active; }
  const MlpLegoSpec& spec() const { return m_spec; }

 private:
  std::string m_name;
  MlpLegoSpec m_spec;
  LayerNorm m_norm;
  std::vector<std::unique_ptr<MlpLego>> m_legos;  // shared first, then routed
  Router m_router;
  // The last training forward: route, the norm's output, each active lego's output.
  Route m_route;
  Shape m_x_shape;
  std::vector<Tensor> m_outputs;
  int m_index = 0;
  std::shared_ptr<MlpLegoRunner> m_runner;
  std::unique_ptr<LegoContext> m_run_saved;  // the runner's, between a forward and its backward
};

// x + proj(attention(LN(x))), multi-head self-attention without masking, tokens [N, T, D].
class SelfAttention final : public Module {
 public:
  SelfAttention(const std::string& name, int dim, int heads, std::mt19937_64& rng);
  Tensor forward(const RunState& rs, const Tensor& x);
  Tensor backward(const RunState& rs, const Tensor& dy);
  void collect_parameters(std::vector<Parameter*>& out) override;

 private:
  int m_dim, m_heads;
  LayerNorm m_norm;
  Linear m_qkv, m_proj;
  Tensor m_q, m_k, m_v, m_probs;
  Shape m_x_shape;
};

// One pre-norm transformer block: attention (shared by all tasks), then the MLP legos.
class TransformerBlock final : public Module {
 public:
  TransformerBlock(const std::string& name, const MlpLegoSpec& mlp, int heads, int num_tasks,
                   const RoutingOptions& routing, std::mt19937_64& rng);
  // x / dy undefined: serving (only the MLP legos' exchange runs).
  Tensor forward(const RunState& rs, const Tensor& x, std::int64_t step);
  Tensor backward(const RunState& rs, const Tensor& dy);
  void collect_parameters(std::vector<Parameter*>& out) override;
  MlpLegoLayer& mlp() { return m_mlp; }
  std::int64_t mlp_macs(std::int64_t rows, int active) const { return m_mlp.macs(rows, active); }

 private:
  SelfAttention m_attn;
  MlpLegoLayer m_mlp;
};

}  // namespace gppf::nn
