"""Wasserstein distances and free-support barycenters, on top of POT.

Every call into POT (``ot``, [Flamary2021]_) in pqlib lives in this module. Tensors come in, are handed to
POT as float64 numpy arrays (one private hop, :func:`_np64`), and results go back to torch
in the input's dtype and device.

.. math::

    W_2^2(\\mu, \\nu) = \\min_{P \\in \\Pi(a, b)} \\sum_{i,j} P_{ij} \\lVert x_i - y_j \\rVert^2,
    \\qquad \\mu = \\sum_i a_i \\delta_{x_i}, \\quad \\nu = \\sum_j b_j \\delta_{y_j}.

References
----------
.. [Flamary2021] R. Flamary et al., "POT: Python Optimal Transport", JMLR 22(78), 2021.
.. [Cuturi2014] M. Cuturi and A. Doucet, "Fast computation of Wasserstein barycenters", ICML 2014.
.. [Liu2023] H. Liu et al., "Dataset Distillation via the Wasserstein Metric", arXiv:2311.18531.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import ot
import torch

from .checks import (
    Int,
    InvalidData,
    InvalidParameter,
    OneOf,
    Optional,
    Real,
    check_matrices,
    check_matrix,
    checked,
)
from .quantize.seeding import kmeans_plus_plus

__all__ = ["wasserstein2", "barycenter", "Barycenter"]

_MASS_ATOL = 1e-6
_EMD_MAX_ITER = 10_000_000


@dataclass(frozen=True)
class Barycenter:
    """A K-point free-support Wasserstein barycenter of an empirical measure.

    Unpacks as ``points, weights = barycenter(x, k)``.

    Attributes
    ----------
    points : tensor of shape (K, d), in the data's dtype and device
    weights : tensor of shape (K,), non-negative, summing to 1 (uniform 1/K when not learned)
    history : tuple of float
        W2² between the data and the barycenter after each alternation.
    """

    points: torch.Tensor
    weights: torch.Tensor
    history: tuple[float, ...]

    def __iter__(self):
        return iter((self.points, self.weights))


@checked(method=OneOf("exact", "sinkhorn"), reg=Real(0, open_low=True) | Optional,
         max_iter=Int(1) | Optional)
def wasserstein2(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None,
                 b: torch.Tensor | None = None, *, squared: bool = False,
                 method: str = "exact", reg: float | None = None,
                 max_iter: int | None = None) -> float:
    """Quadratic Wasserstein distance between two weighted point clouds.

    .. math::

        W_2(\\mu, \\nu) = \\Big(\\min_{P \\in \\Pi(a, b)} \\sum_{ij} P_{ij}
        \\lVert x_i - y_j \\rVert^2\\Big)^{1/2}

    Parameters
    ----------
    x : tensor of shape (n, d)
    y : tensor of shape (m, d)
    a : tensor of shape (n,), optional
        Masses of the rows of x: non-negative, summing to 1 (within 1e-6). Default uniform.
    b : tensor of shape (m,), optional
        Masses of the rows of y. Default uniform.
    squared : bool, default=False
        Return W2² instead of W2.
    method : {"exact", "sinkhorn"}, default="exact"
        ``"exact"``: network simplex (``ot.emd2``). ``"sinkhorn"``: entropic OT in the log
        domain (``ot.sinkhorn2``); the value returned is the transport cost ⟨P, M⟩ of the
        entropic plan (an upper bound of the exact W2²), without the entropy term.
    reg : float, optional
        Entropic regularisation for ``"sinkhorn"``, in units of the squared distance.
        Default: 0.01 × the mean squared distance between x and y.
    max_iter : int, optional
        Iteration cap of the solver; default 10⁷ (exact) or 1000 (sinkhorn).

    Returns
    -------
    float
        W2 (or W2² with ``squared=True``), computed in float64. A Python float rather than a
        tensor: it is a summary, and POT's exact solver gives no gradient worth keeping.

    Notes
    -----
    The exact solver builds the dense (n, m) cost matrix: memory 8·n·m bytes, time roughly
    O((n + m)·n·m) in the worst case, fast in practice when m is small (codebooks).

    Examples
    --------
    >>> x = torch.tensor([[-1.0], [1.0]])
    >>> wasserstein2(x, torch.zeros(1, 1), squared=True)
    1.0
    """
    x, y = check_matrices(x, y, ("x", "y"))
    a_np, b_np = _check_masses(a, x.shape[0], "a"), _check_masses(b, y.shape[0], "b")
    if method == "exact" and reg is not None:
        raise InvalidParameter(f"reg={reg!r} is only used with method='sinkhorn'")
    cost = ot.dist(_np64(x), _np64(y), metric="sqeuclidean")
    if method == "exact":
        value = float(ot.emd2(a_np, b_np, cost, numItermax=max_iter or _EMD_MAX_ITER))
    else:
        reg = 0.01 * float(cost.mean()) if reg is None else reg
        if reg == 0.0:  # every point of x equals every point of y
            return 0.0
        value = float(ot.sinkhorn2(a_np, b_np, cost, reg, method="sinkhorn_log",
                                   numItermax=max_iter or 1000))
    value = max(value, 0.0)
    return value if squared else math.sqrt(value)


@checked(k=Int(1), iters=Int(1), weight_steps=Int(1), seed=Int(0))
def barycenter(x: torch.Tensor, k: int, *, a: torch.Tensor | None = None,
               learn_weights: bool = True, iters: int = 10, weight_steps: int = 5,
               seed: int = 0) -> Barycenter:
    """Free-support Wasserstein barycenter of one empirical measure with K support points.

    Minimises W2²(Σ_i a_i δ_{x_i}, Σ_j b_j δ_{y_j}) over the support y (and, with
    ``learn_weights``, the weights b on the simplex) by alternating [Liu2023]_:

    1. positions: one fixed-point step y_j ← Σ_i P_ij x_i / b_j with the optimal plan P
       (``ot.lp.free_support_barycenter`` with ``b=weights``, [Cuturi2014]_);
    2. weights: ``weight_steps`` exponentiated-gradient (mirror-descent) steps on the simplex,
       b ← b·exp(−η v) / Z, where v is the centred dual potential of the exact OT problem for
       the marginal b (a subgradient of W2² in b). η starts at 1 / (max v − min v) and is
       halved until the step decreases W2² (and grown by 1.5 after a success, carried over
       from one phase to the next), so the weight phase never increases W2².

    Parameters
    ----------
    x : tensor of shape (n, d)
        The data (support of the empirical measure).
    k : int
        Number of support points, ``1 <= k <= n``.
    a : tensor of shape (n,), optional
        Masses of the rows of x; default uniform 1/n.
    learn_weights : bool, default=True
        Learn the weights; ``False`` keeps them uniform (1/k): the equal-mass barycenter.
    iters : int, default=10
        Number of alternations (position step, then weight phase).
    weight_steps : int, default=5
        Mirror-descent steps per weight phase.
    seed : int, default=0
        Seeds the initial support (greedy k-means++ of x).

    Returns
    -------
    Barycenter
        Unpacks as ``points, weights``; ``history`` holds W2² after each alternation.

    Notes
    -----
    For a fixed support, the optimal weights are the Voronoi masses of the support
    (the DDOQ identity); the mirror steps approach them without assuming it. The last weight
    phase starts from the better of the current and the uniform weights, so the returned
    weights never give a larger W2 than uniform weights on the returned support. Each
    alternation solves about ``2 + weight_steps`` exact OT problems of size n × k.

    Examples
    --------
    >>> x = torch.tensor([[0.0], [0.1], [0.2], [5.0]])
    >>> points, weights = barycenter(x, 2, iters=5)
    >>> sorted(round(float(w), 2) for w in weights)
    [0.25, 0.75]
    """
    x = check_matrix(x)
    if k > x.shape[0]:
        raise InvalidParameter(f"k={k} should be <= n_samples={x.shape[0]}")
    a_np = _check_masses(a, x.shape[0], "a")
    x_np = _np64(x)
    y_np = _np64(kmeans_plus_plus(x, k, torch.Generator().manual_seed(seed)))
    uniform = b_np = np.full(k, 1.0 / k)
    history, eta = [], None
    for t in range(iters):
        y_np = ot.lp.free_support_barycenter([x_np], [a_np], y_np, b=b_np, numItermax=1,
                                             stopThr=0.0)
        cost = ot.dist(x_np, y_np, metric="sqeuclidean")
        if learn_weights:
            if (t == iters - 1
                    and _emd_dual(a_np, uniform, cost)[0] < _emd_dual(a_np, b_np, cost)[0]):
                b_np = uniform
            b_np, value, eta = _mirror_weights(a_np, b_np, cost, weight_steps, eta)
        else:
            value = float(ot.emd2(a_np, b_np, cost, numItermax=_EMD_MAX_ITER))
        history.append(max(value, 0.0))
    return Barycenter(points=_like(y_np, x), weights=_like(b_np, x), history=tuple(history))


# ------------------------------------------------------------------------------ helpers


def _np64(t: torch.Tensor) -> np.ndarray:
    """The one torch → POT hop: a float64 numpy array on the CPU."""
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def _like(arr: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """The POT → torch hop: a tensor in ``like``'s dtype and device."""
    return torch.as_tensor(np.ascontiguousarray(arr)).to(dtype=like.dtype, device=like.device)


