"""Choose method hyper-parameters on a validation split carved from the MNIST training set.

    python benchmarks/tune_validation.py [--ipc 10] [--epochs 100] [--out results/tuning.json]

The test split is never touched. 5,000 training images (stratified, seed 0) are held out as
the validation set; every candidate distills from the other 55,000, trains a ConvNet-3 student
with the teacher's soft labels, and is scored on the validation images. Candidates:

* WMDD: BatchNorm weight λ ∈ {0.1, 1, 10} × pixel learning rate ∈ {0.05, 0.1}
* DDOQ: img2img strength ∈ {0.5, 0.7, 0.9}
* DM: image learning rate ∈ {0.1, 1}

The winners are the defaults of the profiles (and of the methods where they differ from the
papers' values, the book says so). Results are written as JSON for the book.
"""

from __future__ import annotations

import argparse
import json
import time

GRID = {
    "wmdd": [{"bn_weight": b, "lr": lr, "iterations": 300} for b in (0.1, 1.0, 10.0) for lr in (0.05, 0.1)],
    "ddoq": [{"strength": s} for s in (0.5, 0.7, 0.9)],
    "dm": [{"lr": lr, "iterations": 200, "real_batch": 64} for lr in (0.1, 1.0)],
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=list(GRID))
    ap.add_argument("--out", default="results/tuning.json")
    args = ap.parse_args(argv)

    from pqlib import distill, load
    from pqlib.cache import atomic_write
    from pqlib.data import train_val_split
    from pqlib.provenance import provenance
    from pqlib.train import evaluate, train_student, train_teacher

    train, val = train_val_split(load("mnist", "train"), 5000, seed=0)
    teacher = train_teacher("mnist")
    rows = []
    for method in args.methods:
        for options in GRID[method]:
            t0 = time.perf_counter()
            d = distill(method, train, args.ipc, seed=args.seed, progress=False, **options)
            model = train_student(d, teacher=teacher, epochs=args.epochs, seed=args.seed, progress=False)
            acc = evaluate(model, val)
            rows.append({"method": method, "options": options, "val_accuracy": acc,
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{method:5s} {json.dumps(options):60s} validation {acc:.2f} %  ({rows[-1]['seconds']:.0f} s)",
                  flush=True)
    best = {}
    for row in rows:
        if row["method"] not in best or row["val_accuracy"] > best[row["method"]]["val_accuracy"]:
            best[row["method"]] = row
    print("\nchosen on validation:")
    for method, row in best.items():
        print(f"  {method}: {row['options']} ({row['val_accuracy']:.2f} %)")
    record = {"ipc": args.ipc, "epochs": args.epochs, "seed": args.seed, "validation_images": len(val),
              "train_images": len(train), "rows": rows,
              "chosen": {m: r["options"] for m, r in best.items()}, **provenance()}
    with atomic_write(args.out, "w") as f:
        json.dump(record, f, indent=2, default=str)


if __name__ == "__main__":
    main()
