#include "src/nn/merged_legos.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels/elementwise.hpp"

namespace gppf::nn {
namespace {

constexpr std::int64_t kBlock = 64;  // pixels summed in f32 before the f64 partials

// Concatenates host f32 tensors along their first dimension.
Tensor cat_first(const std::vector<const Tensor*>& parts) {
  Shape shape = parts.front()->shape();
  shape[0] = 0;
  for (const Tensor* p : parts) shape[0] += p->dim(0);
  Tensor out = Tensor::empty(shape, DType::F32);
  float* o = out.data_as<float>();
  for (const Tensor* p : parts) o = std::copy(p->data_as<float>(), p->data_as<float>() + p->numel(), o);
  return out;
}

// The inverse of cat_first: copies consecutive slices of `cat` back into `parts`.
void split_first(const Tensor& cat, const std::vector<Tensor*>& parts) {
  const float* c = cat.data_as<float>();
  for (Tensor* p : parts) {
    std::copy(c, c + p->numel(), p->data_as<float>());
    c += p->numel();
  }
}

// Whether stage i's convolution of any of the legos trains (gppf finetune freezes them).
bool any_trainable(const std::vector<Bottleneck*>& legos, int i) {
  for (Bottleneck* l : legos)
    if (l->conv(i).weight().trainable) return true;
  return false;
}

// Writes or adds (Parameter::take_grad_mode) a slice of a concatenated gradient; returns the slice's end.
const float* add_grad(Parameter& p, const float* src) {
  const std::int64_t n = p.grad.numel();
  float* g = p.grad.data_as<float>();
  if (p.take_grad_mode() == kernels::GradMode::Overwrite)
    std::copy(src, src + n, g);
  else
    for (std::int64_t i = 0; i < n; ++i) g[i] += src[i];
  return src + n;
}

// A batch norm's parameters with the pass's momentum (RunState::bn_momentum, BN recalibration).
kernels::BatchNormParams with_momentum(const RunState& rs, kernels::BatchNormParams p) {
  if (rs.bn_momentum >= 0) p.momentum = rs.bn_momentum;
  return p;
}

float invstd_of(double var, float eps) { return static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps))); }

// d[p][k] += h[k] - sum_k2 ac[p][k2] * G[k2][k]. K is 8-32 here: a compile-time K lets the compiler
// keep a pixel's row in vector registers (with a run-time K of 8 the loop ran scalar, at 12 GB/s).
template <std::int64_t KK>
void correct_rows(float* d, const float* ac, const float* G, const float* h, std::int64_t pixels, std::int64_t K) {
  const std::int64_t k_n = KK > 0 ? KK : K;
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < pixels; ++p) {
    float* dr = d + p * k_n;
    const float* cr = ac + p * k_n;
    float v[KK > 0 ? KK : 1];
    float* acc = KK > 0 ? v : dr;
    if constexpr (KK > 0)
      for (std::int64_t k = 0; k < KK; ++k) v[k] = dr[k];
    for (std::int64_t k = 0; k < k_n; ++k) acc[k] += h[k];
    for (std::int64_t k2 = 0; k2 < k_n; ++k2) {
      const float c = cr[k2];
      for (std::int64_t k = 0; k < k_n; ++k) acc[k] -= c * G[k2 * k_n + k];
    }
    if constexpr (KK > 0)
      for (std::int64_t k = 0; k < KK; ++k) dr[k] = v[k];
  }
}

