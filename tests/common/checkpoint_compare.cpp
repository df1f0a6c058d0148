#include "tests/common/checkpoint_compare.hpp"

#include <algorithm>
#include <cmath>

#include "src/train/checkpoint.hpp"

namespace gppf::test {

std::map<std::string, std::vector<float>> load_checkpoint_params(const std::string& path) {
  const auto shapes = train::checkpoint_tensor_shapes(path, "params");
  std::vector<nn::Parameter> storage;
  storage.reserve(shapes.size());
  train::CheckpointTensors t;
  for (const auto& [name, shape] : shapes) {
    storage.push_back({name, Tensor::empty(shape, DType::F32), Tensor()});
    t.params.push_back(&storage.back());
  }
  train::ReadOptions ro;
  ro.exact = false;
  ro.optimizer = false;
  train::read_checkpoint(path, t, ro);
  std::map<std::string, std::vector<float>> out;
  for (const auto& p : storage) out[p.name] = p.value.to_float_vector();
  return out;
}

ParamComparison compare_checkpoint_params(const std::string& a, const std::string& b) {
  const auto pa = load_checkpoint_params(a), pb = load_checkpoint_params(b);
  ParamComparison c;
  double all_num = 0, all_den = 0;
  for (const auto& [name, vb] : pb) {
    const auto it = pa.find(name);
    if (it == pa.end() || it->second.size() != vb.size()) {
      c.missing.push_back(name);
      continue;
    }
    double num = 0, den = 0;
    for (std::size_t i = 0; i < vb.size(); ++i) {
      num += std::pow(static_cast<double>(it->second[i]) - vb[i], 2);
      den += std::pow(static_cast<double>(vb[i]), 2);
    }
    all_num += num;
    all_den += den;
    const double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-2 * std::sqrt(static_cast<double>(vb.size())));
    if (rel >= c.max_relative) {
      c.max_relative = rel;
      c.worst = name;
    }
    ++c.tensors;
  }
  c.global_relative = std::sqrt(all_num) / std::max(std::sqrt(all_den), 1e-30);
  return c;
}

}  // namespace gppf::test
