"""``d4m``: D4M — Dataset Distillation via Disentangled Diffusion Model (Su et al., CVPR 2024).

Encode each class's images with the prior's autoencoder, run k-means with K = IPC in the
latent space, decode the centroids with the class-conditional diffusion decoder (img2img at
``strength``), and train on them with **uniform** weights. It is DDOQ without the Voronoi
weights: :func:`pqlib.methods.ddoq.distill` registered as ``"d4m"`` with ``weights="uniform"``
fixed, so it has DDOQ's other options and, for the same seed, gives the images of
``distill("ddoq", ..., weights="uniform")`` bit for bit.
"""

from . import ddoq
from .registry import register

register("d4m", weights="uniform")(ddoq.distill)
