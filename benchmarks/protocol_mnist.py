"""Calibration of the evaluation protocols on MNIST: random, herding and k-center selections
at IPC 1 / 10 / 50, hard labels, under ``dc`` (the published protocol) and a cheaper candidate,
beside the published numbers; plus the random-real control with soft labels (``fkd``).

    python benchmarks/protocol_mnist.py [--protocols dc dc300 dc-iclr21] [--ipc 1 10 50]
        [--seeds 0 1 2 3 4]
        [--methods random herding kcenter herding-pixel kcenter-pixel kcenter-mean]
        [--no-soft]
        [--out results/benchmarks/protocol_mnist.json]
    python benchmarks/protocol_mnist.py --table      # only print/write the tables

Every (method, IPC, seed) selection is made once and trained under each protocol with that
seed; each student is tested once on the 10,000 test images. Rows are appended to ``--out`` as
they finish (a re-run skips finished rows: the benchmark resumes), cheapest IPC first, then
seed by seed so that an interrupted run has every method at its first seeds. The
tables (mean ± std over seeds, runs, published, the protocols' cost) go to the ``.md`` beside
``--out``, with provenance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

PUBLISHED = {  # ConvNet-3, hard labels, MNIST test accuracy (%), REFERENCE.md (DC paper)
    "random": {1: (64.9, 3.5), 10: (95.1, 0.9), 50: (97.9, 0.2)},
    "herding": {1: (89.2, 1.6), 10: (93.7, 0.3), 50: (94.8, 0.2)},
    "kcenter": {1: (89.3, 1.5), 10: (84.4, 1.7), 50: (97.4, 0.3)},
}
# the same selections on raw pixels instead of the teacher's features: how far the coreset
# baselines' accuracy depends on the embedding they select in (published column: the method's)
PIXEL = {"herding-pixel": "herding", "kcenter-pixel": "kcenter"}
# k-center started from the image nearest the class mean in the teacher's features (herding's
# first pick) instead of a random one: whether the published k-center used that first pick
VARIANTS = {**PIXEL, "kcenter-mean": "kcenter"}


def select(method: str, train, ipc: int, seed: int, teacher):
    """The distilled set of a selection ``method`` (random, herding, kcenter or a VARIANTS one)."""
    import torch

    from pqlib import distill
    from pqlib.methods.common import class_indices, select_per_class, selection
    from pqlib.methods.herding import herd
    from pqlib.methods.kcenter import greedy_kcenter

    if method == "random":
        return distill(method, train, ipc, seed=seed)
    if method == "kcenter-mean":  # in the teacher's features, as kcenter
        return select_per_class(train, teacher, progress=False, pick=lambda f: greedy_kcenter(
            f, ipc, first=int(herd(f, 1)[0])))
    if method not in PIXEL:
        return distill(method, train, ipc, seed=seed, teacher=teacher, progress=False)
    g = torch.Generator().manual_seed(seed)  # as kcenter: one generator, class after class
    pick = (lambda x: herd(x, ipc)) if method == "herding-pixel" else (
        lambda x: greedy_kcenter(x, ipc, generator=g))
    return selection(train, torch.cat([idx[pick(train.images[idx].flatten(1))]
                                       for idx in class_indices(train)]))


def run(args, doc: dict, out: Path) -> None:
    import torch

    from pqlib import load
    from pqlib.cache import atomic_write
    from pqlib.provenance import provenance
    from pqlib.train import evaluate, train_student, train_teacher

    done = {(r["method"], r["ipc"], r["seed"], r["protocol"]) for r in doc["rows"]}
    train, test = load("mnist", "train"), load("mnist", "test")
    teacher = train_teacher("mnist", progress=False)
    jobs = [(m, ipc, s) for ipc in sorted(args.ipc) for s in args.seeds for m in args.methods]
    for method, ipc, seed in jobs:
        protocols = list(args.protocols) + (["fkd"] if method == "random" and args.soft else [])
        todo = [p for p in protocols if (method, ipc, seed, p) not in done]
        if not todo:
            continue
        d = select(method, train, ipc, seed, teacher)
        for protocol in todo:
            t0 = time.perf_counter()
            soft = protocol == "fkd"
            model = train_student(d, protocol, teacher=teacher if soft else None, seed=seed,
                                  progress=False)
            acc = evaluate(model, test)
            row = {"method": method, "ipc": ipc, "seed": seed, "protocol": protocol,
                   "labels": "soft" if soft else "hard", "accuracy": acc,
                   "seconds": round(time.perf_counter() - t0, 1), "compiled": model.compiled,
                   "threads": torch.get_num_threads()}
            doc["rows"].append(row)
            doc["provenance"] = provenance()
            doc["command"] = "python benchmarks/protocol_mnist.py " + " ".join(_relative(sys.argv[1:]))
            with atomic_write(out, "w") as f:
                json.dump(doc, f, indent=1)
            print(json.dumps(row), flush=True)


def tables(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accuracy table with published numbers, cost per protocol and IPC)."""
    df = pd.DataFrame(rows)
    acc = (df.groupby(["method", "ipc", "protocol"]).accuracy
           .agg(lambda a: f"{a.mean():.1f} ± {a.std(ddof=1):.1f}" if len(a) > 1 else f"{a.iloc[0]:.1f}")
           .unstack("protocol"))
    runs = df.groupby(["method", "ipc", "protocol"]).size().unstack("protocol")
    acc = acc.astype(object).where(acc.notna(), "–")
    for p in runs.columns:
        acc[p] = [f"{a} ({int(n)})" if n == n else a for a, n in zip(acc[p], runs[p])]
    acc["published (hard)"] = [
        "{:.1f} ± {:.1f}".format(*PUBLISHED[p][i]) if (p := VARIANTS.get(m, m)) in PUBLISHED
        and i in PUBLISHED[p] else "–" for m, i in acc.index]
    cost = df.groupby(["protocol", "ipc"]).seconds.median().unstack("ipc").round(1)
    return acc, cost


