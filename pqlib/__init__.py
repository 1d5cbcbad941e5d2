"""pqlib — a reproducible companion for optimal-quantization dataset distillation.

The public entry points::

    pqlib.load("mnist")                         # data → ImageSet
    pqlib.distill("ddoq", data, ipc=10, seed=0)  # → DistilledSet
    pqlib.train.train_student(distilled, teacher=...)
"""

from ._version import __version__
from .data import ImageSet, load
from .distilled import DistilledSet
from .methods import distill, list_methods

__all__ = ["__version__", "ImageSet", "load", "DistilledSet", "distill", "list_methods"]
