"""Papermill sweeps: runs, resume, failures, interruption; and result tables."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import pqlib
from pqlib.results import accuracy_table, load_records
from pqlib.sweep import load_profile, plan, run_sweep, warm_stage

REPO = Path(__file__).resolve().parent.parent


def _profile(tmp_path, variants, seeds=(0,), name="tiny"):
    spec = {
        "description": "test profile",
        "records": str(tmp_path / "results"),
        "notebooks": str(tmp_path / "runs"),
        "parameters": {"dataset": "digits", "epochs": 3, "test_size": 60, "teacher_epochs": 20},
        "ipc": [1], "seeds": list(seeds), "variants": variants,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_plan_names_and_filters(tmp_path):
    path = _profile(tmp_path, {"random": {"method": "random"},
                               "kc": {"method": "kcenter", "options": {}}}, seeds=(0, 1))
    runs = plan(load_profile(path))
    assert [r.name for r in runs] == ["tiny-digits-random-ipc1-s0", "tiny-digits-random-ipc1-s1",
                                      "tiny-digits-kc-ipc1-s0", "tiny-digits-kc-ipc1-s1"]
    assert runs[2].parameters["method"] == "kcenter" and runs[2].parameters["variant"] == "kc"
    assert [r.name for r in plan(load_profile(path), only=["seed=1", "kc"])] == ["tiny-digits-kc-ipc1-s1"]
    with pytest.raises(FileNotFoundError, match="profiles: .*quick"):
        load_profile("no-such-profile")


def test_repository_profiles_are_valid():
    for name in ("smoke", "quick", "paper"):
        runs = plan(load_profile(name))
        assert runs and len({r.name for r in runs}) == len(runs)


def test_paper_profile_runs_fewer_seeds_at_ipc_50():
    runs = plan(load_profile("paper"))
    seeds = {ipc: {r.parameters["seed"] for r in runs if r.parameters["ipc"] == ipc}
             for ipc in (1, 10, 50)}
    assert seeds == {1: {0, 1, 2, 3, 4}, 10: {0, 1, 2, 3, 4}, 50: {0, 1, 2}}


def test_profiles_ship_in_the_package_and_records_go_under_the_project_root(tmp_path, monkeypatch):
    """--root, else $PQLIB_ROOT, else the checkout around the current folder, else the folder."""
    from pqlib.cache import project_root
    from pqlib.sweep import PROFILES

    assert PROFILES.parent == Path(pqlib.__file__).resolve().parent
    assert {p.stem for p in PROFILES.glob("*.yaml")} >= {"smoke", "quick", "paper"}
    monkeypatch.delenv("PQLIB_ROOT", raising=False)
    monkeypatch.chdir(REPO / "book")  # inside the checkout: the repository
    assert load_profile("paper").records == REPO / "results" / "paper"
    monkeypatch.chdir(tmp_path)  # outside: the current folder
    assert load_profile("smoke").records == tmp_path.resolve() / "results"
    for name in ("env", "arg"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("PQLIB_ROOT", str(tmp_path / "env"))
    assert plan("smoke")[0].record.parent == (tmp_path / "env" / "results").resolve()
    assert load_profile("smoke", root="arg").notebooks == (tmp_path / "arg" / "book" / "runs").resolve()
    with pytest.raises(FileNotFoundError, match="--root 'missing' is not a folder"):
        project_root("missing")
    monkeypatch.setenv("PQLIB_ROOT", "missing")
    with pytest.raises(FileNotFoundError, match="PQLIB_ROOT 'missing' is not a folder"):
        project_root()


def test_sweep_runs_resumes_and_records_failures(tmp_path, digits_teacher):
    path = _profile(tmp_path, {"random": {"method": "random"},
                               "broken": {"method": "random", "options": {"strength": 0.5}}})
    report = run_sweep(path, progress=False)
    assert report.ok == ["tiny-digits-random-ipc1-s0"] and list(report.failed) == ["tiny-digits-broken-ipc1-s0"]
    assert report.exit_status == 1 and "has no option" in report.failed["tiny-digits-broken-ipc1-s0"]
    rec_path = tmp_path / "results" / "tiny-digits-random-ipc1-s0.json"
    rec = json.loads(rec_path.read_text())
    assert rec["status"] == "ok" and set(rec["accuracy"]) == {"soft", "hard"}
    # every knob of the students' protocols is recorded, with the profile's epochs
    from pqlib.protocols import get_protocol, protocol_from_record

    assert protocol_from_record(rec, "hard") == get_protocol("dc300").replace(epochs=3)
    assert protocol_from_record(rec, "soft") == get_protocol("fkd").replace(epochs=3)
    assert rec["compiled"] == {"soft": False, "hard": False}  # too short to compile
    assert rec["wall_time_s"] > 0 and rec["commit"] and rec["machine"]["cores"] >= 1
    assert (tmp_path / "runs" / "tiny-digits-random-ipc1-s0.ipynb").exists()
    assert (tmp_path / "results" / "distilled" / "tiny-digits-random-ipc1-s0" / "distilled.csv").exists()
    failed = json.loads((tmp_path / "results" / "failed" / "tiny-digits-broken-ipc1-s0.json").read_text())
    assert failed["status"] == "failed" and "strength" in failed["error"]
    assert not (tmp_path / "results" / "tiny-digits-broken-ipc1-s0.json").exists()

    # resume: the finished run is skipped, the failed one is tried again
    mtime = rec_path.stat().st_mtime_ns
    again = run_sweep(path, only=["random"], progress=False)
    assert again.skipped == ["tiny-digits-random-ipc1-s0"] and again.ok == [] and again.exit_status == 0
    assert rec_path.stat().st_mtime_ns == mtime

    table = accuracy_table(load_records(tmp_path / "results"), "hard")
    assert list(table.index) == ["random"] and "IPC 1" in table.columns


def test_interrupted_sweep_leaves_no_partial_files_and_resumes(tmp_path, digits_teacher):
    path = _profile(tmp_path, {"random": {"method": "random"}}, seeds=(0, 1, 2))
    cmd = [sys.executable, "-m", "pqlib.cli", "sweep", "--profile", str(path)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    first = tmp_path / "results" / "tiny-digits-random-ipc1-s0.json"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert first.exists(), "the first run never finished"
    time.sleep(1.0)  # now inside the second run
    os.killpg(proc.pid, signal.SIGKILL)  # kill the sweep and its kernel, mid-run
    proc.wait()
    records = sorted(p.name for p in (tmp_path / "results").glob("*.json"))
    notebooks = sorted(p.name for p in (tmp_path / "runs").glob("*"))
    # only complete runs are in place: every record has its notebook, nothing half-written
    assert all(not n.startswith(".") for n in records + notebooks)
    assert {Path(n).stem for n in records} <= {Path(n).stem for n in notebooks}
    for r in records:
        json.loads((tmp_path / "results" / r).read_text())
    mtime = first.stat().st_mtime_ns
    report = run_sweep(path, progress=False)
    assert "tiny-digits-random-ipc1-s0" in report.skipped and report.exit_status == 0
    assert first.stat().st_mtime_ns == mtime
    assert len(list((tmp_path / "results").glob("*.json"))) == 3
    assert not (tmp_path / "results" / ".staging").exists() or not any((tmp_path / "results" / ".staging").iterdir())


def test_accuracy_table_counts_seeds_per_cell():
    df = pd.DataFrame({"variant": ["a", "a", "a", "a", "b", "b"], "ipc": [1, 1, 1, 10, 1, 10],
                       "seed": [0, 1, 2, 0, 0, 0], "acc_soft": [90.0, 92.0, 94.0, 97.0, 50.0, 60.0]})
    table = accuracy_table(df, "soft")
    assert table.loc["a", "IPC 1"] == "92.00 ± 2.00" and table.loc["a", "IPC 10"] == "97.00"
    assert table.loc["a", "seeds"] == "3/1" and table.loc["b", "seeds"] == "1"
    with pytest.raises(ValueError, match="acc_hard"):
        accuracy_table(df, "hard")


def test_show_run_falls_back_to_another_ipc(tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import torch

    from pqlib.distilled import DistilledSet
    from pqlib.plotting import show_run

    name = "smoke-mnist-foo-ipc2-s0"
    d = DistilledSet(torch.rand(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]), torch.ones(4), ("a", "b"), {})
    d.save(tmp_path / "distilled" / name)
    (tmp_path / f"{name}.json").write_text(json.dumps(
        {"parameters": {"variant": "foo", "ipc": 2, "seed": 0}, "accuracy": {"soft": 50.0},
         "commit": "abc", "machine": {}, "wall_time_s": 1.0}))
    assert show_run("foo", 10, root=tmp_path) is not None
    assert "showing IPC 2" in capsys.readouterr().out
    assert show_run("bar", 10, root=tmp_path) is None
    assert "No run of 'bar'" in capsys.readouterr().out


class _RecordingExecutor:
    """Runs nothing: records which run was submitted when and reports it ok."""

    def __init__(self):
        self.submitted, self.warmed = [], []

    def submit(self, fn, run, *args, **kwargs):
        from concurrent.futures import Future

        fut = Future()
        if fn is warm_stage:  # a shared one-time stage: ("teacher" | "latents", dataset, ...)
            self.warmed.append((run, *args))
            fut.set_result("")
            return fut
        self.submitted.append(run.name)
        fut.set_result({"status": "ok", "run": run.name, "accuracy": {}})
        return fut


def test_sweep_submits_the_largest_ipc_first(tmp_path):
    path = _profile(tmp_path, {"random": {"method": "random"}, "kc": {"method": "kcenter"}})
    spec = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(dict(spec, ipc=[1, 10, 2]), sort_keys=False))
    ex = _RecordingExecutor()
    report = run_sweep(path, executor=ex, progress=False)
    assert [n.split("-")[3] for n in ex.submitted] == ["ipc10", "ipc10", "ipc2", "ipc2", "ipc1", "ipc1"]
    assert ex.submitted[:2] == ["tiny-digits-random-ipc10-s0", "tiny-digits-kc-ipc10-s0"]  # stable
    assert sorted(report.ok) == sorted(ex.submitted)
    assert ex.warmed == [("teacher", "digits", "convnet_bn", 20, 0)]  # once, before the runs


def test_sweep_warms_the_shared_stages_first(tmp_path, monkeypatch, digits_teacher):
    """The teacher pass (and, with D4M / DDOQ, the prior's latents) of every class is computed
    once, as the sweep's first tasks; a run then finds it in the cache. A stage that cannot be
    computed is reported, not raised: the runs report their own errors."""
    from pqlib.data import load
    from pqlib.methods import common

    path = _profile(tmp_path, {"d4m": {"method": "d4m"}, "pix": {"method": "ddoq",
                                                                 "options": {"prior": "pixel"}}})
    ex = _RecordingExecutor()
    run_sweep(path, executor=ex, progress=False)
    key = ("digits", "convnet_bn", 20, 0)
    assert ex.warmed == [("teacher", *key), ("latents", *key)]  # the pixel prior encodes nothing

    monkeypatch.setenv("PQLIB_CACHE", str(tmp_path / "cache"))
    assert warm_stage("teacher", *key, threads=1) == ""
    assert len(list((tmp_path / "cache" / "teacher_pass").glob("*.safetensors"))) == 10
    passes = []
    monkeypatch.setattr(common, "teacher_pass", lambda *a, **k: passes.append(1))
    digits = load("digits")
    common.class_features(digits_teacher, digits.subset(torch.nonzero(digits.labels == 4).flatten()))
    assert passes == []  # from the cache
    assert "no trained prior for 'digits'" in warm_stage("latents", *key)


def test_sweep_on_a_dask_cluster_runs_and_resumes(tmp_path, digits_teacher):
    path = _profile(tmp_path, {"random": {"method": "random"}}, seeds=(0, 1))
    report = run_sweep(path, executor="dask", workers=2, progress=False)
    names = ["tiny-digits-random-ipc1-s0", "tiny-digits-random-ipc1-s1"]
    assert sorted(report.ok) == names and report.exit_status == 0
    for name in names:
        rec = json.loads((tmp_path / "results" / f"{name}.json").read_text())
        assert rec["status"] == "ok" and rec["run"] == name and set(rec["accuracy"]) == {"soft", "hard"}
        assert (tmp_path / "runs" / f"{name}.ipynb").exists()
    again = run_sweep(path, executor="dask", workers=2, progress=False)
    assert sorted(again.skipped) == names and again.ok == [] and again.exit_status == 0


def test_sweep_executor_errors_name_the_fix(tmp_path):
    from pqlib.checks import InvalidParameter
    from pqlib.executor import executor

    path = _profile(tmp_path, {"random": {"method": "random"}})
    with pytest.raises(InvalidParameter, match="'threads' is not one of"):
        run_sweep(path, executor="threads", progress=False)
    with pytest.raises(InvalidParameter, match="needs the dask executor"):
        run_sweep(path, scheduler="tcp://127.0.0.1:9", progress=False)
    with pytest.raises(ConnectionError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"):
        with executor("dask", scheduler="tcp://127.0.0.1:9"):
            pass
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").glob("*.json"))


def test_run_kernels_get_the_malloc_settings_and_a_users_setting_wins(tmp_path, monkeypatch):
    from pqlib.sweep import KERNEL_MALLOC, Run, execute_run

    probe = tmp_path / "probe.py"
    probe.write_text("# ---\n# jupyter:\n#   kernelspec:\n#     display_name: Python 3\n"
                     "#     language: python\n#     name: python3\n# ---\n\n"
                     '# %% tags=["parameters"]\nresult_path = None\n\n# %%\nimport json, os\n'
                     f'names = {list(KERNEL_MALLOC)!r}\n'
                     'json.dump({"env": {k: os.environ.get(k) for k in names}}, open(result_path, "w"))\n')
    for name in KERNEL_MALLOC:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_TOP_PAD_", "0")
    run = Run("probe", "test", {}, tmp_path / "runs" / "probe.ipynb", tmp_path / "results" / "probe.json")
    assert execute_run(run, notebook=probe, cwd=tmp_path)["status"] == "ok"
    assert json.loads(run.record.read_text())["env"] == dict(KERNEL_MALLOC, MALLOC_TOP_PAD_="0")
    assert "GLIBC_TUNABLES" not in os.environ and os.environ["MALLOC_TOP_PAD_"] == "0"  # restored
