"""Committed records are the source of truth: done without their notebooks, notebooks
re-created on request, records that hold the parameters that re-create them, `pqlib rerun`."""

import json
import logging
from pathlib import Path

import pytest
from test_sweep import _profile

from pqlib.cli import main
from pqlib.results import SPLIT_SIZES, load_records, read_record
from pqlib.sweep import load_profile, notebook_parameters, plan, run_sweep

REPO = Path(__file__).resolve().parent.parent
NAME = "tiny-digits-random-ipc1-s0"
NOT_RECORDED = {"threads", "reuse", "result_path", "distilled_dir"}  # where and how fast, not what


@pytest.fixture(scope="module")
def swept(tmp_path_factory, digits_teacher):
    """A one-run profile, swept once: (profile path, its run, the record's path)."""
    tmp = tmp_path_factory.mktemp("records")
    path = _profile(tmp, {"random": {"method": "random"}})
    report = run_sweep(path, progress=False)
    assert report.ok == [NAME], report.failed
    (run,) = plan(load_profile(path))
    return path, run, run.record


def test_record_without_notebook_is_done_and_notebooks_recreates_it(swept, capsys):
    path, run, record = swept
    before = record.read_bytes()
    run.notebook.unlink()
    (again,) = plan(load_profile(path))
    assert again.done() and again.state() == "done (no notebook)"
    assert main(["sweep", "--profile", str(path), "--list"]) == 0
    assert capsys.readouterr().out.split() == ["done", "(no", "notebook)", NAME]

    report = run_sweep(path, progress=False)
    assert report.ok == [] and report.skipped == [NAME] and not run.notebook.exists()

    assert main(["sweep", "--profile", str(path), "--notebooks"]) == 0
    out = capsys.readouterr().out
    assert "1 notebooks written" in out and "record left untouched" in out
    assert run.notebook.exists() and record.read_bytes() == before
    assert main(["sweep", "--profile", str(path), "--list"]) == 0
    assert capsys.readouterr().out.split() == ["done", NAME]


def test_failed_or_corrupt_record_is_not_done(tmp_path):
    path = _profile(tmp_path, {"random": {"method": "random"}})
    (run,) = plan(load_profile(path))
    run.record.parent.mkdir(parents=True)
    run.notebook.parent.mkdir(parents=True)
    run.notebook.write_text("{}")
    for text in ('{"status": "failed"}', "{not json", "[]"):
        run.record.write_text(text)
        assert not run.done() and run.state() == "todo"
    run.record.write_text('{"status": "ok"}')
    assert run.state() == "done"