def _check_masses(w, n: int, name: str) -> np.ndarray:
    """Masses as float64 numpy (uniform if None), validated and renormalised to sum exactly 1."""
    if w is None:
        return np.full(n, 1.0 / n)
    w = _np64(torch.as_tensor(w))
    if w.shape != (n,):
        raise InvalidData(f"{name} has shape {w.shape} but ({n},) is needed, one mass per point")
    if not np.isfinite(w).all():
        raise InvalidData(f"{name} contains NaN/inf values")
    if (w < 0).any():
        raise InvalidData(f"{name} has negative masses (min {w.min():.3g}); masses must be >= 0")
    total = float(w.sum())
    if abs(total - 1.0) > _MASS_ATOL:
        raise InvalidData(f"{name} sums to {total:.9g}, not 1; normalise it ({name} / {name}.sum())")
    return w / total


def _emd_dual(a: np.ndarray, b: np.ndarray, cost: np.ndarray) -> tuple[float, np.ndarray]:
    """Exact OT cost and the centred dual potential of the second marginal."""
    _, log = ot.emd(a, b, cost, numItermax=_EMD_MAX_ITER, log=True)
    return float(log["cost"]), log["v"] - log["v"].mean()


def _mirror_weights(a: np.ndarray, b: np.ndarray, cost: np.ndarray, steps: int,
                    eta: float | None) -> tuple[np.ndarray, float, float | None]:
    """Exponentiated-gradient steps on the simplex for b ↦ W2²(a, b) with backtracking.

    Returns the new weights, their W2² and the step size to start the next phase with.
    """
    value, v = _emd_dual(a, b, cost)
    spread = float(v.max() - v.min())
    if eta is None and spread == 0:  # every step would leave b as it is
        return b, value, None
    eta = 1.0 / spread if eta is None else eta
    for _ in range(steps):
        for _ in range(20):  # halve η until W2² decreases
            logits = np.log(np.maximum(b, 1e-300)) - eta * v
            trial = np.exp(logits - logits.max())
            trial /= trial.sum()
            trial_value, trial_v = _emd_dual(a, trial, cost)
            if trial_value <= value:
                b, value, v = trial, trial_value, trial_v
                eta *= 1.5
                break
            eta /= 2
        else:
            break  # no decreasing step: b is (numerically) optimal
    return b, value, eta
