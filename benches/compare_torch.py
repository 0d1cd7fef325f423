#!/usr/bin/env python3
"""Side-by-side timing against a PyTorch CPU baseline.

    python3 benches/compare_torch.py --torch-bench PATH/TO/bench_torch.py [--what rate|crate|model] [--threads 2] [--rounds 3]

`--what rate` (default): ΔR value and value+gradient. Runs, one after the other on the same
machine, the PyTorch baseline script (all its ΔR variants: primal Cholesky, primal
torch.logdet, dual where n_j < d) and this crate's criterion bench `rate`; for every case and
dtype the table shows the best (lowest median) PyTorch variant, our median and the ratio.

`--what crate`: CRATE block forward and forward+backward (CRATE-T and CRATE-S blocks, batch
1 and 32), the baseline's block rows against the criterion bench `crate_layer`.

`--what model`: the whole CRATE-T classifier on 8 images of 224 × 224, the baseline's
full-model rows against the `crate_model_*` groups of the criterion bench `crate_layer`.

`--what roofline`: how fast the blocks could be at all. Times the block's projection product
(B·197 tokens × dim by dim × dim) on both sides (`F.linear` with MKL; faer, the criterion
group `crate_gemm_*`), and PyTorch's block rows (forward, forward+backward); then, for every
block row, the time its products alone take at the better of the two product rates, and PyTorch's
time over it: the largest ratio that any implementation running the same products could
reach on this machine. The products of a forward are B·(6·N·dim² + 4·N²·dim) flops (qkv,
output projection and the ISTA matrix, then QKᵀ and AV; heads·dim_head = dim in CRATE-T and
CRATE-S), three times that for forward+backward (each product's backward is two products of
its size); the softmax, norms and sums are left out, so the bound is generous.

Both sides use the same thread count (torch.set_num_threads, RAYON_NUM_THREADS) and our side
the `parallel` feature. Needs `pip install torch numpy safetensors`.

`--rounds R` (default 3) runs the two sides alternately R times (PyTorch, ours, PyTorch,
ours, …) and reports, for each row, the median over the rounds of each side's median (the
best PyTorch variant taken per round), with every round's ratio beside it. On a shared
machine whose speed drifts over minutes, one round times the two sides in different phases;
alternating rounds spread the drift over both.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from statistics import median

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_torch(script, threads, reps, what):
    out = os.path.join(tempfile.mkdtemp(), "torch.md")
    extra = {
        "rate": ["--only", "mcr2"],
        "crate": ["--only", "crate", "--select", r"block.*\|forward"],
        "model": ["--only", "crate", "--select", r"full model.*\|forward$"],
        "roofline": ["--only", "crate", "--select", r"block.*\|forward"],
    }[what]
    subprocess.run([sys.executable, script, *extra, "--threads", str(threads), "--reps", str(reps),
                    "--out", out], check=True)
    with open(os.path.splitext(out)[0] + ".json") as fh:
        return json.load(fh)


def run_ours(threads, what):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    bench, prefix = {
        "rate": ("rate", "delta_r_"),
        "crate": ("crate_layer", "crate_block_"),
        "model": ("crate_layer", "crate_model_"),
        "roofline": ("crate_layer", "crate_gemm_"),
    }[what]
    subprocess.run(["cargo", "bench", "--features", "parallel", "--bench", bench, "--", "--noplot", prefix],
                   cwd=ROOT, env=env, check=True)
    rows = {}
    for path in glob.glob(os.path.join(ROOT, "target", "criterion", prefix + "*", "*", "*", "new", "benchmark.json")):
        with open(path) as fh:
            b = json.load(fh)
        with open(os.path.join(os.path.dirname(path), "estimates.json")) as fh:
            est = json.load(fh)
        dtype = b["group_id"].rsplit("_", 1)[1]
        rows[(b["value_str"], dtype, b["function_id"])] = est["median"]["point_estimate"] / 1e6
    return rows


def variant_name(row, default):
    """The baseline's note tells its CRATE variants apart (the reference code, or
    `scaled_dot_product_attention` with the ISTA step as one matrix); notes about GFLOP/s
    accounting are not variant names."""
    note = row.get("note") or ""
    return default if not note or note.startswith("GFLOP") else note


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch-bench", required=True, help="path to the PyTorch baseline script bench_torch.py")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--what", choices=["rate", "crate", "model", "roofline"], default="rate")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternate the two sides this many times and take medians over the rounds")
    args = ap.parse_args()
    if args.what == "roofline":
        return roofline(args)
    rounds = []
    for _ in range(max(args.rounds, 1)):
        torch = run_torch(args.torch_bench, args.threads, args.reps, args.what)
        rounds.append((best_torch(torch, args.what), run_ours(args.threads, args.what)))
    print(f"\nthreads: {args.threads} (torch.set_num_threads and RAYON_NUM_THREADS); torch {torch['meta'].get('torch')}"
          f"; rounds: {len(rounds)}")
    many = len(rounds) > 1
    print("\n| case | dtype | measure | best PyTorch variant | PyTorch median ms | mcr2 median ms | PyTorch / mcr2 |"
          + (" ratio in each round |" if many else ""))
    print("|---|---|---|---|---:|---:|---:|" + ("---|" if many else ""))
    for key in sorted(rounds[0][0], key=lambda k: ([int(x) for x in re.findall(r"\d+", k[0])], k[1], k[2])):
        per_round = [(best[key], ours[key]) for best, ours in rounds if key in best and key in ours]
        if not per_round:
            continue
        t_ms = median([t for (t, _), _ in per_round])
        o = median([o for _, o in per_round])
        # the variant of the round whose PyTorch time is the median
        variant = min(per_round, key=lambda r: abs(r[0][0] - t_ms))[0][1]
        case, dtype, kind = key
        line = f"| {case} | {dtype} | {kind} | {variant} | {t_ms:.3f} | {o:.3f} | {t_ms / o:.2f}× |"
        if many:
            line += " " + ", ".join(f"{t / o_r:.2f}" for (t, _), o_r in per_round) + " |"
        print(line)


def best_torch(torch, what):
    """The fastest PyTorch variant of every (case, dtype, measure): (median ms, its name)."""
    best = {}
    for r in torch["rows"]:
        if what == "rate" and r["group"] == "DeltaR":
            kind, variant = r["variant"].split(": ", 1)
        elif what == "crate" and r["group"] == "CRATE" and " block " in r["case"]:
            kind, variant = r["variant"], variant_name(r, "official block semantics")
        elif what == "model" and r["group"] == "CRATE" and " full model " in r["case"]:
            kind, variant = r["variant"], variant_name(r, "official model semantics")
        else:
            continue
        case = r["case"].replace(" block ", " ")
        key = (case, r["dtype"], kind)
        if key not in best or r["median_ms"] < best[key][0]:
            best[key] = (r["median_ms"], variant)
    return best


def torch_gemm_ms(threads, reps):
    """Median ms of `F.linear(x, w)` (x: B·197 × dim, w: dim × dim) per (m, dim, dtype)."""
    import time
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    out = {}
    for dtype, name in [(torch.float32, "f32"), (torch.float64, "f64")]:
        for dim in [384, 576]:
            for b in [1, 32]:
                m = b * 197
                x = torch.randn(m, dim, dtype=dtype)
                w = torch.randn(dim, dim, dtype=dtype)
                for _ in range(3):
                    F.linear(x, w)
                times = []
                for _ in range(max(reps, 5) * 3):
                    t0 = time.perf_counter()
                    F.linear(x, w)
                    times.append((time.perf_counter() - t0) * 1e3)
                out[(m, dim, name)] = sorted(times)[len(times) // 2]
    return out


def roofline(args):
    torch = run_torch(args.torch_bench, args.threads, args.reps, "roofline")
    torch_gemm = torch_gemm_ms(args.threads, args.reps)
    ours = run_ours(args.threads, "roofline")
    rate = {}
    print(f"\nthreads: {args.threads} (torch.set_num_threads and RAYON_NUM_THREADS); torch {torch['meta'].get('torch')}")
    print("\n| product | dtype | PyTorch (F.linear) ms | GFLOP/s | mcr2 (faer) ms | GFLOP/s |")
    print("|---|---|---:|---:|---:|---:|")
    for (m, dim, dtype), t_ms in sorted(torch_gemm.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        o_ms = ours.get((f"{m}x{dim} @ {dim}x{dim}", dtype, "matmul"))
        if o_ms is None:
            continue
        flops = 2 * m * dim * dim / 1e9
        rate[(m, dim, dtype)] = max(flops / t_ms, flops / o_ms) * 1e3
        print(f"| {m}x{dim} @ {dim}x{dim} | {dtype} | {t_ms:.3f} | {flops / t_ms * 1e3:.0f} | {o_ms:.3f} | "
              f"{flops / o_ms * 1e3:.0f} |")
    best = {}
    for r in torch["rows"]:
        if r["group"] != "CRATE" or " block " not in r["case"]:
            continue
        key = (r["case"], r["dtype"], r["variant"])
        if key not in best or r["median_ms"] < best[key]:
            best[key] = r["median_ms"]
    print("\n| block | dtype | measure | products (GFLOP) | their time at the best product rate, ms | "
          "PyTorch's best, ms | largest reachable PyTorch / ours |")
    print("|---|---|---|---:|---:|---:|---:|")
    for (case, dtype, measure), t_ms in sorted(best.items(), key=lambda kv: (
            [int(x) for x in re.findall(r"\d+", kv[0][0])], kv[0][1], kv[0][2])):
        dim, n, b = (int(re.search(p, case).group(1)) for p in (r"dim=(\d+)", r"N=(\d+)", r"B=(\d+)"))
        peak = rate.get((b * n, dim, dtype))
        if peak is None:
            continue
        flops = b * (6 * n * dim * dim + 4 * n * n * dim) / 1e9
        if measure != "forward":
            flops *= 3  # each product's backward is two products of the same size
        floor_ms = flops / peak * 1e3
        print(f"| {case.replace(' block ', ' ')} | {dtype} | {measure} | {flops:.2f} | {floor_ms:.3f} | "
              f"{t_ms:.3f} | {t_ms / floor_ms:.2f}× |")


if __name__ == "__main__":
    main()
