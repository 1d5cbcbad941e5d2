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
* invalid input raises, before any work is done, :class:`~pqlib.checks.InvalidParameter`
  (a bad argument) or :class:`~pqlib.checks.InvalidData` (a bad tensor) — both ValueErrors —
  naming the parameter and echoing its value.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence

import torch
from tqdm import tqdm

from ..cache import config_hash
from ..checks import Int, InvalidData, InvalidParameter, Optional, Real, check_finite, checked

__all__ = ["Prior", "check_images", "check_labels", "check_latents", "checked_encode",
           "checked_decode", "image_generators", "batched"]


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
        return "-".join([self.name, *([self.dataset] if self.dataset else []),
                         config_hash(self.config)])

    @property
    def scaling_factor(self) -> float:
        """The factor latents are scaled by: the VAE's (priors that have a ``vae``)."""
        return float(self.vae.config.scaling_factor)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(id={self.id!r}, image_shape={self.image_shape}, "
                f"latent_shape={self.latent_shape}, num_classes={self.num_classes})")

    def check_compatible(self, data) -> None:
        """Raise ValueError if this prior cannot encode and decode ``data`` (an ImageSet)."""
        if self.dataset is not None and data.name != self.dataset:
            raise ValueError(f"prior {self.id!r} was trained on {self.dataset!r} but the data is "
                             f"{data.name!r}; train a prior for it with `pqlib train-prior "
                             f"--dataset {data.name}` or use PixelPrior / StableDiffusionPrior")
        if tuple(data.image_shape) != tuple(self.image_shape):
            raise ValueError(f"prior {self.id!r} takes images {tuple(self.image_shape)} but "
                             f"{data.name!r} has images {tuple(data.image_shape)}")
        if self.num_classes is not None and data.num_classes != self.num_classes:
            raise ValueError(f"prior {self.id!r} knows {self.num_classes} classes but "
                             f"{data.name!r} has {data.num_classes}")

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
        return self.decode(torch.zeros(len(labels), *self.latent_shape), labels, strength=1.0,
                           steps=steps, guidance=guidance, seed=seed, batch_size=batch_size,
                           progress=progress)

    def _decode_inputs(self, latents, labels, guidance: float | None):
        """``decode``'s checked latents and labels, and the guidance (default: the prior's)."""
        latents = check_latents(latents, self.latent_shape)
        return (latents, check_labels(labels, len(latents), self.num_classes),
                self.default_guidance if guidance is None else float(guidance))


#: the argument constraints every ``encode`` / ``decode`` implementation is decorated with
checked_encode = checked(batch_size=Int(1))
checked_decode = checked(strength=Real(0, 1), steps=Int(1), guidance=Real() | Optional,
                         batch_size=Int(1))


def check_latents(latents, latent_shape: Sequence[int], *, name: str = "latents",
                  fix: str = "encode them with this prior") -> torch.Tensor:
    """Validate ``latents`` as finite ``(N, *latent_shape)``; return float32 on the CPU.

    Raises :class:`~pqlib.checks.InvalidData` naming the shape found and the one expected.
    """
    c, h, w = latent_shape
    expected = f"(N, {c}, {h}, {w})"
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise InvalidData(f"{name} must be a torch.Tensor of shape {expected}, got {got}")
    shape = tuple(latents.shape)
    if shape[1] != c:
        raise InvalidData(f"{name} has {shape[1]} channels but this prior takes {c} "
                          f"(shape {shape}, expected {expected})")
    if shape[2:] != (h, w):
        raise InvalidData(f"{name} are {shape[2]}×{shape[3]} but this prior takes {h}×{w} "
                          f"(shape {shape}, expected {expected}); {fix}")
    latents = latents.detach().to("cpu", torch.float32)
    check_finite(latents, name)
    return latents


def check_images(images, image_shape: Sequence[int], *, name: str = "images") -> torch.Tensor:
    """Validate ``images`` as ``(N, *image_shape)`` finite values in [0, 1]; return float32."""
    images = check_latents(images, image_shape, name=name, fix="resize them first")
    if images.numel() and (images.min() < -1e-4 or images.max() > 1 + 1e-4):
        raise InvalidData(f"{name} must be in [0, 1], got values in [{images.min():.3g}, "
                          f"{images.max():.3g}]; clamp or rescale them")
    return images


def check_labels(labels, n: int | None, num_classes: int | None) -> torch.Tensor:
    """Validate class indices: an int (broadcast to ``n``) or ``(n,)`` ints in ``[0, num_classes)``."""
    if isinstance(labels, int) and not isinstance(labels, bool):
        if n is None:
            raise InvalidParameter(f"labels={labels} is a single class; pass one label per image")
        labels = torch.full((n,), labels, dtype=torch.int64)
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim != 1:
        raise InvalidData(f"labels must be a 1-D tensor of integer class indices, got dtype "
                          f"{labels.dtype} and shape {tuple(labels.shape)}")
    labels = labels.to("cpu", torch.int64)
    if n is not None and len(labels) != n:
        raise InvalidData(f"labels has {len(labels)} entries but latents has {n}; pass one "
                          f"label per latent")
    high = num_classes if num_classes is not None else math.inf
    bad = labels[(labels < 0) | (labels >= high)]
    if len(bad):
        where = "non-negative class indices" if num_classes is None else (
            f"in [0, {num_classes}) (the prior's classes)")
        raise InvalidData(f"labels must be {where}, got {bad.unique().tolist()[:5]}")
    return labels


def image_generators(seed: int, n: int, device="cpu") -> list[torch.Generator]:
    """One generator per image, seeded from ``seed``: results do not depend on the batch size."""
    seeds = torch.randint(0, 2**62, (n,),
                          generator=torch.Generator().manual_seed(int(seed))).tolist()
    return [torch.Generator(device).manual_seed(s) for s in seeds]


def batched(fn: Callable[[slice], torch.Tensor], n: int, batch_size: int, shape: Sequence[int],
            **bar) -> torch.Tensor:
    """``fn(rows)`` for the consecutive slices ``rows`` of ``batch_size`` of ``range(n)``, gathered
    in a float32 ``(n, *shape)`` tensor on the CPU; ``bar``: tqdm's arguments (a bar over batches)."""
    out = torch.empty((n, *shape))
    for i in tqdm(range(0, n, batch_size), **bar):
        out[i : i + batch_size] = fn(slice(i, i + batch_size))
    return out
