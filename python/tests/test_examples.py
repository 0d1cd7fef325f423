"""The Python examples, at small sizes: the Dask tree reduction equals the one-shot
rates to 1e-12 with 2 worker processes; the crate-backed PyTorch loss equals the autograd
one to 1e-10 and trains; the CRATE training example learns in one epoch."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dask_tree_reduction_is_exact():
    pytest.importorskip("dask.distributed")
    example = load("dask_rate_stats")
    dist, one, workers, n = example.run(partitions=8, rows=1500, dim=24, classes=6, workers=2)
    assert workers == 2 and n == 8 * 1500
    for name in ["r", "rc", "delta_r"]:
        a, b = getattr(dist, name), getattr(one, name)
        assert abs(a - b) <= 1e-12 * abs(b), (name, a, b)


def test_torch_loss_matches_autograd_and_trains():
    pytest.importorskip("torch")
    example = load("torch_mcr2_loss")
    value_diff, grad_diff, _, (best, _) = example.check_and_time(32, 300, 4, repeats=1)
    assert value_diff <= 1e-10 and grad_diff <= 1e-10
    assert best.split(",")[0] in example.LOGDETS
    # every PyTorch variant the timing may pick computes the same loss as the crate
    import numpy as np
    import torch

    z = torch.nn.functional.normalize(torch.randn(40, 64, dtype=torch.float64), dim=1)
    labels = np.arange(40) % 3
    ours = float(example.mcr2_loss(z, labels, 3, 0.5))
    for logdet in example.LOGDETS.values():
        for dual in [False, True]:
            theirs = float(example.torch_mcr2_loss(z, torch.from_numpy(labels), 3, 0.5, logdet, dual))
            assert abs(theirs - ours) <= 1e-10 * abs(ours)
    assert example.train_digits(epochs=3) > 0.6


def test_crate_training_example_runs():
    example = load("train_crate_digits")
    _, history, _ = example.run(epochs=1, seed=0, verbose=False)
    # one epoch over the shifted training images already separates most test digits
    assert len(history) == 1 and history[0]["test_accuracy"] > 0.8
