"""The GIL is released during computation: four Python threads at once give the serial
results."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import mcr2


def work(seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((2000, 64))
    labels = rng.integers(0, 5, 2000)
    rr, g = mcr2.rate_reduction_with_grad(z, labels, n_classes=5, eps=0.5)
    stats = mcr2.RateStats(64, 5)
    stats.push(z, labels)
    return rr.delta_r, g, stats.rate_reduction(eps=0.5).delta_r


def test_four_threads_match_serial():
    seeds = list(range(8))
    serial = [work(s) for s in seeds]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(work, seeds))
    for (a, ga, sa), (b, gb, sb) in zip(serial, threaded):
        assert a == b and sa == sb
        np.testing.assert_array_equal(ga, gb)


def test_shared_model_from_threads():
    model = mcr2.CrateClassifier(mcr2.CrateConfig(16, 4, 5, 32, 2, 2, 16), seed=0)
    images = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    want = model.forward(images)
    with ThreadPoolExecutor(max_workers=4) as pool:
        for got in pool.map(lambda _: model.forward(images), range(8)):
            np.testing.assert_array_equal(got, want)


def test_other_threads_run_during_a_call():
    """A pure-Python thread keeps counting while the crate computes (it could not if the
    call held the GIL)."""
    import threading

    z = np.random.default_rng(2).standard_normal((20000, 256))
    labels = np.arange(20000) % 10
    counts, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            counts[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        before = counts[0]
        for _ in range(3):
            mcr2.rate_reduction_with_grad(z, labels, n_classes=10, eps=0.5)
        during = counts[0] - before
    finally:
        stop.set()
        t.join()
    assert during > 1000
