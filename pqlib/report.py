"""What a distillation reports: per-class W2 figures and the typed :class:`DistillReport`.

Per-class W2 is computed in one place, :func:`class_w2`: for each class c, the Wasserstein-2
distance between the data of class c and the distilled points of class c, once with the
points' weights and once with uniform weights,

.. math::

    W_2\\Big(\\frac1{n_c}\\sum_{i: y_i = c} \\delta_{x_i},\\; \\sum_{k: \\ell_k = c} w_k \\delta_{p_k}\\Big)
    \\quad\\text{and}\\quad
    W_2\\Big(\\frac1{n_c}\\sum_{i: y_i = c} \\delta_{x_i},\\; \\frac1{K_c}\\sum_{k: \\ell_k = c} \\delta_{p_k}\\Big),

averaged over the classes that have points. Methods use it in their own space (DDOQ / D4M:
the prior's latents; WMDD: the teacher's features) and
:func:`pqlib.methods.common.feature_w2` in the teacher's feature space for every method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch

__all__ = ["W2", "class_w2", "w2_pair", "mean_w2", "DistillReport"]


@dataclass(frozen=True)
class W2:
    """Per-class W2 between the data and a weighted set, with the set's weights and uniform ones.

    Attributes
    ----------
    weighted, uniform : float
        Mean over classes of W2 with the set's weights / with uniform weights.
    per_class_weighted, per_class_uniform : tuple of float
        One value per class that has points, in class order (empty when not recorded, as in
        the ``w2_feature`` of sets saved by pqlib 0.1).
    voronoi : float or None
        DDOQ / D4M: mean over classes of √distortion of the class's quantizer, the W2 with
        Voronoi weights (equal to ``weighted`` for ``weights="voronoi"``).
    """

    weighted: float
    uniform: float
    per_class_weighted: tuple[float, ...] = ()
    per_class_uniform: tuple[float, ...] = ()
    voronoi: float | None = None

    @property
    def reduction_pct(self) -> float:
        """How much lower W2 is with the set's weights than with uniform weights, in %."""
        return 100.0 * (1 - self.weighted / self.uniform)

    def to_dict(self) -> dict:
        """JSON form: the fields, without ``voronoi`` and the per-class values when unset."""
        return {k: v for k, v in asdict(self).items() if v is not None and v != ()}

    @classmethod
    def from_dict(cls, d: dict) -> W2:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def class_w2(x: torch.Tensor, x_labels: torch.Tensor, points: torch.Tensor,
             point_labels: torch.Tensor, weights: torch.Tensor) -> W2:
    """W2 between each class of ``x`` and the ``points`` of that class, averaged over classes.

    Parameters
    ----------
    x : tensor of shape (n, d), the data; x_labels : int64 tensor of shape (n,)
    points : tensor of shape (m, d); point_labels : int64 tensor of shape (m,)
    weights : tensor of shape (m,), the points' masses, summing to 1 within each class

    Returns
    -------
    :class:`W2` over the classes that have points (in class order), computed exactly in float64
    by :func:`pqlib.transport.wasserstein2`.
    """
    return mean_w2([w2_pair(x[x_labels == c], points[point_labels == c], weights[point_labels == c])
                    for c in torch.unique(point_labels).tolist()])


def w2_pair(x: torch.Tensor, points: torch.Tensor, weights: torch.Tensor) -> tuple[float, float]:
    """W2 between one class's data ``x`` (n, d) and its ``points`` (k, d): with the points'
    ``weights`` (k,) and with uniform weights."""
    from .transport import wasserstein2

    return wasserstein2(x, points, b=weights.double()), wasserstein2(x, points)


def mean_w2(pairs: list[tuple[float, float]]) -> W2:
    """The :class:`W2` of the per-class (weighted, uniform) pairs of :func:`w2_pair`."""
    weighted, uniform = zip(*pairs)
    return W2(float(sum(weighted) / len(weighted)), float(sum(uniform) / len(uniform)),
              tuple(weighted), tuple(uniform))


# keys a report never writes (in-memory results)
_IN_MEMORY = ("quantizers", "barycenters", "extra")
_W2_FIELDS = ("w2_latent", "w2_feature", "w2_feature_synthesized")


