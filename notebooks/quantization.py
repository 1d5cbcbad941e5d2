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
# # Optimal quantization and the Wasserstein distance
#
# ## Overview
#
# Both papers this book follows replace a data set by a few points. DDOQ reads the choice of
# those points as *optimal quantization*: $K$ points $c_1, \dots, c_K$ that minimise the mean
# squared distance of the data to its nearest point, each weighted by the mass of its Voronoi
# cell. WMDD takes a Wasserstein barycenter with learned weights. This page checks the theory
# both rely on, with the code the methods use (`pqlib.quantize`, `pqlib.transport`):
#
# - how fast the distortion falls with $K$, and what that says about the dimension of the data;
# - that Lloyd's algorithm reaches the known optimum where one is known;
# - Lloyd against competitive learning (CLVQ, the mini-batch k-means of D4M and DDOQ);
# - how much the Voronoi weights lower the Wasserstein distance (DDOQ against D4M);
# - a barycenter with learned weights (WMDD) next to one with uniform weights.
#
# The statements themselves are derived on the {doc}`theory page <../book/theory>`.

# %% tags=["hide-output"]
# Colab: pip-install pqlib if it is missing, from repository.url in the book's _config.yml.
import importlib.util, pathlib, subprocess, sys, yaml  # noqa: E401, I001 (a 5-line cell)
cfgs = [p for p in map(pathlib.Path, ["_config.yml", "../_config.yml"]) if p.is_file()]
url = cfgs and yaml.safe_load(cfgs[0].read_text())["repository"]["url"]
if not importlib.util.find_spec("pqlib") and (url or print("pqlib: set repository.url in _config.yml")):
    subprocess.run([sys.executable, "-m", "pip", "install", f"pqlib @ git+{url}"], check=True)

# %% tags=["parameters"]
distribution = "all"  # "all", "uniform", "gaussian" or "pixels"
dims = [1, 2, 4]  # dimensions of the uniform cubes
k_grid = [2, 4, 8, 16, 32, 64]  # numbers of points K
n_samples = 20_000  # points drawn from each synthetic distribution
pixels = "mnist"  # dataset whose flattened images are the "pixels" distribution
pixel_samples = 10_000  # images taken from it
iters = 100  # at most this many Lloyd iterations per quantizer
seed = 0

# %%
import math

import matplotlib.pyplot as plt
import pandas as pd
import torch

from pqlib import data, plotting
from pqlib.quantize import clvq, kmeans, voronoi_weights
from pqlib.transport import barycenter, wasserstein2

plotting.set_theme()
if distribution not in ("all", "uniform", "gaussian", "pixels"):
    raise ValueError(f"distribution={distribution!r}: use all, uniform, gaussian or pixels")

# %% [markdown]
# ## Distortion against the number of points
#
# For a measure $\mu$ on $\R^d$ and points $c_1, \dots, c_K$, the distortion is
#
# $$
# e_K^2 = \E_{X \sim \mu} \min_k \lVert X - c_k \rVert^2
#       = \W_2^2\Big(\mu, \sum_k w_k \delta_{c_k}\Big), \qquad w_k = \mu(C_k),
# $$ (eq-nb-distortion)
#
# where $C_k$ is the Voronoi cell of $c_k$. Zador's theorem says that the optimal distortion
# of a measure with a density on $\R^d$ decays as
#
# $$
# e_K^2 \sim Q_d \, \lVert h \rVert_{d/(d+2)} \, K^{-2/d}, \qquad K \to \infty,
# $$ (eq-nb-zador)
#
# so on log–log axes the distortion is a line of slope $-2/d$, and a measured slope gives an
# *effective dimension* $d_\text{eff} = -2/\text{slope}$: the $O(K^{-1/d})$ rate of DDOQ's
# corollary with the dimension the data actually has. We draw the samples: uniform cubes,
# a standard Gaussian in the plane, and the flattened images of a real dataset.

# %%
gen = torch.Generator().manual_seed(seed)
samples = {}
if distribution in ("all", "uniform"):
    samples.update({f"uniform d={d}": torch.rand(n_samples, d, generator=gen) for d in dims})
if distribution in ("all", "gaussian"):
    samples["gaussian d=2"] = torch.randn(n_samples, 2, generator=gen)
