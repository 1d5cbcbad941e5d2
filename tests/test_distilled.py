import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pqlib.distilled import DistilledSet
from pqlib.report import W2, DistillReport, class_w2


def _set(m=6, c=1, h=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(m) % classes
    return DistilledSet(torch.rand(m, c, h, h, generator=g), labels, torch.rand(m, generator=g) + 0.1,
                        tuple(f"c{i}" for i in range(classes)), DistillReport(method="test", ipc=m // classes))


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
    assert back.classes == d.classes and back.report.method == "test"


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


def test_class_w2_hand_example():
    """Class 0: mass 3/4 at 0 and 1/4 at 4, matched exactly by points 0 and 4 with weights 3/4,
    1/4 (W2 = 0); uniform weights move 1/4 of the mass from 0 to 4 (W2² = 16/4, W2 = 2).
    Class 1: one point on its one image. Class 2 has no points and is left out."""
    x = torch.tensor([[0.0], [0.0], [0.0], [4.0], [10.0], [7.0]])
    x_labels = torch.tensor([0, 0, 0, 0, 1, 2])
    w2 = class_w2(x, x_labels, torch.tensor([[0.0], [4.0], [10.0]]), torch.tensor([0, 0, 1]),
                  torch.tensor([0.75, 0.25, 1.0]))
    assert w2.per_class_weighted == pytest.approx((0.0, 0.0), abs=1e-6)
    assert w2.per_class_uniform == pytest.approx((2.0, 0.0))
    assert (w2.weighted, w2.uniform) == pytest.approx((0.0, 1.0), abs=1e-6)
    assert w2.reduction_pct == pytest.approx(100.0)


def _report():
    return DistillReport(method="ddoq", dataset="digits", ipc=2, seed=0, options={"weights": "sqrt"},
                         prior="p", stage_seconds={"encode": 1.0},
                         w2_latent=W2(1.0, 2.0, (1.0, 1.0), (2.0, 2.0), voronoi=0.9),
                         w2_feature=W2(3.0, 4.0), train_indices=[3, 1], wall_time_s=2.5)


def test_report_round_trip_through_json_and_save_load(tmp_path):
    report = _report()
    back = DistillReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert back == report and back.to_dict() == report.to_dict()
    assert report.to_dict()["w2_reduction_pct"] == 50.0 and report.method_w2 == ("latent", report.w2_latent)
    assert "w2_feature_synthesized" not in report.to_dict()  # unset fields are not written
    d = DistilledSet(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.ones(2), ("a", "b"), report)
    d.save(tmp_path / "out")
    assert DistilledSet.load(tmp_path / "out").report == report


def test_sets_saved_by_pqlib_0_1_load(tmp_path):
    """A meta.json in the layout of pqlib 0.1's DistilledSet.meta (a WMDD set: feature W2
    without per-class values; one key this version does not know), written back unchanged."""
    d = _set()
    d.save(tmp_path / "out")
    old = {"method": "wmdd", "dataset": "digits", "ipc": 2, "seed": 0, "options": {"iterations": 5},
           "teacher": "digits-convnet_bn-x", "stage_seconds": {"barycenter": 0.1},
           "w2_feature": {"weighted": 1.5, "uniform": 1.75},
           "w2_feature_synthesized": {"weighted": 2.0, "uniform": 2.25},
           "loss_first_last": [9.0, 1.0], "pqlib_version": "0.1.0", "commit": "abc",
           "wall_time_s": 3.0, "note": "mine"}
    (tmp_path / "out" / "meta.json").write_text(json.dumps(dict(old, classes=["c0", "c1", "c2"])))
    report = DistilledSet.load(tmp_path / "out").report
    assert report.method_w2 == ("feature", W2(1.5, 1.75)) and report.w2_feature.reduction_pct > 0
    assert report.loss_first_last == [9.0, 1.0] and report.extra == {"note": "mine"}
    assert report.to_dict() == old
    assert DistilledSet(d.images, d.labels, d.weights, d.classes, old).report == report


def test_build_record_has_the_schema_2_layout():
    from types import SimpleNamespace

    from pqlib.protocols import get_protocol
    from pqlib.results import StudentResult, build_record

    d = DistilledSet(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.ones(2), ("a", "b"), _report())
    students = {"soft": StudentResult(90.0, 1.234, get_protocol("fkd"), False),
                "hard": StudentResult(80.0, 2.0, get_protocol("dc"), True)}
    params = {"dataset": "digits", "run_name": "r", "profile": "p"}
    rec = build_record(params, d, students, teacher=SimpleNamespace(id="t", accuracy=99.0),
                       feature_w2=W2(5.0, 6.0, (5.0,), (6.0,)), train_size=10, test_size=5,
                       notebook_seconds=7.0)
    assert set(rec) == {"run", "profile", "status", "parameters", "derived", "accuracy", "protocol",
                        "compiled", "w2", "feature_w2", "stage_seconds", "train_seconds", "teacher",
                        "distill_meta", "commit", "source", "machine", "versions", "notebook_seconds"}
    assert (rec["run"], rec["profile"], rec["parameters"]) == ("r", "p", params)
    assert rec["accuracy"] == {"soft": 90.0, "hard": 80.0} and rec["compiled"] == {"soft": False, "hard": True}
    assert rec["protocol"]["hard"] == get_protocol("dc").as_dict()
    assert rec["train_seconds"] == {"soft": 1.23, "hard": 2.0}
    assert rec["w2"] == {"space": "latent", "weighted": 1.0, "uniform": 2.0, "reduction_pct": 50.0}
    assert rec["feature_w2"] == {"weighted": 5.0, "uniform": 6.0}
    assert rec["distill_meta"]["method"] == "ddoq" and "train_indices" not in rec["distill_meta"]
    assert rec["derived"]["train_size"] == 10 and rec["teacher"] == {"id": "t", "accuracy": 99.0}


def test_method_order_follows_the_profiles():
    from pqlib import results
    from pqlib.sweep import load_profile

    order = results.method_order()
    assert order[: len(load_profile("paper").variants)] == list(load_profile("paper").variants)
    assert set(load_profile("smoke").variants) <= set(order) and len(set(order)) == len(order)
