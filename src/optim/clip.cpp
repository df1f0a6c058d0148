#include "src/optim/clip.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/optim.hpp"

namespace gppf::optim {

void SumBuffer::reset(Device device, std::size_t slots) {
  const auto need = static_cast<std::int64_t>(2 * std::max<std::size_t>(slots, 1));
  if (!m_storage.defined() || m_storage.device() != device || m_storage.numel() < need)
    m_storage = Tensor::empty({need}, DType::I64, device);
  m_slots = slots;
}

double* SumBuffer::slot(std::size_t i) {
  GPPF_CHECK(i < m_slots, "SumBuffer: slot ", i, " of ", m_slots);
  return static_cast<double*>(m_storage.data()) + 2 * i;
}

const std::vector<double>& SumBuffer::fetch(const Stream& stream) {
  m_host.resize(2 * m_slots);
  if (m_slots == 0) return m_host;
  const Tensor used = read_back(m_storage.narrow0(0, static_cast<std::int64_t>(2 * m_slots)), stream);
  std::memcpy(m_host.data(), used.data(), used.nbytes());
  return m_host;
}

std::vector<std::size_t> touched_indices(const std::vector<nn::Parameter*>& params) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < params.size(); ++i)
    if (params[i]->trainable && params[i]->touched) out.push_back(i);
  return out;
}

namespace {
// Per touched parameter: sum of squares of its gradient.
std::vector<double> grad_sums(const std::vector<nn::Parameter*>& params, const std::vector<std::size_t>& touched,
                              const Stream& stream) {
  std::vector<double> out;
  if (touched.empty()) return out;
  SumBuffer sums;
  sums.reset(params[touched[0]]->grad.device(), touched.size());
  std::vector<kernels::SumSquares> jobs;
  for (std::size_t k = 0; k < touched.size(); ++k) jobs.push_back({&params[touched[k]]->grad, nullptr, sums.slot(k)});
  kernels::sum_squares(jobs, stream);
  const auto& host = sums.fetch(stream);
  for (std::size_t k = 0; k < touched.size(); ++k) out.push_back(host[2 * k]);
  return out;
}
}  // namespace

double global_grad_norm(const std::vector<nn::Parameter*>& params, const Stream& stream) {
  double total = 0.0;
  for (double s : grad_sums(params, touched_indices(params), stream)) total += s;
  return std::sqrt(total);
}

float clip_factor(double norm, float max_norm) {
  if (max_norm <= 0.0f || !(norm > max_norm)) return 1.0f;
  return static_cast<float>(max_norm / (norm + 1e-6));
}

double clip_grad_norm(const std::vector<nn::Parameter*>& params, float max_norm, const Stream& stream) {
  const auto touched = touched_indices(params);
  double total = 0.0;
  for (double s : grad_sums(params, touched, stream)) total += s;
  const double norm = std::sqrt(total);
  const float factor = clip_factor(norm, max_norm);
  if (factor != 1.0f)
    for (std::size_t i : touched) kernels::scale_(params[i]->grad, factor, stream);
  return norm;
}

}  // namespace gppf::optim
