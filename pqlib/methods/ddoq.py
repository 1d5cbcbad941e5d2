"""``ddoq``: Dataset Distillation as pushforward Optimal Quantization (Tan & Slade, 2025).

Per class c, with an encoder E and a conditional decoder D of a generative prior:

1. encode the class's training images, :math:`z_i = E(x_i)`;
2. quantize the empirical latent measure :math:`\\mu_c = \\frac1{n_c}\\sum_i \\delta_{z_i}` with
   K = IPC points :math:`c_k` (k-means, or CLVQ = mini-batch k-means);
3. weight each point by the mass of its Voronoi cell, :math:`w_k = |\\{i: z_i \\in V_k\\}| / n_c`.
   For a fixed codebook these weights are optimal, and

   .. math:: W_2^2\\Big(\\mu_c, \\sum_k w_k \\delta_{c_k}\\Big) = \\frac1{n_c}\\sum_i \\min_k |z_i - c_k|^2,

   so the weighted measure is never farther from :math:`\\mu_c` than the uniform one (D4M);
4. decode each point with the class label, :math:`\\tilde x_k = D(c_k, c)` (img2img / SDEdit
   at ``strength``), and train students with the weights.

Each class is one task (:func:`distill_class`, seeded ``seed + c``): classes can run anywhere,
in any order (:func:`~pqlib.methods.common.per_class`), with the same result.

``weights="uniform"`` reproduces :mod:`~pqlib.methods.d4m` exactly for the same seed;
``weights="sqrt"`` is the variance-reduced heuristic a reviewer describes for the final paper
(√count, normalised per class — its exact form in the paper is unverified).
``quantizer="barycenter", weights="barycenter"`` crosses the two papers: WMDD's free-support
barycenter with learned weights (:func:`pqlib.transport.barycenter`), computed in DDOQ's latent
space and decoded like DDOQ's points.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from ..checks import Int, InvalidParameter, OneOf, Optional, Real, checked
from ..data import ImageSet
from ..distilled import DistilledSet
from ..quantize import Quantizer, clvq, kmeans, voronoi_weights
from ..report import DistillReport, mean_w2, w2_pair
from .common import Stages, cached, class_latents, per_class, resolve_prior
from .registry import register

WEIGHTINGS = ("voronoi", "sqrt", "uniform", "barycenter")
QUANTIZERS = ("kmeans", "clvq", "barycenter")


def quantize_class(z: torch.Tensor, k: int, *, quantizer: str, seed: int, iters: int = 100,
                   clvq_steps: int | None = None, clvq_batch: int = 256, barycenter_iters: int = 10):
    """Quantize latents ``z`` (n, d) with ``k`` points: a :class:`~pqlib.quantize.Quantizer`, or
    for ``"barycenter"`` a :class:`~pqlib.transport.Barycenter` (learned weights,
    ``barycenter_iters`` alternations).

    ``"clvq"`` runs ``clvq_steps`` mini-batches of ``clvq_batch`` rows (default: 20 passes
    over the data).
    """
    from ..transport import barycenter

    if quantizer == "barycenter":
        return barycenter(z, k, iters=barycenter_iters, seed=seed)
    if quantizer == "kmeans":
        return kmeans(z, k, iters=iters, seed=seed)
    steps = clvq_steps or max(1, 20 * len(z) // clvq_batch)
    return clvq(z, k, steps=steps, batch_size=clvq_batch, seed=seed)


def class_weights(q, weights: str, z: torch.Tensor) -> torch.Tensor:
    """Per-point weights (k,) of a class's quantizer or barycenter ``q`` of its latents ``z``
    under a weighting scheme, summing to 1 (``"barycenter"``: the barycenter's learned weights)."""
    mass = (q.weights if isinstance(q, Quantizer) else voronoi_weights(z, q.points)).double()
    w = {"voronoi": mass, "sqrt": mass.sqrt(), "uniform": torch.ones_like(mass),
         "barycenter": q.weights.double()}[weights]
    return (w / w.sum()).float()


def distill_class(part: ImageSet, c: int, prior, ipc: int, *, sample: bool, seed: int,
                  weights: str, decoder: dict, reuse_tag: str | None = None, **options) -> tuple:
    """One class's work (a task of :func:`~pqlib.methods.common.per_class`): encode the class's
    images ``part`` (cached), quantize them with ``ipc`` points and weight the points, then
    decode the points with ``prior.decode(..., **decoder)``; seed ``seed + c`` for each. With a
    ``reuse_tag`` the decoded images come from (or go to) the stage cache. Returns (quantizer,
    weights, latent W2 pair, √distortion, (latents cached?, images cached?), images,
    (encode, quantize, decode seconds))."""
    start = time.perf_counter()
    z, hit = class_latents(prior, part, sample=sample, seed=seed + c)
    encoded = time.perf_counter()
    z = z.flatten(1)
    q = quantize_class(z, ipc, seed=seed + c, **options)
    w = class_weights(q, weights, z)
    quantized = time.perf_counter()

    def decode():
        return prior.decode(q.points.view(-1, *prior.latent_shape).float(), c, seed=seed + c,
                            progress=False, **decoder)

    images, reused = cached("stages", prior.id, part, decode, reuse_tag) if reuse_tag else (
        decode(), False)
    return (q, w, w2_pair(z, q.points, w), distortion(q, z) ** 0.5, (hit, reused), images,
            (encoded - start, quantized - encoded, time.perf_counter() - quantized))


def distortion(q, z: torch.Tensor) -> float:
    """Mean squared distance of ``z`` to the nearest point of ``q``: W2² with Voronoi masses."""
    return q.distortion if isinstance(q, Quantizer) else float(
        torch.cdist(z.double(), q.points.double()).min(1).values.square().mean())


@register("ddoq")
@checked(weights=OneOf(*WEIGHTINGS), quantizer=OneOf(*QUANTIZERS), strength=Real(0, 1),
         steps=Int(1), iters=Int(1), clvq_steps=Optional | Int(1), clvq_batch=Int(1),
         barycenter_iters=Int(1))
def distill(data: ImageSet, ipc: int, *, seed: int = 0, prior=None, weights: str = "voronoi",
            quantizer: str = "kmeans", strength: float = 0.7, steps: int = 50,
            guidance: float | None = None, sample_latents: bool = False, iters: int = 100,
            clvq_steps: int | None = None, clvq_batch: int = 256, barycenter_iters: int = 10,
            reuse: bool = False, pool=None, progress: bool = True) -> DistilledSet:
    """DDOQ: per-class optimal quantization of prior latents, decoded, with Voronoi weights.

    Registered as ``"ddoq"``, and as ``"d4m"`` with ``weights="uniform"`` fixed
    (:mod:`pqlib.methods.d4m`).

    Parameters
    ----------
    prior : a prior from :mod:`pqlib.priors` or its name; default ``load_prior(data.name)``
    weights : ``"voronoi"`` (cell masses, default), ``"sqrt"`` (√mass), ``"uniform"`` (= D4M)
        or ``"barycenter"`` (the learned weights of ``quantizer="barycenter"``)
    quantizer : ``"kmeans"`` (Lloyd, ``iters`` iterations), ``"clvq"`` (mini-batch k-means:
        ``clvq_steps`` mini-batches of ``clvq_batch`` latents; default 20 passes) or
        ``"barycenter"`` (WMDD's learned-weight barycenter, ``barycenter_iters`` alternations)
    strength : img2img / SDEdit strength of the decoder (0 = plain VAE decode)
    steps, guidance : scheduler steps and classifier-free guidance of the decoder
    sample_latents : encode with a posterior sample (as D4M's code) instead of the mean
    reuse : take the decoded images from the stage cache (see :func:`pqlib.distill`); the
        weighting is not part of the key, so ``d4m``, ``ddoq`` and ``ddoq-sqrt`` share them
    pool : run each class's encoding, quantization and decoding as one task on this executor
        (:func:`pqlib.executor.executor`; default: here, class after class)

    Returns
    -------
    DistilledSet whose report holds the stage times (encode, quantize, decode), the latent
    W2 (``w2_latent``) and each class's quantizer (``barycenters`` for ``"barycenter"``).
    """
    if weights == "barycenter" and quantizer != "barycenter":
        raise InvalidParameter(f"distill: weights='barycenter' needs quantizer='barycenter', not "
                               f"quantizer={quantizer!r}; pass quantizer='barycenter' or choose "
                               f"weights in {WEIGHTINGS[:3]}")
    prior = resolve_prior(prior, data)
    options = dict(quantizer=quantizer, iters=iters, clvq_steps=clvq_steps, clvq_batch=clvq_batch,
                   barycenter_iters=barycenter_iters)
    decoder = dict(strength=strength, steps=steps, guidance=guidance)
    tag = (Stages(ipc=ipc, seed=seed, sample=sample_latents).tag("decode", **options, **decoder)
           if reuse else None)  # the decode cache's key (reuse only)
    found = per_class(distill_class, data, prior, ipc, pool=pool, desc="ddoq classes",
                      progress=progress, sample=sample_latents, seed=seed, weights=weights,
                      decoder=decoder, reuse_tag=tag, **options)
    quantizers, w, pairs, voronoi, hits, images, seconds = zip(*found)
    points, w = torch.cat([q.points for q in quantizers]), torch.cat(w)
    w2 = replace(mean_w2(pairs), voronoi=float(sum(voronoi) / len(voronoi)))
    report = DistillReport(
        prior=prior.id, latents_cached=all(h for h, _ in hits), w2_latent=w2,
        stage_seconds={name: round(sum(t), 3) for name, t in  # summed over classes
                       zip(("encode", "quantize", "decode"), zip(*seconds))},
        reused_stages=["decode"] * all(r for _, r in hits), latent_dim=points.shape[1],
        **{"barycenters" if quantizer == "barycenter" else "quantizers": quantizers})
    labels = torch.arange(data.num_classes).repeat_interleave(ipc)
    return DistilledSet(torch.cat(images), labels, w, data.classes, report)
