#pragma once
// Plain references of kernels/merged.hpp on [pixels, C] row-major values, in double.
#include <cstdint>
#include <vector>

namespace gppf::kernels::ref {

using Vec = std::vector<double>;

Vec center_channels(const Vec& x, const Vec& mean, std::int64_t C);
Vec add_affine_relu(const Vec& y, const Vec& shortcut, const Vec& scale, const Vec& shift, std::int64_t C);
// Returns the 2C sums; da gets dy masked by y > 0. z empty: the second C sums are 0.
Vec relu_bwd_channel_sums(const Vec& y, const Vec& dy, const Vec& z, const Vec& zmean, std::int64_t C, Vec& da);
Vec gram_correct(const Vec& d, const Vec& ac, const Vec& g, const Vec& h, std::int64_t K);
Vec bn_input_grad(const Vec& da, const Vec& z, const Vec& zmean, const Vec& k1, const Vec& k0, const Vec& k2,
                  std::int64_t C);

}  // namespace gppf::kernels::ref
