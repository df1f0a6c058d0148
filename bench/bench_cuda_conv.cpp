// conv2d on CUDA (cuDNN through kernels::conv2d_*): forward and forward+backward (data + filter)
// TFLOP/s on the host benchmark's shapes (batch 8, f32 with TF32 off and bf16) and on ResNet-50's
// convolutions at batch 64 in bf16, NHWC. bench/torch_conv.py prints the same rows for PyTorch
// (channels_last) as the yardstick. Without a GPU it registers one benchmark that reports the skip.
// Names: BM_CudaConv_<fwd|fwdbwd>/<dtype>/<shape>; counter TFLOP/s.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "core/cuda_runtime.hpp"
#include "kernels/cast.hpp"
#include "kernels/conv.hpp"

namespace {

using gppf::DType;
using gppf::Tensor;
namespace k = gppf::kernels;

struct ConvShape {
  std::string name;
  std::int64_t n, h, w, c, k, r;
  int stride, pad, groups;
};

std::vector<ConvShape> host_shapes() {
  return {
      {"56x56x64_3x3", 8, 56, 56, 64, 64, 3, 1, 1, 1},       {"28x28x128_3x3", 8, 28, 28, 128, 128, 3, 1, 1, 1},
      {"14x14x256_3x3", 8, 14, 14, 256, 256, 3, 1, 1, 1},    {"7x7x512_3x3", 8, 7, 7, 512, 512, 3, 1, 1, 1},
      {"56x56x64-256_1x1", 8, 56, 56, 64, 256, 1, 1, 0, 1},  {"56x56x256-64_1x1", 8, 56, 56, 256, 64, 1, 1, 0, 1},
      {"28x28x128_3x3_g2", 8, 28, 28, 128, 128, 3, 1, 1, 2},
  };
}

// The distinct convolutions of ResNet-50 (v1.5: stride on the 3x3), batch 64.
std::vector<ConvShape> resnet50_shapes() {
  return {
      {"r50_stem_224x224x3-64_7x7s2", 64, 224, 224, 3, 64, 7, 2, 3, 1},
      {"r50_56x56x64-64_1x1", 64, 56, 56, 64, 64, 1, 1, 0, 1},
      {"r50_56x56x64_3x3", 64, 56, 56, 64, 64, 3, 1, 1, 1},
      {"r50_56x56x64-256_1x1", 64, 56, 56, 64, 256, 1, 1, 0, 1},
      {"r50_56x56x256-64_1x1", 64, 56, 56, 256, 64, 1, 1, 0, 1},
      {"r50_56x56x256-128_1x1", 64, 56, 56, 256, 128, 1, 1, 0, 1},
      {"r50_56x56x128_3x3s2", 64, 56, 56, 128, 128, 3, 2, 1, 1},
      {"r50_28x28x128_3x3", 64, 28, 28, 128, 128, 3, 1, 1, 1},
      {"r50_28x28x128-512_1x1", 64, 28, 28, 128, 512, 1, 1, 0, 1},
      {"r50_28x28x512-128_1x1", 64, 28, 28, 512, 128, 1, 1, 0, 1},
      {"r50_14x14x256_3x3", 64, 14, 14, 256, 256, 3, 1, 1, 1},
      {"r50_14x14x256-1024_1x1", 64, 14, 14, 256, 1024, 1, 1, 0, 1},
      {"r50_14x14x1024-256_1x1", 64, 14, 14, 1024, 256, 1, 1, 0, 1},
      {"r50_7x7x512_3x3", 64, 7, 7, 512, 512, 3, 1, 1, 1},
      {"r50_7x7x512-2048_1x1", 64, 7, 7, 512, 2048, 1, 1, 0, 1},
      {"r50_7x7x2048-512_1x1", 64, 7, 7, 2048, 512, 1, 1, 0, 1},
  };
}

constexpr int kInner = 10;  // ops queued between two synchronisations

void run(benchmark::State& state, const ConvShape& s, DType dtype, bool backward) {
  k::Conv2dParams p;
  p.stride_h = p.stride_w = s.stride;
  p.pad_h = p.pad_w = s.pad;
  p.groups = s.groups;
  const auto g = k::conv2d_geometry("bench", p, {s.n, s.h, s.w, s.c}, {s.k, s.r, s.r, s.c / s.groups});
  const auto dev = gppf::Device::cuda(0);
  auto filled = [&](const gppf::Shape& shape, float v) {
    Tensor h = Tensor::empty(shape, DType::F32);
    h.fill_(v);
    return k::cast(h, dtype).to(dev);
  };
  Tensor x = filled(g.x_shape(), 0.5f), w = filled(g.w_shape(), 0.01f), y = filled(g.y_shape(), 0.0f);
  Tensor dx = filled(g.x_shape(), 0.0f), dw = filled(g.w_shape(), 0.0f);
  const gppf::Stream stream{dev, nullptr};
  auto step = [&] {
    k::conv2d_fwd(p, x, w, Tensor(), y, stream);
    if (backward) {
      k::conv2d_bwd_data(p, y, w, dx, k::GradMode::Overwrite, stream);
      k::conv2d_bwd_filter(p, x, y, dw, nullptr, k::GradMode::Overwrite, stream);
    }
  };
  step();  // algorithm search, outside the timing
  gppf::cuda::synchronize(stream);
  for (auto _ : state) {
    for (int i = 0; i < kInner; ++i) step();
    gppf::cuda::synchronize(stream);
  }
  const double flops = g.flops() * (backward ? 3.0 : 1.0) * kInner;
  state.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}

void no_gpu(benchmark::State& state) {
  for (auto _ : state) {
  }
  state.SkipWithError("no CUDA device (or built without CUDA): nothing measured");
}

const int kRegistered = [] {
  if (!gppf::cuda::available()) {
    benchmark::RegisterBenchmark("BM_CudaConv_skipped", no_gpu)->Iterations(1);
    return 0;
  }
  auto add = [](const ConvShape& s, DType dtype) {
    for (bool backward : {false, true}) {
      const std::string name =
          std::string("BM_CudaConv_") + (backward ? "fwdbwd/" : "fwd/") + gppf::dtype_name(dtype) + "/" + s.name;
      benchmark::RegisterBenchmark(name.c_str(), run, s, dtype, backward)->Unit(benchmark::kMillisecond)->UseRealTime();
    }
  };
  for (const auto& s : host_shapes()) {
    add(s, DType::F32);
    add(s, DType::BF16);
  }
  for (const auto& s : resnet50_shapes()) add(s, DType::BF16);
  return 0;
}();

}  // namespace
