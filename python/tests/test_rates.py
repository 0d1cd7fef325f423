"""Values against NumPy closed forms, gradients against central differences, invariances
(hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mcr2
from conftest import class_rate, logdet_rate, one_hot


def data(seed, n=40, d=6, k=3):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    labels = rng.integers(0, k, n)
    return z, labels


def test_closed_forms():
    z, labels = data(0)
    eps_sq = 0.3
    pi = one_hot(labels, 3)
    assert mcr2.coding_rate(z, eps_sq=eps_sq) == pytest.approx(logdet_rate(z, eps_sq), rel=1e-12)
    assert mcr2.class_coding_rate(z, labels, n_classes=3, eps_sq=eps_sq) == pytest.approx(
        class_rate(z, pi, eps_sq), rel=1e-12
    )
    # eps and eps_sq name the same precision
    assert mcr2.coding_rate(z, eps=np.sqrt(eps_sq)) == pytest.approx(mcr2.coding_rate(z, eps_sq=eps_sq), rel=1e-14)
    rr = mcr2.rate_reduction(z, labels, n_classes=3, eps_sq=eps_sq)
    assert rr.delta_r == pytest.approx(rr.r - rr.rc, abs=1e-14)
    assert sum(rr.class_terms) == pytest.approx(rr.rc, rel=1e-13)
    # an empty class contributes 0
    rr4 = mcr2.rate_reduction(z, labels, n_classes=4, eps_sq=eps_sq)
    assert rr4.class_terms[3] == 0.0 and rr4.rc == pytest.approx(rr.rc, rel=1e-14)


def central(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def test_gradients_against_central_differences():
    z, labels = data(1, n=12, d=4)
    soft = np.random.default_rng(2).dirichlet(np.ones(3), size=12)
    kw = dict(eps=0.5)
    _, g = mcr2.coding_rate_with_grad(z, **kw)
    np.testing.assert_allclose(g, central(lambda x: mcr2.coding_rate(x, **kw), z), rtol=1e-6, atol=1e-8)
    _, g = mcr2.class_coding_rate_with_grad(z, membership=soft, **kw)
    fd = central(lambda x: mcr2.class_coding_rate(x, membership=soft, **kw), z)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    _, g = mcr2.rate_reduction_with_grad(z, labels, n_classes=3, **kw)
    fd = central(lambda x: mcr2.rate_reduction(x, labels, n_classes=3, **kw).delta_r, z)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    # ∂Rc/∂Π: Π perturbed entry by entry (rows need not sum to 1 for the derivative, but the
    # crate checks they do, so differentiate along a direction that keeps the row sums)
    gp = mcr2.class_coding_rate_grad_membership(z, membership=soft, **kw)
    assert gp.shape == (12, 3)
    h = 1e-6
    for i in range(12):
        e = np.zeros_like(soft)
        e[i, 0], e[i, 1] = h, -h
        fd = (
            mcr2.class_coding_rate(z, membership=soft + e, **kw)
            - mcr2.class_coding_rate(z, membership=soft - e, **kw)
        ) / (2 * h)
        assert gp[i, 0] - gp[i, 1] == pytest.approx(fd, rel=1e-6, abs=1e-9)
    loss = mcr2.ReferenceLoss(eps_sq=0.25, gam1=2.0, gam2=0.5)
    v, g = loss.evaluate_with_grad(z, labels, n_classes=3)
    fd = central(lambda x: loss.evaluate(x, labels, n_classes=3).loss, z)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    assert v.loss == pytest.approx(v.rc - 0.5 * v.r_emp, rel=1e-13)


def test_hard_labels_equal_one_hot_membership():
    z, labels = data(3)
    hard = mcr2.rate_reduction(z, labels, n_classes=3, eps=0.7)
    soft = mcr2.rate_reduction(z, membership=one_hot(labels, 3), eps=0.7)
    assert soft.delta_r == pytest.approx(hard.delta_r, rel=1e-13)
    assert list(labels) == [int(v) for v in labels]
    assert mcr2.rate_reduction(z, list(map(int, labels)), n_classes=3, eps=0.7).delta_r == hard.delta_r


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 30),
    d=st.integers(1, 8),
    k=st.integers(1, 4),
    eps=st.floats(0.05, 2.0),
)
def test_invariances(seed, n, d, k, eps):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    labels = rng.integers(0, k, n)
    rr = mcr2.rate_reduction(z, labels, n_classes=k, eps=eps)
    # R ≥ Rc ≥ 0 (concavity of logdet), ΔR ≥ 0
    assert rr.r >= rr.rc - 1e-10 and rr.rc >= -1e-12
    # an orthogonal map of the features changes nothing
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    rq = mcr2.rate_reduction(z @ q, labels, n_classes=k, eps=eps)
    assert rq.delta_r == pytest.approx(rr.delta_r, rel=1e-9, abs=1e-10)
    # nor does reordering the samples with their labels
    p = rng.permutation(n)
    rp = mcr2.rate_reduction(z[p], labels[p], n_classes=k, eps=eps)
    assert rp.delta_r == pytest.approx(rr.delta_r, rel=1e-10, abs=1e-11)
    # closed form
    assert rr.r == pytest.approx(logdet_rate(z, eps * eps), rel=1e-10, abs=1e-12)
