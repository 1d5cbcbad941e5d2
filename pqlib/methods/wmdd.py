"""``wmdd``: Dataset Distillation via the Wasserstein Metric (Liu et al., ICCV 2025).

Per class c, with a pretrained teacher f (penultimate features) that has BatchNorm layers:

1. compute a free-support Wasserstein barycenter of the class's features with K = IPC support
   points :math:`b_{c,j}` and (optionally learned) weights :math:`w_{c,j}`
   (:func:`pqlib.transport.barycenter`);
2. record per-class BatchNorm statistics: mean :math:`\\hat\\mu_{c,l}` and variance
   :math:`\\hat\\sigma^2_{c,l}` of the input of every BN layer l on the class's real images;
3. synthesize images :math:`\\tilde x_{c,j}` from noise (or real images) by minimising

   .. math::

      \\sum_c \\sum_j \\|f(\\tilde x_{c,j}) - b_{c,j}\\|^2
      + \\lambda \\sum_c \\sum_l \\big(\\|\\mu_l(\\tilde x_c) - \\hat\\mu_{c,l}\\|^2
      + \\|\\sigma^2_l(\\tilde x_c) - \\hat\\sigma^2_{c,l}\\|^2\\big)

   with Adam (betas 0.5, 0.9), a cosine learning rate and random jitter of the images;
4. the barycenter weights become the images' training weights.

``learn_weights=False`` is the unweighted ablation: equal-mass barycenter (k-means of the
features) and uniform training weights. ``weights="voronoi"`` keeps the images and trains with
the Voronoi masses of the support points instead (the fraction of the class's features nearest
to each point: DDOQ's weights, in WMDD's feature space).
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from ..augment import default_augmentation
from ..checks import Int, OneOf, Optional, checked
from ..data import ImageSet
from ..distilled import DistilledSet
from ..models import batchnorm_inputs
from ..report import DistillReport, mean_w2, w2_pair
from ..train import Teacher, autocast, resolve_precision
from . import common
from .registry import register

BnStatistics = list[tuple[torch.Tensor, torch.Tensor]]  # (mean, variance) per BN layer


def class_bn_statistics(teacher: Teacher, images: torch.Tensor, batch_size: int = 256) -> BnStatistics:
    """Per-channel (mean, variance) of the input of every BN layer of the teacher over ``images``:
    one (mean, var) pair of float32 tensors of shape (channels,) per layer, in module order,
    from one float32 forward pass (:func:`~pqlib.methods.common.teacher_pass`)."""
    return _bn_statistics(teacher, common.teacher_pass(teacher, images, batch_size))


def _bn_statistics(teacher: Teacher, stored: dict[str, torch.Tensor]) -> BnStatistics:
    """The (mean, var) pairs of a :func:`~pqlib.methods.common.teacher_pass` result."""
    layers = sum(key.startswith("bn") for key in stored) // 2
    if not layers:
        raise ValueError(f"teacher {teacher.id!r} has no BatchNorm layers; WMDD needs e.g. convnet_bn")
    return [(stored[f"bn{k}.mean"], stored[f"bn{k}.var"]) for k in range(layers)]


def class_bn_moments(part: ImageSet, c: int, teacher: Teacher) -> BnStatistics:
    """:func:`class_bn_statistics` of one class's images ``part`` (a task of
    :func:`~pqlib.methods.common.per_class`), from the cached teacher pass that also gives the
    class's features (:func:`~pqlib.methods.common.class_teacher_pass`)."""
    return _bn_statistics(teacher, common.class_teacher_pass(teacher, part))


def cached_class_bn_statistics(teacher: Teacher, data: ImageSet, *, pool=None,
                               progress: bool = False) -> list[BnStatistics]:
    """:func:`class_bn_statistics` of every class of ``data`` (indexed by class, then layer),
    cached one file per class (:func:`class_bn_moments`), computed here or on ``pool``."""
    return common.per_class(class_bn_moments, data, teacher, pool=pool,
                            desc="wmdd BN statistics", progress=progress)


def class_barycenter(part: ImageSet, c: int, teacher: Teacher, ipc: int, *, seed: int, **options):
    """The barycenter (``ipc`` points, seed ``seed + c``) of one class's teacher features (a task
    of :func:`~pqlib.methods.common.per_class`); ``options`` of
    :func:`pqlib.transport.barycenter`."""
    from ..transport import barycenter

    return barycenter(common.class_features(teacher, part), ipc, seed=seed + c, **options)


def class_w2_pairs(part: ImageSet, c: int, teacher: Teacher, points: torch.Tensor,
                   weights: torch.Tensor | None, synthesized: torch.Tensor, ipc: int) -> tuple:
    """One class's W2 pairs (:func:`~pqlib.report.w2_pair`) between its teacher features and
    the barycenter ``points`` / the features of the ``synthesized`` images (rows ``c·ipc`` on),
    with the ``weights`` of those rows, or the Voronoi masses of the points when ``weights`` is
    None. Returns (pair of the points, pair of the synthesized images, the weights used)."""
    from ..quantize import voronoi_weights

    feats, rows = common.class_features(teacher, part), slice(c * ipc, (c + 1) * ipc)
    w = voronoi_weights(feats, points[rows]).float() if weights is None else weights[rows]
    made = common.features(teacher, synthesized[rows])
    return w2_pair(feats, points[rows], w), w2_pair(feats, made, w), w


