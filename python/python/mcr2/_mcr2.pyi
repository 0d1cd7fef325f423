"""Typed stubs of the compiled module (re-exported by ``mcr2``).

Rows are samples: ``Z`` is n × d. The precision is exactly one of ``eps=`` (ε) or
``eps_sq=`` (ε²); the MCR² reference code's ``eps`` is ε². Hard labels come with an
explicit ``n_classes=``; a soft membership ``membership=`` is an n × k row-stochastic matrix
of the samples' dtype. Arrays are float32 or float64; results keep the input's dtype.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

Float = Union[np.float32, np.float64]
Array = npt.NDArray[Any]
Labels = Union[npt.NDArray[np.integer[Any]], Sequence[int]]
DType = Union[str, type, np.dtype[Any], None]

class Mcr2Error(ValueError):
    """An error reported by the crate (invalid input, a failed factorization, a malformed file)."""

class RateReduction:
    """R, Rc, ΔR = R − Rc and the class terms of Rc (they sum to ``rc``)."""

    r: float
    rc: float
    delta_r: float
    class_terms: List[float]

def coding_rate(z: Array, *, eps: Optional[float] = None, eps_sq: Optional[float] = None) -> float:
    """R(Z) = ½ logdet(I + d/(nε²) ZᵀZ)."""

def coding_rate_with_grad(
    z: Array, *, eps: Optional[float] = None, eps_sq: Optional[float] = None
) -> Tuple[float, Array]:
    """(R(Z), ∂R/∂Z) with ∂R/∂Z = a Z (I + a ZᵀZ)⁻¹, a = d/(nε²)."""

def class_coding_rate(
    z: Array,
    labels: Optional[Labels] = None,
    *,
    n_classes: Optional[int] = None,
    membership: Optional[Array] = None,
    eps: Optional[float] = None,
    eps_sq: Optional[float] = None,
) -> float:
    """Rc(Z | Π) = Σ_j tr(Π_j)/(2n) logdet(I + d/(tr(Π_j)ε²) ZᵀΠ_jZ)."""

def class_coding_rate_with_grad(
    z: Array,
    labels: Optional[Labels] = None,
    *,
    n_classes: Optional[int] = None,
    membership: Optional[Array] = None,
    eps: Optional[float] = None,
    eps_sq: Optional[float] = None,
) -> Tuple[float, Array]:
    """(Rc, ∂Rc/∂Z)."""

def class_coding_rate_grad_membership(
    z: Array,
    labels: Optional[Labels] = None,
    *,
    n_classes: Optional[int] = None,
    membership: Optional[Array] = None,
    eps: Optional[float] = None,
    eps_sq: Optional[float] = None,
) -> Array:
    """∂Rc/∂Π (n × k)."""

def rate_reduction(
    z: Array,
    labels: Optional[Labels] = None,
    *,
    n_classes: Optional[int] = None,
    membership: Optional[Array] = None,
    eps: Optional[float] = None,
    eps_sq: Optional[float] = None,
) -> RateReduction:
    """ΔR(Z, Π) = R(Z) − Rc(Z | Π)."""

def rate_reduction_with_grad(
    z: Array,
    labels: Optional[Labels] = None,
    *,
    n_classes: Optional[int] = None,
    membership: Optional[Array] = None,
    eps: Optional[float] = None,
    eps_sq: Optional[float] = None,
) -> Tuple[RateReduction, Array]:
    """(RateReduction, ∂ΔR/∂Z)."""

class ReferenceLossValue:
    """The terms of the reference loss."""

    loss: float
    r_emp: float
    rc: float

class ReferenceLoss:
    """The MCR² reference code's loss ``−γ₂ R_emp + Rc`` with
    ``R_emp = ½ logdet(I + γ₁ d/(nε²) ZᵀZ)``; ``trace_offset=1e-8`` reproduces the 1e-8 the
    reference code adds to tr(Π_j)."""

    def __init__(
        self,
        *,
        eps: Optional[float] = None,
        eps_sq: Optional[float] = None,
        gam1: float = 1.0,
        gam2: float = 1.0,
        trace_offset: float = 0.0,
    ) -> None: ...
    def evaluate(
        self,
        z: Array,
        labels: Optional[Labels] = None,
        *,
        n_classes: Optional[int] = None,
        membership: Optional[Array] = None,
    ) -> ReferenceLossValue: ...
    def evaluate_with_grad(
        self,
        z: Array,
        labels: Optional[Labels] = None,
        *,
        n_classes: Optional[int] = None,
        membership: Optional[Array] = None,
    ) -> Tuple[ReferenceLossValue, Array]: ...

class RateStats:
    """Statistics (n, tr(Π_j), G_j = ZᵀΠ_jZ) from which R, Rc and ΔR follow exactly, whatever
    the chunking; picklable, merged with ``merge`` or ``+``."""

    n_samples: int
    dim: int
    n_classes: int
    dtype: str
    class_weights: List[float]

    def __init__(self, dim: int, n_classes: int, *, dtype: DType = None) -> None: ...
    def push(self, z: Array, labels: Optional[Labels] = None, *, membership: Optional[Array] = None) -> None: ...
    def retract(self, z: Array, labels: Optional[Labels] = None, *, membership: Optional[Array] = None) -> None: ...
    def merge(self, other: "RateStats") -> None: ...
    def __add__(self, other: "RateStats") -> "RateStats": ...
    def copy(self) -> "RateStats": ...
    def coding_rate(self, *, eps: Optional[float] = None, eps_sq: Optional[float] = None) -> float: ...
    def class_coding_rate(self, *, eps: Optional[float] = None, eps_sq: Optional[float] = None) -> float: ...
    def rate_reduction(self, *, eps: Optional[float] = None, eps_sq: Optional[float] = None) -> RateReduction: ...
    def gram(self, j: int) -> Array: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> "RateStats": ...

class CrateConfig:
    """Sizes of a CRATE classifier."""

    image_size: int
    patch_size: int
    channels: int
    num_classes: int
    dim: int
    depth: int
    heads: int
    dim_head: int

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        *,
        channels: int = 3,
        pooling: str = "cls",
    ) -> None: ...
    @staticmethod
    def tiny() -> "CrateConfig": ...
    @staticmethod
    def small() -> "CrateConfig": ...
    @staticmethod
    def base() -> "CrateConfig": ...
    @staticmethod
    def large() -> "CrateConfig": ...
    def parameter_count(self) -> int: ...
    def tensor_names(self) -> List[str]: ...

class CrateClassifier:
    """A CRATE image classifier; images are batch × channels × height × width."""

    config: CrateConfig
    dtype: str

    def __init__(self, config: CrateConfig, *, seed: int = 0, dtype: DType = None) -> None: ...
    @staticmethod
    def load(
        path: str, config: Optional[CrateConfig] = None, *, prefix: str = "", dtype: DType = None
    ) -> "CrateClassifier": ...
    @staticmethod
    def from_bytes(
        data: bytes, config: Optional[CrateConfig] = None, *, prefix: str = "", dtype: DType = None
    ) -> "CrateClassifier": ...
    def to_bytes(self) -> bytes: ...
    def save(self, path: str) -> None: ...
    def forward(self, images: Array) -> Array: ...
    def features(self, images: Array) -> Array: ...
    def top_k(self, images: Array, k: int) -> List[List[Tuple[int, float]]]: ...
    def inspect(self, images: Array) -> Dict[str, Any]: ...
    def parameter_count(self) -> int: ...

def train_classifier(
    model: CrateClassifier,
    images: Array,
    labels: Labels,
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    min_lr: float = 0.0,
    warmup_steps: int = 0,
    weight_decay: float = 0.01,
    clip_norm: Optional[float] = None,
    objective: str = "cross_entropy",
    label_smoothing: float = 0.0,
    eps: Optional[float] = None,
    eps_sq: Optional[float] = None,
    reference_grouping: bool = True,
    seed: int = 0,
    test_images: Optional[Array] = None,
    test_labels: Optional[Labels] = None,
    callback: Optional[Callable[[Dict[str, Any]], Any]] = None,
    subspace_rank: int = 12,
) -> Tuple[CrateClassifier, List[Dict[str, Any]]]:
    """Trains a copy of ``model`` (AdamW, warm-up then cosine, cross-entropy or the MCR²
    loss ``objective="mcr2"`` with ``eps``/``eps_sq``); returns the trained copy and one
    dict per epoch (``epoch``, ``loss``, ``test_accuracy``: argmax of the logits, or with
    ``"mcr2"`` the nearest class subspace of rank ``subspace_rank`` of the unit class
    tokens, fitted to the training images). ``callback(record)`` runs after each epoch;
    returning ``True`` stops."""

class CrateBlock:
    """One CRATE layer: Z + MSSA(LN(Z)), then ISTA(LN(·))."""

    dim: int
    dtype: str

    def __init__(self, dim: int, heads: int, dim_head: int, *, seed: int = 0, dtype: DType = None) -> None: ...
    @staticmethod
    def from_bytes(
        data: bytes, dim: int, heads: int, dim_head: int, *, prefix: str = "", dtype: DType = None
    ) -> "CrateBlock": ...
    def to_bytes(self, prefix: str = "") -> bytes: ...
    def forward(self, x: Array) -> Array: ...

class ReduNet:
    """ReduNet: layers built by gradient ascent on ΔR of the training features."""

    history: List[RateReduction]
    n_classes: int
    n_layers: int
    dtype: str

    @staticmethod
    def fit(
        x: Array,
        labels: Labels,
        n_classes: int,
        *,
        layers: int = 200,
        eta: float = 0.5,
        eps: Optional[float] = None,
        eps_sq: Optional[float] = None,
        lambda_: float = 200.0,
    ) -> Tuple["ReduNet", Array]: ...
    def transform(self, x: Array) -> Array: ...
    def membership(self, x: Array) -> Array: ...
    def predict(self, x: Array) -> npt.NDArray[np.int64]: ...
    def accuracy(self, x: Array, labels: Labels) -> float: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes, *, dtype: DType = None) -> "ReduNet": ...

class NearestSubspace:
    """Classification by the nearest of per-class subspaces."""

    @staticmethod
    def fit(x: Array, labels: Labels, n_classes: int, rank: int, *, center: bool = False) -> "NearestSubspace": ...
    def predict(self, x: Array) -> npt.NDArray[np.int64]: ...
    def accuracy(self, x: Array, labels: Labels) -> float: ...

class Micl:
    """Classification by minimum incremental coding length."""

    @staticmethod
    def fit(
        x: Array,
        labels: Labels,
        n_classes: int,
        *,
        eps: Optional[float] = None,
        eps_sq: Optional[float] = None,
        unit: str = "bits",
        zero_mean: bool = False,
    ) -> "Micl": ...
    def length_increase(self, x: Array) -> npt.NDArray[np.float64]: ...
    def predict(self, x: Array) -> npt.NDArray[np.int64]: ...
    def accuracy(self, x: Array, labels: Labels) -> float: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> "Micl": ...

def alc(
    x: Array,
    *,
    eps: Optional[float] = None,
    eps_sq: Optional[float] = None,
    unit: str = "bits",
    zero_mean: bool = False,
) -> Dict[str, Any]:
    """Agglomerative lossy compression: ``labels``, ``groups``, ``trace``, ``converged``."""

def mixture_of_subspaces(
    dim: int,
    n_classes: int,
    p: int,
    per_class: int,
    noise: float,
    *,
    orthogonal: bool = False,
    unit_sphere: bool = True,
    seed: int = 0,
    dtype: DType = None,
) -> Tuple[Array, npt.NDArray[np.int64], List[Array]]:
    """(samples, labels, bases) of a mixture of random subspaces."""

def digits(*, normalized: bool = False) -> Tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """The built-in 8 × 8 digits: (1797 × 64 pixels, labels)."""
