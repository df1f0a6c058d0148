#include "src/nn/merged_legos.hpp"

#include <algorithm>
#include <cmath>

#include "kernels/elementwise.hpp"
#include "kernels/merged.hpp"

namespace gppf::nn {
namespace {

// The block's per-channel algebra (a few hundred values) runs on the host on every device; its
// pixel-wise passes run behind kernels/merged.hpp. A tensor's values on the host (itself when there;
// a sync on a GPU, counted on every device), and a host tensor moved to `device` (itself when that is
// the host).
Tensor on_host(const Tensor& t) { return read_back(t); }
Tensor on(Device device, const Tensor& host) { return device.is_host() ? host : host.to(device); }
Tensor values(Device device, const Shape& shape, const std::vector<float>& v) {
  return on(device, Tensor::from_vector(shape, v));
}

// Concatenates f32 tensors (one device) along their first dimension.
Tensor cat_first(const std::vector<const Tensor*>& parts) {
  Shape shape = parts.front()->shape();
  shape[0] = 0;
  for (const Tensor* p : parts) shape[0] += p->dim(0);
  Tensor out = Tensor::empty(shape, DType::F32, parts.front()->device());
  std::int64_t at = 0;
  for (const Tensor* p : parts) {
    out.narrow0(at, p->dim(0)).copy_from(*p);
    at += p->dim(0);
  }
  return out;
}

// The inverse of cat_first: copies consecutive slices of `cat` back into `parts`.
void split_first(const Tensor& cat, const std::vector<Tensor*>& parts) {
  std::int64_t at = 0;
  for (Tensor* p : parts) {
    p->copy_from(cat.narrow0(at, p->dim(0)));
    at += p->dim(0);
  }
}

// Whether stage i's convolution of any of the legos trains (gppf finetune freezes them).
bool any_trainable(const std::vector<Bottleneck*>& legos, int i) {
  for (Bottleneck* l : legos)
    if (l->conv(i).weight().trainable) return true;
  return false;
}

// Writes or adds (Parameter::take_grad_mode) the slice of a concatenated gradient `cat` (first
// dimension) from row `at`; returns the slice's end.
std::int64_t add_grad(Parameter& p, const Tensor& cat, std::int64_t at) {
  const std::int64_t rows = p.grad.dim(0);
  const Tensor src = cat.narrow0(at, rows).reshape(p.grad.shape());
  if (p.take_grad_mode() == kernels::GradMode::Overwrite)
    p.grad.copy_from(src);
  else
    kernels::axpby(1.0f, src, 1.0f, p.grad);
  return at + rows;
}

// A batch norm's parameters with the pass's momentum (RunState::bn_momentum, BN recalibration).
kernels::BatchNormParams with_momentum(const RunState& rs, kernels::BatchNormParams p) {
  if (rs.bn_momentum >= 0) p.momentum = rs.bn_momentum;
  return p;
}

float invstd_of(double var, float eps) { return static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps))); }

}  // namespace

void MergedLegos::gather(const RunState& rs, int i, Stage& st, Tensor& rm, Tensor& rv) {
  std::vector<const Tensor*> ws, gs, bs, rms, rvs;
  for (Bottleneck* l : m_legos) {
    ws.push_back(&l->conv(i).weight().value);
    gs.push_back(&l->bn(i).gamma().value);
    bs.push_back(&l->bn(i).beta().value);
    rms.push_back(&l->bn(i).running_mean(rs.task));
    rvs.push_back(&l->bn(i).running_var(rs.task));
  }
  st.conv = m_legos.front()->conv(i).params();
  // The first 1x1s share the input: one convolution. The others see only their own lego's channels.
  st.conv.groups = i == 1 ? 1 : static_cast<int>(m_legos.size());
  st.weight = cat_first(ws);
  st.bn = m_legos.front()->bn(i).params();
  st.gamma = cat_first(gs);
  st.beta = cat_first(bs);
  rm = cat_first(rms);
  rv = cat_first(rvs);
}

void MergedLegos::scatter_running(const RunState& rs, int i, const Tensor& rm, const Tensor& rv) {
  std::vector<Tensor*> rms, rvs;
  for (Bottleneck* l : m_legos) {
    rms.push_back(&l->bn(i).running_mean(rs.task));
    rvs.push_back(&l->bn(i).running_var(rs.task));
  }
  split_first(rm, rms);
  split_first(rv, rvs);
}

