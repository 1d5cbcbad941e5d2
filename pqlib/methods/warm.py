"""The one-time stages that a sweep's runs share, computed before the runs start.

Every run of the experiment notebook loads the teacher pass of each class of its training set
(features and BatchNorm statistics, :func:`~pqlib.methods.common.class_teacher_pass`), and
D4M / DDOQ runs load the prior's latents of each class
(:func:`~pqlib.methods.common.class_latents`). Both are cached, so the first run to need one
computes it while the others wait on its lock with an idle core. :func:`pqlib.sweep.run_sweep`
runs :func:`warm_stage` for each stage of :func:`shared_stages` as its first tasks instead, side
by side on the workers, so that the runs find them in the cache.
"""

from __future__ import annotations

import torch

from .common import class_indices, class_latents, class_teacher_pass, resolve_prior

__all__ = ["shared_stages", "warm_stage", "LATENT_METHODS"]

#: methods that encode the training set with the dataset's prior (unless given another prior)
LATENT_METHODS = ("d4m", "ddoq")


def shared_stages(parameters: dict) -> list[tuple]:
    """The cached stages an experiment-notebook run with these ``parameters`` needs, as
    ``(stage, dataset, teacher, teacher_epochs, train_size)`` for :func:`warm_stage`."""
    p, options = parameters, parameters.get("options") or {}
    key = (p["dataset"], p.get("teacher") or "convnet_bn", p.get("teacher_epochs") or 0,
           p.get("train_size") or 0)
    latents = p["method"] in LATENT_METHODS and not {"prior", "sample_latents"} & set(options)
    return [("teacher", *key)] + [("latents", *key)] * latents


def warm_stage(stage: str, dataset: str, teacher: str = "convnet_bn", teacher_epochs: int = 0,
               train_size: int = 0, *, threads: int = 0) -> str:
    """Compute ``stage`` (``"teacher"`` or ``"latents"``) for every class of the training set
    the experiment notebook uses (its first ``train_size`` images when that is not 0), into the
    cache, with ``threads`` torch threads (0: unchanged). Returns ``""``, or the error a run
    would meet (it is the runs' to report: warming is only a head start)."""
    from ..data import load
    from ..train import train_teacher

    if threads:
        torch.set_num_threads(threads)
    try:
        data = load(dataset, "train")
        if train_size:
            data = data.subset(torch.arange(min(train_size, len(data))))
        if stage == "teacher":
            model = train_teacher(dataset, teacher, epochs=teacher_epochs or None, progress=False)
            for idx in class_indices(data):
                class_teacher_pass(model, data.subset(idx))
        else:
            prior = resolve_prior(None, data)
            for idx in class_indices(data):
                class_latents(prior, data.subset(idx))
    except Exception as err:  # noqa: BLE001 (reported by the sweep; the runs raise it themselves)
        return f"{type(err).__name__}: {err}"
    return ""