void correct_input_gradient(float* d, const float* ac, const float* G, const float* h, std::int64_t pixels,
                            std::int64_t K) {
  switch (K) {
    case 8: return correct_rows<8>(d, ac, G, h, pixels, K);
    case 16: return correct_rows<16>(d, ac, G, h, pixels, K);
    case 32: return correct_rows<32>(d, ac, G, h, pixels, K);
    default: return correct_rows<0>(d, ac, G, h, pixels, K);
  }
}

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
  st.z = Tensor::empty(kernels::conv2d_output_shape(st.conv, in.shape(), st.weight.shape()), DType::F32);
  kernels::conv2d_fwd(st.conv, in, st.weight, Tensor(), st.z, rs.stream);
  st.out = Tensor::empty(st.z.shape(), DType::F32);
  if (!rs.training) {
    kernels::batchnorm_fwd_infer(st.bn, st.z, st.gamma, st.beta, rm, rv, st.out, rs.stream);
    return;
  }
  const std::int64_t C = st.z.dim(-1);
  st.save_mean = Tensor::empty({C}, DType::F32);
  st.save_invstd = Tensor::empty({C}, DType::F32);
  kernels::batchnorm_fwd_train(with_momentum(rs, st.bn), st.z, st.gamma, st.beta, rm, rv, st.out, st.save_mean,
                               st.save_invstd, rs.stream);
  scatter_running(rs, i, rm, rv);
  st.in = in;
}

void MergedLegos::moments(const RunState& rs, const Tensor& a) {
  const std::int64_t K = a.dim(-1), pixels = a.numel() / K;
  const float* ap = a.data_as<float>();
  // The channel means, the centred a (kept for backward), and its Gram matrix as a 1x1 filter gradient.
  Tensor sums = Tensor::empty({K}, DType::F32);
  kernels::reduce_rows(a, sums, kernels::GradMode::Overwrite, rs.stream);
  m_abar.assign(sums.data_as<float>(), sums.data_as<float>() + K);
  for (double& v : m_abar) v /= static_cast<double>(pixels);
  m_ac = Tensor::empty(a.shape(), DType::F32);
  const std::vector<float> mean(m_abar.begin(), m_abar.end());
  const float* mp = mean.data();
  float* cp = m_ac.data_as<float>();
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < pixels; ++p)
    for (std::int64_t k = 0; k < K; ++k) cp[p * K + k] = ap[p * K + k] - mp[k];
  Tensor gram = Tensor::empty({K, 1, 1, K}, DType::F32);
  kernels::conv2d_bwd_filter(kernels::Conv2dParams{}, m_ac, m_ac, gram, nullptr, kernels::GradMode::Overwrite,
                             rs.stream);
  // Each lego's w x w block of the diagonal.
  const std::int64_t m = static_cast<std::int64_t>(m_legos.size()), w = K / m;
  m_cg.resize(static_cast<std::size_t>(m * w * w));
  for (std::int64_t j = 0; j < m; ++j)
    for (std::int64_t i = 0; i < w; ++i)
      for (std::int64_t i2 = 0; i2 < w; ++i2)
        m_cg[static_cast<std::size_t>((j * w + i) * w + i2)] = gram.data_as<float>()[(j * w + i) * K + j * w + i2];
}

Tensor MergedLegos::fold_last(const RunState& rs, const Tensor& a, std::int64_t C) {
  Stage& st = m_stages[2];
  Tensor rm, rv;
  gather(rs, 3, st, rm, rv);
  st.conv.groups = 1;
  const std::int64_t K = a.dim(-1), m = static_cast<std::int64_t>(m_legos.size()), w = K / m;
  const std::int64_t pixels = a.numel() / K;
  const float* W3 = st.weight.data_as<float>();  // [m*C][w]: lego j's rows j*C .. j*C + C - 1
  st.save_mean = Tensor::empty({m * C}, DType::F32);
  st.save_invstd = Tensor::empty({m * C}, DType::F32);
  float *mu = st.save_mean.data_as<float>(), *is = st.save_invstd.data_as<float>();
  float *rmp = rm.data_as<float>(), *rvp = rv.data_as<float>();
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
    scatter_running(rs, 3, rm, rv);
  } else {
    for (std::int64_t q = 0; q < m * C; ++q) {
      mu[q] = rmp[q];
      is[q] = invstd_of(rvp[q], st.bn.eps);
    }
  }
  // The gated sum of the legos' normalised outputs is one 1x1 convolution of a: weights
  // gate_j*gamma_q*invstd_q*W3_q in columns j*w .. j*w + w - 1, bias sum_j gate_j*(beta_q - gamma_q*invstd_q*mean_q).
  m_weff = Tensor::empty({C, 1, 1, K}, DType::F32);
  Tensor bias = Tensor::zeros({C}, DType::F32);
  const float *gm = st.gamma.data_as<float>(), *bt = st.beta.data_as<float>();
  float *we = m_weff.data_as<float>(), *bp = bias.data_as<float>();
  for (std::int64_t j = 0; j < m; ++j) {
    const float g = m_gates[static_cast<std::size_t>(j)];
    for (std::int64_t c = 0; c < C; ++c) {
      const std::int64_t q = j * C + c;
      const float scale = g * gm[q] * is[q];
      for (std::int64_t i = 0; i < w; ++i) we[c * K + j * w + i] = scale * W3[q * w + i];
      bp[c] += g * (bt[q] - gm[q] * is[q] * mu[q]);
    }
  }
  Tensor u = Tensor::empty({a.dim(0), a.dim(1), a.dim(2), C}, DType::F32);
  kernels::conv2d_fwd(st.conv, a, m_weff, bias, u, rs.stream);
  return u;
}

