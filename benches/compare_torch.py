#!/usr/bin/env python3
"""Side-by-side timing against a PyTorch CPU baseline.

    python3 benches/compare_torch.py --torch-bench PATH/TO/bench_torch.py [--what rate|crate|model] [--threads 2]

`--what rate` (default): ΔR value and value+gradient. Runs, one after the other on the same
machine, the PyTorch baseline script (all its ΔR variants: primal Cholesky, primal
torch.logdet, dual where n_j < d) and this crate's criterion bench `rate`; for every case and
dtype the table shows the best (lowest median) PyTorch variant, our median and the ratio.

`--what crate`: CRATE block forward and forward+backward (CRATE-T and CRATE-S blocks, batch
1 and 32), the baseline's block rows against the criterion bench `crate_layer`.

`--what model`: the whole CRATE-T classifier on 8 images of 224 × 224, the baseline's
full-model rows against the `crate_model_*` groups of the criterion bench `crate_layer`.

Both sides use the same thread count (torch.set_num_threads, RAYON_NUM_THREADS) and our side
the `parallel` feature. Needs `pip install torch numpy safetensors`.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_torch(script, threads, reps, what):
    out = os.path.join(tempfile.mkdtemp(), "torch.md")
    extra = {
        "rate": ["--only", "mcr2"],
        "crate": ["--only", "crate", "--select", r"block.*\|forward"],
        "model": ["--only", "crate", "--select", r"full model.*\|forward$"],
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
    ap.add_argument("--what", choices=["rate", "crate", "model"], default="rate")
    args = ap.parse_args()
    torch = run_torch(args.torch_bench, args.threads, args.reps, args.what)
    ours = run_ours(args.threads, args.what)
    best = {}
    for r in torch["rows"]:
        if args.what == "rate" and r["group"] == "DeltaR":
            kind, variant = r["variant"].split(": ", 1)
        elif args.what == "crate" and r["group"] == "CRATE" and " block " in r["case"]:
            kind, variant = r["variant"], variant_name(r, "official block semantics")
        elif args.what == "model" and r["group"] == "CRATE" and " full model " in r["case"]:
            kind, variant = r["variant"], variant_name(r, "official model semantics")
        else:
            continue
        case = r["case"].replace(" block ", " ")
        key = (case, r["dtype"], kind)
        if key not in best or r["median_ms"] < best[key][0]:
            best[key] = (r["median_ms"], variant)
    print(f"\nthreads: {args.threads} (torch.set_num_threads and RAYON_NUM_THREADS); torch {torch['meta'].get('torch')}")
    print("\n| case | dtype | measure | best PyTorch variant | PyTorch median ms | mcr2 median ms | PyTorch / mcr2 |")
    print("|---|---|---|---|---:|---:|---:|")
    for (case, dtype, kind), (t_ms, variant) in sorted(best.items(), key=lambda kv: (
            [int(x) for x in re.findall(r"\d+", kv[0][0])], kv[0][1], kv[0][2])):
        o = ours.get((case, dtype, kind))
        if o is None:
            continue
        print(f"| {case} | {dtype} | {kind} | {variant} | {t_ms:.3f} | {o:.3f} | {t_ms / o:.2f}× |")


if __name__ == "__main__":
    main()
