"""The hard-label ConvNet-3 protocol on MNIST: random, herding and k-center at IPC 1 / 10 / 50.

    python benchmarks/protocol_mnist.py [--seeds 0 1 2] [--ipc 1 10 50] [--epochs 300]
    python benchmarks/protocol_mnist.py --from-records results/paper

Trains a fresh ConvNet-3 (instance norm) with hard labels on each selection, tests it on the
10,000 MNIST test images, and prints mean ± std over seeds beside the published numbers
(REFERENCE.md: ConvNet-3, hard labels). Also prints the teacher's test accuracy and training
time (the teacher supplies the feature space of herding and k-center). ``--from-records``
summarises the hard-label accuracies of existing result records (e.g. the paper profile)
instead of training.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

PUBLISHED = {  # ConvNet-3, hard labels, MNIST test accuracy (%), REFERENCE.md
    "random": {1: "64.9 ± 3.5", 10: "95.1 ± 0.9", 50: "97.9 ± 0.2"},
    "herding": {1: "89.2 ± 1.6", 10: "93.7 ± 0.3", 50: "94.8 ± 0.2"},
    "kcenter": {1: "89.3 ± 1.5", 10: "84.4 ± 1.7", 50: "97.4 ± 0.3"},
}


def run(seeds, ipcs, epochs, epochs_50) -> pd.DataFrame:
    from pqlib import distill, load
    from pqlib.train import evaluate, train_student, train_teacher

    train, test = load("mnist", "train"), load("mnist", "test")
    teacher = train_teacher("mnist")
    print(f"teacher {teacher.id}: {teacher.accuracy:.2f} % test accuracy, trained in "
          f"{teacher.seconds:.0f} s ({teacher.seconds / 60:.1f} min)")
    rows = []
    for method in PUBLISHED:
        for ipc in ipcs:
            for seed in seeds:
                t0 = time.perf_counter()
                d = distill(method, train, ipc, seed=seed, teacher=teacher, progress=False) \
                    if method != "random" else distill(method, train, ipc, seed=seed)
                ep = epochs_50 if ipc >= 50 else epochs
                model = train_student(d, epochs=ep, seed=seed, progress=False)
                acc = evaluate(model, test)
                rows.append({"method": method, "ipc": ipc, "seed": seed, "acc": acc,
                             "seconds": time.perf_counter() - t0})
                print(f"{method:8s} IPC {ipc:2d} seed {seed}: {acc:.2f} %  ({rows[-1]['seconds']:.0f} s)",
                      flush=True)
    return pd.DataFrame(rows)


def from_records(path) -> pd.DataFrame:
    from pqlib.results import load_records

    df = load_records(path)
    df = df[df.variant.isin(PUBLISHED)]
    print(f"{len(df)} records from {path}; student epochs: {sorted(df.epochs.dropna().unique().tolist())}")
    return (df.drop(columns=["method"]).rename(columns={"variant": "method", "acc_hard": "acc"})
            [["method", "ipc", "seed", "acc"]])


def table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (method, ipc), g in df.groupby(["method", "ipc"]):
        rows.append({"method": method, "IPC": int(ipc),
                     "ours (%)": f"{g.acc.mean():.1f} ± {g.acc.std(ddof=1):.1f}" if len(g) > 1 else f"{g.acc.iloc[0]:.1f}",
                     "runs": len(g), "published (%)": PUBLISHED[method].get(int(ipc), "–")})
    return pd.DataFrame(rows).set_index(["method", "IPC"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--epochs-50", type=int, default=150, help="epochs at IPC >= 50")
    ap.add_argument("--from-records", help="summarise result records instead of training")
    args = ap.parse_args(argv)
    df = from_records(args.from_records) if args.from_records else run(args.seeds, args.ipc, args.epochs, args.epochs_50)
    print()
    print(table(df).to_string())


if __name__ == "__main__":
    main()
