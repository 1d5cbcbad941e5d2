"""``PixelPrior``: the identity prior, so every latent-space method also runs in pixel space."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Prior, check_images, checked_decode, checked_encode

__all__ = ["PixelPrior"]


class PixelPrior(Prior):
    """Identity encoder and decoder: latents are the images themselves (ablation).

    Parameters
    ----------
    image_shape : ``(C, H, W)`` of the images
    num_classes : if given, labels passed to :meth:`decode` are checked against it

    ``decode`` ignores labels, strength, steps, guidance and seed (after checking them) and
    clamps the latents to [0, 1].
    """

    name = "pixel"

    def __init__(self, image_shape: Sequence[int], *, num_classes: int | None = None):
        if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
            raise ValueError(f"image_shape={tuple(image_shape)} must be (C, H, W) with positive sizes")
        self.image_shape = self.latent_shape = tuple(int(s) for s in image_shape)
        self.num_classes = num_classes
        self.config = {"image_shape": list(self.image_shape), "num_classes": num_classes}

    @checked_encode
    def encode(self, images: torch.Tensor, *, sample: bool = False, seed: int = 0,
               batch_size: int = 256, progress: bool = True) -> torch.Tensor:
        """Return a float32 copy of ``images`` (N, C, H, W) in [0, 1]."""
        return check_images(images, self.image_shape).clone()

    @checked_decode
    def decode(self, latents: torch.Tensor, labels, *, strength: float = 0.7, steps: int = 50,
               guidance: float | None = None, seed: int = 0, batch_size: int = 256,
               progress: bool = True) -> torch.Tensor:
        """Return ``latents`` clamped to [0, 1] (the img2img knobs are checked, then ignored)."""
        latents, _, _ = self._decode_inputs(latents, labels, guidance)  # checks the labels too
        return latents.clamp(0, 1)
