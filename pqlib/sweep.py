"""Papermill sweeps: profile grid → one executed notebook and one result record per run.

A *profile* (a shipped ``pqlib/profiles/<name>.yaml`` or any YAML file) names the runs:
``variants`` × ``ipc`` × ``seeds``, with shared notebook ``parameters`` (optional per-IPC
``ipc_overrides`` of them, and ``seeds_by_ipc`` for IPCs run with other seeds), and the ``records`` / ``notebooks`` folders, relative to the project root
(:func:`pqlib.cache.project_root`: ``--root``, ``$PQLIB_ROOT``, the checkout, or the current
folder). Each run executes the experiment notebook :data:`NOTEBOOK` (read with jupytext)
through papermill and produces

* ``<notebooks>/<run>.ipynb`` — the executed notebook (``book/runs/`` for the book), and
* ``<records>/<run>.json`` — its result record (schema in :mod:`pqlib.results`), and
* ``<records>/distilled/<run>/`` — the distilled set (:meth:`DistilledSet.save` layout).

A run is *done* when its record exists with status ``ok``, wherever its executed notebook is:
the records are the source of truth (``results/paper/`` commits them, not the notebooks), so a
fresh clone resumes where the reference run stopped. ``notebooks=True`` (``pqlib sweep
--notebooks``) re-executes the done runs that have no notebook, to write the notebook and the
distilled set; their record is left as it is (unless ``force``), and the accuracies of the new
execution are reported beside the recorded ones. :func:`pqlib.rerun.rerun` (``pqlib rerun
RECORD``) re-executes one record's run in a scratch folder and compares the numbers.

A run executes in a staging folder (``<records>/.staging/<run>/``) and is moved into place only
when it succeeded, so an interrupted sweep leaves no half-written file; a failing run is
recorded with its error in ``<records>/failed/`` and the others go on; the exit status is
non-zero if any run failed.

Runs go through an executor (:mod:`pqlib.executor`): ``"local"`` runs ``workers`` kernels at
a time on this machine; ``"dask"`` submits each run as a task to a Dask cluster (a new
``LocalCluster`` of ``workers`` processes, or the one at ``scheduler``), where a run whose
worker dies is started again on another. Resuming is the same either way: the records decide.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import patch  # patch.dict: os.environ for the kernel, then restored

import yaml
from tqdm import tqdm

from .cache import atomic_dir, atomic_write, project_root, write_json
from .executor import completed, submit
from .executor import executor as start_executor
from .methods.warm import shared_stages, warm_stage
from .provenance import CHECKOUT, provenance

__all__ = ["Run", "Profile", "load_profile", "plan", "run_sweep", "execute_run",
           "SweepReport", "notebook_parameters", "PROFILES", "NOTEBOOK"]

#: The shipped profiles (package data): ``load_profile("smoke")`` reads ``PROFILES/smoke.yaml``.
PROFILES = Path(__file__).resolve().parent / "profiles"
#: The notebook a run executes travels with the code, not with the records: the checkout's
#: ``notebooks/experiment.py`` (the one copy the book and Colab use) when pqlib is imported from
#: a checkout, else the copy ``setup.py`` puts into the wheel as ``pqlib/notebooks/experiment.py``.
NOTEBOOK = (CHECKOUT or Path(__file__).resolve().parent) / "notebooks" / "experiment.py"


@dataclass(frozen=True)
class Profile:
    """A parsed profile file; ``records`` and ``notebooks`` are resolved under ``root``."""

    name: str
    description: str
    records: Path
    notebooks: Path
    parameters: dict
    ipc: list[int]
    seeds: list[int]
    variants: dict[str, dict]
    ipc_overrides: dict[int, dict] = field(default_factory=dict)
    seeds_by_ipc: dict[int, list[int]] = field(default_factory=dict)
    workers: int = 1
    root: Path = field(default_factory=Path.cwd)


@dataclass(frozen=True)
class Run:
    """One papermill execution: notebook parameters and where its outputs go."""

    name: str
    profile: str
    parameters: dict
    notebook: Path
    record: Path

    def recorded(self) -> dict:
        """The run's record, ``{}`` when it is missing, unreadable or not a JSON object."""
        try:
            record = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def done(self) -> bool:
        """Whether the run's record exists with status ``ok`` (the notebook may be missing)."""
        return self.recorded().get("status") == "ok"

    def state(self) -> str:
        """``"done"``, ``"done (no notebook)"`` or ``"todo"``."""
        if not self.done():
            return "todo"
        return "done" if self.notebook.exists() else "done (no notebook)"


