"""The public functions of :mod:`pqlib.quantize` and their result, :class:`Quantizer`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import (
    Int,
    InvalidData,
    InvalidParameter,
    OneOf,
    Optional,
    Real,
    Tensor,
    check_matrices,
    check_matrix,
    checked,
)
from .lloyd import Lloyd
from .online import ArraySource, StreamSource, first_rows, learn
from .seeding import kmeans_plus_plus, random_rows


@dataclass(frozen=True)
class Quantizer:
    """A K-point quantizer of a data set.

    Attributes
    ----------
    points : tensor of shape (K, d)
        The codebook, in the data's dtype and device.
    weights : tensor of shape (K,)
        Voronoi masses (fraction of the data nearest to each point), summing to 1, in the
        data's dtype. How they were measured is ``weight_source``.
    labels : int64 tensor of shape (N,) or None
        Index of the nearest point for every row of the data; ``None`` when the data was a
        stream (an iterable of batches), whose labels are not kept in memory.
    distortion : float
        Mean squared distance of the data to its nearest point, computed in float64. Equal to
        W2²(data, Σ_k weights_k δ_{points_k}) when ``weight_source == "exact-pass"``; an
        estimate from the last pass's mini-batches when it is ``"win-counts"``.
    history : tuple of float
        :func:`kmeans`: the distortion of the initial points and after every iteration
        (``history[-1] == distortion``). :func:`clvq`: the distortion of each pass, estimated
        from the mini-batches of that pass just before each update.
    weight_source : {"exact-pass", "win-counts"}
        ``"exact-pass"``: weights and distortion from a final exact assignment of all the
        data. ``"win-counts"``: weights from the running win counts of CLVQ (the data could
        not be read again).
    iterations : int
        Lloyd iterations (:func:`kmeans`) or mini-batch updates (:func:`clvq`) performed.
    converged : bool
        :func:`kmeans`: the stopping test (fixed point or ``tol``) was met before ``iters``.
        Always False for :func:`clvq`, which has no convergence test.
    """

    points: torch.Tensor
    weights: torch.Tensor
    labels: torch.Tensor | None
    distortion: float
    history: tuple[float, ...]
    weight_source: str
    iterations: int
    converged: bool

    @property
    def k(self) -> int:
        """Number of points K."""
        return self.points.shape[0]


@checked(k=Int(1), iters=Int(0), tol=Real(0) | Optional, seed=Int(0),
         init=OneOf("k-means++", "random") | Tensor)
def kmeans(x: torch.Tensor, k: int, *, iters: int = 100, tol: float | None = 1e-6,
           init: str | torch.Tensor = "k-means++", seed: int = 0) -> Quantizer:
    """Lloyd's algorithm: alternate nearest-point assignment and cell means.

    Parameters
    ----------
    x : tensor of shape (n_samples, d)
        Data, floating point, finite. Its dtype and device are those of the computation.
    k : int
        Number of points, ``1 <= k <= n_samples``.
    iters : int, default=100
        Maximum number of Lloyd iterations (each = update the points, then reassign).
    tol : float or None, default=1e-6
        Stop when the relative decrease of the distortion in one iteration is ``<= tol``, or
        when the assignment no longer changes (a fixed point). ``tol=0`` stops only at a fixed
        point; ``tol=None`` never stops early (exactly ``iters`` iterations, for benchmarks).
    init : {"k-means++", "random"} or tensor of shape (k, d), default="k-means++"
        Seeded greedy k-means++ [Arthur2007]_ (2 + ⌊log k⌋ candidates per step, as scikit-learn),
        ``k`` distinct rows drawn uniformly, or explicit initial points.
    seed : int, default=0
        Seeds the initialisation; same seed → same result on the same machine.

    Returns
    -------
    Quantizer
        ``weight_source="exact-pass"``; ``history[0]`` is the distortion of the initial
        points and ``history[-1] == distortion``.

    Notes
    -----
    Each iteration moves every point to the mean of its cell, then compares every row with
    every point, ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖², as one matrix product per chunk of rows
    (2·N·K·d flops; memory O(N + chunk·(K + d) + K·d) besides x). A row changes cell only if
    another point is strictly nearer, so a fixed point is detected exactly. The cell sums
    are kept in float64 and the distortion of every iteration is computed from them in
    float64, (Σ‖x_i‖² − 2 Σ_k c_k·S_k + Σ_k n_k ‖c_k‖²) / N, so it is non-increasing up to
    the rounding of the argmin in the input's dtype. A cluster that becomes empty is
    re-seeded at the row farthest from its current point (which cannot increase the
    distortion). Like scikit-learn and faiss, the expansion loses precision when the data
    has a large common offset: centre such data first. The matrix products use torch's
    threads (``torch.set_num_threads``).

    Examples
    --------
    >>> x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [4.0, 0.0], [4.0, 1.0]])
    >>> q = kmeans(x, 2, seed=0)
    >>> sorted(q.points[:, 0].tolist()), q.distortion
    ([0.0, 4.0], 0.25)
    """
    x = check_matrix(x)
    if k > x.shape[0]:
        raise InvalidParameter(f"k={k} should be <= n_samples={x.shape[0]}")
    seeders = {"k-means++": kmeans_plus_plus, "random": random_rows}
    points = (_check_init(init, x, k) if isinstance(init, torch.Tensor)
              else seeders[init](x, k, torch.Generator().manual_seed(seed)))
    lloyd = Lloyd(x, k)
    lloyd.assign(points)
    history = [lloyd.distortion(points)]
    converged, done = False, 0
    while done < iters and not converged:
        done += 1
        points, changed = lloyd.step(points)
        history.append(lloyd.distortion(points))
        converged = tol is not None and (changed == 0 or
                                         history[-2] - history[-1] <= tol * history[-2])
    return Quantizer(points=points, weights=(lloyd.counts.double() / x.shape[0]).to(x.dtype),
                     labels=lloyd.labels, distortion=history[-1], history=tuple(history),
                     weight_source="exact-pass", iterations=done, converged=converged)


@checked(k=Int(1), steps=Int(1) | Optional, batch_size=Int(1), seed=Int(0),
         step_size=OneOf("1/count") | Real(0, 1, open_low=True) | Callable)
def clvq(data, k: int, *, steps: int | None = None, batch_size: int = 1024,
         step_size: str | float | Callable[[int], float] = "1/count", seed: int = 0) -> Quantizer:
    """Competitive learning vector quantization (CLVQ) / mini-batch k-means.

    For every mini-batch, each row is assigned to its nearest point and each winning point
    moves towards the mean ξ̄_k of the rows it won: c_k ← c_k + γ_k (ξ̄_k − c_k). With
    ``step_size="1/count"`` (default), γ_k = m_k / (n_k + m_k) for m_k wins in the batch and
    n_k before it: c_k is the running mean of everything it has won, which is exactly the
    per-sample update c_k ← c_k − (c_k − ξ)/count (MacQueen; Sculley's mini-batch k-means [Sculley2010]_).
    A constant or a schedule γ_t gives Pagès' stochastic gradient [Pages2015]_ on the distortion.

    Parameters
    ----------
    data : tensor or numpy array of shape (n_samples, d), or an iterable of such batches
        A tensor/array is held (or memory-mapped) by the caller; batches are drawn from it by
        seeded random permutations (one permutation per pass). An iterable yields batches of
        shape (m, d); batches larger than ``batch_size`` are split. A *re-iterable* (a list,
        or an object whose ``__iter__`` returns a fresh iterator) is read again for a final
        exact pass; a one-shot iterator (a generator) is read once.
    k : int
        Number of points.
    steps : int or None, default=None
        Number of mini-batch updates. ``None``: one pass over the data. A tensor or a
        re-iterable is passed over again as often as needed; a one-shot iterator stops at
        its end.
    batch_size : int, default=1024
        Rows per update (the last batch of a pass may be smaller). For a tensor it must be
        ``>= k``: the first batch seeds the points.
    step_size : "1/count", float in (0, 1], or callable ``t -> float`` in (0, 1], default="1/count"
        γ as above; a callable receives the update index t = 1, 2, ...
    seed : int, default=0
        Seeds the batch order and the k-means++ initialisation on the first batch(es).

    Returns
    -------
    Quantizer
        Tensor or re-iterable data: ``weight_source="exact-pass"``, weights and distortion
        from a final exact pass over all the data (``labels`` is None for a re-iterable).
        One-shot iterator: ``weight_source="win-counts"``, weights are the win frequencies
        over all updates, ``distortion`` is the last pass's estimate, ``labels`` is None.
        ``history`` holds one distortion estimate per pass (the last pass may be partial),
        the average over that pass's rows of the squared distance to the nearest point just
        before the update that used them.

    Notes
    -----
    Memory is O(K·d + batch_size·(K + d)): the data are never materialised (except for
    the (N,) labels of tensor data). Each update costs 2·m·K·d flops.

    Examples
    --------
    >>> x = torch.randn(10_000, 2, generator=torch.Generator().manual_seed(0))
    >>> batches = [x[i : i + 1000] for i in range(0, 10_000, 1000)]
    >>> q = clvq(batches, 4, steps=30)
    >>> q.weight_source, round(float(q.weights.sum()), 6)
    ('exact-pass', 1.0)
    """
    gen = torch.Generator().manual_seed(seed)
    if isinstance(data, torch.Tensor | np.ndarray):
        source = ArraySource(data, batch_size, gen)
        if batch_size < k:
            raise InvalidParameter(f"batch_size={batch_size} should be >= k={k}: the first "
                                   "batch seeds the k points")
    elif isinstance(data, Iterable) and not isinstance(data, str | bytes):
        source = StreamSource(data, batch_size)
    else:
        raise InvalidData(f"data must be a tensor, a numpy array or an iterable of batches, "
                          f"got {type(data).__name__}")
    batches = source.batches()
    points, stream = first_rows(batches, k, gen)
    points, counts, history, t = learn(stream, points, steps, step_size)
    batches.close()  # let the source release what it holds (e.g. a memory map) before re-reading
    if source.reiterable:
        labels, counts, distortion = source.exact_pass(points)
    else:
        labels, distortion = None, history[-1]
    return Quantizer(points=points, weights=(counts.double() / counts.sum()).to(points.dtype),
                     labels=labels, distortion=distortion, history=tuple(history), iterations=t,
                     converged=False,
                     weight_source="exact-pass" if source.reiterable else "win-counts")


def assign(x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Index of the nearest point for every row of ``x``.

    Parameters
    ----------
    x : tensor of shape (n_samples, d)
    points : tensor of shape (K, d)

    Returns
    -------
    labels : int64 tensor of shape (n_samples,)
        Ties go to the lowest index.
    """
    x, points = check_matrices(x, points, ("x", "points"))
    lloyd = Lloyd(x, points.shape[0])
    lloyd.assign(points.to(dtype=x.dtype, device=x.device))
    return lloyd.labels


def voronoi_weights(x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Voronoi masses: the fraction of the rows of ``x`` nearest to each point.

    Parameters ``x`` (n_samples, d) and ``points`` (K, d) as in :func:`assign`.

    Returns
    -------
    weights : tensor of shape (K,), in x's dtype, summing to 1
    """
    counts = torch.bincount(assign(x, points), minlength=points.shape[0]).double()
    return (counts / x.shape[0]).to(x.dtype)


def _check_init(init: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    if init.shape != (k, x.shape[1]):
        raise InvalidParameter(f"init has shape {tuple(init.shape)} but (k, d) = "
                               f"{(k, x.shape[1])} is needed for x of shape {tuple(x.shape)}")
    return check_matrix(init.to(dtype=x.dtype, device=x.device), "init").clone()
