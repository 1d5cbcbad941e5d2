"""Generative priors: tiny random models for behaviour, the shipped MNIST weights for quality."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from pqlib.checks import CorruptFile, InvalidParameter
from pqlib.data import ImageSet
from pqlib.priors import (
    PixelPrior,
    StableDiffusionPrior,
    TinyConfig,
    TinyLatentDiffusion,
    load_prior,
    train_prior,
)

SMALL = TinyConfig(vae_channels=(8, 16, 16), vae_norm_groups=4, unet_channels=(16, 32),
                   unet_norm_groups=8, unet_layers_per_block=1)


@pytest.fixture(scope="module")
def tiny():
    return TinyLatentDiffusion.random(SMALL, seed=0, scaling_factor=0.7)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 28, 28, generator=g), torch.tensor([0, 1, 2, 3, 9, 9])


# --------------------------------------------------------------------------- TinyLatentDiffusion


def test_shapes_and_range(tiny, batch):
    x, y = batch
    z = tiny.encode(x, progress=False)
    assert z.shape == (6, 4, 8, 8) and z.dtype == torch.float32
    assert tiny.latent_shape == (4, 8, 8) and tiny.image_shape == (1, 28, 28)
    out = tiny.decode(z, y, strength=0.5, steps=4, progress=False)
    assert out.shape == (6, 1, 28, 28) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    assert tiny.sample(y[:2], steps=2, progress=False).shape == (2, 1, 28, 28)
    assert tiny.id.startswith("tiny-ldm-mnist-")


def test_same_seed_same_images(tiny, batch):
    x, y = batch
    z = tiny.encode(x, progress=False)
    a = tiny.decode(z, y, strength=0.7, steps=5, seed=3, progress=False)
    b = tiny.decode(z, y, strength=0.7, steps=5, seed=3, progress=False)
    c = tiny.decode(z, y, strength=0.7, steps=5, seed=4, progress=False)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    s1 = tiny.encode(x, sample=True, seed=1, progress=False)
    assert torch.equal(s1, tiny.encode(x, sample=True, seed=1, progress=False))
    assert not torch.equal(s1, z)


def test_strength_zero_is_plain_vae_decode(tiny, batch):
    x, y = batch
    z = tiny.encode(x, progress=False)
    with torch.no_grad():
        raw = tiny.vae.decode(z / tiny.scaling_factor).sample
    expected = ((raw[..., 2:30, 2:30] + 1) / 2).clamp(0, 1)
    assert torch.equal(tiny.decode(z, y, strength=0.0, progress=False), expected)
    # int(steps * strength) == 0 also means no denoising step
    assert torch.equal(tiny.decode(z, y, strength=0.01, steps=50, progress=False), expected)


def test_strength_one_starts_from_pure_noise(tiny, batch):
    x, y = batch
    z = tiny.encode(x, progress=False)
    a = tiny.decode(z, y, strength=1.0, steps=3, seed=0, progress=False)
    b = tiny.decode(torch.randn_like(z), y, strength=1.0, steps=3, seed=0, progress=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("labels, match", [
    (torch.tensor([0, 1, 2, 3, 4, 10]), r"labels.*\[0, 10\).*10"),
    (torch.tensor([0, 1, 2, 3, 4, -1]), r"labels.*-1"),
    (torch.tensor([0, 1]), "2 entries"),
    (torch.zeros(6), "integer"),
])
def test_bad_labels(tiny, batch, labels, match):
    z = torch.zeros(6, 4, 8, 8)
    with pytest.raises(ValueError, match=match):
        tiny.decode(z, labels, progress=False)


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_bad_strength(tiny, strength):
    with pytest.raises(ValueError, match=rf"strength={strength}.*\[0, 1\]"):
        tiny.decode(torch.zeros(1, 4, 8, 8), [0], strength=strength, progress=False)


@pytest.mark.parametrize("shape, match", [
    ((2, 3, 28, 28), "3 channels"),
    ((2, 1, 32, 32), "32×32.*28×28"),
    ((1, 28, 28), r"\(N, 1, 28, 28\)"),
])
def test_bad_images(tiny, shape, match):
    with pytest.raises(ValueError, match=match):
        tiny.encode(torch.rand(shape), progress=False)


def test_bad_values_and_latents(tiny):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny.encode(torch.full((1, 1, 28, 28), 2.0))
    with pytest.raises(ValueError, match="NaN"):
        tiny.encode(torch.full((1, 1, 28, 28), float("nan")))
    with pytest.raises(ValueError, match=r"latents.*\(N, 4, 8, 8\)"):
        tiny.decode(torch.zeros(1, 4, 4, 4), [0])
    with pytest.raises(ValueError, match="steps"):
        tiny.decode(torch.zeros(1, 4, 8, 8), [0], steps=0)


def test_argument_errors_name_the_value(tiny, tmp_path):
    with pytest.raises(InvalidParameter, match="batch_size=0 should be an integer >= 1"):
        tiny.encode(torch.rand(1, 1, 28, 28), batch_size=0)
    with pytest.raises(InvalidParameter, match="guidance=nan"):
        tiny.decode(torch.zeros(1, 4, 8, 8), [0], guidance=float("nan"))
    with pytest.raises(InvalidParameter, match="StableDiffusionPrior: strength=2 "):
        StableDiffusionPrior(tmp_path / "no-such-model", strength=2)  # before any loading
    (tmp_path / "p-vae.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "p-unet.safetensors").write_bytes(b"")
    with pytest.raises(CorruptFile, match=r"p-vae\.safetensors is not a readable pqlib prior"):
        TinyLatentDiffusion.load(tmp_path / "p")


def test_save_load_roundtrip(tiny, batch, tmp_path):
    x, y = batch
    files = tiny.save(tmp_path / "prior-x")
    assert [f.name for f in files] == ["prior-x-vae.safetensors", "prior-x-unet.safetensors"]
    back = TinyLatentDiffusion.load(tmp_path / "prior-x")
    assert back.id == tiny.id and back.scaling_factor == pytest.approx(0.7)
    z = tiny.encode(x, progress=False)
    assert torch.allclose(back.encode(x, progress=False), z, atol=0.05)
    assert TinyLatentDiffusion.load(tmp_path).id == tiny.id  # a folder with one pair


def test_missing_or_incomplete_weights(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.*vae.safetensors"):
        TinyLatentDiffusion.load(tmp_path / "nothing")
    tiny.save(tmp_path / "p")
    (tmp_path / "p-unet.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*p-unet\.safetensors"):
        TinyLatentDiffusion.load(tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="pqlib train-prior --dataset mnist"):
        load_prior("mnist", config=SMALL.replace(seed=12345))


def test_check_compatible(tiny, digits):
    with pytest.raises(ValueError, match="trained on 'mnist'.*'digits'"):
        tiny.check_compatible(digits)


# --------------------------------------------------------------------------- training


def _toy_data(n=64):
    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 2, ("a", "b"), "toy")


TOY = TinyConfig(dataset="toy", image_shape=(1, 8, 8), num_classes=2, classes=("a", "b"),
                 pad_to=8, vae_channels=(8, 8, 8), vae_norm_groups=4, unet_channels=(8, 16),
                 unet_norm_groups=4, unet_layers_per_block=1, vae_epochs=2, vae_batch_size=16,
                 unet_epochs=2, unet_batch_size=16, unet_lr=2e-3, warmup_steps=2)

TRAINED = Path(__file__).parent / "data" / "prior_training.safetensors"


def _train_toy(cache: Path, **kwargs):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PQLIB_CACHE", str(cache))
        return train_prior(_toy_data(), config=TOY, progress=False, checkpoint_every=3, **kwargs)


def _interrupt_at(monkeypatch, call: int, error: BaseException) -> None:
    """Raise ``error`` inside the ``call``-th optimiser step from now (Ctrl-C, a crash)."""
    real, count = torch.optim.AdamW.step, iter(range(1, 10**9))

    def step(self, *args, **kwargs):
        if next(count) == call:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)


def _weights(prior) -> dict[str, torch.Tensor]:
    return {f"{part}.{k}": v.half() for part in ("vae", "unet")
            for k, v in getattr(prior, part).state_dict().items()}


def _machine() -> str:
    from pqlib.provenance import machine

    return json.dumps({"cpu": machine()["cpu"], "torch": torch.__version__,
                       "threads": torch.get_num_threads()})


@pytest.fixture(scope="module")
def toy_training(tmp_path_factory):
    return _train_toy(tmp_path_factory.mktemp("toy"))


def test_train_gives_the_recorded_weights(toy_training):
    """Same seed, same prior: weights and losses recorded from the code before its refactor.

    Bit-identical on the machine kind they were recorded on (CPU model, torch version,
    threads), within float tolerance elsewhere. Re-record only when a change of results is
    intended: ``python tests/test_priors.py --record``.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(TRAINED), "pt") as f:
        meta = f.metadata()
    expected, got = load_file(str(TRAINED)), _weights(toy_training.prior)
    exact = meta["machine"] == _machine()
    assert got.keys() == expected.keys()
    for key, value in got.items():
        if exact:
            assert torch.equal(value, expected[key]), f"{key} differs from the recorded training"
        else:
            torch.testing.assert_close(value, expected[key], atol=5e-3, rtol=0, msg=key)
    record = toy_training.record
    losses = json.loads(meta["losses"])
    assert [row[:2] for row in record["losses"]] == [row[:2] for row in losses]
    if exact:
        assert record["losses"] == losses
    else:
        values = [torch.tensor([x for row in rows for x in row[2:]]) for rows in (record["losses"], losses)]
        torch.testing.assert_close(*values, atol=1e-3, rtol=0)
    assert record["scaling_factor"] == pytest.approx(float(meta["scaling_factor"]),
                                                     abs=0 if exact else 1e-4)


