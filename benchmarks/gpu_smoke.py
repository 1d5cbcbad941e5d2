"""End to end on a GPU: DDOQ with Stable Diffusion and WMDD with a ResNet-18 on an image folder.

    python benchmarks/gpu_smoke.py --data /data/imagenette2 --sd /models/stable-diffusion-v1-5 \\
        --teacher resnet18:/models/resnet18-imagenette.safetensors [--device cuda] [--ipc 10] \\
        [--resize 256] [--workers N] [--epochs 50] [--out results/benchmarks/gpu_smoke.json]
    python benchmarks/gpu_smoke.py --tiny --device cpu      # tiny random components, on the CPU
    python benchmarks/gpu_smoke.py --data mnist --prior mnist --teacher convnet_bn \\
        --student convnet --device cpu                      # MNIST with its tiny latent prior

Not run in CI (no GPU is lent to this project): a person with a GPU runs it and commits the
output. It distills with ``ddoq`` (the Stable Diffusion prior) and ``wmdd`` (the given teacher),
trains one soft-label ResNet-18 student on each set, and prints the throughput of every stage:
images/s of encoding, BatchNorm statistics and decoding, steps/s of WMDD's synthesis, and the
student's training time (``--tiny``: tiny random Stable Diffusion components, a random
ResNet-18 and a generated folder of 10 classes x 200 RGB 16x16 PNGs, in a temporary folder:
the pipeline's overheads, not a GPU's speed). ``--workers N`` runs the per-class stages on a local Dask cluster of
N processes (one per GPU: set ``CUDA_VISIBLE_DEVICES`` per worker, or start the workers
yourself and pass ``--scheduler``). The same script runs on the CPU with tiny components, e.g.
those of ``tests/test_cli.py::test_gpu_recipe_runs_on_the_cpu_with_tiny_components``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="image folder with train/ and val/ (or test/), or a pqlib "
                    "dataset (mnist, imagefolder:PATH, ...)")
    ap.add_argument("--sd", help="local diffusers Stable Diffusion folder (= --prior sd:DIR)")
    ap.add_argument("--prior", help="any prior spec of `pqlib distill --prior` (e.g. mnist)")
    ap.add_argument("--teacher", help="ARCH:WEIGHTS.safetensors, PATH.safetensors or ARCH")
    ap.add_argument("--student", default="resnet18", help="student architecture")
    ap.add_argument("--tiny", action="store_true", help="tiny random components (CPU check)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--resize", type=int, default=None, help="image side (default: as stored)")
    ap.add_argument("--steps", type=int, default=50, help="Stable Diffusion scheduler steps")
    ap.add_argument("--iterations", type=int, default=1000, help="WMDD synthesis steps")
    ap.add_argument("--epochs", type=int, default=50, help="student epochs (fkd protocol)")
    ap.add_argument("--workers", type=int, default=0, help="Dask workers (0: no cluster)")
    ap.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    ap.add_argument("--out", default="results/benchmarks/gpu_smoke.json")
    args = ap.parse_args(argv)

    import pqlib
    from pqlib.cache import atomic_write
    from pqlib.executor import executor
    from pqlib.methods.common import resolve_prior, resolve_teacher
    from pqlib.provenance import provenance
    from pqlib.train import evaluate, train_student

    if args.tiny:
        args.data, args.sd, args.teacher = _tiny_components(Path(tempfile.mkdtemp()))
    if not args.data or not (args.sd or args.prior) or not args.teacher:
        ap.error("pass --data, --sd (or --prior) and --teacher, or --tiny")
    source = args.data if ":" in args.data or not Path(args.data).is_dir() else f"imagefolder:{args.data}"
    data = pqlib.load(source, "train", resize=args.resize)
    test = pqlib.load(source, "test", resize=args.resize)
    prior = resolve_prior(args.prior or f"sd:{args.sd}", data, device=args.device)
    teacher = resolve_teacher(args.teacher, data, device=args.device)
    n, points = len(data), args.ipc * data.num_classes
    print(f"{source}: {n} training images, {data.num_classes} classes, {data.image_shape}; "
          f"prior {prior.id}, teacher {teacher.id}")
    cluster = (executor("dask", workers=args.workers or 1, scheduler=args.scheduler)
               if args.workers or args.scheduler else nullcontext())
    rows = []
    with cluster as pool:
        for method, options in (("ddoq", {"prior": prior, "steps": args.steps}),
                                ("wmdd", {"teacher": teacher, "iterations": args.iterations})):
            start = time.perf_counter()
            distilled = pqlib.distill(method, data, args.ipc, seed=0, pool=pool, **options)
            seconds = time.perf_counter() - start
            s = distilled.report.stage_seconds
            per_second = {"encode": n, "bn_statistics": n, "decode": points,
                          "synthesize": args.iterations}
            rate = {k: round(per_second[k] / v, 2) for k, v in s.items() if k in per_second and v}
            t0 = time.perf_counter()
            student = train_student(distilled, "fkd", arch=args.student, teacher=teacher,
                                    epochs=args.epochs, device=args.device, progress=False)
            row = {"method": method, "distill_seconds": round(seconds, 1), "stage_seconds": s,
                   "per_second": rate, "student_seconds": round(time.perf_counter() - t0, 1),
                   "accuracy": evaluate(student, test)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    doc = {"data": "tiny" if args.tiny else source, "prior": prior.id, "teacher": teacher.id,
           "student": args.student, "n_train": n, "ipc": args.ipc, "workers": args.workers,
           "device": str(args.device), "rows": rows, **provenance()}
    with atomic_write(Path(args.out), "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {args.out}")


def _tiny_components(root: Path) -> tuple[str, str, str]:
    """Tiny random SD components (the tests' recipe), a random ResNet-18 state dict and a
    folder of 10 classes x 200 RGB 16x16 PNGs under ``root``: (folder, SD folder, teacher)."""
    import sys

    from safetensors.torch import save_file

    from pqlib.models import build

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_cli import _folder
    from test_priors import _tiny_sd_pipeline

    (root / "tok").mkdir()
    _tiny_sd_pipeline(root / "tok").save_pretrained(root / "sd")
    save_file(build("resnet18", 3, 10, 16).state_dict(), root / "resnet18.safetensors")
    folder = _folder(root / "images", [f"class{c}" for c in range(10)], 200, 16)
    return str(folder), str(root / "sd"), f"resnet18:{root / 'resnet18.safetensors'}"


if __name__ == "__main__":
    main()
