"""Command line: ``pqlib distill | evaluate | sweep | rerun | train-prior | bench``.

Every error a user can cause ends with ``pqlib: error: <what and how to fix it>`` and exit
status 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

__all__ = ["main"]


class UsageError(Exception):
    """A user-caused error: printed as one line, exit status 2."""


def _parse_options(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {pair!r} must look like key=value (e.g. --set weights=sqrt)")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_distill(args) -> int:
    from .data import load
    from .executor import executor
    from .methods import distill, list_methods
    from .methods.common import resolve_prior, resolve_teacher, steady_heap

    if args.method not in list_methods():
        raise UsageError(f"unknown method {args.method!r}; registered methods: {', '.join(list_methods())}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise UsageError(f"--out {str(out)!r} exists and is not empty; pass --force to replace it")
    # an image folder is read lazily (class by class), but by dm, which draws real batches of
    # every class at each iteration; its classes' blocks are then mmapped (steady_heap)
    lazy = args.dataset.startswith("imagefolder:") and args.method != "dm"
    options, data = _parse_options(args.set), load(args.dataset, "train", lazy=lazy)
    if lazy:
        steady_heap()
    if args.prior:
        options["prior"] = resolve_prior(args.prior, data, device=args.device)
    if args.teacher:
        options["teacher"] = resolve_teacher(args.teacher, data, device=args.device)
    with (executor("dask", workers=args.workers, scheduler=args.scheduler)
          if args.executor == "dask" else nullcontext()) as pool:  # class tasks on the cluster
        result = distill(args.method, data, args.ipc, seed=args.seed, pool=pool, **options)
    result.save(out, overwrite=args.force)
    print(f"wrote {len(result)} images ({args.ipc} per class) to {out} "
          f"in {result.report.wall_time_s:.1f} s")
    return 0


def cmd_evaluate(args) -> int:
    from .cache import write_json
    from .data import load
    from .distilled import DistilledSet
    from .methods.common import resolve_teacher
    from .protocols import get_protocol
    from .provenance import provenance
    from .train import evaluate, resolve_precision, train_student

    distilled = DistilledSet.load(args.dir)
    dataset = args.dataset or distilled.report.dataset
    if not dataset:
        raise UsageError("--dataset is required: the distilled set does not record its dataset")
    test = load(dataset, "test")
    shape, classes = tuple(distilled.images.shape[1:]), len(distilled.classes)
    if (test.image_shape, test.num_classes) != (shape, classes):
        raise UsageError(f"the distilled set has images {shape} with {classes} classes but "
                         f"{dataset!r} has {test.image_shape} with {test.num_classes}; pass the "
                         f"dataset it was distilled from")
    teacher = None if args.teacher == "none" else resolve_teacher(args.teacher, test,
                                                                    device=args.device)
    protocol = get_protocol(args.protocol or ("dc" if teacher is None else "fkd")).replace(
        epochs=args.epochs)
    start = time.perf_counter()
    model = train_student(distilled, protocol, arch=args.student, teacher=teacher,
                          seed=args.seed, use_weights=not args.no_weights, device=args.device)
    acc = evaluate(model, test)
    seconds = round(time.perf_counter() - start, 2)
    tag = (f"{args.student}-{teacher.arch if teacher else 'none'}-{protocol.name}-e{protocol.epochs}-s{args.seed}"
           + ("-noweights" if args.no_weights else ""))
    path = Path(args.dir) / f"eval-{tag}.json"
    write_json(path, {
        "accuracy": acc, "dataset": dataset, "student": args.student, "teacher": args.teacher,
        "teacher_id": teacher.id if teacher else None,
        "teacher_accuracy": teacher.accuracy if teacher else None,
        "protocol": protocol.as_dict(), "compiled": model.compiled,
        "seed": args.seed, "use_weights": not args.no_weights,
        "precision": resolve_precision(), "train_eval_seconds": seconds,
        "distilled": distilled.report.to_dict(), **provenance(),
    })
    print(f"test accuracy {acc:.2f} %  ({args.student} student, protocol {protocol.name} "
          f"E={protocol.epochs}, "
          f"{'hard labels' if teacher is None else 'soft labels from ' + teacher.id}; {path})")
    return 0


def cmd_train_prior(args) -> int:
    from .priors import train_prior

    options = _parse_options(args.set) | ({} if args.seed is None else {"seed": args.seed})
    start = time.perf_counter()
    result = train_prior(args.dataset, config=options or None, out=args.out,
                         resume=not args.restart, checkpoint_every=args.checkpoint_every)
    how = (f"trained in {result.seconds / 60:.1f} min" if result.seconds
           else "already trained (loaded from the cache)")
    print(f"prior {result.prior.id}: config hash {result.config_hash}, {how} "
          f"(this command: {(time.perf_counter() - start) / 60:.1f} min wall)")
    for path in result.files:
        print(f"  {path}")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import load_profile, plan, run_sweep

    if args.list:
        profile = load_profile(args.profile, root=args.root)
        runs = plan(profile, only=args.only)
        states = [run.state() for run in runs]
        for run, state in zip(runs, states):
            print(f"{state:<20}{run.name}")
        done = sum(s != "todo" for s in states)
        print(f"{len(runs)} runs: {done} done ({states.count('done (no notebook)')} without "
              f"their notebook), {len(runs) - done} todo; records in {profile.records}",
              file=sys.stderr)
        return 0
    report = run_sweep(args.profile, only=args.only, workers=args.workers, force=args.force,
                       notebooks=args.notebooks, root=args.root, executor=args.executor,
                       scheduler=args.scheduler)
    print(f"sweep {report.profile}: {len(report.ok)} "
          f"{'notebooks written' if args.notebooks else 'ran'}, {len(report.skipped)} already done, "
          + (f"{len(report.todo)} runs without a record not run, " if args.notebooks else "")
          + f"{len(report.failed)} failed, {report.seconds:.0f} s")
    for name, acc in report.records_kept.items():
        print(f"  {name}: record left untouched ({_accuracies(acc['recorded'])}); "
              f"this execution {_accuracies(acc['executed'])}")
    for name, error in report.failed.items():
        print(f"  failed {name}: {error.splitlines()[0][:200]}", file=sys.stderr)
    return report.exit_status


def _accuracies(acc: dict | None) -> str:
    return ", ".join(f"{kind} {value:.2f} %" for kind, value in (acc or {}).items()) or "no accuracy"


def cmd_rerun(args) -> int:
    from .rerun import rerun

    report = rerun(args.record, tolerance=args.tolerance, keep=args.keep, root=args.root)
    print(report.table())
    if args.json:
        from .cache import write_json

        write_json(args.json, report.to_dict())
    return report.exit_status


def cmd_bench(args) -> int:
    import runpy

    from .cache import project_root
    from .provenance import CHECKOUT

    folder = (CHECKOUT or project_root()) / "benchmarks"
    if not folder.is_dir():
        raise UsageError("the benchmarks are scripts of the repository, not of the installed "
                         "package: run `pqlib bench` inside a checkout")
    names = sorted(p.stem for p in folder.glob("*.py"))
    if args.name not in names:
        if args.name is None:
            print("benchmarks: " + ", ".join(names))
            return 0
        raise UsageError(f"unknown benchmark {args.name!r}; benchmarks: {', '.join(names)}")
    sys.argv = [str(folder / f"{args.name}.py"), *args.args]
    runpy.run_path(sys.argv[0], run_name="__main__")
    return 0


_ROOT = ("--root", dict(metavar="DIR", help="folder the records and notebooks go under (default: "
                        "$PQLIB_ROOT, else the checkout around the current folder, else it)"))
_SEED = ("--seed", dict(type=int, default=0))
_EXECUTOR = ("--executor", dict(choices=["local", "dask"], default="local", help="local "
                                "(default): on this machine; dask: as tasks of a Dask cluster "
                                "(sweep: one per run; distill: one per class)"))
_SCHEDULER = ("--scheduler", dict(metavar="ADDRESS", help="with --executor dask: the scheduler "
                                  "of a running cluster (default: start a local cluster of "
                                  "--workers processes)"))
_FLAG = dict(action="store_true")
_DEVICE = ("--device", dict(help="cpu, cuda, cuda:1, ... (default: CUDA when available)"))

# sub-command: (function, help, [(argument, add_argument options), ...])
_COMMANDS = {
    "distill": (cmd_distill, "distill a dataset to a few images per class", [
        ("--method", dict(required=True, help="random, herding, kcenter, dm, d4m, ddoq, wmdd")),
        ("--dataset", dict(default="mnist", help="mnist (default), digits, imagefolder:PATH, ...")),
        ("--ipc", dict(type=int, required=True, help="images per class")),
        _SEED,
        ("--out", dict(required=True, help="output directory (see pqlib.distilled)")),
        ("--force", dict(_FLAG, help="replace a non-empty --out")),
        ("--set", dict(action="append", metavar="KEY=VALUE", help="method option, repeatable")),
        ("--prior", dict(metavar="SPEC", help="ddoq/d4m: pixel, sd:MODEL_DIR (Stable "
                         "Diffusion, a local diffusers folder), tiny:PREFIX, or a dataset name "
                         "(default: the dataset's tiny prior)")),
        ("--teacher", dict(metavar="SPEC", help="herding/kcenter/wmdd: ARCH (default "
                           "convnet_bn, trained and cached), PATH.safetensors, or "
                           "ARCH:WEIGHTS.safetensors (e.g. resnet18:teacher.safetensors)")),
        _DEVICE, _EXECUTOR, _SCHEDULER,
        ("--workers", dict(type=int, default=2, help="with --executor dask and no --scheduler: "
                           "worker processes of the local cluster (default 2)")),
    ]),
    "evaluate": (cmd_evaluate, "train a student on a distilled set, test it", [
        ("dir", dict(help="directory written by `pqlib distill`")),
        ("--dataset", dict(help="dataset whose test split to use (default: from meta.json)")),
        ("--teacher", dict(default="convnet_bn", help="soft-label teacher: an architecture "
                           "(default convnet_bn, trained and cached), PATH.safetensors, "
                           "ARCH:WEIGHTS.safetensors, or 'none' for hard labels")),
        ("--student", dict(default="convnet", help="student architecture (default convnet)")),
        ("--protocol", dict(help="evaluation protocol (pqlib.protocols: dc, dc300, dc-iclr21, "
                            "fkd, fkd-noaug, legacy-hard, legacy-soft); default dc with --teacher none, else fkd")),
        ("--epochs", dict(type=int, help="override the protocol's epochs E")),
        _SEED,
        ("--no-weights", dict(_FLAG, help="ignore the per-image weights")),
        _DEVICE,
    ]),
    "sweep": (cmd_sweep, "execute the experiment for a profile's runs", [
        _ROOT,
        ("--profile", dict(default="quick", help="smoke, quick (default), paper, or a YAML path")),
        ("--only", dict(action="append", metavar="PATTERN", help="keep the runs whose name "
                        "matches PATTERN (glob) or whose parameter is KEY=VALUE; repeatable, "
                        "all must match")),
        ("--workers", dict(type=int, help="runs at a time (default: the profile's)")),
        _EXECUTOR, _SCHEDULER,
        ("--force", dict(_FLAG, help="re-run finished runs (with --notebooks: also replace "
                         "their records)")),
        ("--notebooks", dict(_FLAG, help="only re-execute the runs that have a record but no "
                             "notebook, to write it and the distilled set; records are kept")),
        ("--list", dict(_FLAG, help="list the runs: done, done (no notebook), todo")),
    ]),
    "rerun": (cmd_rerun, "re-execute a record's run, compare the numbers", [
        _ROOT,
        ("record", dict(help="a result record, e.g. "
                        "results/paper/paper-mnist-random-ipc1-s0.json")),
        ("--tolerance", dict(type=float, default=0.5, help="largest accepted accuracy "
                             "difference, in points (default 0.5)")),
        ("--keep", dict(metavar="DIR", help="execute in DIR (new or empty) and keep its notebook, "
                        "record and distilled set (default: a temporary folder, removed)")),
        ("--json", dict(metavar="OUT", help="also write the report, with the re-run's commit "
                        "and machine, to OUT")),
    ]),
    "bench": (cmd_bench, "run a script of benchmarks/ (no name: list them)", [
        ("name", dict(nargs="?")),
        ("args", dict(nargs=argparse.REMAINDER, help="arguments for the benchmark")),
    ]),
    "train-prior": (cmd_train_prior, "train the tiny latent diffusion prior", [
        ("--dataset", dict(default="mnist", help="dataset to train on (default mnist)")),
        ("--out", dict(help="also copy the weights here: a directory or a file prefix")),
        ("--seed", dict(type=int, default=None, help="training seed (default 0)")),
        ("--set", dict(action="append", metavar="KEY=VALUE", help="TinyConfig override, "
                       "repeatable (e.g. --set unet_epochs=0.05 for a smoke run)")),
        ("--restart", dict(_FLAG, help="ignore a checkpoint or cached result")),
        ("--checkpoint-every", dict(type=int, default=200, help="optimiser steps per checkpoint")),
    ]),
}


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    p = argparse.ArgumentParser(prog="pqlib", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"pqlib {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (func, help, arguments) in _COMMANDS.items():
        command = sub.add_parser(name, help=help)
        command.set_defaults(func=func)
        for flag, options in arguments:
            command.add_argument(flag, **options)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ValueError, FileNotFoundError, FileExistsError, KeyError,
            ConnectionError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"pqlib: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
