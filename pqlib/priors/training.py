"""Train a :class:`TinyLatentDiffusion` from scratch on the CPU, resumably.

Three phases, one checkpoint file:

1. **VAE** — AdamW on ``mean |x − x̂| + kl_weight · KL / pixels`` (posterior samples),
   ``vae_epochs`` passes;
2. **latents** — encode the training set once (posterior mean and log-variance, float32) and
   set ``scaling_factor = 1 / std`` of the posterior samples and ``clip_range`` = the largest
   scaled |mean| (rounded up to 0.5);
3. **UNet** — ε-prediction MSE on fresh posterior samples, uniform timesteps, labels dropped
   to the null class with probability ``p_uncond``, EMA of the weights.

Both optimisation phases run the same loop (:meth:`_Session.train`: model, loss, batches,
learning-rate schedule, checkpoints, the UNet's EMA). Batches, noise and
timesteps of step k come from generators seeded by (seed, stream, k), so a resumed run
computes exactly what an uninterrupted one would. The checkpoint (models, optimiser, EMA,
step, elapsed time) is written atomically every ``checkpoint_every`` steps, at the end of each
phase and on Ctrl-C, under ``$PQLIB_CACHE/priors/<config hash>/``; the finished weights go to
``$PQLIB_CACHE/priors/prior-<dataset>-<hash>-{vae,unet}.safetensors`` (float16) with a JSON
training record beside them.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..cache import atomic_write, cache_dir
from ..checks import Int, InvalidParameter, checked
from .tiny import (
    TinyConfig,
    TinyLatentDiffusion,
    build_models,
    build_scheduler,
    default_config,
    to_model_space,
)

__all__ = ["PriorTraining", "train_prior", "resolve_config"]

_PHASES = ("vae", "latents", "unet", "done")


@dataclass(frozen=True)
class PriorTraining:
    """Result of :func:`train_prior`.

    Attributes
    ----------
    prior : the trained prior, loaded back from the float16 files (what ships)
    files : the weight files and the JSON record written
    seconds : wall time of the training, summed over resumed sessions (0 if loaded from cache)
    config_hash : hash of the :class:`TinyConfig` (names the files)
    record : the JSON training record
    """

    prior: TinyLatentDiffusion
    files: tuple[Path, ...]
    seconds: float
    config_hash: str
    record: dict


def resolve_config(data, config: TinyConfig | dict | None) -> TinyConfig:
    """The full :class:`TinyConfig` for ``data``: default, default with overrides, or as given."""
    cfg = config if isinstance(config, TinyConfig) else TinyConfig.from_dict(
        {**default_config(data.name, data).to_dict(), **(config or {})})
    if tuple(cfg.image_shape) != tuple(data.image_shape) or cfg.num_classes != data.num_classes:
        raise InvalidParameter(
            f"config is for images {tuple(cfg.image_shape)} with {cfg.num_classes} classes but "
            f"{data.name!r} has images {tuple(data.image_shape)} with {data.num_classes} classes")
    return cfg


def _gen(seed: int, stream: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + stream) * 10_000_019 + index)


def _lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps times a cosine decay to 0 at ``total``."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return base * warm * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))


def _batch(step: int, n: int, bs: int, seed: int, stream: int) -> torch.Tensor:
    """Indices of batch ``step``: one seeded permutation of the ``n`` examples per epoch."""
    epoch, j = divmod(step, max(1, n // bs))
    return torch.randperm(n, generator=_gen(seed, stream, 10**9 + epoch))[j * bs : (j + 1) * bs]


def _total_steps(cfg: TinyConfig, n: int) -> dict[str, int]:
    """Optimiser steps of each phase: ``round(epochs × batches per epoch)``, at least 1."""
    phases = {"vae": (cfg.vae_epochs, cfg.vae_batch_size),
              "unet": (cfg.unet_epochs, cfg.unet_batch_size)}
    return {name: max(1, round(epochs * max(1, n // bs))) for name, (epochs, bs) in phases.items()}


class _Session:
    """One call of :func:`train_prior`: the models, the resumable state, the checkpoint."""

    def __init__(self, cfg: TinyConfig, n: int, *, resume: bool, progress: bool, every: int):
        self.cfg, self.n, self.progress, self.every = cfg, n, progress, every
        self.work = cache_dir("priors", cfg.hash())
        self.path = self.work / "checkpoint.pt"
        self.vae, self.unet = build_models(cfg, seed=cfg.seed)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.state = {"phase": "vae", "step": 0, "seconds": 0.0, "phase_seconds": {},
                      "losses": [], "sessions": 0}
        self.opt = self.opt_state = None
        if resume and self.path.is_file():
            self._load()
        self.state["sessions"] += 1
        self.clock, self.base_seconds = time.perf_counter(), self.state["seconds"]

    def _load(self) -> None:
        ck = torch.load(self.path, map_location="cpu", weights_only=False)
        if ck.get("config_hash") != self.cfg.hash():
            raise ValueError(f"checkpoint {str(self.path)!r} belongs to config "
                             f"{ck.get('config_hash')}, not {self.cfg.hash()}; delete it or "
                             f"pass resume=False")
        for part in ("vae", "unet", "ema"):
            getattr(self, part).load_state_dict(ck[part])
        self.opt_state, self.state = ck["opt"], ck["state"]
        if self.progress:
            print(f"resuming {self.cfg.stem} at phase {self.state['phase']!r}, step "
                  f"{self.state['step']}", file=sys.stderr)

    def elapsed(self) -> float:
        return self.base_seconds + time.perf_counter() - self.clock

    def checkpoint(self) -> None:
        """Write models, optimiser (if in a phase), EMA and state atomically."""
        self.state["seconds"] = self.elapsed()
        with atomic_write(self.path) as f:
            torch.save({"config_hash": self.cfg.hash(), "vae": self.vae.state_dict(),
                        "unet": self.unet.state_dict(), "ema": self.ema.state_dict(),
                        "opt": self.opt.state_dict() if self.opt is not None else None,
                        "state": self.state}, f)

    def advance(self, started: float) -> None:
        """Close the current phase (begun at ``started``): count its time, checkpoint the next."""
        name, seconds = self.state["phase"], self.state["phase_seconds"]
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        self.state.update(phase=_PHASES[_PHASES.index(name) + 1], step=0)
        self.opt = self.opt_state = None
        self.checkpoint()

    def train(self, name: str, loss: Callable, steps: int) -> None:
        """Run phase ``name`` (``"vae"`` or ``"unet"``) from the checkpointed step to ``steps``,
        then advance to the next phase.

        AdamW on the model ``name`` with the config's ``<name>_lr`` and ``<name>_batch_size``.
        ``loss(idx, g)`` returns the loss of the training examples ``idx`` with its noise drawn
        from ``g``, and the named scalars to log. Step k's batch comes from generator stream
        ``streams[0]`` (one permutation per epoch), its noise from ``streams[1]``; the UNet's
        EMA follows it with decay ``min(ema_decay, (1 + k) / (10 + k))``.
        """
        started, state, cfg, model = time.perf_counter(), self.state, self.cfg, getattr(self, name)
        lr, batch_size = getattr(cfg, f"{name}_lr"), getattr(cfg, f"{name}_batch_size")
        streams = {"vae": (1, 2), "unet": (3, 4)}[name]
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr)
        if self.opt_state is not None:
            self.opt.load_state_dict(self.opt_state)
        model.train()
        bar = tqdm(range(state["step"], steps), desc=f"prior {name}", initial=state["step"],
                   total=steps, disable=not self.progress, mininterval=2.0)
        for step in bar:
            idx = _batch(step, self.n, batch_size, cfg.seed, streams[0])
            self.opt.param_groups[0]["lr"] = _lr(step, steps, lr, cfg.warmup_steps)  # one group
            value, logged = loss(idx, _gen(cfg.seed, streams[1], step))
            self.opt.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            self.opt.step()
            if name == "unet":
                decay = min(cfg.ema_decay, (1 + step) / (10 + step))
                for e, w in zip(self.ema.parameters(), model.parameters()):
                    e.lerp_(w.detach(), 1 - decay)
            state["step"] = step + 1
            if step % 25 == 0 or step == steps - 1:
                values = {k: round(v.item(), 5) for k, v in logged.items()}
                state["losses"].append([name, step, *values.values()])
                bar.set_postfix(values)
            if (step + 1) % self.every == 0:
                self.checkpoint()
        self.advance(started)

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Posterior mean and std of the training set, and the scaling factor (encoded once)."""
        path = self.work / "latents.pt"
        self.vae.eval()
        if self.state["phase"] == "latents" or not path.is_file():
            started = time.perf_counter()
            dists = [self.vae.encode(to_model_space(images[i : i + 500], self.cfg)).latent_dist
                     for i in tqdm(range(0, len(images), 500), desc="prior latents",
                                   disable=not self.progress, mininterval=2.0)]
            mean, logvar = torch.cat([d.mean for d in dists]), torch.cat([d.logvar for d in dists])
            m = mean.double()
            var = (m**2).mean() + logvar.double().exp().mean() - m.mean() ** 2
            scale = float(1.0 / var.sqrt())
            with atomic_write(path) as f:
                torch.save({"mean": mean, "logvar": logvar}, f)
            self.state.update(scaling_factor=scale,
                              clip_range=math.ceil(2 * float(mean.abs().max()) * scale) / 2)
            if self.state["phase"] == "latents":
                self.advance(started)
        lat = torch.load(path, map_location="cpu", weights_only=True)
        return lat["mean"], torch.exp(0.5 * lat["logvar"]), self.state["scaling_factor"]


