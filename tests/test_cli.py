"""The `pqlib` command line: every user error exits 2 with a message naming the fix."""

import json
import subprocess
import sys

import pytest
import torch

from pqlib.cli import main


def run(*args):
    return main(list(args))


def test_distill_then_evaluate(tmp_path, capsys):
    out = tmp_path / "d"
    assert run("distill", "--method", "random", "--dataset", "digits", "--ipc", "3", "--seed", "0",
               "--out", str(out)) == 0
    assert (out / "distilled.csv").exists() and (out / "meta.json").exists()
    assert run("evaluate", str(out), "--dataset", "digits", "--teacher", "none", "--epochs", "30") == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed
    record = json.loads((out / "eval-convnet-none-dc-e30-s0.json").read_text())
    assert 10.0 < record["accuracy"] <= 100.0 and record["distilled"]["method"] == "random"
    assert record["protocol"]["name"] == "dc" and record["protocol"]["epochs"] == 30
    assert "protocol dc E=30" in printed
    assert f"{record['accuracy']:.2f}" in printed


@pytest.mark.parametrize("args,message", [
    (["distill", "--method", "magic", "--dataset", "digits", "--ipc", "1", "--out", "X"],
     "unknown method 'magic'; registered methods: "),
    (["distill", "--method", "random", "--dataset", "digits", "--ipc", "0", "--out", "X"],
     "ipc=0 must be an integer >= 1"),
    (["distill", "--method", "random", "--dataset", "digits", "--ipc", "1000", "--out", "X"],
     "ipc=1000 is larger than class"),
    (["distill", "--method", "random", "--dataset", "nope", "--ipc", "1", "--out", "X"],
     "unknown dataset 'nope'"),
    (["distill", "--method", "random", "--dataset", "digits", "--ipc", "1", "--out", "X", "--set", "oops"],
     "--set 'oops' must look like key=value"),
    (["evaluate", "MISSING"], "not a distilled set"),
    (["distill", "--method", "ddoq", "--dataset", "digits", "--ipc", "1", "--out", "X",
      "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"],
     "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"),
])
def test_user_errors_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("pqlib: error: ") and message in err
    assert not (tmp_path / "X").exists()


def test_distill_on_a_local_dask_cluster_equals_the_serial_run(tmp_path, capsys):
    from pqlib.distilled import DistilledSet

    base = ["distill", "--method", "ddoq", "--dataset", "digits", "--ipc", "2", "--seed", "1",
            "--set", "prior=pixel", "--set", "steps=1"]
    assert run(*base, "--out", str(tmp_path / "here")) == 0
    assert run(*base, "--out", str(tmp_path / "dask"), "--executor", "dask", "--workers", "2") == 0
    here, there = DistilledSet.load(tmp_path / "here"), DistilledSet.load(tmp_path / "dask")
    assert torch.equal(here.images, there.images) and torch.equal(here.weights, there.weights)
    assert here.report.w2_latent == there.report.w2_latent


def test_existing_out_is_refused_unless_force(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    base = ["distill", "--method", "random", "--dataset", "digits", "--ipc", "1", "--out", str(out)]
    assert run(*base) == 2
    assert "pass --force" in capsys.readouterr().err and (out / "mine.txt").exists()
    assert run(*base, "--force") == 0 and not (out / "mine.txt").exists()


def test_sweep_list_under_a_root(tmp_path, capsys):
    assert run("sweep", "--profile", "smoke", "--list", "--root", str(tmp_path)) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].split() == ["todo", "smoke-mnist-random-ipc1-s0"]
    assert f"records in {tmp_path.resolve() / 'results'}" in captured.err
    assert run("sweep", "--profile", "smoke", "--list", "--root", str(tmp_path / "no")) == 2
    assert "--root" in capsys.readouterr().err


def test_installed_entry_point():
    res = subprocess.run([sys.executable, "-m", "pqlib.cli", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("pqlib ")