void MergedLegos::run_stage(const RunState& rs, int i, const Tensor& in, Stage& st) {
  Tensor rm, rv;
  gather(rs, i, st, rm, rv);
  st.z = Tensor::empty(kernels::conv2d_output_shape(st.conv, in.shape(), st.weight.shape()), DType::F32, in.device());
  kernels::conv2d_fwd(st.conv, in, st.weight, Tensor(), st.z, rs.stream);
  st.out = Tensor::empty(st.z.shape(), DType::F32, in.device());
  if (!rs.training) {
    kernels::batchnorm_fwd_infer(st.bn, st.z, st.gamma, st.beta, rm, rv, st.out, rs.stream);
    return;
  }
  const std::int64_t C = st.z.dim(-1);
  st.save_mean = Tensor::empty({C}, DType::F32, in.device());
  st.save_invstd = Tensor::empty({C}, DType::F32, in.device());
  kernels::batchnorm_fwd_train(with_momentum(rs, st.bn), st.z, st.gamma, st.beta, rm, rv, st.out, st.save_mean,
                               st.save_invstd, rs.stream);
  scatter_running(rs, i, rm, rv);
  st.in = in;
}

void MergedLegos::moments(const RunState& rs, const Tensor& a) {
  const std::int64_t K = a.dim(-1), pixels = a.numel() / K;
  // The channel means, the centred a (kept for backward), and its Gram matrix as a 1x1 filter gradient.
  Tensor sums = Tensor::empty({K}, DType::F32, a.device());
  kernels::reduce_rows(a, sums, kernels::GradMode::Overwrite, rs.stream);
  const Tensor sums_h = on_host(sums);
  m_abar.assign(sums_h.data_as<float>(), sums_h.data_as<float>() + K);
  for (double& v : m_abar) v /= static_cast<double>(pixels);
  m_ac = Tensor::empty(a.shape(), DType::F32, a.device());
  kernels::center_channels(a, values(a.device(), {K}, std::vector<float>(m_abar.begin(), m_abar.end())), m_ac,
                           rs.stream);
  Tensor gram = Tensor::empty({K, 1, 1, K}, DType::F32, a.device());
  kernels::conv2d_bwd_filter(kernels::Conv2dParams{}, m_ac, m_ac, gram, nullptr, kernels::GradMode::Overwrite,
                             rs.stream);
  const Tensor gram_h = on_host(gram);
  // Each lego's w x w block of the diagonal.
  const std::int64_t m = static_cast<std::int64_t>(m_legos.size()), w = K / m;
  m_cg.resize(static_cast<std::size_t>(m * w * w));
  for (std::int64_t j = 0; j < m; ++j)
    for (std::int64_t i = 0; i < w; ++i)
      for (std::int64_t i2 = 0; i2 < w; ++i2)
        m_cg[static_cast<std::size_t>((j * w + i) * w + i2)] = gram_h.data_as<float>()[(j * w + i) * K + j * w + i2];
}

