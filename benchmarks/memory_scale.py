"""Peak memory of ``ddoq`` and ``wmdd`` distilling a lazy image folder, against its size.

    python benchmarks/memory_scale.py [--classes 10 100] [--per-class 200] [--data DIR]
        [--ipc 10] [--iterations 20] [--width 16] [--eager] [--repeat 3]
        [--out results/benchmarks/memory_scale.json]

Writes image folders of random-ish RGB 64×64 PNGs (per class a smooth random pattern plus
per-image noise, so classes differ) with a fixed number of images per class and a varying
number of classes (10 classes = 2,000 images, 100 classes = 20,000), under ``--data`` (default: a
temporary folder, removed afterwards). For each size and method, a fresh Python process
(a private, empty ``PQLIB_CACHE``) reads the folder with ``load(..., lazy=True)`` and runs

- ``distill("ddoq", folder, ipc, prior="pixel", progress=False)``;
- ``distill("wmdd", folder, ipc, teacher=T, iterations=..., progress=False)``, T a randomly
  initialised ConvNet-BN of ``--width`` channels (untrained: only memory is measured);

and reports its peak resident memory (``ru_maxrss``) and wall time. Each measurement is made
``--repeat`` times, in as many fresh processes: the peak of one process varies by tens of MiB
from run to run (a class's transient copies meet the allocator differently each time), so
the table gives the median and the range, and the acceptance compares medians. ``--eager`` adds ddoq on
the in-memory ``load(..., lazy=False)`` for comparison. The acceptance of the lazy source: the
largest folder's peak within 64 MiB of the smallest's. The record gives also the size of the
method's output (classes × ipc images as float32), which grows with the number of classes
whatever the source.

glibc's ``malloc`` raises its mmap threshold each time a large block is freed, so later
blocks of a class's size (a few MiB) come from the heap, which fragments and keeps growing
class after class. ``pqlib distill`` on an image folder fixes the threshold at 4 MiB
(:func:`pqlib.methods.common.steady_heap`); the lazy runs here do the same (``--glibc-default``
leaves glibc's rising threshold, for comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDE = 64


def make_folder(root: Path, classes: int, per_class: int, seed: int = 0) -> Path:
    """``root/<class>/<i>.png``: 64×64 RGB; per class a random 8×8 pattern upsampled, plus
    per-image noise. Skipped if ``root`` is complete (a ``.done`` marker)."""
    import numpy as np
    from PIL import Image

    if (root / ".done").exists():
        return root
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        pattern = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        base = np.asarray(pattern.resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.int16)
        for i in range(per_class):
            noise = rng.integers(-40, 41, (SIDE, SIDE, 3), dtype=np.int16)
            img = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i:05d}.png")
    (root / ".done").write_text(f"{classes} classes x {per_class}\n")
    return root


def child(method: str, folder: str, ipc: int, iterations: int, width: int, eager: bool,
          class_block: int | None = None, glibc_default: bool = False) -> dict:
    """One measurement, in this (fresh) process: the peak RSS in MiB and the seconds."""
    import torch

    from pqlib import distill
    from pqlib.data import load
    from pqlib.methods.common import steady_heap
    from pqlib.models import ConvNet
    from pqlib.train import Teacher

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    data = load(f"imagefolder:{folder}", "train", lazy=not eager)
    if not eager and not glibc_default:  # as `pqlib distill` does for an image folder
        steady_heap()
    if method == "ddoq":
        out = distill("ddoq", data, ipc, prior="pixel", progress=False)
    else:
        torch.manual_seed(0)
        k, shape = data.num_classes, data.image_shape
        model = ConvNet(shape[0], k, shape[1], width=width, norm="batch").eval()
        teacher = Teacher(model, 0.0, "convnet_bn", data.name,
                          {"init": "random", "width": width, "seed": 0}, 0.0, k, shape)
        out = distill("wmdd", data, ipc, teacher=teacher, iterations=iterations,
                      class_block=class_block, progress=False)
    return {"seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_after_imports_mib": round(base, 1), "images": len(data),
            "classes": data.num_classes, "distilled": len(out),
            "output_mib": round(out.images.numel() * 4 / 2**20, 1),
            "stage_seconds": out.report.stage_seconds, "threads": torch.get_num_threads(),
            "mmap_threshold": None if eager or glibc_default else "4 MiB (steady_heap)"}


def measure(method: str, folder: Path, args, cache: Path, eager: bool = False) -> dict:
    """:func:`child` in a fresh process with an empty private cache."""
    cache.mkdir(parents=True)
    env = dict(os.environ, PQLIB_CACHE=str(cache))
    cmd = [sys.executable, __file__, "--child", method, str(folder), "--ipc", str(args.ipc),
           "--iterations", str(args.iterations), "--width", str(args.width),
           *(["--class-block", str(args.class_block)] if args.class_block else []),
           *(["--glibc-default"] if args.glibc_default else [])]
    res = subprocess.run(cmd + (["--eager"] if eager else []), env=env, capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{method} on {folder} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    from pqlib.provenance import provenance

    rows = []
    with tempfile.TemporaryDirectory(prefix="pqlib-memory-") as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data"
        for classes in args.classes:
            folder = make_folder(data / f"c{classes}x{args.per_class}", classes, args.per_class)
            jobs = [(m, False) for m in args.methods] + [("ddoq", True)] * args.eager
            for method, eager in jobs:
                runs = []
                for r in range(args.repeat):
                    cache = Path(tmp) / f"cache-{method}-{classes}-{'eager' if eager else 'lazy'}-{r}"
                    runs.append(measure(method, folder, args, cache, eager))
                peaks = sorted(m["peak_rss_mib"] for m in runs)
                row = {"method": method, "source": "eager" if eager else "lazy", **runs[0],
                       "peak_rss_mib": peaks[len(peaks) // 2], "peak_rss_runs_mib": peaks}
                rows.append(row)
                print(json.dumps(row), flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("child", "out", "data")}
    settings["MALLOC_MMAP_THRESHOLD_"] = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    return {"rows": rows, "settings": settings,
            "command": "python benchmarks/memory_scale.py " + " ".join(sys.argv[1:]),
            "provenance": provenance()}


def table(doc: dict) -> str:
    """The Markdown record: one row per run, and the acceptance per method."""
    rows = doc["rows"]
    lines = ["| method | source | classes | images | peak RSS, median (MiB) | runs (MiB) | "
             "after imports (MiB) | output (MiB) | seconds |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['source']} | {r['classes']} | {r['images']:,} | "
              f"{r['peak_rss_mib']:.0f} | "
              f"{', '.join(f'{p:.0f}' for p in r.get('peak_rss_runs_mib', [r['peak_rss_mib']]))} | "
              f"{r['rss_after_imports_mib']:.0f} | "
              f"{r['output_mib']:.1f} | {r['seconds']:.0f} |" for r in rows]
    verdicts = []
    for method in dict.fromkeys(r["method"] for r in rows):
        lazy = sorted((r for r in rows if r["method"] == method and r["source"] == "lazy"),
                      key=lambda r: r["images"])
        if len(lazy) > 1:
            small, large = lazy[0], lazy[-1]
            delta = large["peak_rss_mib"] - small["peak_rss_mib"]
            grown = large["output_mib"] - small["output_mib"]
            spread = max(large.get("peak_rss_runs_mib", [0])) - min(small.get("peak_rss_runs_mib", [0]))
            verdicts.append(f"- {method}: {large['images']:,} images peak − {small['images']:,} "
                            f"images peak (medians) = {delta:+.0f} MiB "
                            f"({'within' if delta <= 64 else 'NOT within'} 64 MiB); the "
                            f"output alone grew by {grown:.0f} MiB; largest run − smallest "
                            f"run: {spread:+.0f} MiB")
    prov, s = doc["provenance"], doc["settings"]
    return ("## Peak memory of distilling a lazy image folder\n\n"
            f"Made by `{doc['command']}`. {s['per_class']} RGB {SIDE}×{SIDE} PNGs per class, "
            f"ipc {s['ipc']}; wmdd: {s['iterations']} iterations, untrained ConvNet-BN of width "
            f"{s['width']}, class_block {s.get('class_block')}. Each run in a fresh process with an empty cache; peak RSS = "
            "`ru_maxrss` of that process (the imports alone: *after imports*). "
            + ("glibc's default mmap threshold (it rises with freed blocks)" if s.get("glibc_default")
               else "mmap threshold fixed at 4 MiB for the lazy runs, as `pqlib distill` does")
            + f"; MALLOC_MMAP_THRESHOLD_={s.get('MALLOC_MMAP_THRESHOLD_')}.\n\n"
            + "\n".join(lines) + "\n\nAcceptance (lazy source, largest vs smallest folder):\n\n"
            + "\n".join(verdicts) + "\n\n"
            f"Provenance: commit {prov.get('commit')}, CPU {prov.get('machine', {}).get('cpu')}, "
            f"{prov.get('machine', {}).get('cores')} cores, torch "
            f"{prov.get('versions', {}).get('torch')}.\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--methods", nargs="+", default=["ddoq", "wmdd"], choices=["ddoq", "wmdd"])
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--width", type=int, default=16, help="channels of the wmdd teacher")
    ap.add_argument("--class-block", type=int, help="wmdd's class_block (default: one block)")
    ap.add_argument("--eager", action="store_true", help="also ddoq on the in-memory load")
    ap.add_argument("--glibc-default", action="store_true",
                    help="leave glibc's rising mmap threshold (no steady_heap)")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per measurement")
    ap.add_argument("--data", help="folder for the generated image folders (kept)")
    ap.add_argument("--out", default="results/benchmarks/memory_scale.json")
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.ipc, args.iterations, args.width, args.eager,
                               args.class_block, args.glibc_default)))
        return
    from pqlib.cache import atomic_write

    doc = run(args)
    out = Path(args.out)
    with atomic_write(out, "w") as f:
        json.dump(doc, f, indent=1)
    text = table(doc)
    with atomic_write(out.with_suffix(".md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
