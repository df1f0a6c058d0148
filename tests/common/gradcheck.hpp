#pragma once
// The one finite-difference checker every op test uses (Caffe's GradientChecker, in double): compares
// an analytic gradient with central differences of a scalar function, skipping "kinks" where the
// function is not differentiable (ReLU at 0, max-pool ties).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace gppf::test {

struct GradCheckOptions {
  double step = 1e-5;
  double rtol = 1e-5;
  double atol = 1e-7;
  // Coordinates where |x| < kink are skipped when kink > 0 (for ReLU-like ops).
  double kink = 0.0;
  // Check at most this many coordinates (spread evenly); 0 checks all.
  std::size_t max_checks = 0;
};

struct GradCheckResult {
  bool ok = true;
  std::size_t checked = 0;
  std::size_t worst_index = 0;
  double worst_error = 0.0;  // |analytic - numeric| / (atol + rtol * max(|analytic|, |numeric|)) > 1 fails
  double analytic = 0.0, numeric = 0.0;
  std::string message() const;
};

// f maps the inputs to a scalar; analytic holds df/dx at x.
GradCheckResult check_gradient(const std::function<double(const std::vector<double>&)>& f, std::vector<double> x,
                               const std::vector<double>& analytic, const GradCheckOptions& options = {});

}  // namespace gppf::test