def load_profile(profile: str | Path, *, root: str | Path | None = None) -> Profile:
    """Read a shipped profile by name (``smoke``, ``quick``, ``paper``: ``PROFILES/<name>.yaml``)
    or a YAML file by path; its ``records`` / ``notebooks`` folders are taken relative to
    :func:`pqlib.cache.project_root` ``(root)``."""
    path = Path(profile) if Path(profile).suffix else PROFILES / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise FileNotFoundError(f"profile {str(profile)!r} not found; profiles: {', '.join(known)}"
                                " (or the path of a YAML file)")
    spec = yaml.safe_load(path.read_text())
    missing = {"parameters", "ipc", "seeds", "variants"} - set(spec)
    if missing:
        raise ValueError(f"profile {str(path)!r} lacks {sorted(missing)}")
    for name, v in spec["variants"].items():
        if "method" not in (v or {}):
            raise ValueError(f"profile {str(path)!r}: variant {name!r} needs a 'method'")
    root = project_root(root)
    return Profile(
        name=path.stem, description=spec.get("description", ""),
        records=root / spec.get("records", "results"),
        notebooks=root / spec.get("notebooks", "book/runs"),
        parameters=dict(spec["parameters"]), ipc=list(spec["ipc"]), seeds=list(spec["seeds"]),
        variants={k: dict(v) for k, v in spec["variants"].items()},
        ipc_overrides={int(k): dict(v) for k, v in (spec.get("ipc_overrides") or {}).items()},
        seeds_by_ipc={int(k): list(v) for k, v in (spec.get("seeds_by_ipc") or {}).items()},
        workers=int(spec.get("workers", 1)), root=root,
    )


def notebook_parameters(notebook: Path = NOTEBOOK) -> dict:
    """The parameters cell of a jupytext notebook: ``{name: default}`` (defaults that are not
    literals come back as their source text)."""
    import jupytext

    cell = next((c for c in jupytext.read(notebook).cells
                 if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        raise ValueError(f"{notebook} has no cell tagged 'parameters'")
    out = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                out[node.targets[0].id] = ast.get_source_segment(cell.source, node.value)
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(text))


def _matches(run: Run, patterns: list[str]) -> bool:
    """A run matches if every pattern matches: ``key=value`` on its parameters, else a glob
    on its name."""
    for pat in patterns:
        key, sep, value = pat.partition("=")
        if sep:
            if str(run.parameters.get(key)) != value:
                return False
        elif not fnmatch.fnmatch(run.name, pat if any(c in pat for c in "*?[") else f"*{pat}*"):
            return False
    return True


def plan(profile: Profile | str, *, only: list[str] | None = None,
         root: str | Path | None = None) -> list[Run]:
    """The runs of a profile, in order (variants outermost, then IPC, then seed)."""
    if not isinstance(profile, Profile):
        profile = load_profile(profile, root=root)
    runs = []
    for variant, spec in profile.variants.items():
        for ipc in profile.ipc:
            if "ipc" in spec and ipc not in spec["ipc"]:
                continue
            for seed in profile.seeds_by_ipc.get(ipc, profile.seeds):
                params = {**profile.parameters, **profile.ipc_overrides.get(ipc, {}),
                          **{k: v for k, v in spec.items() if k not in ("method", "options", "ipc")},
                          "method": spec["method"], "variant": variant,
                          "options": dict(spec.get("options") or {}), "ipc": ipc, "seed": seed,
                          "profile": profile.name}
                name = f"{profile.name}-{_slug(params['dataset'])}-{variant}-ipc{ipc}-s{seed}"
                params["run_name"] = name
                runs.append(Run(name, profile.name, params, profile.notebooks / f"{name}.ipynb",
                                profile.records / f"{name}.json"))
    return [r for r in runs if _matches(r, only or [])]


#: glibc malloc settings for the kernels that execute runs (a setting already in the environment
#: wins): blocks under 32 MiB stay in the heap, larger ones (activations) go on transparent huge
#: pages, so they are not mapped and faulted in again at every step. Same results; 1.35x faster
#: student training and 1.6x faster teacher passes on one core of the Intel AMX machine.
KERNEL_MALLOC = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
                 "MALLOC_TRIM_THRESHOLD_": str(4 << 30), "MALLOC_TOP_PAD_": str(512 << 20)}