Tensor MergedLegos::fold_last(const RunState& rs, const Tensor& a, std::int64_t C) {
  Stage& st = m_stages[2];
  Tensor rm, rv;
  gather(rs, 3, st, rm, rv);
  st.conv.groups = 1;
  const std::int64_t K = a.dim(-1), m = static_cast<std::int64_t>(m_legos.size()), w = K / m;
  const std::int64_t pixels = a.numel() / K;
  const Device dev = a.device();
  const Tensor w3_h = on_host(st.weight);
  const float* W3 = w3_h.data_as<float>();  // [m*C][w]: lego j's rows j*C .. j*C + C - 1
  Tensor mu_h = Tensor::empty({m * C}, DType::F32), is_h = Tensor::empty({m * C}, DType::F32);
  Tensor rm_h = on_host(rm), rv_h = on_host(rv);
  float *mu = mu_h.data_as<float>(), *is = is_h.data_as<float>();
  float *rmp = rm_h.data_as<float>(), *rvp = rv_h.data_as<float>();
  if (rs.training) {
    // z_q = W3_q . a_j, so mean(z_q) = W3_q . mean(a_j) and var(z_q) = W3_q Cov(a_j) W3_q^T.
    moments(rs, a);
    const double n = static_cast<double>(pixels), mom = with_momentum(rs, st.bn).momentum;
    for (std::int64_t q = 0; q < m * C; ++q) {
      const std::int64_t j = q / C;
      const float* wq = W3 + q * w;
      const double* cg = m_cg.data() + j * w * w;
      double mean = 0, var = 0;
      for (std::int64_t i = 0; i < w; ++i) {
        mean += wq[i] * m_abar[static_cast<std::size_t>(j * w + i)];
        double row = 0;
        for (std::int64_t i2 = 0; i2 < w; ++i2) row += cg[i * w + i2] * wq[i2];
        var += wq[i] * row;
      }
      var = std::max(var / n, 0.0);
      mu[q] = static_cast<float>(mean);
      is[q] = invstd_of(var, st.bn.eps);
      rmp[q] = static_cast<float>((1.0 - mom) * rmp[q] + mom * mean);
      rvp[q] = static_cast<float>((1.0 - mom) * rvp[q] + mom * var * n / (n - 1.0));
    }
    scatter_running(rs, 3, rm_h, rv_h);
  } else {
    for (std::int64_t q = 0; q < m * C; ++q) {
      mu[q] = rmp[q];
      is[q] = invstd_of(rvp[q], st.bn.eps);
    }
  }
  // The gated sum of the legos' normalised outputs is one 1x1 convolution of a: weights
  // gate_j*gamma_q*invstd_q*W3_q in columns j*w .. j*w + w - 1, bias sum_j gate_j*(beta_q - gamma_q*invstd_q*mean_q).
  st.save_mean = on(dev, mu_h);
  st.save_invstd = on(dev, is_h);
  Tensor weff = Tensor::empty({C, 1, 1, K}, DType::F32);
  Tensor bias = Tensor::zeros({C}, DType::F32);
  const Tensor gm_h = on_host(st.gamma), bt_h = on_host(st.beta);
  const float *gm = gm_h.data_as<float>(), *bt = bt_h.data_as<float>();
  float *we = weff.data_as<float>(), *bp = bias.data_as<float>();
  for (std::int64_t j = 0; j < m; ++j) {
    const float g = m_gates[static_cast<std::size_t>(j)];
    for (std::int64_t c = 0; c < C; ++c) {
      const std::int64_t q = j * C + c;
      const float scale = g * gm[q] * is[q];
      for (std::int64_t i = 0; i < w; ++i) we[c * K + j * w + i] = scale * W3[q * w + i];
      bp[c] += g * (bt[q] - gm[q] * is[q] * mu[q]);
    }
  }
  m_weff = on(dev, weff);
  Tensor u = Tensor::empty({a.dim(0), a.dim(1), a.dim(2), C}, DType::F32, dev);
  kernels::conv2d_fwd(st.conv, a, m_weff, on(dev, bias), u, rs.stream);
  return u;
}

Tensor MergedLegos::forward(const RunState& rs, const Tensor& x, std::vector<Bottleneck*> legos,
                            std::vector<float> gates, Conv2d* proj, BatchNorm* proj_bn) {
  GPPF_CHECK(x.dtype() == DType::F32 && !legos.empty() && gates.size() == legos.size() &&
                 (proj == nullptr) == (proj_bn == nullptr),
             "merged legos: f32 input and one gate per lego expected, got ", x.desc());
  m_legos = std::move(legos);
  m_gates = std::move(gates);
  m_proj = proj;
  m_proj_bn = proj_bn;
  run_stage(rs, 1, x, m_stages[0]);
  run_stage(rs, 2, m_stages[0].out, m_stages[1]);
  const std::int64_t C = m_legos.front()->conv(3).weight().value.dim(0);
  // u = sum_j gate_j * lego_j(x) + its constant, written once (C wide).
  Tensor y = fold_last(rs, m_stages[1].out, C);
  // The shortcut s is x, or the projection's normalised output smul*zp + sadd (its statistics only are
  // computed here; the map is applied in the pass below).
  Tensor s = x;
  std::vector<float> smul(static_cast<std::size_t>(C), 1.0f), sadd(static_cast<std::size_t>(C), 0.0f);
  if (proj) {
    s = m_zp = proj->forward(rs, x);
    m_proj_x = proj->take_saved();
    m_pmean = Tensor::empty({C}, DType::F32, x.device());
    m_pinvstd = Tensor::empty({C}, DType::F32, x.device());
    batch_stats(rs, *proj_bn, m_zp, m_pmean, m_pinvstd);
    const Tensor gp_h = on_host(proj_bn->gamma().value), bp_h = on_host(proj_bn->beta().value);
    const Tensor pis_h = on_host(m_pinvstd), pmu_h = on_host(m_pmean);
    const float *gp = gp_h.data_as<float>(), *bp = bp_h.data_as<float>();
    for (std::int64_t c = 0; c < C; ++c) {
      const auto cc = static_cast<std::size_t>(c);
      smul[cc] = gp[c] * pis_h.data_as<float>()[c];
      sadd[cc] = bp[c] - smul[cc] * pmu_h.data_as<float>()[c];
    }
  }
  check_shape("merged legos", "shortcut", s, y.shape());
  kernels::add_affine_relu(y, s, values(x.device(), {C}, smul), values(x.device(), {C}, sadd), rs.stream);
  if (rs.training) {
    m_y = y;
    m_x_shape = x.shape();
  } else {
    for (Stage& stage : m_stages) stage = Stage{};
    m_legos.clear();
    m_zp = m_pmean = m_pinvstd = m_weff = m_ac = m_proj_x = Tensor();
  }
  return y;
}

