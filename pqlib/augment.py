"""Differentiable data augmentation (kornia) and CutMix for student training.

Digit-like data (1 channel) gets rotation, translation, scaling and cutout — never a flip,
which would turn some digits into others. Colour data gets random-resized crops and flips.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch

__all__ = ["default_augmentation", "cutmix"]


def default_augmentation(image_shape: tuple[int, int, int]) -> torch.nn.Module:
    """Augmentation for images of shape (C, H, W): the DSA-like family used for students.

    1 channel: affine (±15°, ±12.5 % shift, ×0.85–1.15 scale) then cutout (p = 0.5).
    3 channels: random-resized crop (scale 0.5–1) then horizontal flip.
    """
    c, h, w = image_shape
    if c == 1:
        return K.AugmentationSequential(
            K.RandomAffine(degrees=15.0, translate=(0.125, 0.125), scale=(0.85, 1.15), p=1.0),
            K.RandomErasing(scale=(0.02, 0.15), ratio=(0.5, 2.0), p=0.5),
        )
    return K.AugmentationSequential(
        K.RandomResizedCrop((h, w), scale=(0.5, 1.0)),
        K.RandomHorizontalFlip(),
    )


def cutmix(x: torch.Tensor, *, beta: float = 1.0, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al., 2019): paste a random box from a shuffled copy of the batch.

    Parameters
    ----------
    x : tensor of shape (N, C, H, W)
    beta : Beta(beta, beta) draws the mixing ratio

    Returns
    -------
    mixed : (N, C, H, W) images
    perm : (N,) index of the image each box came from
    lam : fraction of each image that is still its own (area-corrected)
    """
    n, _, h, w = x.shape
    lam = float(torch.distributions.Beta(beta, beta).sample())
    perm = torch.randperm(n, generator=generator)
    cut = (1.0 - lam) ** 0.5
    ch, cw = int(h * cut), int(w * cut)
    cy = int(torch.randint(h, (1,), generator=generator))
    cx = int(torch.randint(w, (1,), generator=generator))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return mixed, perm, lam
