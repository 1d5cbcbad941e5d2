"""Class-sharded work on a Dask cluster: the same result as here, and a killed worker loses
nothing. (Sweeps on Dask: tests/test_sweep.py.)"""

import os
from contextlib import contextmanager, nullcontext

import pytest
import torch

from pqlib.executor import executor
from pqlib.methods import distill
from pqlib.methods.common import per_class
from pqlib.priors import TinyConfig, TinyLatentDiffusion

SMALL = TinyConfig(vae_channels=(8, 16, 16), vae_norm_groups=4, unet_channels=(16, 32),
                   unet_norm_groups=8, unet_layers_per_block=1)


@pytest.fixture(scope="module")
def cluster():
    with executor("dask", workers=2) as client:
        yield client


@contextmanager
def one_thread():
    """As a Dask worker computes: one torch thread. (Float kernels round by thread count, so
    bit-identity holds between runs with the same threads per process.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _same(a, b):
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.weights, b.weights)
    assert a.report.to_dict()["options"] == b.report.to_dict()["options"]


@pytest.mark.parametrize("method", ["ddoq", "d4m"])
def test_ddoq_on_a_cluster_equals_the_serial_run(method, cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("PQLIB_CACHE", str(tmp_path))  # workers and here compute, nothing cached
    data = __import__("pqlib").data.load("mnist").subset(torch.arange(300))
    prior = TinyLatentDiffusion.random(SMALL, seed=0, scaling_factor=0.7)
    kw = dict(seed=3, prior=prior, steps=3, progress=False)
    with one_thread():
        here = distill(method, data, 2, **kw)
    there = distill(method, data, 2, pool=cluster, **kw)
    _same(here, there)
    assert here.report.w2_latent == there.report.w2_latent
    assert [q.points.tolist() for q in here.report.quantizers] == \
        [q.points.tolist() for q in there.report.quantizers]


@pytest.mark.parametrize("weights", ["barycenter", "voronoi"])
def test_wmdd_on_a_cluster_equals_the_serial_run(weights, cluster, digits, digits_teacher):
    kw = dict(seed=1, teacher=digits_teacher, iterations=4, weights=weights, progress=False)
    with one_thread():
        here = distill("wmdd", digits, 2, **kw)
    there = distill("wmdd", digits, 2, pool=cluster, **kw)
    _same(here, there)
    assert here.report.w2_feature == there.report.w2_feature
    assert here.report.w2_feature_synthesized == there.report.w2_feature_synthesized


@pytest.mark.parametrize("workers", [2, 1])
def test_a_killed_worker_loses_and_duplicates_nothing(workers, cluster, digits, tmp_path):
    """The task of class 3 kills its worker process the first time it runs; the class is run
    again on another worker and every class's result arrives once, in class order. (Results
    the dead worker held are computed again: class tasks must be idempotent, as the caches are.)
    With one worker, the shared arguments sent to the workers die with it too: sent again."""
    log = tmp_path / "done"

    def work(part, c, marker):
        if c == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process dies mid-task
        with open(log, "a") as f:
            f.write(f"{c}\n")
        return c, int(part.labels.unique().item()), len(part)

    with (executor("dask", workers=1) if workers == 1 else nullcontext(cluster)) as pool:
        out = per_class(work, digits, str(tmp_path / "killed"), pool=pool, progress=False)
    assert (tmp_path / "killed").exists()
    assert out == [(c, c, n) for c, n in enumerate(digits.class_counts().tolist())]
    assert {int(line) for line in log.read_text().split()} == set(range(10))


def test_a_lazy_folder_is_decoded_by_the_workers(cluster, tmp_path):
    """From a lazy image folder each task decodes its own class: the same set as here, and the
    machine that submits decodes nothing."""
    import numpy as np
    from PIL import Image

    from pqlib.data import load
    from pqlib.imagefolder import LazyImageFolder

    rng = np.random.default_rng(0)
    for c in "abc":
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    lazy = load(f"imagefolder:{tmp_path}", lazy=True)
    here = distill("ddoq", lazy, 2, seed=0, prior="pixel", progress=False)
    decoded = []
    original = LazyImageFolder.subset
    LazyImageFolder.subset = lambda self, index: decoded.append(index) or original(self, index)
    try:
        there = distill("ddoq", lazy, 2, seed=0, prior="pixel", progress=False, pool=cluster)
    finally:
        LazyImageFolder.subset = original
    _same(here, there)
    assert decoded == []  # in this process: the workers decoded every class


def test_the_stable_diffusion_recipe_on_a_cluster_equals_the_serial_run(cluster, tmp_path):
    """The GPU recipe's prior (tiny random Stable Diffusion components here) goes to the
    workers once and decodes there: the same set as one process decoding class after class."""
    from test_cli import _folder
    from test_priors import _tiny_sd_pipeline

    from pqlib.data import load
    from pqlib.priors import StableDiffusionPrior

    (tmp_path / "tok").mkdir()
    _tiny_sd_pipeline(tmp_path / "tok").save_pretrained(tmp_path / "sd")
    data = load(f"imagefolder:{_folder(tmp_path / 'imgs', ['cat', 'dog', 'fox'], 5, 16)}")
    prior = StableDiffusionPrior(tmp_path / "sd", class_names=data.classes, device="cpu")
    kw = dict(seed=2, prior=prior, steps=2, progress=False)
    with one_thread():
        here = distill("ddoq", data, 2, **kw)
    there = distill("ddoq", data, 2, pool=cluster, **kw)
    _same(here, there)
    assert here.report.stage_seconds.keys() == there.report.stage_seconds.keys() == {
        "encode", "quantize", "decode"}


def test_wmdd_synthesis_blocks_on_a_cluster_equal_the_serial_run(cluster, digits, digits_teacher):
    """class_block on a cluster: each block's synthesis is a task (seeded seed + b), with the
    same images, weights and loss history as the blocks one after the other here."""
    kw = dict(seed=0, teacher=digits_teacher, iterations=3, class_block=4, progress=False)
    with one_thread():
        here = distill("wmdd", digits, 2, **kw)
    there = distill("wmdd", digits, 2, pool=cluster, **kw)
    _same(here, there)
    assert here.report.loss_history == there.report.loss_history


def test_class_shards_are_stored_and_resumed_class_by_class(digits, digits_teacher, tmp_path,
                                                            monkeypatch):
    """Latents, teacher features and BatchNorm statistics are cached one safetensors file per
    class; after losing some shards (an interrupted run), only those classes are computed again
    and the result is unchanged."""
    from pqlib.priors import PixelPrior

    monkeypatch.setenv("PQLIB_CACHE", str(tmp_path))
    prior = PixelPrior(digits.image_shape, num_classes=digits.num_classes)
    encoded = []
    encode = prior.encode
    monkeypatch.setattr(prior, "encode", lambda x, **k: encoded.append(len(x)) or encode(x, **k))
    first = distill("ddoq", digits, 2, prior=prior, progress=False)
    wmdd = distill("wmdd", digits, 1, teacher=digits_teacher, iterations=1, progress=False)
    shards = {kind: sorted((tmp_path / kind).glob("*.safetensors"))
              for kind in ("latents", "teacher_pass")}
    assert {kind: len(files) for kind, files in shards.items()} == dict.fromkeys(shards, 10)
    assert encoded == digits.class_counts().tolist()
    for path in shards["latents"][:3] + shards["teacher_pass"][:2]:
        path.unlink()
    encoded.clear()
    again = distill("ddoq", digits, 2, prior=prior, progress=False)
    assert len(encoded) == 3 and set(encoded) <= set(digits.class_counts().tolist())
    assert torch.equal(again.images, first.images) and torch.equal(again.weights, first.weights)
    wmdd_again = distill("wmdd", digits, 1, teacher=digits_teacher, iterations=1, progress=False)
    assert torch.equal(wmdd_again.images, wmdd.images)
    assert len(list((tmp_path / "teacher_pass").glob("*.safetensors"))) == 10