@dataclass(frozen=True)
class DistillReport:
    """What one distillation did; ``DistilledSet.report``. Fields a method does not fill are None.

    Attributes
    ----------
    method, dataset, ipc, seed, options : the call (set by :func:`pqlib.distill`; ``options``
        as given, objects by their id)
    teacher, prior : ids of the teacher / generative prior used
    latents_cached : whether the prior's latents of the data came from the cache
    latent_dim : dimension of the space DDOQ / D4M quantize in
    stage_seconds : wall time per stage, e.g. ``{"encode", "quantize", "decode"}`` (s)
    reused_stages : DDOQ / D4M / WMDD: the stages loaded from the stage cache
        (``pqlib.distill(..., reuse=True)``), ``[]`` when every stage was computed
    w2_latent : DDOQ / D4M: W2 of the quantizers to each class's latents
    w2_feature : WMDD: W2 of the barycenters to each class's teacher features
    w2_feature_synthesized : WMDD: W2 of the synthesized images' features to each class's
    loss_history, loss_first_last : optimisation losses (DM, WMDD), at most 100 entries
    train_indices : selections: indices of the chosen training images
    init_indices : DM: indices of the real images the synthetic ones started from
    pqlib_version, commit, wall_time_s : provenance (set by :func:`pqlib.distill`)
    quantizers : DDOQ / D4M: the :class:`~pqlib.quantize.Quantizer` of each class (in memory only)
    barycenters : WMDD: the :class:`~pqlib.transport.Barycenter` of each class (in memory only)
    extra : keys of a saved report this version does not know (kept, and written back)

    :meth:`to_dict` / :meth:`from_dict` convert to and from the JSON of ``meta.json``, whose
    layout is that of pqlib 0.1's ``DistilledSet.meta``, so sets saved by earlier versions load
    (``w2_reduction_pct``, written beside ``w2_latent``, is recomputed from it; WMDD's feature
    W2 now also carries its per-class values).
    """

    method: str | None = None
    dataset: str | None = None
    ipc: int | None = None
    seed: int | None = None
    options: dict | None = None
    teacher: str | None = None
    prior: str | None = None
    latents_cached: bool | None = None
    latent_dim: int | None = None
    stage_seconds: dict[str, float] | None = None
    reused_stages: list[str] | None = None
    w2_latent: W2 | None = None
    w2_feature: W2 | None = None
    w2_feature_synthesized: W2 | None = None
    loss_history: list | None = None
    loss_first_last: list[float] | None = None
    train_indices: list[int] | None = None
    init_indices: list[int] | None = None
    pqlib_version: str | None = None
    commit: str | None = None
    wall_time_s: float | None = None
    quantizers: tuple | None = field(default=None, repr=False, compare=False)
    barycenters: tuple | None = field(default=None, repr=False, compare=False)
    extra: dict = field(default_factory=dict)

    @property
    def method_w2(self) -> tuple[str, W2] | None:
        """The method's own W2 and its space: ``("latent", w2_latent)`` (DDOQ / D4M),
        ``("feature", w2_feature)`` (WMDD), or None (selections, DM)."""
        if self.w2_latent is not None:
            return "latent", self.w2_latent
        return ("feature", self.w2_feature) if self.w2_feature is not None else None

    def to_dict(self) -> dict:
        """The JSON form (``meta.json``): the fields that are set, W2 figures as dicts."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if (value is None and f.name != "commit") or f.name in _IN_MEMORY:
                continue  # the commit stays, null outside a git checkout: unknown, not absent
            out[f.name] = value.to_dict() if isinstance(value, W2) else value
            if f.name == "w2_latent":
                out["w2_reduction_pct"] = value.reduction_pct
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> DistillReport:
        """Read :meth:`to_dict`'s form (or a ``meta.json`` written by pqlib 0.1)."""
        known = {f.name for f in fields(cls)} - set(_IN_MEMORY)
        kw = {k: (W2.from_dict(v) if k in _W2_FIELDS and v is not None else v)
              for k, v in d.items() if k in known}
        # w2_reduction_pct is not kept: the W2 recomputes it
        return cls(**kw, extra={k: v for k, v in d.items()
                                if k not in known and k != "w2_reduction_pct"})
