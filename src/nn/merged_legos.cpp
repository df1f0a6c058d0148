#include "src/nn/merged_legos.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>

namespace gppf::nn {
namespace {

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

}  // namespace

void MergedLegos::run_stage(const RunState& rs, int i, const Tensor& in, Stage& st) {
  std::vector<const Tensor*> ws, gs, bs;
  std::vector<Tensor*> rms, rvs;
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
  Tensor rm = cat_first(std::vector<const Tensor*>(rms.begin(), rms.end()));
  Tensor rv = cat_first(std::vector<const Tensor*>(rvs.begin(), rvs.end()));
  st.z = Tensor::empty(kernels::conv2d_output_shape(st.conv, in.shape(), st.weight.shape()), DType::F32);
  kernels::conv2d_fwd(st.conv, in, st.weight, Tensor(), st.z, rs.stream);
  const bool last = i == 3;
  if (!last) st.out = Tensor::empty(st.z.shape(), DType::F32);
  const std::int64_t C = st.z.dim(-1);
  if (!rs.training) {
    if (!last) {
      kernels::batchnorm_fwd_infer(st.bn, st.z, st.gamma, st.beta, rm, rv, st.out, rs.stream);
      return;
    }
    // The last stage's map is applied in forward's combining pass, from the running statistics.
    st.save_mean = rm;
    st.save_invstd = Tensor::empty({C}, DType::F32);
    for (std::int64_t c = 0; c < C; ++c)
      st.save_invstd.data_as<float>()[c] =
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(rv.data_as<float>()[c]) + st.bn.eps));
    return;
  }
  kernels::BatchNormParams p = st.bn;
  if (rs.bn_momentum >= 0) p.momentum = rs.bn_momentum;
  st.save_mean = Tensor::empty({C}, DType::F32);
  st.save_invstd = Tensor::empty({C}, DType::F32);
  if (last)
    kernels::batchnorm_stats(p, st.z, rm, rv, st.save_mean, st.save_invstd);
  else
    kernels::batchnorm_fwd_train(p, st.z, st.gamma, st.beta, rm, rv, st.out, st.save_mean, st.save_invstd, rs.stream);
  split_first(rm, rms);
  split_first(rv, rvs);
  st.in = in;
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
  Stage& st = m_stages[2];
  run_stage(rs, 3, m_stages[1].out, st);
  // The shortcut s is x, or the projection's normalised output smul*zp + sadd (its statistics only are
  // computed here; the map is applied in the pass below).
  Tensor s = x;
  const std::int64_t C = st.z.dim(-1) / static_cast<std::int64_t>(m_legos.size());
  std::vector<float> smul(static_cast<std::size_t>(C), 1.0f), add(static_cast<std::size_t>(C), 0.0f);
  if (proj) {
    s = m_zp = proj->forward(rs, x);
    m_pmean = Tensor::empty({C}, DType::F32);
    m_pinvstd = Tensor::empty({C}, DType::F32);
    batch_stats(rs, *proj_bn, m_zp, m_pmean, m_pinvstd);
    const float *gp = proj_bn->gamma().value.data_as<float>(), *bp = proj_bn->beta().value.data_as<float>();
    for (std::int64_t c = 0; c < C; ++c) {
      const auto cc = static_cast<std::size_t>(c);
      smul[cc] = gp[c] * m_pinvstd.data_as<float>()[c];
      add[cc] = bp[c] - smul[cc] * m_pmean.data_as<float>()[c];
    }
  }
  // z: [N, P, Q, m*C], lego j's pre-BN output in channels [j*C, (j+1)*C). Its normalised output is
  // gamma*invstd*(z - mean) + beta; with the gate folded in, each lego adds mul[q]*z[q] and a constant.
  const std::int64_t pixels = s.numel() / C;
  const auto m = static_cast<std::int64_t>(m_legos.size());
  GPPF_CHECK(s.dim(-1) == C && st.z.numel() == pixels * m * C, "merged legos: outputs ", st.z.desc(),
             " do not match the shortcut ", s.desc());
  std::vector<float> mul(static_cast<std::size_t>(m * C));
  const float *gm = st.gamma.data_as<float>(), *bt = st.beta.data_as<float>(), *mu = st.save_mean.data_as<float>(),
              *is = st.save_invstd.data_as<float>();
  for (std::int64_t j = 0; j < m; ++j)
    for (std::int64_t c = 0; c < C; ++c) {
      const std::int64_t q = j * C + c;
      const float g = m_gates[static_cast<std::size_t>(j)];
      mul[static_cast<std::size_t>(q)] = g * gm[q] * is[q];
      add[static_cast<std::size_t>(c)] += g * (bt[q] - gm[q] * is[q] * mu[q]);
    }
  Shape yshape = s.shape();
  Tensor y = Tensor::empty(yshape, DType::F32);
  const float *sp = s.data_as<float>(), *zp = st.z.data_as<float>(), *mp = mul.data(), *ap = add.data(),
              *smp = smul.data();
  float* yp = y.data_as<float>();
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < pixels; ++p) {
    float* yr = yp + p * C;
    const float* sr = sp + p * C;
    for (std::int64_t c = 0; c < C; ++c) yr[c] = smp[c] * sr[c] + ap[c];
    for (std::int64_t j = 0; j < m; ++j) {
      const float* zr = zp + (p * m + j) * C;
      const float* mr = mp + j * C;
      for (std::int64_t c = 0; c < C; ++c) yr[c] += mr[c] * zr[c];
    }
    for (std::int64_t c = 0; c < C; ++c) yr[c] = std::max(yr[c], 0.0f);
  }
  if (rs.training) {
    m_y = y;
    m_x_shape = x.shape();
  } else {
    for (Stage& stage : m_stages) stage = Stage{};
    m_legos.clear();
    m_zp = m_pmean = m_pinvstd = Tensor();
  }
  return y;
}

