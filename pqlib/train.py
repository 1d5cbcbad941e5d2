"""Teacher training, student training under a named protocol, and evaluation.

Every student is trained by :func:`train_student` under a :class:`~pqlib.protocols.Protocol`
(``dc``: the published hard-label evaluation; ``fkd``: soft labels; see :mod:`pqlib.protocols`)
and tested once by :func:`evaluate`. Each sample's loss is multiplied by its weight,
normalised so the batch mean weight is 1 (uniform weights = plain training).

``precision="auto"`` runs convolutions in bfloat16 autocast on CPUs with native bf16 support
and in float32 elsewhere; ``compile="auto"`` compiles long trainings with ``torch.compile``.
Both are recorded in results: they change float rounding, not what is computed.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn
from tqdm import tqdm

from . import data as data_mod
from .augment import cutmix, dc_augment, default_augmentation, dsa
from .cache import atomic_write, cache_dir, config_hash
from .checks import CorruptFile, Int, InvalidParameter, OneOf, Optional, Real, checked
from .distilled import DistilledSet
from .models import ARCHITECTURES, Standardized, build
from .protocols import PROTOCOLS, Protocol, channel_stats, get_protocol

__all__ = ["Teacher", "train_teacher", "load_teacher", "train_student", "evaluate",
           "resolve_precision", "default_device", "autocast", "should_compile", "Protocol",
           "PROTOCOLS", "get_protocol", "TEACHER_RECIPE"]

TEACHER_RECIPE = 2  # bump when the teacher training code changes meaning
WEIGHTS_DIR = Path(__file__).parent / "weights"
PRECISION = OneOf("auto", "bf16", "fp32")
DEVICE = Optional | str | torch.device


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@checked(precision=PRECISION, device=DEVICE)
def resolve_precision(precision: str = "auto", device: torch.device | str | None = None) -> str:
    """``"auto"`` → ``"bf16"`` where bfloat16 is native (CPUs with AVX512-BF16/AMX, recent
    GPUs), else ``"fp32"``."""
    if precision != "auto":
        return precision
    if default_device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.cpu._is_avx512_bf16_supported() else "fp32"


def autocast(precision: str, device: torch.device | str = "cpu"):
    """``torch.autocast`` to bfloat16 when ``precision == "bf16"``, a no-op context otherwise."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                          enabled=precision == "bf16")


@contextmanager
def _seeded(seed: int, device: torch.device):
    """Seed torch's global RNG (model initialisation, kornia, CutMix's ratio) for the block and
    restore the caller's state after it: results depend on ``seed`` only."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _descend(loss: torch.Tensor, opt: torch.optim.Optimizer, sched) -> None:
    """One optimiser step on ``loss`` (then one scheduler step, if any)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()


def _epochs(step, n: int, batch: int, epochs: int, g: torch.Generator, desc: str, progress: bool,
            after_epoch=None) -> None:
    """``epochs`` passes over ``n`` rows: each in an order drawn from ``g``, cut into batches of
    ``batch`` (the last one kept), ``step(indices) -> loss`` per batch, then ``after_epoch(e)``."""
    bar = tqdm(range(epochs), desc=desc, disable=not progress, mininterval=2.0)
    for epoch in bar:
        for idx in torch.randperm(n, generator=g).split(batch):
            loss = step(idx)
        if after_epoch is not None:
            after_epoch(epoch)
        bar.set_postfix(loss=f"{loss.item():.4f}")


@checked(model=nn.Module, testset=data_mod.ImageSet, batch_size=Int(1), precision=PRECISION)
@torch.no_grad()
def evaluate(model: nn.Module, testset: data_mod.ImageSet, *, batch_size: int = 500,
             precision: str = "auto") -> float:
    """Top-1 accuracy of ``model`` on ``testset``, in percent (on the model's device)."""
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(testset), batch_size):
        with autocast(precision, device):
            pred = model(testset.images[i : i + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == testset.labels[i : i + batch_size]).sum())
    model.train(was_training)
    return 100.0 * correct / len(testset)


