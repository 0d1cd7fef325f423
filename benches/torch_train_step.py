#!/usr/bin/env python3
"""One training step of the digits CRATE, PyTorch against this crate, same machine, same run.

    python3 benches/torch_train_step.py --torch-bench PATH/TO/bench_torch.py [--threads 2] [--reps 200]

The model of `train_crate_digits` (8 × 8 one-channel images in patches of 4, width 64, depth
3, 4 heads of 16, 10 classes) on a batch of 32: forward, cross-entropy with label smoothing
0.1, backward, gradient clipping to norm 1, one AdamW step without weight decay on biases,
LayerNorm weights, `cls_token` and `pos_embedding` (the reference grouping). Two PyTorch
variants, both built on the baseline script's functional models (which it checks against
the oracle): the reference semantics (`model_native`) and what a performance-minded user
writes (`model_sdpa`: `F.scaled_dot_product_attention` and the ISTA step as one matrix, formed
from the dictionary inside the step so that its gradient flows). Our side is the criterion
bench `train_step`. Needs `pip install torch numpy safetensors`.
"""
import argparse
import glob
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_baseline(path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    spec = importlib.util.spec_from_file_location("bench_torch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_steps(bt, threads, reps):
    import torch
    import torch.nn.functional as F
    O = bt.O
    torch.set_num_threads(threads)
    rows = {}
    for dtype, name in ((torch.float32, "f32"), (torch.float64, "f64")):
        g = torch.Generator().manual_seed(0)
        p = O.random_crate_params(image_size=8, patch_size=4, num_classes=10, dim=64, depth=3,
                                  heads=4, dim_head=16, channels=1, dtype=dtype, generator=g)
        params = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        no_decay = lambda k, v: v.ndim <= 1 or k.endswith("bias") or k in ("cls_token", "pos_embedding")
        groups = [
            {"params": [v for k, v in params.items() if not no_decay(k, v)], "weight_decay": 0.05},
            {"params": [v for k, v in params.items() if no_decay(k, v)], "weight_decay": 0.0},
        ]
        images = torch.randn(32, 1, 8, 8, dtype=dtype, generator=g)
        labels = torch.arange(32) % 10
        variants = {
            "reference semantics (model_native)":
                lambda: bt.model_native(images, params, 4, 3, 4),
            "sdpa + fused ISTA matrix (model_sdpa)":
                lambda: bt.model_sdpa(images, params, 4, 3, 4,
                                      [bt.ista_matrix(params[f"transformer.layers.{l}.1.fn.weight"])
                                       for l in range(3)]),
        }
        for vname, forward in variants.items():
            opt = torch.optim.AdamW(groups, lr=1e-4)

            def step():
                logits = forward()
                loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                return loss

            for _ in range(20):
                step()
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                step()
                times.append((time.perf_counter() - t0) * 1e3)
            rows[(name, vname)] = statistics.median(times)
    return rows, torch.__version__


def our_steps(threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    subprocess.run(["cargo", "bench", "--features", "parallel", "--bench", "train_step", "--", "--noplot"],
                   cwd=ROOT, env=env, check=True)
    rows = {}
    for path in glob.glob(os.path.join(ROOT, "target", "criterion", "train_step_*", "*", "*", "new",
                                       "estimates.json")):
        with open(path) as fh:
            est = json.load(fh)
        dtype = path.split(os.sep)[-5].rsplit("_", 1)[1]
        rows[dtype] = est["median"]["point_estimate"] / 1e6
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch-bench", required=True, help="path to the PyTorch baseline script bench_torch.py")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    bt = load_baseline(args.torch_bench)
    torch_rows, version = torch_steps(bt, args.threads, args.reps)
    ours = our_steps(args.threads)
    print(f"\nthreads: {args.threads}; torch {version}; one training step of the digits CRATE, batch 32")
    print("\n| dtype | best PyTorch variant | PyTorch median ms | mcr2 median ms | PyTorch / mcr2 |")
    print("|---|---|---:|---:|---:|")
    for dtype in ("f32", "f64"):
        (t_ms, variant) = min((v, k[1]) for k, v in torch_rows.items() if k[0] == dtype)
        o = ours.get(dtype)
        if o is None:
            continue
        print(f"| {dtype} | {variant} | {t_ms:.3f} | {o:.3f} | {t_ms / o:.2f}× |")
    print("\nall PyTorch variants (median ms): " +
          "; ".join(f"{k[0]} {k[1]}: {v:.3f}" for k, v in sorted(torch_rows.items())))


if __name__ == "__main__":
    main()
