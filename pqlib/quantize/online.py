"""Competitive learning (CLVQ / mini-batch k-means) and its data sources.

A source yields ``(pass index, batch)`` pairs and knows whether it can be read again for a
final exact pass: :class:`ArraySource` draws seeded random mini-batches from a tensor or a
(memory-mapped) numpy array, read through a tensor that shares its memory;
:class:`StreamSource` splits the batches of an iterable.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from ..checks import InvalidData, InvalidParameter, check_matrix
from .lloyd import Lloyd, nearest
from .seeding import kmeans_plus_plus

Batches = Iterator[tuple[int, torch.Tensor]]


class ArraySource:
    """Seeded random mini-batches (one permutation per pass) from a tensor or numpy array.
    The rows of a numpy array (it may be memory-mapped) are read in file order within a batch,
    and its exact pass goes block by block."""

    reiterable = True

    def __init__(self, data, batch_size: int, gen: torch.Generator):
        self.from_numpy = isinstance(data, np.ndarray)
        self.data, self.batch_size, self.gen = check_matrix(data, "data"), batch_size, gen

    def batches(self) -> Batches:
        for p in itertools.count():
            perm = torch.randperm(len(self.data), generator=self.gen)
            for idx in perm.split(self.batch_size):
                if self.from_numpy:
                    idx = idx.sort().values
                yield p, self.data[idx.to(self.data.device)]

    def exact_pass(self, points: torch.Tensor):
        """Labels (N,), cell counts (K,) and distortion of the nearest-point assignment."""
        if self.from_numpy:
            return _scan(self.data.split(self.batch_size), points, keep_labels=True)
        lloyd = Lloyd(self.data, points.shape[0])
        lloyd.assign(points.to(self.data.device))
        return lloyd.labels, lloyd.counts, lloyd.distortion(points)


class StreamSource:
    """Mini-batches from an iterable of (m, d) batches, split to at most ``batch_size`` rows.
    A re-iterable (whose ``__iter__`` returns a fresh iterator) is read pass after pass."""

    def __init__(self, data: Iterable, batch_size: int):
        self.data, self.batch_size = data, batch_size
        self.reiterable = iter(data) is not data
        self.d: int | None = None

    def _pieces(self) -> Iterator[torch.Tensor]:
        for i, b in enumerate(self.data):
            b = check_matrix(b, f"batch {i}")
            if self.d is None:
                self.d = b.shape[1]
            elif b.shape[1] != self.d:
                raise InvalidData(f"dimension mismatch: batch {i} has shape {tuple(b.shape)} "
                                  f"but earlier batches have d={self.d}")
            yield from b.split(self.batch_size)

    def batches(self) -> Batches:
        for p in itertools.count():
            empty = True
            for piece in self._pieces():
                empty = False
                yield p, piece
            if empty and p == 0:
                raise InvalidData("data yielded no batches")
            if empty or not self.reiterable:
                return

    def exact_pass(self, points: torch.Tensor):
        """None, cell counts (K,) and distortion of the nearest-point assignment."""
        return _scan(self._pieces(), points, keep_labels=False)


def learn(batches: Batches, points: torch.Tensor, steps: int | None,
          step_size: str | float | Callable[[int], float]
          ) -> tuple[torch.Tensor, torch.Tensor, list, int]:
    """Run the CLVQ updates from the initial ``points`` (K, d) over ``batches``.

    ``steps=None`` stops after one pass. ``step_size`` is as in :func:`~pqlib.quantize.clvq`
    (validated there). Returns the points (in the batches' dtype), the win counts (K,) float64, one
    distortion estimate per pass and the number of updates.
    """
    dtype, device = points.dtype, points.device
    points64 = points.double()
    counts = torch.zeros(len(points), dtype=torch.float64, device=device)
    totals, rows = defaultdict(float), defaultdict(int)  # Σ squared distances, rows per pass
    t = 0
    for p, xb in batches:
        if (p > 0 and steps is None) or (steps is not None and t >= steps):
            break
        t += 1
        xb = xb.to(device=device, dtype=dtype)
        lab, sqd = nearest(xb, points64.to(dtype))
        totals[p] += float(sqd.sum())
        rows[p] += xb.shape[0]
        update(points64, counts, xb, lab, _gamma(step_size, t))
    return points64.to(dtype), counts, [totals[p] / rows[p] for p in totals], t


def update(points64: torch.Tensor, counts: torch.Tensor, xb: torch.Tensor, lab: torch.Tensor,
           gamma: float | None) -> None:
    """Move every winning point towards the mean of the rows it won, c ← c + γ (ξ̄ − c), in
    place; ``gamma=None`` is γ_k = m_k / (n_k + m_k) for m_k wins now and n_k before."""
    wins = torch.bincount(lab, minlength=len(points64)).double()
    sums = torch.zeros_like(points64).index_add_(0, lab, xb.double())
    hit = wins > 0
    g = wins[hit] / (counts[hit] + wins[hit]) if gamma is None else torch.full_like(wins[hit], gamma)
    points64[hit] += g[:, None] * (sums[hit] / wins[hit, None] - points64[hit])
    counts += wins


def first_rows(batches: Batches, k: int, gen: torch.Generator) -> tuple[torch.Tensor, Batches]:
    """k-means++ points of the first pass's batches until at least k rows, and the batches
    with these put back in front."""
    head, rows = [], 0
    for item in batches:
        if item[0] > 0:  # a second pass began: the data has fewer than k rows
            break
        head.append(item)
        rows += item[1].shape[0]
        if rows >= k:
            break
    if rows < k:
        raise InvalidParameter(f"k={k} should be <= n_samples={rows} (the data has only {rows} rows)")
    return kmeans_plus_plus(torch.cat([b for _, b in head]), k, gen), itertools.chain(head, batches)


def _gamma(step_size, t: int) -> float | None:
    """γ_t of a constant or a schedule, checked to lie in (0, 1]; None for "1/count"."""
    if isinstance(step_size, str):
        return None
    g = float(step_size(t) if callable(step_size) else step_size)
    if not 0 < g <= 1:
        raise InvalidParameter(f"step_size({t}) = {g} should be in (0, 1]")
    return g


def _scan(pieces: Iterable[torch.Tensor], points: torch.Tensor, *, keep_labels: bool):
    """Labels (or None), counts and mean squared distance of one pass over batches of rows."""
    labels, counts, total, n = [], 0, 0.0, 0
    for piece in pieces:
        lab, sqd = nearest(piece.to(device=points.device, dtype=points.dtype), points)
        labels += [lab.cpu()] if keep_labels else []
        counts = counts + torch.bincount(lab, minlength=points.shape[0])
        total += float(sqd.sum())
        n += len(lab)
    return torch.cat(labels) if keep_labels else None, counts, total / n
