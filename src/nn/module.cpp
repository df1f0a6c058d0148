#include "src/nn/module.hpp"

#include <cmath>

namespace gppf::nn {

Tensor he_normal(const Shape& shape, std::int64_t fan_in, std::mt19937_64& rng, float gain) {
  Tensor t = Tensor::empty(shape, DType::F32);
  std::normal_distribution<float> dist(0.0f, gain * std::sqrt(2.0f / static_cast<float>(fan_in)));
  float* p = t.data_as<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

Tensor constant(const Shape& shape, float value) {
  Tensor t = Tensor::empty(shape, DType::F32);
  t.fill_(value);
  return t;
}

Parameter make_parameter(std::string name, Tensor value, bool decay) {
  Parameter p;
  p.name = std::move(name);
  p.grad = Tensor::zeros(value.shape(), DType::F32, value.device());
  p.value = std::move(value);
  p.decay = decay;
  return p;
}

std::vector<NamedTensor> named(const std::vector<Buffer>& buffers) {
  std::vector<NamedTensor> out;
  out.reserve(buffers.size());
  for (const Buffer& b : buffers) out.emplace_back(b.name, b.tensor);
  return out;
}

void set_owner(Module& m, const Owner& owner) {
  std::vector<Parameter*> params;
  m.collect_parameters(params);
  for (Parameter* p : params) p->owner = owner;
}

}  // namespace gppf::nn
