// CUDA losses against the host backend: fp32 below 1e-3, bf16 inputs (compared with the host on the
// same bf16-rounded values) below 2e-2; Accumulate; deterministic repeats; invalid-label reporting.
#include <gtest/gtest.h>

#include <cstring>

#include "core/cuda_runtime.hpp"
#include "kernels/cast.hpp"
#include "kernels/loss.hpp"
#include "tests/common/util.hpp"

namespace gppf {
namespace {

using kernels::GradMode;

const Device kGpu = Device::cuda(0);

Tensor labels_tensor(const Shape& shape, std::int32_t classes, std::uint64_t seed, std::int32_t ignore = -100) {
  Tensor t = Tensor::empty(shape, DType::I32);
  const auto u = test::random_vector(static_cast<std::size_t>(t.numel()), seed, 0.0, static_cast<double>(classes));
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t.data_as<std::int32_t>()[i] = i % 5 == 2 ? ignore : std::min(classes - 1, static_cast<std::int32_t>(u[i]));
  return t;
}

Tensor heatmap_target(const Shape& shape, std::uint64_t seed) {
  auto t = test::random_vector(static_cast<std::size_t>(shape_numel(shape)), seed, 0.0, 1.0);
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = i % 7 == 3 ? 1.0 : t[i] * t[i] * t[i];
  return Tensor::from_vector(shape, test::to_float(t));
}

// Runs one loss (0: CE, 1: CenterNet focal, 2: sigmoid focal, 3: smooth L1 weighted, 4: L1) on the
// device the inputs live on; `aux` is the labels (CE) or the target.
void run_loss(int which, const Tensor& x, const Tensor& aux, const Tensor& weight, Tensor& loss, GradMode mode,
              Tensor* grad) {
  const Stream s{x.device(), nullptr};
  switch (which) {
    case 0: kernels::softmax_cross_entropy({-100, 0.1f, 0.7f}, x, aux, loss, mode, grad, s); break;
    case 1: kernels::centernet_focal_loss({2.0f, 4.0f, 1.3f}, x, aux, loss, mode, grad, s); break;
    case 2: kernels::sigmoid_focal_loss({0.25f, 2.0f, 0.9f}, x, aux, loss, mode, grad, s); break;
    case 3: kernels::smooth_l1_loss({0.5f, 1.1f}, x, aux, weight, loss, mode, grad, s); break;
    default: kernels::l1_loss({}, x, aux, Tensor(), loss, mode, grad, s); break;
  }
}

struct Inputs {
  Tensor x, aux, weight;
};

Inputs make_inputs(int which, const Shape& shape, std::uint64_t seed) {
  Inputs in;
  in.x = test::random_tensor(shape, seed, -8.0, 8.0);
  if (which == 0) {
    Shape rows = shape;
    rows.pop_back();
    in.aux = labels_tensor(rows, static_cast<std::int32_t>(shape.back()), seed + 1);
  } else {
    in.aux = which <= 2 ? heatmap_target(shape, seed + 1) : test::random_tensor(shape, seed + 1, -8.0, 8.0);
    in.weight = test::random_tensor(shape, seed + 2, 0.0, 1.0);
  }
  return in;
}

TEST(LossCuda, MatchesHost) {
  GPPF_REQUIRE_GPU();
  const Shape shapes[] = {{2, 9, 11, 21}, {3, 1001}, {5, 3, 7, 1}};
  std::uint64_t seed = 1;
  for (int which = 0; which < 5; ++which) {
    for (const Shape& shape : shapes) {
      for (const DType dtype : {DType::F32, DType::BF16}) {
        Inputs in = make_inputs(which, shape, seed += 3);
        // The host sees the same (rounded) values the device gets.
        const Tensor x_dev = kernels::cast(in.x, dtype).to(kGpu);
        const Tensor x_host = kernels::cast(kernels::cast(in.x, dtype), DType::F32);
        const Tensor aux_dev = in.aux.to(kGpu);
        const Tensor w_dev = in.weight.defined() ? in.weight.to(kGpu) : Tensor();
        Tensor loss_h = Tensor::zeros({1}, DType::F32), grad_h = Tensor::empty(shape, DType::F32);
        Tensor loss_d = Tensor::zeros({1}, DType::F32, kGpu), grad_d = Tensor::empty(shape, dtype, kGpu);
        run_loss(which, x_host, in.aux, in.weight, loss_h, GradMode::Overwrite, &grad_h);
        run_loss(which, x_dev, aux_dev, w_dev, loss_d, GradMode::Overwrite, &grad_d);
        const double tol = dtype == DType::F32 ? 1e-3 : 2e-2;
        EXPECT_LT(test::max_rel_error(loss_d, loss_h), tol) << which << " " << shape_str(shape) << dtype_name(dtype);
        EXPECT_LT(test::max_rel_error(grad_d, grad_h), tol) << which << " " << shape_str(shape) << dtype_name(dtype);
      }
    }
  }
}

TEST(LossCuda, AccumulateAddsAndRepeatsAreBitwiseEqual) {
  GPPF_REQUIRE_GPU();
  const Shape shape{4, 33, 35, 19};
  for (int which = 0; which < 5; ++which) {
    Inputs in = make_inputs(which, shape, 100 + which);
    const Tensor x = in.x.to(kGpu), aux = in.aux.to(kGpu), w = in.weight.defined() ? in.weight.to(kGpu) : Tensor();
    Tensor a = Tensor::zeros({1}, DType::F32, kGpu), ga = Tensor::empty(shape, DType::F32, kGpu);
    Tensor b = Tensor::zeros({1}, DType::F32, kGpu), gb = Tensor::empty(shape, DType::F32, kGpu);
    run_loss(which, x, aux, w, a, GradMode::Overwrite, &ga);
    run_loss(which, x, aux, w, b, GradMode::Overwrite, &gb);
    const auto va = a.to_float_vector(), vb = b.to_float_vector();
    EXPECT_EQ(std::memcmp(va.data(), vb.data(), sizeof(float)), 0) << which;
    const auto ha = ga.to_float_vector(), hb = gb.to_float_vector();
    EXPECT_EQ(std::memcmp(ha.data(), hb.data(), ha.size() * sizeof(float)), 0) << which;
    run_loss(which, x, aux, w, b, GradMode::Accumulate, nullptr);
    EXPECT_FLOAT_EQ(b.to_float_vector()[0], 2.0f * va[0]) << which;
  }
}

TEST(LossCuda, InvalidLabelsAreReported) {
  GPPF_REQUIRE_GPU();
  Tensor labels = Tensor::empty({4}, DType::I32);
  const std::int32_t y[] = {0, 1, 9, 2};
  std::memcpy(labels.data(), y, sizeof(y));
  const Tensor x = test::random_tensor({4, 5}, 7).to(kGpu);
  Tensor loss = Tensor::zeros({1}, DType::F32, kGpu);
  const Stream s{kGpu, nullptr};
  kernels::softmax_cross_entropy({}, x, labels.to(kGpu), loss, GradMode::Overwrite, nullptr, s);
  try {
    kernels::check_label_errors(s);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("softmax_cross_entropy"), std::string::npos) << e.reason();
    EXPECT_NE(e.reason().find("label 9 at row 2"), std::string::npos) << e.reason();
  }
  // Reported once: the record is clear again.
  EXPECT_NO_THROW(kernels::check_label_errors(s));
  // The bad row counts as ignored: the loss is the mean over the 3 good rows, as on the host.
  std::memcpy(labels.data(), y, sizeof(y));
  labels.data_as<std::int32_t>()[2] = -100;
  Tensor host_loss = Tensor::zeros({1}, DType::F32);
  kernels::softmax_cross_entropy({}, x.to(Device::host()), labels, host_loss, GradMode::Overwrite, nullptr);
  EXPECT_LT(test::max_rel_error(loss, host_loss), 1e-3);
}

}  // namespace
}  // namespace gppf