def kernel_malloc() -> dict[str, str]:
    """The :data:`KERNEL_MALLOC` settings not already in the environment (a user's setting wins)."""
    return {k: v for k, v in KERNEL_MALLOC.items() if k not in os.environ}


def execute_run(run: Run, *, threads: int | None = None, notebook: Path = NOTEBOOK,
                keep_record: bool = False, cwd: str | Path | None = None) -> dict:
    """Execute one run with papermill; move its outputs into place on success.

    ``threads`` is passed as the notebook's ``threads`` parameter (torch threads; 0 or ``None``:
    the default). With ``keep_record`` the executed notebook and the distilled set are moved
    into place but the existing record file is left untouched (the new execution's record is
    discarded). The kernel runs in ``cwd`` (default :func:`pqlib.cache.project_root`), so
    relative paths among the parameters (``imagefolder:data/...``) are read from the project
    root.

    Returns ``{"run", "status": "ok"|"failed", "seconds", "error", "accuracy"}`` (``accuracy``:
    that of this execution, ``None`` when it failed).
    """
    import jupytext
    import papermill

    stage = run.record.parent / ".staging" / run.name
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    staged_nb, staged_rec, staged_set = stage / "run.ipynb", stage / "record.json", stage / "distilled"
    cwd = Path(cwd or project_root())
    # paths relative to the kernel's folder: the executed notebook shows no machine paths
    params = dict(run.parameters, threads=threads or 0,
                  result_path=os.path.relpath(staged_rec, cwd),
                  distilled_dir=os.path.relpath(staged_set, cwd))
    start, record, error = time.perf_counter(), {}, None
    try:
        with patch.dict(os.environ, kernel_malloc()):
            papermill.execute_notebook(jupytext.read(notebook), str(staged_nb), parameters=params,
                                       kernel_name="python3", progress_bar=False, cwd=str(cwd))
        if not staged_rec.exists():
            raise RuntimeError(f"the notebook finished without writing its record {staged_rec}")
    except Exception as err:  # papermill raises PapermillExecutionError with the cell's traceback
        error = f"{type(err).__name__}: {err}"[-4000:]
    seconds = round(time.perf_counter() - start, 2)
    if error is None:
        record = dict(json.loads(staged_rec.read_text()), run=run.name, profile=run.profile,
                      wall_time_s=seconds)
        _place(staged_nb, run.notebook)
        if staged_set.exists():
            _place(staged_set, run.record.parent / "distilled" / run.name)
        if not keep_record:
            write_json(run.record, record)
    else:
        failed = run.record.parent / "failed"
        if staged_nb.exists():
            _place(staged_nb, failed / f"{run.name}.ipynb")
        write_json(failed / f"{run.name}.json", {
            "run": run.name, "status": "failed", "error": error, "parameters": run.parameters,
            "seconds": seconds, **provenance()})
    shutil.rmtree(stage, ignore_errors=True)
    return {"run": run.name, "status": "failed" if error else "ok", "seconds": seconds,
            "error": error, "accuracy": record.get("accuracy")}


def _shared_stages(runs: list[Run]) -> list[tuple]:
    """The distinct one-time stages that ``runs`` share (:func:`pqlib.methods.warm.shared_stages`)."""
    return list(dict.fromkeys(stage for r in runs for stage in shared_stages(r.parameters)))


def recorded_threads(record: dict) -> int | None:
    """The torch thread count a record was made with; ``None`` when it does not say."""
    return ((record.get("machine") or {}).get("torch_threads")
            or (record.get("derived") or {}).get("torch_threads"))


def _place(src: Path, dst: Path) -> None:
    """Copy a file or folder ``src`` onto ``dst``, replacing it atomically (the staging folder
    it comes from is removed afterwards)."""
    if src.is_dir():
        with atomic_dir(dst, overwrite=True) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    else:
        with atomic_write(dst) as f:
            f.write(src.read_bytes())