Tensor MergedLegos::forward(const RunState& rs, const Tensor& x, std::vector<Bottleneck*> legos,
                            std::vector<float> gates, Conv2d* proj, BatchNorm* proj_bn) {
  GPPF_CHECK(x.device().is_host() && x.dtype() == DType::F32 && !legos.empty() && gates.size() == legos.size() &&
                 (proj == nullptr) == (proj_bn == nullptr),
             "merged legos: host f32 input and one gate per lego expected, got ", x.desc());
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
    m_pmean = Tensor::empty({C}, DType::F32);
    m_pinvstd = Tensor::empty({C}, DType::F32);
    batch_stats(rs, *proj_bn, m_zp, m_pmean, m_pinvstd);
    const float *gp = proj_bn->gamma().value.data_as<float>(), *bp = proj_bn->beta().value.data_as<float>();
    for (std::int64_t c = 0; c < C; ++c) {
      const auto cc = static_cast<std::size_t>(c);
      smul[cc] = gp[c] * m_pinvstd.data_as<float>()[c];
      sadd[cc] = bp[c] - smul[cc] * m_pmean.data_as<float>()[c];
    }
  }
  check_shape("merged legos", "shortcut", s, y.shape());
  const std::int64_t pixels = y.numel() / C;
  const float *sp = s.data_as<float>(), *smp = smul.data(), *sap = sadd.data();
  float* yp = y.data_as<float>();
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < pixels; ++p) {
    float* yr = yp + p * C;
    const float* sr = sp + p * C;
    for (std::int64_t c = 0; c < C; ++c) yr[c] = std::max(yr[c] + smp[c] * sr[c] + sap[c], 0.0f);
  }
  if (rs.training) {
    m_y = y;
    m_x_shape = x.shape();
  } else {
    for (Stage& stage : m_stages) stage = Stage{};
    m_legos.clear();
    m_zp = m_pmean = m_pinvstd = m_weff = m_ac = Tensor();
  }
  return y;
}

void MergedLegos::batch_stats(const RunState& rs, BatchNorm& bn, const Tensor& z, Tensor& mean, Tensor& invstd) {
  if (!rs.training) {
    const float* rv = bn.running_var(rs.task).data_as<float>();
    mean.copy_from(bn.running_mean(rs.task));
    for (std::int64_t c = 0; c < z.dim(-1); ++c) invstd.data_as<float>()[c] = invstd_of(rv[c], bn.params().eps);
    return;
  }
  kernels::batchnorm_stats(with_momentum(rs, bn.params()), z, bn.running_mean(rs.task), bn.running_var(rs.task), mean,
                           invstd);
}

void MergedLegos::scatter_grads(int i, const float* dw, const float* dgamma, const float* dbeta) {
  const float* pw = dw;
  for (Bottleneck* l : m_legos) {
    if (pw) pw = add_grad(l->conv(i).weight(), pw);
    dgamma = add_grad(l->bn(i).gamma(), dgamma);
    dbeta = add_grad(l->bn(i).beta(), dbeta);
  }
}

