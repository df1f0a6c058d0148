#include "src/train/task_gradients.hpp"

#include <algorithm>

#include "kernels/elementwise.hpp"

namespace gppf::train {

TaskGradients::TaskGradients(std::vector<nn::Parameter*> params) : m_params(std::move(params)) {}

void TaskGradients::take(int task) {
  GPPF_CHECK(std::find(m_ran.begin(), m_ran.end(), task) == m_ran.end(), "deterministic mode: task ", task,
             " ran twice in a step");
  m_ran.push_back(task);
  Taken& t = m_taken[task];
  t.grads.resize(m_params.size());
  t.touched.assign(m_params.size(), 0);
  for (std::size_t i = 0; i < m_params.size(); ++i) {
    nn::Parameter& p = *m_params[i];
    if (!p.touched) continue;
    GPPF_CHECK(t.grads[i].defined() || !p.released(), "deterministic mode: ", p.name, " is not held here");
    // The pass's gradient moves aside; the buffer taken last step becomes the next pass's.
    if (!t.grads[i].defined() || t.grads[i].shape() != p.grad.shape() || t.grads[i].device() != p.grad.device())
      t.grads[i] = Tensor::empty(p.grad.shape(), DType::F32, p.grad.device());
    std::swap(t.grads[i], p.grad);
    t.touched[i] = 1;
    p.clear_grad();
  }
}

void TaskGradients::fold(const std::vector<int>& active, const Share& share,
                         const std::function<bool(const nn::Parameter&)>& exchanged) {
  std::vector<int> tasks = active;
  std::sort(tasks.begin(), tasks.end());
  m_last_shared = 0;
  const std::size_t n = m_params.size();
  std::vector<char> started(n, 0);
  for (nn::Parameter* p : m_params)
    GPPF_CHECK(!p->touched, "deterministic mode: ", p->name, " was written after its task's pass");
  for (int task : tasks) {
    const bool mine = std::find(m_ran.begin(), m_ran.end(), task) != m_ran.end();
    const auto it = m_taken.find(task);
    std::vector<Tensor> received(n);
    std::vector<char> from(n, 0);  // the contribution to add: 1 mine, 2 received
    if (mine)
      for (std::size_t i = 0; i < n; ++i) from[i] = it->second.touched[i] ? 1 : 0;
    if (share) {
      // The root packs its exchanged contributions; every rank unpacks the same layout.
      std::vector<float> mask(n, 0.0f), data;
      if (mine)
        for (std::size_t i = 0; i < n; ++i)
          if (it->second.touched[i] && exchanged(*m_params[i])) {
            mask[i] = 1.0f;
            const Tensor h = read_back(it->second.grads[i]);
            data.insert(data.end(), h.data_as<float>(), h.data_as<float>() + h.numel());
          }
      share(task, mine, mask, data);
      if (mine) m_last_shared += static_cast<std::int64_t>(data.size());
      std::size_t at = 0;
      for (std::size_t i = 0; i < n; ++i) {
        if (mask[i] == 0.0f) continue;
        nn::Parameter& p = *m_params[i];
        const std::int64_t count = p.numel();
        if (!mine && !p.released()) {
          Tensor h = Tensor::from_vector(p.value.shape(),
                                         std::vector<float>(data.begin() + static_cast<std::ptrdiff_t>(at),
                                                            data.begin() + static_cast<std::ptrdiff_t>(at + count)));
          received[i] = p.value.device().is_host() ? h : h.to(p.value.device());
          from[i] = 2;
        }
        at += static_cast<std::size_t>(count);
      }
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (!from[i]) continue;
      nn::Parameter& p = *m_params[i];
      const Tensor& c = from[i] == 1 ? it->second.grads[i] : received[i];
      if (!started[i]) {
        p.grad.copy_from(c);
        started[i] = 1;
      } else {
        kernels::axpby(1.0f, c, 1.0f, p.grad);
      }
    }
  }
  for (std::size_t i = 0; i < n; ++i)
    if (started[i]) m_params[i]->take_grad_mode();  // touched: the optimizer updates it
  m_ran.clear();
}

}  // namespace gppf::train
