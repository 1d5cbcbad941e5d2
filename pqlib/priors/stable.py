"""``StableDiffusionPrior``: D4M's decoder, diffusers' ``StableDiffusionImg2ImgPipeline`` from a local folder.

Nothing is ever downloaded: the pipeline is loaded with ``local_files_only=True`` from a
directory in the diffusers layout (``model_index.json``, ``vae/``, ``unet/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``), which is checked before loading.

D4M's generation settings are the defaults: strength 0.7, guidance 8, 50 scheduler steps
(→ 35 denoising steps), negative prompt ``"cartoon, anime, painting"``, and the class name
itself as the prompt (D4M's ``gen_syn_image.py`` passes the label text as ``prompt``);
``prompt_template`` changes that (e.g. ``"a photo of a {name}"``). The scheduler is whatever
the model directory ships (PNDM for SD v1.5, as in D4M).

Img2img accepts 4-channel latents as ``image`` (they skip the VAE encoder), so latents from
:meth:`StableDiffusionPrior.encode` — ``vae.encode(2x − 1)`` posterior mean (or a seeded
sample) × ``vae.config.scaling_factor`` — go straight in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..checks import Int, InvalidParameter, Optional, Real, check, checked
from .base import Prior, batched, check_images, checked_encode, image_generators

__all__ = ["StableDiffusionPrior", "check_model_dir", "D4M_NEGATIVE_PROMPT"]

D4M_NEGATIVE_PROMPT = "cartoon, anime, painting"

def check_model_dir(model_dir: str | Path, *, need_text: bool = True) -> Path:
    """Check that ``model_dir`` holds a Stable Diffusion pipeline in the diffusers layout.

    Raises FileNotFoundError listing every missing part (config files and weight files of
    ``vae``, ``unet``, ``text_encoder``, the ``tokenizer`` and ``scheduler`` folders).
    With ``need_text=False`` the text encoder and tokenizer may be absent (prompts are then
    embedded by a user-supplied ``embed``).
    """
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"Stable Diffusion model directory {str(path)!r} does not exist; download a diffusers-"
            f"format model (e.g. stable-diffusion-v1-5) on a machine with network access and pass "
            f"its local path (pqlib never downloads weights)")
    missing = [] if (path / "model_index.json").is_file() else ["model_index.json"]
    model = (("config.json",), ("*.safetensors", "*.bin"))  # each: one of these patterns
    needed = {"vae": model, "unet": model, "scheduler": (("scheduler_config.json",),)}
    if need_text:
        needed.update(text_encoder=model, tokenizer=(("*",),))
    for sub, wanted in needed.items():
        if not (path / sub).is_dir():
            missing.append(f"{sub}/")
            continue
        missing += [f"{sub}/{' or '.join(patterns)}" for patterns in wanted
                    if not any(any((path / sub).glob(p)) for p in patterns)]
    if missing:
        raise FileNotFoundError(
            f"Stable Diffusion model directory {str(path)!r} is incomplete: missing "
            f"{', '.join(missing)}; it must be in the diffusers layout (pipeline.save_pretrained)")
    return path


class StableDiffusionPrior(Prior):
    """Stable Diffusion img2img as a prior: D4M's encoder and decoder.

    Parameters
    ----------
    model_dir : str or Path
        Local diffusers-format Stable Diffusion directory (checked before loading).
    device : str, optional
        Default ``"cuda"`` if available, else ``"cpu"``.
    dtype : torch.dtype, optional
        Default float16 on CUDA, float32 on CPU.
    class_names : sequence of str, optional
        Names used in the prompts, ``class_names[label]``; needed by :meth:`decode`.
    strength, guidance, steps : float, float, int
        img2img defaults (D4M: 0.7, 8.0, 50).
    negative_prompt : str or None
        D4M's ``"cartoon, anime, painting"``; ``None`` for none.
    prompt_template : str
        Prompt for a class; ``{name}`` is replaced by the class name.
    embed : callable, optional
        ``embed(prompts) -> (n, seq, dim)`` tensor used instead of the pipeline's tokenizer and
        text encoder (then those may be missing from ``model_dir``).
    resolution : int, optional
        Image side in pixels; default ``unet.config.sample_size × vae_scale_factor``.

    Notes
    -----
    Use :meth:`from_pipeline` to wrap an already built pipeline (e.g. tiny test components).
    """

    name = "stable-diffusion"

    def __init__(self, model_dir: str | Path, *, device=None, dtype=None, **settings):
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)

        def open_pipeline(need_text: bool):
            from diffusers import StableDiffusionImg2ImgPipeline

            path = check_model_dir(model_dir, need_text=need_text)
            pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
                str(path), local_files_only=True, safety_checker=None, feature_extractor=None,
                requires_safety_checker=False, torch_dtype=dtype,
                **({} if need_text else {"text_encoder": None, "tokenizer": None}))
            return pipe.to(device), str(path)

        self._setup(open_pipeline, **settings)

    @classmethod
    def from_pipeline(cls, pipeline, *, source: str = "components",
                      **settings) -> StableDiffusionPrior:
        """Wrap a built ``StableDiffusionImg2ImgPipeline`` (same settings as the constructor)."""
        self = cls.__new__(cls)
        self._setup(lambda need_text: (pipeline, source), **settings)
        return self

    def _setup(self, open_pipeline, *, class_names: Sequence[str] | None = None,
               strength: float = 0.7, guidance: float = 8.0, steps: int = 50,
               negative_prompt: str | None = D4M_NEGATIVE_PROMPT, prompt_template: str = "{name}",
               embed: Callable[[list[str]], torch.Tensor] | None = None,
               resolution: int | None = None) -> None:
        """Check the settings, then ``open_pipeline(need_text) -> (pipeline, source)`` and wrap it."""
        for name, value, constraint in (("strength", strength, Real(0, 1)), ("steps", steps, Int(1)),
                                        ("guidance", guidance, Real()),
                                        ("resolution", resolution, Int(1) | Optional)):
            check(name, value, constraint, where="StableDiffusionPrior")
        if "{name}" not in prompt_template:
            raise InvalidParameter(f"prompt_template={prompt_template!r} must contain '{{name}}'")
        pipe, source = open_pipeline(embed is None)
        if embed is None and (pipe.tokenizer is None or pipe.text_encoder is None):
            raise InvalidParameter("the pipeline has no tokenizer/text_encoder; pass "
                                   "embed=callable(prompts)")
        factor = pipe.vae_scale_factor
        side = resolution or pipe.unet.config.sample_size * factor
        if side % factor:
            raise InvalidParameter(f"resolution={side} must be a multiple of the VAE factor {factor}")
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.vae, self.device, self.dtype = pipe, pipe.vae, pipe.vae.device, pipe.vae.dtype
        self.strength, self.default_guidance, self.steps = float(strength), float(guidance), int(steps)
        self.negative_prompt, self.prompt_template = negative_prompt, prompt_template
        self.class_names = tuple(class_names) if class_names is not None else None
        self.num_classes = len(self.class_names) if self.class_names is not None else None
        self._embed, self._cache = embed, {}
        self.image_shape = (pipe.vae.config.in_channels, side, side)
        self.latent_shape = (pipe.vae.config.latent_channels, side // factor, side // factor)
        self.config = {"source": source, "resolution": side, "strength": self.strength,
                       "guidance": self.default_guidance, "steps": self.steps,
                       "negative_prompt": negative_prompt, "prompt_template": prompt_template,
                       "scheduler": type(pipe.scheduler).__name__,
                       "dtype": str(self.dtype).replace("torch.", "")}

    def prompts(self, labels) -> list[str]:
        """The prompt of each label."""
        if self.class_names is None:
            raise ValueError("StableDiffusionPrior needs class_names to build prompts; pass "
                             "class_names=data.classes")
        return [self.prompt_template.format(name=self.class_names[int(y)]) for y in labels]

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings ``(n, seq, dim)`` of ``prompts`` (cached per prompt)."""
        todo = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if todo:
            if self._embed is not None:
                emb = torch.as_tensor(self._embed(todo))
            else:
                with torch.no_grad():
                    emb = self.pipe.encode_prompt(todo, self.device, 1, False)[0]
            if emb.ndim != 3 or emb.shape[0] != len(todo):
                raise ValueError(f"embed returned shape {tuple(emb.shape)} for {len(todo)} prompts; "
                                 f"expected ({len(todo)}, seq, dim)")
            self._cache.update(zip(todo, emb.to(self.device, self.dtype)))
        return torch.stack([self._cache[p] for p in prompts])

    @checked_encode
    @torch.no_grad()
    def encode(self, images: torch.Tensor, *, sample: bool = False, seed: int = 0,
               batch_size: int = 8, progress: bool = True) -> torch.Tensor:
        """``vae.encode(2x − 1)`` posterior mean (or seeded sample) × scaling factor.

        images : (N, 3, H, W) in [0, 1] at the prior's resolution → latents (N, 4, H/8, W/8)
        float32 on the CPU.
        """
        images = check_images(images, self.image_shape)
        n = len(images)
        gens = image_generators(seed, n) if sample else None

        def encode(rows: slice) -> torch.Tensor:
            dist = self.vae.encode((images[rows] * 2 - 1).to(self.device, self.dtype)).latent_dist
            z = dist.mean if gens is None else dist.sample(generator=gens[rows])
            return (z * self.scaling_factor).float().cpu()

        return batched(encode, n, batch_size, self.latent_shape, desc="encode",
                       disable=not progress or n <= batch_size)

    @checked(strength=Real(0, 1) | Optional, steps=Int(1) | Optional, guidance=Real() | Optional,
             batch_size=Int(1))
    @torch.no_grad()
    def decode(self, latents: torch.Tensor, labels, *, strength: float | None = None,
               steps: int | None = None, guidance: float | None = None, seed: int = 0,
               batch_size: int = 4, progress: bool = True) -> torch.Tensor:
        """Img2img from scaled latents with class-name prompts (D4M's decoder).

        Parameters
        ----------
        latents : (N, 4, H/8, W/8), scaled by ``vae.config.scaling_factor``
        labels : (N,) class indices into ``class_names``
        strength, steps, guidance : default to the prior's (D4M: 0.7, 50, 8.0). Strength 0 is
            a plain VAE decode; strength 1 starts from pure noise (latents replaced by zeros,
            so the first timestep sees only noise)
        seed : one generator per image derived from it (independent of ``batch_size``)

        Returns
        -------
        images : float32 (N, 3, H, W) in [0, 1], on the CPU
        """
        strength = self.strength if strength is None else strength
        steps = self.steps if steps is None else steps
        latents, labels, guidance = self._decode_inputs(latents, labels, guidance)
        n = len(latents)
        gens = image_generators(seed, n)
        denoise = min(int(steps * strength), steps) > 0
        prompts = self.prompts(labels) if denoise else None
        neg = self.embed([self.negative_prompt or ""]) if denoise and guidance > 1 else None

        def decode(rows: slice) -> torch.Tensor:
            z = latents[rows].to(self.device, self.dtype)
            if not denoise:
                return (self.vae.decode(z / self.scaling_factor).sample.float().cpu()
                        .add(1).div(2).clamp(0, 1))
            return self.pipe(
                prompt_embeds=self.embed(prompts[rows]),
                negative_prompt_embeds=None if neg is None else neg.expand(len(z), -1, -1),
                image=torch.zeros_like(z) if strength >= 1.0 else z, strength=float(strength),
                guidance_scale=guidance, num_inference_steps=steps, generator=gens[rows],
                output_type="pt",
            ).images.float().cpu().clamp(0, 1)

        return batched(decode, n, batch_size, self.image_shape, desc=f"decode s={strength:g}",
                       disable=not progress)