void MergedLegos::batch_stats(const RunState& rs, BatchNorm& bn, const Tensor& z, Tensor& mean, Tensor& invstd) {
  if (!rs.training) {
    const Tensor rv_h = on_host(bn.running_var(rs.task));
    const float* rv = rv_h.data_as<float>();
    mean.copy_from(bn.running_mean(rs.task));
    Tensor is_h = Tensor::empty({z.dim(-1)}, DType::F32);
    for (std::int64_t c = 0; c < z.dim(-1); ++c) is_h.data_as<float>()[c] = invstd_of(rv[c], bn.params().eps);
    invstd.copy_from(is_h);
    return;
  }
  kernels::batchnorm_stats(with_momentum(rs, bn.params()), z, bn.running_mean(rs.task), bn.running_var(rs.task), mean,
                           invstd);
}

void MergedLegos::scatter_grads(int i, const Tensor& dw, const Tensor& dgamma, const Tensor& dbeta) {
  std::int64_t at_w = 0, at_bn = 0;
  for (Bottleneck* l : m_legos) {
    if (dw.defined()) at_w = add_grad(l->conv(i).weight(), dw, at_w);
    add_grad(l->bn(i).gamma(), dgamma, at_bn);
    at_bn = add_grad(l->bn(i).beta(), dbeta, at_bn);
  }
}

void MergedLegos::backward_stage(const RunState& rs, int i, Stage& st, const Tensor& dout, Tensor* din,
                                 kernels::GradMode din_mode) {
  const Device dev = st.z.device();
  Tensor dz = Tensor::empty(st.z.shape(), DType::F32, dev);
  Tensor dgamma = Tensor::empty(st.gamma.shape(), DType::F32, dev),
         dbeta = Tensor::empty(st.gamma.shape(), DType::F32, dev);
  kernels::batchnorm_bwd(st.bn, st.z, st.out, dout, st.gamma, st.save_mean, st.save_invstd, dz, dgamma, dbeta,
                         kernels::GradMode::Overwrite, rs.stream);
  if (din) kernels::conv2d_bwd_data(st.conv, dz, st.weight, *din, din_mode, rs.stream);
  // Frozen legos (gppf finetune) get no filter gradient, as in Conv2d.
  const bool trainable = any_trainable(m_legos, i);
  Tensor dw;
  if (trainable) {
    dw = Tensor::empty(st.weight.shape(), DType::F32, dev);
    kernels::conv2d_bwd_filter(st.conv, st.in, dz, dw, nullptr, kernels::GradMode::Overwrite, rs.stream);
  }
  scatter_grads(i, dw, dgamma, dbeta);
  st = Stage{};
}

