"""Student-training throughput on this machine: seconds per optimiser step.

    python benchmarks/train_speed.py [--batch 10 100 256] [--steps 20]

For the ConvNet-3 student on 28×28 MNIST-shaped batches, with hard labels and with a
ConvNet-BN teacher's soft labels, in float32 and in bfloat16 autocast, with 1 and 2 torch
threads. These numbers set the budgets of the sweep profiles (profiles/*.yaml).
"""

from __future__ import annotations

import argparse
import time

import torch


def step_time(batch: int, steps: int, precision: str, soft: bool, threads: int) -> float:
    from pqlib.augment import default_augmentation
    from pqlib.distilled import DistilledSet
    from pqlib.models import build
    from pqlib.train import Teacher, train_student

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    d = DistilledSet(torch.rand(batch, 1, 28, 28, generator=g), torch.arange(batch) % 10,
                     torch.ones(batch), tuple("0123456789"))
    teacher = None
    if soft:
        model = build("convnet_bn", 1, 10, 28).eval()
        teacher = Teacher(model, 0.0, "convnet_bn", "bench", {}, 0.0, 10, (1, 28, 28))
    default_augmentation((1, 28, 28))
    train_student(d, teacher=teacher, epochs=2, precision=precision, progress=False)  # warm-up
    start = time.perf_counter()
    train_student(d, teacher=teacher, epochs=steps, precision=precision, progress=False)
    return (time.perf_counter() - start) / steps


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[10, 100, 256])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    args = ap.parse_args(argv)
    print(f"{'batch':>5} {'labels':>6} {'precision':>9} {'threads':>7} {'s/step':>8}")
    for batch in args.batch:
        for soft in (False, True):
            for precision in ("fp32", "bf16"):
                for threads in args.threads:
                    t = step_time(batch, args.steps, precision, soft, threads)
                    print(f"{batch:5d} {'soft' if soft else 'hard':>6} {precision:>9} {threads:7d} {t:8.3f}",
                          flush=True)


if __name__ == "__main__":
    main()