@dataclass
class SweepReport:
    """What a sweep did.

    With ``notebooks=True``, ``ok`` lists the runs whose notebook was re-created and
    ``records_kept`` maps each of them to ``{"recorded": accuracy, "executed": accuracy}``
    when its record was left untouched; ``todo`` lists the runs that have no record yet.
    """

    profile: str
    skipped: list[str]
    ok: list[str]
    failed: dict[str, str]
    seconds: float
    records_kept: dict[str, dict] = field(default_factory=dict)
    todo: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0


def run_sweep(profile: str | Path, *, only: list[str] | None = None, workers: int | None = None,
              executor="local", scheduler: str | None = None, force: bool = False,
              notebooks: bool = False, progress: bool = True,
              root: str | Path | None = None) -> SweepReport:
    """Run every unfinished run of a profile; see the module docstring.

    ``force``: re-run the done runs too (replacing their records). ``notebooks``: execute only
    the done runs that have no notebook, writing the notebook and the distilled set and leaving
    the record untouched (with ``force``, the record is replaced by the new execution's).
    ``root``: the project root the profile's folders are under (:func:`pqlib.cache.project_root`).
    ``executor``: ``"local"``, ``"dask"`` (with ``scheduler``: the address of a running
    cluster) or a pool with ``submit`` (see :func:`pqlib.executor.executor`).
    """
    prof = load_profile(profile, root=root)
    runs = plan(prof, only=only)
    if not runs:
        raise ValueError(f"no run of profile {prof.name!r} matches --only {only}")
    done = {r.name for r in runs if r.done()}
    missing = [r.name for r in runs if notebooks and r.name not in done]
    todo = [r for r in runs if (r.name in done and not r.notebook.exists() if notebooks
                                else force or r.name not in done)]
    todo.sort(key=lambda r: -r.parameters["ipc"])  # long runs first: short ones fill the tail
    skipped = [r.name for r in runs if r not in todo and r.name not in missing]
    keep = notebooks and not force
    shutil.rmtree(prof.records / ".staging", ignore_errors=True)  # leftovers of an interrupted sweep
    workers = workers or prof.workers
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    ok, failed, kept = [], {}, {}
    recorded = {r.name: r.recorded() for r in todo} if notebooks else {}
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"sweep {prof.name}", unit="run", disable=not progress)
    bar.write(f"sweep {prof.name}{' --notebooks' * notebooks}: {len(runs)} runs, "
              f"{len(skipped)} already done, {len(todo)} to run ({workers} at a time)"
              + (f"; records {'replaced (--force)' if force else 'left untouched'}, "
                 f"{len(missing)} without a record not run" if notebooks else ""))
    pool = (start_executor(executor, workers=workers, scheduler=scheduler)
            if isinstance(executor, str) else nullcontext(executor))
    with pool as ex, bar:
        # the one-time stages the runs share go first, side by side (pqlib.methods.warm)
        warmups = [submit(ex, warm_stage, *stage, threads=threads or 0, name=f"warm-{stage[0]}")
                   for stage in ([] if notebooks else _shared_stages(todo))]
        # a notebook re-created for a record uses the record's thread count, to match it
        futures = [submit(ex, execute_run, r, name=r.name, keep_record=keep, cwd=prof.root,
                          threads=recorded_threads(recorded.get(r.name, {})) or threads)
                   for r in todo]
        for error in filter(None, (fut.result() for fut in warmups)):
            bar.write(f"warming the shared stages: {error.splitlines()[0][:300]} (the runs go on)")
        for fut in completed(futures):
            res = fut.result()
            if res["status"] == "ok":
                ok.append(res["run"])
                if keep:
                    kept[res["run"]] = {"recorded": recorded[res["run"]].get("accuracy"),
                                        "executed": res["accuracy"]}
            else:
                failed[res["run"]] = res["error"]
                bar.write(f"FAILED {res['run']}: {res['error'].splitlines()[0][:300]}")
            bar.set_postfix(ok=len(ok), failed=len(failed))
            bar.update(1)
    return SweepReport(prof.name, skipped, ok, failed, time.perf_counter() - start,
                       records_kept=kept, todo=missing)
