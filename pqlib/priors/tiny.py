"""``TinyLatentDiffusion``: a small class-conditional latent diffusion model built from diffusers parts.

Components (all stock diffusers classes, nothing patched):

* :class:`diffusers.AutoencoderKL` — images padded to ``pad_to``×``pad_to`` and mapped to
  [-1, 1] ↔ latents ``(latent_channels, pad_to/4, pad_to/4)`` (4×8×8 for MNIST);
* :class:`diffusers.UNet2DModel` — ε-prediction, conditioned on the class through
  ``num_class_embeds = num_classes + 1`` embeddings, the last one being the *null* class used
  for classifier-free guidance;
* :class:`diffusers.DDIMScheduler` — cosine (``squaredcos_cap_v2``) schedule, ``trailing``
  timestep spacing (so strength s starts at timestep ≈ s·T and strength 1 at T − 1), η = 0,
  and the predicted clean latent clipped to ``±clip_range`` (the largest |latent| seen in
  training): with the cosine schedule √ᾱ(T−1) ≈ 5e-5, so the unclipped ε→x₀ conversion at the
  first step of a strength-1 run would amplify ε errors ~10⁴-fold.

Latents are the VAE posterior (mean by default) times ``scaling_factor`` = 1/std of the
training latents (unit variance, as in Stable Diffusion).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from tqdm import tqdm

from ..cache import atomic_write, config_hash
from ..checks import CorruptFile, InvalidParameter, OneOf, check
from .base import Prior, batched, check_images, checked_decode, checked_encode

__all__ = ["TinyConfig", "TinyLatentDiffusion", "default_config", "PRIOR_RECIPE"]

PRIOR_RECIPE = 1  # bump when the training code changes meaning (it is part of the config hash)


@dataclass(frozen=True)
class TinyConfig:
    """Architecture and training recipe of a :class:`TinyLatentDiffusion`.

    Its :meth:`hash` names the trained weights; every field changes the result.

    Attributes
    ----------
    dataset : name of the training dataset (``pqlib.data.load`` name)
    image_shape : ``(C, H, W)`` of the dataset's images
    num_classes : classes to condition on (the UNet gets one more: the null class)
    classes : class names, for display
    pad_to : images are zero-padded to ``pad_to``×``pad_to`` (divisible by 2^(levels−1))
    vae_channels, vae_layers_per_block, vae_norm_groups, latent_channels : the AutoencoderKL
    unet_channels, unet_layers_per_block, unet_norm_groups : the UNet2DModel; its last level
        uses self-attention (``AttnDownBlock2D`` / ``AttnUpBlock2D``)
    num_train_timesteps, beta_schedule : the diffusion
    vae_epochs, vae_batch_size, vae_lr, kl_weight : VAE training: AdamW, loss
        ``mean |x − x̂| + kl_weight · KL / (pixels per image)``
    unet_epochs, unet_batch_size, unet_lr, ema_decay, p_uncond : UNet training: AdamW,
        ε-MSE, EMA of the weights (the EMA is what ships), labels replaced by the null class
        with probability ``p_uncond``
    warmup_steps : linear learning-rate warm-up, then cosine decay to 0 (both phases)
    seed : seeds initialisation, batch order and all noise
    precision : ``"fp32"`` (default), ``"bf16"`` (bfloat16 autocast) or ``"auto"`` (bf16 on CPUs
        with native bf16). bf16 is ~1.9× faster for the VAE on an idle machine but collapses
        (10× slower) when another process holds one of the two cores, so fp32 is the default
    recipe : version of the training code
    """

    dataset: str = "mnist"
    image_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    classes: tuple[str, ...] = tuple(str(i) for i in range(10))
    pad_to: int = 32
    vae_channels: tuple[int, ...] = (32, 64, 64)
    vae_layers_per_block: int = 1
    vae_norm_groups: int = 32
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (48, 96)
    unet_layers_per_block: int = 2
    unet_norm_groups: int = 16
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    vae_epochs: float = 1.0
    vae_batch_size: int = 128
    vae_lr: float = 1e-3
    kl_weight: float = 1e-4
    unet_epochs: float = 8.0
    unet_batch_size: int = 256
    unet_lr: float = 1e-3
    ema_decay: float = 0.999
    p_uncond: float = 0.1
    warmup_steps: int = 100
    seed: int = 0
    precision: str = "fp32"
    recipe: int = field(default=PRIOR_RECIPE)

    def __post_init__(self):
        levels = len(self.vae_channels) - 1
        c, h, w = self.image_shape
        if self.pad_to < max(h, w) or self.pad_to % (2 ** levels):
            raise InvalidParameter(f"pad_to={self.pad_to} must be >= the image size {h}×{w} and "
                                   f"divisible by 2**{levels} (the VAE downsamples {levels} times)")
        latent = self.pad_to // 2 ** levels
        if latent % 2 ** (len(self.unet_channels) - 1):
            raise InvalidParameter(f"latent size {latent} is not divisible by "
                                   f"2**{len(self.unet_channels) - 1} (unet_channels="
                                   f"{self.unet_channels}); change pad_to or unet_channels")
        if len(self.classes) != self.num_classes:
            raise InvalidParameter(f"classes has {len(self.classes)} names but "
                                   f"num_classes={self.num_classes}")
        check("precision", self.precision, OneOf("auto", "bf16", "fp32"), where="TinyConfig")
        if not 0.0 <= self.p_uncond < 1.0:
            raise InvalidParameter(f"p_uncond={self.p_uncond} must be in [0, 1)")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = self.pad_to // 2 ** (len(self.vae_channels) - 1)
        return (self.latent_channels, s, s)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> TinyConfig:
        """The config of :meth:`to_dict` (lists become tuples); unknown keys are an error."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidParameter(f"unknown prior config keys {sorted(unknown)}; valid keys: "
                                   f"{sorted(cls.__dataclass_fields__)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def hash(self) -> str:
        return config_hash(self.to_dict())

    def replace(self, **changes) -> TinyConfig:
        return replace(self, **changes)

    @property
    def stem(self) -> str:
        """File stem of the trained weights: ``prior-<dataset>-<hash>``."""
        slug = "".join(ch if ch.isalnum() else "_" for ch in self.dataset)[:40]
        return f"prior-{slug}-{self.hash()}"