@register("wmdd")
@checked(init=OneOf("noise", "real"), iterations=Int(0), barycenter_iters=Int(1),
         weights=OneOf("barycenter", "voronoi"), class_block=Optional | Int(1))
def distill(data: ImageSet, ipc: int, *, seed: int = 0, teacher: Teacher | str | None = None,
            learn_weights: bool = True, barycenter_iters: int = 10, iterations: int = 500,
            lr: float = 0.1, bn_weight: float = 1.0, init: str = "noise", jitter: bool = True,
            precision: str = "auto", weights: str = "barycenter", class_block: int | None = None,
            reuse: bool = False, pool=None, progress: bool = True) -> DistilledSet:
    """WMDD: images whose teacher features hit per-class barycenter points, with BN regulariser.

    Parameters
    ----------
    teacher : a :class:`~pqlib.train.Teacher` with BatchNorm (default: the cached ``convnet_bn``)
    learn_weights : learn barycenter weights (WMDD) or keep them uniform (ablation)
    barycenter_iters : alternations of position / weight updates of the barycenter
    iterations : pixel-optimisation steps (papers: 1,000–2,000; CPU default 500)
    lr : Adam learning rate on pixels in [0, 1], cosine-annealed (0.1 and ``bn_weight=1`` were chosen
        on a validation split of MNIST among lr ∈ {0.05, 0.1} × λ ∈ {0.1, 1, 10}; see
        ``benchmarks/tune_validation.py``)
    bn_weight : λ, weight of the per-class BatchNorm-statistics term
    init : ``"noise"`` (uniform noise, the paper) or ``"real"`` (random real images)
    jitter : random augmentation of the synthetic batch at every step
    class_block : synthesize the images of ``class_block`` classes at a time (block b seeds its
        jitter with ``seed + b``) instead of all classes in one batch: memory no longer grows
        with the number of classes; the same optimisation up to the jitter draws (default: one
        block, as the paper)
    precision : teacher forward/backward in ``"bf16"`` autocast or ``"fp32"`` (``"auto"``: bf16
        where it is native); the statistics and the losses are computed in float32
    weights : training weights: the barycenter's (default; uniform if not ``learn_weights``) or
        ``"voronoi"``, the Voronoi masses of its support points among the class's features
    reuse : take the barycenters and images from the stage cache (see :func:`pqlib.distill`);
        ``weights`` is not part of the key, so ``wmdd`` and ``wmdd-voronoi`` share them
    pool : run the per-class stages (barycenters, BatchNorm statistics, W2) as one task per
        class, and the synthesis as one task per class block, on this executor
        (:func:`pqlib.executor.executor`; default: here)

    Returns
    -------
    DistilledSet whose report holds the stage times (barycenter, bn_statistics, synthesize),
    the W2 of the barycenters (``w2_feature``) and of the synthesized images
    (``w2_feature_synthesized``) to each class's features, the loss history and the barycenters.
    """
    from ..transport import Barycenter

    teacher = common.resolve_teacher(teacher, data, progress=progress)
    stages = common.Stages(data, teacher.id, reuse=reuse, ipc=ipc, seed=seed)
    labels = torch.arange(data.num_classes).repeat_interleave(ipc)

    def barycenters():  # 1. per-class barycenters of the teacher features
        barys = common.per_class(class_barycenter, data, teacher, ipc, pool=pool,
                                 desc="wmdd barycenters", progress=progress, seed=seed,
                                 learn_weights=learn_weights, iters=barycenter_iters)
        return {"points": torch.cat([b.points for b in barys]), "history": torch.tensor(
                [b.history for b in barys], dtype=torch.float64),
                "weights": torch.cat([b.weights for b in barys])}

    found = stages.run("barycenter", barycenters, learn_weights=learn_weights, iters=barycenter_iters)
    barys = [Barycenter(p, w, tuple(h.tolist())) for p, w, h in zip(
        found["points"].split(ipc), found["weights"].split(ipc), found["history"])]
    with stages("bn_statistics"):  # 2. per-class BatchNorm statistics of the real images
        stats = cached_class_bn_statistics(teacher, data, pool=pool, progress=progress)
    w = torch.cat([b.weights.float() for b in barys]) if weights == "barycenter" else None

    def synthesized():  # 3. images whose features hit the barycenter points
        g = torch.Generator().manual_seed(seed)
        start = (torch.rand((len(labels), *data.image_shape), generator=g) if init == "noise"
                 else data.subset(common.random_per_class(data, ipc, g)).images)
        block = class_block or data.num_classes
        parts = common.per_block(synthesize, [
            (start[first * ipc : (first + block) * ipc],
             found["points"][first * ipc : (first + block) * ipc].float(), stats[first : first + block])
            for first in range(0, data.num_classes, block)], teacher, pool=pool,
            iterations=iterations, lr=lr, bn_weight=bn_weight, jitter=jitter,
            precision=precision, seed=seed, progress=progress and pool is None)
        hist = [torch.tensor(h, dtype=torch.float64).view(-1, 3) for _, h in parts]
        if len(hist) > 1:  # per step: the blocks' mean feature loss, summed BN loss, the total
            n = torch.tensor([len(images) for images, _ in parts], dtype=torch.float64)
            feature = sum(h[:, 1] * share for h, share in zip(hist, n / n.sum()))
            bn = sum(h[:, 2] for h in hist)
            hist = [torch.stack([feature + bn_weight * bn / data.num_classes, feature, bn], 1)]
        return {"images": torch.cat([images for images, _ in parts]), "history": hist[0]}

    out = stages.run("synthesize", synthesized, iterations=iterations, lr=lr, bn_weight=bn_weight,
                     init=init, jitter=jitter, precision=resolve_precision(precision),
                     **({"class_block": class_block} if class_block else {}))
    images, history = out["images"], out["history"].tolist()
    # the W2 of the barycenters and of the synthesized images to each class's features, and
    # the Voronoi masses of the support points when they are the training weights
    w2s = common.per_class(class_w2_pairs, data, teacher, found["points"], w, images, ipc,
                           pool=pool, desc="wmdd W2", progress=progress)
    pairs, w2_pairs_synthesized, masses = zip(*w2s)
    w = torch.cat(masses) if w is None else w
    w2, w2_synthesized = mean_w2(pairs), mean_w2(w2_pairs_synthesized)
    report = DistillReport(
        teacher=teacher.id, stage_seconds=stages.seconds, reused_stages=stages.reused,
        w2_feature=w2, w2_feature_synthesized=w2_synthesized, barycenters=tuple(barys),
        loss_history=[list(h) for h in history[:: max(1, len(history) // 100)]],
        loss_first_last=[history[0][0], history[-1][0]] if history else None)
    # 4. the barycenter weights (or the Voronoi masses) are the images' training weights
    return DistilledSet(images, labels, w, data.classes, report)


def synthesize(teacher: Teacher, start: torch.Tensor, targets: torch.Tensor,
               class_stats: list[BnStatistics], *, iterations: int, lr: float, bn_weight: float,
               jitter: bool, precision: str, seed: int, progress: bool = True
               ) -> tuple[torch.Tensor, list[tuple[float, float, float]]]:
    """Optimise images so their teacher features hit ``targets``, with the BN-statistics term.

    Parameters
    ----------
    start : (C·K, ch, H, W) initial images in [0, 1], class by class (K per class)
    targets : (C·K, D) feature targets, row i for image i
    class_stats : per class, the (mean, variance) of the input of every BN layer
        (:func:`cached_class_bn_statistics`)
    iterations, lr, bn_weight, jitter, precision : as :func:`distill`
    seed : seeds the jitter (kornia draws from the global generator: it is forked)

    Returns
    -------
    the images (detached, in [0, 1]) and the (loss, feature loss, BN loss) of every step.
    The teacher is left as it was found.
    """
    num_classes = len(class_stats)
    ipc = len(start) // num_classes
    syn = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([syn], lr=lr, betas=(0.5, 0.9))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / max(1, iterations))))
    aug = default_augmentation(tuple(start.shape[1:])) if jitter else None
    precision = resolve_precision(precision)
    layer_stats = [(torch.stack(mus), torch.stack(variances))  # per BN layer: (C, ch) each
                   for mus, variances in (zip(*layer) for layer in zip(*class_stats))]
    history = []
    with common.as_found(teacher.model) as model, batchnorm_inputs(model) as rec, torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in tqdm(range(iterations), desc=f"wmdd ipc={ipc}", disable=not progress, mininterval=2.0):
            x = aug(syn) if aug is not None else syn
            with autocast(precision):
                f = model.features(x).float()
            feature_loss = ((f - targets) ** 2).sum(1).mean()
            bn_loss = torch.zeros(())
            for t, (mu, var) in zip(rec.inputs, layer_stats):
                # each class's moments from a (C, K, ch, H, W) view: one reduction per layer (a
                # slice per class would back-propagate a full-size zero tensor per class)
                a = t.float().unflatten(0, (num_classes, ipc))
                m, v = a.mean((1, 3, 4)), a.var((1, 3, 4), unbiased=False)
                mu, var = mu.to(m.device), var.to(m.device)  # the cache keeps them on the CPU
                bn_loss = bn_loss + ((m - mu) ** 2).sum() + ((v - var) ** 2).sum()
            loss = feature_loss + bn_weight * bn_loss / num_classes
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                syn.clamp_(0, 1)
            history.append((loss.item(), feature_loss.item(), bn_loss.item()))
    return syn.detach(), history
