"""pqlib installed from its wheel works outside the checkout: the `pqlib` command distills and
lists a shipped profile's runs from another folder, and provenance says there is no checkout.

The wheel is built without network (`--no-build-isolation`, the venv's setuptools) from a copy
of the sources, then installed with `pip install --no-deps --target` so that it reuses the
dependencies already installed here; `PYTHONPATH` puts the installed copy ahead of the checkout.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "notebooks/experiment.py"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(target folder with the installed pqlib, environment to run it with)``."""
    tmp = tmp_path_factory.mktemp("install")
    src, wheels, target = tmp / "src", tmp / "wheels", tmp / "site"
    shutil.copytree(REPO / "pqlib", src / "pqlib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in SOURCES:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
                    str(wheels), str(src)], check=True, capture_output=True, cwd=tmp)
    (wheel,) = wheels.glob("pqlib-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, cwd=tmp)
    env = {k: v for k, v in os.environ.items() if k not in ("PQLIB_ROOT", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    return target, env


def pqlib(target, cwd, env, *args):
    """Run the installed `pqlib` command (its console script) in ``cwd``."""
    res = subprocess.run([str(target / "bin" / "pqlib"), *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res


def test_installed_pqlib_distills_and_lists_runs_outside_the_checkout(installed, tmp_path):
    target, env = installed
    where = subprocess.run(
        [sys.executable, "-c", "import pqlib, pqlib.provenance as p, pqlib.sweep as s; "
         "print(pqlib.__file__, p.CHECKOUT, s.NOTEBOOK.is_file(), p.code_origin()['source'])"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split(maxsplit=3)
    assert Path(where[0]).is_relative_to(target)  # the installed copy, not the checkout
    assert where[1:3] == ["None", "True"] and "installed, no git checkout" in where[3]

    pqlib(target, tmp_path, env, "distill", "--method", "random", "--dataset", "digits",
          "--ipc", "1", "--out", "d")
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["method"] == "random" and meta["commit"] is None  # unknown, never guessed
    assert len((tmp_path / "d" / "distilled.csv").read_text().splitlines()) == 1 + 10

    res = pqlib(target, tmp_path, env, "sweep", "--profile", "smoke", "--list")
    lines = res.stdout.splitlines()
    assert lines and all(line.startswith("todo") for line in lines)
    assert "todo                smoke-mnist-random-ipc1-s0" in lines
    assert f"records in {tmp_path.resolve() / 'results'}" in res.stderr  # the folder it ran in


def test_provenance_in_the_checkout_names_its_commit():
    import re

    from pqlib.provenance import CHECKOUT, code_origin, provenance

    assert CHECKOUT == REPO
    origin = code_origin()
    assert origin["source"] == "git checkout"
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", origin["commit"])
    assert provenance()["commit"] == origin["commit"]


def test_machine_names_the_vector_units_that_decide_bf16_speed(tmp_path, monkeypatch):
    """Two machines here share the model name "Intel(R) Xeon(R) Processor"; only the flags
    tell the one with AMX-bf16 from the one without, so records keep them."""
    import pqlib.provenance as prov

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Some CPU\n"
                    "flags\t\t: fpu avx2 avx512f amx_tile amx_bf16\n")
    real_path = prov.Path
    monkeypatch.setattr(prov, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
    m = prov.machine()
    assert m["cpu"] == "Some CPU"
    assert m["isa"] == ["amx_bf16", "avx512f", "avx2"]  # in ISA_FLAGS order, absent ones left out
