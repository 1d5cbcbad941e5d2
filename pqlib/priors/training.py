"""Train a :class:`TinyLatentDiffusion` from scratch on the CPU, resumably.

Three phases, one checkpoint file:

1. **VAE** — AdamW on ``mean |x − x̂| + kl_weight · KL / pixels`` (posterior samples),
   ``vae_epochs`` passes;
2. **latents** — encode the training set once (posterior mean and log-variance, float32) and
   set ``scaling_factor = 1 / std`` of the posterior samples and ``clip_range`` = the largest
   scaled |mean| (rounded up to 0.5);
3. **UNet** — ε-prediction MSE on fresh posterior samples, uniform timesteps, labels dropped
   to the null class with probability ``p_uncond``, EMA of the weights.

Batches, noise and timesteps of step k come from generators seeded by (seed, phase, k), so a
resumed run computes exactly what an uninterrupted one would. The checkpoint (models,
optimiser, EMA, step, elapsed time) is written atomically every ``checkpoint_every`` steps, at
the end of each phase and on Ctrl-C, under ``$PQLIB_CACHE/priors/<config hash>/``; the
finished weights go to ``$PQLIB_CACHE/priors/prior-<dataset>-<hash>-{vae,unet}.safetensors``
(float16) with a JSON training record beside them.
"""

from __future__ import annotations

import copy
import io
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..cache import atomic_write, cache_dir
from .tiny import (
    TinyConfig,
    TinyLatentDiffusion,
    build_scheduler,
    build_unet,
    build_vae,
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
    if isinstance(config, TinyConfig):
        cfg = config
    else:
        cfg = default_config(data.name, None if data.name == "mnist" else data)
        if config:
            unknown = set(config) - set(TinyConfig.__dataclass_fields__)
            if unknown:
                raise ValueError(f"unknown prior config keys {sorted(unknown)}; valid keys: "
                                 f"{sorted(TinyConfig.__dataclass_fields__)}")
            cfg = cfg.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    if tuple(cfg.image_shape) != tuple(data.image_shape) or cfg.num_classes != data.num_classes:
        raise ValueError(
            f"config is for images {tuple(cfg.image_shape)} with {cfg.num_classes} classes but "
            f"{data.name!r} has images {tuple(data.image_shape)} with {data.num_classes} classes"
        )
    return cfg


def _gen(seed: int, phase: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + phase) * 10_000_019 + index)


def _lr(step: int, total: int, base: float, warmup: int) -> float:
    warm = min(1.0, (step + 1) / max(1, warmup))
    return base * warm * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))


