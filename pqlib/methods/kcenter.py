"""``kcenter``: greedy k-center (Sener & Savarese, 2018) in the teacher's feature space.

Per class: start from a random image, then repeatedly add the image farthest from the chosen
set (largest distance to its nearest chosen image).
"""

from __future__ import annotations

import torch

from ..data import ImageSet
from ..distilled import DistilledSet
from ..train import Teacher
from .common import select_per_class
from .registry import register


def greedy_kcenter(feats: torch.Tensor, k: int, *, generator: torch.Generator | None = None,
                   first: int | None = None) -> torch.Tensor:
    """Indices of ``k`` rows of ``feats`` (n, d) chosen by greedy k-center, starting from row
    ``first`` (default: one drawn with ``generator``)."""
    feats = feats.double()
    if first is None:
        first = int(torch.randint(len(feats), (1,), generator=generator))
    chosen = [first]
    nearest = ((feats - feats[first]) ** 2).sum(1)
    for _ in range(k - 1):
        i = int(nearest.argmax())
        chosen.append(i)
        nearest = torch.minimum(nearest, ((feats - feats[i]) ** 2).sum(1))
    return torch.tensor(chosen, dtype=torch.int64)


@register("kcenter")
def distill(data: ImageSet, ipc: int, *, seed: int = 0, teacher: Teacher | str | None = None,
            progress: bool = True) -> DistilledSet:
    """Greedy k-center per class on ``teacher`` features; ``seed`` picks the first center."""
    g = torch.Generator().manual_seed(seed)
    return select_per_class(data, teacher, lambda feats: greedy_kcenter(feats, ipc, generator=g),
                            progress=progress)