def _vae_loss(vae, images: torch.Tensor, cfg: TinyConfig, amp) -> Callable:
    """L1 reconstruction + ``kl_weight`` · KL per pixel on posterior samples (``amp``: autocast)."""
    pixels = cfg.image_shape[0] * cfg.pad_to**2

    def loss(idx, g):
        x = to_model_space(images[idx], cfg)
        with amp():
            dist = vae.encode(x).latent_dist
        mean, logvar = dist.mean.float(), dist.logvar.float()
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
        with amp():
            rec = vae.decode(z).sample
        l1 = (rec.float() - x).abs().mean()
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum((1, 2, 3)).mean() / pixels
        return l1 + cfg.kl_weight * kl, {"l1": l1, "kl": kl}

    return loss


def _unet_loss(session: _Session, labels: torch.Tensor, latents, amp) -> Callable:
    """ε-prediction MSE on fresh posterior samples, labels dropped with probability p_uncond."""
    cfg, unet, (mean, std, scale) = session.cfg, session.unet, latents
    sched = build_scheduler(cfg, session.state["clip_range"])

    def loss(idx, g):
        b = len(idx)
        x0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scale
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, cfg.num_train_timesteps, (b,), generator=g)
        y = torch.where(torch.rand(b, generator=g) < cfg.p_uncond, cfg.num_classes, labels[idx])
        with amp():
            pred = unet(sched.add_noise(x0, noise, t), t, class_labels=y).sample
        mse = F.mse_loss(pred.float(), noise)
        return mse, {"loss": mse}

    return loss


