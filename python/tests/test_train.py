"""Training a CRATE classifier from Python: it learns the digits, a run is reproducible,
the model passed in is left as it was, the callback sees every epoch and can stop the run,
and bad arguments are errors."""

import numpy as np
import pytest

import mcr2


def digit_split(dtype=np.float32):
    """The examples' split of the built-in digits (image i is a test image when i % 4 == 3),
    as 1-channel 8 × 8 images in [0, 1]."""
    pixels, labels = mcr2.digits()
    images = (pixels / 16.0).reshape(-1, 1, 8, 8).astype(dtype)
    test = np.arange(len(labels)) % 4 == 3
    return images[~test], labels[~test], images[test], labels[test]


def small_model(seed=0, dtype="float32"):
    # 4 × 4 patches of the 8 × 8 images, width 32 in 2 heads of 16, depth 2
    config = mcr2.CrateConfig(8, 4, 10, 32, 2, 2, 16, channels=1)
    return mcr2.CrateClassifier(config, seed=seed, dtype=dtype)


def test_cross_entropy_training_learns_the_digits():
    xtr, ytr, xte, yte = digit_split()
    model = small_model()
    before = model.forward(xte)
    seen = []
    trained, history = mcr2.train_classifier(
        model, xtr, ytr, epochs=6, batch_size=32, lr=2e-3, warmup_steps=20, clip_norm=1.0,
        label_smoothing=0.1, seed=1, test_images=xte, test_labels=yte, callback=seen.append,
    )
    np.testing.assert_array_equal(model.forward(xte), before)  # the model passed in is unchanged
    assert [h["epoch"] for h in history] == list(range(6))
    assert seen == history
    assert history[-1]["loss"] < history[0]["loss"]
    # the reported accuracy is the trained model's
    predicted = trained.forward(xte).argmax(axis=1)
    assert history[-1]["test_accuracy"] == pytest.approx(np.mean(predicted == yte), abs=1e-12)
    assert history[-1]["test_accuracy"] >= 0.85


def test_a_run_is_reproducible_and_can_be_stopped():
    xtr, ytr, _, _ = digit_split()
    xtr, ytr = xtr[:256], ytr[:256]
    runs = [
        mcr2.train_classifier(small_model(seed=4), xtr, ytr, epochs=2, batch_size=64, seed=7)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0][0].forward(xtr), runs[1][0].forward(xtr))
    assert runs[0][1] == runs[1][1] and runs[0][1][0]["test_accuracy"] is None
    other_seed = mcr2.train_classifier(small_model(seed=4), xtr, ytr, epochs=2, batch_size=64, seed=8)
    assert not np.array_equal(other_seed[0].forward(xtr), runs[0][0].forward(xtr))
    _, stopped = mcr2.train_classifier(
        small_model(), xtr, ytr, epochs=5, batch_size=64, callback=lambda record: True
    )
    assert len(stopped) == 1


def test_mcr2_training_raises_the_rate_reduction():
    xtr, ytr, xte, yte = digit_split(np.float64)
    xtr, ytr = xtr[:400], ytr[:400]
    trained, history = mcr2.train_classifier(
        small_model(dtype="float64"), xtr, ytr, epochs=3, batch_size=200, lr=1e-3,
        objective="mcr2", eps_sq=0.1, seed=2, test_images=xte, test_labels=yte, subspace_rank=6,
    )
    # the loss is −ΔR of the batch's unit class tokens
    assert history[-1]["loss"] < history[0]["loss"] < 0
    # unit class tokens
    z = trained.features(xtr[200:])
    assert z.shape == (200, 32) and np.allclose(np.linalg.norm(z, axis=1), 1.0)
    # the test accuracy is the nearest class subspace's of the learned features
    subspaces = mcr2.NearestSubspace.fit(trained.features(xtr), ytr, 10, 6)
    assert history[-1]["test_accuracy"] == pytest.approx(subspaces.accuracy(trained.features(xte), yte), abs=1e-12)
    assert history[-1]["test_accuracy"] > 0.5


def test_bad_arguments_are_errors():
    xtr, ytr, xte, yte = digit_split()
    xtr, ytr = xtr[:64], ytr[:64]
    model = small_model()
    with pytest.raises(ValueError, match="objective"):
        mcr2.train_classifier(model, xtr, ytr, epochs=1, objective="hinge")
    with pytest.raises(ValueError, match="eps"):
        mcr2.train_classifier(model, xtr, ytr, epochs=1, eps=0.5)
    with pytest.raises(ValueError, match="eps"):
        mcr2.train_classifier(model, xtr, ytr, epochs=1, objective="mcr2")
    with pytest.raises(ValueError, match="label_smoothing"):
        mcr2.train_classifier(model, xtr, ytr, epochs=1, objective="mcr2", eps=0.5, label_smoothing=0.1)
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.train_classifier(model, xtr[:0], ytr[:0], epochs=1)
    with pytest.raises(ValueError, match="warmup_steps"):
        mcr2.train_classifier(model, xtr, ytr, epochs=1, batch_size=32, warmup_steps=3)
    with pytest.raises(ValueError, match="test_labels"):
        mcr2.train_classifier(model, xtr, ytr, epochs=1, test_images=xte)
    with pytest.raises(mcr2.Mcr2Error, match="epochs"):
        mcr2.train_classifier(model, xtr, ytr, epochs=0)
    with pytest.raises(mcr2.Mcr2Error, match="label_smoothing"):
        mcr2.train_classifier(model, xtr, ytr, epochs=1, label_smoothing=1.0)
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.train_classifier(model, xtr, ytr[:10], epochs=1)
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.train_classifier(model, xtr, np.full(64, 10), epochs=1)
    with pytest.raises(TypeError):
        mcr2.train_classifier(model, xtr.astype(np.float64), ytr, epochs=1)
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.train_classifier(model, np.full_like(xtr, np.nan), ytr, epochs=1)

    def failing(record):
        raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        mcr2.train_classifier(model, xtr, ytr, epochs=2, callback=failing)
