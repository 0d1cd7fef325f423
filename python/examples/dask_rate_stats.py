"""Exact R, Rc and ΔR of a data set split into partitions, computed on a Dask cluster.

The rates are functions of per-class statistics (n, tr(Π_j), G_j = ZᵀΠ_jZ) that add up
across partitions. Each partition's statistics are computed by a worker process, pickled
back, and merged by a tree reduction; the result equals the one-shot value.

    pip install "dask[distributed]"
    python python/examples/dask_rate_stats.py [--quick]
"""

import argparse
import time

import numpy as np

import mcr2


def partition(seed, rows, dim, classes):
    """One partition of the data set, generated where it is used (as a real partition is
    read where it is stored)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    # each class lives near its own random subspace of dimension 4
    bases = np.random.default_rng(12345).standard_normal((classes, dim, 4))
    coef = rng.standard_normal((rows, 4))
    z = np.einsum("ndp,np->nd", bases[labels], coef) + 0.05 * rng.standard_normal((rows, dim))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return z, labels


def stats_of(seed, rows, dim, classes):
    z, labels = partition(seed, rows, dim, classes)
    stats = mcr2.RateStats(dim, classes)
    stats.push(z, labels)
    return stats


def merge(a, b):
    return a + b


def tree_reduce(items, combine):
    """Pairwise merging, level by level (depth log₂ of the number of partitions)."""
    from dask import delayed

    level = list(items)
    while len(level) > 1:
        nxt = [delayed(combine)(a, b) for a, b in zip(level[::2], level[1::2])]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def run(partitions=8, rows=5000, dim=32, classes=10, workers=2, eps=0.5):
    """Returns (distributed, one-shot) RateReduction values and the cluster's worker count."""
    from dask import delayed
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            n_workers = len(client.scheduler_info()["workers"])
            parts = [delayed(stats_of)(seed, rows, dim, classes) for seed in range(partitions)]
            total = tree_reduce(parts, merge).compute()
    distributed = total.rate_reduction(eps=eps)
    z = np.vstack([partition(s, rows, dim, classes)[0] for s in range(partitions)])
    labels = np.concatenate([partition(s, rows, dim, classes)[1] for s in range(partitions)])
    one_shot = mcr2.rate_reduction(z, labels, n_classes=classes, eps=eps)
    return distributed, one_shot, n_workers, total.n_samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small data set (CI)")
    args = parser.parse_args()
    partitions, rows = (8, 2000) if args.quick else (16, 25000)
    start = time.perf_counter()
    dist, one, workers, n = run(partitions=partitions, rows=rows)
    elapsed = time.perf_counter() - start
    print(f"{n} samples in {partitions} partitions on {workers} worker processes ({elapsed:.1f} s)")
    for name in ["r", "rc", "delta_r"]:
        a, b = getattr(dist, name), getattr(one, name)
        print(f"{name:>8}: distributed {a:.15f}  one-shot {b:.15f}  relative difference {abs(a - b) / abs(b):.1e}")
    worst = max(abs(getattr(dist, k) - getattr(one, k)) / abs(getattr(one, k)) for k in ["r", "rc", "delta_r"])
    assert worst <= 1e-12, worst
    print(f"largest relative difference: {worst:.1e} (≤ 1e-12)")


if __name__ == "__main__":
    main()