void MergedLegos::batch_stats(const RunState& rs, BatchNorm& bn, const Tensor& z, Tensor& mean, Tensor& invstd) {
  if (!rs.training) {
    const float* rv = bn.running_var(rs.task).data_as<float>();
    mean.copy_from(bn.running_mean(rs.task));
    for (std::int64_t c = 0; c < z.dim(-1); ++c)
      invstd.data_as<float>()[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(rv[c]) + bn.params().eps));
    return;
  }
  kernels::BatchNormParams p = bn.params();
  if (rs.bn_momentum >= 0) p.momentum = rs.bn_momentum;
  kernels::batchnorm_stats(p, z, bn.running_mean(rs.task), bn.running_var(rs.task), mean, invstd);
}

void MergedLegos::scatter_grads(int i, const Tensor& dw, const float* dgamma, const float* dbeta) {
  const float* pw = dw.data_as<float>();
  for (Bottleneck* l : m_legos) {
    pw = add_grad(l->conv(i).weight(), pw);
    dgamma = add_grad(l->bn(i).gamma(), dgamma);
    dbeta = add_grad(l->bn(i).beta(), dbeta);
  }
}

void MergedLegos::backward_conv(const RunState& rs, int i, Stage& st, const Tensor& dz, Tensor* din,
                                kernels::GradMode din_mode, const float* dgamma, const float* dbeta) {
  if (din) kernels::conv2d_bwd_data(st.conv, dz, st.weight, *din, din_mode, rs.stream);
  Tensor dw = Tensor::empty(st.weight.shape(), DType::F32);
  kernels::conv2d_bwd_filter(st.conv, st.in, dz, dw, nullptr, kernels::GradMode::Overwrite, rs.stream);
  scatter_grads(i, dw, dgamma, dbeta);
  st = Stage{};
}

void MergedLegos::backward_stage(const RunState& rs, int i, Stage& st, const Tensor& dout, Tensor* din,
                                 kernels::GradMode din_mode) {
  Tensor dz = Tensor::empty(st.z.shape(), DType::F32);
  Tensor dgamma = Tensor::empty(st.gamma.shape(), DType::F32), dbeta = Tensor::empty(st.gamma.shape(), DType::F32);
  kernels::batchnorm_bwd(st.bn, st.z, st.out, dout, st.gamma, st.save_mean, st.save_invstd, dz, dgamma, dbeta,
                         kernels::GradMode::Overwrite, rs.stream);
  backward_conv(rs, i, st, dz, din, din_mode, dgamma.data_as<float>(), dbeta.data_as<float>());
}

