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

import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from . import data as data_mod
from .augment import cutmix as cutmix_batch
from .augment import default_augmentation, dsa
from .cache import atomic_write, cache_dir, config_hash
from .distilled import DistilledSet
from .models import Standardized, build
from .protocols import PROTOCOLS, Protocol, channel_stats, get_protocol

__all__ = ["Teacher", "train_teacher", "load_teacher", "train_student", "evaluate",
           "resolve_precision", "default_device", "autocast", "should_compile", "Protocol",
           "PROTOCOLS", "get_protocol", "TEACHER_RECIPE"]

TEACHER_RECIPE = 2  # bump when the teacher training code changes meaning
WEIGHTS_DIR = Path(__file__).parent / "weights"


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str = "auto", device: torch.device | str | None = None) -> str:
    """``"auto"`` → ``"bf16"`` where bfloat16 is native (CPUs with AVX512-BF16/AMX, recent
    GPUs), else ``"fp32"``."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision={precision!r} is not one of 'auto', 'bf16', 'fp32'")
    if precision == "auto":
        device = torch.device(device) if device is not None else default_device()
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if torch.cpu._is_avx512_bf16_supported() else "fp32"
    return precision


def autocast(precision: str, device: torch.device | str = "cpu"):
    """``torch.autocast`` to bfloat16 when ``precision == "bf16"``, a no-op context otherwise."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


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
        x = testset.images[i : i + batch_size].to(device)
        with autocast(precision, device):
            pred = model(x).argmax(1).cpu()
        correct += int((pred == testset.labels[i : i + batch_size]).sum())
    model.train(was_training)
    return 100.0 * correct / len(testset)


# ------------------------------------------------------------------------------- teacher


@dataclass(frozen=True)
class Teacher:
    """A trained classifier on a full training set.

    Attributes
    ----------
    model : the network, in eval mode
    accuracy : test accuracy in percent
    arch, dataset : what it is and what it was trained on
    config : the training configuration (its hash names the cached weights)
    seconds : wall time of the training that produced the weights
    num_classes, image_shape : what it accepts; methods check them against their data
    """

    model: nn.Module
    accuracy: float
    arch: str
    dataset: str
    config: dict
    seconds: float
    num_classes: int
    image_shape: tuple[int, int, int]

    @property
    def id(self) -> str:
        return f"{_slug(self.dataset)}-{self.arch}-{config_hash(self.config)}"

    def check_compatible(self, data: data_mod.ImageSet) -> None:
        """Raise ValueError if this teacher cannot label ``data``."""
        if self.num_classes != data.num_classes or tuple(self.image_shape) != data.image_shape:
            raise ValueError(
                f"teacher {self.id!r} was trained on {self.dataset!r} ({self.num_classes} classes, "
                f"images {tuple(self.image_shape)}) but the data is {data.name!r} "
                f"({data.num_classes} classes, images {data.image_shape}); train a teacher for "
                f"this dataset with train_teacher({data.name!r})"
            )


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)[:40]


