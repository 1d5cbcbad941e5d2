import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pqlib.distilled import DistilledSet


def _set(m=6, c=1, h=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(m) % classes
    return DistilledSet(torch.rand(m, c, h, h, generator=g), labels, torch.rand(m, generator=g) + 0.1,
                        tuple(f"c{i}" for i in range(classes)), {"method": "test", "ipc": m // classes})


def test_weights_sum_to_one_per_class():
    d = _set()
    sums = torch.zeros(3).index_add_(0, d.labels, d.weights)
    torch.testing.assert_close(sums, torch.ones(3))


def test_round_trip_is_bit_exact(tmp_path):
    d = _set(c=3)
    d.save(tmp_path / "out")
    back = DistilledSet.load(tmp_path / "out")
    assert torch.equal(back.images, d.images)
    assert torch.equal(back.labels, d.labels)
    assert torch.equal(back.weights, d.weights)
    assert back.classes == d.classes and back.meta["method"] == "test"


def test_export_layout_png_and_csv(tmp_path):
    d = _set()
    d.save(tmp_path / "out")
    rows = list(csv.DictReader(open(tmp_path / "out" / "distilled.csv")))
    assert list(rows[0]) == ["path", "label", "weight"] and len(rows) == 6
    for i, row in enumerate(rows):
        assert row["path"] == f"images/{int(d.labels[i])}/{i}.png"
        img = np.asarray(Image.open(tmp_path / "out" / row["path"]))
        assert img.dtype == np.uint8 and img.shape == (8, 8)
        np.testing.assert_array_equal(img, (d.images[i, 0] * 255).round().byte().numpy())
    per_class = {}
    for row in rows:
        per_class[row["label"]] = per_class.get(row["label"], 0.0) + float(row["weight"])
    assert all(abs(v - 1) < 1e-6 for v in per_class.values())
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["classes"] == ["c0", "c1", "c2"]


def test_save_refuses_non_empty_directory_and_leaves_it_alone(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        _set().save(tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    _set().save(tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    import pqlib.distilled as mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mod, "save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _set().save(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs():
    with pytest.raises(ValueError, match="agree on the first dimension"):
        DistilledSet(torch.rand(3, 1, 8, 8), torch.zeros(2, dtype=torch.long), torch.ones(3), ("a",))
    with pytest.raises(ValueError, match="total weight 0"):
        DistilledSet(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), torch.tensor([1.0, 0.0]), ("a", "b"))
    with pytest.raises(ValueError, match="non-negative"):
        DistilledSet(torch.rand(2, 1, 8, 8), torch.tensor([0, 0]), torch.tensor([1.0, -1.0]), ("a",))
    with pytest.raises(FileNotFoundError, match="not a distilled set"):
        DistilledSet.load("/nonexistent/dir")


def test_corrupt_tensors_file_is_a_clear_error(tmp_path):
    d = _set()
    d.save(tmp_path / "out")
    path = tmp_path / "out" / "distilled.safetensors"
    path.write_bytes(path.read_bytes()[:40])  # truncated, as by an interrupted copy
    with pytest.raises(ValueError, match="holds a corrupt distilled set.*pqlib distill --force"):
        DistilledSet.load(tmp_path / "out")