void MergedLegos::backward_stage(const RunState& rs, int i, Stage& st, const Tensor& dout, Tensor* din,
                                 kernels::GradMode din_mode) {
  Tensor dz = Tensor::empty(st.z.shape(), DType::F32);
  Tensor dgamma = Tensor::empty(st.gamma.shape(), DType::F32), dbeta = Tensor::empty(st.gamma.shape(), DType::F32);
  kernels::batchnorm_bwd(st.bn, st.z, st.out, dout, st.gamma, st.save_mean, st.save_invstd, dz, dgamma, dbeta,
                         kernels::GradMode::Overwrite, rs.stream);
  if (din) kernels::conv2d_bwd_data(st.conv, dz, st.weight, *din, din_mode, rs.stream);
  // Frozen legos (gppf finetune) get no filter gradient, as in Conv2d.
  const bool trainable = any_trainable(m_legos, i);
  Tensor dw;
  if (trainable) {
    dw = Tensor::empty(st.weight.shape(), DType::F32);
    kernels::conv2d_bwd_filter(st.conv, st.in, dz, dw, nullptr, kernels::GradMode::Overwrite, rs.stream);
  }
  scatter_grads(i, trainable ? dw.data_as<float>() : nullptr, dgamma.data_as<float>(), dbeta.data_as<float>());
  st = Stage{};
}

Tensor MergedLegos::backward_last(const RunState& rs, const Tensor& dy, std::vector<float>& dgate, Tensor& da,
                                  Tensor& dzp) {
  Stage& st = m_stages[2];
  const Tensor& a = m_stages[1].out;
  const std::int64_t C = m_y.dim(-1), pixels = m_y.numel() / C, K = a.dim(-1);
  const auto m = static_cast<std::int64_t>(m_legos.size());
  const std::int64_t w = K / m;
  const auto nc = static_cast<std::size_t>(C);
  const bool proj = m_proj != nullptr;
  const float *yp = m_y.data_as<float>(), *dyp = dy.data_as<float>();
  const float* xp = proj ? m_zp.data_as<float>() : nullptr;
  const float* pmu = proj ? m_pmean.data_as<float>() : nullptr;
  da = Tensor::empty(m_y.shape(), DType::F32);
  float* dap = da.data_as<float>();
  // Pass 1: da = dy through the ReLU; A[c] = sum da and, with a projection, P[c] = sum da * (zp - pmean)
  // (f32 over blocks of pixels, f64 across blocks and threads, threads added in order: deterministic).
  const int nt = omp_get_max_threads();
  const std::size_t per = 2 * nc;
  std::vector<double> parts(static_cast<std::size_t>(nt) * per, 0.0);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), nthr = omp_get_num_threads();
    double* part = parts.data() + static_cast<std::size_t>(t) * per;
    std::vector<float> acc(per);
    float *sa = acc.data(), *sp = sa + nc;
    const std::int64_t p0 = pixels * t / nthr, p1 = pixels * (t + 1) / nthr;
    for (std::int64_t start = p0; start < p1; start += kBlock) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (std::int64_t p = start; p < std::min(start + kBlock, p1); ++p) {
        float* dar = dap + p * C;
        for (std::int64_t c = 0; c < C; ++c) {
          dar[c] = yp[p * C + c] > 0.0f ? dyp[p * C + c] : 0.0f;
          sa[c] += dar[c];
        }
        if (proj)
          for (std::int64_t c = 0; c < C; ++c) sp[c] += dar[c] * (xp[p * C + c] - pmu[c]);
      }
      for (std::size_t i = 0; i < per; ++i) part[i] += acc[i];
    }
  }
  std::vector<double> sums(per, 0.0);
  for (int t = 0; t < nt; ++t)
    for (std::size_t i = 0; i < per; ++i) sums[i] += parts[static_cast<std::size_t>(t) * per + i];
  const double *A = sums.data(), *P = A + nc;
  // ac = a - mean(a) (narrow), and Mc[c][k] = sum da[c] * ac[k]: then with z_q = W3_q . a_j,
  // B_q = sum da * (z_q - mean_q) = W3_q . Mc[c][j*w ..], exactly, without z.
  const Tensor& ac = m_ac;
  Tensor mc = Tensor::empty({C, 1, 1, K}, DType::F32);
  kernels::conv2d_bwd_filter(st.conv, ac, da, mc, nullptr, kernels::GradMode::Overwrite, rs.stream);
  const float* M = mc.data_as<float>();
  const float* W3 = st.weight.data_as<float>();
  // The BN backward of lego j sees dO = gate_j * da: its sums are gate_j * A and gate_j * B, and
  // dz = K1*da - K0 - K2*(z - mean) with K1 = gamma*invstd*gate_j, K0 = K1*A/n, K2 = K1*invstd^2*B/n.
  // The gate's gradient is sum(da * o_j) = sum_c gamma*invstd*B + beta*A.
  const double n = static_cast<double>(pixels);
  const float *gm = st.gamma.data_as<float>(), *bt = st.beta.data_as<float>(), *is = st.save_invstd.data_as<float>();
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
  scatter_grads(3, any_trainable(m_legos, 3) ? dw3.data() : nullptr, dgamma.data(), dbeta.data());
  // Input gradient of the last stage: da through the folded weights, plus the batch statistics'
  // part: d_a[j*w + i] = (da . Weff)[j*w + i] - sum_c K0_q W3_qi - sum_i' G_j[i][i'] * ac[j*w + i'],
  // with G_j = sum_c K2_q W3_q^T W3_q.
  Tensor d2 = Tensor::empty(a.shape(), DType::F32);
  kernels::conv2d_bwd_data(st.conv, da, m_weff, d2, kernels::GradMode::Overwrite, rs.stream);
  // G as a K x K block-diagonal matrix, so that the per-pixel loop runs along all K channels (w is 4-16).
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
  correct_input_gradient(d2.data_as<float>(), ac.data_as<float>(), G.data(), h.data(), pixels, K);
  if (proj) {
    // The projection's BN sees da itself (gate 1).
    const float *gp = m_proj_bn->gamma().value.data_as<float>(), *pis = m_pinvstd.data_as<float>();
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
    add_grad(m_proj_bn->gamma(), dgp.data());
    add_grad(m_proj_bn->beta(), dbp.data());
    dzp = Tensor::empty(m_zp.shape(), DType::F32);
    float* dzpp = dzp.data_as<float>();
    const float *q1p = q1.data(), *q0p = q0.data(), *q2p = q2.data();
#pragma omp parallel for schedule(static)
    for (std::int64_t p = 0; p < pixels; ++p)
      for (std::int64_t c = 0; c < C; ++c)
        dzpp[p * C + c] = q1p[c] * dap[p * C + c] - q0p[c] - q2p[c] * (xp[p * C + c] - pmu[c]);
  }
  st = Stage{};
  return d2;
}