def test_train_resume_is_exact(toy_training, tmp_path, monkeypatch):
    full = toy_training
    assert full.config_hash == TOY.hash() and full.seconds > 0
    names = sorted(p.name for p in full.files)
    assert names == sorted(f"{TOY.stem}{s}" for s in ("-vae.safetensors", "-unet.safetensors", ".json"))
    record = json.loads(full.files[-1].read_text())
    assert record["config_hash"] == TOY.hash() and record["steps"] == {"vae": 8, "unet": 8}
    again = _train_toy(full.files[0].parent.parent, out=f"{tmp_path / 'copy'}/")  # cached
    assert again.seconds == 0.0
    assert [p.parent for p in again.files] == [tmp_path / "copy"] * 3
    assert sorted(p.name for p in again.files) == names

    # crash in VAE step 5 (resumes from the checkpoint of step 3), Ctrl-C in UNet step 5
    _interrupt_at(monkeypatch, 6, RuntimeError("crash"))
    with pytest.raises(RuntimeError, match="crash"):
        _train_toy(tmp_path)
    assert (tmp_path / "priors" / TOY.hash() / "checkpoint.pt").is_file()
    _interrupt_at(monkeypatch, 8 - 3 + 6, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _train_toy(tmp_path)
    monkeypatch.undo()
    resumed = _train_toy(tmp_path)
    assert resumed.record["sessions"] == 3
    for a, b in zip(_weights(full.prior).values(), _weights(resumed.prior).values()):
        assert torch.equal(a, b)
    assert resumed.record["losses"] == full.record["losses"]
    assert not (tmp_path / "priors" / TOY.hash()).exists()  # checkpoint cleaned up


def test_train_config_errors():
    with pytest.raises(ValueError, match="unknown prior config keys.*bogus"):
        train_prior(_toy_data(), config={"bogus": 1}, progress=False)
    with pytest.raises(ValueError, match=r"images \(1, 28, 28\).*\(1, 8, 8\)"):
        train_prior(_toy_data(), config=SMALL, progress=False)


# --------------------------------------------------------------------------- PixelPrior


def test_pixel_prior_is_identity(batch):
    x, y = batch
    prior = PixelPrior((1, 28, 28), num_classes=10)
    assert torch.equal(prior.encode(x), x) and prior.latent_shape == (1, 28, 28)
    assert torch.equal(prior.decode(x * 3 - 1, y, strength=0.7), (x * 3 - 1).clamp(0, 1))
    assert prior.name == "pixel" and prior.id.startswith("pixel-")
    with pytest.raises(ValueError, match="strength"):
        prior.decode(x, y, strength=1.5)
    with pytest.raises(ValueError, match="labels"):
        prior.decode(x, torch.full((6,), 10))


# --------------------------------------------------------------------------- Stable Diffusion


def _tiny_sd_pipeline(tmp_path=None):
    """Tiny randomly initialised SD img2img components (diffusers' own test recipe)."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        norm_num_groups=4, attention_head_dim=2)
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=16)
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=16, intermediate_size=32,
        num_attention_heads=2, num_hidden_layers=2, vocab_size=100, max_position_embeddings=77))
    tokenizer = None
    if tmp_path is not None:  # a character-level CLIP vocabulary written here: no download
        vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
        for ch in "abcdefghijklmnopqrstuvwxyz0123456789,":
            vocab[ch] = len(vocab)
            vocab[ch + "</w>"] = len(vocab)
        (tmp_path / "vocab.json").write_text(json.dumps(vocab))
        (tmp_path / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"),
                                  model_max_length=77)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1)
    return StableDiffusionImg2ImgPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _embed(prompts):
    """Deterministic fake text embeddings (n, 77, 16): one per prompt, no tokenizer."""
    out = []
    for p in prompts:
        g = torch.Generator().manual_seed(sum(map(ord, p)))
        out.append(torch.randn(77, 16, generator=g))
    return torch.stack(out)


def test_stable_diffusion_prior_from_components():
    prior = StableDiffusionPrior.from_pipeline(_tiny_sd_pipeline(), class_names=["cat", "dog"],
                                               embed=_embed, steps=2)
    assert prior.image_shape == (3, 16, 16) and prior.latent_shape == (4, 8, 8)
    assert prior.strength == 0.7 and prior.default_guidance == 8.0
    assert prior.negative_prompt == "cartoon, anime, painting" and prior.prompts([1]) == ["dog"]
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1])
    z = prior.encode(x, progress=False)
    assert z.shape == (3, 4, 8, 8)
    a = prior.decode(z, y, seed=0, progress=False)
    assert a.shape == (3, 3, 16, 16) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, prior.decode(z, y, seed=0, progress=False))
    assert not torch.equal(a, prior.decode(z, y, seed=1, progress=False))
    with torch.no_grad():
        plain = ((prior.vae.decode(z / prior.scaling_factor).sample + 1) / 2).clamp(0, 1)
    assert torch.equal(prior.decode(z, y, strength=0.0, progress=False), plain)
    assert prior.decode(z, y, strength=1.0, steps=2, progress=False).shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match=r"labels.*\[0, 2\)"):
        prior.decode(z, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="1 channels but this prior takes 3"):
        prior.encode(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="class_names"):
        StableDiffusionPrior.from_pipeline(prior.pipe, embed=_embed).decode(z, y, progress=False)


def test_stable_diffusion_prior_from_directory(tmp_path):
    pipe = _tiny_sd_pipeline(tmp_path)
    pipe.save_pretrained(tmp_path / "sd")
    prior = StableDiffusionPrior(tmp_path / "sd", class_names=["cat", "dog"], steps=2)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = prior.decode(z, torch.tensor([0, 1]), seed=0, progress=False)
    assert out.shape == (2, 3, 16, 16)
    assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, prior.decode(z, torch.tensor([0, 1]), seed=0, progress=False))


def test_stable_diffusion_model_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StableDiffusionPrior(tmp_path / "no-such-model")
    pipe = _tiny_sd_pipeline(tmp_path)
    pipe.save_pretrained(tmp_path / "sd")
    for part in ("unet", "tokenizer"):
        for f in (tmp_path / "sd" / part).iterdir():
            f.unlink()
        (tmp_path / "sd" / part).rmdir()
    (tmp_path / "sd" / "vae" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"incomplete: missing vae/config\.json, unet/, tokenizer/"):
        StableDiffusionPrior(tmp_path / "sd")


# --------------------------------------------------------------------------- shipped MNIST weights


@pytest.fixture(scope="module")
def mnist_prior():
    return load_prior("mnist")


def test_shipped_mnist_prior_quality(mnist_prior):
    """Small-sample versions of the acceptance bars (benchmarks/prior_quality.py runs the full ones)."""
    from pqlib.data import load
    from pqlib.train import train_teacher

    prior = mnist_prior
    assert prior.record["config_hash"] == prior.tiny_config.hash()
    teacher = train_teacher("mnist", "convnet_bn", progress=False).model.eval()
    test, train = load("mnist", "test"), load("mnist", "train")

    def agree(images, labels):
        with torch.no_grad():
            return 100.0 * (teacher(images).argmax(1) == labels).float().mean().item()

    x, y = test.images[:200], test.labels[:200]
    assert agree(prior.decode(prior.encode(x, progress=False), y, strength=0.0), y) >= 97.0

    classes = torch.arange(10).repeat_interleave(10)
    assert agree(prior.sample(classes, seed=0, progress=False), classes) >= 90.0

    idx = torch.cat([torch.nonzero(train.labels == c)[:50, 0] for c in range(10)])
    z = prior.encode(train.images[idx], progress=False)
    means = torch.stack([z[train.labels[idx] == c].mean(0) for c in range(10)])
    edited = prior.decode(means[classes], classes, strength=0.7, seed=0, progress=False)
    assert agree(edited, classes) >= 90.0


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    from safetensors.torch import save_file

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        result = _train_toy(Path(tmp))
    save_file(_weights(result.prior), str(TRAINED),
              metadata={"machine": _machine(), "losses": json.dumps(result.record["losses"]),
                        "scaling_factor": repr(result.record["scaling_factor"])})
    print(result.record["losses"])
