"""``herding``: Welling's herding in the teacher's feature space (Welling, ICML 2009).

Per class, greedily add the image that keeps the running mean of the chosen features closest
to the class mean: at step t pick argmin_i ‖μ − (s + f_i)/(t+1)‖ over unchosen i.
"""

from __future__ import annotations

import torch

from ..data import ImageSet
from ..distilled import DistilledSet
from ..train import Teacher
from .common import select_per_class
from .registry import register


def herd(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` rows of ``feats`` (n, d) chosen by herding, in selection order."""
    feats = feats.double()
    mu = feats.mean(0)
    total = torch.zeros_like(mu)
    chosen = []
    for t in range(k):
        dist = ((mu - (total + feats) / (t + 1)) ** 2).sum(1)
        dist[chosen] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        total += feats[i]
    return torch.tensor(chosen, dtype=torch.int64)


@register("herding")
def distill(data: ImageSet, ipc: int, *, seed: int = 0, teacher: Teacher | str | None = None,
            progress: bool = True) -> DistilledSet:
    """Herding per class on ``teacher`` features (default: the cached ConvNet-BN teacher).

    Deterministic given the teacher; ``seed`` is recorded but unused.
    """
    return select_per_class(data, teacher, lambda feats: herd(feats, ipc), progress=progress)
