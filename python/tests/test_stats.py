"""RateStats: any chunking gives the one-shot rates; pickling and bytes are exact; bad bytes
raise."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mcr2


def data(seed=0, n=300, d=10, k=4):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 299), max_size=6))
def test_any_chunking_equals_one_shot(cuts):
    z, labels = data()
    bounds = [0, *sorted(set(cuts)), 300]
    stats = mcr2.RateStats(10, 4)
    for a, b in zip(bounds, bounds[1:]):
        stats.push(z[a:b], labels[a:b])
    want = mcr2.rate_reduction(z, labels, n_classes=4, eps=0.5)
    got = stats.rate_reduction(eps=0.5)
    assert got.delta_r == pytest.approx(want.delta_r, rel=1e-12)
    assert got.r == pytest.approx(want.r, rel=1e-12)
    assert stats.n_samples == 300
    assert stats.class_weights == [float(np.sum(labels == j)) for j in range(4)]


def test_merge_pickle_and_bytes_are_exact():
    z, labels = data(1)
    a, b = mcr2.RateStats(10, 4), mcr2.RateStats(10, 4)
    a.push(z[:120], labels[:120])
    b.push(z[120:], labels[120:])
    total = a + b
    back = pickle.loads(pickle.dumps(total))
    assert back.rate_reduction(eps_sq=0.2).delta_r == total.rate_reduction(eps_sq=0.2).delta_r
    np.testing.assert_array_equal(back.gram(2), total.gram(2))
    assert mcr2.RateStats.from_bytes(total.to_bytes()).n_samples == 300
    a.merge(b)
    assert a.rate_reduction(eps=1.0).delta_r == total.rate_reduction(eps=1.0).delta_r
    # retracting a chunk restores the rest
    a.retract(z[120:], labels[120:])
    only = mcr2.rate_reduction(z[:120], labels[:120], n_classes=4, eps=1.0)
    assert a.rate_reduction(eps=1.0).delta_r == pytest.approx(only.delta_r, rel=1e-9)


def test_soft_membership_float32_and_widening():
    z, labels = data(2, n=50)
    pi = np.random.default_rng(3).dirichlet(np.ones(4), size=50)
    s = mcr2.RateStats(10, 4)
    s.push(z, membership=pi)
    assert s.class_coding_rate(eps=0.5) == pytest.approx(
        mcr2.class_coding_rate(z, membership=pi, eps=0.5), rel=1e-12
    )
    # float32 chunks into float64 statistics are widened exactly
    w = mcr2.RateStats(10, 4)
    w.push(z.astype(np.float32), labels)
    exact = mcr2.rate_reduction(z.astype(np.float32).astype(np.float64), labels, n_classes=4, eps=0.5)
    assert w.rate_reduction(eps=0.5).delta_r == pytest.approx(exact.delta_r, rel=1e-12)
    s32 = mcr2.RateStats(10, 4, dtype="float32")
    s32.push(z.astype(np.float32), labels)
    assert s32.dtype == "float32"
    assert pickle.loads(pickle.dumps(s32)).dtype == "float32"
    with pytest.raises(TypeError):
        s32.merge(w)
    with pytest.raises(TypeError, match="float32"):
        s32.push(z, labels)


def test_bad_statistics_raise():
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.RateStats(0, 3)
    s = mcr2.RateStats(4, 2)
    with pytest.raises(mcr2.Mcr2Error):
        s.rate_reduction(eps=0.5)  # no sample yet
    with pytest.raises(mcr2.Mcr2Error):
        s.push(np.ones((3, 5)), [0, 1, 0])  # wrong dim
    with pytest.raises(mcr2.Mcr2Error):
        s.push(np.ones((3, 4)), [0, 2, 0])  # label out of range
    with pytest.raises(mcr2.Mcr2Error):
        s.merge(mcr2.RateStats(4, 3))
    with pytest.raises(ValueError):
        s.merge(s)
    with pytest.raises(IndexError):
        s.gram(2)
    good = s.to_bytes()
    for bad in [b"", b"\x08", good[:-3], b"\x05" + good[1:], good[:1] + b"\xff" * (len(good) - 1)]:
        with pytest.raises(ValueError):
            mcr2.RateStats.from_bytes(bad)
