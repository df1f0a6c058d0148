#!/usr/bin/env python3
"""A task's inference path recomputed from a checkpoint with h5py and numpy alone, by the rules of
docs/INTEROP.md (names, layouts, routing, per-task BN statistics, heads), and compared with gppf's
own outputs (tests/cli/test_export.cpp writes them; CASE.json as in check_onnx.py).

Usage: numpy_forward.py CHECKPOINT.h5 TASK CASE.json
Prints `max_abs_diff NAME VALUE` per output; exit 0 within the case's tolerance, 1 otherwise, 3 when
numpy, h5py or yaml is missing. Slow loops, tiny networks only: it is a specification, not a runtime.
"""
import json
import os
import sys

try:
    import h5py
    import numpy as np
    import yaml
except ImportError as e:
    print("missing: %s" % e.name)
    sys.exit(3)

if len(sys.argv) != 4:
    print(__doc__)
    sys.exit(2)
ck, task, case_path = sys.argv[1:4]
f = h5py.File(ck, 'r')
P = {k: v[()] for k, v in f['params'].items()}; B = {k: v[()] for k, v in f['buffers'].items()}
cfg = yaml.safe_load(f.attrs['config'].decode()); t = int(f['tasks'][task].attrs['index'])
tc = next(x for x in cfg['tasks'] if x['name'] == task); ttype = f['tasks'][task].attrs['type'].decode()
man = json.load(open(os.path.join(tc['dataset'], 'manifest.json')))
m = cfg['model']; L, K, S = m.get('legos', 4), m.get('top_k', 2), m.get('shared_legos', 0)
r50 = m.get('backbone') == 'gppf-r50'
stages = m['stages']; neck = m.get('neck', {}); first = neck.get('first_stage', 0)
def conv(x, w, stride, pad, b=None):  # x NHWC, w [O,kh,kw,I]
    n, h, wd, c = x.shape; o, kh, kw, i = w.shape
    xp = np.pad(x, ((0,0),(pad,pad),(pad,pad),(0,0)))
    oh, ow = (h + 2*pad - kh)//stride + 1, (wd + 2*pad - kw)//stride + 1
    y = np.zeros((n, oh, ow, o))
    for a in range(kh):
        for bb in range(kw):
            y += xp[:, a:a+stride*oh:stride, bb:bb+stride*ow:stride, :] @ w[:, a, bb, :].T
    return y + (0 if b is None else b)
def bn(x, name, relu):
    g, be = P[name+'.gamma'], P[name+'.beta']; mu, var = B[f'{name}.running_mean.task{t}'], B[f'{name}.running_var.task{t}']
    y = (x - mu) / np.sqrt(var + 1e-5) * g + be
    return np.maximum(y, 0) if relu else y