@checked(checkpoint_every=Int(1))
def train_prior(dataset="mnist", *, config: TinyConfig | dict | None = None,
                out: str | Path | None = None, resume: bool = True, progress: bool = True,
                checkpoint_every: int = 200, command: str | None = None) -> PriorTraining:
    """Train a :class:`TinyLatentDiffusion` on the training split of ``dataset``.

    Parameters
    ----------
    dataset : a ``pqlib.data.load`` name, or an ImageSet to train on directly
    config : a :class:`TinyConfig`, a dict of overrides of the default (e.g.
        ``{"unet_epochs": 0.05}`` for a smoke run), or ``None`` for the default
    out : also copy the weights and record here: a directory (files keep their standard
        names) or a file prefix (``<out>-vae.safetensors``, ``<out>-unet.safetensors``,
        ``<out>.json``)
    resume : continue from the checkpoint of this config if there is one, and return the
        finished weights from the cache if they exist; ``False`` starts from scratch
    progress : tqdm progress bars
    checkpoint_every : optimiser steps between checkpoints
    command : recorded in the training record (default: ``sys.argv``)

    Returns
    -------
    PriorTraining
        the prior (reloaded from the float16 files), the files, the wall time and the record

    Notes
    -----
    MNIST default on 2 CPU cores: VAE 468 steps of 128 images, encoding 60,000 images, UNet
    1,872 steps of 256 latents; see the record shipped beside the weights for the time.
    """
    from .. import data as data_mod
    from ..train import autocast, resolve_precision

    data = data_mod.load(dataset, "train") if isinstance(dataset, str) else dataset
    cfg = resolve_config(data, config)
    prefix = cache_dir("priors") / cfg.stem
    if resume and all(Path(f"{prefix}-{part}.safetensors").is_file() for part in ("vae", "unet")):
        prior = TinyLatentDiffusion.load(prefix, expect_hash=cfg.hash())
        return PriorTraining(prior, _copy_out(prefix, out), 0.0, cfg.hash(), prior.record)

    precision, steps = resolve_precision(cfg.precision), _total_steps(cfg, len(data.images))
    amp = functools.partial(autocast, precision)
    run = _Session(cfg, len(data.images), resume=resume, progress=progress, every=checkpoint_every)
    try:
        if run.state["phase"] == "vae":
            run.train("vae", _vae_loss(run.vae, data.images, cfg, amp), steps["vae"])
        latents = run.latents(data.images)
        if run.state["phase"] == "unet":
            run.train("unet", _unet_loss(run, data.labels, latents, amp), steps["unet"])
    except KeyboardInterrupt:
        run.checkpoint()
        print(f"\ninterrupted: checkpoint saved to {run.path}; run again to resume",
              file=sys.stderr)
        raise
    seconds = run.elapsed()
    record = _record(cfg, run.state, seconds, precision, len(data.images), steps, command)
    run.vae.register_to_config(scaling_factor=run.state["scaling_factor"])
    prior = TinyLatentDiffusion(cfg, run.vae, run.ema, clip_range=run.state["clip_range"])
    files = [*prior.save(prefix), Path(f"{prefix}.json")]
    with atomic_write(files[-1], "w") as f:
        json.dump(record, f, indent=1)
    shutil.rmtree(run.work, ignore_errors=True)
    prior = TinyLatentDiffusion.load(prefix, expect_hash=cfg.hash())
    return PriorTraining(prior, (*files, *_copy_out(prefix, out)), seconds, cfg.hash(), record)