def teacher_config(dataset: str, arch: str = "convnet_bn", *, epochs: int | None = None,
                   batch_size: int = 256, lr: float = 2e-3, augment: bool = False, seed: int = 0,
                   precision: str = "auto") -> dict:
    """The full configuration :func:`train_teacher` would use (its hash names the weights).

    ``precision`` is recorded as requested (``"auto"`` stays ``"auto"``) so that weights
    trained on one machine are found on another; the precision actually used is stored with
    the weights.
    """
    resolve_precision(precision)  # validate
    return {"dataset": dataset, "arch": arch, "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "augment": augment, "seed": seed, "precision": precision,
            "recipe": TEACHER_RECIPE}


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
    device = torch.device(device) if device is not None else default_device()
    for folder in (WEIGHTS_DIR, cache_dir("teachers")):
        if cache and (folder / f"{name}.safetensors").exists():
            return load_teacher(folder / f"{name}.safetensors", device=device)

    train = data_mod.load(dataset, "train")
    test = data_mod.load(dataset, "test")
    precision = resolve_precision(precision, device)
    c, h, _ = train.image_shape
    steps_per_epoch = math.ceil(len(train) / batch_size)
    if epochs is None:
        epochs = max(3, math.ceil(600 / steps_per_epoch))
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build(arch, c, train.num_classes, h).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs,
                                                    steps_per_epoch=steps_per_epoch)
        g = torch.Generator().manual_seed(seed)
        aug = default_augmentation(train.image_shape) if augment else None
        bar = tqdm(range(epochs), desc=f"teacher {arch} on {dataset}", disable=not progress)
        for _ in bar:
            model.train()
            perm = torch.randperm(len(train), generator=g)
            for i in range(0, len(train), batch_size):
                idx = perm[i : i + batch_size]
                x = train.images[idx].to(device)
                x = x if aug is None else aug(x)
                with autocast(precision, device):
                    loss = F.cross_entropy(model(x), train.labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - start
    model.eval()
    acc = evaluate(model, test, precision=precision)
    teacher = Teacher(model, acc, arch, dataset, cfg, seconds, train.num_classes, train.image_shape)
    if cache:
        _save_teacher(teacher, cache_dir("teachers") / f"{name}.safetensors")
    return teacher


def _save_teacher(teacher: Teacher, path: Path) -> None:
    info = {"accuracy": teacher.accuracy, "arch": teacher.arch, "dataset": teacher.dataset,
            "config": teacher.config, "seconds": teacher.seconds,
            "num_classes": teacher.num_classes, "image_shape": list(teacher.image_shape)}
    state = {k: v.detach().cpu().contiguous() for k, v in teacher.model.state_dict().items()}
    with atomic_write(path) as f:
        f.write(_safetensors_bytes(state, {"teacher": json.dumps(info)}))


def _safetensors_bytes(tensors: dict, metadata: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def load_teacher(path: str | Path, *, device: str | torch.device = "cpu") -> Teacher:
    """Load a teacher saved by :func:`train_teacher` (weights + metadata in one safetensors file)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"teacher weights {str(path)!r} not found")
    with safe_open(str(path), "pt") as f:
        info = json.loads(f.metadata()["teacher"])
    c, h, _ = info["image_shape"]
    model = build(info["arch"], c, info["num_classes"], h)
    model.load_state_dict(load_file(str(path)))
    model.to(device).eval()
    return Teacher(model, info["accuracy"], info["arch"], info["dataset"], info["config"],
                   info["seconds"], info["num_classes"], tuple(info["image_shape"]))


# ------------------------------------------------------------------------------- student


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
    seed : seeds the model initialisation, batch order and augmentation
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
    device = torch.device(device) if device is not None else default_device()
    precision = resolve_precision(precision, device)
    if (protocol.labels == "soft") != (teacher is not None):
        raise ValueError(f"protocol {protocol.name!r} trains with {protocol.labels} labels: "
                         + ("pass teacher=..." if teacher is None else "pass teacher=None"))
    if teacher is not None:
        _check_teacher(teacher, distilled)
        teacher.model.to(device).eval()
    c, h, _ = distilled.images.shape[1:]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = build(arch, c, len(distilled.classes), h).to(device)
        loop = _StudentLoop(protocol, distilled, net, teacher, use_weights, seed, precision,
                            device, compile)
        loop.run(progress)
    model = loop.model.eval()
    model.compiled = loop.compiled  # recorded by callers: compilation changes float rounding
    return model


def should_compile(compile: bool | str, steps: int, batch: int, device: torch.device) -> bool:
    """Whether :func:`train_student` compiles: ``compile`` if a bool; for ``"auto"``, when the run
    sees at least 50,000 images (compilation costs ~15 s on 2 CPU cores) on a device with a
    compiler (a C++ compiler on CPU)."""
    if isinstance(compile, bool):
        return compile
    if compile != "auto":
        raise ValueError(f"compile={compile!r} must be True, False or 'auto'")
    has_compiler = device.type == "cuda" or shutil.which("c++") or shutil.which("g++")
    return bool(has_compiler) and steps * batch >= 50_000


def _check_teacher(teacher: Teacher, distilled: DistilledSet) -> None:
    shape = tuple(teacher.image_shape)
    if shape != tuple(distilled.images.shape[1:]) or teacher.num_classes != len(distilled.classes):
        raise ValueError(
            f"teacher {teacher.id!r} takes images {shape} with {teacher.num_classes} classes; the "
            f"distilled set has images {tuple(distilled.images.shape[1:])} with "
            f"{len(distilled.classes)} classes")


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
        c = self.x.shape[1]
        self.net = net
        self.model = net
        if protocol.standardize:
            mean, std = channel_stats(distilled.meta.get("dataset"), distilled.images)
            self.model = Standardized(net, mean, std).to(device)
        self.strategy = protocol.dsa_strategy(c)
        self.kornia = default_augmentation(tuple(self.x.shape[1:])) if protocol.augmentation == "kornia" else None
        self.forward, self.label = net, (teacher.model if teacher is not None else None)
        self.compiled, self._compile_checked = False, False
        if should_compile(compile, self.total_steps, self.batch, device):
            self.forward = torch.compile(net, dynamic=False)
            if teacher is not None:
                self.label = torch.compile(teacher.model, dynamic=False)
            self.compiled = True
        self.opt = self._optimizer(protocol.lr)
        total = self.total_steps
        if protocol.schedule == "step":
            self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, [total // 2], gamma=0.1)
        elif protocol.schedule == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, total)
        else:
            self.sched = None

    def _optimizer(self, lr: float) -> torch.optim.Optimizer:
        p = self.p
        if p.optimizer == "sgd":
            return torch.optim.SGD(self.net.parameters(), lr=lr, momentum=p.momentum,
                                   weight_decay=p.weight_decay)
        return torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=p.weight_decay)

    def run(self, progress: bool) -> None:
        p, n, bs = self.p, len(self.x), self.batch
        self.net.train()
        bar = tqdm(range(p.total_epochs), desc=f"student ({p.name})", disable=not progress,
                   mininterval=2.0)
        loss = None
        for epoch in bar:
            perm = torch.randperm(n, generator=self.g)
            for i in range(0, n, bs):
                loss = self.step(perm[i : i + bs])
            if p.schedule == "step-reset" and epoch == p.epochs // 2 + 1:
                self.opt = self._optimizer(p.lr * 0.1)
            bar.set_postfix(loss=f"{loss.item():.4f}")

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.kornia is not None:
            return self.kornia(x)
        if self.strategy is not None:
            return dsa(x, self.strategy, generator=self.g)
        return x

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimiser step on the rows ``idx``; the first compiled step falls back to eager
        (same random draws) if compilation fails, e.g. without a working C++ compiler."""
        if not self.compiled or self._compile_checked:
            return self._step(idx)
        states = (self.g.get_state(), torch.get_rng_state())
        try:
            loss = self._step(idx)
        except Exception as err:  # compilation fails at the first forward / backward
            warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
                          "training this student eagerly", RuntimeWarning, stacklevel=3)
            self.g.set_state(states[0])
            torch.set_rng_state(states[1])
            self.forward, self.compiled = self.net, False
            self.label = self.teacher.model if self.teacher is not None else None
            return self._step(idx)
        self._compile_checked = True
        return loss

    def _step(self, idx: torch.Tensor) -> torch.Tensor:
        dev = self.device
        x, y, w = self.x[idx].to(dev), self.y[idx].to(dev), self.w[idx].to(dev)
        if self.p.standardize:
            x = self.model.standardize(x)
        x = self._augment(x)
        if self.p.cutmix:
            x, src, lam = cutmix_batch(x, generator=self.g)
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
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        return loss
