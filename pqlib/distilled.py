"""``DistilledSet``: the output of every method, and its on-disk format.

Directory layout written by :meth:`DistilledSet.save` (read by other tools, keep it stable)::

    DIR/images/<label>/<index>.png   8-bit PNG at the dataset's resolution
    DIR/distilled.csv                header ``path,label,weight``; path relative to DIR,
                                     weights sum to 1 within each class
    DIR/meta.json                    the report (:meth:`DistillReport.to_dict`) and ``classes``
    DIR/distilled.safetensors        exact tensors (images, labels, weights) for reloading
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .cache import atomic_dir
from .report import DistillReport

__all__ = ["DistilledSet", "normalise_class_weights"]


def normalise_class_weights(weights: torch.Tensor, labels: torch.Tensor, num_classes: int
                            ) -> torch.Tensor:
    """Rescale non-negative ``weights`` so they sum to 1 within each class (float32).

    Weights that already sum to 1 (within 1e-6) in every class are returned unchanged, so
    normalising is idempotent and a saved set reloads bit for bit.
    """
    w = weights.to(torch.float64)
    if (w < 0).any() or not torch.isfinite(w).all():
        raise ValueError("weights must be finite and non-negative")
    sums = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, w)
    if bad := sorted(set(labels[sums[labels] <= 0].tolist())):
        raise ValueError(f"classes {bad} have total weight 0; give each class a positive weight")
    if torch.allclose(sums[labels], torch.ones_like(w), rtol=0, atol=1e-6):
        return weights.to(torch.float32)
    return (w / sums[labels]).to(torch.float32)


@dataclass
class DistilledSet:
    """A small synthetic (or selected) training set with per-image weights.

    Attributes
    ----------
    images : float32 tensor (M, C, H, W) in [0, 1]
    labels : int64 tensor (M,)
    weights : float32 tensor (M,), non-negative, summing to 1 within each class
    classes : class names
    report : :class:`~pqlib.report.DistillReport`, what made the set (method, options, stage
        times, W2 figures, ...); a dict in the ``meta.json`` layout is read into one
    """

    images: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    classes: tuple[str, ...]
    report: DistillReport = field(default_factory=DistillReport)

    def __post_init__(self):
        m = self.images.shape[0]
        if self.images.ndim != 4:
            raise ValueError(f"images must be (M, C, H, W), got {tuple(self.images.shape)}")
        if self.labels.shape != (m,) or self.weights.shape != (m,):
            raise ValueError(
                f"images {tuple(self.images.shape)}, labels {tuple(self.labels.shape)} and weights "
                f"{tuple(self.weights.shape)} must agree on the first dimension"
            )
        self.images = self.images.detach().to(torch.float32).clamp(0, 1).contiguous()
        self.labels = self.labels.detach().to(torch.int64).contiguous()
        self.classes = tuple(self.classes)
        if isinstance(self.report, dict):
            self.report = DistillReport.from_dict(self.report)
        self.weights = normalise_class_weights(self.weights.detach(), self.labels,
                                               len(self.classes)).contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def meta(self) -> dict:
        """The report in its JSON form (read-only; code written for pqlib 0.1 reads it).
        Prefer :attr:`report`."""
        return self.report.to_dict()

    # ----------------------------------------------------------------- I/O

    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write the directory layout described in the module docstring, atomically.

        An existing non-empty ``directory`` raises :class:`FileExistsError` unless ``overwrite``.
        """
        from PIL import Image

        directory = Path(directory)
        with atomic_dir(directory, overwrite=overwrite) as tmp:
            rows = ["path,label,weight"]  # paths hold no commas or quotes: plain CSV
            pixels = ((self.images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
                      .squeeze(3).numpy())  # (M, H, W) grey or (M, H, W, C) colour images
            for i, (img, label, weight) in enumerate(zip(pixels, self.labels.tolist(),
                                                         self.weights.tolist())):
                rel = f"images/{label}/{i}.png"
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(img)).save(tmp / rel)
                rows.append(f"{rel},{label},{weight!r}")
            (tmp / "distilled.csv").write_text("\n".join(rows) + "\n")
            meta = dict(self.report.to_dict(), classes=list(self.classes))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
            save_file({"images": self.images, "labels": self.labels, "weights": self.weights},
                      str(tmp / "distilled.safetensors"))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> DistilledSet:
        """Read a directory written by :meth:`save` (exact tensors from the safetensors file)."""
        directory = Path(directory)
        tensors_path, meta_path = directory / "distilled.safetensors", directory / "meta.json"
        for p in (tensors_path, meta_path):
            if not p.exists():
                raise FileNotFoundError(
                    f"{str(p)!r} not found: {str(directory)!r} is not a distilled set written by "
                    "`pqlib distill` / DistilledSet.save"
                )
        try:
            t = load_file(str(tensors_path))
            meta = json.loads(meta_path.read_text())
            return cls(t["images"], t["labels"], t["weights"], meta.pop("classes"),
                       DistillReport.from_dict(meta))
        except Exception as err:  # SafetensorError, JSONDecodeError, KeyError, ValueError
            raise ValueError(
                f"{str(directory)!r} holds a corrupt distilled set ({type(err).__name__}: {err}); "
                "write it again with `pqlib distill --force` or DistilledSet.save") from None
