"""Differentiable data augmentation for student training and for matching.

* :func:`dsa` — the DC/DSA/DM benchmark's augmentation (one op group per batch), used by the
  ``dc`` protocol and by DM's matching;
* :func:`default_augmentation` — the kornia family of pqlib's first protocol (``legacy``):
  digits get rotation, translation, scaling and cutout (never a flip, which would turn some
  digits into others); colour data gets random-resized crops and flips;
* :func:`cutmix` — CutMix for soft-label students.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch

from .checks import Int, InvalidParameter, Optional, Real, Tensor, checked

__all__ = ["default_augmentation", "cutmix", "dsa", "dsa_strategy", "DSA_OPS", "DSA_DEFAULT"]


def default_augmentation(image_shape: tuple[int, int, int]) -> torch.nn.Module:
    """Augmentation for images of shape (C, H, W): the DSA-like family used for students.

    1 channel: affine (±15°, ±12.5 % shift, ×0.85–1.15 scale) then cutout (p = 0.5).
    3 channels: random-resized crop (scale 0.5–1) then horizontal flip.
    kornia draws from torch's global RNG (it takes no generator): seed or fork it around the
    calls, as :func:`~pqlib.train.train_student` does.
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


@checked(x=Tensor, beta=Real(0, open_low=True), generator=Optional | torch.Generator)
def cutmix(x: torch.Tensor, *, beta: float = 1.0, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al., 2019): paste a random box from a shuffled copy of the batch.

    Parameters
    ----------
    x : tensor of shape (N, C, H, W)
    beta : Beta(beta, beta) draws the mixing ratio
    generator : draws the permutation and the box centre; the mixing ratio comes from torch's
        global RNG (``torch.distributions`` takes no generator), so seed or fork it for a
        reproducible ratio, as :func:`~pqlib.train.train_student` does

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


# ------------------------------------------------------------------ DSA (Zhao & Bilen, 2021)

DSA_OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DSA_DEFAULT = "color_crop_cutout_flip_scale_rotate"


@checked(channels=Int(1), ops=str)
def dsa_strategy(channels: int, ops: str = DSA_DEFAULT) -> str:
    """``ops`` for images with ``channels`` channels: flip dropped on 1-channel (digit) data,
    as the DC/DSA/DM code does for MNIST."""
    return ops.replace("_flip", "").replace("flip_", "") if channels == 1 else ops


@checked(x=Tensor, strategy=str, generator=Optional | torch.Generator, shared=bool)
def dsa(x: torch.Tensor, strategy: str = "color_crop_cutout_scale_rotate", *,
        generator: torch.Generator | None = None, shared: bool = False) -> torch.Tensor:
    """Differentiable Siamese Augmentation, single-op mode: one op group per call.

    The evaluation and matching augmentation of the DC/DSA/DM benchmark, written for pqlib.
    One group of ``strategy`` (``_``-separated names from ``DSA_OPS``) is drawn for the whole
    batch, then applied with parameters drawn per image (``shared=False``, evaluation) or once
    for the batch (``shared=True``: what DSA/DM use so that a class's real and synthetic batches
    see the same transformation when called with generators in the same state).

    Groups, for images standardised to mean 0 (fills are 0, i.e. the dataset mean):

    * ``color``: brightness ``+ (u - 0.5)``, saturation ``× 2u`` around the channel mean (a
      no-op on 1-channel images), contrast ``× (u + 0.5)`` around the image mean;
    * ``crop``: integer translation by up to 12.5 % of the side, zero fill;
    * ``cutout``: a zeroed square of half the side, centred anywhere;
    * ``flip``: horizontal flip with probability 0.5;
    * ``scale``: each axis scaled by a factor in [1/1.2, 1.2] (bilinear, zero fill);
    * ``rotate``: rotation by up to ±15° (bilinear, zero fill).

    Parameters
    ----------
    x : tensor of shape (N, C, H, W), standardised images
    strategy : op groups to draw from, e.g. ``"color_crop_cutout_scale_rotate"`` (digits)
    generator : source of every random draw (CPU generator)
    shared : one parameter draw for the whole batch

    Returns
    -------
    tensor of shape (N, C, H, W), differentiable with respect to ``x``
    """
    ops = strategy.split("_")
    unknown = [op for op in ops if op not in DSA_OPS]
    if unknown:
        raise InvalidParameter(f"unknown DSA op(s) {unknown} in strategy {strategy!r}; ops: {DSA_OPS}")
    op = ops[int(torch.randint(len(ops), (1,), generator=generator))]
    n = x.shape[0]

    def rand(*shape):
        u = torch.rand(1 if shared else n, *shape, generator=generator)
        return u.expand(n, *shape).to(x.device) if shared else u.to(x.device)

    if op == "color":
        x = x + (rand(1, 1, 1) - 0.5)
        mean = x.mean(1, keepdim=True)
        x = (x - mean) * (rand(1, 1, 1) * 2.0) + mean
        mean = x.mean((1, 2, 3), keepdim=True)
        return (x - mean) * (rand(1, 1, 1) + 0.5) + mean
    if op == "flip":
        return torch.where(rand(1, 1, 1) < 0.5, x.flip(3), x)
    if op in ("crop", "cutout"):
        return _crop(x, rand) if op == "crop" else _cutout(x, rand)
    if op == "scale":
        sx, sy = rand() * (1.2 - 1 / 1.2) + 1 / 1.2, rand() * (1.2 - 1 / 1.2) + 1 / 1.2
        zero = torch.zeros_like(sx)
        return _affine(x, (sx, zero, zero), (zero, sy, zero))
    angle = (rand() - 0.5) * 2 * 15.0 / 180.0 * torch.pi  # rotate
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    return _affine(x, (cos, -sin, zero), (sin, cos, zero))


def _affine(x: torch.Tensor, row0: tuple, row1: tuple) -> torch.Tensor:
    """Resample every image by its 2×3 affine matrix ``[row0; row1]`` (each entry (N,)), zero fill."""
    theta = torch.stack([torch.stack(row0, 1), torch.stack(row1, 1)], 1)
    grid = torch.nn.functional.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return torch.nn.functional.grid_sample(x, grid, align_corners=True)


def _crop(x: torch.Tensor, rand) -> torch.Tensor:
    """Translate every image by integer offsets of up to 12.5 % of its side, zero fill."""
    n, _, h, w = x.shape
    sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
    dy = (rand() * (2 * sh + 1)).long().clamp_max(2 * sh) - sh
    dx = (rand() * (2 * sw + 1)).long().clamp_max(2 * sw) - sw
    padded = torch.nn.functional.pad(x, (sw, sw, sh, sh))
    rows = (torch.arange(h, device=x.device) + sh + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=x.device) + sw + dx[:, None])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def _cutout(x: torch.Tensor, rand) -> torch.Tensor:
    """Zero a square of half the side centred at a uniform position (clipped at the border)."""
    _, _, h, w = x.shape
    ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    cy = (rand() * (h + 1 - ch % 2)).long()
    cx = (rand() * (w + 1 - cw % 2)).long()
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    inside_y = (ys >= cy[:, None] - ch // 2) & (ys < cy[:, None] - ch // 2 + ch)
    inside_x = (xs >= cx[:, None] - cw // 2) & (xs < cx[:, None] - cw // 2 + cw)
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
    return x * keep[:, None].to(x.dtype)