def up(x, oh, ow, mode):
    n, ih, iw, c = x.shape; y = np.zeros((n, oh, ow, c))
    def tap(d, i, o):
        s = max(0.0, (d + 0.5) * i / o - 0.5); i0 = min(int(np.floor(s)), i - 1); return i0, min(i0 + 1, i - 1), s - i0
    for h in range(oh):
        for w in range(ow):
            if mode == 'nearest': y[:, h, w] = x[:, h*ih//oh, w*iw//ow]; continue
            h0, h1, lh = tap(h, ih, oh); w0, w1, lw = tap(w, iw, ow)
            y[:, h, w] = (1-lh)*(1-lw)*x[:, h0, w0] + (1-lh)*lw*x[:, h0, w1] + lh*(1-lw)*x[:, h1, w0] + lh*lw*x[:, h1, w1]
    return y
case = json.load(open(case_path)); d = os.path.dirname(os.path.abspath(case_path))
raw = np.fromfile(os.path.join(d, case['input']['file']), '<f4').reshape(case['input']['shape']).transpose(0, 2, 3, 1)
C = raw.shape[3]; mean = man.get('stats', {}).get('mean', [0.0]); std = man.get('stats', {}).get('std', [1.0])
mean = np.array(mean[:C] if len(mean) >= C else mean * C); std = np.array(std[:C] if len(std) >= C else std * C)
x = (raw / 255.0 - mean) / std
w = P['stem.conv.weight']
if C == 1: w = w.sum(axis=3, keepdims=True)
k = w.shape[1]; x = bn(conv(x, w, 2 if r50 else 1, k // 2), 'stem.bn', True)
if r50:
    xp = np.pad(x, ((0,0),(1,1),(1,1),(0,0)), constant_values=-np.inf); oh = (x.shape[1] - 1)//2 + 1; ow = (x.shape[2] - 1)//2 + 1
    x = np.max([xp[:, a:a+2*oh:2, b:b+2*ow:2] for a in range(3) for b in range(3)], axis=0)
feats = []
for s, (ch, blocks, stride) in enumerate(stages):
    for blk in range(blocks):
        name = f'stage{s+1}.block{blk}'; st = stride if blk == 0 else 1
        z = P[f'{name}.router.task{t}']; p = np.exp(z - z.max()); p /= p.sum()
        sel = sorted(sorted(range(L), key=lambda i: (-z[i], i))[:K])
        legos = [(f'{name}.shared{i}', 1.0) for i in range(S)] + [(f'{name}.lego{i}', p[i]) for i in sel]
        y = bn(conv(x, P[name+'.proj.weight'], st, 0), name+'.proj_bn', False) if name+'.proj.weight' in P else x
        for ln, g in legos:
            h = bn(conv(x, P[ln+'.conv1.weight'], 1, 0), ln+'.bn1', True)
            h = bn(conv(h, P[ln+'.conv2.weight'], st, 1), ln+'.bn2', True)
            y = y + g * bn(conv(h, P[ln+'.conv3.weight'], 1, 0), ln+'.bn3', False)
        x = np.maximum(y, 0)
    feats.append(x)
hd = 'head.' + task
def neckf(n, ctx):
    lat = [bn(conv(feats[s], P[f'{n}.lateral{s}.weight'], 1, 0), f'{n}.lateral_bn{s}', True) for s in range(first, len(feats))]
    for e in range(ctx):
        lat.append(bn(conv(feats[-1] if e == 0 else lat[-1], P[f'{n}.context{e}.weight'], 2, 1), f'{n}.context_bn{e}', True))
    q = lat[-1]
    for l in reversed(lat[:-1]): q = l + up(q, l.shape[1], l.shape[2], 'nearest')
    return bn(conv(q, P[n+'.smooth.weight'], 1, 1), n+'.smooth_bn', True)
if ttype == 'classification':
    fl = feats[-1]; H, W = fl.shape[1:3]; kh, kw, sh, sw = (H+1)//2, (W+1)//2, H//2, W//2
    grid = [fl[:, i*sh:i*sh+kh, j*sw:j*sw+kw].mean(axis=(1, 2)) for i in range(2) for j in range(2)]
    v = np.concatenate([fl.mean(axis=(1, 2))] + grid, axis=1)
    outs = {'logits': v @ P[hd+'.fc.weight'].T + P[hd+'.fc.bias']}
elif ttype == 'detection':
    xn = neckf(hd+'.neck', max(0, tc.get('context_levels', 0))); outs = {}
    for br in ['heatmap', 'size', 'offset']:
        h = np.maximum(conv(xn, P[f'{hd}.{br}.conv.weight'], 1, 1, P[f'{hd}.{br}.conv.bias']), 0)
        outs[br] = conv(h, P[f'{hd}.{br}.out.weight'], 1, 0, P[f'{hd}.{br}.out.bias'])
else:
    ctx = tc.get('context_levels', -1); ctx = 3 if ctx < 0 else ctx
    low = conv(neckf(hd+'.neck', ctx), P[hd+'.classifier.weight'], 1, 0, P[hd+'.classifier.bias'])
    if first > 0:
        fine = conv(feats[0], P[hd+'.skip.weight'], 1, 0, P[hd+'.skip.bias']); low = up(low, fine.shape[1], fine.shape[2], 'bilinear') + fine
    outs = {'logits': up(low, raw.shape[1], raw.shape[2], 'bilinear') if low.shape[1:3] != raw.shape[1:3] else low}
ok = True
for o in case['outputs']:
    ref = np.fromfile(os.path.join(d, o['file']), '<f4').reshape(o['shape'])
    diff = float(np.abs(outs[o['name']] - ref).max())
    print('max_abs_diff %s %.3g (largest |output| %.3g)' % (o['name'], diff, float(np.abs(ref).max())))
    ok = ok and diff <= case['tolerance']
sys.exit(0 if ok else 1)
