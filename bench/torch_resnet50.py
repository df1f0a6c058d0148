#!/usr/bin/env python3
"""PyTorch yardstick for `gppf bench step --config configs/r50-bench.yaml --synthetic 224x224x3:1000`:
a dense ResNet-50 trained eagerly on random 224x224 images, channels_last, SGD with momentum, at the
same batch (default 256; argv[1] overrides), in bf16 autocast and in fp32 with TF32. Prints one row
per precision with training images/s. A yardstick only: nothing in gppf imports this."""
import sys
import time

try:
    import torch
    import torch.nn as nn
except ImportError:
    print("torch_resnet50: PyTorch is not installed; nothing measured")
    sys.exit(0)


def resnet50():
    try:
        import torchvision

        return torchvision.models.resnet50(), "torchvision"
    except ImportError:
        pass

    # torchvision's layout (v1.5: stride on the 3x3), written out for machines without it.
    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = 4 * width
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.body(x) + (x if self.down is None else self.down(x)))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            layers.append(Bottleneck(cin, width, stride if b == 0 else 1))
            cin = 4 * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    return nn.Sequential(*layers), "own definition (no torchvision)"


def measure(batch, bf16, steps=30, warmup=8):
    dev = torch.device("cuda")
    model, source = resnet50()
    model = model.to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(batch, 3, 224, 224, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
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
    return batch / seconds, seconds, source


def main():
    if not torch.cuda.is_available():
        print("torch_resnet50: no CUDA device; nothing measured")
        return 0
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"# PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    print(f"{'benchmark':<40} {'batch':>6} {'ms/step':>9} {'img/s':>9}")
    for bf16 in (True, False):
        rate, seconds, source = measure(batch, bf16)
        label = f"torch_resnet50/{'bf16' if bf16 else 'tf32'}"
        print(f"{label:<40} {batch:6d} {seconds * 1e3:9.2f} {rate:9.1f}   ({source}, eager, channels_last)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