@dataclass(frozen=True)
class Teacher:
    """A trained classifier on a full training set.

    Attributes
    ----------
    model : the network, in eval mode
    accuracy : test accuracy in percent (``None`` for weights given without one)
    arch, dataset : what it is and what it was trained on
    config : the training configuration (its hash names the cached weights)
    seconds : wall time of the training that produced the weights
    num_classes, image_shape : what it accepts; methods check them against their data
    """

    model: nn.Module
    accuracy: float | None
    arch: str
    dataset: str
    config: dict
    seconds: float
    num_classes: int
    image_shape: tuple[int, int, int]

    @property
    def id(self) -> str:
        return f"{_slug(self.dataset)}-{self.arch}-{config_hash(self.config)}"

    def check_compatible(self, data: data_mod.ImageSet | DistilledSet) -> None:
        """Raise :class:`~pqlib.checks.InvalidParameter` if this teacher cannot label ``data``
        (other classes or image shape); ``data`` may also be a lazy image folder."""
        # an ImageSet or a lazy image folder has image_shape (the folder decodes nothing here)
        shape = tuple(getattr(data, "image_shape", None) or data.images.shape[1:])
        k = len(data.classes)
        if (k, shape) != (self.num_classes, tuple(self.image_shape)):
            name = getattr(data, "name", None) or getattr(data, "meta", {}).get("dataset", "?")
            raise InvalidParameter(
                f"teacher {self.id!r} was trained on {self.dataset!r} and takes images "
                f"{tuple(self.image_shape)} with {self.num_classes} classes, but the data {name!r} "
                f"has images {shape} with {k} classes; train a teacher for this dataset with "
                f"train_teacher({name!r})")

    def save(self, path: str | Path) -> None:
        """Write the weights and metadata to one safetensors file (atomically); read it back
        with :func:`load_teacher`."""
        info = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_write(Path(path)) as f:
            f.write(save(state, metadata={"teacher": json.dumps(info)}))


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)[:40]


# the knobs of a teacher training (shared by teacher_config and train_teacher)
_TEACHER_KNOBS = dict(dataset=str, arch=OneOf(*ARCHITECTURES), epochs=Optional | Int(1),
                      batch_size=Int(1), lr=Real(0, open_low=True), augment=bool, seed=Int(0),
                      precision=PRECISION)


@checked(**_TEACHER_KNOBS)
def teacher_config(dataset: str, arch: str = "convnet_bn", *, epochs: int | None = None,
                   batch_size: int = 256, lr: float = 2e-3, augment: bool = False, seed: int = 0,
                   precision: str = "auto") -> dict:
    """The full configuration :func:`train_teacher` would use (its hash names the weights).

    ``precision`` is recorded as requested (``"auto"`` stays ``"auto"``) so that weights
    trained on one machine are found on another; the precision actually used is stored with
    the weights.
    """
    return {"dataset": dataset, "arch": arch, "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "augment": augment, "seed": seed, "precision": precision,
            "recipe": TEACHER_RECIPE}


