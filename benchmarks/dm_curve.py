"""DM accuracy against distillation iterations, from one run per setting (snapshots).

    python benchmarks/dm_curve.py [--ipc 1 10] [--budgets 0 50 100 200 400] [--seeds 0]
        [--variants dsa dsa-noclamp independent] [--protocol dc300] [--soft]
        [--out results/benchmarks/dm_curve.json]

Each (IPC, variant, seed) runs ``pqlib.methods.dm.distill`` once for the largest budget and
evaluates the synthetic set after every budget in ``--budgets`` (0 = the random real images DM
starts from) with a fresh hard-label student under ``--protocol`` on the 10,000 MNIST test
images; ``--soft`` also trains ``fkd`` soft-label students at budget 0 and at the largest.
Rows are appended to ``--out`` as they finish (re-running skips finished rows).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {"dsa": {"augment": "dsa", "clamp": True},
            "dsa-noclamp": {"augment": "dsa", "clamp": False},
            "independent": {"augment": "independent", "clamp": True}}


def main(argv=None) -> None:
    import torch

    import pqlib
    from pqlib.cache import atomic_write
    from pqlib.distilled import DistilledSet
    from pqlib.methods import dm
    from pqlib.provenance import provenance
    from pqlib.train import evaluate, train_student, train_teacher

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--budgets", type=int, nargs="+", default=[0, 50, 100, 200, 400])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=["dsa-noclamp"], choices=sorted(VARIANTS))
    ap.add_argument("--real-batch", type=int, default=64)
    ap.add_argument("--protocol", default="dc300")
    ap.add_argument("--soft", action="store_true")
    ap.add_argument("--out", default="results/benchmarks/dm_curve.json")
    args = ap.parse_args(argv)

    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {"rows": []}
    done = {(r["ipc"], r["variant"], r["seed"], r["iterations"], r["labels"], r["protocol"])
            for r in doc["rows"]}
    train, test = pqlib.load("mnist", "train"), pqlib.load("mnist", "test")
    teacher = train_teacher("mnist", progress=False) if args.soft else None

    def save(row):
        doc["rows"].append(row)
        doc.update(provenance=provenance(), command="python benchmarks/dm_curve.py " +
                   " ".join(argv if argv is not None else __import__("sys").argv[1:]))
        with atomic_write(out, "w") as f:
            json.dump(doc, f, indent=1)
        print(json.dumps(row), flush=True)

    def score(images, labels, ipc, variant, seed, it, kind, protocol, seconds):
        key = (ipc, variant, seed, it, kind, protocol)
        if key in done:
            return
        d = DistilledSet(images, labels, torch.ones(len(labels)), train.classes, {"dataset": "mnist"})
        t0 = time.perf_counter()
        model = train_student(d, protocol, teacher=teacher if kind == "soft" else None, seed=seed,
                              progress=False)
        acc = evaluate(model, test)
        save({"ipc": ipc, "variant": variant, "seed": seed, "iterations": it, "labels": kind,
              "protocol": protocol, "accuracy": acc, "distill_seconds": round(seconds, 1),
              "eval_seconds": round(time.perf_counter() - t0, 1),
              "real_batch": args.real_batch, "compiled": model.compiled})

    top = max(args.budgets)
    for seed in args.seeds:  # seed-major: a first curve for every IPC comes early
        for ipc in args.ipc:
            for variant in args.variants:
                keys = [(ipc, variant, seed, b, "hard", args.protocol) for b in args.budgets]
                if args.soft:
                    keys += [(ipc, variant, seed, b, "soft", "fkd") for b in (0, top)]
                if all(k in done for k in keys):
                    continue
                snaps, t0 = {}, time.perf_counter()

                def keep(it, images, snaps=snaps, t0=t0):
                    if it in args.budgets:
                        snaps[it] = (images.clone(), time.perf_counter() - t0)

                result = dm.distill(train, ipc, seed=seed, iterations=top, real_batch=args.real_batch,
                                    callback=keep, progress=True, **VARIANTS[variant])
                init = train.images[torch.tensor(result.report.init_indices)]
                snaps[0] = (init, 0.0)
                for it in sorted(args.budgets):
                    images, seconds = snaps[it]
                    score(images, result.labels, ipc, variant, seed, it, "hard", args.protocol, seconds)
                    if args.soft and it in (0, top):
                        score(images, result.labels, ipc, variant, seed, it, "soft", "fkd", seconds)


if __name__ == "__main__":
    main()