if distribution in ("all", "pixels"):
    images = data.load(pixels).images[:pixel_samples].flatten(1)
    samples[f"{pixels} pixels d={images.shape[1]}"] = images
{name: tuple(x.shape) for name, x in samples.items()}

# %% [markdown]
# Each sample is quantized with Lloyd's algorithm (k-means++ start) for every $K$ in the grid.

# %%
quantizers = {(name, k): kmeans(x, k, iters=iters, seed=seed)
              for name, x in samples.items() for k in k_grid}
e2 = {n: [quantizers[n, k].distortion for k in k_grid] for n in samples}

fig, ax = plt.subplots()
slopes = {n: plotting.loglog_fit(ax, k_grid, e2[n], label=n) for n in samples}
ax.set(xlabel="number of points $K$", ylabel="distortion $e_K^2$")
ax.legend(fontsize="small")
plt.show()

# %% [markdown]
# **Figure 1.** Distortion of the Lloyd quantizer against $K$ on log–log axes, with
# least-squares lines (dashed) fitted over the whole grid of $K$.

# %%
ambient = {name: x.shape[1] for name, x in samples.items()}
rates = pd.DataFrame({"slope": slopes, "ambient d": ambient})
rates["d_eff = -2/slope"] = -2 / rates["slope"]
rates.round(3)

# %% [markdown]
# The uniform cubes and the Gaussian sit close to their dimension: the rate of
# {eq}`eq-nb-zador` is visible already at small $K$. The images live in a space of hundreds of
# pixels but quantize like data of a much lower dimension: that effective dimension, not the
# pixel count, sets how fast more images per class can pay off.
#
# ## A check against the exact optimum
#
# For the uniform distribution on $[0, 1]$ the optimal $K$-quantizer is known: the midpoints
# of $K$ equal cells, with distortion $1/(12K^2)$.

# %%
x1 = torch.rand(n_samples, 1, generator=torch.Generator().manual_seed(seed))  # U[0, 1]
exact = pd.DataFrame(index=pd.Index(k_grid, name="K"))
exact["measured"] = [kmeans(x1, k, iters=iters, seed=seed).distortion for k in k_grid]
exact["1/(12K²)"] = [1 / (12 * k**2) for k in k_grid]
exact["measured / optimum"] = exact["measured"] / exact["1/(12K²)"]
exact.style.format("{:.3e}").format("{:.4f}", subset="measured / optimum")

# %% [markdown]
# Lloyd's algorithm lands within a few percent of the optimum. What remains is the sampling
# error of $n$ points and, for larger $K$, the slow convergence of Lloyd in one dimension: it
# stops after `iters` iterations or once an iteration improves the distortion by less than
# $10^{-6}$ of itself.
#
# ## Lloyd against competitive learning
#
# D4M and DDOQ quantize with mini-batch k-means, the CLVQ of Pagès with step $1/\text{count}$:
# each mini-batch moves only the points it is nearest to, so the data never need to be in
# memory at once. One Lloyd iteration reads all the data, so we compare the two per pass.

