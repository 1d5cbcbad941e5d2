"""Choose method hyper-parameters on a validation split carved from the MNIST training set.

    python benchmarks/tune_validation.py [--ipc 10] [--epochs 100] [--out results/tuning.json]

The test split is never touched. 5,000 training images (stratified, seed 0) are held out as
the validation set; every candidate distills from the other 55,000, trains a ConvNet-3 student
with the teacher's soft labels, and is scored on the validation images. Candidates:

* WMDD: BatchNorm weight λ ∈ {0.1, 1, 10} at pixel learning rate 0.05, and λ ∈ {1, 10} at 0.1
* DDOQ: img2img strength ∈ {0.5, 0.7, 0.9}
* DM: image learning rate ∈ {0.1, 1}

The winners are the defaults of the profiles (and of the methods where they differ from the
papers' values, the book says so). Results are written as JSON for the book.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

GRID = {
    "wmdd": [{"bn_weight": b, "lr": lr, "iterations": 300}
             for b, lr in ((0.1, 0.05), (1.0, 0.05), (10.0, 0.05), (1.0, 0.1), (10.0, 0.1))],
    "ddoq": [{"strength": s} for s in (0.5, 0.7, 0.9)],
    "dm": [{"lr": lr, "iterations": 200, "real_batch": 64} for lr in (0.1, 1.0)],
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=list(GRID))
    ap.add_argument("--out", default="results/tuning/validation.json",
                    help="JSON record, rewritten after every candidate; candidates already in it are skipped")
    args = ap.parse_args(argv)

    from pqlib import distill, load
    from pqlib.data import train_val_split
    from pqlib.provenance import provenance
    from pqlib.train import evaluate, train_student, train_teacher

    train, val = train_val_split(load("mnist", "train"), 5000, seed=0)
    teacher = train_teacher("mnist")
    out = Path(args.out)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    for method in args.methods:
        for options in GRID[method]:
            if any(r["method"] == method and r["options"] == options for r in rows):
                continue
            t0 = time.perf_counter()
            d = distill(method, train, args.ipc, seed=args.seed, progress=False, **options)
            model = train_student(d, teacher=teacher, epochs=args.epochs, seed=args.seed, progress=False)
            acc = evaluate(model, val)
            rows.append({"method": method, "options": options, "val_accuracy": acc,
                         "seconds": round(time.perf_counter() - t0, 1)})
            rows[-1].update(commit=provenance()["commit"])
            print(f"{method:5s} {json.dumps(options):60s} validation {acc:.2f} %  ({rows[-1]['seconds']:.0f} s)",
                  flush=True)
            _write(out, args, rows, len(val), len(train))
    print("\nchosen on validation:")
    for method, options in _write(out, args, rows, len(val), len(train)).items():
        print(f"  {method}: {options}")


def _write(out: Path, args, rows: list[dict], n_val: int, n_train: int) -> dict:
    """Write the record atomically; return the best options per method."""
    from pqlib.cache import atomic_write
    from pqlib.provenance import provenance

    best = {}
    for row in rows:
        if row["method"] not in best or row["val_accuracy"] > best[row["method"]]["val_accuracy"]:
            best[row["method"]] = row
    chosen = {m: r["options"] for m, r in best.items()}
    record = {"ipc": args.ipc, "epochs": args.epochs, "seed": args.seed, "validation_images": n_val,
              "train_images": n_train, "rows": rows, "chosen": chosen, **provenance()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as f:
        json.dump(record, f, indent=2, default=str)
    return chosen


if __name__ == "__main__":
    main()
