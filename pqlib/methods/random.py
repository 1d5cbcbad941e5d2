"""``random``: a uniform random subset of real training images per class."""

from __future__ import annotations

import torch

from ..data import ImageSet
from ..distilled import DistilledSet
from .common import random_per_class, selection
from .registry import register


@register("random")
def distill(data: ImageSet, ipc: int, *, seed: int = 0, progress: bool = True) -> DistilledSet:
    """Pick ``ipc`` real images per class uniformly at random (without replacement).

    ``progress`` is accepted for a uniform signature; the selection is instantaneous.
    """
    return selection(data, random_per_class(data, ipc, torch.Generator().manual_seed(seed)))
