"""pqlib.compare and the book's generated summary: numbers read from the records."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from pqlib import compare
from pqlib.results import load_records


def _record(variant, ipc, seed, soft, hard, noaug=None, reduction=0.0):
    accuracy = {"soft": soft, "hard": hard, **({"soft_noaug": noaug} if noaug is not None else {})}
    return {"schema": 2, "run": f"paper-mnist-{variant}-ipc{ipc}-s{seed}", "profile": "paper",
            "status": "ok",
            "parameters": {"dataset": "mnist", "method": variant, "variant": variant, "ipc": ipc,
                           "seed": seed, "epochs": 0},
            "derived": {"train_size": 60000, "test_size": 10000},
            "accuracy": accuracy,
            "protocol": {"soft": "fkd", "hard": "dc", "soft_noaug": "fkd-noaug"},
            "w2": {"weighted": 1.0, "uniform": 1.0, "reduction_pct": reduction},
            "stage_seconds": {"quantize": 0.5}, "train_seconds": {"soft": 30.0, "hard": 50.0},
            "teacher": {"id": "t", "accuracy": 99.4}, "commit": "0" * 40,
            "machine": {"cpu": "test"}, "created": "2026-12-03T00:00:00+00:00"}


def _frame(rows):
    return pd.DataFrame([{"variant": v, "ipc": k, "seed": s, "acc_soft": a, "acc_hard": h}
                         for v, k, s, a, h in rows])


def test_paired_difference_interval_matches_the_t_formula():
    # A − B over seeds 0, 1, 2 is 1, 2, 3 points (seed 3 of A has no partner and is ignored)
    df = _frame([("a", 10, 0, 91.0, 50.0), ("a", 10, 1, 92.0, 50.0), ("a", 10, 2, 93.0, 50.0),
                 ("a", 10, 3, 99.0, 50.0),
                 ("b", 10, 0, 90.0, 50.0), ("b", 10, 1, 90.0, 50.0), ("b", 10, 2, 90.0, 50.0)])
    row = compare.paired_differences(df, [("a", "b")], "soft").iloc[0]
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} · sd / √n, sd = 1
    assert row.n == 3 and row["diff"] == pytest.approx(2.0)
    assert (row.lo, row.hi) == pytest.approx((2.0 - half, 2.0 + half))
    assert (row.a, row.b) == pytest.approx((92.0, 90.0)) and not row.excludes_zero
    # a pair without data is skipped; one seed gives no interval
    one = compare.paired_differences(df[df.seed == 0], [("a", "b"), ("a", "missing")], "soft")
    assert len(one) == 1 and math.isnan(one.lo.iloc[0])
    # a clear difference is named in the sentence
    shifted = pd.concat([df, df[df.variant == "b"].assign(variant="c", acc_soft=80.0)])
    diffs = compare.paired_differences(shifted, [("a", "b"), ("a", "c")], "soft")
    assert diffs.excludes_zero.tolist() == [False, True]
    assert "a − c, soft labels, IPC 10: +12.00" in compare.significance(diffs)
    # the code each side ran: one commit when both agree, A's then B's when they do not
    dated = shifted.assign(commit=["1" * 40] * 4 + ["2" * 40] * 3 + ["1" * 40] * 3)
    diffs = compare.paired_differences(dated, [("a", "b"), ("a", "c")], "soft")
    assert diffs.commits.tolist() == ["1111111 / 2222222", "1111111"]


def test_lrs_and_ars_lie_in_the_unit_interval_and_match_the_definition():
    rng = np.random.default_rng(0)
    rows = [(v, 10, s, *rng.uniform(0, 100, 3)) for v in ("random", "ddoq", "dm") for s in range(4)]
    df = pd.DataFrame(rows, columns=["variant", "ipc", "seed", "acc_soft", "acc_hard", "acc_soft_noaug"])
    for full in (0.0, 50.0, 100.0):
        scores = compare.dd_ranking(df, full)
        assert ((scores[["LRS", "ARS"]] >= 0) & (scores[["LRS", "ARS"]] <= 1)).all().all()
    # the extremes: everything (LRS = 1) and nothing (LRS = 0)
    ext = pd.DataFrame({"variant": ["random", "x", "y"], "ipc": 1, "seed": 0,
                        "acc_soft": [50.0, 100.0, 0.0], "acc_hard": [50.0, 100.0, 0.0]})
    lrs = compare.dd_ranking(ext, 100.0).LRS
    assert lrs["x", 1] == pytest.approx((math.exp(0.25) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert compare.dd_ranking(ext.assign(acc_soft=[100.0, 100.0, 0.0]), 100.0).LRS["y", 1] == pytest.approx(0.0)
    # by hand: HLR = 0.1, IOR = 0.2 → exponent 0.5·0.2 − 0.5·0.1 = 0.05; no soft_noaug → no ARS
    hand = pd.DataFrame({"variant": ["random", "m"], "ipc": 1, "seed": 0,
                         "acc_soft": [70.0, 90.0], "acc_hard": [0.0, 89.4]})
    s = compare.dd_ranking(hand, 99.4).loc["m", 1]
    assert (s.HLR, s.IOR) == pytest.approx((0.1, 0.2))
    assert s.LRS == pytest.approx((math.exp(0.05) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert math.isnan(s.ARS)


def test_the_summary_follows_the_records(tmp_path):
    for seed, (soft, hard) in enumerate([(95.0, 60.0), (96.0, 62.0)]):
        for variant, bonus in (("random", 0.0), ("d4m", 1.0), ("ddoq", 1.5)):
            rec = _record(variant, 10, seed, soft + bonus, hard + bonus, reduction=10.0 * (variant == "ddoq"))
            (tmp_path / f"{rec['run']}.json").write_text(json.dumps(rec))
    before = compare.findings(load_records(tmp_path))
    assert "From 6 runs (3 methods at IPC 10" in before
    assert "best **ddoq** 97.00 ± 0.71 % (n = 2)" in before
    assert "ddoq − d4m, soft labels, IPC 10: +0.50 points" in before
    # one record changes: the summary's numbers change with it
    path = tmp_path / "paper-mnist-ddoq-ipc10-s1.json"
    rec = json.loads(path.read_text())
    rec["accuracy"]["soft"] = 99.5
    path.write_text(json.dumps(rec))
    after = compare.findings(load_records(tmp_path))
    assert after != before
    assert "best **ddoq** 98.00 ± 2.12 % (n = 2)" in after
    assert "ddoq − d4m, soft labels, IPC 10: +1.50 points" in after
    assert compare.findings(pd.DataFrame()).startswith("*No reference records yet")
    # random real images on top: said as such, not compared with themselves
    for path in tmp_path.glob("paper-mnist-d*.json"):
        rec = json.loads(path.read_text())
        rec["accuracy"]["hard"] = 50.0
        path.write_text(json.dumps(rec))
    top = compare.findings(load_records(tmp_path))
    assert "hard labels: best **random** 61.00 ± 1.41 % (n = 2) — random real images; no distilled" in top


def test_w2_gain_pairs_runs_by_seed():
    df = _frame([("d4m", 10, s, 90.0 + s, 50.0) for s in range(3)]
                + [("ddoq", 10, s, 90.0 + 2 * s, 50.0) for s in range(3)]).assign(
        w2_reduction_pct=[0.0, 0.0, 0.0, 5.0, 10.0, 15.0])
    points, rho = compare.w2_gain(df)
    assert points.gain.tolist() == [0.0, 1.0, 2.0] and rho == pytest.approx(1.0)
    assert math.isnan(compare.w2_gain(df.assign(w2_reduction_pct=0.0))[1])  # nothing varies
    # the cross-family variants are paired with their family's uniform-weight variant
    cross = _frame([("wmdd-uniform", 10, s, 80.0, 50.0) for s in range(2)]
                   + [("wmdd-voronoi", 10, s, 81.0, 50.0) for s in range(2)]
                   + [("ddoq-barycenter", 10, s, 92.0, 50.0) for s in range(2)]).assign(w2_reduction_pct=3.0)
    points, _ = compare.w2_gain(pd.concat([df, cross], ignore_index=True))
    assert points.groupby("variant").gain.mean().to_dict() == {
        "ddoq": 1.0, "ddoq-barycenter": 1.5, "wmdd-voronoi": 1.0}


def test_the_introduction_is_generated_by_the_book_extension(tmp_path):
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    assert "```{pqlib-findings}" in (repo / "book" / "intro.md").read_text()
    spec = importlib.util.spec_from_file_location("pqlib_results", repo / "book" / "_ext" / "pqlib_results.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)

    class App:  # records what the extension registers
        def __init__(self):
            self.directives, self.config_values = {}, {}

        def add_config_value(self, name, default, rebuild):
            self.config_values[name] = default

        def connect(self, event, handler):
            pass

        def add_directive(self, name, cls):
            self.directives[name] = cls

    app = App()
    ext.setup(app)
    assert app.directives["pqlib-findings"] is ext.Findings
    assert "book/intro" in app.config_values["pqlib_results_docs"]  # rebuilt when records change


def test_full_data_accuracy_reads_the_benchmark_else_says_it_is_a_stand_in(tmp_path):
    df = pd.DataFrame({"teacher_accuracy": [99.4, 99.4]})
    value, source = compare.full_data_accuracy(df, tmp_path)
    assert value == pytest.approx(99.4) and source.startswith("a stand-in")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "full_data.json").write_text(json.dumps(
        {"rows": [{"seed": 0, "epochs": 10, "accuracy_hard": 99.0}, {"seed": 1, "epochs": 10, "accuracy_hard": 99.2}],
         "accuracy_hard": [99.0, 99.2]}))
    value, source = compare.full_data_accuracy(df, tmp_path)
    assert value == pytest.approx(99.1) and "mean of 2 runs" in source and "stand-in" not in source


def test_speed_table_reads_the_benchmark_and_computes_the_ratios(tmp_path):
    from pqlib.results import speed_table

    assert list(speed_table(tmp_path).columns)[-2:] == ["hard/stock", "soft/hard"]
    row = {"ipc": 50, "batch": 256, "hard_compiled_ms": 200.0, "soft_compiled_ms": 270.0,
           "stock_eager_ms": 400.0, "convs_ms": 180.0}
    old = {"threads": 2, "rows": [row], "machine": {"cpu": "X", "isa": ["avx2"]}}
    new = {"threads": 1, "environment": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
           "machine": {"cpu": "X", "isa": ["amx_bf16"]},
           "rows": [{**row, "teacher_forward_ms": 70.0, "soft_over_hard": 1.3,
                     "rounds": [row, row, row]}]}
    (tmp_path / "train_speed_a.json").write_text(json.dumps(old))
    (tmp_path / "train_speed_b.json").write_text(json.dumps(new))
    (tmp_path / "other.json").write_text("{}")  # not a speed file: ignored
    t = speed_table(tmp_path).set_index("file")
    assert t.loc["train_speed_a", "hard/stock"] == 0.5
    assert t.loc["train_speed_a", "soft/hard"] == 1.35
    assert pd.isna(t.loc["train_speed_a", "teacher forward ms"])  # predates the measurement
    assert t.loc["train_speed_b", "teacher forward ms"] == 70.0
    assert t.loc["train_speed_b", "soft/hard"] == 1.3  # the paired ratio, not 270 / 200
    assert t.loc["train_speed_b", "machine"] == "X+AMX"
    assert t.loc["train_speed_b", "malloc"] == "run kernels'"
    assert t.loc["train_speed_a", "malloc"] == "glibc defaults"
    assert t.loc["train_speed_b", "rounds"] == 3
