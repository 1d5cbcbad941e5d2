"""The Lloyd engine: the nearest-point assignment of a data set and one Lloyd step on it.

A :class:`Lloyd` holds, for the points of the last assignment, the label of every row and the
float64 sums and counts of every cell. One :meth:`Lloyd.step` has three named phases:

1. :meth:`~Lloyd.cell_means` — every point moves to the mean of its cell;
2. :meth:`~Lloyd.reseed` — the point of an empty cell jumps to the row farthest from its point;
3. :meth:`~Lloyd.assign` — every row is compared with every point, one chunk of rows at a time.

Distances are expanded as ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖²: the term ‖c‖² − 2 x·c that decides
the argmin is one matrix product per chunk in the data's dtype; everything that is summed
(cell sums, ‖x‖², distortion) is summed in float64.
"""

from __future__ import annotations

from functools import cached_property

import torch

# Rows per chunk are chosen so that one chunk's distance block and its float64 copy stay
# within about this many bytes (a few MiB: cache-friendly, and memory stays O(K·d + chunk)).
CHUNK_BYTES = 1 << 22


def chunk_rows(n: int, k: int, d: int) -> int:
    """Rows per chunk for a pass over n rows of dimension d against k points."""
    return max(256, min(n, CHUNK_BYTES // (8 * max(k, d))))


class Lloyd:
    """Lloyd's iteration on the rows of ``x`` (n, d) with ``k`` points.

    State after :meth:`assign`: ``labels`` (n,) int64, ``counts`` (k,) int64 and ``sums``
    (k, d) float64, the label, size and coordinate sums of every cell.
    """

    def __init__(self, x: torch.Tensor, k: int):
        n, d = x.shape
        self.x, self.k = x, k
        self.chunk = chunk_rows(n, k, d)
        self.labels: torch.Tensor | None = None
        self.sums = torch.zeros(k, d, dtype=torch.float64, device=x.device)
        self.counts = torch.zeros(k, dtype=torch.int64, device=x.device)

    def _chunks(self):
        for s in range(0, self.x.shape[0], self.chunk):
            yield s, self.x[s : s + self.chunk]

    def assign(self, points: torch.Tensor, *, keep_ties: bool = False) -> int:
        """Phase 3: label every row with its nearest point (lowest index on a tie; with
        ``keep_ties``, a row keeps its label unless another point is strictly nearer) and
        recompute the cell sums and counts. Returns how many labels changed."""
        bias = (points.double() ** 2).sum(1).to(self.x.dtype)[:, None]  # ‖c‖², (K, 1)
        labels = torch.empty(self.x.shape[0], dtype=torch.int64, device=self.x.device)
        self.sums.zero_()
        for s, xs in self._chunks():
            dist = torch.addmm(bias, points, xs.t(), alpha=-2)  # (K, m): ‖c‖² − 2 x·c
            best, new = dist.min(0)
            if keep_ties:
                old = self.labels[s : s + len(xs)]
                new = torch.where(dist.gather(0, old[None])[0] > best, new, old)
            labels[s : s + len(xs)] = new
            self.sums.index_add_(0, new, xs.double())
        changed = len(labels) if self.labels is None else int((labels != self.labels).sum())
        self.labels, self.counts = labels, torch.bincount(labels, minlength=self.k)
        return changed

    def cell_means(self, points: torch.Tensor) -> torch.Tensor:
        """Phase 1: the mean of every non-empty cell; an empty cell keeps its point."""
        new = points.to(torch.float64, copy=True)
        full = self.counts > 0
        new[full] = self.sums[full] / self.counts[full, None].double()
        return new.to(points.dtype)

    def reseed(self, points: torch.Tensor, new: torch.Tensor) -> bool:
        """Phase 2: move the points of empty cells (in ``new``) to the rows farthest from
        their current point in ``points``, which cannot increase the distortion. Returns
        whether any cell was empty."""
        empty = (self.counts == 0).nonzero().flatten()
        if len(empty):
            p = points.double()
            far = torch.cat([((xs.double() - p[self.labels[s : s + len(xs)]]) ** 2).sum(1)
                             for s, xs in self._chunks()])
            new[empty] = self.x[torch.topk(far, len(empty)).indices]
        return len(empty) > 0

    def step(self, points: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One Lloyd iteration from the assigned ``points``: the new points and how many
        labels changed. After a re-seeding every row takes its nearest point afresh."""
        new = self.cell_means(points)
        reseeded = self.reseed(points, new)
        return new, self.assign(new, keep_ties=not reseeded)

    @cached_property
    def sumsq(self) -> float:
        """Σ_i ‖x_i‖², in float64."""
        return float(torch.cat([torch.linalg.vector_norm(xs.double(), dim=1).square_()
                                for _, xs in self._chunks()]).sum())

    def distortion(self, points: torch.Tensor) -> float:
        """Mean squared distance to the assigned points, in float64 from the cell sums and
        counts: (Σ‖x_i‖² − 2 Σ_k c_k·S_k + Σ_k n_k ‖c_k‖²) / N."""
        p64 = points.double()
        cross = float((p64 * self.sums).sum())
        own = float((self.counts.double() * (p64 * p64).sum(1)).sum())
        return max((self.sumsq - 2.0 * cross + own) / self.x.shape[0], 0.0)


def nearest(x: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (m,) and squared distances (m,) in float64, clamped at 0, for one batch (m, d)."""
    psq = (points.double() ** 2).sum(1).to(x.dtype)
    val, lab = torch.addmm(psq, x, points.t(), beta=1, alpha=-2).min(1)
    return lab, (val.double() + (x.double() ** 2).sum(1)).clamp_(min=0)
