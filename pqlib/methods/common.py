"""Helpers shared by methods: teachers, features, per-class work and caches, stage timing.

Methods work class by class: :func:`per_class` runs a function on each class's images, here or
as one task per class on a Dask cluster (:mod:`pqlib.executor`), and the teacher features and
prior latents are stored one shard per class (:func:`class_features`, :func:`class_latents`),
so no step needs every class's tensors at once. ``data`` may be an in-memory
:class:`~pqlib.data.ImageSet` or a :class:`~pqlib.imagefolder.LazyImageFolder` (whose
``subset`` decodes only the images asked for); the helpers here use only ``labels``,
``classes``, ``name``, ``image_shape`` and ``subset``.
"""

from __future__ import annotations

import ctypes
import hashlib
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from tqdm import tqdm

from ..cache import atomic_write, cache_dir, config_hash, md5sum
from ..data import ImageSet
from ..distilled import DistilledSet
from ..executor import completed, is_dask, submit
from ..imagefolder import LazyImageFolder
from ..models import batchnorm_inputs
from ..report import W2, DistillReport, mean_w2, w2_pair
from ..train import Teacher, default_device, train_teacher

__all__ = ["resolve_teacher", "features", "teacher_pass", "class_teacher_pass", "class_features",
           "feature_w2", "selection", "resolve_prior", "class_latents", "fingerprint", "cached",
           "class_indices", "random_per_class", "select_per_class", "per_class", "per_block",
           "as_found", "Stages"]


def resolve_teacher(teacher: Teacher | str | None, data: ImageSet, *, progress: bool = True,
                    device=None) -> Teacher:
    """A :class:`~pqlib.train.Teacher` for ``data``: given, or named by a string —

    * ``"ARCH"`` (default ``"convnet_bn"``): trained on ``data.name`` once and cached;
    * ``"PATH.safetensors"``: a teacher saved by :meth:`~pqlib.train.Teacher.save`;
    * ``"ARCH:PATH.safetensors"``: the plain state dict of a pqlib ``ARCH`` network for
      ``data``'s images and classes (e.g. a converted pretrained ResNet-18, as WMDD uses).

    ``device``: where a named teacher goes (default: CUDA when available). Raises if the
    teacher takes other images or classes than ``data``'s.
    """
    from ..train import load_teacher

    if teacher is None or isinstance(teacher, str):
        arch, sep, path = (teacher or "convnet_bn").rpartition(":")
        if sep:
            teacher = teacher_from_weights(path, arch, data, device=device)
        elif path.endswith(".safetensors"):
            teacher = load_teacher(path, device=default_device(device))
        else:
            teacher = train_teacher(data.name, path, progress=progress, device=device)
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be a pqlib.train.Teacher or an architecture name, got {type(teacher).__name__}")
    teacher.check_compatible(data)
    return teacher


def teacher_from_weights(path: str | Path, arch: str, data: ImageSet, *, device=None) -> Teacher:
    """A :class:`~pqlib.train.Teacher` from the state dict in ``path`` (safetensors) of the
    pqlib network ``arch`` built for ``data``'s image shape and classes; its accuracy is
    unknown (``None``) and its id names the file's md5."""
    from ..checks import CorruptFile, InvalidParameter
    from ..models import build

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher weights {str(path)!r} not found")
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error type for a damaged file
        raise CorruptFile(path, "safetensors weights file", "replace it with the exported "
                          f"state dict of a {arch} ({type(err).__name__})") from None
    (c, h, _), k = data.image_shape, data.num_classes
    model = build(arch, c, k, h)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), "")
        raise InvalidParameter(
            f"teacher weights {str(path)!r} do not fit a pqlib {arch!r} for {data.name!r} "
            f"({k} classes, images {data.image_shape}): {detail}; export the weights of a "
            f"network trained on these classes") from None
    return Teacher(model.to(default_device(device)).eval(), None, arch, data.name,
                   {"weights": path.name, "md5": md5sum(path)}, 0.0, k, data.image_shape)


