#!/usr/bin/env python3
"""Checks a `gppf export --format onnx` file against gppf's own outputs (tests/cli/test_export.cpp).

Usage: check_onnx.py CASE.json [--modules]

CASE.json: {"model": FILE.onnx, "tolerance": 1e-4,
            "input": {"file": F, "shape": [N, C, H, W]},           raw float32, pixel values 0..255
            "outputs": [{"name": N, "file": F, "shape": [...]}]}    raw float32 in gppf's layout:
                                                                    [N, classes] or NHWC
Runs onnx.checker.check_model, then OpenCV's DNN module on the input, and compares every output
(NCHW from ONNX, transposed to NHWC) with gppf's. Prints one line per output:
    max_abs_diff NAME VALUE (largest |output| V)
Exit 0: all within tolerance; 1: a mismatch or a failed check; 3: a module is missing.
`--modules` only checks that numpy, onnx and cv2 import (prints the missing ones, exit 3).
"""
import json
import os
import sys


def missing_modules():
    missing = []
    for m in ("numpy", "onnx", "cv2"):
        try:
            __import__(m)
        except ImportError:
            missing.append(m)
    return missing


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--modules":
        missing = missing_modules()
        if missing:
            print("missing: " + " ".join(missing))
            return 3
        return 0
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    missing = missing_modules()
    if missing:
        print("missing: " + " ".join(missing))
        return 3
    import cv2
    import numpy as np
    import onnx

    with open(sys.argv[1]) as f:
        case = json.load(f)
    base = os.path.dirname(os.path.abspath(sys.argv[1]))

    def load(entry):
        a = np.fromfile(os.path.join(base, entry["file"]), dtype="<f4")
        return a.reshape(entry["shape"])

    model_path = os.path.join(base, case["model"])
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    print("checker ok")
    net = cv2.dnn.readNetFromONNX(model_path)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.setInput(load(case["input"]).astype(np.float32))
    names = [o["name"] for o in case["outputs"]]
    got = net.forward(names)
    ok = True
    for entry, y in zip(case["outputs"], got):
        ref = load(entry)
        if ref.ndim == 4:
            y = np.transpose(y, (0, 2, 3, 1))  # NCHW -> gppf's NHWC
        if y.shape != ref.shape:
            print("shape_mismatch %s onnx %s gppf %s" % (entry["name"], list(y.shape), list(ref.shape)))
            ok = False
            continue
        diff = float(np.max(np.abs(y.astype(np.float64) - ref)))
        print("max_abs_diff %s %.3g (largest |output| %.3g)" % (entry["name"], diff, float(np.max(np.abs(ref)))))
        ok = ok and diff <= case["tolerance"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
