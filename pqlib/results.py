"""Result records → pandas tables, and the paper-reported numbers beside them.

A *result record* is one JSON file per run, ``results/<run>.json`` (the reference run of the
``paper`` profile lives in ``results/paper/``). ``notebooks/experiment.py`` builds it with
:func:`build_record` and writes it with :func:`write_record`; :mod:`pqlib.sweep` completes it.
Schema (version 2)::

    schema          2
    run             run name, e.g. "quick-mnist-ddoq-ipc10-s0"
    profile         smoke | quick | paper | (custom)
    status          "ok" (failed runs are kept apart, in results/failed/)
    parameters      exactly the notebook parameters that re-create the run, as given: dataset,
                    method, variant, options, ipc, seed, student, teacher, teacher_epochs,
                    epochs, train_size, test_size (0 = all), ... — every parameter of the
                    notebook's parameters cell except threads, reuse, result_path and distilled_dir
                    (``variant`` is the method's name when none was given); ``pqlib rerun``
                    executes the notebook with them
    derived         what those parameters resolved to on this machine: precision ("bf16" |
                    "fp32"), train_size / test_size (images actually used), torch_threads
    accuracy        {"soft": %, "hard": %, ...} test accuracy of the students, in percent
    w2              the method's own W2 figures (latent space for d4m/ddoq, feature space for
                    wmdd): {"weighted": W2, "uniform": W2, "reduction_pct": %}
    feature_w2      W2 between each class's teacher features and the distilled set's
                    (weighted / uniform), averaged over classes — one yardstick for all methods
    stage_seconds   wall time per distillation stage (encode, quantize, decode, synthesize, ...)
    train_seconds   wall time of each student training (+ evaluation)
    teacher         {"id", "accuracy"}
    distill_meta    the DistilledSet's report (:meth:`DistillReport.to_dict`: options, timings,
                    W2, ...) without its index and loss lists
    commit, source, machine, versions   provenance (``source``: where the code came from;
                    ``commit`` is null outside a git checkout)
    wall_time_s     the whole run (set by the sweep: kernel start to finish)
    created         ISO-8601 UTC time the record was written

Version 1 records (the committed reference run) kept the derived values inside
``parameters``: ``precision``, and ``train_size`` / ``test_size`` as the numbers of images used.
:func:`upgrade_record` reads them as version 2: ``parameters`` without ``precision``, sizes equal
to the whole split read as 0, the recorded values moved to ``derived``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .cache import project_root, write_json
from .protocols import Protocol, protocol_from_record

__all__ = ["build_record", "StudentResult", "method_order", "write_record", "load_records",
           "upgrade_record", "read_record", "accuracy_table", "paper_reported", "find_run",
           "results_root", "provenance_line", "stage_table", "provenance_table", "rerun_table",
           "speed_table",
           "SCHEMA_VERSION",
           "READABLE_SCHEMAS", "PROFILE_PREFERENCE", "SPLIT_SIZES"]

PROFILE_PREFERENCE = ("paper", "quick", "smoke")

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)

# (train, test) sizes of the built-in datasets' whole splits (see pqlib.data), to read the
# resolved sizes of version-1 records back as "0 = all"
SPLIT_SIZES = {"mnist": (60000, 10000), "digits": (1437, 360)}


def method_order(profiles=PROFILE_PREFERENCE) -> list[str]:
    """Method variants in the order the profiles list them (their ``variants`` in the YAML
    files, the first profile first), for tables and figures."""
    from .sweep import load_profile

    return list(dict.fromkeys(v for name in profiles for v in load_profile(name).variants))


@dataclass(frozen=True)
class StudentResult:
    """One student trained on a distilled set and tested: test ``accuracy`` (%), ``seconds`` of
    training and testing, its ``protocol`` and whether it ran ``compiled``."""

    accuracy: float
    seconds: float
    protocol: Protocol
    compiled: bool


def build_record(parameters: dict, distilled, students: dict[str, StudentResult], *, teacher,
                 feature_w2, train_size: int, test_size: int, notebook_seconds: float) -> dict:
    """The result record of one run (the schema above, without ``schema`` / ``created``, which
    :func:`write_record` adds).

    Parameters
    ----------
    parameters : the notebook parameters that re-create the run, as given (``run_name`` and
        ``profile`` among them)
    distilled : the :class:`~pqlib.distilled.DistilledSet`; its report gives the method's W2,
        stage times and ``distill_meta``
    students : ``{"soft": StudentResult, "hard": ...}``, in the order they were trained
    teacher : the soft-label :class:`~pqlib.train.Teacher`
    feature_w2 : :class:`~pqlib.report.W2` in the teacher's feature space
        (:func:`pqlib.methods.common.feature_w2`)
    train_size, test_size : numbers of training / test images used
    notebook_seconds : wall time of the run so far
    """
    import torch

    from .provenance import provenance
    from .train import resolve_precision

    report = distilled.report
    space, own = report.method_w2 or (None, None)
    return {
        "run": parameters.get("run_name"), "profile": parameters.get("profile"), "status": "ok",
        "parameters": dict(parameters),
        "derived": {"precision": resolve_precision(), "train_size": train_size,
                    "test_size": test_size, "torch_threads": torch.get_num_threads()},
        "accuracy": {kind: s.accuracy for kind, s in students.items()},
        "protocol": {kind: s.protocol.as_dict() for kind, s in students.items()},
        "compiled": {kind: s.compiled for kind, s in students.items()},
        "w2": own and {"space": space, "weighted": own.weighted, "uniform": own.uniform,
                       "reduction_pct": own.reduction_pct},
        "feature_w2": {"weighted": feature_w2.weighted, "uniform": feature_w2.uniform},
        "stage_seconds": report.stage_seconds or {},
        "train_seconds": {kind: round(s.seconds, 2) for kind, s in students.items()},
        "teacher": {"id": teacher.id, "accuracy": teacher.accuracy},
        "distill_meta": {k: v for k, v in report.to_dict().items()
                         if k not in ("train_indices", "init_indices", "loss_history")},
        **provenance(),
        "notebook_seconds": round(notebook_seconds, 2),
    }


def write_record(path: str | Path, record: dict) -> Path:
    """Write one result record atomically (adds ``schema`` and ``created``)."""
    write_json(path, {"schema": SCHEMA_VERSION, **record,
                      "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return Path(path)


def read_record(path: str | Path, *, require_ok: bool = False) -> dict:
    """One record file, as version 2 (:func:`upgrade_record`). Raises ValueError naming the file
    when it is not a JSON object, has an unknown schema version, or (``require_ok``) its status
    is not ``"ok"``."""
    try:
        rec = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a JSON result record ({err})") from None
    if not isinstance(rec, dict):
        raise ValueError(f"{path} is not a JSON result record (a {type(rec).__name__}, not an object)")
    if require_ok and rec.get("status") != "ok":
        raise ValueError(f"{path} has status {rec.get('status')!r}, not 'ok'")
    if rec.get("schema") not in READABLE_SCHEMAS:
        raise ValueError(f"{path}: schema {rec.get('schema')!r}, expected one of {READABLE_SCHEMAS}")
    return upgrade_record(rec)


def upgrade_record(rec: dict) -> dict:
    """A record in the version-2 layout (a copy; version-2 records come back unchanged).

    A version-1 record's ``parameters`` lose ``precision``; its ``train_size`` / ``test_size``
    (the numbers of images used) read as 0 when they are the whole split of a built-in dataset
    (:data:`SPLIT_SIZES`), else stay as they are (the notebook uses the first N images, so the
    same N selects the same images). The recorded values go to ``derived``, with the torch
    thread count from ``machine``. Version-1 students were trained eagerly under the
    ``legacy-hard`` / ``legacy-soft`` protocols (:mod:`pqlib.protocols`), which the upgraded
    parameters name. The copy has ``schema`` 2 and ``upgraded_from`` 1.
    """
    if rec.get("schema") != 1:
        return rec
    params = dict(rec.get("parameters") or {})
    derived = {"precision": params.pop("precision", None), "train_size": params.get("train_size"),
               "test_size": params.get("test_size"),
               "torch_threads": (rec.get("machine") or {}).get("torch_threads")}
    whole = SPLIT_SIZES.get(params.get("dataset"), ())  # () for other datasets: no size changes
    params.update({key: 0 for key, n in zip(("train_size", "test_size"), whole)
                   if params.get(key) == n},  # the whole split: "0 = all"
                  hard_protocol="legacy-hard", soft_protocol="legacy-soft", compile=False)
    return {**rec, "schema": 2, "upgraded_from": 1, "parameters": params, "derived": derived}


def load_records(*locations: str | Path) -> pd.DataFrame:
    """Load result records (files or folders of ``*.json``) into one flat DataFrame.

    One row per run with columns ``run, profile, dataset, method, variant, ipc, seed``,
    ``epochs``, ``train_size``, ``test_size`` (images used), ``precision``,
    ``teacher_accuracy`` (%), ``acc_<kind>`` (%) and ``protocol_<kind>`` for every student
    (``soft``, ``hard``, ``soft_noaug``, ...), ``w2_weighted, w2_uniform, w2_reduction_pct``,
    ``fw2_weighted, fw2_uniform``, ``t_<stage>`` stage seconds, ``t_distill`` (the whole
    distillation), ``t_student_<kind>`` (seconds of each student), ``wall_time_s``, ``commit``,
    ``cpu``, ``created``. Reads schema versions 1 and 2 (:func:`upgrade_record`); other versions raise
    ValueError.
    """
    rows = []
    for loc in map(Path, locations or (results_root(),)):
        files = sorted(loc.glob("*.json")) if loc.is_dir() else [loc]
        rows += [_flatten(read_record(f)) for f in files]
    return pd.DataFrame(rows)


def _flatten(rec: dict) -> dict:
    p, derived, kinds = rec.get("parameters", {}), rec.get("derived") or {}, rec.get("accuracy") or {}
    w2, fw2 = rec.get("w2") or {}, rec.get("feature_w2") or {}
    return {"run": rec.get("run"), "profile": rec.get("profile"), "dataset": p.get("dataset"),
            "method": p.get("method"), "variant": p.get("variant") or p.get("method"),
            "ipc": p.get("ipc"), "seed": p.get("seed"), "epochs": p.get("epochs"),
            "train_size": derived.get("train_size"), "test_size": derived.get("test_size"),
            "precision": derived.get("precision"), "teacher_accuracy": (rec.get("teacher") or {}).get("accuracy"),
            **{f"acc_{kind}": acc for kind, acc in kinds.items()},
            **{f"protocol_{kind}": "{0.name} (E={0.epochs})".format(protocol_from_record(rec, kind)) for kind in kinds},
            "w2_weighted": w2.get("weighted"), "w2_uniform": w2.get("uniform"),
            "w2_reduction_pct": w2.get("reduction_pct"),
            "fw2_weighted": fw2.get("weighted"), "fw2_uniform": fw2.get("uniform"),
            **{f"t_{stage}": sec for stage, sec in (rec.get("stage_seconds") or {}).items()},
            "t_distill": (rec.get("distill_meta") or {}).get("wall_time_s"),
            **{f"t_student_{kind}": sec for kind, sec in (rec.get("train_seconds") or {}).items()},
            "wall_time_s": rec.get("wall_time_s"), "commit": rec.get("commit"),
            "cpu": (rec.get("machine") or {}).get("cpu"), "created": rec.get("created")}


def _mean_std(values: pd.Series) -> str:
    v = values.dropna()
    # two decimals: MNIST's 10,000 test images resolve 0.01 points, and near the ceiling (soft
    # labels at IPC 10 and 50) the methods differ by hundredths that one decimal rounds away
    return "–" if v.empty else f"{v.iloc[0]:.2f}" if len(v) == 1 else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def accuracy_table(df: pd.DataFrame, kind: str = "soft", *, order: list[str] | None = None
                   ) -> pd.DataFrame:
    """Accuracy (mean ± std over seeds, in %, two decimals) with one row per method variant and
    one column per IPC, from :func:`load_records` output. ``kind``: ``"soft"`` or ``"hard"``.

    The ``seeds`` column counts the seeds behind each cell: one number when all cells of the
    row have the same count, else the counts in column order (``"3/3/1"``; ``0`` = no run)."""
    col = f"acc_{kind}"
    if col not in df:
        raise ValueError(f"no {col!r} column; available: {[c for c in df if c.startswith('acc_')]}")
    table = df.pivot_table(index="variant", columns="ipc", values=col, aggfunc=_mean_std)
    counts = df.dropna(subset=[col]).pivot_table(index="variant", columns="ipc", values="seed",
                                                 aggfunc="nunique").reindex_like(table)
    # seeds per cell, in column order ("3/3/1"), or one number when every cell has the same
    seeds = ["/".join("0" if pd.isna(n) else str(int(n)) for n in row) if row.nunique(dropna=False) > 1
             else str(int(row.iloc[0])) for _, row in counts.iterrows()]
    table = table.fillna("–").rename(columns=lambda c: f"IPC {c}").assign(seeds=seeds)  # "–": no run
    return table.reindex([v for v in order or () if v in table.index]
                         + [v for v in table.index if v not in (order or ())]).rename_axis(index="method", columns=None)


def paper_reported() -> dict[str, pd.DataFrame]:
    """Numbers reported by the papers and the literature (REFERENCE.md), labelled as such.

    Keys: ``"ddoq_imagenet"`` (ImageNet-1K, ResNet-18, top-1 %), ``"wmdd"`` (ResNet-18,
    mean ± std), ``"mnist_anchors"`` (ConvNet-3, hard labels, MNIST test %). None of these were
    measured by this repository.
    """
    nan = float("nan")
    ddoq = pd.DataFrame(
        {"SRe2L": [21.3, 46.8, 52.8, 57.0], "D4M": [27.9, 55.2, 59.3, 62.6],
         "RDED": [42.0, 56.5, nan, nan], "DDOQ": [33.1, 56.2, 60.1, 63.4]},
        index=pd.Index([10, 50, 100, 200], name="IPC"))
    wmdd = pd.DataFrame(
        {"IPC 1": ["40.2 ± 0.6", "7.6 ± 0.2", "3.2 ± 0.3"],
         "IPC 10": ["64.8 ± 0.4", "41.8 ± 0.1", "38.2 ± 0.2"],
         "IPC 50": ["83.5 ± 0.3", "59.4 ± 0.5", "57.6 ± 0.5"],
         "IPC 100": ["87.1 ± 0.3", "61.0 ± 0.3", "60.7 ± 0.2"]},
        index=pd.Index(["ImageNette", "Tiny-ImageNet", "ImageNet-1K"], name="dataset"))
    anchors = pd.DataFrame(
        {"IPC 1": ["64.9 ± 3.5", "89.2 ± 1.6", "89.3 ± 1.5", "91.7 ± 0.5", "88.7 ± 0.6", "89.7 ± 0.6"],
         "IPC 10": ["95.1 ± 0.9", "93.7 ± 0.3", "84.4 ± 1.7", "97.4 ± 0.2", "97.8 ± 0.1", "97.5 ± 0.1"],
         "IPC 50": ["97.9 ± 0.2", "94.8 ± 0.2", "97.4 ± 0.3", "98.8 ± 0.1", "99.2 ± 0.1", "98.6 ± 0.1"]},
        index=pd.Index(["random", "herding", "kcenter", "DC", "DSA", "dm"], name="method"))
    return {"ddoq_imagenet": ddoq, "wmdd": wmdd, "mnist_anchors": anchors}


def results_root() -> Path:
    """The ``results/`` folder of the project root (:func:`pqlib.cache.project_root`:
    ``$PQLIB_ROOT``, else the checkout around the current folder — book pages execute in their
    own folders inside it — else the current folder)."""
    return project_root() / "results"


def find_run(variant: str, ipc: int, *, seed: int = 0, root: str | Path | None = None,
             profiles=PROFILE_PREFERENCE) -> tuple[dict, Path] | None:
    """The record and distilled-set folder of a run, from the first profile that has it.

    Looks in ``<root>/`` and ``<root>/<profile>/`` for ``<profile>-*-<variant>-ipc<ipc>-s<seed>.json``
    with a matching ``distilled/<run>`` folder; returns ``(record, folder)`` or ``None``.
    """
    root = Path(root) if root is not None else results_root()
    for profile in profiles:
        for folder in (root / profile, root):
            for f in sorted(folder.glob(f"{profile}-*-{variant}-ipc{ipc}-s{seed}.json")):
                rec = json.loads(f.read_text())
                p = rec.get("parameters", {})
                distilled = folder / "distilled" / f.stem
                if (p.get("variant") or p.get("method")) == variant and distilled.is_dir():
                    return rec, distilled
    return None


def provenance_line(record: dict) -> str:
    """One line saying where a record came from: run, profile, seed, commit, machine, time."""
    record = upgrade_record(record)
    p, machine = record.get("parameters", {}), record.get("machine") or {}
    test_size = (record.get("derived") or {}).get("test_size")
    commit = record.get("commit")
    origin = f"commit {commit[:10]}" if commit else record.get("source") or "no commit recorded"
    return (f"run {record.get('run')} (profile {record.get('profile')}, seed {p.get('seed')}, "
            f"{p.get('epochs')} student epochs, {test_size} test images) — "
            f"{origin}, {machine.get('cpu')} ({machine.get('torch_threads')} threads), "
            f"{record.get('wall_time_s') or record.get('notebook_seconds')} s, {record.get('created')}")


def stage_table(df: pd.DataFrame) -> pd.DataFrame:
    """Median over seeds of the wall time (s) of each distillation stage, of the whole
    distillation (``distill``) and of each student's training and testing (``student_soft``,
    ``student_hard``, ...), per variant and IPC, with the number of ``runs`` behind each row.
    (The median, because work cached per machine — the prior's encoding of the data, teacher
    features, BatchNorm statistics — is paid by the first run that needs it.)"""
    cols = [c for c in df.columns if c.startswith("t_")]
    g = df.groupby(["variant", "ipc"])
    return (g[cols].median().round(2).set_axis([c[2:] for c in cols], axis=1)
            .dropna(axis=1, how="all").assign(runs=g.size()))


def provenance_table(df: pd.DataFrame) -> pd.DataFrame:
    """Who made the records: per profile, the run count, seeds and protocols
    (``dc (E=1000)``: the protocol's name and epochs; every knob in :mod:`pqlib.protocols`),
    test images, commits, CPUs, total wall time and when the records were written."""
    g = df.groupby("profile")
    protocols = df.filter(regex="^protocol_").agg(lambda r: ", ".join(sorted(set(r.dropna()))), axis=1)
    return pd.DataFrame({
        "runs": g["run"].count(),
        "protocols": protocols.groupby(df.profile).agg(lambda s: "; ".join(sorted(set(s)))),
        "seeds": g["seed"].apply(lambda s: ", ".join(str(int(v)) for v in sorted(s.unique()))),
        "test images": g["test_size"].apply(lambda s: ", ".join(str(int(v)) for v in sorted(s.dropna().unique()))),
        "commits": g["commit"].apply(
            lambda s: ", ".join(sorted({c[:10] if isinstance(c, str) else "none" for c in s}))),
        "machines": g["cpu"].apply(lambda s: ", ".join(sorted({str(c) for c in s}))),
        "total wall time (h)": g["wall_time_s"].sum().div(3600).round(2),
        "first / last record": g["created"].apply(lambda s: f"{min(s)} / {max(s)}"),
    })


def rerun_table(folder: str | Path) -> pd.DataFrame:
    """The re-run reports in ``folder`` (``pqlib rerun --json``), one row each: the run, the
    commit it was recorded at and re-run at, the re-run's CPU (``+AMX`` when it has
    amx_bf16), its seconds, the accuracy differences re-run − recorded (points) and whether it
    reproduces. Empty (with these columns) when there is no report."""
    cols = ["run", "recorded at", "re-run at", "machine", "seconds", "soft Δ", "hard Δ",
            "reproduces"]
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        rep = json.loads(path.read_text())
        delta = {r["quantity"].split()[1]: r["rerun"] - r["recorded"] for r in rep["rows"]
                 if r["checked"] and None not in (r["recorded"], r["rerun"])}
        rows.append([rep["run"], (rep.get("recorded_commit") or "none")[:7],
                     (rep.get("commit") or "none")[:7], _machine_label(rep),
                     rep.get("seconds"), delta.get("soft"), delta.get("hard"), rep["reproduces"]])
    return pd.DataFrame(rows, columns=cols)


def speed_table(folder: str | Path) -> pd.DataFrame:
    """The student-speed measurements in ``folder`` (``benchmarks/train_speed.py --json``,
    files ``train_speed_*.json``), one row per file and IPC: where (CPU, ``+AMX``, torch
    threads, malloc settings), ms (medians over the rounds; NaN where a file predates the
    measurement) per step and per teacher forward, and the ratios the evaluation is held to:
    hard/stock (compiled hard-label step against the stock eager ConvNet-3) and soft/hard (the
    median of the rounds' paired ratios where the file has them, else the ratio of the
    medians). Empty (with these columns) without files."""
    rows, nan = [], float("nan")
    for path in sorted(Path(folder).glob("train_speed_*.json")):
        rep = json.loads(path.read_text())
        malloc = "run kernels'" if "GLIBC_TUNABLES" in str(rep.get("environment")) else "glibc defaults"
        rows += [[path.stem, _machine_label(rep), rep.get("threads"), malloc, r["ipc"],
                  len(r.get("rounds", [r])), r["hard_compiled_ms"], r["soft_compiled_ms"],
                  r.get("teacher_forward_ms", nan), r.get("convs_forward_ms", nan),
                  r.get("stock_eager_ms", nan), r["convs_ms"], r.get("soft_over_hard", nan)]
                 for r in rep["rows"]]
    t = pd.DataFrame(rows, columns=["file", "machine", "threads", "malloc", "ipc", "rounds",
                                    "hard ms", "soft ms", "teacher forward ms",
                                    "convs forward ms", "stock eager ms", "convs ms", "paired"])
    return t.assign(**{"hard/stock": t["hard ms"] / t["stock eager ms"],
                       "soft/hard": t.pop("paired").fillna(t["soft ms"] / t["hard ms"])})


def _machine_label(report: dict) -> str:
    """A report's CPU, with ``+AMX`` when it has amx_bf16 (bf16 speed and rounding depend on it)."""
    machine = report.get("machine") or {}
    return f"{machine.get('cpu', '?')}{'+AMX' if 'amx_bf16' in (machine.get('isa') or []) else ''}"
