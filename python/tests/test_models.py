"""CRATE, ReduNet, MICL, ALC, the nearest-subspace classifier, the generator and the digits."""

import numpy as np
import pytest

import mcr2


def tiny_config():
    return mcr2.CrateConfig(8, 2, 10, 32, 2, 2, 16, channels=1)


def test_crate_classifier_roundtrip_and_inspect(tmp_path):
    model = mcr2.CrateClassifier(tiny_config(), seed=3)
    assert model.dtype == "float32" and model.config.dim == 32
    assert model.parameter_count() == tiny_config().parameter_count()
    x, _ = mcr2.digits(normalized=True)
    images = np.ascontiguousarray(x[:5].reshape(5, 1, 8, 8), dtype=np.float32)
    logits = model.forward(images)
    assert logits.shape == (5, 10) and logits.dtype == np.float32
    path = tmp_path / "model.safetensors"
    model.save(str(path))
    back = mcr2.CrateClassifier.load(str(path))
    np.testing.assert_array_equal(back.forward(images), logits)
    top = model.top_k(images, 3)
    assert [c for c, _ in top[0]] == list(np.argsort(-logits[0])[:3])
    ins = model.inspect(images)
    np.testing.assert_allclose(ins["logits"], logits, rtol=1e-6)
    assert len(ins["layers"]) == 2
    att = ins["layers"][0]["attention"]
    assert att.shape == (5, 2, 17, 17)
    np.testing.assert_allclose(att.sum(axis=-1), 1.0, rtol=1e-5)
    assert 0.0 <= ins["layers"][1]["sparsity"] <= 1.0 and ins["layers"][0]["compression"] > 0
    # float64 weights read from the same file
    m64 = mcr2.CrateClassifier.load(str(path), dtype="float64")
    np.testing.assert_allclose(m64.forward(images.astype(np.float64)), logits, rtol=1e-4, atol=1e-5)
    # the reference names
    names = tiny_config().tensor_names()
    assert "cls_token" in names and "transformer.layers.1.1.fn.weight" in names


def test_corrupted_weight_files_raise(tmp_path):
    model = mcr2.CrateClassifier(tiny_config(), seed=3)
    data = model.to_bytes()
    for bad in [b"", data[:20], data[: len(data) // 2], b"\xff" * 64]:
        with pytest.raises(mcr2.Mcr2Error):
            mcr2.CrateClassifier.from_bytes(bad)
    # a checkpoint read with a configuration it does not match names the tensor
    other = mcr2.CrateConfig(8, 2, 10, 32, 3, 2, 16, channels=1)
    with pytest.raises(mcr2.Mcr2Error, match="transformer.layers.2"):
        mcr2.CrateClassifier.from_bytes(data, other)
    with pytest.raises(OSError):
        mcr2.CrateClassifier.load(str(tmp_path / "missing.safetensors"))
    with pytest.raises(mcr2.Mcr2Error):
        mcr2.CrateBlock.from_bytes(b"not a file", 16, 2, 8)


def test_crate_block():
    block = mcr2.CrateBlock(16, 2, 8, seed=1, dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 10, 16))
    y = block.forward(x)
    assert y.shape == (3, 10, 16)
    np.testing.assert_allclose(block.forward(x[1]), y[1], rtol=1e-12, atol=1e-14)
    again = mcr2.CrateBlock.from_bytes(block.to_bytes("layer."), 16, 2, 8, prefix="layer.", dtype="float64")
    np.testing.assert_array_equal(again.forward(x), y)
    # ISTA ends in a ReLU: the output is non-negative
    assert (y >= 0).all()
    with pytest.raises(mcr2.Mcr2Error):
        block.forward(np.ones((10, 15)))


def test_redunet_and_subspace_classifiers():
    x, y, bases = mcr2.mixture_of_subspaces(12, 3, 2, 60, 0.05, seed=4)
    assert x.shape == (180, 12) and len(bases) == 3 and bases[0].shape == (12, 2)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-12)
    test_x, test_y, _ = mcr2.mixture_of_subspaces(12, 3, 2, 20, 0.05, seed=4)
    net, features = mcr2.ReduNet.fit(x, y, 3, layers=10, eps_sq=0.1)
    assert features.shape == x.shape and net.n_layers == 10
    history = net.history
    assert history[-1].delta_r > history[0].delta_r  # each layer ascends ΔR
    assert net.accuracy(x, y) > 0.9
    np.testing.assert_array_equal(net.predict(x), mcr2.ReduNet.from_bytes(net.to_bytes()).predict(x))
    assert net.membership(x[:4]).shape == (4, 3)
    ns = mcr2.NearestSubspace.fit(x, y, 3, 2)
    assert ns.accuracy(x, y) > 0.95
    assert (ns.predict(x) == y).mean() == ns.accuracy(x, y)
    micl = mcr2.Micl.fit(x, y, 3, eps=0.1)
    assert micl.accuracy(x, y) > 0.9
    assert micl.length_increase(x[:5]).shape == (5, 3)
    np.testing.assert_array_equal(mcr2.Micl.from_bytes(micl.to_bytes()).predict(x), micl.predict(x))
    del test_x, test_y


def test_alc_segments_two_lines():
    rng = np.random.default_rng(5)
    t = rng.standard_normal(30)
    a = np.stack([t[:15], 0.01 * rng.standard_normal(15)], axis=1) + [5.0, 0.0]
    b = np.stack([0.01 * rng.standard_normal(15), t[15:]], axis=1) + [0.0, 5.0]
    seg = mcr2.alc(np.vstack([a, b]), eps=0.1)
    assert seg["converged"] and seg["groups"] == 2
    assert len(set(seg["labels"][:15])) == 1 and len(set(seg["labels"][15:])) == 1
    assert all(x > y for x, y in zip(seg["trace"], seg["trace"][1:]))


def test_digits():
    x, y = mcr2.digits()
    assert x.shape == (1797, 64) and x.dtype == np.float64 and y.dtype == np.int64
    assert x.min() == 0 and x.max() == 16 and sorted(set(y)) == list(range(10))
    xn, _ = mcr2.digits(normalized=True)
    np.testing.assert_allclose(np.linalg.norm(xn, axis=1), 1.0, rtol=1e-12)
