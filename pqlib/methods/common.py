"""Helpers shared by methods: teachers, features, per-class loops."""

from __future__ import annotations

import hashlib

import torch
from safetensors.torch import load_file, save

from ..cache import atomic_write, cache_dir
from ..data import ImageSet
from ..distilled import DistilledSet
from ..train import Teacher, train_teacher

__all__ = ["resolve_teacher", "features", "cached_features", "feature_w2", "selection", "resolve_prior",
           "encoded_latents", "fingerprint"]


def resolve_teacher(teacher: Teacher | str | None, data: ImageSet, *, progress: bool = True) -> Teacher:
    """A :class:`~pqlib.train.Teacher` for ``data``: given, or by architecture name (default
    ``"convnet_bn"``), trained once and cached. Raises if it was trained on other data."""
    if teacher is None or isinstance(teacher, str):
        teacher = train_teacher(data.name, teacher or "convnet_bn", progress=progress)
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be a pqlib.train.Teacher or an architecture name, got {type(teacher).__name__}")
    teacher.check_compatible(data)
    return teacher


@torch.no_grad()
def features(teacher: Teacher, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate-layer features of ``images`` (N, C, H, W) → (N, D), float32 (computed in fp32)."""
    teacher.model.eval()
    device = next(teacher.model.parameters()).device
    return torch.cat([teacher.model.features(images[i : i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(images), batch_size)])


def selection(data: ImageSet, index: torch.Tensor, meta: dict | None = None) -> DistilledSet:
    """A DistilledSet of the real training images at ``index`` with uniform weights."""
    index = torch.as_tensor(index, dtype=torch.int64)
    return DistilledSet(data.images[index].clone(), data.labels[index].clone(),
                        torch.ones(len(index)), data.classes,
                        dict(meta or {}, train_indices=index.tolist()))


def fingerprint(data: ImageSet) -> str:
    """Short content hash of a dataset (name, shapes, labels and a strided sample of pixels)."""
    h = hashlib.sha256()
    h.update(f"{data.name}|{tuple(data.images.shape)}".encode())
    h.update(data.labels.numpy().tobytes())
    h.update(data.images.flatten()[::997].numpy().tobytes())
    return h.hexdigest()[:12]


def _cached(kind: str, key: str, compute) -> tuple[torch.Tensor, bool]:
    """Load ``$PQLIB_CACHE/<kind>/<key>.safetensors`` or compute and store it.

    ``compute()`` returns a tensor (stored as ``"x"``, returned as a tensor) or a dict of
    named tensors (returned as such). A lock file makes concurrent runs (sweep workers)
    compute an entry once: the second waits and then loads what the first wrote.
    """
    import fcntl

    folder = cache_dir(kind)
    path = folder / f"{key}.safetensors"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            try:
                stored = load_file(str(path))
                return (stored["x"] if set(stored) == {"x"} else stored), True
            except Exception:  # a damaged cache entry is recomputed
                path.unlink()
        x = compute()
        tensors = {k: v.contiguous() for k, v in x.items()} if isinstance(x, dict) else {"x": x.contiguous()}
        with atomic_write(path) as f:
            f.write(save(tensors))
        return (tensors if isinstance(x, dict) else tensors["x"]), False


def cached_features(teacher: Teacher, data: ImageSet) -> torch.Tensor:
    """Teacher features of every image of ``data`` (N, D), cached under ``$PQLIB_CACHE/features``."""
    key = f"{teacher.id}-{fingerprint(data)}"
    return _cached("features", key, lambda: features(teacher, data.images))[0]


def resolve_prior(prior, data: ImageSet):
    """A generative prior for ``data``: given, by name (``"pixel"`` or a dataset name), or the
    default ``load_prior(data.name)``. Raises ValueError if it was made for other data."""
    from .. import priors

    if prior is None:
        prior = priors.load_prior(data.name)
    elif isinstance(prior, str):
        prior = (priors.PixelPrior(data.image_shape, num_classes=data.num_classes)
                 if prior == "pixel" else priors.load_prior(prior))
    prior.check_compatible(data)
    return prior


def encoded_latents(prior, data: ImageSet, *, sample: bool = False, seed: int = 0,
                    progress: bool = True) -> tuple[torch.Tensor, bool]:
    """``prior.encode`` of every image of ``data`` (N, *latent_shape), cached by prior and data.

    Returns the latents and whether they came from the cache.
    """
    key = f"{prior.id}-{fingerprint(data)}-{'sample' + str(seed) if sample else 'mean'}"
    return _cached("latents", key,
                   lambda: prior.encode(data.images, sample=sample, seed=seed, progress=progress))


def feature_w2(teacher: Teacher, data: ImageSet, distilled: DistilledSet) -> dict:
    """W2 between each class's real teacher features and the distilled set's, averaged over classes.

    One yardstick for every method (selection, synthesis, pushforward): the distilled images are
    embedded by the same teacher as the real ones. Returns ``{"weighted", "uniform",
    "per_class_weighted", "per_class_uniform"}`` where "weighted" uses the set's weights.
    """
    from ..transport import wasserstein2

    real = cached_features(teacher, data)
    fake = features(teacher, distilled.images)
    out = {"per_class_weighted": [], "per_class_uniform": []}
    for c in range(data.num_classes):
        rows = distilled.labels == c
        if not rows.any():
            continue
        fc = real[data.labels == c]
        out["per_class_weighted"].append(wasserstein2(fc, fake[rows], b=distilled.weights[rows].double()))
        out["per_class_uniform"].append(wasserstein2(fc, fake[rows]))
    out["weighted"] = sum(out["per_class_weighted"]) / len(out["per_class_weighted"])
    out["uniform"] = sum(out["per_class_uniform"]) / len(out["per_class_uniform"])
    return out
