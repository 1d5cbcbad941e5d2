"""The lazy image folder: the same pixels as the eager load, decoded class by class."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from pqlib import distill
from pqlib.checks import CorruptFile, InvalidParameter
from pqlib.data import load
from pqlib.imagefolder import LazyImageFolder
from pqlib.methods.common import fingerprint


def _folder(root, *, grey: bool, sizes=((20, 24),), per_class: int = 4, classes="abc"):
    rng = np.random.default_rng(0)
    for c in classes:
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            shape = (h, w) if grey else (h, w, 3)
            path = root / c / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return f"imagefolder:{root}"


@pytest.mark.parametrize("grey, resize", [(True, None), (False, None), (True, 16), (False, 16)])
def test_lazy_equals_eager(tmp_path, grey, resize):
    name = _folder(tmp_path, grey=grey)
    eager = load(name, resize=resize)
    lazy = load(name, resize=resize, lazy=True)
    assert isinstance(lazy, LazyImageFolder) and len(lazy) == len(eager) == 12
    assert lazy.image_shape == eager.image_shape == ((1 if grey else 3),
                                                     *((resize, resize) if resize else (20, 24)))
    assert lazy.classes == eager.classes and torch.equal(lazy.labels, eager.labels)
    assert torch.equal(lazy.class_counts(), eager.class_counts())
    whole = lazy.subset(torch.arange(len(lazy)))
    assert torch.equal(whole.images, eager.images) and torch.equal(whole.labels, eager.labels)
    assert whole.name == eager.name


def test_mixed_modes_are_rgb_like_eager(tmp_path):
    _folder(tmp_path, grey=True, classes="ab")
    _folder(tmp_path, grey=False, classes="c")
    eager, lazy = load(f"imagefolder:{tmp_path}"), load(f"imagefolder:{tmp_path}", lazy=True)
    assert lazy.mode == "RGB" and lazy.image_shape == eager.image_shape == (3, 20, 24)
    assert torch.equal(lazy.subset(torch.arange(len(lazy))).images, eager.images)


def test_subset_and_of_class_shapes(tmp_path):
    lazy = load(_folder(tmp_path, grey=False), resize=8, lazy=True, num_workers=1)
    eager = load(f"imagefolder:{tmp_path}", resize=8)
    assert lazy.of_class(1).shape == (4, 3, 8, 8)
    assert torch.equal(lazy.of_class(1), eager.of_class(1))
    part = lazy.subset(torch.tensor([0, 5, 11]))
    assert part.images.shape == (3, 3, 8, 8) and part.labels.tolist() == [0, 1, 2]
    mask = lazy.labels == 2
    assert torch.equal(lazy.subset(mask).images, eager.subset(mask).images)
    with pytest.raises(AttributeError, match="subset"):
        _ = lazy.images


def test_sizes_must_agree_without_resize(tmp_path):
    lazy = load(_folder(tmp_path, grey=True, sizes=((20, 24), (10, 10))), lazy=True)
    with pytest.raises(ValueError, match="pass resize=S"):
        lazy.of_class(0)


def test_lazy_is_only_for_image_folders():
    with pytest.raises(InvalidParameter, match="lazy=True"):
        load("digits", lazy=True)


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_named_when_its_class_is_read(tmp_path, workers):
    name = _folder(tmp_path, grey=False)
    bad = tmp_path / "b" / "2.png"
    bad.write_bytes(b"not a png at all")
    lazy = load(name, resize=8, lazy=True, num_workers=workers)  # nothing decoded yet
    assert lazy.of_class(0).shape == (4, 3, 8, 8)
    with pytest.raises(CorruptFile, match=r"b/2\.png is not a readable image; remove or replace"):
        lazy.of_class(1)


def test_fingerprint_changes_with_a_file(tmp_path):
    name = _folder(tmp_path, grey=True)
    lazy = load(name, resize=8, lazy=True)
    before = fingerprint(lazy)
    assert fingerprint(load(name, resize=8, lazy=True)) == before
    assert fingerprint(load(name, resize=16, lazy=True)) != before
    path = tmp_path / "c" / "3.png"
    stat = path.stat()
    Image.fromarray(np.zeros((20, 24), dtype=np.uint8)).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # even within the clock's tick
    assert fingerprint(lazy) != before


def test_in_memory_fingerprint_is_unchanged(digits):
    """Cache keys of in-memory sets are those of earlier versions (the formula, restated)."""
    import hashlib

    h = hashlib.sha256()
    h.update(f"{digits.name}|{tuple(digits.images.shape)}".encode())
    h.update(digits.labels.numpy().tobytes())
    h.update(digits.images.flatten()[::997].numpy().tobytes())
    assert fingerprint(digits) == h.hexdigest()[:12]


@pytest.mark.parametrize("method, options", [
    ("ddoq", {"prior": "pixel", "progress": False}),
    ("random", {}),
])
def test_distill_lazy_equals_eager(tmp_path, method, options):
    name = _folder(tmp_path, grey=False, per_class=6)
    eager, lazy = load(name, resize=8), load(name, resize=8, lazy=True)
    a = distill(method, eager, 3, seed=1, **options)
    b = distill(method, lazy, 3, seed=1, **options)
    assert torch.equal(a.images, b.images) and torch.equal(a.weights, b.weights)
    assert torch.equal(a.labels, b.labels) and a.classes == b.classes
    assert b.report.dataset == name


def test_wmdd_runs_from_a_lazy_folder(tmp_path):
    from pqlib.models import build
    from pqlib.train import Teacher

    name = _folder(tmp_path, grey=False, per_class=6)
    eager, lazy = load(name, resize=8), load(name, resize=8, lazy=True)
    torch.manual_seed(0)
    teacher = Teacher(build("convnet_bn", 3, 3, 8).eval(), 0.0, "convnet_bn", name,
                      {"test": "random"}, 0.0, 3, (3, 8, 8))
    for init in ("noise", "real"):
        a = distill("wmdd", eager, 2, teacher=teacher, iterations=2, init=init, progress=False)
        b = distill("wmdd", lazy, 2, teacher=teacher, iterations=2, init=init, progress=False)
        assert torch.equal(a.images, b.images) and torch.equal(a.weights, b.weights)


STEADY_HEAP_PROBE = """
import ctypes, sys
from pqlib.methods.common import steady_heap

class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
if sys.argv[1] == "steady":
    steady_heap()
libc.free(libc.malloc(16 << 20))  # a freed 16 MiB block: glibc's own threshold rises to it
before = libc.mallinfo2().hblkhd
block = libc.malloc(6 << 20)
print(libc.mallinfo2().hblkhd - before >= 6 << 20)  # is the 6 MiB block mmapped?
"""


def test_steady_heap_keeps_class_sized_blocks_out_of_the_heap():
    """After a large block is freed glibc serves blocks of a few MiB from its heap, where they
    fragment it class after class; with steady_heap (what `pqlib distill` sets for an image
    folder) they are mmapped, and go back to the system when freed."""
    import subprocess
    import sys

    # glibc's own settings from the environment (Dask, once imported, sets MALLOC_TRIM_THRESHOLD_
    # for its workers, which also stops the threshold from rising) are left out
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def mmapped(mode):
        out = subprocess.run([sys.executable, "-c", STEADY_HEAP_PROBE, mode], check=True,
                             capture_output=True, text=True, env=env).stdout.split()
        return out[-1] == "True"

    assert mmapped("steady") and not mmapped("glibc")
