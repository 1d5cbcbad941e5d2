"""Initial points: seeded greedy k-means++ [Arthur2007]_ and uniformly drawn rows."""

from __future__ import annotations

import math

import torch

from .lloyd import chunk_rows


def random_rows(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` distinct rows of x (n, d) drawn uniformly, as a new (k, d) tensor."""
    return x[torch.randperm(x.shape[0], generator=gen)[:k].to(x.device)].clone()


def kmeans_plus_plus(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ points of x (n, d), shape (k, d).

    The first point is a uniformly drawn row; each next one is, of 2 + ⌊log k⌋ candidate rows
    drawn with probability ∝ D² (the squared distance to the nearest point chosen so far),
    the one that leaves the smallest potential Σ D². Distances are computed in float64 from
    ‖x‖² − 2 x·c + ‖c‖², one chunk of rows at a time.
    """
    n, d = x.shape
    trials = 2 + int(math.log(k))
    chunk = chunk_rows(n, trials, d)
    starts = range(0, n, chunk)
    xsq = torch.cat([(x[s : s + chunk].double() ** 2).sum(1) for s in starts])

    def sq_dist(rows: torch.Tensor) -> torch.Tensor:
        """(n, len(rows)) squared distances to the rows x[rows], float64, clamped at 0."""
        c, csq = x[rows], xsq[rows]
        return torch.cat([(xsq[s : s + chunk, None] - 2 * (x[s : s + chunk] @ c.t()).double()
                           + csq).clamp_(min=0) for s in starts])

    chosen = [int(torch.randint(n, (1,), generator=gen))]
    closest = sq_dist(torch.tensor(chosen, device=x.device))[:, 0]
    for _ in range(1, k):
        cum = torch.cumsum(closest, 0)
        if cum[-1] <= 0:  # fewer distinct rows than k: take the first unused row
            chosen.append(next(i for i in range(n) if i not in chosen))
            continue
        u = torch.rand(trials, generator=gen, dtype=torch.float64).to(x.device) * cum[-1]
        candidates = torch.searchsorted(cum, u).clamp_(max=n - 1)
        trial = torch.minimum(closest[:, None], sq_dist(candidates))
        best = int(trial.sum(0).argmin())
        closest = trial[:, best]
        chosen.append(int(candidates[best]))
    return x[torch.tensor(chosen, device=x.device)].clone()