Tensor MergedLegos::backward_last(const Tensor& dy, std::vector<float>& dgate, Tensor& da, Tensor& dzp,
                                  std::vector<float>& dgamma, std::vector<float>& dbeta) {
  Stage& st = m_stages[2];
  const std::int64_t C = m_y.dim(-1), pixels = m_y.numel() / C;
  const auto m = static_cast<std::int64_t>(m_legos.size());
  const auto mc = static_cast<std::size_t>(m * C), nc = static_cast<std::size_t>(C);
  const bool proj = m_proj != nullptr;
  const float *yp = m_y.data_as<float>(), *dyp = dy.data_as<float>(), *zp = st.z.data_as<float>(),
              *mu = st.save_mean.data_as<float>();
  const float* xp = proj ? m_zp.data_as<float>() : nullptr;
  const float* pmu = proj ? m_pmean.data_as<float>() : nullptr;
  da = Tensor::empty(m_y.shape(), DType::F32);
  float* dap = da.data_as<float>();
  // Pass 1: da = dy through the ReLU; per channel A[c] = sum da, B[q] = sum da * (z[q] - mean[q]), and
  // with a projection P[c] = sum da * (zp[c] - pmean[c]) (f32 over blocks of pixels, f64 across blocks
  // and threads, threads added in order: deterministic).
  constexpr std::int64_t kBlock = 64;
  const int nt = omp_get_max_threads();
  const std::size_t per = 2 * nc + mc;
  std::vector<double> parts(static_cast<std::size_t>(nt) * per, 0.0);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), nthr = omp_get_num_threads();
    double* part = parts.data() + static_cast<std::size_t>(t) * per;
    std::vector<float> acc(per);
    float *a = acc.data(), *pp = a + nc, *b = pp + nc;
    const std::int64_t p0 = pixels * t / nthr, p1 = pixels * (t + 1) / nthr;
    for (std::int64_t start = p0; start < p1; start += kBlock) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (std::int64_t p = start; p < std::min(start + kBlock, p1); ++p) {
        float* dar = dap + p * C;
        for (std::int64_t c = 0; c < C; ++c) {
          dar[c] = yp[p * C + c] > 0.0f ? dyp[p * C + c] : 0.0f;
          a[c] += dar[c];
        }
        if (proj)
          for (std::int64_t c = 0; c < C; ++c) pp[c] += dar[c] * (xp[p * C + c] - pmu[c]);
        for (std::int64_t j = 0; j < m; ++j) {
          const float* zr = zp + (p * m + j) * C;
          float* br = b + j * C;
          const float* mr = mu + j * C;
          for (std::int64_t c = 0; c < C; ++c) br[c] += dar[c] * (zr[c] - mr[c]);
        }
      }
      for (std::size_t i = 0; i < per; ++i) part[i] += acc[i];
    }
  }
  std::vector<double> sums(per, 0.0);
  for (int t = 0; t < nt; ++t)
    for (std::size_t i = 0; i < per; ++i) sums[i] += parts[static_cast<std::size_t>(t) * per + i];
  const double *A = sums.data(), *P = A + nc, *B = P + nc;
  // The BN backward of lego j sees dO = gate_j * da: its sums are gate_j * A and gate_j * B, and
  // dz = gamma*invstd*gate_j * (da - A/n - (z - mean) * invstd^2 * B/n). The gate's gradient is
  // sum(da * o_j) = sum_c gamma*invstd*B + beta*A. The projection's BN sees da itself (gate 1).
  const double n = static_cast<double>(pixels);
  auto coefficients = [n](double gamma, double invstd, double gate, double a, double b, float& k1, float& k0,
                          float& k2) {
    const double scale = gamma * invstd * gate;
    k1 = static_cast<float>(scale);
    k0 = static_cast<float>(scale * a / n);
    k2 = static_cast<float>(scale * invstd * invstd * b / n);
  };
  const float *gm = st.gamma.data_as<float>(), *bt = st.beta.data_as<float>(), *is = st.save_invstd.data_as<float>();
  std::vector<float> k1(mc), k0(mc), k2(mc);
  dgamma.resize(mc);
  dbeta.resize(mc);
  dgate.assign(static_cast<std::size_t>(m), 0.0f);
  for (std::int64_t j = 0; j < m; ++j) {
    const double g = m_gates[static_cast<std::size_t>(j)];
    double dg = 0;
    for (std::int64_t c = 0; c < C; ++c) {
      const auto q = static_cast<std::size_t>(j * C + c);
      dg += static_cast<double>(gm[q]) * is[q] * B[q] + bt[q] * A[c];
      dgamma[q] = static_cast<float>(g * B[q] * is[q]);
      dbeta[q] = static_cast<float>(g * A[c]);
      coefficients(gm[q], is[q], g, A[c], B[q], k1[q], k0[q], k2[q]);
    }
    dgate[static_cast<std::size_t>(j)] = static_cast<float>(dg);
  }
  std::vector<float> pk1(nc), pk0(nc), pk2(nc);
  if (proj) {
    const float *gp = m_proj_bn->gamma().value.data_as<float>(), *pis = m_pinvstd.data_as<float>();
    std::vector<float> dgp(nc), dbp(nc);
    for (std::int64_t c = 0; c < C; ++c) {
      const auto cc = static_cast<std::size_t>(c);
      dgp[cc] = static_cast<float>(P[c] * pis[c]);
      dbp[cc] = static_cast<float>(A[c]);
      coefficients(gp[c], pis[c], 1.0, A[c], P[c], pk1[cc], pk0[cc], pk2[cc]);
    }
    add_grad(m_proj_bn->gamma(), dgp.data());
    add_grad(m_proj_bn->beta(), dbp.data());
    dzp = Tensor::empty(m_zp.shape(), DType::F32);
  }
  // Pass 2: the gradients of the last convolution's output and of the projection's.
  Tensor dz = Tensor::empty(st.z.shape(), DType::F32);
  float* dzo = dz.data_as<float>();
  float* dzpp = proj ? dzp.data_as<float>() : nullptr;
  const float *k1p = k1.data(), *k0p = k0.data(), *k2p = k2.data(), *q1 = pk1.data(), *q0 = pk0.data(),
              *q2 = pk2.data();