def default_config(dataset: str = "mnist", data=None) -> TinyConfig:
    """The default :class:`TinyConfig` for ``dataset`` (``data``: its ImageSet, for shapes).

    MNIST: VAE (32, 64, 64) for one epoch, UNet (48, 96) for eight epochs, float32.
    Other datasets get the same recipe with their own image shape and classes.
    """
    if dataset == "mnist" and data is None:
        return TinyConfig()
    if data is None:
        from ..data import load

        data = load(dataset, "train")
    return TinyConfig(dataset=dataset, image_shape=tuple(data.image_shape),
                      num_classes=data.num_classes, classes=tuple(data.classes),
                      pad_to=8 * math.ceil(max(data.image_shape[1:]) / 8))  # VAE ÷4, UNet ÷2


def _padding(cfg: TinyConfig) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)``: the margins of the image in the padded square."""
    (_, h, w), p = cfg.image_shape, cfg.pad_to
    return (p - w) // 2, p - w - (p - w) // 2, (p - h) // 2, p - h - (p - h) // 2


def to_model_space(images: torch.Tensor, cfg: TinyConfig) -> torch.Tensor:
    """[0, 1] images ``(N, *cfg.image_shape)`` → zero-padded images of side ``pad_to`` in [-1, 1]."""
    return F.pad(images, _padding(cfg)) * 2 - 1


def to_image_space(x: torch.Tensor, cfg: TinyConfig) -> torch.Tensor:
    """Inverse of :func:`to_model_space`: crop to ``cfg.image_shape`` (padding by minus the
    margins), map to [0, 1] (clamped)."""
    return ((F.pad(x, [-m for m in _padding(cfg)]) + 1) / 2).clamp(0, 1)


def build_models(cfg: TinyConfig, *, seed: int = 0, scaling_factor: float = 1.0):
    """``(vae, unet)`` with weights initialised from ``seed`` (the global RNG is left as it was)."""
    from diffusers import AutoencoderKL, UNet2DModel

    n, m = len(cfg.vae_channels), len(cfg.unet_channels)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=cfg.image_shape[0], out_channels=cfg.image_shape[0],
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(cfg.vae_channels), layers_per_block=cfg.vae_layers_per_block,
            latent_channels=cfg.latent_channels, norm_num_groups=cfg.vae_norm_groups,
            sample_size=cfg.pad_to, scaling_factor=float(scaling_factor))
        unet = UNet2DModel(
            sample_size=cfg.latent_shape[1], in_channels=cfg.latent_channels,
            out_channels=cfg.latent_channels, block_out_channels=tuple(cfg.unet_channels),
            layers_per_block=cfg.unet_layers_per_block, norm_num_groups=cfg.unet_norm_groups,
            down_block_types=("DownBlock2D",) * (m - 1) + ("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (m - 1),
            num_class_embeds=cfg.num_classes + 1)
    return vae, unet


def build_scheduler(cfg: TinyConfig, clip_range: float):
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
        prediction_type="epsilon", clip_sample=True, clip_sample_range=float(clip_range),
        set_alpha_to_one=True, timestep_spacing="trailing")


class TinyLatentDiffusion(Prior):
    """Class-conditional latent diffusion: AutoencoderKL + UNet2DModel + DDIM.

    Parameters
    ----------
    config : TinyConfig
        The architecture / recipe it was built from.
    vae : diffusers.AutoencoderKL
        Its ``config.scaling_factor`` scales the latents.
    unet : diffusers.UNet2DModel
        With ``num_class_embeds = num_classes + 1`` (the last class is the null class).
    clip_range : float
        Predicted clean latents are clipped to ``[-clip_range, clip_range]``.
    record : dict, optional
        Training record (wall time, losses, versions), kept for reports.

    Notes
    -----
    :func:`pqlib.priors.load_prior` loads the trained default, :func:`pqlib.priors.train_prior`
    trains one, :meth:`random` builds an untrained one.

    Examples
    --------
    >>> prior = TinyLatentDiffusion.random(TinyConfig())          # doctest: +SKIP
    >>> z = prior.encode(images)                                   # (N, 4, 8, 8)
    >>> x = prior.decode(z, labels, strength=0.7, seed=0)          # (N, 1, 28, 28) in [0, 1]
    """

    name = "tiny-ldm"
    default_guidance = 3.0

    def __init__(self, config: TinyConfig, vae, unet, *, clip_range: float = 4.0,
                 record: dict | None = None):
        self.tiny_config, self.config, self.record = config, config.to_dict(), dict(record or {})
        self.vae, self.unet = (m.eval().requires_grad_(False) for m in (vae, unet))
        self.clip_range, self.scheduler = float(clip_range), build_scheduler(config, clip_range)
        self.dataset, self.num_classes, self.classes = (config.dataset, config.num_classes,
                                                        tuple(config.classes))
        self.image_shape, self.latent_shape = tuple(config.image_shape), config.latent_shape

    @classmethod
    def random(cls, config: TinyConfig, *, seed: int = 0, scaling_factor: float = 1.0,
               clip_range: float = 4.0) -> TinyLatentDiffusion:
        """An untrained prior with seeded random weights (for tests and shape checks)."""
        return cls(config, *build_models(config, seed=seed, scaling_factor=scaling_factor),
                   clip_range=clip_range)


    def to_model_space(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images ``(N, C, H, W)`` → zero-padded images of side ``pad_to`` in [-1, 1]."""
        return to_model_space(images, self.tiny_config)

    @torch.no_grad()
    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Plain VAE decoding of scaled latents: ``vae.decode(latents / scaling_factor)``, in [0, 1]."""
        return to_image_space(self.vae.decode(latents / self.scaling_factor).sample, self.tiny_config)


    @checked_encode
    @torch.no_grad()
    def encode(self, images: torch.Tensor, *, sample: bool = False, seed: int = 0,
               batch_size: int = 500, progress: bool = True) -> torch.Tensor:
        """Encode images to scaled latents.

        Parameters
        ----------
        images : tensor of shape ``(N, C, H, W)`` = ``(N, *image_shape)``, values in [0, 1]
        sample : draw from the VAE posterior (seeded) instead of returning its mean
        seed : seeds the posterior noise (``sample=True`` only)
        batch_size : images per VAE call

        Returns
        -------
        latents : float32 tensor of shape ``(N, *latent_shape)``, multiplied by ``scaling_factor``
        """
        images = check_images(images, self.image_shape)
        n = len(images)
        eps = torch.randn((n, *self.latent_shape),
                          generator=torch.Generator().manual_seed(seed)) if sample else None

        def encode(rows: slice) -> torch.Tensor:
            dist = self.vae.encode(self.to_model_space(images[rows])).latent_dist
            z = dist.mean if eps is None else dist.mean + dist.std * eps[rows]
            return z * self.scaling_factor

        return batched(encode, n, batch_size, self.latent_shape, desc="encode",
                       disable=not progress or n <= batch_size)

    @checked_decode
    @torch.no_grad()
    def decode(self, latents: torch.Tensor, labels, *, strength: float = 0.7, steps: int = 50,
               guidance: float | None = None, seed: int = 0, batch_size: int = 500,
               progress: bool = True) -> torch.Tensor:
        """Img2img (SDEdit) from latents, conditioned on class labels.

        Parameters
        ----------
        latents : tensor of shape ``(N, *latent_shape)``, scaled as :meth:`encode` returns them
        labels : int tensor of shape (N,) in [0, num_classes), or one int for all
        strength : in [0, 1]. DDIM runs the last ``int(steps * strength)`` of ``steps``
            trailing-spaced timesteps, after noising the latents to the first of them with
            ``scheduler.add_noise``; 0 (or ``int(steps * strength) == 0``) is a plain VAE
            decode, 1 starts from pure Gaussian noise (the latents are then ignored)
        steps : DDIM steps for strength 1
        guidance : classifier-free guidance scale w, ε = ε(∅) + w (ε(y) − ε(∅)); 1 is purely
            conditional, 0 unconditional; default :attr:`default_guidance` (3.0)
        seed : seeds the noise (drawn for all N at once, so independent of ``batch_size``)
        batch_size : latents per UNet call (twice as many rows with guidance)

        Returns
        -------
        images : float32 tensor of shape ``(N, *image_shape)``, values in [0, 1]
        """
        latents, labels, guidance = self._decode_inputs(latents, labels, guidance)
        n, init = len(latents), min(int(steps * strength), steps)
        sched = self.scheduler
        sched.set_timesteps(steps)
        timesteps = sched.timesteps[steps - init :]  # empty for init == 0: a plain VAE decode
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
        with tqdm(total=math.ceil(n / batch_size) * len(timesteps),
                  desc=f"decode s={strength:g}", disable=not progress or init == 0) as bar:

            def denoise(rows: slice) -> torch.Tensor:
                z, eps = latents[rows], noise[rows]
                if init:
                    z = eps.clone() if strength >= 1.0 else sched.add_noise(z, eps, timesteps[:1])
                for t in timesteps:
                    z = sched.step(self._eps(z, t, labels[rows], guidance), t, z).prev_sample
                    bar.update()
                return self.vae_decode(z)

            return batched(denoise, n, batch_size, self.image_shape, disable=True)

    def _eps(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor, guidance: float) -> torch.Tensor:
        null = torch.full_like(y, self.num_classes)  # the null class
        if guidance in (0.0, 1.0):  # purely unconditional / conditional: one UNet call
            return self.unet(z, t, class_labels=y if guidance else null).sample
        cond, uncond = self.unet(torch.cat([z, z]), t,
                                 class_labels=torch.cat([y, null])).sample.chunk(2)
        return uncond + guidance * (cond - uncond)


    def save(self, prefix: str | Path, *, dtype: torch.dtype = torch.float16) -> list[Path]:
        """Write ``<prefix>-{vae,unet}.safetensors`` (``dtype``, atomically), each with the config,
        scaling factor and clip range in its metadata, so that :meth:`load` rebuilds the prior."""
        meta = {"pqlib_prior": json.dumps({
            "kind": "tiny-ldm", "config": self.config, "config_hash": config_hash(self.config),
            "scaling_factor": self.scaling_factor, "clip_range": self.clip_range,
        })}
        paths = [Path(f"{prefix}-{part}.safetensors") for part in ("vae", "unet")]
        for path, module in zip(paths, (self.vae, self.unet)):
            state = {k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()}
            with atomic_write(path) as f:
                f.write(save(state, metadata=meta))
        return paths

    @classmethod
    def load(cls, prefix: str | Path, *, expect_hash: str | None = None) -> TinyLatentDiffusion:
        """Load a prior written by :meth:`save` (weights cast to float32) from ``prefix``, the path
        without ``-{vae,unet}.safetensors``, or a folder holding exactly one such pair. With
        ``expect_hash`` the stored config hash must match."""
        prefix = _resolve_prefix(Path(prefix))
        files = [Path(f"{prefix}-{part}.safetensors") for part in ("vae", "unet")]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"prior weights incomplete: missing {', '.join(missing)}; train them with "
                f"`pqlib train-prior` or pass the prefix written by it")
        infos, states = [], []
        for path in files:
            try:
                with safe_open(str(path), "pt") as f:
                    infos.append(json.loads((f.metadata() or {})["pqlib_prior"]))
                    states.append({k: f.get_tensor(k).float() for k in f.keys()})
            except (SafetensorError, KeyError, ValueError) as err:
                raise CorruptFile(path, "pqlib prior file (safetensors with 'pqlib_prior' "
                                  "metadata)", "retrain it with `pqlib train-prior`") from err
        (vae_info, unet_info), config = infos, TinyConfig.from_dict(infos[0]["config"])
        if vae_info["config_hash"] != unet_info["config_hash"]:
            raise ValueError(f"{files[0]} and {files[1]} come from different trainings (config "
                             f"hashes {vae_info['config_hash']} and {unet_info['config_hash']})")
        if config.hash() != vae_info["config_hash"]:
            raise CorruptFile(files[0], "prior file", f"its stored config hash "
                              f"{vae_info['config_hash']} does not match its config ({config.hash()})")
        if expect_hash is not None and vae_info["config_hash"] != expect_hash:
            raise ValueError(f"prior {str(prefix)!r} has config hash {vae_info['config_hash']} but "
                             f"{expect_hash} was expected; retrain with `pqlib train-prior`")
        vae, unet = build_models(config, scaling_factor=vae_info["scaling_factor"])
        for module, state in zip((vae, unet), states):
            module.load_state_dict(state)
        json_path = Path(f"{prefix}.json")
        record = json.loads(json_path.read_text()) if json_path.is_file() else {}
        return cls(config, vae, unet, clip_range=vae_info["clip_range"], record=record)


def _resolve_prefix(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob("prior-*-vae.safetensors"))
        if len(found) != 1:
            raise FileNotFoundError(
                f"{str(path)!r} holds {len(found)} prior weight pairs (prior-*-vae.safetensors); "
                f"pass the file prefix instead")
        path = found[0]
    for suffix in ("-vae.safetensors", "-unet.safetensors", ".json"):
        path = path.with_name(path.name.removesuffix(suffix))
    return path