@checked(**_TEACHER_KNOBS, device=DEVICE, cache=bool, progress=bool)
def train_teacher(dataset: str = "mnist", arch: str = "convnet_bn", *, epochs: int | None = None,
                  batch_size: int = 256, lr: float = 2e-3, augment: bool = False, seed: int = 0,
                  precision: str = "auto", device: str | None = None, cache: bool = True,
                  progress: bool = True) -> Teacher:
    """Train (or load from cache) a classifier on the whole training split of ``dataset``.

    AdamW with a one-cycle learning-rate schedule. ``augment=True`` trains on the student
    augmentation (:func:`~pqlib.augment.default_augmentation`); off by default because on MNIST
    it costs clean accuracy in a 3-epoch budget (98.3 % vs 99.4 %) and gives worse soft labels
    (random IPC 10 students: 97.7 % vs 98.9 %). ``epochs=None`` picks enough epochs for at
    least 600 optimiser steps (and at least 3 epochs): 3 on MNIST.

    Weights are looked up by the hash of the configuration, first among the weights shipped
    with pqlib (``pqlib/weights``), then in ``$PQLIB_CACHE/teachers``; a miss trains and
    caches. Returns a :class:`Teacher` with the test accuracy, its model on ``device``
    (default: CUDA when available).
    """
    cfg = teacher_config(dataset, arch, epochs=epochs, batch_size=batch_size, lr=lr,
                         augment=augment, seed=seed, precision=precision)
    name = f"teacher-{_slug(dataset)}-{arch}-{config_hash(cfg)}"
    device = default_device(device)
    for folder in (WEIGHTS_DIR, cache_dir("teachers")):
        if cache and (folder / f"{name}.safetensors").exists():
            return load_teacher(folder / f"{name}.safetensors", device=device)

    train, test = data_mod.load(dataset, "train"), data_mod.load(dataset, "test")
    precision = resolve_precision(precision, device)
    c, h, _ = train.image_shape
    steps_per_epoch = math.ceil(len(train) / batch_size)
    epochs = epochs or max(3, math.ceil(600 / steps_per_epoch))
    start = time.perf_counter()
    with _seeded(seed, device):
        model = build(arch, c, train.num_classes, h).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs,
                                                    steps_per_epoch=steps_per_epoch)
        aug = default_augmentation(train.image_shape) if augment else nn.Identity()

        def step(idx: torch.Tensor) -> torch.Tensor:
            x = aug(train.images[idx].to(device))
            with autocast(precision, device):
                loss = F.cross_entropy(model(x), train.labels[idx].to(device))
            _descend(loss, opt, sched)
            return loss

        _epochs(step, len(train), batch_size, epochs, torch.Generator().manual_seed(seed),
                f"teacher {arch} on {dataset}", progress)
    seconds = time.perf_counter() - start
    acc = evaluate(model.eval(), test, precision=precision)
    teacher = Teacher(model, acc, arch, dataset, cfg, seconds, train.num_classes, train.image_shape)
    if cache:
        teacher.save(cache_dir("teachers") / f"{name}.safetensors")
    return teacher


