# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A latent diffusion prior for MNIST
#
# ## Overview
#
# D4M and DDOQ never quantize pixels. They encode every training image with the VAE of a latent
# diffusion model, quantize each class's latents, and push the quantized points back to images
# with an img2img (SDEdit) pass of the diffusion model: noise a latent up to the timestep set by
# the *strength* $s$, denoise it conditioned on the class, decode it with the VAE.
#
# The papers use Stable Diffusion on ImageNet. Its weights cannot be downloaded here, and a laptop
# CPU could not run it anyway, so pqlib trains its own small latent diffusion model for MNIST from
# stock `diffusers` parts: an `AutoencoderKL` (1×28×28 images ↔ 4×8×8 latents), a
# class-conditional `UNet2DModel` with a null class for classifier-free guidance, and DDIM
# sampling. The same `encode` / `decode` interface drives `StableDiffusionPrior` for readers who
# have the weights and a GPU.
#
# This page loads the trained prior shipped with pqlib (or retrains it with `train=True`), and
# shows what the decoder does: reconstructions, samples per class, and SDEdit paths from a class
# centroid at several strengths. A classifier trained on all of MNIST (the *teacher*) judges them.

# %% tags=["hide-output"]
# Colab: pip-install pqlib if it is missing, from repository.url in the book's _config.yml.
import importlib.util, pathlib, subprocess, sys, yaml  # noqa: E401, I001 (a 5-line cell)
cfgs = [p for p in map(pathlib.Path, ["_config.yml", "../_config.yml"]) if p.is_file()]
url = cfgs and yaml.safe_load(cfgs[0].read_text())["repository"]["url"]
if not importlib.util.find_spec("pqlib") and (url or print("pqlib: set repository.url in _config.yml")):
    subprocess.run([sys.executable, "-m", "pip", "install", f"pqlib @ git+{url}"], check=True)

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch

from pqlib.data import load
from pqlib.plotting import show_images
from pqlib.priors import load_prior, train_prior
from pqlib.train import train_teacher

# %% tags=["parameters"]
dataset = "mnist"   # the prior's training set
train = False       # True retrains the prior from scratch (~35-40 min on 2 CPU cores)
n_show = 10         # images per row in the figures
n_eval = 20         # samples per class for the agreement numbers (the benchmark uses 100)
seed = 0
strengths = [0.0, 0.3, 0.5, 0.7, 0.9, 1.0]


# %% [markdown]
# ## The prior
#
# `load_prior` finds the shipped weights by the hash of the training configuration; `train_prior`
# is what `pqlib train-prior --dataset mnist` runs (VAE for one epoch, then the UNet on the
# encoded training set, with resumable checkpoints).

# %%
prior = train_prior(dataset).prior if train else load_prior(dataset)
record = prior.record
print(prior)
print(f"trained by `{record.get('command')}` in {record.get('seconds', 0) / 60:.1f} min "
      f"({record.get('steps')} steps, latent scale {prior.scaling_factor:.3f})")

# %% [markdown]
# The training losses: the VAE's L1 reconstruction error (pixels in [-1, 1]) and the UNet's
# ε-prediction error.

# %%
rows = [row[:3] for row in record.get("losses", [])]  # (phase, step, loss); VAE rows also carry the KL
losses = pd.DataFrame(rows, columns=["phase", "step", "loss"])
fig, axes = plt.subplots(1, 2, figsize=(8, 2.6))
for ax, (phase, label) in zip(axes, [("vae", "VAE L1"), ("unet", "UNet ε-MSE")]):
    part = losses[losses.phase == phase]
    ax.plot(part.step, part.loss)
    ax.set(xlabel="step", ylabel=label, yscale="log")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Reconstructions
#
# Strength 0 is a plain VAE round trip: `decode(encode(x), y, strength=0)`. Top row: test images;
# bottom row: their reconstructions.

# %%
test, data = load(dataset, "test"), load(dataset, "train")
x = test.images[:n_show]
recon = prior.decode(prior.encode(x, progress=False), test.labels[:n_show], strength=0.0)
show_images(torch.cat([x, recon]), n_show)
plt.show()

# %% [markdown]
# ## Samples per class
#
# Strength 1 starts from pure noise: each row is one class, sampled with 50 DDIM steps and
# classifier-free guidance 3.

# %%
classes = torch.arange(data.num_classes).repeat_interleave(n_show)
samples = prior.sample(classes, seed=seed, progress=False)
show_images(samples, n_show, row_labels=list(data.classes))
plt.show()

# %% [markdown]
# ## SDEdit from a class centroid
#
# D4M and DDOQ decode cluster centres. The extreme case is one centre per class: the mean latent
# of the class (here over 500 training images per class). Decoded as is ($s=0$) it is a smooth,
# slightly blurred prototype digit; as the strength grows, the diffusion model redraws more of
# it as a sharp digit of the class, and at $s=1$ it starts from pure noise and keeps nothing of
# the centroid but the class label.

# %%
idx = torch.cat([torch.nonzero(data.labels == c)[:500, 0] for c in range(data.num_classes)])
z = prior.encode(data.images[idx], progress=False)
means = torch.stack([z[data.labels[idx] == c].mean(0) for c in range(data.num_classes)])
labels = torch.arange(data.num_classes)
path = torch.stack([prior.decode(means, labels, strength=s, seed=seed, progress=False) for s in strengths], 1)
show_images(path.flatten(0, 1), len(strengths), row_labels=list(data.classes),
            col_labels=[f"s = {s:g}" for s in strengths])
plt.show()

# %% [markdown]
# ## How good is it?
#
# The teacher labels the prior's outputs. Three numbers: its accuracy on reconstructions of test
# images, and how often it agrees with the conditioning class on samples and on SDEdits at
# strength 0.7 from the class means (`n_eval` per class here; `benchmarks/prior_quality.py`
# measures all 10,000 test images and 100 per class).

# %%
teacher = train_teacher(dataset, "convnet_bn", progress=False).model.eval()


def agreement(images, labels):
    with torch.no_grad():
        return 100.0 * (teacher(images).argmax(1) == labels).float().mean().item()


ev = torch.arange(data.num_classes).repeat_interleave(n_eval)
xt, yt = test.images[:1000], test.labels[:1000]
quality = pd.DataFrame({
    "measure": ["test images (originals)", "VAE reconstructions",
                "samples (s = 1)", "SDEdit from class mean (s = 0.7)"],
    "teacher agrees (%)": [
        agreement(xt, yt),
        agreement(prior.decode(prior.encode(xt, progress=False), yt, strength=0.0), yt),
        agreement(prior.sample(ev, seed=seed + 1, progress=False), ev),
        agreement(prior.decode(means[ev], ev, strength=0.7, seed=seed + 2, progress=False), ev),
    ],
    "images": [len(xt), len(xt), len(ev), len(ev)],
})
quality.round(1)

# %% [markdown]
# The reconstructions keep the class of almost every digit, and the guided samples and SDEdits
# land in the conditioning class almost always: the decoder is faithful enough that D4M and DDOQ
# can quantize in its latent space. The acceptance bars (≥ 98 % on reconstructions, ≥ 95 % on
# samples and on SDEdits) are checked at full size by `benchmarks/prior_quality.py`.
