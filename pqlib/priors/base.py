"""The one interface every generative prior implements, and the input checks they share.

A prior maps images to latents (``encode``) and latents back to images (``decode``). D4M and
DDOQ quantize in the latent space and push the quantized points forward through ``decode``:
an img2img (SDEdit) pass that noises the latents to the timestep set by ``strength``,
denoises them conditioned on the class, and decodes them with the VAE.

Conventions (every prior)
-------------------------
* images are float32 tensors ``(N, C, H, W)`` with values in [0, 1];
* latents are float32 tensors ``(N, *latent_shape)``, already multiplied by the VAE's scaling
  factor (so they have roughly unit variance);
* labels are int64 class indices in ``[0, num_classes)``;
* all randomness comes from ``seed`` through :class:`torch.Generator`; the same seed (and
  ``batch_size``) gives bit-identical output on the same machine. The noise itself does not
  depend on ``batch_size``, but a different batch size can change the last bits of the
  network outputs (about 1e-6);
* invalid input raises :class:`ValueError` naming the parameter and echoing its value, before
  any work is done.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import torch

from ..cache import config_hash

__all__ = ["Prior", "check_images", "check_labels", "check_strength", "check_latents",
           "check_batch_size", "image_generators"]


class Prior(abc.ABC):
    """A generative prior with an encoder and a class-conditional img2img decoder.

    Attributes
    ----------
    name : short name, e.g. ``"tiny-ldm"``, ``"stable-diffusion"``, ``"pixel"``
    dataset : the dataset it was trained for (``None``: not tied to one)
    image_shape : ``(C, H, W)`` of the images it accepts and returns
    latent_shape : ``(c, h, w)`` of one latent
    num_classes : number of classes it can condition on (``None``: not known yet)
    config : JSON-serialisable description; its hash is part of :attr:`id`
    default_guidance : classifier-free guidance scale used when ``guidance=None``
    """

    name: str = "prior"
    dataset: str | None = None
    image_shape: tuple[int, int, int]
    latent_shape: tuple[int, int, int]
    num_classes: int | None = None
    config: dict
    default_guidance: float = 1.0

    @property
    def id(self) -> str:
        """``<name>-<dataset>-<config hash>``: what result records cite."""
        parts = [self.name] + ([self.dataset] if self.dataset else []) + [config_hash(self.config)]
        return "-".join(parts)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(id={self.id!r}, image_shape={self.image_shape}, "
                f"latent_shape={self.latent_shape}, num_classes={self.num_classes})")

    def check_compatible(self, data) -> None:
        """Raise ValueError if this prior cannot encode and decode ``data`` (an ImageSet)."""
        if self.dataset is not None and data.name != self.dataset:
            raise ValueError(
                f"prior {self.id!r} was trained on {self.dataset!r} but the data is {data.name!r}; "
                f"train a prior for it with `pqlib train-prior --dataset {data.name}` or use "
                f"PixelPrior / StableDiffusionPrior"
            )
        if tuple(data.image_shape) != tuple(self.image_shape):
            raise ValueError(
                f"prior {self.id!r} takes images {tuple(self.image_shape)} but {data.name!r} has "
                f"images {tuple(data.image_shape)}"
            )
        if self.num_classes is not None and data.num_classes != self.num_classes:
            raise ValueError(
                f"prior {self.id!r} knows {self.num_classes} classes but {data.name!r} has "
                f"{data.num_classes}"
            )

    @abc.abstractmethod
    def encode(self, images: torch.Tensor, *, sample: bool = False, seed: int = 0,
               batch_size: int = 256, progress: bool = True) -> torch.Tensor:
        """Map images ``(N, *image_shape)`` in [0, 1] to latents ``(N, *latent_shape)``.

        ``sample=False`` returns the posterior mean; ``sample=True`` draws from the posterior
        with ``seed`` (what D4M's code does).
        """

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor, labels, *, strength: float = 0.7, steps: int = 50,
               guidance: float | None = None, seed: int = 0, batch_size: int = 256,
               progress: bool = True) -> torch.Tensor:
        """Map latents ``(N, *latent_shape)`` and labels ``(N,)`` to images in [0, 1].

        ``strength`` in [0, 1]: 0 decodes the latents with the VAE only; s > 0 noises them to
        the timestep of the last ``int(steps * s)`` of ``steps`` scheduler steps, denoises
        them conditioned on the labels, and decodes; 1 starts from pure noise (the latents
        only set N).
        """

    def sample(self, labels, *, steps: int = 50, guidance: float | None = None, seed: int = 0,
               batch_size: int = 256, progress: bool = True) -> torch.Tensor:
        """Class-conditional samples from pure noise: ``decode`` at strength 1."""
        labels = check_labels(labels, None, self.num_classes)
        zeros = torch.zeros(len(labels), *self.latent_shape)
        return self.decode(zeros, labels, strength=1.0, steps=steps, guidance=guidance, seed=seed,
                           batch_size=batch_size, progress=progress)


# ------------------------------------------------------------------------------- checks


def check_images(images, image_shape: Sequence[int], *, name: str = "images") -> torch.Tensor:
    """Validate ``images`` as ``(N, *image_shape)`` finite values in [0, 1]; return float32."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor of shape (N, {', '.join(map(str, image_shape))}), "
                         f"got {type(images).__name__}")
    c, h, w = image_shape
    if images.ndim != 4:
        raise ValueError(f"`{name}` must have shape (N, {c}, {h}, {w}), got {tuple(images.shape)}")
    if images.shape[1] != c:
        raise ValueError(f"`{name}` has {images.shape[1]} channels but this prior takes {c} "
                         f"(shape {tuple(images.shape)}, expected (N, {c}, {h}, {w}))")
    if tuple(images.shape[2:]) != (h, w):
        raise ValueError(f"`{name}` are {images.shape[2]}×{images.shape[3]} but this prior takes "
                         f"{h}×{w} (shape {tuple(images.shape)}); resize them first")
    images = images.detach().to("cpu", torch.float32)
    if images.numel() and not torch.isfinite(images).all():
        raise ValueError(f"`{name}` contain NaN or inf values")
    if images.numel() and (images.min() < -1e-4 or images.max() > 1 + 1e-4):
        raise ValueError(f"`{name}` must be in [0, 1], got values in [{images.min():.3g}, "
                         f"{images.max():.3g}]; clamp or rescale them")
    return images


