#!/usr/bin/env python3
"""PyTorch peer of `gppf bench step --config configs/r50-bench-4x64.yaml --synthetic 224x224x3:1000`: a
natural PyTorch implementation of the GPPF-R50 SIMT step (ResNet-50 layout, every block a lego layer of
L = 4 bottleneck legos of half width with a shared projection shortcut, per-task router logits, top-2
with gates softmax(z) at the chosen legos, one linear head per task), 4 tasks x 64 random 224x224
images, each task's path run in turn, losses summed, one backward, SGD with momentum; bf16 autocast,
channels_last, eager. Prints its training images/s beside dense ResNet-50 at the same total batch from
bench/torch_resnet50.py, measured in the same run. A yardstick only: nothing in gppf imports this."""
import os
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("torch_simt_r50: PyTorch is not installed; nothing measured")
    sys.exit(0)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_resnet50  # noqa: E402  (the dense yardstick, same process)

TASKS, BATCH, LEGOS, TOP_K = 4, 64, 4, 2


def bottleneck(cin, width, cout, stride):
    return nn.Sequential(
        nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))


class LegoLayer(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        width = cout // 4 // TOP_K  # k active legos cost one dense bottleneck
        self.legos = nn.ModuleList(bottleneck(cin, width, cout, stride) for _ in range(LEGOS))
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.router = nn.Parameter(0.1 * torch.randn(TASKS, LEGOS))

    def forward(self, x, task):
        p = F.softmax(self.router[task].float(), dim=0)
        chosen = torch.topk(self.router[task].detach(), TOP_K).indices.tolist()  # the host reads the route
        y = x if self.down is None else self.down(x)
        for i in sorted(chosen):
            y = y + p[i].to(x.dtype) * self.legos[i](x)
        return F.relu(y)


class SimtR50(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, blocks, stride in ((256, 3, 1), (512, 4, 2), (1024, 6, 2), (2048, 3, 2)):
            for b in range(blocks):
                layers.append(LegoLayer(cin, cout, stride if b == 0 else 1))
                cin = cout
        self.layers = nn.ModuleList(layers)
        self.heads = nn.ModuleList(nn.Linear(2048, classes) for _ in range(TASKS))

    def forward(self, x, task):
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x, task)
        return self.heads[task](torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def measure(steps=20, warmup=5):
    dev = torch.device("cuda")
    model = SimtR50().to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    xs = [torch.randn(BATCH, 3, 224, 224, device=dev).to(memory_format=torch.channels_last) for _ in range(TASKS)]
    ys = [torch.randint(0, 1000, (BATCH,), device=dev) for _ in range(TASKS)]

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = sum(F.cross_entropy(model(xs[t], t), ys[t]) for t in range(TASKS))
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    return TASKS * BATCH / seconds, seconds


def main():
    if not torch.cuda.is_available():
        print("torch_simt_r50: no CUDA device; nothing measured")
        return 0
    torch.backends.cudnn.benchmark = True
    print(f"# PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    print(f"{'benchmark':<40} {'batch':>6} {'ms/step':>9} {'img/s':>9}")
    rate, seconds = measure()
    print(f"{'torch_simt_r50/bf16':<40} {TASKS * BATCH:6d} {seconds * 1e3:9.2f} {rate:9.1f}   "
          f"({TASKS} tasks x {BATCH}, L={LEGOS} half-width legos, top-{TOP_K}, eager, channels_last)")
    dense, dense_seconds, source = torch_resnet50.measure(TASKS * BATCH, True)
    print(f"{'torch_resnet50/bf16':<40} {TASKS * BATCH:6d} {dense_seconds * 1e3:9.2f} {dense:9.1f}   "
          f"({source}, eager, channels_last)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
