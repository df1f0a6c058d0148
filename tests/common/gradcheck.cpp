#include "tests/common/gradcheck.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace gppf::test {

std::string GradCheckResult::message() const {
  std::ostringstream os;
  os << (ok ? "ok" : "FAILED") << ": " << checked << " coordinates checked; worst at index " << worst_index
     << ": analytic " << analytic << " vs numeric " << numeric << " (error ratio " << worst_error << ")";
  return os.str();
}

GradCheckResult check_gradient(const std::function<double(const std::vector<double>&)>& f, std::vector<double> x,
                               const std::vector<double>& analytic, const GradCheckOptions& options) {
  GradCheckResult result;
  if (x.size() != analytic.size()) {
    result.ok = false;
    result.worst_error = INFINITY;
    return result;
  }
  const std::size_t n = x.size();
  const std::size_t stride = options.max_checks && n > options.max_checks ? n / options.max_checks : 1;
  for (std::size_t i = 0; i < n; i += stride) {
    if (options.kink > 0 && std::abs(x[i]) < options.kink) continue;
    const double saved = x[i];
    x[i] = saved + options.step;
    const double up = f(x);
    x[i] = saved - options.step;
    const double down = f(x);
    x[i] = saved;
    const double numeric = (up - down) / (2 * options.step);
    const double scale = options.atol + options.rtol * std::max(std::abs(analytic[i]), std::abs(numeric));
    const double error = std::abs(analytic[i] - numeric) / scale;
    ++result.checked;
    if (error > result.worst_error || std::isnan(error)) {
      result.worst_error = std::isnan(error) ? INFINITY : error;
      result.worst_index = i;
      result.analytic = analytic[i];
      result.numeric = numeric;
    }
  }
  result.ok = result.worst_error <= 1.0;
  return result;
}

}  // namespace gppf::test