# %%
name, x = list(samples.items())[-1]
k, passes, batch = k_grid[len(k_grid) // 2], 15, 256
lloyd = kmeans(x, k, iters=passes - 1, tol=None, seed=seed)
online = clvq(x, k, steps=passes * math.ceil(len(x) / batch), batch_size=batch, seed=seed)

fig, ax = plt.subplots()
ax.plot(range(1, passes + 1), lloyd.history, marker="o", label="Lloyd")
ax.plot(range(1, passes + 1), online.history, marker="s", label=f"CLVQ, batches of {batch}")
ax.axhline(online.distortion, color="C1", linestyle=":", label="CLVQ, final exact pass")
ax.set(xlabel="pass over the data", ylabel="distortion", title=f"{name}, K = {k}")
ax.legend()
plt.show()

# %% [markdown]
# **Figure 2.** Distortion seen during each pass: for Lloyd, of the points at the start of the
# pass; for CLVQ, the average over the pass's mini-batches just before each update.

# %%
pd.DataFrame({"Lloyd": [lloyd.distortion], "CLVQ": [online.distortion]},
             index=[f"distortion after {passes} passes"]).round(4)

# %% [markdown]
# CLVQ makes most of its progress in the first pass, while Lloyd has made one step from its
# k-means++ start; after a few passes Lloyd's exact steps catch up and end slightly lower.
# This is why D4M and DDOQ can afford CLVQ on data that does not fit in memory.
#
# ## Voronoi weights against uniform weights: DDOQ against D4M
#
# By {eq}`eq-nb-distortion`, weighting each point by the mass of its Voronoi cell gives the
# smallest Wasserstein distance a fixed codebook can have. D4M keeps the same points with
# uniform weights $1/K$. We compute both distances with POT's exact solver.

# %%
w2 = pd.DataFrame([{"distribution": name, "K": k, "distortion": q.distortion,
                    "W2 Voronoi": wasserstein2(samples[name], q.points, b=q.weights),
                    "W2 uniform": wasserstein2(samples[name], q.points)}
                   for (name, k), q in quantizers.items()])
identity = (w2["W2 Voronoi"] ** 2 / w2["distortion"] - 1).abs().max()
print(f"largest |W2² / distortion - 1| over all codebooks: {identity:.1e}")
w2["reduction %"] = 100 * (1 - w2["W2 Voronoi"] / w2["W2 uniform"])
reduction = w2.pivot(index="K", columns="distribution", values="reduction %")[list(samples)]
reduction.round(1)

# %% [markdown]
# The identity {eq}`eq-nb-distortion` holds to solver precision. The reduction is large where
# the cells carry unequal masses, as for the Gaussian, whose points in the tails have light
# cells, and in one dimension, where any mismatch of masses has to be carried along the line.
# It is small where the cells have nearly equal masses, as for the uniform squares and cubes
# and, here, for raw pixels. DDOQ reports about 16 % in the latent space of Stable Diffusion.

# %%
ax = reduction.plot(logx=True, marker="o", xlabel="number of points $K$",
                    ylabel="W2 reduction by Voronoi weights (%)")
ax.set_xticks(k_grid, labels=k_grid)
ax.minorticks_off()
ax.legend(fontsize="small")
plt.show()

# %% [markdown]
# **Figure 3.** Reduction of $W_2$ between the data and the codebook when the uniform
# weights of D4M are replaced by the Voronoi masses of DDOQ, same points.
#
# ## A barycenter with learned weights
#
# WMDD summarises a class by a free-support Wasserstein barycenter with $K$ points and
# learned weights, alternating a fixed-point step for the positions with mirror-descent steps
# on the weights. We take a mixture of three blobs with masses 0.6, 0.3 and 0.1. With uniform
# weights every point has to carry 1/8 of the mass, more than a light blob can give, so a point
# that serves the light blob also takes mass from its neighbour and is pulled towards it.
# Learned weights let each point carry the mass around it.

# %%
centres = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
blob = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), 2000, replacement=True, generator=gen)
mixture = centres[blob] + torch.randn(2000, 2, generator=gen) * torch.tensor([1.0, 0.5])
fits = {"uniform weights": barycenter(mixture, 8, learn_weights=False, seed=seed),
        "learned weights": barycenter(mixture, 8, learn_weights=True, seed=seed)}

fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True, sharey=True)
for ax, (title, (points, weights)) in zip(axes, fits.items()):
    ax.scatter(*mixture.T, s=3, alpha=0.25, color="0.5")
    ax.scatter(*points.T, s=2500 * weights, color="C3", edgecolor="k", alpha=0.8)
    for xy, w in zip(points.tolist(), weights.tolist()):
        ax.annotate(f"{w:.2f}", xy, xytext=(0, 14), textcoords="offset points", ha="center")
    ax.set(title=title, aspect="equal")
plt.show()

# %% [markdown]
# **Figure 4.** Eight-point barycenters of a three-blob mixture (grey); marker area is
# proportional to the weight, printed above each point.

# %%
pd.DataFrame({
    "W2 with these weights": [wasserstein2(mixture, p, b=w / w.sum()) for p, w in fits.values()],
    "W2 with Voronoi weights": [wasserstein2(mixture, p, b=voronoi_weights(mixture, p))
                                for p, _ in fits.values()],
}, index=list(fits)).round(4)

# %% [markdown]
# Learning the weights lowers $W_2$; the learned weights land close to the Voronoi masses of
# their own support, the optimum {eq}`eq-nb-distortion` gives for fixed points, so a learned-weight
# barycenter and a Voronoi-weighted quantizer are two routes to the same kind of summary.
