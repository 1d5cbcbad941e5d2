"""``LazyImageFolder``: an image folder that decodes images only when asked.

``load("imagefolder:PATH", split, resize=S, lazy=True)`` returns one. It holds the file paths
(relative to ``PATH``), the labels, the class names and the image shape, and decodes the images
of a subset (:meth:`~LazyImageFolder.subset`, :meth:`~LazyImageFolder.of_class`) when asked,
through a ``torch.utils.data.DataLoader`` (``num_workers`` processes, batches of
``batch_size``). The pixels are those of ``load(..., lazy=False)`` bit for bit: the same
decoding, and the same colour rule (grey if every image is grey, else RGB), decided from the
image headers (no pixel is decoded; the scan stops at the first colour image, so an RGB
folder costs one header read).

The methods that work class by class (:func:`pqlib.methods.common.per_class`: ``ddoq``,
``d4m``, ``wmdd``, and the selections ``random``, ``herding``, ``kcenter``) then hold one
class's images at a time, so a folder much larger than memory can be distilled.
"""

from __future__ import annotations

import hashlib
import os
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch

from .checks import CorruptFile
from .data import GREY_MODES, ImageSet, _from_uint8, _image_array, _open_image

__all__ = ["LazyImageFolder"]

_Corrupt = namedtuple("_Corrupt", "path what fix")  # a worker's report of an unreadable file


class LazyImageFolder:
    """Labelled image files, decoded on demand (see the module docstring).

    Attributes
    ----------
    root : the folder (``PATH`` of ``imagefolder:PATH``)
    files : paths of the images relative to ``root``, class by class
    labels : int64 tensor (N,)
    classes, name : as :class:`~pqlib.data.ImageSet`
    resize : side the images are resized to (None: their own size, which must agree)
    mode : ``"L"`` or ``"RGB"``, from the image headers
    image_shape : (C, H, W), from ``mode`` and ``resize`` (or the first image's size)
    num_workers, batch_size : of the ``DataLoader`` that decodes

    ``images`` raises :class:`AttributeError` instead of decoding the whole folder: the point of
    a lazy folder is that it need not fit in memory (ImageNet-1k at 224×224 is ~770 GB as
    float32), and a silent full load would look like a hang and then die of memory. Ask for
    the images you need (``subset(index)``, ``of_class(c)``; ``subset(range(len(folder)))`` for
    all of them) or load with ``lazy=False``.
    """

    def __init__(self, root: Path, files: list[Path], labels: list[int], classes: tuple[str, ...],
                 name: str, *, resize: int | None = None, num_workers: int = 0,
                 batch_size: int = 256):
        self.root, self.name, self.classes, self.resize = Path(root), name, tuple(classes), resize
        self.files = tuple(str(Path(f).relative_to(self.root)) for f in files)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.num_workers, self.batch_size = num_workers, batch_size
        self.mode = _scan_mode(files)
        width, height = (resize, resize) if resize else _header_size(files[0])
        self.image_shape = (1 if self.mode == "L" else 3, height, width)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (f"LazyImageFolder({self.name!r}, {len(self)} images, {self.num_classes} classes, "
                f"image_shape={self.image_shape})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def images(self):
        raise AttributeError(
            f"{self.name!r} is a lazy image folder of {len(self)} images: it does not decode "
            "them all at once; use .subset(index) or .of_class(c), or load(..., lazy=False)")

    def class_counts(self) -> torch.Tensor:
        """Number of images per class, shape (num_classes,)."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def of_class(self, c: int) -> torch.Tensor:
        """Images of class ``c``, shape (N_c, C, H, W), decoded."""
        return self.subset(torch.nonzero(self.labels == c).flatten()).images

    def subset(self, index) -> ImageSet:
        """The images at ``index`` (indices or a boolean mask), decoded, as an in-memory
        :class:`~pqlib.data.ImageSet`."""
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = torch.nonzero(index).flatten()
        index = index.to(torch.int64).reshape(-1)
        return ImageSet(self._decode(index.tolist()), self.labels[index], self.classes, self.name)

    def path(self, i: int) -> Path:
        """Absolute path of image ``i``."""
        return self.root / self.files[i]

    def fingerprint(self) -> str:
        """Short hash of the folder without decoding it: name, shape, labels, and every
        file's relative path, size and modification time (a changed file changes it)."""
        h = hashlib.sha256()
        h.update(f"{self.name}|lazy|{len(self)}|{self.image_shape}|{self.resize}".encode())
        h.update(self.labels.numpy().tobytes())
        for rel in self.files:
            st = os.stat(self.root / rel)
            h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:12]

    def _decode(self, rows: list[int]) -> torch.Tensor:
        """The images ``rows`` as float32 (n, C, H, W), decoded in batches by a DataLoader."""
        _, height, width = self.image_shape
        files = _Files([self.path(i) for i in rows], self.mode, (width, height), self.resize,
                       self.name)
        loader = torch.utils.data.DataLoader(files, batch_size=self.batch_size,
                                             num_workers=self.num_workers, collate_fn=list)
        out = np.empty((len(rows), *self.image_shape), dtype=np.uint8)
        i = 0
        for batch in loader:
            for a in batch:
                if isinstance(a, _Corrupt):
                    raise CorruptFile(*a)
                out[i] = a
                i += 1
        return _from_uint8(out)


class _Files(torch.utils.data.Dataset):
    """Image files decoded one by one as uint8 (C, H, W) arrays (the decoding of
    :func:`pqlib.data.load`); an unreadable file gives a :data:`_Corrupt` record, which the
    reading process raises as :class:`CorruptFile` (an exception raised in a DataLoader
    worker reaches the caller as another type)."""

    def __init__(self, paths: list[Path], mode: str, size: tuple[int, int], resize, name: str):
        self.paths, self.mode, self.size, self.resize, self.name = paths, mode, size, resize, name

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            im = _open_image(self.paths[i])
        except CorruptFile as err:
            return _Corrupt(err.path, err.what, err.fix)
        return _image_array(im, self.mode, self.size, self.resize, self.name)


def _scan_mode(files: list[Path]) -> str:
    """``"L"`` if every image is grey, else ``"RGB"``, from the headers (PIL's ``open`` reads
    no pixels); stops at the first colour image. Unreadable files are skipped here: reading
    their class raises :class:`CorruptFile`."""
    from PIL import Image

    for f in files:
        try:
            with Image.open(f) as im:
                if im.mode not in GREY_MODES:
                    return "RGB"
        except (OSError, SyntaxError):
            continue
    return "L"


def _header_size(f: Path) -> tuple[int, int]:
    """(width, height) of the image in ``f`` from its header."""
    from PIL import Image

    try:
        with Image.open(f) as im:
            return im.size
    except (OSError, SyntaxError) as err:
        raise CorruptFile(f, "image", f"remove or replace the file ({type(err).__name__})"
                          ) from None