def check_latents(latents, latent_shape: Sequence[int]) -> torch.Tensor:
    """Validate ``latents`` as finite ``(N, *latent_shape)``; return float32 on the CPU."""
    if not isinstance(latents, torch.Tensor):
        raise ValueError(f"`latents` must be a torch.Tensor, got {type(latents).__name__}")
    if latents.ndim != 4 or tuple(latents.shape[1:]) != tuple(latent_shape):
        raise ValueError(f"`latents` must have shape (N, {', '.join(map(str, latent_shape))}), "
                         f"got {tuple(latents.shape)}")
    latents = latents.detach().to("cpu", torch.float32)
    if latents.numel() and not torch.isfinite(latents).all():
        raise ValueError("`latents` contain NaN or inf values")
    return latents


def check_labels(labels, n: int | None, num_classes: int | None) -> torch.Tensor:
    """Validate class indices: an int (broadcast to ``n``) or ``(n,)`` ints in ``[0, num_classes)``."""
    if isinstance(labels, int) and not isinstance(labels, bool):
        if n is None:
            raise ValueError(f"`labels`={labels} is a single class; pass one label per image")
        labels = torch.full((n,), labels, dtype=torch.int64)
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim != 1:
        raise ValueError(f"`labels` must be a 1-D tensor of integer class indices, got dtype "
                         f"{labels.dtype} and shape {tuple(labels.shape)}")
    labels = labels.to("cpu", torch.int64)
    if n is not None and len(labels) != n:
        raise ValueError(f"`labels` has {len(labels)} entries but `latents` has {n}; pass one "
                         f"label per latent")
    if num_classes is None:
        if len(labels) and labels.min() < 0:
            raise ValueError(f"`labels` must be non-negative class indices, got {int(labels.min())}")
        return labels
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)].unique().tolist()[:5]
        raise ValueError(f"`labels` must be in [0, {num_classes}) (the prior's classes), got {bad}")
    return labels


def check_strength(strength, steps, guidance) -> None:
    """Validate the img2img knobs: strength in [0, 1], steps >= 1, guidance finite."""
    if not isinstance(strength, (int, float)) or not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"`strength` must be in [0, 1], got {strength!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"`steps` must be a positive int, got {steps!r}")
    if guidance is not None and (not isinstance(guidance, (int, float)) or not math.isfinite(guidance)):
        raise ValueError(f"`guidance` must be a finite number or None, got {guidance!r}")


def check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")


def image_generators(seed: int, n: int, device="cpu") -> list[torch.Generator]:
    """One generator per image, seeded from ``seed``: results do not depend on the batch size."""
    master = torch.Generator().manual_seed(int(seed))
    seeds = torch.randint(0, 2**62, (n,), generator=master).tolist()
    return [torch.Generator(device).manual_seed(s) for s in seeds]
