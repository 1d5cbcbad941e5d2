"""``d4m``: D4M — Dataset Distillation via Disentangled Diffusion Model (Su et al., CVPR 2024).

Encode each class's images with the prior's autoencoder, run k-means with K = IPC in the
latent space, decode the centroids with the class-conditional diffusion decoder (img2img at
``strength``), and train on them with **uniform** weights. It is DDOQ without the Voronoi
weights; both share :func:`pqlib.methods.ddoq.pushforward_quantization`.
"""

from __future__ import annotations

from ..data import ImageSet
from ..distilled import DistilledSet
from .ddoq import pushforward_quantization
from .registry import register


@register("d4m")
def distill(data: ImageSet, ipc: int, *, seed: int = 0, prior=None, quantizer: str = "kmeans",
            strength: float = 0.7, steps: int = 50, guidance: float | None = None,
            sample_latents: bool = False, iters: int = 100, progress: bool = True) -> DistilledSet:
    """D4M: k-means centroids of prior latents, decoded, uniform weights (options as ``ddoq``)."""
    return pushforward_quantization(data, ipc, seed=seed, prior=prior, weights="uniform",
                                    quantizer=quantizer, strength=strength, steps=steps,
                                    guidance=guidance, sample_latents=sample_latents,
                                    iters=iters, progress=progress)
