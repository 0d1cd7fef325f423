"""Every bad input raises a Python exception carrying the crate's message."""

import numpy as np
import pytest

import mcr2

Z = np.random.default_rng(0).standard_normal((20, 4))
L = np.arange(20) % 2


def test_precision_must_be_exactly_one():
    for kw in [{}, {"eps": 0.5, "eps_sq": 0.25}]:
        with pytest.raises(ValueError, match="exactly one of eps"):
            mcr2.coding_rate(Z, **kw)
    for bad in [0.0, -1.0, float("nan"), float("inf")]:
        with pytest.raises(mcr2.Mcr2Error):
            mcr2.coding_rate(Z, eps=bad)


def test_wrong_types_and_shapes():
    for bad in [Z.astype(np.int64), Z.astype(np.float16), Z[0], Z[None], Z.tolist(), "Z", None]:
        with pytest.raises(TypeError, match="Z: expected a 2-D float32 or float64"):
            mcr2.coding_rate(bad, eps=0.5)
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.coding_rate(np.zeros((0, 4)), eps=0.5)
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.rate_reduction(Z, L[:10], n_classes=2, eps=0.5)  # labels for other samples
    with pytest.raises(TypeError, match="float64"):
        mcr2.rate_reduction(Z, membership=np.ones((20, 2), dtype=np.float32) / 2, eps=0.5)


def test_non_finite_values():
    for v in [np.nan, np.inf]:
        bad = Z.copy()
        bad[3, 1] = v
        with pytest.raises(mcr2.Mcr2Error, match="non-finite"):
            mcr2.rate_reduction(bad, L, n_classes=2, eps=0.5)


def test_labels_and_memberships():
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.rate_reduction(Z, L + 1, n_classes=2, eps=0.5)  # label 2 of 2 classes
    with pytest.raises(ValueError, match="negative"):
        mcr2.rate_reduction(Z, L - 1, n_classes=2, eps=0.5)
    with pytest.raises(ValueError, match="n_classes"):
        mcr2.rate_reduction(Z, L, eps=0.5)
    with pytest.raises(ValueError, match="exactly one of labels"):
        mcr2.rate_reduction(Z, eps=0.5)
    with pytest.raises(ValueError, match="exactly one of labels"):
        mcr2.rate_reduction(Z, L, n_classes=2, membership=np.ones((20, 2)) / 2, eps=0.5)
    with pytest.raises(TypeError, match="labels"):
        mcr2.rate_reduction(Z, "ab", n_classes=2, eps=0.5)
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.rate_reduction(Z, membership=np.ones((20, 2)), eps=0.5)  # rows sum to 2
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.ReferenceLoss(eps=0.5, gam1=0.0)


def test_models_reject_bad_input():
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.CrateConfig(8, 3, 10, 32, 2, 2, 16)  # 8 is not a multiple of 3
    with pytest.raises(ValueError, match="pooling"):
        mcr2.CrateConfig(8, 2, 10, 32, 2, 2, 16, pooling="max")
    with pytest.raises(ValueError, match="dtype"):
        mcr2.CrateBlock(16, 2, 8, dtype="int8")
    model = mcr2.CrateClassifier(mcr2.CrateConfig(8, 2, 10, 32, 1, 2, 16, channels=1))
    with pytest.raises(TypeError, match="float32"):
        model.forward(np.zeros((1, 1, 8, 8)))
    with pytest.raises(mcr2.Mcr2Error):
        model.forward(np.zeros((1, 3, 8, 8), dtype=np.float32))  # wrong channel count
    bad = np.zeros((1, 1, 8, 8), dtype=np.float32)
    bad[0, 0, 1, 1] = np.nan
    with pytest.raises(mcr2.Mcr2Error):
        model.forward(bad)
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.ReduNet.fit(Z, L, 2, layers=0)
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.NearestSubspace.fit(Z, L, 3, 1)  # class 2 has no sample
    with pytest.raises(ValueError, match="unit"):
        mcr2.Micl.fit(Z, L, 2, eps=0.5, unit="bytes")
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.mixture_of_subspaces(4, 3, 2, 10, 0.0, orthogonal=True)  # 3 × 2 > 4
