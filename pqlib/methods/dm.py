"""``dm``: Distribution Matching (Zhao & Bilen, WACV 2023).

Synthetic images (initialised from random real images) are optimised so that, under many
*randomly initialised* ConvNet embeddings ψ, the mean embedding of each class's synthetic
images matches that of a real batch of the class:

.. math::

    \\min_S \\; \\mathbb{E}_{\\psi} \\sum_c \\Big\\| \\frac{1}{|B_c|} \\sum_{x \\in B_c} \\psi(a(x))
    - \\frac{1}{|S_c|} \\sum_{s \\in S_c} \\psi(a(s)) \\Big\\|^2

with the same random augmentation a applied to a class's real and synthetic batch (DSA's
siamese draw: one op group and one parameter draw per class and iteration, on standardised
images). Paper protocol: 20,000 iterations, image lr 1.0 (SGD, momentum 0.5), real batch 256.
The CPU default here is far fewer iterations (``iterations=200``); the number used is recorded
in ``meta`` and stated in the book.

The paper's lr applies to mean/std-normalised pixels; here pixels live in [0, 1], where the
same SGD step is ``lr · std²``: 1.0 × 0.3081² ≈ 0.1 on MNIST, the default. (lr 1.0 on [0, 1]
pixels saturates them to black and white within a few dozen steps at IPC 1.)
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from ..augment import default_augmentation, dsa, dsa_strategy
from ..checks import Int, OneOf, checked
from ..data import ImageSet
from ..distilled import DistilledSet
from ..models import build
from ..protocols import channel_stats
from ..report import DistillReport
from ..train import autocast, resolve_precision
from .common import Stages, class_indices, random_per_class
from .registry import register


@register("dm")
@checked(iterations=Int(0), real_batch=Int(1), augment=OneOf("dsa", "independent", "none"))
def distill(data: ImageSet, ipc: int, *, seed: int = 0, iterations: int = 200, lr: float = 0.1,
            real_batch: int = 128, arch: str = "convnet", augment: str = "dsa",
            clamp: bool = False, precision: str = "auto", progress: bool = True,
            callback=None) -> DistilledSet:
    """Distribution matching with random ConvNet embeddings.

    Parameters
    ----------
    iterations : outer iterations (one fresh random network each); the paper uses 20,000
    lr : SGD learning rate on the [0, 1] pixels (momentum 0.5); the paper's 1.0 on normalised pixels
    real_batch : real images per class per iteration
    arch : embedding network, re-initialised every iteration
    augment : ``"dsa"`` (the paper: DSA on standardised images, one draw per class and
        iteration shared by the real and the synthetic batch), ``"independent"`` (pqlib's first
        version: kornia affine + cutout drawn per image) or ``"none"``
    clamp : keep the synthetic pixels in [0, 1] after every step. Off by default, as in the
        paper: pqlib stores images in [0, 1], so they are clamped once, at the end. Clamping
        every step made the IPC-1 images ones the teacher mislabels (soft-label students
        41.8 % against 92.0 % unclamped, 200 iterations; ``benchmarks/dm_curve.py``)
    precision : embeddings in ``"bf16"`` autocast or ``"fp32"`` (``"auto"``: bf16 where native)
    callback : called as ``callback(iteration, images)`` after each iteration (e.g. to
        evaluate snapshots); ``images`` is a detached (M, C, H, W) tensor
    """
    g = torch.Generator().manual_seed(seed)
    per_class = class_indices(data)
    init = random_per_class(data, ipc, g)
    syn = data.images[init].clone().requires_grad_(True)
    labels = data.labels[init].clone()
    opt = torch.optim.SGD([syn], lr=lr, momentum=0.5)
    c, h, _ = data.image_shape
    mean, std = _standardizer(data)
    strategy = dsa_strategy(c)
    kornia = default_augmentation(data.image_shape) if augment == "independent" else None
    precision = resolve_precision(precision)
    history, stages = [], Stages()
    # the networks' initialisations come from this seed alone
    with stages("synthesize"), torch.random.fork_rng():
        torch.manual_seed(seed)
        for it in tqdm(range(iterations), desc=f"dm ipc={ipc}", disable=not progress, mininterval=2.0):
            net = build(arch, c, data.num_classes, h).train().requires_grad_(False)
            loss = torch.zeros(())
            for k, idx in enumerate(per_class):
                real = data.images[idx[torch.randint(len(idx), (real_batch,), generator=g)]]
                both = (torch.cat([real, syn[k * ipc : (k + 1) * ipc]]) - mean) / std
                if augment == "dsa":
                    both = dsa(both, strategy, generator=g, shared=True)
                elif kornia is not None:
                    both = kornia(both)
                with torch.no_grad(), autocast(precision):
                    target = net.features(both[:real_batch]).float().mean(0)
                with autocast(precision):
                    embedded = net.features(both[real_batch:]).float().mean(0)
                loss = loss + ((target - embedded) ** 2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if clamp:
                with torch.no_grad():
                    syn.clamp_(0, 1)
            history.append(loss.item())
            if callback is not None:
                callback(it + 1, syn.detach().clamp(0, 1))
    report = DistillReport(stage_seconds=stages.seconds, init_indices=init.tolist(),
                           loss_history=history[:: max(1, len(history) // 100)],
                           loss_first_last=[history[0], history[-1]] if history else None)
    return DistilledSet(syn.detach().clamp(0, 1), labels, torch.ones(len(labels)), data.classes, report)


@torch.no_grad()
def objective(data: ImageSet, images: torch.Tensor, ipc: int, *, seed: int = 0, networks: int = 20,
              real_batch: int = 256, arch: str = "convnet") -> float:
    """DM's matching loss of ``images`` (class-sorted, ``ipc`` per class) averaged over
    ``networks`` random embeddings and real batches drawn from ``seed``, without augmentation:
    a fixed yardstick to compare image sets (the training loss redraws both every step)."""
    g = torch.Generator().manual_seed(seed)
    c, h, _ = data.image_shape
    mean, std = _standardizer(data)
    per_class = class_indices(data)
    total = 0.0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(networks):
            net = build(arch, c, data.num_classes, h).train()
            for k, idx in enumerate(per_class):
                real = data.images[idx[torch.randint(len(idx), (real_batch,), generator=g)]]
                target = net.features((real - mean) / std).mean(0)
                embedded = net.features((images[k * ipc : (k + 1) * ipc] - mean) / std).mean(0)
                total += float(((target - embedded) ** 2).sum())
    return total / networks


def _standardizer(data: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of shape (1, C, 1, 1) DM standardises with (the DC constants on MNIST)."""
    mean, std = channel_stats(data.name, data.images[:10_000])
    return torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