Tensor MergedLegos::backward(const RunState& rs, const Tensor& dy, std::vector<float>& dgate) {
  GPPF_CHECK(m_y.defined(), "merged legos: backward without a training forward");
  check_shape("merged legos backward", "dy", dy, m_y.shape());
  Tensor da, dzp;
  const Tensor d2 = backward_last(rs, dy, dgate, da, dzp);
  Tensor d1 = Tensor::empty(m_stages[0].out.shape(), DType::F32);
  backward_stage(rs, 2, m_stages[1], d2, &d1, kernels::GradMode::Overwrite);
  // The input gradient: the legos' added to da itself, or the projection's added to the legos' (a
  // strided projection's reaches a quarter of the pixels and adds in place, without a temporary).
  Tensor dx = da;
  if (m_proj) {
    dx = Tensor::empty(m_x_shape, DType::F32);
    backward_stage(rs, 1, m_stages[0], d1, &dx, kernels::GradMode::Overwrite);
    m_proj->backward(rs, dzp, &dx, kernels::GradMode::Accumulate);
  } else {
    backward_stage(rs, 1, m_stages[0], d1, &dx, kernels::GradMode::Accumulate);
  }
  m_y = m_zp = m_pmean = m_pinvstd = m_weff = m_ac = Tensor();
  m_legos.clear();
  return dx;
}

}  // namespace gppf::nn