def write_tables(doc: dict, path: Path) -> str:
    from pqlib.cache import atomic_write

    acc, cost = tables(doc["rows"])
    prov = doc.get("provenance", {})
    text = (
        "## Protocol calibration on MNIST (ConvNet-3 students, 10,000 test images)\n\n"
        "Made by `" + doc.get("command", "python benchmarks/protocol_mnist.py") + "` "
        f"(rows: `{path.with_suffix('.json').name}`). Accuracy in %, mean ± std over seeds "
        "(runs in brackets); `fkd` = the random subset with the teacher's soft labels. "
        "*published* = paper-reported (DC, Zhao et al. 2021), hard labels; `-pixel` rows: "
        "the same selection on raw pixels instead of the teacher's features, beside the "
        "method's published numbers; `kcenter-mean`: k-center started from the image nearest "
        "the class mean (herding's first pick) instead of a random one; `dc-iclr21`: `dc` with "
        "the DC paper's own per-image crop / scale / rotate instead of DSA.\n\n"
        + acc.to_markdown() + "\n\nMedian seconds per student (train + test):\n\n"
        + cost.to_markdown() + "\n\n"
        f"Provenance: commit {prov.get('commit')}, CPU {prov.get('machine', {}).get('cpu')}, "
        f"{prov.get('machine', {}).get('cores')} cores, torch {prov.get('versions', {}).get('torch')}.\n")
    with atomic_write(path.with_suffix(".md"), "w") as f:
        f.write(text)
    return text


def _relative(args: list[str]) -> list[str]:
    """Paths inside the project root as relative ones: the record shows no machine path."""
    from pqlib.cache import project_root

    root = project_root()
    return [str(Path(a).relative_to(root)) if Path(a).is_absolute() and Path(a).is_relative_to(root)
            else a for a in args]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocols", nargs="+", default=["dc", "dc300"])
    ap.add_argument("--methods", nargs="+", default=list(PUBLISHED),
                    choices=[*PUBLISHED, *VARIANTS], help="herding-pixel, kcenter-pixel: on raw "
                    "pixels; kcenter-mean: k-center from the image nearest the class mean")
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--no-soft", dest="soft", action="store_false",
                    help="skip the random-real control with fkd soft labels")
    ap.add_argument("--out", default="results/benchmarks/protocol_mnist.json")
    ap.add_argument("--table", action="store_true", help="only write the tables from --out")
    args = ap.parse_args(argv)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {"rows": []}
    if not args.table:
        run(args, doc, out)
    print(write_tables(doc, out))


if __name__ == "__main__":
    main()
