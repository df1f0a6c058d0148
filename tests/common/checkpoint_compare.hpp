#pragma once
// Compares the parameters of two checkpoints (any number of shards each), by name.
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace gppf::test {

std::map<std::string, std::vector<float>> load_checkpoint_params(const std::string& path);

// Relative errors of a against b. Per tensor, |a - b| / max(|b|, 1e-2 sqrt(n)) (Euclidean norms): a
// tensor whose entries are all near zero (a fresh BN beta) is measured against 0.01 per entry instead
// of its own tiny norm, where float rounding of sums run in another order would dominate.
struct ParamComparison {
  double global_relative = 0;  // |a - b| / |b| over all parameters together
  double max_relative = 0;     // the per-tensor maximum
  std::string worst;           // the tensor where it is reached
  int tensors = 0;
  std::vector<std::string> missing;  // names of b that a lacks
};
ParamComparison compare_checkpoint_params(const std::string& a, const std::string& b);

}  // namespace gppf::test