#pragma omp parallel for schedule(static)
  for (std::int64_t p = 0; p < pixels; ++p) {
    const float* dar = dap + p * C;
    for (std::int64_t j = 0; j < m; ++j) {
      const std::int64_t row = (p * m + j) * C, o = j * C;
      for (std::int64_t c = 0; c < C; ++c)
        dzo[row + c] = k1p[o + c] * dar[c] - k0p[o + c] - k2p[o + c] * (zp[row + c] - mu[o + c]);
    }
    if (proj)
      for (std::int64_t c = 0; c < C; ++c) dzpp[p * C + c] = q1[c] * dar[c] - q0[c] - q2[c] * (xp[p * C + c] - pmu[c]);
  }
  return dz;
}

Tensor MergedLegos::backward(const RunState& rs, const Tensor& dy, std::vector<float>& dgate) {
  GPPF_CHECK(m_y.defined(), "merged legos: backward without a training forward");
  check_shape("merged legos backward", "dy", dy, m_y.shape());
  Tensor da, dzp;
  std::vector<float> dgamma3, dbeta3;
  const Tensor dz3 = backward_last(dy, dgate, da, dzp, dgamma3, dbeta3);
  // The input gradient starts as the shortcut's: da itself, or through the projection.
  Tensor dx = da;
  if (m_proj) {
    dx = Tensor::empty(m_x_shape, DType::F32);
    m_proj->backward(rs, dzp, &dx, kernels::GradMode::Overwrite);
  }
  Tensor d2 = Tensor::empty(m_stages[1].out.shape(), DType::F32);
  backward_conv(rs, 3, m_stages[2], dz3, &d2, kernels::GradMode::Overwrite, dgamma3.data(), dbeta3.data());
  Tensor d1 = Tensor::empty(m_stages[0].out.shape(), DType::F32);
  backward_stage(rs, 2, m_stages[1], d2, &d1, kernels::GradMode::Overwrite);
  backward_stage(rs, 1, m_stages[0], d1, &dx, kernels::GradMode::Accumulate);
  m_y = m_zp = m_pmean = m_pinvstd = Tensor();
  m_legos.clear();
  return dx;
}

}  // namespace gppf::nn