def _batch(step: int, n: int, bs: int, seed: int, phase: int, cache: dict) -> torch.Tensor:
    spe = max(1, n // bs)
    epoch, j = divmod(step, spe)
    if cache.get("epoch") != epoch:
        cache["epoch"] = epoch
        cache["perm"] = torch.randperm(n, generator=_gen(seed, phase, 10**9 + epoch))
    return cache["perm"][j * bs : (j + 1) * bs]


def _total_steps(epochs: float, n: int, bs: int) -> int:
    return max(1, round(epochs * max(1, n // bs)))


def _save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_write(path) as f:
        f.write(buf.getvalue())


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
    from ..provenance import provenance
    from ..train import autocast, resolve_precision

    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every!r} must be a positive int")
    data = data_mod.load(dataset, "train") if isinstance(dataset, str) else dataset
    cfg = resolve_config(data, config)
    h = cfg.hash()
    final_dir = cache_dir("priors")
    prefix = final_dir / cfg.stem
    if resume and all(prefix.with_name(f"{prefix.name}{s}").is_file()
                      for s in ("-vae.safetensors", "-unet.safetensors")):
        prior = TinyLatentDiffusion.load(prefix, expect_hash=h)
        files = _copy_out(prefix, out)
        return PriorTraining(prior, files, 0.0, h, prior.record)

    work = cache_dir("priors", h)
    ckpt_path, lat_path = work / "checkpoint.pt", work / "latents.pt"
    precision = resolve_precision(cfg.precision)
    images, labels = data.images, data.labels
    n = len(images)
    pixels = cfg.image_shape[0] * cfg.pad_to**2

    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        vae, unet = build_vae(cfg), build_unet(cfg)
    ema = copy.deepcopy(unet).requires_grad_(False)
    state = {"phase": "vae", "step": 0, "seconds": 0.0, "phase_seconds": {}, "losses": [],
             "sessions": 0}
    opt_state = None
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck.get("config_hash") != h:
            raise ValueError(f"checkpoint {str(ckpt_path)!r} belongs to config {ck.get('config_hash')}, "
                             f"not {h}; delete it or pass resume=False")
        vae.load_state_dict(ck["vae"])
        unet.load_state_dict(ck["unet"])
        ema.load_state_dict(ck["ema"])
        opt_state = ck["opt"]
        state = ck["state"]
        if progress:
            print(f"resuming {cfg.stem} at phase {state['phase']!r}, step {state['step']}",
                  file=sys.stderr)
    state["sessions"] += 1
    clock = time.perf_counter()
    base_seconds = state["seconds"]

    def elapsed() -> float:
        return base_seconds + time.perf_counter() - clock

    def checkpoint(opt) -> None:
        state["seconds"] = elapsed()
        _save({"config_hash": h, "vae": vae.state_dict(), "unet": unet.state_dict(),
               "ema": ema.state_dict(), "opt": opt.state_dict() if opt is not None else None,
               "state": state}, ckpt_path)

    def phase_done(name: str, started: float) -> None:
        state["phase_seconds"][name] = state["phase_seconds"].get(name, 0.0) + time.perf_counter() - started

    opt = None
    try:
        # 1. VAE ------------------------------------------------------------------------
        if state["phase"] == "vae":
            started = time.perf_counter()
            total = _total_steps(cfg.vae_epochs, n, cfg.vae_batch_size)
            opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
            if opt_state is not None:
                opt.load_state_dict(opt_state)
            vae.train()
            perm: dict = {}
            bar = tqdm(range(state["step"], total), desc="prior 1/3 VAE", initial=state["step"],
                       total=total, disable=not progress, mininterval=2.0)
            for step in bar:
                idx = _batch(step, n, cfg.vae_batch_size, cfg.seed, 1, perm)
                x = to_model_space(images[idx], cfg)
                g = _gen(cfg.seed, 2, step)
                for group in opt.param_groups:
                    group["lr"] = _lr(step, total, cfg.vae_lr, cfg.warmup_steps)
                with autocast(precision):
                    dist = vae.encode(x).latent_dist
                mean, logvar = dist.mean.float(), dist.logvar.float()
                z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
                with autocast(precision):
                    rec = vae.decode(z).sample
                l1 = (rec.float() - x).abs().mean()
                kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum((1, 2, 3)).mean() / pixels
                loss = l1 + cfg.kl_weight * kl
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
                opt.step()
                state["step"] = step + 1
                if step % 25 == 0 or step == total - 1:
                    state["losses"].append(["vae", step, round(l1.item(), 5), round(kl.item(), 5)])
                    bar.set_postfix(l1=f"{l1.item():.4f}", kl=f"{kl.item():.3f}")
                if (step + 1) % checkpoint_every == 0:
                    checkpoint(opt)
            bar.close()
            phase_done("vae", started)
            state.update(phase="latents", step=0)
            opt = opt_state = None
            checkpoint(None)

        # 2. latents --------------------------------------------------------------------
        vae.eval()
        if state["phase"] == "latents" or not lat_path.is_file():
            started = time.perf_counter()
            means, logvars = [], []
            with torch.no_grad():
                for i in tqdm(range(0, n, 500), desc="prior 2/3 encode", disable=not progress,
                              mininterval=2.0):
                    dist = vae.encode(to_model_space(images[i : i + 500], cfg)).latent_dist
                    means.append(dist.mean)
                    logvars.append(dist.logvar)
            mean, logvar = torch.cat(means), torch.cat(logvars)
            var = (mean.double() ** 2).mean() + logvar.double().exp().mean() - mean.double().mean() ** 2
            scale = float(1.0 / var.sqrt())
            clip = math.ceil(2 * float(mean.abs().max()) * scale) / 2
            _save({"mean": mean, "logvar": logvar}, lat_path)
            state.update(scaling_factor=scale, clip_range=clip)
            if state["phase"] == "latents":
                phase_done("latents", started)
                state.update(phase="unet", step=0)
                checkpoint(None)
        lat = torch.load(lat_path, map_location="cpu", weights_only=True)
        mean, std = lat["mean"], torch.exp(0.5 * lat["logvar"])
        scale = state["scaling_factor"]

        # 3. UNet -----------------------------------------------------------------------
        if state["phase"] == "unet":
            started = time.perf_counter()
            total = _total_steps(cfg.unet_epochs, n, cfg.unet_batch_size)
            sched = build_scheduler(cfg, state["clip_range"])
            opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr)
            if opt_state is not None:
                opt.load_state_dict(opt_state)
            unet.train()
            perm = {}
            ema_params = list(ema.parameters())
            bar = tqdm(range(state["step"], total), desc="prior 3/3 UNet", initial=state["step"],
                       total=total, disable=not progress, mininterval=2.0)
            for step in bar:
                idx = _batch(step, n, cfg.unet_batch_size, cfg.seed, 3, perm)
                g = _gen(cfg.seed, 4, step)
                b = len(idx)
                x0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scale
                noise = torch.randn(x0.shape, generator=g)
                t = torch.randint(0, cfg.num_train_timesteps, (b,), generator=g)
                y = labels[idx].clone()
                y[torch.rand(b, generator=g) < cfg.p_uncond] = cfg.num_classes
                xt = sched.add_noise(x0, noise, t)
                for group in opt.param_groups:
                    group["lr"] = _lr(step, total, cfg.unet_lr, cfg.warmup_steps)
                with autocast(precision):
                    pred = unet(xt, t, class_labels=y).sample
                loss = F.mse_loss(pred.float(), noise)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
                opt.step()
                decay = min(cfg.ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    for pe, p in zip(ema_params, unet.parameters()):
                        pe.lerp_(p, 1 - decay)
                state["step"] = step + 1
                if step % 25 == 0 or step == total - 1:
                    state["losses"].append(["unet", step, round(loss.item(), 5)])
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                if (step + 1) % checkpoint_every == 0:
                    checkpoint(opt)
            bar.close()
            phase_done("unet", started)
            state.update(phase="done", step=0)
            opt = None
            checkpoint(None)
    except KeyboardInterrupt:
        checkpoint(opt)
        print(f"\ninterrupted: checkpoint saved to {ckpt_path}; run again to resume", file=sys.stderr)
        raise

    # 4. export ---------------------------------------------------------------------------
    seconds = elapsed()
    final_vae = build_vae(cfg, state["scaling_factor"])
    final_vae.load_state_dict(vae.state_dict())
    prior = TinyLatentDiffusion(cfg, final_vae, ema, clip_range=state["clip_range"])
    record = {
        "kind": "tiny-ldm", "dataset": cfg.dataset, "config_hash": h, "config": cfg.to_dict(),
        "command": command or " ".join(["pqlib" if "pqlib" in sys.argv[0] else sys.argv[0], *sys.argv[1:]]),
        "seconds": round(seconds, 1), "phase_seconds": {k: round(v, 1) for k, v in state["phase_seconds"].items()},
        "sessions": state["sessions"], "precision": precision, "n_train": n,
        "steps": {"vae": _total_steps(cfg.vae_epochs, n, cfg.vae_batch_size),
                  "unet": _total_steps(cfg.unet_epochs, n, cfg.unet_batch_size)},
        "scaling_factor": state["scaling_factor"], "clip_range": state["clip_range"],
        "final_losses": {"vae": _last(state["losses"], "vae"),
                         "unet": _last(state["losses"], "unet")},
        "losses": state["losses"], "weights_dtype": "float16", **provenance(),
    }
    files = prior.save(prefix)
    json_path = prefix.with_name(f"{prefix.name}.json")
    with atomic_write(json_path, "w") as f:
        json.dump(record, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)
    prior = TinyLatentDiffusion.load(prefix, expect_hash=h)
    copied = _copy_out(prefix, out)
    return PriorTraining(prior, tuple(files) + (json_path,) + copied, seconds, h, record)


def _last(losses: list, phase: str):
    rows = [row for row in losses if row[0] == phase]
    return rows[-1] if rows else None


def _copy_out(prefix: Path, out) -> tuple[Path, ...]:
    if out is None:
        return ()
    out = Path(out)
    target = out / prefix.name if (out.is_dir() or str(out).endswith(("/", "\\"))) else out
    copied = []
    for suffix in ("-vae.safetensors", "-unet.safetensors", ".json"):
        src = prefix.with_name(prefix.name + suffix)
        if src.is_file():
            dst = target.with_name(target.name + suffix)
            with atomic_write(dst) as f:
                f.write(src.read_bytes())
            copied.append(dst)
    return tuple(copied)
