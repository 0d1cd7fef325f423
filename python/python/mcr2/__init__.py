"""mcr2: the lossy coding rate and the maximal coding rate reduction (MCR²) with exact
gradients, the white-box networks derived from them (CRATE, ReduNet; CRATE trains with
``train_classifier``) and the classic lossy-coding algorithms (ALC, MICL), from NumPy.

Conventions: rows are samples (Z is n × d). The precision is given as exactly one of
``eps=`` (the distortion ε) or ``eps_sq=`` (ε²). The reference MCR² code's ``eps`` is ε²:
pass it as ``eps_sq=``.

    R(Z)      = ½ logdet(I + d/(nε²) ZᵀZ)
    Rc(Z | Π) = Σ_j tr(Π_j)/(2n) logdet(I + d/(tr(Π_j)ε²) ZᵀΠ_jZ)
    ΔR        = R − Rc

Arrays are float32 or float64 NumPy arrays of any memory layout (read without a copy);
results come back in the input's dtype. The GIL is released while the crate computes, so
calls from several Python threads run in parallel. Errors of the crate are raised as
``Mcr2Error`` (a ``ValueError``) with the crate's message; a wrong array type is a
``TypeError``.
"""

from ._mcr2 import (
    CrateBlock,
    CrateClassifier,
    CrateConfig,
    Mcr2Error,
    Micl,
    NearestSubspace,
    RateReduction,
    RateStats,
    ReduNet,
    ReferenceLoss,
    ReferenceLossValue,
    alc,
    class_coding_rate,
    class_coding_rate_grad_membership,
    class_coding_rate_with_grad,
    coding_rate,
    coding_rate_with_grad,
    digits,
    mixture_of_subspaces,
    rate_reduction,
    rate_reduction_with_grad,
    train_classifier,
)

__all__ = [
    "CrateBlock",
    "CrateClassifier",
    "CrateConfig",
    "Mcr2Error",
    "Micl",
    "NearestSubspace",
    "RateReduction",
    "RateStats",
    "ReduNet",
    "ReferenceLoss",
    "ReferenceLossValue",
    "alc",
    "class_coding_rate",
    "class_coding_rate_grad_membership",
    "class_coding_rate_with_grad",
    "coding_rate",
    "coding_rate_with_grad",
    "digits",
    "mixture_of_subspaces",
    "rate_reduction",
    "rate_reduction_with_grad",
    "train_classifier",
]
