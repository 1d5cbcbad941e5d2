"""Student-training speed: ms per optimiser step of ``train_student`` against its floors.

    python benchmarks/train_speed.py [--ipc 1 10 50] [--steps 30] [--repeat 1] [--json OUT]
                                     [--note TEXT]

For MNIST-shaped sets of IPC × 10 images (batch = min(256, set size)), in one run:

* ``train_student``, hard labels (``dc`` protocol) and soft labels (``fkd``, teacher forward
  included), compiled as ``compile="auto"`` would (forced on here) and eager;
* a plain eager ConvNet-3 forward + backward + SGD step on the same batch, no augmentation:
  ``stock``, the network of stock ``torch.nn`` modules (``nn.AvgPool2d``: the textbook
  ConvNet-3, the yardstick of the speed target), and ``eager``, pqlib's own ConvNet-3 run
  eagerly (its pooling is already the faster matrix product of ``models.AvgPool2``);
* the three convolutions alone (forward + backward, eager oneDNN): the floor of the network;
* what a soft step adds to a hard one: the teacher's forward as ``train_student`` runs it
  (compiled, no grad), beside the three convolutions' forward alone (its floor).

Per-step time of ``train_student`` is the difference of two runs (``--steps`` more epochs),
so model construction and compilation are not counted; compilation time is printed apart.
All in the precision ``"auto"`` resolves to on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def _set(ipc: int):
    from pqlib.distilled import DistilledSet

    n = 10 * ipc
    g = torch.Generator().manual_seed(0)
    return DistilledSet(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10,
                        torch.full((n,), 1.0 / ipc), tuple("0123456789"), {"dataset": "mnist"})


def student_ms(d, teacher, compile: bool, steps: int) -> tuple[float, float]:
    """(ms per step, seconds of fixed cost incl. compilation) of train_student."""
    from pqlib.train import train_student

    per_epoch = -(-len(d) // min(256, len(d)))
    epochs = max(1, steps // per_epoch)
    kw = dict(teacher=teacher, compile=compile, progress=False)
    t0 = time.perf_counter()
    train_student(d, epochs=1, **kw)  # cold: compiles
    t1 = time.perf_counter()
    train_student(d, epochs=1, **kw)  # warm: what every later run pays
    t2 = time.perf_counter()
    train_student(d, epochs=1 + epochs, **kw)
    t3 = time.perf_counter()
    per_step = ((t3 - t2) - (t2 - t1)) / (epochs * per_epoch)
    return 1000 * per_step, t1 - t0


def eager_ms(batch: int, steps: int, precision: str, stock: bool = False) -> float:
    from pqlib.models import AvgPool2, build
    from pqlib.train import autocast

    torch.manual_seed(0)
    net = build("convnet", 1, 10, 28)
    if stock:  # torch.nn's own pooling (FirstConv is nn.Conv2d when eager)
        net.body = torch.nn.Sequential(*(torch.nn.AvgPool2d(2) if isinstance(m, AvgPool2) else m
                                         for m in net.body))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(10, (batch,))

    def step():
        with autocast(precision):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return 1000 * _timed(step, steps)


def convs_ms(batch: int, steps: int, precision: str, backward: bool = True) -> float:
    """The student's three convolutions (eager oneDNN): forward + backward, or forward only."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    layers = []
    for cin, side, pad in ((1, 28, 3), (128, 16, 1), (128, 8, 1)):
        x = torch.randn(batch, cin, side, side, dtype=dtype, requires_grad=backward and cin > 1)
        w = torch.randn(128, cin, 3, 3, dtype=dtype, requires_grad=backward)
        b = torch.zeros(128, dtype=dtype, requires_grad=backward)
        layers.append((x, w, b, pad))

    def step():
        with torch.set_grad_enabled(backward):
            for x, w, b, pad in layers:
                out = F.conv2d(x, w, b, padding=pad)
                if backward:
                    out.backward(torch.ones_like(out))

    return 1000 * _timed(step, steps)


def teacher_ms(teacher, batch: int, steps: int, precision: str) -> float:
    """The teacher's forward on one batch as ``train_student`` runs it (compiled, no grad)."""
    from pqlib.train import autocast

    label = torch.compile(teacher.model, dynamic=False)
    x = torch.rand(batch, 1, 28, 28)

    def forward():
        with torch.no_grad(), autocast(precision):
            label(x).float()

    return 1000 * _timed(forward, steps)


