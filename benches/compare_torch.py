#!/usr/bin/env python3
"""Side-by-side timing of ΔR (value, value+gradient) against a PyTorch CPU baseline.

    python3 benches/compare_torch.py --torch-bench PATH/TO/bench_torch.py [--threads 2]

Runs, one after the other on the same machine, the PyTorch baseline script (all its ΔR
variants: primal Cholesky, primal torch.logdet, dual where n_j < d) and this crate's criterion
bench `rate` with the `parallel` feature, both with the same thread count, then prints a
markdown table: for every case and dtype the best (lowest median) PyTorch variant, our median,
and the ratio PyTorch / ours. Needs `pip install torch numpy safetensors`.
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


def run_torch(script, threads, reps):
    out = os.path.join(tempfile.mkdtemp(), "torch.md")
    subprocess.run([sys.executable, script, "--only", "mcr2", "--threads", str(threads), "--reps", str(reps),
                    "--out", out], check=True)
    with open(os.path.splitext(out)[0] + ".json") as fh:
        return json.load(fh)


def run_ours(threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    subprocess.run(["cargo", "bench", "--features", "parallel", "--bench", "rate", "--", "--noplot"],
                   cwd=ROOT, env=env, check=True)
    rows = {}
    for path in glob.glob(os.path.join(ROOT, "target", "criterion", "delta_r_*", "*", "*", "new", "benchmark.json")):
        with open(path) as fh:
            b = json.load(fh)
        with open(os.path.join(os.path.dirname(path), "estimates.json")) as fh:
            est = json.load(fh)
        dtype = b["group_id"].rsplit("_", 1)[1]
        rows[(b["value_str"], dtype, b["function_id"])] = est["median"]["point_estimate"] / 1e6
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch-bench", required=True, help="path to the PyTorch baseline script bench_torch.py")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    torch = run_torch(args.torch_bench, args.threads, args.reps)
    ours = run_ours(args.threads)
    best = {}
    for r in torch["rows"]:
        if r["group"] != "DeltaR":
            continue
        kind, variant = r["variant"].split(": ", 1)
        key = (r["case"], r["dtype"], kind)
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