@contextmanager
def as_found(model: torch.nn.Module):
    """``model`` in eval mode with gradients of its parameters off, for the ``with`` block; every
    module's mode and every parameter's ``requires_grad`` are put back as they were found
    (the teacher is shared between methods, students and notebooks)."""
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def features(teacher: Teacher, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Penultimate-layer features of ``images`` (N, C, H, W) → (N, D), float32 (computed in fp32;
    the ``"features"`` of :func:`teacher_pass`)."""
    return teacher_pass(teacher, images, batch_size)["features"]


def class_indices(data: ImageSet) -> list[torch.Tensor]:
    """Indices of each class's images, in order: one int64 tensor per class."""
    return [torch.nonzero(data.labels == c).flatten() for c in range(data.num_classes)]


def random_per_class(data: ImageSet, ipc: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``ipc`` images per class drawn without replacement (class by class), (C·ipc,)."""
    return torch.cat([idx[torch.randperm(len(idx), generator=generator)[:ipc]]
                      for idx in class_indices(data)])


def selection(data: ImageSet, index: torch.Tensor, **report) -> DistilledSet:
    """A DistilledSet of the real training images at ``index`` with uniform weights; ``report``:
    further :class:`~pqlib.report.DistillReport` fields (e.g. ``teacher``)."""
    index = torch.as_tensor(index, dtype=torch.int64)
    chosen = data.subset(index)  # decodes only these images of a lazy folder
    return DistilledSet(chosen.images, chosen.labels, torch.ones(len(index)), data.classes,
                        DistillReport(train_indices=index.tolist(), **report))


def select_per_class(data: ImageSet, teacher: Teacher | str | None, pick, *,
                     progress: bool = True) -> DistilledSet:
    """The real images that ``pick`` chooses in each class from their teacher features:
    ``pick(feats)``, feats (n_c, D), returns indices into the class. ``teacher`` as in
    :func:`resolve_teacher`; the report names it."""
    teacher = resolve_teacher(teacher, data, progress=progress)
    chosen = [idx[pick(class_features(teacher, data.subset(idx)))] for idx in class_indices(data)]
    return selection(data, torch.cat(chosen), teacher=teacher.id)


def per_class(fn, data: ImageSet | LazyImageFolder, *args, pool=None, desc: str = "classes",
              progress: bool = True, **kwargs) -> list:
    """``fn(part, c, *args, **kwargs)`` for every class c, ``part`` = the class's images (an
    :class:`~pqlib.data.ImageSet`): here, one class after the other, or as one task per class
    on ``pool`` (:func:`pqlib.executor.executor`). Returns the results in class order.

    On a Dask cluster the ``args`` (prior, teacher, ...) go to every worker once, and a
    :class:`~pqlib.imagefolder.LazyImageFolder` too: each task decodes its class's images on
    its worker (so the workers must see the folder at the same path), and the machine that
    submits holds no pixels."""
    ship = is_dask(pool) and not isinstance(data, LazyImageFolder)  # each task gets its class
    jobs = [(fn, c, data.subset(idx) if ship else None, None if ship else idx)
            for c, idx in enumerate(class_indices(data))]
    with tqdm(total=len(jobs), desc=desc, unit="class", disable=not progress,
              mininterval=2.0) as bar:
        return _tasks(pool, _class_task, jobs, (None if ship else data, *args), kwargs,
                      name=desc, tick=bar.update)


def per_block(fn, blocks: list[tuple], *shared, pool=None, seed: int, **kwargs) -> list:
    """``fn(*shared, *blocks[b], seed=seed + b, **kwargs)`` for every block b: here, one after
    the other, or as one task per block on ``pool``, ``shared`` (e.g. the teacher) sent to each
    worker once. Results in block order."""
    jobs = [(fn, args, seed + b) for b, args in enumerate(blocks)]
    return _tasks(pool, _block_task, jobs, shared, kwargs, name=fn.__name__)


def _tasks(pool, task, jobs: list[tuple], shared: tuple, kwargs: dict, *, name: str,
           tick=lambda n=1: None) -> list:
    """``[task(*job, *shared, **kwargs) for job in jobs]``: here, one after the other (freeing
    memory in between), or one task per job on ``pool``; ``tick(1)`` after each job. On Dask
    ``shared`` goes to every worker once; data sent that way dies with the last worker holding
    it (unlike results, Dask cannot compute it again) and the tasks needing it are cancelled:
    those are submitted again, with ``shared`` sent again, up to twice."""
    if pool is None:
        out = []
        for job in jobs:
            out.append(task(*job, *shared, **kwargs))
            release_freed_memory()
            tick()
        return out
    done: dict[int, object] = {}
    for _ in range(3):
        sent = [pool.scatter([a], broadcast=True, hash=False)[0] for a in shared] \
            if is_dask(pool) else shared
        futures = {j: submit(pool, task, *job, *sent, name=f"{name}-{j}", **kwargs)
                   for j, job in enumerate(jobs) if j not in done}
        for f in completed(list(futures.values())):
            tick(0 if f.cancelled() else 1)
        done |= {j: f.result() for j, f in futures.items() if not f.cancelled()}
        if len(done) == len(jobs):
            return [done[j] for j in range(len(jobs))]
    raise RuntimeError(f"{len(jobs) - len(done)} {name} tasks lost their inputs with a dying "
                       "worker three times; see the Dask workers' logs for why they die")


def release_freed_memory() -> None:
    """Give freed memory back to the system (glibc's ``malloc_trim``; a no-op elsewhere), after
    a class or a block of classes: otherwise the heap grows class after class with blocks a
    class no longer uses. (Dask's workers do the same through ``MALLOC_TRIM_THRESHOLD_``.)"""
    with suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # dlopen returns the loaded library: cheap


def steady_heap(threshold: int = 4 << 20) -> None:
    """Serve every block of ``threshold`` bytes or more by ``mmap`` (glibc's ``mallopt``; a no-op
    elsewhere), so it goes back to the system when freed. glibc's own threshold rises to the
    largest block freed (up to 32 MiB): distilling many classes of a few MiB each then
    fragments its heap, whose peak grew by 83 MiB from 10 to 100 classes of a lazy image folder
    (``benchmarks/memory_scale.py``). It costs eager CPU training up to ~20 % (page faults), so
    ``pqlib distill`` sets it for image folders only."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # -3: M_MMAP_THRESHOLD


def _class_task(fn, c: int, part, idx: torch.Tensor | None, source, *args, **kwargs):
    """One class's task of :func:`per_class`: ``fn`` on the class's images, ``part`` (or, for
    a lazy folder, ``source``'s images at ``idx``, decoded here: on the worker)."""
    return fn(source.subset(idx) if part is None else part, c, *args, **kwargs)


def _block_task(fn, block: tuple, seed: int, *shared, **kwargs):
    """One block's task of :func:`per_block`."""
    return fn(*shared, *block, seed=seed, **kwargs)


class Stages:
    """Wall time of named stages: ``with stages("encode"): ...``; ``stages.seconds`` maps each
    stage to its seconds, rounded to the millisecond.

    :meth:`run` also caches a stage's tensors when ``reuse`` is true, under
    ``$PQLIB_CACHE/stages``, keyed by ``model_id``, :func:`fingerprint` of ``data``, pqlib
    version, git commit, ``key`` (ipc, seed) and the parameters of this and the earlier
    :meth:`run` stages (the options that shape the images, never the weighting).
    ``stages.reused`` lists the stages that came from the cache.
    """

    def __init__(self, data: ImageSet | None = None, model_id: str = "", *, reuse: bool = False,
                 **key):
        self.seconds: dict[str, float] = {}
        self.data, self.model_id, self.reuse, self.key = data, model_id, reuse, key
        self.reused: list[str] = []

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)

    def run(self, name: str, compute, **params):
        """``compute()`` (a tensor or a dict of tensors) timed as stage ``name``; with ``reuse``,
        from the cache if an earlier call with the same key stored it (else stored)."""
        with self(name):
            if not self.reuse:
                return compute()
            out, hit = cached("stages", self.model_id, self.data, compute, self.tag(name, **params))
        self.reused += [name] * hit
        return out

    def tag(self, name: str, **params) -> str:
        """The cache-name suffix of stage ``name`` (adds ``params`` to the key, see :meth:`run`);
        for stages cached piece by piece (one entry per class) with :func:`cached`."""
        from .._version import __version__
        from ..provenance import git_commit

        self.key.update(params)
        return f"-{name}-" + config_hash({**self.key, "stage": name, "pqlib": __version__,
                                          "commit": git_commit()})


def fingerprint(data: ImageSet | LazyImageFolder) -> str:
    """Short content hash of a dataset (name, shapes, labels and a strided sample of pixels);
    of a lazy folder, :meth:`~pqlib.imagefolder.LazyImageFolder.fingerprint` (no decoding)."""
    if isinstance(data, LazyImageFolder):
        return data.fingerprint()
    h = hashlib.sha256()
    h.update(f"{data.name}|{tuple(data.images.shape)}".encode())
    h.update(data.labels.numpy().tobytes())
    h.update(data.images.flatten()[::997].numpy().tobytes())
    return h.hexdigest()[:12]


def cached(kind: str, model_id: str, data: ImageSet, compute, tag: str = ""
           ) -> tuple[torch.Tensor, bool]:
    """What ``compute()`` makes from ``data`` with a model: from the cache if it is there.

    The entry is ``$PQLIB_CACHE/<kind>/<model_id>-<fingerprint(data)><tag>.safetensors``.

    ``compute()`` returns a tensor (stored as ``"x"``, returned as a tensor) or a dict of
    named tensors (returned as such). A lock file makes concurrent runs (sweep workers)
    compute an entry once: the second waits and then loads what the first wrote.
    """
    import fcntl

    key = f"{model_id}-{fingerprint(data)}{tag}"
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


@torch.no_grad()
def teacher_pass(teacher: Teacher, images: torch.Tensor, batch_size: int = 256
                 ) -> dict[str, torch.Tensor]:
    """One float32 forward pass of ``teacher`` over ``images`` (N, C, H, W).

    Returns ``"features"`` (N, D), the penultimate features, and for the k-th BatchNorm layer
    (none for a teacher without BN) ``"bn{k}.mean"`` and ``"bn{k}.var"`` (channels,): the
    per-channel mean and biased variance of that layer's input over the images (WMDD's
    statistics). Each batch's moments come from BatchNorm's own float32 kernel (3–4× faster than
    ``torch.var_mean`` on CPU); batches are merged with Chan et al.'s pairwise update in float64
    on per-channel vectors only, so no float64 copy of an activation is made (a float64
    two-pass computation agrees to ~1e-6).
    """
    with as_found(teacher.model) as model, batchnorm_inputs(model) as rec:
        device = next(model.parameters()).device
        feats, moments = [], [None] * len(rec.layers)
        for i in range(0, len(images), batch_size):
            feats.append(model.features(images[i : i + batch_size].to(device)).float().cpu())
            for k, t in enumerate(rec.inputs):
                mean, var = torch.batch_norm_update_stats(t.float(), None, None, 0.0)  # biased
                count = t.numel() // t.shape[1]
                batch = (count, mean.double().cpu(), var.double().cpu() * count)
                moments[k] = batch if moments[k] is None else _merge_moments(moments[k], batch)
    out = {"features": torch.cat(feats)}
    for k, (count, mean, m2) in enumerate(moments):
        out[f"bn{k}.mean"], out[f"bn{k}.var"] = mean.float(), (m2 / count).float()
    return out


def _merge_moments(a, b):
    """Chan et al. (1979): merge (count, mean, centred sum of squares) of two samples."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + delta**2 * (na * nb / n)


def class_teacher_pass(teacher: Teacher, part: ImageSet) -> dict[str, torch.Tensor]:
    """:func:`teacher_pass` of the images of one class (``part``), cached under
    ``$PQLIB_CACHE/teacher_pass``, one file per class: the features that herding, k-center,
    WMDD and :func:`feature_w2` use and WMDD's BatchNorm statistics come from one pass."""
    return cached("teacher_pass", teacher.id, part, lambda: teacher_pass(teacher, part.images))[0]


def class_features(teacher: Teacher, part: ImageSet) -> torch.Tensor:
    """Teacher features (n, D) of the images of one class (``part``), from
    :func:`class_teacher_pass` (cached)."""
    return class_teacher_pass(teacher, part)["features"]


def resolve_prior(prior, data: ImageSet, *, device=None):
    """A generative prior for ``data``: given, or named by a string —

    * ``"pixel"``: the identity (:class:`~pqlib.priors.PixelPrior`);
    * ``"sd:MODEL_DIR"``: Stable Diffusion img2img from a local diffusers folder, prompted with
      ``data``'s class names, on ``device`` (default: CUDA when available; float16 there);
    * ``"tiny:PREFIX"``: the :class:`~pqlib.priors.TinyLatentDiffusion` weights at ``PREFIX``;
    * a dataset name: its trained tiny prior (``load_prior``); default ``data.name``.

    Raises ValueError if the prior was made for other data.
    """
    from .. import priors

    if prior is None or isinstance(prior, str):
        kind, _, path = (prior or data.name).partition(":")
        if prior == "pixel":
            prior = priors.PixelPrior(data.image_shape, num_classes=data.num_classes)
        elif kind == "sd" and path:
            prior = priors.StableDiffusionPrior(path, device=device, class_names=data.classes)
        elif kind == "tiny" and path:
            prior = priors.load_prior(path=path)
        else:
            prior = priors.load_prior(prior or data.name)
    prior.check_compatible(data)
    return prior


def class_latents(prior, part: ImageSet, *, sample: bool = False, seed: int = 0
                  ) -> tuple[torch.Tensor, bool]:
    """``prior.encode`` (n, *latent_shape) of the images of one class (``part``), cached under
    ``$PQLIB_CACHE/latents`` by prior and images, one file per class.

    Returns the latents and whether they came from the cache.
    """
    return cached("latents", prior.id, part,
                  lambda: prior.encode(part.images, sample=sample, seed=seed, progress=False),
                  f"-sample{seed}" if sample else "-mean")


def feature_w2(teacher: Teacher, data: ImageSet, distilled: DistilledSet) -> W2:
    """W2 between each class's real teacher features and the distilled set's, averaged over classes.

    One yardstick for every method (selection, synthesis, pushforward): the distilled images are
    embedded by the same teacher as the real ones; "weighted" uses the set's weights
    (:func:`pqlib.report.class_w2`).
    """
    points = features(teacher, distilled.images)
    return mean_w2([w2_pair(class_features(teacher, data.subset(idx)), points[rows],
                            distilled.weights[rows])
                    for c, idx in enumerate(class_indices(data))
                    if (rows := distilled.labels == c).any()])
