#include "src/dist/grad_sync.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace gppf::dist {

GradSync::GradSync(std::vector<SyncGroup> groups, int num_segments, double bucket_mb)
    : m_groups(std::move(groups)),
      m_segments(num_segments),
      m_bucket_floats(
          std::max<std::int64_t>(1024, static_cast<std::int64_t>(bucket_mb * 1024 * 1024 / sizeof(float)))) {
  for (const SyncGroup& g : m_groups)
    GPPF_CHECK(g.segments.size() == g.params.size(), g.name, ": ", g.segments.size(), " segments for ", g.params.size(),
               " parameters");
}

void GradSync::begin(std::vector<std::vector<char>> touched) {
  GPPF_CHECK(m_buckets.empty(), "gradient sync: begin() while a step is in flight");
  GPPF_CHECK(touched.size() == m_groups.size(), "gradient sync: touched flags for ", touched.size(), " groups, not ",
             m_groups.size());
  m_touched = std::move(touched);
  m_started = 0;
  m_last_bytes = 0;
}

void GradSync::ready(int segment) {
  // Drive the all-reduces in flight: without an asynchronous progress thread MPI advances them only
  // inside MPI calls, and a layer boundary is a good moment.
  for (SyncGroup& g : m_groups)
    if (g.comm != nullptr) g.comm->progress();
  for (; m_started <= std::min(segment, m_segments - 1); ++m_started) {
    for (std::size_t gi = 0; gi < m_groups.size(); ++gi) {
      SyncGroup& g = m_groups[gi];
      if (g.comm == nullptr || g.comm->size() == 1) continue;
      Bucket b;
      b.group = gi;
      auto flush = [&] {
        if (b.params.empty()) return;
        std::int64_t off = 0;
        for (nn::Parameter* p : b.params) off += p->grad.numel();
        // The bucket lives where the communicator reads: host memory for MPI, the GPU for NCCL.
        b.data = Tensor::empty({off}, DType::F32, g.comm->device());
        off = 0;
        for (nn::Parameter* p : b.params) {
          const std::int64_t n = p->grad.numel();
          Tensor part = b.data.narrow0(off, n);
          if (p->touched)
            part.copy_from(p->grad.reshape({n}));
          else
            part.zero_();
          off += n;
        }
        g.comm->start_allreduce_sum(b.data.data_as<float>(), off, g.name + " gradient all-reduce");
        m_last_bytes += off * static_cast<std::int64_t>(sizeof(float));
        m_buckets.push_back(std::move(b));
        b = Bucket{};
        b.group = gi;
      };
      std::int64_t filled = 0;
      for (std::size_t i = 0; i < g.params.size(); ++i) {
        if (g.segments[i] != m_started) continue;
        nn::Parameter* p = g.params[i];
        if (!m_touched[gi][i]) {
          // The plan says nobody touches it: a rank that did anyway would desynchronise the copies.
          GPPF_CHECK(!p->touched, g.name, ": ", p->name,
                     " got a gradient that the step's plan did not expect (routing differs between ranks?)");
          continue;
        }
        GPPF_CHECK(p->grad.dtype() == DType::F32, g.name, ": ", p->name, ": gradients are f32, got ", p->grad.desc());
        if (filled > 0 && filled + p->grad.numel() > m_bucket_floats) {
          flush();
          filled = 0;
        }
        b.params.push_back(p);
        filled += p->grad.numel();
      }
      flush();
    }
  }
}

void GradSync::finish() {
  ready(m_segments - 1);
  for (SyncGroup& g : m_groups)
    if (g.comm != nullptr && g.comm->size() > 1) g.comm->wait_all(g.name + " gradient all-reduce");
  for (Bucket& b : m_buckets) {
    std::int64_t off = 0;
    for (nn::Parameter* p : b.params) {
      const std::int64_t n = p->grad.numel();
      Tensor grad = p->grad.reshape({n});
      grad.copy_from(b.data.narrow0(off, n));
      p->touched = true;
      off += n;
    }
  }
  m_buckets.clear();
  // Parameters the plan left out must be untouched everywhere (checked when their segment started).
}

}  // namespace gppf::dist
