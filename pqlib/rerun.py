"""Re-execute the run of one result record and compare the new numbers with the recorded ones.

``rerun("results/paper/paper-mnist-random-ipc1-s0.json")`` executes ``notebooks/experiment.py``
with the record's ``parameters`` (version-1 records read through
:func:`pqlib.results.upgrade_record`) through :func:`pqlib.sweep.execute_run`, the sweep's
papermill path, in a scratch folder, with the record's torch thread count, using the code of
the current checkout. The report lists the recorded and the new test accuracies (soft / hard
labels) and W2 figures; the run *reproduces* when every accuracy is within ``tolerance``
points of the record. The command line is ``pqlib rerun RECORD [--tolerance T] [--keep DIR]``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .provenance import git_commit
from .results import read_record
from .sweep import NOTEBOOK, Run, execute_run, notebook_parameters

__all__ = ["rerun", "RerunReport"]

EXAMPLE = "results/paper/paper-mnist-random-ipc1-s0.json"


@dataclass
class RerunReport:
    """The recorded and the re-run numbers of one record.

    ``rows``: ``(quantity, recorded, rerun)`` with ``None`` for a number one side lacks;
    ``checked``: the quantities held to ``tolerance`` (the accuracies, in points).
    ``error``: why the re-execution failed (then there are no new numbers).
    """

    record: Path
    run: str
    parameters: dict
    threads: int | None
    tolerance: float
    rows: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    recorded_commit: str | None = None
    commit: str | None = None
    seconds: float = 0.0
    kept: Path | None = None
    error: str | None = None

    @property
    def mismatches(self) -> list[str]:
        """Checked quantities that differ by more than the tolerance, or that one side lacks."""
        return [q for q, old, new in self.rows if q in self.checked
                and (old is None or new is None or abs(new - old) > self.tolerance)]

    @property
    def reproduces(self) -> bool:
        return self.error is None and not self.mismatches

    @property
    def exit_status(self) -> int:
        return 0 if self.reproduces else 1

    def table(self) -> str:
        """The report as text: a header, one line per quantity, and the verdict."""
        threads = f"{self.threads} torch thread{'s' * (self.threads != 1)}" if self.threads else \
            "default torch threads"
        lines = [f"rerun of {self.run} ({self.record}): {threads}, {self.seconds:.0f} s",
                 f"recorded at commit {_short(self.recorded_commit)}, re-run at commit "
                 f"{_short(self.commit)}"]
        if self.kept:
            lines.append(f"notebook, record and distilled set kept in {self.kept}")
        if self.error:
            lines.append(f"the re-execution FAILED: {self.error.splitlines()[0][:300]}")
            return "\n".join(lines)
        lines.append(f"{'':24}{'recorded':>12}{'rerun':>12}{'difference':>12}")
        for quantity, old, new in self.rows:
            digits = 2 if quantity in self.checked else 4
            cells = [f"{v:>12.{digits}f}" if v is not None else f"{'–':>12}" for v in (old, new)]
            diff = f"{new - old:>+12.{digits}f}" if old is not None and new is not None else f"{'':>12}"
            mark = ""
            if quantity in self.checked:
                mark = "  DIFFERS" if quantity in self.mismatches else "  ok"
            lines.append(f"{quantity:<24}{''.join(cells)}{diff}{mark}")
        if self.reproduces:
            lines.append(f"reproduces: every accuracy is within {self.tolerance:g} points of the record")
        else:
            lines.append(f"DOES NOT REPRODUCE: {', '.join(self.mismatches)} off by more than "
                         f"{self.tolerance:g} points (or missing)")
        return "\n".join(lines)


def _short(commit: str | None) -> str:
    commit = str(commit)
    return commit[:10] + ("+dirty" if commit.endswith("+dirty") else "")


def _load(path: Path) -> dict:
    if not path.is_file():
        what = "is a folder, not a record file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"record {path} {what}; pass the path of a result record "
                                f"(a .json file), e.g. {EXAMPLE}")
    try:
        return read_record(path, require_ok=True)
    except ValueError as err:
        fix = ("only the record of a finished run can be re-run: run it again with `pqlib sweep`"
               if "status" in str(err) else
               "pass a record written by notebooks/experiment.py or `pqlib sweep`, e.g. " + EXAMPLE)
        raise ValueError(f"{err}; {fix}") from None


def _rows(old: dict, new: dict) -> tuple[list, set]:
    rows, checked = [], set()
    old_acc, new_acc = old.get("accuracy") or {}, new.get("accuracy") or {}
    kinds = [k for k in ("soft", "hard") if k in old_acc or k in new_acc]
    kinds += sorted((set(old_acc) | set(new_acc)) - set(kinds))
    for kind in kinds:
        quantity = f"accuracy {kind} (%)"
        rows.append((quantity, old_acc.get(kind), new_acc.get(kind)))
        checked.add(quantity)
    for key, label in (("w2", "W2"), ("feature_w2", "feature W2")):
        a, b = old.get(key) or {}, new.get(key) or {}
        if not (a or b):
            continue
        space = a.get("space") or b.get("space")
        for weights in ("weighted", "uniform"):
            name = f"{label} {weights}" + (f" ({space})" if space else "")
            rows.append((name, a.get(weights), b.get(weights)))
    return rows, checked


def rerun(record_path: str | Path, *, tolerance: float = 0.5, keep: str | Path | None = None,
          notebook: Path = NOTEBOOK, progress: bool = True) -> RerunReport:
    """Re-execute a record's run with the current code and compare (see the module docstring).

    ``keep``: a new or empty folder to execute in and keep (default: a temporary folder,
    removed afterwards). Raises FileNotFoundError / ValueError / FileExistsError for a missing
    or unreadable record, a record whose status is not ``ok``, a record with parameters the
    notebook no longer has, or a non-empty ``keep`` folder.
    """
    path = Path(record_path)
    if not tolerance >= 0:
        raise ValueError(f"--tolerance {tolerance} must be a number of points >= 0")
    old = _load(path)
    params = dict(old.get("parameters") or {})
    unknown = sorted(set(params) - set(notebook_parameters(notebook)))
    if unknown:
        raise ValueError(f"{path} has parameters {unknown} that {notebook.name} does not have; "
                         f"re-run it from the commit it was made at ({old.get('commit')})")
    threads = (old.get("machine") or {}).get("torch_threads") or \
        (old.get("derived") or {}).get("torch_threads")
    if keep is not None:
        folder = Path(keep)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(f"--keep {str(folder)!r} exists and is not an empty folder; "
                                  f"pass a new or empty folder")
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix="pqlib-rerun-"))
    name = old.get("run") or path.stem
    run = Run(name, old.get("profile") or "rerun", params, folder / f"{name}.ipynb",
              folder / f"{name}.json")
    report = RerunReport(path, name, params, threads, tolerance, recorded_commit=old.get("commit"),
                         commit=git_commit(), kept=folder if keep is not None else None)
    if progress:
        print(f"re-running {name} in {folder} ({threads or 'default'} torch "
              f"thread{'s' * (threads != 1)}) ...", flush=True)
    start = time.perf_counter()
    try:
        res = execute_run(run, threads=threads, notebook=notebook)
        report.seconds = time.perf_counter() - start
        if res["status"] != "ok":
            report.error = res["error"]
            return report
        new = json.loads(run.record.read_text())
        report.rows, report.checked = _rows(old, new)
        return report
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
