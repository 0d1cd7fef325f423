"""The bindings against the oracle's vectors (PyTorch float64, cross-checked against the
reference code): values to 1e-12 relative, gradients to 1e-10."""

import numpy as np
import pytest

import mcr2
from conftest import DATA, read_safetensors, write_safetensors


def close(got, want, rtol):
    scale = max(1.0, float(np.max(np.abs(want))))
    assert np.max(np.abs(np.asarray(got) - want)) <= rtol * scale, (got, want)


def cases(manifest):
    return manifest["mcr2"]


def test_every_mcr2_case(manifest):
    assert len(cases(manifest)) == 9
    for case in cases(manifest):
        t = read_safetensors(DATA / case["file"])
        z = np.ascontiguousarray(t["Z"].T)  # the files store columns as samples
        labels, k, eps = t["labels"], case["k"], case["eps"]
        want = case["values"]
        paper = want["paper"]
        rr = mcr2.rate_reduction(z, labels, n_classes=k, eps=eps)
        close(rr.r, want["R"], 1e-12)
        close(rr.rc, paper["Rc_hard"], 1e-12)
        close(rr.delta_r, paper["DeltaR_hard"], 1e-12)
        soft = np.ascontiguousarray(t["Pi_soft"].T)
        rs = mcr2.rate_reduction(z, membership=soft, eps=eps)
        close(rs.rc, paper["Rc_soft"], 1e-12)
        close(rs.delta_r, paper["DeltaR_soft"], 1e-12)
        # gradients, in the files' (d, n) layout
        _, g = mcr2.coding_rate_with_grad(z, eps=eps)
        close(g.T, t["grad_R"], 1e-10)
        _, g = mcr2.rate_reduction_with_grad(z, labels, n_classes=k, eps=eps)
        close(g.T, t["paper.grad_DeltaR_hard"], 1e-10)
        _, g = mcr2.class_coding_rate_with_grad(z, membership=soft, eps=eps)
        close(g.T, t["paper.grad_Rc_soft"], 1e-10)
        # the reference code's convention: trace offset 1e-8, ε² passed as its `eps`
        loss = mcr2.ReferenceLoss(eps_sq=case["eps_sq"], trace_offset=1e-8)
        v, g = loss.evaluate_with_grad(z, labels, n_classes=k)
        close(v.rc, want["code"]["Rc_hard"], 1e-12)
        close(v.loss, -want["code"]["DeltaR_hard"], 1e-12)
        close(g.T, -t["code.grad_DeltaR_hard"], 1e-10)


def test_fortran_order_and_float32_agree(manifest):
    case = cases(manifest)[4]
    t = read_safetensors(DATA / case["file"])
    z = np.ascontiguousarray(t["Z"].T)
    k, eps = case["k"], case["eps"]
    base = mcr2.rate_reduction(z, t["labels"], n_classes=k, eps=eps)
    f = mcr2.rate_reduction(np.asfortranarray(z), t["labels"], n_classes=k, eps=eps)
    assert f.delta_r == base.delta_r
    # a strided view (every row, no copy) gives the same value as its copy
    wide = np.zeros((z.shape[0], 2 * z.shape[1]))
    wide[:, ::2] = z
    assert mcr2.coding_rate(wide[:, ::2], eps=eps) == pytest.approx(mcr2.coding_rate(z, eps=eps), rel=1e-14)
    single = mcr2.rate_reduction(z.astype(np.float32), t["labels"], n_classes=k, eps=eps)
    assert single.delta_r == pytest.approx(base.delta_r, rel=1e-4)
    _, g32 = mcr2.rate_reduction_with_grad(z.astype(np.float32), t["labels"], n_classes=k, eps=eps)
    assert g32.dtype == np.float32


def test_crate_model_logits(manifest):
    case = manifest["crate_model"][0]
    t = read_safetensors(DATA / case["file"])
    params = {name[len("param.") :]: v for name, v in t.items() if name.startswith("param.")}
    config = mcr2.CrateConfig(
        case["image_size"], case["patch_size"], case["num_classes"], case["dim"], case["depth"],
        case["heads"], case["dim_head"],
    )
    model = mcr2.CrateClassifier.from_bytes(write_safetensors(params), config, dtype="float64")
    logits = model.forward(np.ascontiguousarray(t["img"]))
    close(logits, np.array(case["logits"]), 1e-12)
    # the same weights under a prefix, as in a full training checkpoint
    prefixed = {"model." + k: v for k, v in params.items()}
    again = mcr2.CrateClassifier.from_bytes(write_safetensors(prefixed), config, prefix="model.", dtype="float64")
    close(again.forward(t["img"].copy()), logits, 0.0)
    # float32: within single precision
    m32 = mcr2.CrateClassifier.from_bytes(write_safetensors(params), config, dtype="float32")
    close(m32.forward(t["img"].astype(np.float32)), logits, 1e-5)
