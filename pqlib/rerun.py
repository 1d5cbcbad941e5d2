"""Re-execute the run of one result record and compare the new numbers with the recorded ones.

``rerun("results/paper/paper-mnist-random-ipc1-s0.json")`` executes the experiment notebook
(:data:`pqlib.sweep.NOTEBOOK`) with the record's ``parameters`` (version-1 records read through
:func:`pqlib.results.upgrade_record`) through :func:`pqlib.sweep.execute_run`, the sweep's
papermill path, in a scratch folder, with the record's torch thread count, using the code pqlib
runs from. The report lists the recorded and the new test accuracies (soft / hard labels) and
W2 figures; the run *reproduces* when every accuracy is within ``tolerance`` points of the
record. The command line is ``pqlib rerun RECORD [--tolerance T] [--keep DIR] [--json OUT]
[--root DIR]``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .cache import project_root
from .provenance import git_commit
from .results import read_record
from .sweep import NOTEBOOK, Run, execute_run, notebook_parameters, recorded_threads

__all__ = ["rerun", "RerunReport"]

EXAMPLE = "results/paper/paper-mnist-random-ipc1-s0.json"


@dataclass
class RerunReport:
    """The recorded and the re-run numbers of one record.

    ``rows``: ``(quantity, recorded, rerun)`` with ``None`` for a number one side lacks;
    ``checked``: the quantities held to ``tolerance`` (the accuracies, in points).
    ``recorded_commit`` / ``commit``: the code's commits, ``None`` when unknown (an installed
    pqlib without a git checkout). ``error``: why the re-execution failed (no new numbers then).
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

    def to_dict(self) -> dict:
        """The report as JSON-ready data, with the provenance of the re-run (``pqlib rerun
        --json``): committed beside the records, it is the evidence that they reproduce."""
        from .provenance import provenance

        record = Path(self.record).resolve()
        with contextlib.suppress(ValueError):  # inside the project: no machine path
            record = record.relative_to(project_root())
        return {"record": str(record), "run": self.run, "parameters": self.parameters,
                "threads": self.threads, "tolerance": self.tolerance,
                "recorded_commit": self.recorded_commit, "reproduces": self.reproduces,
                "mismatches": self.mismatches, "seconds": round(self.seconds, 1),
                "error": self.error,
                "rows": [{"quantity": q, "recorded": old, "rerun": new, "checked": q in self.checked}
                         for q, old, new in self.rows],
                **provenance(), "commit": self.commit}

    def table(self) -> str:
        """The report as text: a header, one line per quantity, and the verdict."""
        lines = [f"rerun of {self.run} ({self.record}): {_threads(self.threads)}, "
                 f"{self.seconds:.0f} s",
                 f"recorded at commit {_short(self.recorded_commit)}, re-run at commit "
                 f"{_short(self.commit)}"]
        if self.kept:
            lines.append(f"notebook, record and distilled set kept in {self.kept}")
        if self.error:
            return "\n".join([*lines, f"the re-execution FAILED: {self.error.splitlines()[0][:300]}"])
        lines.append(f"{'':24}{'recorded':>12}{'rerun':>12}{'difference':>12}")
        for quantity, old, new in self.rows:
            fmt = ".2f" if quantity in self.checked else ".4f"
            cells = [f"{v:>12{fmt}}" if v is not None else f"{'–':>12}" for v in (old, new)]
            cells.append(f"{new - old:>+12{fmt}}" if None not in (old, new) else " " * 12)
            if quantity in self.checked:
                cells.append("  DIFFERS" if quantity in self.mismatches else "  ok")
            lines.append(f"{quantity:<24}{''.join(cells)}")
        lines.append(f"reproduces: every accuracy is within {self.tolerance:g} points of the record"
                     if self.reproduces else f"DOES NOT REPRODUCE: {', '.join(self.mismatches)} "
                     f"off by more than {self.tolerance:g} points (or missing)")
        return "\n".join(lines)


def _threads(n: int | None) -> str:
    return f"{n} torch thread{'s' * (n != 1)}" if n else "default torch threads"


def _short(commit: str | None) -> str:
    if not commit:
        return "none (pqlib without a git checkout)"
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
               "pass a record written by the experiment notebook or `pqlib sweep`, e.g. " + EXAMPLE)
        raise ValueError(f"{err}; {fix}") from None


def _rows(old: dict, new: dict) -> tuple[list, set]:
    old_acc, new_acc = old.get("accuracy") or {}, new.get("accuracy") or {}
    kinds = [k for k in ("soft", "hard") if k in old_acc or k in new_acc]
    kinds += sorted((set(old_acc) | set(new_acc)) - set(kinds))
    rows = [(f"accuracy {kind} (%)", old_acc.get(kind), new_acc.get(kind)) for kind in kinds]
    checked = {quantity for quantity, _, _ in rows}
    for key, label in (("w2", "W2"), ("feature_w2", "feature W2")):
        a, b = old.get(key) or {}, new.get(key) or {}
        space = f" ({a.get('space') or b.get('space')})" if a.get("space") or b.get("space") else ""
        rows += [(f"{label} {w}{space}", a.get(w), b.get(w)) for w in ("weighted", "uniform")
                 if a or b]
    return rows, checked


def rerun(record_path: str | Path, *, tolerance: float = 0.5, keep: str | Path | None = None,
          notebook: Path = NOTEBOOK, progress: bool = True,
          root: str | Path | None = None) -> RerunReport:
    """Re-execute a record's run with the current code and compare (see the module docstring).

    ``keep``: a new or empty folder to execute in and keep (default: a temporary folder,
    removed afterwards). ``root``: the project root (:func:`pqlib.cache.project_root`): the
    kernel runs there, and a relative ``record_path`` that is not found from the current folder
    is read from it. Raises FileNotFoundError / ValueError / FileExistsError for a missing
    or unreadable record, a record whose status is not ``ok``, a record with parameters the
    notebook no longer has, or a non-empty ``keep`` folder.
    """
    if not tolerance >= 0:
        raise ValueError(f"--tolerance {tolerance} must be a number of points >= 0")
    root, path = project_root(root), Path(record_path)
    if not path.exists() and (root / path).exists():  # (root / an absolute path is that path)
        path = root / path
    old = _load(path)
    params = dict(old.get("parameters") or {})
    unknown = sorted(set(params) - set(notebook_parameters(notebook)))
    if unknown:
        raise ValueError(f"{path} has parameters {unknown} that {notebook.name} does not have; "
                         f"re-run it from the commit it was made at ({_short(old.get('commit'))})")
    threads = recorded_threads(old)
    if keep is not None:
        folder = Path(keep)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise FileExistsError(f"--keep {str(folder)!r} exists and is not an empty folder; "
                                  f"pass a new or empty folder")
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix="pqlib-rerun-"))
    name = old.get("run") or path.stem
    # every stage computed again: none is taken from the stage cache
    run = Run(name, old.get("profile") or "rerun", dict(params, reuse=False),
              folder / f"{name}.ipynb", folder / f"{name}.json")
    if progress:
        print(f"re-running {name} in {folder} ({_threads(threads)}) ...", flush=True)
    try:
        res = execute_run(run, threads=threads, notebook=notebook, cwd=root)
        new = run.recorded()
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    report = RerunReport(path, name, params, threads, tolerance, recorded_commit=old.get("commit"),
                         commit=git_commit(), seconds=res["seconds"], error=res["error"],
                         kept=folder if keep is not None else None)
    if report.error is None:
        report.rows, report.checked = _rows(old, new)
    return report