def _timed(fn, steps: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> None:
    from pqlib.models import build
    from pqlib.provenance import machine, provenance
    from pqlib.sweep import KERNEL_MALLOC
    from pqlib.train import Teacher, resolve_precision

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of every measurement; the medians are reported (default 1)")
    ap.add_argument("--json", help="also write the rows and provenance here")
    ap.add_argument("--note", default="", help="how it was measured (what else ran), for the JSON")
    args = ap.parse_args(argv)
    precision = resolve_precision()
    torch.manual_seed(0)
    teacher = Teacher(build("convnet_bn", 1, 10, 28).eval(), 0.0, "convnet_bn", "bench", {}, 0.0,
                      10, (1, 28, 28))
    rows = []
    here = machine()
    print(f"precision {precision}, {torch.get_num_threads()} threads, {here['cpu']} "
          f"({' '.join(here['isa']) or 'no AVX2'})")
    print(f"{'ipc':>4} {'batch':>5} {'hard c':>8} {'hard e':>8} {'soft c':>8} {'soft e':>8} "
          f"{'stock':>8} {'eager':>8} {'convs':>8} {'teacher':>8} {'conv fw':>8}  hard/stock "
          f"hard/eager soft/hard  compile s")
    for ipc in args.ipc:
        d = _set(ipc)
        batch = min(256, len(d))
        runs = []  # --repeat rounds of every measurement, interleaved: the machine drifts
        for _ in range(args.repeat):
            run = {}
            for comp in (True, False):  # hard then soft, back to back: their ratio is paired
                for kind, tch in (("hard", None), ("soft", teacher)):
                    ms, fixed = student_ms(d, tch, comp, args.steps)
                    run[f"{kind}_{'compiled' if comp else 'eager'}_ms"] = ms
                    if comp:
                        run[f"{kind}_compile_s"] = fixed
            run["soft_over_hard"] = run["soft_compiled_ms"] / run["hard_compiled_ms"]
            run["stock_eager_ms"] = eager_ms(batch, args.steps, precision, stock=True)
            run["plain_eager_ms"] = eager_ms(batch, args.steps, precision)
            run["convs_ms"] = convs_ms(batch, args.steps, precision)
            run["teacher_forward_ms"] = teacher_ms(teacher, batch, args.steps, precision)
            run["convs_forward_ms"] = convs_ms(batch, args.steps, precision, backward=False)
            runs.append(run)
        # each column: its median over the rounds (soft_over_hard: the median of the rounds'
        # ratios, robust to the machine's drift between rounds); the rounds kept beside it
        row = {"ipc": ipc, "batch": batch, **{k: round(statistics.median(r[k] for r in runs), 3)
                                               for k in runs[0]}}
        if args.repeat > 1:
            row["rounds"] = [{k: round(v, 2) for k, v in r.items()} for r in runs]
        rows.append(row)
        print(f"{ipc:>4} {batch:>5} {row['hard_compiled_ms']:>8.1f} {row['hard_eager_ms']:>8.1f} "
              f"{row['soft_compiled_ms']:>8.1f} {row['soft_eager_ms']:>8.1f} "
              f"{row['stock_eager_ms']:>8.1f} {row['plain_eager_ms']:>8.1f} {row['convs_ms']:>8.1f} "
              f"{row['teacher_forward_ms']:>8.1f} {row['convs_forward_ms']:>8.1f}  "
              f"{row['hard_compiled_ms'] / row['stock_eager_ms']:>10.2f} "
              f"{row['hard_compiled_ms'] / row['plain_eager_ms']:>10.2f} "
              f"{row['soft_over_hard']:>9.2f}  "
              f"{row['hard_compile_s']:.0f}/{row['soft_compile_s']:.0f}")
    if args.json:
        from pqlib.cache import write_json

        env = {k: os.environ[k] for k in (*KERNEL_MALLOC, "OMP_NUM_THREADS") if k in os.environ}
        write_json(args.json, {"precision": precision, "threads": torch.get_num_threads(),
                               "steps": args.steps, "repeat": args.repeat, "rows": rows,
                               "command": " ".join(["python", *sys.argv]), "environment": env,
                               "note": args.note, **provenance()})


if __name__ == "__main__":
    main()
