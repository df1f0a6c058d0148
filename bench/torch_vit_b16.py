#!/usr/bin/env python3
"""PyTorch yardstick for `gppf bench step --config configs/vit-b16-bench.yaml --synthetic 224x224x3:1000`:
ViT-B/16 written with torch.nn (Conv2d patch embedding 16/16, learned position embeddings, 12 pre-norm
blocks of LayerNorm, qkv Linear, F.scaled_dot_product_attention (fused: flash or memory-efficient),
proj, LayerNorm, MLP 768 -> 3072 GELU -> 768; final LayerNorm, Linear head to 1000), trained eagerly
on 256 random 224x224 images with AdamW in bf16 autocast. No class token: 196 tokens whose mean the
head reads, as gppf-vit pools its token map (a class token would add one token in 197; gppf's head also
reads a 2x2 grid of means, 3 M more multiply-adds a sample, 0.02 %). Two rows, measured in the
same run: the dense network (torch_vit_b16), and its peer of gppf-vit (torch_vit_b16_moe), where each
block's MLP is L = 4 legos of hidden 1536 with one task's router logits, top-2, gates softmax(z) at
the chosen legos and their gated outputs summed, as bench/torch_simt_r50.py does for its legos.
Prints training images/s per row. A yardstick only: nothing in gppf imports this."""
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("torch_vit_b16: PyTorch is not installed; nothing measured")
    sys.exit(0)

BATCH, IMAGE, PATCH, DIM, DEPTH, HEADS, MLP, CLASSES = 256, 224, 16, 768, 12, 12, 3072, 1000
LEGOS, TOP_K, TASKS = 4, 2, 1  # configs/vit-b16-bench.yaml: one task of 256


def mlp(hidden):
    return nn.Sequential(nn.Linear(DIM, hidden), nn.GELU(), nn.Linear(hidden, DIM))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x):
        n, t, _ = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, DIM))


class LegoMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.legos = nn.ModuleList(mlp(MLP // TOP_K) for _ in range(LEGOS))  # k active legos cost one dense MLP
        self.router = nn.Parameter(0.1 * torch.randn(TASKS, LEGOS))

    def forward(self, x, task):
        p = F.softmax(self.router[task].float(), dim=0)
        chosen = torch.topk(self.router[task].detach(), TOP_K).indices.tolist()  # the host reads the route
        y = None
        for i in sorted(chosen):
            o = self.legos[i](x)
            o = p[i].to(o.dtype) * o
            y = o if y is None else y + o
        return y


class Block(nn.Module):
    def __init__(self, legos):
        super().__init__()
        self.norm1, self.attn, self.norm2 = nn.LayerNorm(DIM), Attention(), nn.LayerNorm(DIM)
        self.mlp = LegoMlp() if legos else mlp(MLP)

    def forward(self, x, task):
        x = x + self.attn(self.norm1(x))
        h = self.norm2(x)
        return x + (self.mlp(h, task) if isinstance(self.mlp, LegoMlp) else self.mlp(h))


class VitB16(nn.Module):
    def __init__(self, legos=False):
        super().__init__()
        self.patch = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.pos = nn.Parameter(0.02 * torch.randn(1, (IMAGE // PATCH) ** 2, DIM))
        self.blocks = nn.ModuleList(Block(legos) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x, task=0):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            x = block(x, task)
        return self.head(self.norm(x).mean(1))


def measure(legos, steps=15, warmup=5):
    dev = torch.device("cuda")
    model = VitB16(legos).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    x = torch.randn(BATCH, 3, IMAGE, IMAGE, device=dev)
    y = torch.randint(0, CLASSES, (BATCH,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
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
    params = sum(p.numel() for p in model.parameters())
    del model, opt  # the second network gets the memory back
    torch.cuda.empty_cache()
    return BATCH / seconds, seconds, params


def main():
    if not torch.cuda.is_available():
        print("torch_vit_b16: no CUDA device; nothing measured")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    fused = [name for name, on in (("flash", torch.backends.cuda.flash_sdp_enabled()),
                                   ("mem_efficient", torch.backends.cuda.mem_efficient_sdp_enabled())) if on]
    print(f"# PyTorch {torch.__version__}, {torch.cuda.get_device_name()}, SDPA backends on: {', '.join(fused)}")
    print(f"{'benchmark':<40} {'batch':>6} {'ms/step':>9} {'img/s':>9}")
    rate, seconds, params = measure(False)
    print(f"{'torch_vit_b16/bf16':<40} {BATCH:6d} {seconds * 1e3:9.2f} {rate:9.1f}   "
          f"(dense, 196 tokens, {params / 1e6:.1f}M parameters, AdamW, eager)")
    rate, seconds, params = measure(True)
    print(f"{'torch_vit_b16_moe/bf16':<40} {BATCH:6d} {seconds * 1e3:9.2f} {rate:9.1f}   "
          f"(L={LEGOS} MLP legos of hidden {MLP // TOP_K}, top-{TOP_K}, {TASKS} task, "
          f"{params / 1e6:.1f}M parameters, AdamW, eager)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
