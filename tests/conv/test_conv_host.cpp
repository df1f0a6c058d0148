// The host backend (oneDNN where built with it, and the im2col + SGEMM fallback, which the GPU
// machine uses) against the double reference: forward, backward-data, backward-filter, overwrite and
// accumulate, and the errors bad shapes give.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "tests/conv/conv_cases.hpp"

namespace gppf::test {
namespace {

constexpr double kTol = 1e-4;

struct Data {
  kernels::Conv2dGeometry g;
  std::vector<double> x, w, b, dy, y_ref, dx_ref, dw_ref, db_ref;
};

Data make_data(const ConvCase& c, std::uint64_t seed) {
  Data d;
  d.g = kernels::conv2d_geometry("test", c.p, c.x, c.w());
  // Round the inputs to f32 first so that the reference sees exactly what the backend sees.
  auto rnd = [&](std::int64_t n, std::uint64_t s) {
    auto v = random_vector(static_cast<std::size_t>(n), seed * 16 + s);
    for (auto& e : v) e = static_cast<float>(e);
    return v;
  };
  d.x = rnd(shape_numel(c.x), 1);
  d.w = rnd(shape_numel(c.w()), 2);
  d.b = rnd(d.g.k, 3);
  d.dy = rnd(shape_numel(d.g.y_shape()), 4);
  d.y_ref.resize(d.dy.size());
  d.dx_ref.resize(d.x.size());
  d.dw_ref.resize(d.w.size());
  d.db_ref.resize(d.b.size());
  kernels::ref::conv2d_fwd(c.p, d.g, d.x.data(), d.w.data(), c.bias ? d.b.data() : nullptr, d.y_ref.data());
  kernels::ref::conv2d_bwd_data(c.p, d.g, d.dy.data(), d.w.data(), d.dx_ref.data());
  kernels::ref::conv2d_bwd_filter(c.p, d.g, d.x.data(), d.dy.data(), d.dw_ref.data(), d.db_ref.data());
  return d;
}

Tensor tensor(const Shape& shape, const std::vector<double>& v) { return Tensor::from_vector(shape, to_float(v)); }
std::vector<double> plus(std::vector<double> a, const std::vector<double>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

// One backend: the public entry points (oneDNN when present) or the GEMM fallback called directly.
struct Backend {
  std::function<void(const ConvCase&, const Tensor&, const Tensor&, const Tensor&, Tensor&)> fwd;
  std::function<void(const ConvCase&, const Tensor&, const Tensor&, Tensor&, kernels::GradMode)> bwd_data;
  std::function<void(const ConvCase&, const Tensor&, const Tensor&, Tensor&, Tensor*, kernels::GradMode)> bwd_filter;
};

Backend public_api() {
  return {[](const ConvCase& c, const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
            kernels::conv2d_fwd(c.p, x, w, b, y);
          },
          [](const ConvCase& c, const Tensor& dy, const Tensor& w, Tensor& dx, kernels::GradMode m) {
            kernels::conv2d_bwd_data(c.p, dy, w, dx, m);
          },
          [](const ConvCase& c, const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* db, kernels::GradMode m) {
            kernels::conv2d_bwd_filter(c.p, x, dy, dw, db, m);
          }};
}

Backend gemm_fallback() {
  auto geo = [](const ConvCase& c) { return kernels::conv2d_geometry("test", c.p, c.x, c.w()); };
  return {[=](const ConvCase& c, const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
            kernels::host::gemm_conv2d_fwd(c.p, geo(c), x.data_as<float>(), w.data_as<float>(),
                                           b.defined() ? b.data_as<float>() : nullptr, y.data_as<float>());
          },
          [=](const ConvCase& c, const Tensor& dy, const Tensor& w, Tensor& dx, kernels::GradMode m) {
            kernels::host::gemm_conv2d_bwd_data(c.p, geo(c), dy.data_as<float>(), w.data_as<float>(),
                                                dx.data_as<float>(), m);
          },
          [=](const ConvCase& c, const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* db, kernels::GradMode m) {
            kernels::host::gemm_conv2d_bwd_filter(c.p, geo(c), x.data_as<float>(), dy.data_as<float>(),
                                                  dw.data_as<float>(), db ? db->data_as<float>() : nullptr, m);
          }};
}

void check_backend(const Backend& be, const ConvCase& c) {
  const Data d = make_data(c, 7);
  const Tensor x = tensor(c.x, d.x), w = tensor(c.w(), d.w), dy = tensor(d.g.y_shape(), d.dy);
  const Tensor b = c.bias ? tensor({d.g.k}, d.b) : Tensor();

  Tensor y = Tensor::empty(d.g.y_shape(), DType::F32);
  y.fill_(1e6f);  // overwritten, never read
  be.fwd(c, x, w, b, y);
  EXPECT_LT(max_rel_error(y, d.y_ref), kTol) << "fwd";

  for (auto mode : {kernels::GradMode::Overwrite, kernels::GradMode::Accumulate}) {
    const bool acc = mode == kernels::GradMode::Accumulate;
    const char* tag = acc ? "accumulate" : "overwrite";
    // Accumulate adds onto prior contents; overwrite must ignore them (NaN would poison a sum).
    const auto dx0 = random_vector(d.x.size(), 31), dw0 = random_vector(d.w.size(), 32),
               db0 = random_vector(d.b.size(), 33);
    Tensor dx = tensor(c.x, dx0), dw = tensor(c.w(), dw0), db = tensor({d.g.k}, db0);
    if (!acc) {
      dx.fill_(std::nanf(""));
      dw.fill_(std::nanf(""));
      db.fill_(std::nanf(""));
    }
    be.bwd_data(c, dy, w, dx, mode);
    EXPECT_LT(max_rel_error(dx, acc ? plus(d.dx_ref, dx0) : d.dx_ref), kTol) << "bwd_data " << tag;
    be.bwd_filter(c, x, dy, dw, c.bias ? &db : nullptr, mode);
    EXPECT_LT(max_rel_error(dw, acc ? plus(d.dw_ref, dw0) : d.dw_ref), kTol) << "bwd_filter dw " << tag;
    if (c.bias) {
      EXPECT_LT(max_rel_error(db, acc ? plus(d.db_ref, db0) : d.db_ref), kTol) << "bwd_filter db " << tag;
    }
  }
}

class ConvHost : public testing::TestWithParam<ConvCase> {};

TEST_P(ConvHost, MatchesReference) { check_backend(public_api(), GetParam()); }
TEST_P(ConvHost, GemmFallbackMatchesReference) { check_backend(gemm_fallback(), GetParam()); }

INSTANTIATE_TEST_SUITE_P(Cases, ConvHost, testing::ValuesIn(conv_cases()), conv_case_name);

TEST(ConvHost, NewWeightsOnACachedShapeAreUsed) {
  // The oneDNN path caches primitives and reordered weights per shape; the weights' values must
  // still be read on every call.
  const ConvCase c = conv_cases()[0];
  const Data d1 = make_data(c, 1), d2 = make_data(c, 2);
  Tensor y = Tensor::empty(d1.g.y_shape(), DType::F32);
  for (const Data* d : {&d1, &d2, &d1}) {
    kernels::conv2d_fwd(c.p, tensor(c.x, d->x), tensor(c.w(), d->w), tensor({d->g.k}, d->b), y);
    EXPECT_LT(max_rel_error(y, d->y_ref), kTol);
  }
}

TEST(ConvHost, OutputShape) {
  kernels::Conv2dParams p;
  p.stride_h = p.stride_w = 2;
  p.pad_h = p.pad_w = 3;
  EXPECT_EQ(kernels::conv2d_output_shape(p, {8, 224, 224, 3}, {64, 7, 7, 3}), (Shape{8, 112, 112, 64}));
  p = {};
  p.pad_h = 2;
  p.dilation_h = 2;
  p.groups = 4;
  EXPECT_EQ(kernels::conv2d_output_shape(p, {1, 9, 9, 8}, {12, 3, 1, 2}), (Shape{1, 9, 9, 12}));
}

// Runs f, expects a gppf::Error whose one-line message holds every fragment.
void expect_error(const std::function<void()>& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const char* frag : fragments) EXPECT_NE(msg.find(frag), std::string::npos) << msg << " lacks " << frag;
  }
}

TEST(ConvHost, BadShapesGiveOneLineErrors) {
  kernels::Conv2dParams p;
  Tensor x = Tensor::zeros({2, 7, 5, 3}, DType::F32), w = Tensor::zeros({4, 3, 3, 3}, DType::F32);
  Tensor y = Tensor::zeros({2, 5, 3, 4}, DType::F32), none;
  expect_error(
      [&] {
        kernels::conv2d_fwd(p, x, Tensor::zeros({4, 3, 3, 2}, DType::F32), none, y);
      },
      {"conv2d_fwd", "[4,3,3,2]", "[2,7,5,3]"});
  Tensor y_bad = Tensor::zeros({2, 5, 5, 4}, DType::F32);
  expect_error([&] { kernels::conv2d_fwd(p, x, w, none, y_bad); }, {"conv2d_fwd", "y", "[2,5,3,4]", "[2,5,5,4]"});
  expect_error([&] { kernels::conv2d_fwd(p, x, w, Tensor::zeros({3}, DType::F32), y); }, {"conv2d_fwd", "bias", "[4]"});
  expect_error([&] { kernels::conv2d_fwd(p, x.reshape({70, 3}), w, none, y); }, {"conv2d_fwd", "[70,3]"});
  expect_error([&] { kernels::conv2d_fwd(p, Tensor::zeros(x.shape(), DType::BF16), w, none, y); },
               {"conv2d_fwd", "bf16"});
  kernels::Conv2dParams g2;
  g2.groups = 2;
  expect_error(
      [&] {
        kernels::conv2d_fwd(g2, x, Tensor::zeros({4, 3, 3, 1}, DType::F32), none, y);
      },
      {"conv2d_fwd", "groups=2", "[2,7,5,3]"});
  kernels::Conv2dParams big;
  big.dilation_w = 3;
  expect_error([&] { kernels::conv2d_fwd(big, x, w, none, y); }, {"conv2d_fwd", "dilated", "[2,7,5,3]"});
  kernels::Conv2dParams zero_stride;
  zero_stride.stride_h = 0;
  expect_error([&] { kernels::conv2d_fwd(zero_stride, x, w, none, y); }, {"conv2d_fwd", "stride 0x1"});
  Tensor dx = Tensor::zeros({2, 7, 5, 3}, DType::F32);
  expect_error(
      [&] {
        kernels::conv2d_bwd_data(p, Tensor::zeros({2, 5, 4, 4}, DType::F32), w, dx, kernels::GradMode::Overwrite);
      },
      {"conv2d_bwd_data", "dy", "[2,5,3,4]", "[2,5,4,4]"});
  Tensor dw = Tensor::zeros({4, 3, 3, 3}, DType::F32), db = Tensor::zeros({5}, DType::F32);
  expect_error([&] { kernels::conv2d_bwd_filter(p, x, y, dw, &db, kernels::GradMode::Overwrite); },
               {"conv2d_bwd_filter", "dbias", "[4]", "[5]"});
}

}  // namespace
}  // namespace gppf::test
