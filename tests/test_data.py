import gzip
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch

from pqlib import data as data_mod
from pqlib.checks import CorruptFile, InvalidParameter
from pqlib.data import load, train_val_split


def test_digits_shapes_and_range(digits, digits_test):
    assert digits.images.shape == (1437, 1, 8, 8)
    assert digits_test.images.shape == (360, 1, 8, 8)
    for ds in (digits, digits_test):
        assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
        assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
        assert ds.num_classes == 10 and ds.class_counts().min() > 0


def test_mnist_sizes_range_and_checksum():
    train, test = load("mnist", "train"), load("mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert float(train.images.min()) == 0.0 and float(train.images.max()) == 1.0
    # the first training digits of MNIST are 5 0 4 1 9 2 1 3 1 4
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert data_mod.md5sum(data_mod.mnist_archive()) == data_mod.MNIST_MD5


def test_mnist_is_decoded_once_and_a_damaged_copy_again(tmp_path, monkeypatch):
    """The decoded copy beside the archive gives the archive's pixels; a damaged one is redone."""
    real = data_mod.mnist_archive()
    monkeypatch.setenv("PQLIB_CACHE", str(tmp_path))
    (tmp_path / "data").mkdir()
    shutil.copy(real, tmp_path / "data" / "mnist.pkl.gz")
    with gzip.open(real, "rb") as f:
        expected = pickle.load(f, encoding="latin1")[2]  # the test split: (k/256 pixels, labels)
    decoded = data_mod._mnist_split("test")  # decodes the archive and writes the copy
    copy = tmp_path / "data" / f"mnist-{data_mod.MNIST_MD5[:8]}-test.safetensors"
    assert copy.exists() and not list((tmp_path / "data").glob(".*.tmp"))
    monkeypatch.setattr(data_mod, "mnist_archive", lambda: pytest.fail("archive read again"))
    for images, labels in (decoded, data_mod._mnist_split("test")):  # then from the copy alone
        assert torch.equal(images, torch.tensor(np.rint(expected[0] * 256).reshape(-1, 1, 28, 28)) / 255)
        assert labels.tolist() == expected[1].tolist()
    monkeypatch.undo()
    monkeypatch.setenv("PQLIB_CACHE", str(tmp_path))
    copy.write_bytes(b"damaged")
    assert torch.equal(data_mod._mnist_split("test")[0], decoded[0])


def test_corrupt_cache_is_detected_removed_and_refetched(tmp_path, monkeypatch):
    """A damaged archive in the cache is replaced, with a warning naming the problem."""
    real = data_mod.mnist_archive()  # the real download is exercised here (once per cache)
    monkeypatch.setenv("PQLIB_CACHE", str(tmp_path))
    cached = tmp_path / "data" / "mnist.pkl.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the archive")
    fetched = []

    def fetch_from_first_cache(dest):
        shutil.copy(real, dest)
        fetched.append(dest)

    monkeypatch.setattr(data_mod, "fetch_mnist", fetch_from_first_cache)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        path = data_mod.mnist_archive()
    assert fetched == [cached] and data_mod.md5sum(path) == data_mod.MNIST_MD5


def test_fetch_with_wrong_checksum_raises_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PQLIB_CACHE", str(tmp_path))
    monkeypatch.setattr(data_mod, "fetch_mnist", lambda dest: dest.write_bytes(b"garbage"))
    with pytest.raises(CorruptFile, match="mnist.pkl.gz is not a readable MNIST archive; its md5"):
        data_mod.mnist_archive()
    assert not (tmp_path / "data" / "mnist.pkl.gz").exists()


def test_mnist_from_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">HBB3I", 0, 8, 3, n, 28, 28) + x.tobytes())
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">HBBI", 0, 8, 1, n) + y.tobytes())
    ds = load(f"mnist:{tmp_path}", "test")
    assert ds.images.shape == (10, 1, 28, 28) and ds.labels.tolist() == list(range(10))
    np.testing.assert_array_equal((ds.images[:, 0] * 255).round().numpy().astype(np.uint8), x)


def _write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_imagefolder_rgb_with_splits_and_resize(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            for i in range(3):
                _write_png(tmp_path / split / cls / f"{i}.png", rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    train = load(f"imagefolder:{tmp_path}", "train", resize=16)
    test = load(f"imagefolder:{tmp_path}", "test", resize=16)
    assert train.images.shape == (6, 3, 16, 16) and test.images.shape == (6, 3, 16, 16)
    assert train.classes == ("cat", "dog") and train.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_imagefolder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "a").mkdir()
    _write_png(tmp_path / "b" / "0.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="has no images"):
        load(f"imagefolder:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="split='test'"):
        load(f"imagefolder:{tmp_path}", "test")


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 10)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [i % 10 for i in range(n)] if name == "test_batch" else list(range(n))}
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f)
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    test = load(f"cifar10:{tmp_path}", "test")
    assert test.images.shape == (10, 3, 32, 32) and test.classes[3] == "c3"
    # train has 4 labels 0..3 only: classes 4..9 are empty, which is an error
    with pytest.raises(ValueError, match="have no images"):
        load(f"cifar10:{tmp_path}", "train")
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load(f"cifar10:{tmp_path}", "train")


@pytest.mark.parametrize("name", ["mnsit", "imagenet", "imagefolder", "cifar10"])
def test_unknown_dataset_lists_valid_names(name):
    with pytest.raises(ValueError, match="valid names: mnist, digits"):
        load(name)


def test_wrong_split():
    with pytest.raises(ValueError, match="split='validation'"):
        load("digits", "validation")


def test_train_val_split_is_stratified_and_disjoint(digits):
    train, val = train_val_split(digits, 200, seed=1)
    assert len(train) + len(val) == len(digits)
    assert abs(len(val) - 200) <= 10
    assert val.class_counts().min() >= 15
    again = train_val_split(digits, 200, seed=1)[1]
    assert torch.equal(val.images, again.images)


def test_imagefolder_names_a_corrupt_image(tmp_path):
    _write_png(tmp_path / "a" / "0.png", np.zeros((8, 8), dtype=np.uint8))
    bad = tmp_path / "b" / "1.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png at all")
    with pytest.raises(CorruptFile, match=r"1\.png is not a readable image; remove or replace"):
        load(f"imagefolder:{tmp_path}")


def test_corrupt_idx_file_is_named(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(CorruptFile, match="t10k-images-idx3-ubyte is not a readable unsigned-byte"):
        load(f"mnist:{tmp_path}", "test")
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\[.gz\] not found"):
        load(f"mnist:{tmp_path}", "test")


def test_arguments_are_checked(digits):
    with pytest.raises(InvalidParameter, match="load: resize=0 should be .*an integer >= 1"):
        load("digits", resize=0)
    with pytest.raises(InvalidParameter, match="n_val=1437 should be < len"):
        train_val_split(digits, len(digits))
    with pytest.raises(InvalidParameter, match="n_val=0 should be an integer >= 1"):
        train_val_split(digits, 0)