Tensor MergedLegos::backward_last(const RunState& rs, const Tensor& dy, std::vector<float>& dgate, Tensor& da,
                                  Tensor& dzp) {
  Stage& st = m_stages[2];
  const Tensor& a = m_stages[1].out;
  const std::int64_t C = m_y.dim(-1), pixels = m_y.numel() / C, K = a.dim(-1);
  const auto m = static_cast<std::int64_t>(m_legos.size());
  const std::int64_t w = K / m;
  const Device dev = m_y.device();
  const bool proj = m_proj != nullptr;
  // da = dy through the ReLU; A[c] = sum da and, with a projection, P[c] = sum da * (zp - pmean).
  da = Tensor::empty(m_y.shape(), DType::F32, dev);
  const std::vector<double> sums =
      kernels::relu_bwd_channel_sums(m_y, dy, proj ? m_zp : Tensor(), proj ? m_pmean : Tensor(), da, rs.stream);
  const double *A = sums.data(), *P = A + C;
  // ac = a - mean(a) (narrow), and Mc[c][k] = sum da[c] * ac[k]: then with z_q = W3_q . a_j,
  // B_q = sum da * (z_q - mean_q) = W3_q . Mc[c][j*w ..], exactly, without z.
  const Tensor& ac = m_ac;
  Tensor mc = Tensor::empty({C, 1, 1, K}, DType::F32, dev);
  kernels::conv2d_bwd_filter(st.conv, ac, da, mc, nullptr, kernels::GradMode::Overwrite, rs.stream);
  const Tensor mc_h = on_host(mc), w3_h = on_host(st.weight), gm_h = on_host(st.gamma), bt_h = on_host(st.beta),
               is_h = on_host(st.save_invstd);
  const float* M = mc_h.data_as<float>();
  const float* W3 = w3_h.data_as<float>();
  // The BN backward of lego j sees dO = gate_j * da: its sums are gate_j * A and gate_j * B, and
  // dz = K1*da - K0 - K2*(z - mean) with K1 = gamma*invstd*gate_j, K0 = K1*A/n, K2 = K1*invstd^2*B/n.
  // The gate's gradient is sum(da * o_j) = sum_c gamma*invstd*B + beta*A.
  const double n = static_cast<double>(pixels);
  const float *gm = gm_h.data_as<float>(), *bt = bt_h.data_as<float>(), *is = is_h.data_as<float>();
  const auto mc_size = static_cast<std::size_t>(m * C);
  std::vector<double> K0(mc_size), K2(mc_size);
  std::vector<float> dgamma(mc_size), dbeta(mc_size), dw3(static_cast<std::size_t>(m * C * w));
  dgate.assign(static_cast<std::size_t>(m), 0.0f);
  for (std::int64_t j = 0; j < m; ++j) {
    const double g = m_gates[static_cast<std::size_t>(j)];
    double dg = 0;
    for (std::int64_t c = 0; c < C; ++c) {
      const std::int64_t q = j * C + c;
      const auto qq = static_cast<std::size_t>(q);
      const float* wq = W3 + q * w;
      const float* mr = M + c * K + j * w;
      double B = 0;
      for (std::int64_t i = 0; i < w; ++i) B += static_cast<double>(wq[i]) * mr[i];
      const double iv = is[q], k1 = gm[q] * iv * g;
      dg += gm[q] * iv * B + bt[q] * A[c];
      dgamma[qq] = static_cast<float>(g * B * iv);
      dbeta[qq] = static_cast<float>(g * A[c]);
      K0[qq] = k1 * A[c] / n;
      K2[qq] = k1 * iv * iv * B / n;
      // dW3_q = sum dz_q * a = K1 * Mc[c] - K2 * (W3_q Cg_j): the K0 term cancels against the mean in Mc.
      const double* cg = m_cg.data() + j * w * w;
      for (std::int64_t i = 0; i < w; ++i) {
        double wc = 0;
        for (std::int64_t i2 = 0; i2 < w; ++i2) wc += wq[i2] * cg[i2 * w + i];
        dw3[static_cast<std::size_t>(q * w + i)] = static_cast<float>(k1 * mr[i] - K2[qq] * wc);
      }
    }
    dgate[static_cast<std::size_t>(j)] = static_cast<float>(dg);
  }
  scatter_grads(3, any_trainable(m_legos, 3) ? values(dev, st.weight.shape(), dw3) : Tensor(),
                values(dev, {m * C}, dgamma), values(dev, {m * C}, dbeta));
  // Input gradient of the last stage: da through the folded weights, plus the batch statistics'
  // part: d_a[j*w + i] = (da . Weff)[j*w + i] - sum_c K0_q W3_qi - sum_i' G_j[i][i'] * ac[j*w + i'],
  // with G_j = sum_c K2_q W3_q^T W3_q.
  Tensor d2 = Tensor::empty(a.shape(), DType::F32, dev);
  kernels::conv2d_bwd_data(st.conv, da, m_weff, d2, kernels::GradMode::Overwrite, rs.stream);
  // G as a K x K block-diagonal matrix, so that the per-pixel pass runs along all K channels (w is 4-16).
  std::vector<float> G(static_cast<std::size_t>(K * K), 0.0f), h(static_cast<std::size_t>(K));
  for (std::int64_t j = 0; j < m; ++j)
    for (std::int64_t i = 0; i < w; ++i) {
      double hv = 0;
      for (std::int64_t c = 0; c < C; ++c) hv -= K0[static_cast<std::size_t>(j * C + c)] * W3[(j * C + c) * w + i];
      h[static_cast<std::size_t>(j * w + i)] = static_cast<float>(hv);
      for (std::int64_t i2 = 0; i2 < w; ++i2) {
        double gv = 0;
        for (std::int64_t c = 0; c < C; ++c) {
          const std::int64_t q = j * C + c;
          gv += K2[static_cast<std::size_t>(q)] * W3[q * w + i] * W3[q * w + i2];
        }
        G[static_cast<std::size_t>((j * w + i2) * K + j * w + i)] = static_cast<float>(gv);
      }
    }
  kernels::gram_correct(d2, ac, values(dev, {K * K}, G), values(dev, {K}, h), rs.stream);
  if (proj) dzp = projection_backward(rs, da, A, P);
  st = Stage{};
  return d2;
}

