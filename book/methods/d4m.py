# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   mystnb:
#     execution_mode: force
# ---

# %% [markdown]
# # D4M: k-means in a diffusion model's latent space
#
# D4M (Su et al., CVPR 2024) introduced the pipeline DDOQ builds on: encode each class with
# the autoencoder of a latent diffusion model, cluster the class's latents with (mini-batch)
# k-means into $K = \text{IPC}$ centroids, and decode each centroid with the class-conditional
# diffusion model in img2img mode (noise the centroid to the timestep given by `strength`,
# denoise with the class as condition). Every distilled image gets the same weight $1/K$:
#
# $$
# \nu_c^{\text{D4M}} = \frac1K \sum_{k=1}^K \delta_{c_k}.
# $$
#
# The paper (ImageNet, Stable Diffusion v1.5) decodes with strength 0.7, guidance 8 and class-name
# prompts, and trains students on the teacher's soft labels. Here the prior is the MNIST latent
# diffusion model trained by this repository ({doc}`/notebooks/prior`); the
# `StableDiffusionPrior` runs the paper's setting on a GPU ({doc}`../reproduce`).


# %% tags=["hide-input"]
import matplotlib.pyplot as plt

from pqlib import plotting

plotting.set_theme()
fig = plotting.pipeline(["training\nimages", "VAE\nencoder", "k-means\nper class",
                         "uniform\nweights", "DDIM img2img\ndecoder", "student"], title="D4M")
plt.show()

# %% [markdown]
# ## Distilled MNIST, 10 images per class
#
# All weights are $1/10$. Compare the images with DDOQ's ({doc}`ddoq`): they are the same
# (same codebook, same seed); only the weights differ.

# %% tags=["hide-input"]
plotting.show_run("d4m", 10);