def load_teacher(path: str | Path, *, device: str | torch.device = "cpu") -> Teacher:
    """Load a teacher saved by :meth:`Teacher.save` (weights + metadata in one safetensors file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"teacher weights {str(path)!r} not found")
    try:
        with safe_open(str(path), "pt") as f:
            info = json.loads(f.metadata()["teacher"])
        state = load_file(str(path))
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as err:
        raise CorruptFile(path, "teacher weights file", "delete it; train_teacher(...) trains "
                          f"and caches the teacher again ({type(err).__name__})") from None
    info["image_shape"] = tuple(info["image_shape"])
    c, h, _ = info["image_shape"]
    model = build(info["arch"], c, info["num_classes"], h)
    model.load_state_dict(state)
    return Teacher(model.to(device).eval(), **info)


@checked(distilled=DistilledSet, protocol=Optional | str | Protocol | dict,
         teacher=Optional | Teacher, arch=OneOf(*ARCHITECTURES), epochs=Optional | Int(1),
         use_weights=bool, seed=Int(0), precision=PRECISION, device=DEVICE,
         compile=OneOf(True, False, "auto"), progress=bool)
def train_student(distilled: DistilledSet, protocol: str | Protocol | None = None, *,
                  teacher: Teacher | None = None, arch: str = "convnet", epochs: int | None = None,
                  use_weights: bool = True, seed: int = 0, precision: str = "auto",
                  device: str | None = None, compile: bool | str = "auto",
                  progress: bool = True) -> nn.Module:
    """Train a fresh network on a distilled set under an evaluation protocol.

    Parameters
    ----------
    distilled : the training set (images, labels and per-image weights)
    protocol : a :class:`~pqlib.protocols.Protocol` or its name (:data:`~pqlib.protocols.PROTOCOLS`);
        default ``"fkd"`` with a teacher, ``"dc"`` without
    teacher : the soft-label teacher (required by soft-label protocols, refused by hard ones)
    arch : student architecture, default ConvNet-3 with instance norm
    epochs : override the protocol's E (``protocol.replace(epochs=...)``)
    use_weights : multiply each sample's loss by its weight (batch-mean normalised to 1);
        ``False`` trains with uniform weights
    seed : seeds the model initialisation, batch order and augmentation (torch's global RNG
        is seeded inside and restored after: the result does not depend on its state)
    precision : ``"auto"``, ``"bf16"`` (bfloat16 autocast) or ``"fp32"``
    device : where to train (default: CUDA when available, else CPU)
    compile : ``torch.compile`` the student (and teacher) forward; ``"auto"`` compiles when the
        run is long enough to repay the compilation (see :func:`should_compile`); a compiler
        failure falls back to eager with a warning

    Returns
    -------
    the trained model, in eval mode, on ``device``; it takes [0, 1] images (a
    :class:`~pqlib.models.Standardized` wrapper when the protocol standardises inputs)
    """
    protocol = get_protocol(protocol or ("fkd" if teacher is not None else "dc")).replace(epochs=epochs)
    device = default_device(device)
    precision = resolve_precision(precision, device)
    if (protocol.labels == "soft") != (teacher is not None):
        raise InvalidParameter(f"protocol {protocol.name!r} trains with {protocol.labels} labels: "
                               + ("pass teacher=..." if teacher is None else "pass teacher=None"))
    if teacher is not None:
        teacher.check_compatible(distilled)
        teacher.model.to(device).eval()
    c, h, _ = distilled.images.shape[1:]
    with _seeded(seed, device):
        net = build(arch, c, len(distilled.classes), h).to(device)
        loop = _StudentLoop(protocol, distilled, net, teacher, use_weights, seed, precision,
                            device, compile)
        loop.run(progress)
    model = loop.model.eval()
    model.compiled = loop.compiled  # recorded by callers: compilation changes float rounding
    return model


@checked(compile=OneOf(True, False, "auto"), steps=Int(0), batch=Int(1))
def should_compile(compile: bool | str, steps: int, batch: int, device: torch.device) -> bool:
    """Whether :func:`train_student` compiles: ``compile`` if a bool; for ``"auto"``, when the run
    sees at least 50,000 images (compilation costs ~15 s on 2 CPU cores) on a device with a
    compiler (a C++ compiler on CPU)."""
    if isinstance(compile, bool):
        return compile
    has_compiler = device.type == "cuda" or shutil.which("c++") or shutil.which("g++")
    return bool(has_compiler) and steps * batch >= 50_000


class _StudentLoop:
    """One student training: the optimiser, schedule, augmentation and loss of a protocol.

    The order of random draws (batch permutation, augmentation, CutMix) is fixed per protocol,
    so the same seed gives the same student; ``legacy-*`` protocols reproduce pqlib's first
    training loop step for step.
    """

    def __init__(self, protocol: Protocol, distilled: DistilledSet, net: nn.Module,
                 teacher: Teacher | None, use_weights: bool, seed: int, precision: str,
                 device: torch.device, compile: bool | str):
        self.p, self.teacher, self.precision, self.device = protocol, teacher, precision, device
        self.x, self.y = distilled.images, distilled.labels
        self.batch = min(protocol.batch_size, len(self.x))  # the last batch of an epoch is kept
        self.total_steps = protocol.total_epochs * math.ceil(len(self.x) / self.batch)
        self.w = distilled.weights if use_weights else torch.ones(len(distilled))
        self.g = torch.Generator().manual_seed(seed)
        self.net = self.model = net
        if protocol.standardize:
            self.model = Standardized(
                net, *channel_stats(distilled.report.dataset, distilled.images)).to(device)
        strategy = protocol.dsa_strategy(self.x.shape[1])
        kind, _, dc_ops = protocol.augmentation.partition(":")
        self.augment = (default_augmentation(tuple(self.x.shape[1:])) if kind == "kornia"
                        else functools.partial(dsa, strategy=strategy, generator=self.g) if strategy
                        else functools.partial(dc_augment, strategy=dc_ops, generator=self.g)
                        if kind == "dc" else nn.Identity())
        self._compile(should_compile(compile, self.total_steps, self.batch, device))
        self.opt = self._optimizer(protocol.lr)
        self.sched = None  # "step-reset": a fresh optimiser at a tenth of the lr, after_epoch()
        if protocol.schedule == "step":
            self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, [self.total_steps // 2],
                                                              gamma=0.1)
        elif protocol.schedule == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, self.total_steps)

    def _compile(self, compiled: bool) -> None:
        """Run the student (and teacher) forward through ``torch.compile`` or eagerly;
        ``compile_untried`` until a compiled step has run."""
        wrap = (lambda m: torch.compile(m, dynamic=False)) if compiled else (lambda m: m)
        self.forward = wrap(self.net)
        self.label = wrap(self.teacher.model) if self.teacher is not None else None
        self.compiled = self.compile_untried = compiled

    def _optimizer(self, lr: float) -> torch.optim.Optimizer:
        if self.p.optimizer == "sgd":
            return torch.optim.SGD(self.net.parameters(), lr=lr, momentum=self.p.momentum,
                                   weight_decay=self.p.weight_decay)
        return torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=self.p.weight_decay)

    def run(self, progress: bool) -> None:
        """Train the (freshly built, so training-mode) student for the protocol's epochs."""
        _epochs(self.step, len(self.x), self.batch, self.p.total_epochs, self.g,
                f"student ({self.p.name})", progress, self.after_epoch)

    def after_epoch(self, epoch: int) -> None:
        """``step-reset``: a fresh optimiser at a tenth of the lr after epoch
        ``epochs // 2 + 1``."""
        if self.p.schedule == "step-reset" and epoch == self.p.epochs // 2 + 1:
            self.opt = self._optimizer(self.p.lr * 0.1)

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimiser step on the rows ``idx``; the first compiled step falls back to eager
        (same random draws) if compilation fails, e.g. without a working C++ compiler."""
        if not self.compile_untried:
            return self._step(idx)
        states = (self.g.get_state(), torch.get_rng_state())
        try:
            loss = self._step(idx)
        except Exception as err:  # compilation fails at the first forward / backward
            warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
                          "training this student eagerly", RuntimeWarning, stacklevel=3)
            self.g.set_state(states[0])
            torch.set_rng_state(states[1])
            self._compile(False)
            return self._step(idx)
        self.compile_untried = False
        return loss

    def _step(self, idx: torch.Tensor) -> torch.Tensor:
        dev = self.device
        x, y, w = self.x[idx].to(dev), self.y[idx].to(dev), self.w[idx].to(dev)
        if self.p.standardize:
            x = self.model.standardize(x)
        x = self.augment(x)
        if self.p.cutmix:
            x, src, lam = cutmix(x, generator=self.g)
            src = src.to(dev)
            w = lam * w + (1 - lam) * w[src]
        w = w / w.mean().clamp_min(1e-12)
        with autocast(self.precision, dev):
            logits = self.forward(x).float()
        if self.teacher is None:
            loss_i = F.cross_entropy(logits, y, reduction="none")
            if self.p.cutmix:
                loss_i = lam * loss_i + (1 - lam) * F.cross_entropy(logits, y[src], reduction="none")
        else:
            raw = x * self.model.std + self.model.mean if self.p.standardize else x
            with torch.no_grad(), autocast(self.precision, dev):
                target = self.label(raw).float()
            t = self.p.temperature
            loss_i = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(target / t, 1),
                              reduction="none", log_target=True).sum(1)
        loss = (w * loss_i).mean()
        _descend(loss, self.opt, self.sched)
        return loss
