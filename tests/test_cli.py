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


def _folder(root, classes, n, size, seed=0):
    """An image folder of RGB PNGs: ``root/{train,test}/<class>/i.png``, a colour per class."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                x = (0.5 * torch.rand(size, size, 3, generator=g) + 0.5 * (c / len(classes)))
                Image.fromarray((x * 255).byte().numpy()).save(root / split / name / f"{i}.png")
    return root


def test_gpu_recipe_runs_on_the_cpu_with_tiny_components(tmp_path, capsys):
    """The commands of the book's Reproduce page for a GPU (Stable Diffusion prior, a given
    ResNet-18 teacher), with tiny random components on the CPU: distill, then evaluate."""
    from safetensors.torch import save_file
    from test_priors import _tiny_sd_pipeline

    from pqlib.models import build

    data = _folder(tmp_path / "imgs", ["cat", "dog"], 6, 16)
    (tmp_path / "tok").mkdir()
    _tiny_sd_pipeline(tmp_path / "tok").save_pretrained(tmp_path / "sd")
    save_file(build("resnet18", 3, 2, 16).state_dict(), tmp_path / "resnet18.safetensors")
    save_file(build("resnet18", 3, 5, 16).state_dict(), tmp_path / "resnet18-5.safetensors")
    dataset = f"imagefolder:{data}"
    teacher = f"resnet18:{tmp_path / 'resnet18.safetensors'}"
    assert run("distill", "--method", "ddoq", "--dataset", dataset, "--ipc", "2",
               "--prior", f"sd:{tmp_path / 'sd'}", "--device", "cpu", "--set", "steps=2",
               "--out", str(tmp_path / "ddoq")) == 0
    assert run("distill", "--method", "wmdd", "--dataset", dataset, "--ipc", "2",
               "--teacher", teacher, "--device", "cpu", "--set", "iterations=2",
               "--out", str(tmp_path / "wmdd")) == 0
    for name in ("ddoq", "wmdd"):
        assert run("evaluate", str(tmp_path / name), "--teacher", teacher, "--epochs", "2",
                   "--device", "cpu") == 0
        record = json.loads((tmp_path / name / "eval-convnet-resnet18-fkd-e2-s0.json").read_text())
        assert record["teacher_accuracy"] is None and record["teacher_id"].startswith("imagefolder")
        assert record["distilled"]["method"] == name and 0 <= record["accuracy"] <= 100
    capsys.readouterr()
    # a teacher for other classes, a missing model folder: one line each, exit 2
    assert run("distill", "--method", "wmdd", "--dataset", dataset, "--ipc", "1", "--teacher",
               f"resnet18:{tmp_path / 'resnet18-5.safetensors'}", "--out", str(tmp_path / "x")) == 2
    assert "do not fit a pqlib 'resnet18'" in capsys.readouterr().err
    assert run("distill", "--method", "ddoq", "--dataset", dataset, "--ipc", "1", "--prior",
               f"sd:{tmp_path / 'nope'}", "--out", str(tmp_path / "x")) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "x").exists()