Tensor MergedLegos::projection_backward(const RunState& rs, const Tensor& da, const double* A, const double* P) {
  // The projection's BN sees da itself (gate 1).
  const std::int64_t C = da.dim(-1);
  const auto nc = static_cast<std::size_t>(C);
  const double n = static_cast<double>(da.numel() / C);
  const Tensor gp_h = on_host(m_proj_bn->gamma().value), pis_h = on_host(m_pinvstd);
  const float *gp = gp_h.data_as<float>(), *pis = pis_h.data_as<float>();
  std::vector<float> dgp(nc), dbp(nc), q1(nc), q0(nc), q2(nc);
  for (std::int64_t c = 0; c < C; ++c) {
    const auto cc = static_cast<std::size_t>(c);
    const double k1 = static_cast<double>(gp[c]) * pis[c];
    dgp[cc] = static_cast<float>(P[c] * pis[c]);
    dbp[cc] = static_cast<float>(A[c]);
    q1[cc] = static_cast<float>(k1);
    q0[cc] = static_cast<float>(k1 * A[c] / n);
    q2[cc] = static_cast<float>(k1 * pis[c] * pis[c] * P[c] / n);
  }
  const Device dev = da.device();
  add_grad(m_proj_bn->gamma(), values(dev, {C}, dgp), 0);
  add_grad(m_proj_bn->beta(), values(dev, {C}, dbp), 0);
  Tensor dzp = Tensor::empty(m_zp.shape(), DType::F32, dev);
  kernels::bn_input_grad(da, m_zp, m_pmean, values(dev, {C}, q1), values(dev, {C}, q0), values(dev, {C}, q2), dzp,
                         rs.stream);
  return dzp;
}

Tensor MergedLegos::backward(const RunState& rs, const Tensor& dy, std::vector<float>& dgate) {
  GPPF_CHECK(m_y.defined(), "merged legos: backward without a training forward");
  check_shape("merged legos backward", "dy", dy, m_y.shape());
  Tensor da, dzp;
  const Tensor d2 = backward_last(rs, dy, dgate, da, dzp);
  Tensor d1 = Tensor::empty(m_stages[0].out.shape(), DType::F32, dy.device());
  backward_stage(rs, 2, m_stages[1], d2, &d1, kernels::GradMode::Overwrite);
  // The input gradient: the legos' added to da itself, or the projection's added to the legos' (a
  // strided projection's reaches a quarter of the pixels and adds in place, without a temporary).
  Tensor dx = da;
  if (m_proj) {
    dx = Tensor::empty(m_x_shape, DType::F32, dy.device());
    backward_stage(rs, 1, m_stages[0], d1, &dx, kernels::GradMode::Overwrite);
    m_proj->restore_saved(std::move(m_proj_x));
    m_proj->backward(rs, dzp, &dx, kernels::GradMode::Accumulate);
  } else {
    backward_stage(rs, 1, m_stages[0], d1, &dx, kernels::GradMode::Accumulate);
  }
  m_y = m_zp = m_pmean = m_pinvstd = m_weff = m_ac = Tensor();
  m_legos.clear();
  return dx;
}

}  // namespace gppf::nn
