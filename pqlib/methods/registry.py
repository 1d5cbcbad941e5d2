"""Method registry and the one entry point :func:`distill`."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import replace

from .._version import __version__
from ..data import ImageSet, load
from ..distilled import DistilledSet
from ..provenance import git_commit

__all__ = ["distill", "list_methods", "register", "check_ipc"]

_REGISTRY: dict[str, tuple[Callable[..., DistilledSet], dict]] = {}


def register(name: str, **preset):
    """Decorator adding ``fn(data, ipc, *, seed, **options) -> DistilledSet`` as method ``name``.

    ``preset`` options are fixed for this name and are not options of it: D4M is
    ``register("d4m", weights="uniform")`` on DDOQ's function.
    """

    def wrap(fn):
        _REGISTRY[name] = (fn, preset)
        return fn

    return wrap


def list_methods() -> list[str]:
    """Names of the registered methods."""
    _import_all()
    return sorted(_REGISTRY)


def _import_all() -> None:
    """Import every method's module: importing it registers the method."""
    from . import d4m, ddoq, dm, herding, kcenter, random, wmdd  # noqa: F401


def check_ipc(data: ImageSet, ipc) -> int:
    """Validate images-per-class against the data: 1 ≤ ipc ≤ smallest class."""
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
        raise ValueError(f"ipc={ipc!r} must be an integer >= 1")
    counts = data.class_counts()
    smallest = int(counts.min())
    if ipc > smallest:
        c = int(counts.argmin())
        raise ValueError(
            f"ipc={ipc} is larger than class {data.classes[c]!r} of {data.name!r}, which has "
            f"{smallest} images; choose ipc <= {smallest}"
        )
    return ipc


def _describe(value):
    """JSON-friendly description of an option value (objects by their id or name)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    for attr in ("id", "name"):
        if isinstance(getattr(value, attr, None), str):
            return getattr(value, attr)
    return type(value).__name__


def distill(method: str, data: ImageSet | str, ipc: int, *, seed: int = 0, reuse: bool = False,
            pool=None, **options) -> DistilledSet:
    """Distill ``data`` to ``ipc`` images per class with a registered method.

    Parameters
    ----------
    method : one of :func:`methods` (``random``, ``herding``, ``kcenter``, ``dm``, ``d4m``,
        ``ddoq``, ``wmdd``)
    data : an :class:`~pqlib.data.ImageSet`, a dataset name (its train split is loaded), or a
        :class:`~pqlib.imagefolder.LazyImageFolder` (``load(..., lazy=True)``) for the methods
        that work class by class (``ddoq``, ``d4m``, ``wmdd``, ``random``, ``herding``,
        ``kcenter``), which then decode one class at a time
    ipc : images per class, 1 ≤ ipc ≤ smallest class
    seed : all randomness of the method derives from it
    reuse : load the expensive stages (DDOQ / D4M: decode; WMDD: barycenter, synthesize) from
        the stage cache when an earlier call computed them with the same images-shaping
        options, and store them otherwise (variants that differ only in weights share them);
        ``report.reused_stages`` names the stages loaded. Methods without stages ignore it.
    pool : an executor (:func:`pqlib.executor.executor`) for the methods that work class by
        class (``ddoq``, ``d4m``, ``wmdd``): one task per class, the same result as without;
        the other methods run here
    **options : method options (see each method's docstring)

    Returns
    -------
    DistilledSet whose ``report`` (:class:`~pqlib.report.DistillReport`) records method,
    dataset, ipc, seed, options, pqlib version, git commit and wall time, beside the method's
    own stage timings and W2 figures. Every method draws its randomness from ``seed`` alone.
    """
    _import_all()
    if method not in _REGISTRY:
        raise ValueError(f"unknown method {method!r}; registered methods: {', '.join(sorted(_REGISTRY))}")
    if isinstance(data, str):
        data = load(data, "train")
    check_ipc(data, ipc)
    fn, preset = _REGISTRY[method]
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        valid = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY
                       and k not in ("seed", "reuse", "pool", *preset))
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"method {method!r} has no option(s) {unknown}; its options: {valid}")
    start = time.perf_counter()
    # methods with cached stages / class tasks
    staged = {k: v for k, v in (("reuse", reuse), ("pool", pool)) if k in params}
    out = fn(data, ipc, seed=seed, **preset, **options, **staged)
    out.report = replace(
        out.report, method=method, dataset=data.name, ipc=ipc, seed=seed,
        options={k: _describe(v) for k, v in options.items() if k != "progress"},
        pqlib_version=__version__, commit=git_commit(),
        wall_time_s=round(time.perf_counter() - start, 3))
    return out