def _record(cfg: TinyConfig, state: dict, seconds: float, precision: str, n: int,
            steps: dict, command: str | None) -> dict:
    """The JSON training record written beside the weights."""
    from ..provenance import provenance

    argv = ["pqlib" if "pqlib" in sys.argv[0] else sys.argv[0], *sys.argv[1:]]
    last = {row[0]: row for row in state["losses"]}  # the last row of each phase
    return {
        "kind": "tiny-ldm", "dataset": cfg.dataset, "config_hash": cfg.hash(),
        "config": cfg.to_dict(), "command": command or " ".join(argv),
        "seconds": round(seconds, 1),
        "phase_seconds": {k: round(v, 1) for k, v in state["phase_seconds"].items()},
        "sessions": state["sessions"], "precision": precision, "n_train": n, "steps": steps,
        "scaling_factor": state["scaling_factor"], "clip_range": state["clip_range"],
        "final_losses": {phase: last.get(phase) for phase in ("vae", "unet")},
        "losses": state["losses"], "weights_dtype": "float16", **provenance()}


def _copy_out(prefix: Path, out) -> tuple[Path, ...]:
    """Copy the weights and record at ``prefix`` to ``out``: a folder or a file prefix."""
    if out is None:
        return ()
    target = Path(out)
    if target.is_dir() or str(out).endswith(("/", "\\")):  # a folder, perhaps still to create
        target = target / prefix.name
    copied = []
    for suffix in ("-vae.safetensors", "-unet.safetensors", ".json"):
        src, dst = Path(f"{prefix}{suffix}"), Path(f"{target}{suffix}")
        if src.is_file():
            with atomic_write(dst) as f:
                f.write(src.read_bytes())
            copied.append(dst)
    return tuple(copied)
