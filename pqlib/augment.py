"""Differentiable data augmentation for student training and for matching.

* :func:`dsa` — the DC/DSA/DM benchmark's augmentation (one op group per batch), used by the
  ``dc`` protocol and by DM's matching;
* :func:`dc_augment` — the DC paper's own evaluation augmentation, before DSA (one op per
  image), used by the ``dc-iclr21`` protocol;
* :func:`default_augmentation` — the kornia family of pqlib's first protocol (``legacy``):
  digits get rotation, translation, scaling and cutout (never a flip, which would turn some
  digits into others); colour data gets random-resized crops and flips;
* :func:`cutmix` — CutMix for soft-label students.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch

from .checks import Int, InvalidParameter, Optional, Real, Tensor, checked

__all__ = ["default_augmentation", "cutmix", "dsa", "dsa_strategy", "dc_augment", "DSA_OPS",
           "DSA_DEFAULT", "DC_OPS"]


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


# ------------------------------------------------------- DC's own augmentation (Zhao et al., 2021)

DC_OPS = ("crop", "scale", "rotate", "noise")


@checked(x=Tensor, strategy=str, generator=Optional | torch.Generator)
def dc_augment(x: torch.Tensor, strategy: str = "crop_scale_rotate", *,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """The evaluation augmentation of the DC paper, before DSA: one op per image.

    What ``augment`` of VICO-UoE/DatasetCondensation applies when a student is trained on MNIST
    without DSA (``get_daparam``: strategy ``crop_scale_rotate``; ``main.py`` then trains 1,000
    epochs), written for pqlib and vectorised over the batch. Each image gets one op of
    ``strategy`` (``_``-separated names from ``DC_OPS``), drawn uniformly, with its own
    parameters; fills use the batch's per-channel mean m (images are standardised):

    * ``crop``: pad 4 pixels with m, cut the original size at an offset in {0, …, 7} per axis
      (a shift of −4 … +3 pixels);
    * ``scale``: resize (nearest) to ⌊u·H⌋ × ⌊v·H⌋ with u, v ~ U(0.8, 1.2), centre it on a
      zero canvas, cut the centre H × W;
    * ``rotate``: rotate by an integer angle in [−45°, 44°] about the centre (half a pixel off
      where the original's grown canvas is odd), fill the mean of m (bicubic; the original
      uses scipy's cubic spline);
    * ``noise``: add 0.001 · N(0, 1).

    Parameters
    ----------
    x : tensor of shape (N, C, H, W), standardised images (not differentiated through)
    strategy : ops to draw from, e.g. ``"crop_scale_rotate"`` (MNIST)
    generator : source of every random draw (CPU generator)

    Returns
    -------
    tensor of shape (N, C, H, W)
    """
    ops = strategy.split("_")
    unknown = [op for op in ops if op not in DC_OPS]
    if unknown:
        raise InvalidParameter(f"unknown DC op(s) {unknown} in strategy {strategy!r}; ops: {DC_OPS}")
    x = x.detach()
    mean = x.mean((0, 2, 3))
    choice = torch.randint(len(ops), (x.shape[0],), generator=generator)
    out = x.clone()
    for k, op in enumerate(ops):
        rows = (choice == k).nonzero().flatten()
        if len(rows):
            part = x[rows]
            out[rows] = (_dc_crop(part, mean, generator) if op == "crop"
                         else _dc_scale(part, generator) if op == "scale"
                         else _dc_rotate(part, float(mean.mean()), generator) if op == "rotate"
                         else part + 0.001 * torch.randn(part.shape, generator=generator).to(x))
    return out


def _gather(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``out[n, c, i, j] = x[n, c, rows[n, i], cols[n, j]]`` for (N, H) / (N, W) indices."""
    batch = torch.arange(len(x), device=x.device)[:, None, None]
    return x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _dc_crop(x: torch.Tensor, mean: torch.Tensor, g) -> torch.Tensor:
    n, c, h, w = x.shape
    pad = 4
    padded = mean.view(1, c, 1, 1).expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, :, pad:pad + h, pad:pad + w] = x
    dy, dx = (torch.randint(2 * pad, (n, 1), generator=g).to(x.device) for _ in range(2))
    return _gather(padded, dy + torch.arange(h, device=x.device), dx + torch.arange(w, device=x.device))


def _dc_scale(x: torch.Tensor, g) -> torch.Tensor:
    n, _, h, w = x.shape
    sizes = ((torch.rand(n, 2, generator=g, dtype=torch.float64) * 0.4 + 0.8) * h).long()
    canvas = torch.maximum(sizes.max(1).values, torch.tensor(max(h, w)))

    def axis(size, side):  # source index of each output pixel along one axis, and its validity
        q = (torch.arange(side)[None] + ((canvas - side) // 2)[:, None]
             - ((canvas - size) // 2)[:, None])  # position in the resized image
        src = (q.float() * (side / size.float())[:, None]).floor().long().clamp(0, side - 1)
        return src.to(x.device), ((q >= 0) & (q < size[:, None])).to(x.device)

    (ry, vy), (rx, vx) = axis(sizes[:, 0], h), axis(sizes[:, 1], w)
    return _gather(x, ry, rx) * (vy[:, :, None] & vx[:, None, :])[:, None].to(x.dtype)


def _dc_rotate(x: torch.Tensor, fill: float, g) -> torch.Tensor:
    _, _, h, w = x.shape
    angle = torch.randint(-45, 45, (len(x),), generator=g).double() * torch.pi / 180
    cos, sin = angle.cos(), angle.sin()
    # the original rotates onto a grown canvas (scipy's reshape) and cuts the centre: where the
    # canvas grows by an odd number of pixels, the cut sits half a pixel off the centre
    odd_y = ((cos.abs() * h + sin.abs() * w + 0.5).floor() - h) % 2
    odd_x = ((sin.abs() * h + cos.abs() * w + 0.5).floor() - w) % 2
    dx, dy = -odd_x / w, -odd_y / h  # half a pixel in grid units
    theta = torch.stack([torch.stack((cos, -sin, cos * dx - sin * dy), 1),
                         torch.stack((sin, cos, sin * dx + cos * dy), 1)], 1)
    grid = torch.nn.functional.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x - fill, grid, mode="bicubic",
                                           align_corners=False) + fill
