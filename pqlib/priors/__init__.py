"""Generative priors: ``encode(images) -> latents`` and ``decode(latents, labels, strength) -> images``.

D4M and DDOQ are pushforwards: they quantize each class's latents and map the quantized
points back to images with a diffusion model (img2img / SDEdit). Every prior here has the
interface of :class:`~pqlib.priors.base.Prior`:

``TinyLatentDiffusion``
    diffusers ``AutoencoderKL`` + class-conditional ``UNet2DModel`` + DDIM, small enough to
    train on a laptop CPU; :func:`load_prior` returns the trained MNIST model shipped with
    pqlib, :func:`train_prior` (``pqlib train-prior``) trains one.
``StableDiffusionPrior``
    diffusers' ``StableDiffusionImg2ImgPipeline`` from a local model directory, with D4M's
    defaults (strength 0.7, guidance 8, 50 steps, negative prompt, class-name prompts).
``PixelPrior``
    the identity, for pixel-space ablations.

Example
-------
>>> from pqlib.priors import load_prior                      # doctest: +SKIP
>>> prior = load_prior("mnist")
>>> z = prior.encode(data.images[:100])                      # (100, 4, 8, 8)
>>> x = prior.decode(z, data.labels[:100], strength=0.7)     # (100, 1, 28, 28) in [0, 1]
"""

from __future__ import annotations

import warnings
from pathlib import Path

from tqdm import TqdmWarning

# diffusers imports tqdm.auto, which warns (with its file path) in a Jupyter kernel without
# ipywidgets; pqlib draws plain tqdm bars, so import it once here with that warning off.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", TqdmWarning)
    import tqdm.auto  # noqa: F401

from ..cache import cache_dir
from .base import Prior
from .pixel import PixelPrior
from .stable import StableDiffusionPrior, check_model_dir
from .tiny import TinyConfig, TinyLatentDiffusion, default_config
from .training import PriorTraining, train_prior

__all__ = ["Prior", "TinyLatentDiffusion", "TinyConfig", "StableDiffusionPrior", "PixelPrior",
           "load_prior", "train_prior", "PriorTraining", "default_config", "check_model_dir",
           "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def load_prior(dataset: str = "mnist", *, path: str | Path | None = None,
               config: TinyConfig | None = None) -> TinyLatentDiffusion:
    """The trained :class:`TinyLatentDiffusion` for ``dataset``.

    Looks for the weights of ``config`` (default: :func:`default_config` of ``dataset``) by
    their config hash, first among the weights shipped in ``pqlib/weights``, then in
    ``$PQLIB_CACHE/priors`` (where ``pqlib train-prior`` puts them). ``path`` loads a given
    file prefix (or folder) instead.

    Raises
    ------
    FileNotFoundError
        no trained weights for this config; the message gives the command that trains them
    ValueError
        the files found carry another config hash than expected
    """
    if path is not None:
        return TinyLatentDiffusion.load(path)
    cfg = config or default_config(dataset)
    folders = (WEIGHTS_DIR, cache_dir("priors"))
    for folder in folders:
        if any(folder.glob(f"{cfg.stem}-*.safetensors")):
            return TinyLatentDiffusion.load(folder / cfg.stem, expect_hash=cfg.hash())
    raise FileNotFoundError(
        f"no trained prior for {dataset!r} (config hash {cfg.hash()}, files "
        f"{cfg.stem}-*.safetensors) in {' or '.join(map(str, folders))}; train it with "
        f"`pqlib train-prior --dataset {dataset}` (about 40 min on 2 CPU cores for MNIST)")
