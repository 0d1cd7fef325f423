"""The MCR² loss of mcr2 inside PyTorch: a `torch.autograd.Function` whose forward and backward
call the crate, checked against the same loss written with PyTorch autograd, timed against it,
and used to train a small MLP on the built-in digits (nearest-subspace test accuracy).

    pip install torch
    python python/examples/torch_mcr2_loss.py [--quick]
"""

import argparse
import time

import numpy as np
import torch

import mcr2


class MCR2Loss(torch.autograd.Function):
    """−ΔR(Z, Π) of CPU features Z (n × d, rows are samples) with hard labels; the gradient
    −∂ΔR/∂Z comes from the crate's exact closed form, computed with the value."""

    @staticmethod
    def forward(ctx, z, labels, n_classes, eps):
        rr, grad = mcr2.rate_reduction_with_grad(z.detach().numpy(), labels, n_classes=n_classes, eps=eps)
        ctx.save_for_backward(torch.from_numpy(grad))
        return z.new_tensor(-rr.delta_r)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return -grad_output * grad, None, None, None


def mcr2_loss(z, labels, n_classes, eps):
    """The crate-backed loss (labels: an int64 NumPy array)."""
    return MCR2Loss.apply(z, labels, n_classes, eps)


def _cholesky_logdet(m):
    return 2.0 * torch.log(torch.diagonal(torch.linalg.cholesky(m))).sum()


# the ways of writing logdet in PyTorch; the timing uses the fastest
LOGDETS = {
    "torch.linalg.slogdet": lambda m: torch.linalg.slogdet(m)[1],
    "torch.logdet": torch.logdet,
    "Cholesky": _cholesky_logdet,
}


def _logdet_identity_plus(zj, c, logdet, dual):
    """logdet(I + c ZⱼᵀZⱼ), or with `dual` the equal logdet(I + c ZⱼZⱼᵀ) when Zⱼ has fewer
    rows than columns (the smaller matrix)."""
    m, d = zj.shape
    if dual and m < d:
        return logdet(torch.eye(m, dtype=zj.dtype) + c * zj @ zj.T)
    return logdet(torch.eye(d, dtype=zj.dtype) + c * zj.T @ zj)


def torch_mcr2_loss(z, labels, n_classes, eps, logdet=LOGDETS["torch.linalg.slogdet"], dual=False):
    """The same loss with PyTorch autograd: −(R − Rc), R = ½ logdet(I + d/(nε²) ZᵀZ),
    Rc = Σ_j n_j/(2n) logdet(I + d/(n_jε²) Z_jᵀZ_j)."""
    n, d = z.shape
    r = 0.5 * _logdet_identity_plus(z, d / (n * eps * eps), logdet, dual)
    rc = z.new_zeros(())
    for j in range(n_classes):
        zj = z[labels == j]
        nj = zj.shape[0]
        if nj:
            rc = rc + nj / (2.0 * n) * _logdet_identity_plus(zj, d / (nj * eps * eps), logdet, dual)
    return -(r - rc)


def check_and_time(d, n, k, eps=0.5, repeats=5, dtype=torch.float64, seed=0):
    """Values and gradients of both losses (relative difference) and the median time of one
    forward + backward step: ours, and the fastest of the PyTorch variants (with its name)."""
    g = torch.Generator().manual_seed(seed)
    z0 = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    labels_t = torch.randint(0, k, (n,), generator=g)
    labels = labels_t.numpy()

    def step(loss_fn, lab):
        z = z0.clone().requires_grad_(True)
        loss = loss_fn(z, lab, k, eps)
        loss.backward()
        return loss.detach(), z.grad

    ours, ours_grad = step(mcr2_loss, labels)
    theirs, theirs_grad = step(torch_mcr2_loss, labels_t)
    value_diff = abs(float(ours - theirs)) / abs(float(theirs))
    grad_diff = float((ours_grad - theirs_grad).abs().max() / theirs_grad.abs().max())

    def median_time(loss_fn, lab):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step(loss_fn, lab)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    step(mcr2_loss, labels)  # warm-up
    t_ours = median_time(mcr2_loss, labels)
    best = None
    for name, logdet in LOGDETS.items():
        for dual in [False, True]:
            def variant(z, lab, k_, eps_, logdet=logdet, dual=dual):
                return torch_mcr2_loss(z, lab, k_, eps_, logdet, dual)

            step(variant, labels_t)  # warm-up
            t = median_time(variant, labels_t)
            if best is None or t < best[1]:
                best = (name + (", dual form where n_j < d" if dual else ""), t)
    return value_diff, grad_diff, t_ours, best


def train_digits(epochs, seed=0, eps=0.5, batch=450):
    """An MLP 64 → 256 → 256 → 32 trained with the crate-backed MCR² loss on unit-norm
    features; returns the nearest-subspace test accuracy on the learned features."""
    torch.manual_seed(seed)
    x, y = mcr2.digits(normalized=True)
    test = np.arange(len(y)) % 4 == 3
    xtr, ytr, xte, yte = x[~test], y[~test], x[test], y[test]
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 32),
    ).double()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    xt = torch.from_numpy(xtr)
    for epoch in range(epochs):
        order = rng.permutation(len(ytr))
        for start in range(0, len(order) - batch + 1, batch):
            idx = order[start : start + batch]
            z = torch.nn.functional.normalize(net(xt[idx]), dim=1)
            loss = mcr2_loss(z, ytr[idx], 10, eps)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch % 10 == 9 or epoch == epochs - 1:
            print(f"epoch {epoch + 1:3}: ΔR of the last batch {-loss.item():.4f}")
    with torch.no_grad():
        ftr = torch.nn.functional.normalize(net(xt), dim=1).numpy()
        fte = torch.nn.functional.normalize(net(torch.from_numpy(xte)), dim=1).numpy()
    classifier = mcr2.NearestSubspace.fit(ftr, ytr, 10, 3)
    return classifier.accuracy(fte, yte)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and a short training (CI)")
    args = parser.parse_args()
    sizes = [(128, 1000, 10)] if args.quick else [(128, 1000, 10), (512, 10_000, 10)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for d, n, k in sizes:
        v, g, t_ours, (best, t_theirs) = check_and_time(d, n, k, repeats=5 if args.quick else (21 if n <= 1000 else 7))
        print(
            f"(d, n, k) = ({d}, {n}, {k}), float64: value rel. diff {v:.1e}, gradient rel. diff {g:.1e}; "
            f"one step (median): mcr2 {t_ours * 1e3:.2f} ms, PyTorch autograd with {best} "
            f"{t_theirs * 1e3:.2f} ms: PyTorch time / mcr2 time = {t_theirs / t_ours:.2f}"
        )
        assert v <= 1e-10 and g <= 1e-10, (v, g)
    accuracy = train_digits(epochs=5 if args.quick else 60)
    print(f"nearest-subspace test accuracy: {100 * accuracy:.1f}%")


if __name__ == "__main__":
    main()