def test_paper_profile_counts_the_committed_records_as_done(capsys):
    """The fresh-clone case: results/paper/notebooks/ is git-ignored, the records are not."""
    committed = {f.stem for f in (REPO / "results" / "paper").glob("*.json")
                 if json.loads(f.read_text()).get("status") == "ok"}
    assert committed
    assert main(["sweep", "--profile", "paper", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    done = {line.split()[-1] for line in lines if line.startswith("done")}
    assert done == committed
    assert len(lines) == len(plan(load_profile("paper")))


def test_record_parameters_are_the_notebook_parameters(swept):
    _, run, record = swept
    rec = json.loads(record.read_text())
    assert rec["schema"] == 2
    params = rec["parameters"]
    assert set(params) == set(notebook_parameters()) - NOT_RECORDED
    assert "precision" not in params
    assert {k: params[k] for k in run.parameters} == run.parameters  # as given by the sweep
    assert params["train_size"] == 0 and params["test_size"] == 60
    derived = rec["derived"]
    assert derived["precision"] in ("bf16", "fp32") and derived["torch_threads"] >= 1
    assert derived["train_size"] == SPLIT_SIZES["digits"][0] and derived["test_size"] == 60
    row = load_records(record).iloc[0]
    assert row.test_size == 60 and row.train_size == SPLIT_SIZES["digits"][0]


def test_version_1_records_read_as_version_2(digits, digits_test):
    rec = read_record(REPO / "results" / "legacy" / "paper-mnist-random-ipc1-s0.json")
    assert rec["upgraded_from"] == 1 and "precision" not in rec["parameters"]
    assert rec["parameters"]["train_size"] == 0 and rec["parameters"]["test_size"] == 0
    assert rec["derived"] == {"precision": "bf16", "train_size": 60000, "test_size": 10000,
                              "torch_threads": 1}
    assert set(rec["parameters"]) <= set(notebook_parameters()) - NOT_RECORDED
    df = load_records(REPO / "results" / "legacy")
    assert (df.test_size == 10000).all() and (df.precision == "bf16").all()
    assert SPLIT_SIZES["digits"] == (len(digits), len(digits_test))


def test_rerun_reproduces_a_fresh_record(swept, capsys, caplog):
    _, _, record = swept
    caplog.set_level(logging.WARNING, logger="papermill")
    assert main(["rerun", str(record)]) == 0
    out = capsys.readouterr().out
    assert "accuracy soft (%)" in out and "accuracy hard (%)" in out and "feature W2 weighted" in out
    assert "reproduces" in out and "DOES NOT" not in out
    assert "Passed unknown parameter" not in caplog.text


def test_rerun_fails_when_the_record_differs(swept, tmp_path, capsys):
    """A version-1 copy of the record (sizes resolved, precision among the parameters), its
    soft-label accuracy raised by 5 points: the hard-label one reproduces, the soft one not."""
    _, _, record = swept
    rec = json.loads(record.read_text())
    derived = rec.pop("derived")
    rec["parameters"].update(precision=derived["precision"], train_size=derived["train_size"],
                             test_size=derived["test_size"])
    rec.update(schema=1)
    rec["accuracy"]["soft"] += 5
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(rec))
    keep = tmp_path / "keep"
    report = tmp_path / "reports" / "rerun.json"
    report.parent.mkdir()
    assert main(["rerun", str(edited), "--keep", str(keep), "--json", str(report)]) == 1
    out = capsys.readouterr().out
    soft = next(line for line in out.splitlines() if line.startswith("accuracy soft"))
    hard = next(line for line in out.splitlines() if line.startswith("accuracy hard"))
    assert soft.endswith("DIFFERS") and "-5.00" in soft and hard.endswith("ok")
    assert "DOES NOT REPRODUCE" in out
    saved = json.loads(report.read_text())  # the same verdict, with the re-run's provenance
    assert saved["reproduces"] is False and saved["mismatches"] == ["accuracy soft (%)"]
    rows = {row["quantity"]: row for row in saved["rows"]}
    assert rows["accuracy soft (%)"]["recorded"] - rows["accuracy soft (%)"]["rerun"] == (
        pytest.approx(5.0))
    assert saved["recorded_commit"] == rec["commit"] and "machine" in saved and saved["commit"]
    assert saved["record"] == str(edited)  # outside the project: the path as given
    assert list(report.parent.iterdir()) == [report]  # no temporary file left beside it
    assert (keep / f"{NAME}.ipynb").exists() and (keep / f"{NAME}.json").exists()


def test_rerun_usage_errors(tmp_path, capsys):
    missing = tmp_path / "no-such-record.json"
    assert main(["rerun", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pqlib: error: ") and str(missing) in err and "does not exist" in err
    assert err.count("\n") == 1

    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"schema": 2, "status": ')
    assert main(["rerun", str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert str(corrupt) in err and "not a JSON result record" in err and err.count("\n") == 1

    failed = tmp_path / "results" / "failed.json"
    failed.parent.mkdir()
    failed.write_text(json.dumps({"run": "x", "status": "failed", "parameters": {}}))
    assert main(["rerun", "results/failed.json", "--root", str(tmp_path)]) == 2  # under --root
    err = capsys.readouterr().err
    assert "status 'failed'" in err and "pqlib sweep" in err and err.count("\n") == 1
    assert str(failed.resolve()) in err


def test_rerun_table_reads_the_reports(tmp_path):
    """Two saved reports, one that reproduces and one that does not: the book's table shows
    the commits, the machine and the differences re-run − recorded."""
    from pqlib.rerun import RerunReport
    from pqlib.results import rerun_table

    def report(name, soft, hard, tolerance=0.5):
        rep = RerunReport(Path(f"{name}.json"), name, {}, 1, tolerance,
                          rows=[("accuracy soft (%)", 95.0, soft), ("accuracy hard (%)", 90.0, hard),
                                ("W2 weighted", 1.0, 1.1)],
                          checked={"accuracy soft (%)", "accuracy hard (%)"},
                          recorded_commit="a" * 40, commit="b" * 40)
        (tmp_path / f"{name}.json").write_text(json.dumps(rep.to_dict()))

    report("r1", 95.2, 90.0)
    report("r2", 95.0, 88.4)
    table = rerun_table(tmp_path).set_index("run")
    assert table.loc["r1", "soft Δ"] == pytest.approx(0.2) and table.loc["r2", "hard Δ"] == (
        pytest.approx(-1.6))
    assert table.reproduces.tolist() == [True, False]
    assert (table["recorded at"] == "aaaaaaa").all() and (table["re-run at"] == "bbbbbbb").all()
    assert rerun_table(tmp_path / "none").empty
