"""Parameter validation: constraints declared once per public function, one error type per mistake.

A public function declares what each argument may be and ``@checked`` tests the call before any
work is done (scikit-learn's declared-constraints idea)::

    @checked(k=Int(1), seed=Int(0), init=OneOf("k-means++", "random") | Tensor)
    def kmeans(x, k, *, seed=0, init="k-means++"): ...

Errors name the argument, echo the value and say what would be accepted:
``kmeans: k=0 should be an integer >= 1``. The kinds of mistake:

- :class:`InvalidParameter` — an argument outside its declared constraint (wrong type or value);
  it is both a ``ValueError`` and a ``TypeError``, so either ``except`` catches it;
- :class:`InvalidData` — a tensor of the wrong shape or dtype, empty, or holding NaN/inf;
- :class:`CorruptFile` — a file that exists but cannot be read as what it should be.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["InvalidParameter", "InvalidData", "CorruptFile", "checked", "Int", "Real",
           "OneOf", "Tensor", "Callable", "Optional", "check_matrix", "check_matrices"]


class InvalidParameter(ValueError, TypeError):
    """An argument outside its declared constraint."""


class InvalidData(ValueError):
    """A tensor of the wrong shape or dtype, empty, or holding NaN/inf values."""


class CorruptFile(ValueError):
    """A file that exists but cannot be read; the message names it and what to do."""

    def __init__(self, path: str | Path, what: str, fix: str):
        super().__init__(f"{path} is not a readable {what}; {fix}")
        self.path, self.what, self.fix = Path(path), what, fix


class Constraint:
    """One accepted kind of value: a test and what it reads as; ``a | b`` accepts either."""

    def __init__(self, accepts, text: str):
        self.accepts, self.text = accepts, text

    def __or__(self, other) -> Constraint:
        other = _as_constraint(other)
        return Constraint(lambda v: self.accepts(v) or other.accepts(v), f"{self} or {other}")

    def __str__(self) -> str:
        return self.text


def _within(v, low, high, open_low: bool = False) -> bool:
    return ((low is None or (v > low if open_low else v >= low))
            and (high is None or v <= high))


def Int(low: int | None = None, high: int | None = None) -> Constraint:
    """An integer (not a bool) in ``[low, high]``; ``None`` bounds are open."""
    return Constraint(lambda v: (isinstance(v, int | np.integer) and not isinstance(v, bool)
                                 and _within(v, low, high)),
                      "an integer" + _bounds(low, high, "[", "]"))


def Real(low: float | None = None, high: float | None = None, *,
         open_low: bool = False) -> Constraint:
    """A finite real number in ``low <= x <= high`` (``open_low`` makes it ``low < x``)."""
    return Constraint(lambda v: (isinstance(v, int | float | np.number) and not isinstance(v, bool)
                                 and math.isfinite(v) and _within(float(v), low, high, open_low)),
                      "a number" + _bounds(low, high, "(" if open_low else "[", "]"))


def OneOf(*values) -> Constraint:
    """One of the listed values (strings, None, ...)."""
    text = repr(values[0]) if len(values) == 1 else "one of " + ", ".join(map(repr, values))
    return Constraint(lambda v: any(v is x or (type(v) is type(x) and v == x) for x in values), text)


Tensor = Constraint(lambda v: isinstance(v, torch.Tensor), "a torch.Tensor")
Callable = Constraint(callable, "a callable")  # functions, bound methods, partials, __call__
Optional = OneOf(None)


def _bounds(low, high, left: str, right: str) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if left == '(' else '>='} {low}"
    if low is None:
        return f" <= {high}"
    return f" in {left}{low}, {high}{right}"


def _as_constraint(c) -> Constraint:
    """A constraint, or a type (or tuple of types) as one."""
    if isinstance(c, Constraint):
        return c
    names = [t.__name__ for t in (c if isinstance(c, tuple) else (c,))]
    return Constraint(lambda v: isinstance(v, c),
                      " or ".join(f"{'an' if n[0] in 'AEIOUaeiou' else 'a'} {n}" for n in names))


def _short(value) -> str:
    """``repr`` for scalars and short values; type and shape for tensors and long reprs."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return f"<{type(value).__name__} of shape {tuple(value.shape)}>"
    text = repr(value)
    return text if len(text) <= 80 else f"<{type(value).__name__}>"


def check(name: str, value, constraint, *, where: str = "") -> None:
    """Raise :class:`InvalidParameter` unless ``value`` satisfies ``constraint`` (a
    :class:`Constraint` or a type)."""
    constraint = _as_constraint(constraint)
    if not constraint.accepts(value):
        prefix = f"{where}: " if where else ""
        raise InvalidParameter(f"{prefix}{name}={_short(value)} should be {constraint}")


def checked(**constraints):
    """Decorator: test the named arguments of every call against their constraints first."""
    constraints = {k: _as_constraint(c) for k, c in constraints.items()}

    def wrap(fn):
        signature = inspect.signature(fn)
        if unknown := set(constraints) - set(signature.parameters):
            raise TypeError(f"@checked names {sorted(unknown)}, not parameters of {fn.__name__}")

        @functools.wraps(fn)
        def call(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            for name, c in constraints.items():
                if name in bound.arguments:
                    check(name, bound.arguments[name], c, where=fn.__name__)
            return fn(*args, **kwargs)

        return call

    return wrap


def check_matrix(x, name: str = "x") -> torch.Tensor:
    """A finite, non-empty floating ``(n_samples, d)`` tensor (a numpy array, which may be
    memory-mapped, is read through a tensor that shares its memory)."""
    if isinstance(x, np.ndarray):
        with warnings.catch_warnings():  # a read-only array (a memory map) is only read
            warnings.simplefilter("ignore", UserWarning)
            x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise InvalidData(f"{name} must be a torch.Tensor of shape (n_samples, d), "
                          f"got {type(x).__name__}")
    if x.ndim != 2:
        raise InvalidData(f"{name} must be 2-D (n_samples, d), got shape {tuple(x.shape)}; "
                          f"flatten images with {name}.flatten(1)")
    if not x.is_floating_point():
        raise InvalidData(f"{name} has dtype {x.dtype}; pass a floating tensor, e.g. {name}.float()")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidData(f"{name} is empty: shape {tuple(x.shape)}")
    check_finite(x, name)
    return x


def check_matrices(x, y, names: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`check_matrix` of ``x`` and ``y``, which must have the same number of columns."""
    x, y = check_matrix(x, names[0]), check_matrix(y, names[1])
    if x.shape[1] != y.shape[1]:
        raise InvalidData(f"dimension mismatch: {names[0]} has shape {tuple(x.shape)} but "
                          f"{names[1]} has shape {tuple(y.shape)}")
    return x, y


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise :class:`InvalidData` naming the count and first row of NaN/inf values in ``x``."""
    # a sum is finite only if every term is: one fast reduction, the exact test only if it is not
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        row = int(bad.reshape(len(x), -1).any(1).nonzero()[0, 0])
        raise InvalidData(f"{name} contains {int(bad.sum())} NaN/inf values (first in row {row}); "
                          "remove or impute them")
