#!/usr/bin/env python3
"""PyTorch yardstick for bench_cuda_conv: the same convolutions, channels_last, forward and
forward+backward (data + filter) TFLOP/s, f32 with TF32 off and bf16 at batch 8, ResNet-50's
convolutions in bf16 at batch 64. Prints one row per (pass, dtype, shape), named as
bench_cuda_conv names its benchmarks. A yardstick only: nothing in gppf imports this."""
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch_conv: PyTorch is not installed; nothing measured")
    sys.exit(0)

# name, n, h, w, c, k, r, stride, pad, groups (bench/bench_cuda_conv.cpp keeps the same list)
HOST_SHAPES = [
    ("56x56x64_3x3", 8, 56, 56, 64, 64, 3, 1, 1, 1),
    ("28x28x128_3x3", 8, 28, 28, 128, 128, 3, 1, 1, 1),
    ("14x14x256_3x3", 8, 14, 14, 256, 256, 3, 1, 1, 1),
    ("7x7x512_3x3", 8, 7, 7, 512, 512, 3, 1, 1, 1),
    ("56x56x64-256_1x1", 8, 56, 56, 64, 256, 1, 1, 0, 1),
    ("56x56x256-64_1x1", 8, 56, 56, 256, 64, 1, 1, 0, 1),
    ("28x28x128_3x3_g2", 8, 28, 28, 128, 128, 3, 1, 1, 2),
]
RESNET50_SHAPES = [
    ("r50_stem_224x224x3-64_7x7s2", 64, 224, 224, 3, 64, 7, 2, 3, 1),
    ("r50_56x56x64-64_1x1", 64, 56, 56, 64, 64, 1, 1, 0, 1),
    ("r50_56x56x64_3x3", 64, 56, 56, 64, 64, 3, 1, 1, 1),
    ("r50_56x56x64-256_1x1", 64, 56, 56, 64, 256, 1, 1, 0, 1),
    ("r50_56x56x256-64_1x1", 64, 56, 56, 256, 64, 1, 1, 0, 1),
    ("r50_56x56x256-128_1x1", 64, 56, 56, 256, 128, 1, 1, 0, 1),
    ("r50_56x56x128_3x3s2", 64, 56, 56, 128, 128, 3, 2, 1, 1),
    ("r50_28x28x128_3x3", 64, 28, 28, 128, 128, 3, 1, 1, 1),
    ("r50_28x28x128-512_1x1", 64, 28, 28, 128, 512, 1, 1, 0, 1),
    ("r50_28x28x512-128_1x1", 64, 28, 28, 512, 128, 1, 1, 0, 1),
    ("r50_14x14x256_3x3", 64, 14, 14, 256, 256, 3, 1, 1, 1),
    ("r50_14x14x256-1024_1x1", 64, 14, 14, 256, 1024, 1, 1, 0, 1),
    ("r50_14x14x1024-256_1x1", 64, 14, 14, 1024, 256, 1, 1, 0, 1),
    ("r50_7x7x512_3x3", 64, 7, 7, 512, 512, 3, 1, 1, 1),
    ("r50_7x7x512-2048_1x1", 64, 7, 7, 512, 2048, 1, 1, 0, 1),
    ("r50_7x7x2048-512_1x1", 64, 7, 7, 2048, 512, 1, 1, 0, 1),
]
INNER = 10


def measure(shape, dtype, backward):
    name, n, h, w, c, k, r, stride, pad, groups = shape
    dev = torch.device("cuda")
    x = torch.full((n, c, h, w), 0.5, device=dev, dtype=dtype).to(memory_format=torch.channels_last)
    wt = torch.full((k, c // groups, r, r), 0.01, device=dev, dtype=dtype).to(memory_format=torch.channels_last)
    x.requires_grad_(backward)
    wt.requires_grad_(backward)

    def step():
        y = F.conv2d(x, wt, None, stride, pad, 1, groups)
        if backward:
            torch.autograd.grad(y, (x, wt), y)  # dy = y, as bench_cuda_conv does
        return y

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    reps = 0
    start.record()
    while True:
        for _ in range(INNER):
            step()
        reps += INNER
        end.record()
        end.synchronize()
        if start.elapsed_time(end) > 200 or reps >= 2000:
            break
    seconds = start.elapsed_time(end) / 1e3
    p = (h + 2 * pad - r) // stride + 1
    q = (w + 2 * pad - r) // stride + 1
    flops = 2.0 * n * p * q * k * r * r * (c // groups) * (3 if backward else 1)
    return seconds / reps, flops * reps / seconds / 1e12


def main():
    if not torch.cuda.is_available():
        print("torch_conv: no CUDA device; nothing measured")
        return 0
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"# PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    print(f"{'benchmark':<58} {'ms':>9} {'TFLOP/s':>9}")
    runs = [(s, torch.float32) for s in HOST_SHAPES] + [(s, torch.bfloat16) for s in HOST_SHAPES]
    runs += [(s, torch.bfloat16) for s in RESNET50_SHAPES]
    for shape, dtype in runs:
        for backward in (False, True):
            ms, tflops = measure(shape, dtype, backward)
            dname = "f32" if dtype == torch.float32 else "bf16"
            label = f"torch_conv_{'fwdbwd' if backward else 'fwd'}/{dname}/{shape[0]}"
            print(f"{label:<58} {ms * 1e3:9.3f} {tflops:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
