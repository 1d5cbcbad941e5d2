"""Where a result came from: the code's commit (or, without one, where the code came from),
the machine and the library versions."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from ._version import __version__
from .cache import is_checkout

__all__ = ["CHECKOUT", "git_commit", "code_origin", "machine", "versions", "provenance"]

#: The repository checkout pqlib's code is imported from (an editable install or a run from the
#: checkout), or ``None`` for an installed pqlib (a wheel in site-packages).
CHECKOUT: Path | None = Path(__file__).resolve().parent.parent
CHECKOUT = CHECKOUT if is_checkout(CHECKOUT) else None


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=CHECKOUT, capture_output=True, text=True,
                          check=True).stdout.strip()


@lru_cache(maxsize=1)
def code_origin() -> dict:
    """``{"commit": sha or None, "source": words}``: the commit of the running code and where
    the code came from.

    From a git checkout: its ``HEAD`` (``+dirty`` when ``pqlib/`` has uncommitted changes) and
    ``"git checkout"``. Installed with pip from a git URL: the commit pip recorded (PEP 610) and
    ``"pqlib <version> installed from <url>"``. Otherwise the commit is ``None`` — unknown, never
    guessed — and the source says so, e.g. ``"pqlib 0.1.0 (installed, no git checkout)"``.
    """
    if CHECKOUT is not None:
        try:
            dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "pqlib")
            return {"commit": _git("rev-parse", "HEAD") + ("+dirty" if dirty else ""),
                    "source": "git checkout"}
        except (OSError, subprocess.CalledProcessError):
            return {"commit": None, "source": f"pqlib {__version__} (source tree without git)"}
    info = {}  # what pip recorded of where it installed pqlib from (PEP 610), if anything
    with contextlib.suppress(metadata.PackageNotFoundError, ValueError):
        info = json.loads(metadata.distribution("pqlib").read_text("direct_url.json") or "{}")
    if commit := (info.get("vcs_info") or {}).get("commit_id"):
        return {"commit": commit, "source": f"pqlib {__version__} installed from {info.get('url')}"}
    return {"commit": None, "source": f"pqlib {__version__} (installed, no git checkout)"}


def git_commit() -> str | None:
    """The commit of the running code, or ``None`` when it is unknown (see :func:`code_origin`)."""
    return code_origin()["commit"]


ISA_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


def machine() -> dict:
    """CPU (model name and :data:`ISA_FLAGS` it has), core count, torch threads and OS."""
    import torch

    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
        flags = set(next((line.split(":", 1)[1].split() for line in info
                          if line.startswith("flags")), []))
    except (OSError, StopIteration):
        cpu, flags = platform.processor() or platform.machine(), set()
    return {
        "cpu": cpu,
        # the vector units that decide bf16 speed (machines share a model name, not these)
        "isa": [f for f in ISA_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict:
    """Versions of pqlib and the libraries its results depend on."""
    out = dict.fromkeys(["pqlib", "torch", "numpy", "pot", "diffusers", "kornia", "scikit-learn"])
    for name in out:
        with contextlib.suppress(metadata.PackageNotFoundError):  # not installed: None
            out[name] = metadata.version(name)
    return out


def provenance() -> dict:
    """Everything above in one dict (``commit``, ``source``, ``machine``, ``versions``), for
    result records and ``meta.json``."""
    return {**code_origin(), "machine": machine(), "versions": versions()}
