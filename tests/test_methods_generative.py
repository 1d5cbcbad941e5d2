"""D4M, DDOQ, WMDD and DM: shapes, weights, the DDOQ/D4M identity, WMDD's loss, bad inputs.

The pushforward methods run on a 300-image slice of MNIST with a small randomly initialised
latent diffusion prior (fast, behaviour only); WMDD and DM run on scikit-learn digits with a
small digits teacher.
"""

import pytest
import torch

from pqlib.data import load
from pqlib.methods import distill
from pqlib.priors import PixelPrior, TinyConfig, TinyLatentDiffusion

SMALL = TinyConfig(vae_channels=(8, 16, 16), vae_norm_groups=4, unet_channels=(16, 32),
                   unet_norm_groups=8, unet_layers_per_block=1)
FAST = dict(steps=4, progress=False)


@pytest.fixture(scope="module")
def mnist_slice():
    return load("mnist").subset(torch.arange(300))


@pytest.fixture(scope="module")
def prior():
    return TinyLatentDiffusion.random(SMALL, seed=0, scaling_factor=0.7)


def _check_set(d, ipc, num_classes, image_shape):
    assert d.images.shape == (ipc * num_classes, *image_shape)
    assert torch.bincount(d.labels, minlength=num_classes).tolist() == [ipc] * num_classes
    sums = torch.zeros(num_classes).index_add_(0, d.labels, d.weights)
    torch.testing.assert_close(sums, torch.ones(num_classes))
    assert (d.weights >= 0).all() and 0 <= d.images.min() and d.images.max() <= 1


@pytest.mark.parametrize("method", ["d4m", "ddoq"])
def test_pushforward_methods_shapes_and_meta(method, mnist_slice, prior):
    d = distill(method, mnist_slice, 3, seed=0, prior=prior, **FAST)
    _check_set(d, 3, 10, (1, 28, 28))
    assert set(d.report.stage_seconds) == {"encode", "quantize", "decode"}
    w2 = d.report.w2_latent
    assert w2.weighted > 0 and w2.uniform > 0 and d.report.prior == prior.id
    assert d.report.method == method and len(d.report.quantizers) == 10
    if method == "d4m":
        torch.testing.assert_close(d.weights, torch.full((30,), 1 / 3))


def test_ddoq_uniform_equals_d4m(mnist_slice, prior):
    a = distill("ddoq", mnist_slice, 4, seed=2, prior=prior, weights="uniform", **FAST)
    b = distill("d4m", mnist_slice, 4, seed=2, prior=prior, **FAST)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.weights, b.weights)
    assert b.report.method == "d4m" and b.report.options == {"prior": prior.id, "steps": 4}


def test_d4m_has_ddoqs_options_but_not_its_weights(mnist_slice, prior):
    """The options are DDOQ's, written once: CLVQ's steps and batch reach both; D4M's weights
    are fixed."""
    kw = dict(seed=0, prior=prior, quantizer="clvq", clvq_batch=16, **FAST)
    a = distill("d4m", mnist_slice, 2, clvq_steps=3, **kw)
    b = distill("d4m", mnist_slice, 2, clvq_steps=40, **kw)
    assert [len(q.points) for q in a.report.quantizers] == [2] * 10
    assert not torch.equal(a.report.quantizers[0].points, b.report.quantizers[0].points)
    with pytest.raises(ValueError, match=r"method 'd4m' has no option\(s\) \['weights'\]"):
        distill("d4m", mnist_slice, 2, weights="voronoi", **FAST)
    with pytest.raises(ValueError, match="clvq_batch=0 should be an integer >= 1"):
        distill("ddoq", mnist_slice, 2, prior=prior, clvq_batch=0, **FAST)


def test_ddoq_voronoi_weights_lower_latent_w2(mnist_slice, prior):
    d = distill("ddoq", mnist_slice, 5, seed=0, prior=prior, **FAST)
    w2 = d.report.w2_latent
    # Voronoi masses are optimal for the codebook: weighted W2 equals the distortion and
    # never exceeds the uniform-weight W2, class by class
    for wt, un in zip(w2.per_class_weighted, w2.per_class_uniform):
        assert wt <= un + 1e-9
    assert w2.weighted < w2.uniform
    assert w2.weighted == pytest.approx(w2.voronoi, rel=1e-5)
    assert d.report.method_w2 == ("latent", w2) and w2.reduction_pct > 0
    assert not torch.allclose(d.weights, torch.full_like(d.weights, 0.2))


def test_ddoq_sqrt_weights_and_clvq(mnist_slice, prior):
    v = distill("ddoq", mnist_slice, 3, seed=0, prior=prior, **FAST)
    s = distill("ddoq", mnist_slice, 3, seed=0, prior=prior, weights="sqrt", **FAST)
    # √mass flattens the weights towards uniform
    assert s.weights.std() < v.weights.std()
    c = distill("ddoq", mnist_slice, 3, seed=0, prior=prior, quantizer="clvq", **FAST)
    _check_set(c, 3, 10, (1, 28, 28))


def test_pushforward_in_pixel_space(mnist_slice):
    d = distill("ddoq", mnist_slice, 2, seed=0, prior="pixel", progress=False)
    _check_set(d, 2, 10, (1, 28, 28))
    assert d.report.latent_dim == 28 * 28


def test_pushforward_bad_inputs(mnist_slice, prior, digits):
    with pytest.raises(ValueError, match="weights='equal' should be one of"):
        distill("ddoq", mnist_slice, 2, prior=prior, weights="equal", **FAST)
    with pytest.raises(ValueError, match="quantizer='faiss' should be one of"):
        distill("ddoq", mnist_slice, 2, prior=prior, quantizer="faiss", **FAST)
    with pytest.raises(ValueError, match="was trained on 'mnist' but the data is 'digits'"):
        distill("d4m", digits, 2, prior=prior, **FAST)
    smallest = int(mnist_slice.class_counts().min())
    with pytest.raises(ValueError, match=f"ipc={smallest + 1} is larger than class"):
        distill("ddoq", mnist_slice, smallest + 1, prior=prior, **FAST)
    with pytest.raises(ValueError, match="strength"):
        distill("d4m", mnist_slice, 1, prior=prior, strength=1.5, **FAST)


def test_pixel_prior_rejects_other_shapes(digits):
    with pytest.raises(ValueError, match="takes images"):
        distill("d4m", digits, 1, prior=PixelPrior((1, 28, 28)), progress=False)


@pytest.mark.parametrize("learn_weights", [True, False])
def test_wmdd_shapes_weights_and_loss_decreases(digits, digits_teacher, learn_weights):
    d = distill("wmdd", digits, 3, seed=0, teacher=digits_teacher, iterations=60,
                learn_weights=learn_weights, progress=False)
    _check_set(d, 3, 10, (1, 8, 8))
    first, last = d.report.loss_first_last
    assert last < 0.5 * first
    if not learn_weights:
        torch.testing.assert_close(d.weights, torch.full((30,), 1 / 3))
    else:
        assert d.report.w2_feature.weighted <= d.report.w2_feature.uniform + 1e-9
    assert d.report.method_w2[0] == "feature" and len(d.report.barycenters) == 10


def test_wmdd_bn_statistics_cache_equals_direct_computation(digits, digits_teacher):
    from pqlib.methods.wmdd import cached_class_bn_statistics, class_bn_statistics

    first = cached_class_bn_statistics(digits_teacher, digits)
    again = cached_class_bn_statistics(digits_teacher, digits)  # from the cache file
    assert len(first) == digits.num_classes
    for c in (0, 7):
        direct = class_bn_statistics(digits_teacher, digits.of_class(c))
        assert len(first[c]) == len(direct) >= 2
        for (m1, v1), (m2, v2), (m0, v0) in zip(first[c], again[c], direct):
            torch.testing.assert_close(m1, m0)
            torch.testing.assert_close(v1, v0)
            assert torch.equal(m1, m2) and torch.equal(v1, v2)


def test_wmdd_needs_matching_batchnorm_teacher(digits, mnist_slice, digits_teacher):
    with pytest.raises(ValueError, match="was trained on 'digits'"):
        distill("wmdd", mnist_slice, 1, teacher=digits_teacher, iterations=1, progress=False)
    with pytest.raises(ValueError, match="init='zeros' should be one of"):
        distill("wmdd", digits, 1, teacher=digits_teacher, init="zeros", progress=False)


def test_dm_moves_images_towards_class_statistics(digits):
    d = distill("dm", digits, 2, seed=0, iterations=15, real_batch=32, progress=False)
    _check_set(d, 2, 10, (1, 8, 8))
    start = digits.images[torch.tensor(d.report.init_indices)]
    assert not torch.equal(d.images, start)  # images were optimised
    again = distill("dm", digits, 2, seed=0, iterations=15, real_batch=32, progress=False)
    assert torch.equal(d.images, again.images)


def test_bn_statistics_match_a_float64_reference(digits, digits_teacher):
    """Float32 per-batch moments merged pairwise equal a float64 two-pass reference, also when
    the batches are small and unequal (7 does not divide the class size)."""
    from pqlib.methods.wmdd import class_bn_statistics
    from pqlib.models import batchnorm_inputs

    images = digits.of_class(3)
    got = class_bn_statistics(digits_teacher, images, batch_size=7)
    with torch.no_grad(), batchnorm_inputs(digits_teacher.model.eval()) as rec:
        digits_teacher.model(images)
        ref = [(t.double().mean((0, 2, 3)), t.double().var((0, 2, 3), unbiased=False))
               for t in rec.inputs]
    assert len(got) == len(ref) >= 2
    for (m, v), (m0, v0) in zip(got, ref):
        torch.testing.assert_close(m.double(), m0, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(v.double(), v0, rtol=1e-4, atol=1e-4)


def test_wmdd_leaves_the_shared_teacher_as_found(digits, digits_teacher):
    params = list(digits_teacher.model.parameters())
    params[0].requires_grad_(False)  # a caller froze part of the teacher
    before = [p.requires_grad for p in params]
    try:
        distill("wmdd", digits, 1, seed=0, teacher=digits_teacher, iterations=2, progress=False)
        assert [p.requires_grad for p in params] == before
    finally:
        params[0].requires_grad_(True)


def test_dm_called_directly_is_reproducible_whatever_the_global_rng(digits):
    from pqlib.methods import dm

    torch.manual_seed(123)
    a = dm.distill(digits, 1, seed=5, iterations=4, real_batch=16, progress=False)
    torch.manual_seed(999)  # other global state: the result must not depend on it
    b = dm.distill(digits, 1, seed=5, iterations=4, real_batch=16, progress=False)
    assert torch.equal(a.images, b.images)


def test_dm_matching_loss_falls(digits):
    """The training loss redraws networks and real batches every step, so it is judged on a
    fixed set of 10 networks and batches: the distilled images match better than their init."""
    from pqlib.methods import dm

    seen = []
    d = distill("dm", digits, 2, seed=0, iterations=40, real_batch=32, lr=0.5, progress=False,
                callback=lambda it, images: seen.append(it))
    assert seen == list(range(1, 41))
    init = digits.images[torch.tensor(d.report.init_indices)]
    before = dm.objective(digits, init, 2, seed=7, networks=10)
    after = dm.objective(digits, d.images, 2, seed=7, networks=10)
    assert after < 0.9 * before  # measured: 0.348 vs 0.434
    with pytest.raises(ValueError, match="augment='kornia' should be one of"):
        distill("dm", digits, 1, augment="kornia", progress=False)


def test_wmdd_called_directly_is_reproducible_whatever_the_global_rng(digits, digits_teacher):
    from pqlib.methods import wmdd

    torch.manual_seed(1)
    a = wmdd.distill(digits, 1, seed=3, teacher=digits_teacher, iterations=3, progress=False)
    torch.manual_seed(2)
    b = wmdd.distill(digits, 1, seed=3, teacher=digits_teacher, iterations=3, progress=False)
    assert torch.equal(a.images, b.images)


def test_ddoq_called_directly_is_reproducible_whatever_the_global_rng(mnist_slice, prior):
    from pqlib.methods import ddoq

    torch.manual_seed(1)
    a = ddoq.distill(mnist_slice, 2, seed=4, prior=prior, **FAST)
    torch.manual_seed(2)
    b = ddoq.distill(mnist_slice, 2, seed=4, prior=prior, **FAST)
    assert torch.equal(a.images, b.images) and torch.equal(a.weights, b.weights)


def test_wmdd_leaves_the_teachers_modes_as_found(digits, digits_teacher):
    """Train/eval mode of every module (a caller may have put the teacher in train mode)."""
    model = digits_teacher.model
    model.train()
    try:
        distill("wmdd", digits, 1, seed=0, teacher=digits_teacher, iterations=2, progress=False)
        assert all(m.training for m in model.modules())
    finally:
        model.eval()


def test_ddoq_barycenter_crosses_wmdds_weights_into_the_latent_space(mnist_slice, prior):
    from pqlib.checks import InvalidParameter

    base = distill("ddoq", mnist_slice, 3, seed=0, prior=prior, **FAST)
    d = distill("ddoq", mnist_slice, 3, seed=0, prior=prior, quantizer="barycenter",
                weights="barycenter", **FAST)
    _check_set(d, 3, 10, (1, 28, 28))
    assert len(d.report.barycenters) == 10 and d.report.quantizers is None
    learned = torch.cat([b.weights for b in d.report.barycenters]).float()
    torch.testing.assert_close(d.weights, learned)
    assert not torch.allclose(d.weights, base.weights, atol=1e-3)
    # the learned weights are never worse than uniform ones on the barycenter's support
    assert d.report.w2_latent.weighted <= d.report.w2_latent.uniform + 1e-9
    with pytest.raises(InvalidParameter, match="weights='barycenter' needs quantizer='barycenter'"
                                               ", not quantizer='kmeans'; pass quantizer="):
        distill("ddoq", mnist_slice, 2, prior=prior, weights="barycenter", **FAST)


def test_wmdd_voronoi_weights_the_same_images_by_cell_masses(digits, digits_teacher, tmp_path,
                                                             monkeypatch):
    from pqlib.methods.common import class_features
    from pqlib.quantize import voronoi_weights

    monkeypatch.setenv("PQLIB_CACHE", str(tmp_path))
    kw = dict(seed=0, teacher=digits_teacher, iterations=5, progress=False, reuse=True)
    base = distill("wmdd", digits, 3, **kw)
    v = distill("wmdd", digits, 3, weights="voronoi", **kw)
    _check_set(v, 3, 10, (1, 8, 8))
    assert base.report.reused_stages == [] and v.report.reused_stages == ["barycenter", "synthesize"]
    assert torch.equal(v.images, base.images) and not torch.allclose(v.weights, base.weights)
    masses = torch.cat([voronoi_weights(class_features(digits_teacher, digits.subset(
        digits.labels == c)), b.points) for c, b in enumerate(v.report.barycenters)])
    torch.testing.assert_close(v.weights, masses)
    assert v.report.to_dict()["reused_stages"] == ["barycenter", "synthesize"]
    with pytest.raises(ValueError, match="weights='learned' should be one of"):
        distill("wmdd", digits, 1, teacher=digits_teacher, weights="learned", progress=False)


def test_reuse_shares_decoded_images_between_weightings(mnist_slice, prior, tmp_path, monkeypatch):
    """reuse=True: the second call loads the decoded images (bit for bit) whatever its weights;
    reuse=False (the default) decodes again; other options of the decoder make other entries.
    (Each class decodes in its own call, and is cached on its own.)"""
    monkeypatch.setenv("PQLIB_CACHE", str(tmp_path))
    calls = []
    decode = prior.decode
    monkeypatch.setattr(prior, "decode", lambda *a, **k: calls.append(1) or decode(*a, **k))
    first = distill("ddoq", mnist_slice, 2, seed=1, prior=prior, reuse=True, **FAST)
    again = distill("ddoq", mnist_slice, 2, seed=1, prior=prior, reuse=True, **FAST)
    d4m = distill("d4m", mnist_slice, 2, seed=1, prior=prior, reuse=True, **FAST)
    k = mnist_slice.num_classes
    assert len(calls) == k and first.report.reused_stages == []
    assert again.report.reused_stages == d4m.report.reused_stages == ["decode"]
    assert torch.equal(again.images, first.images) and torch.equal(d4m.images, first.images)
    assert torch.equal(again.weights, first.weights) and not torch.equal(d4m.weights, first.weights)
    assert "reuse" not in again.report.options
    fresh = distill("ddoq", mnist_slice, 2, seed=1, prior=prior, **FAST)
    assert len(calls) == 2 * k and fresh.report.reused_stages == []
    assert torch.equal(fresh.images, first.images)
    distill("ddoq", mnist_slice, 2, seed=1, prior=prior, reuse=True, strength=0.5, **FAST)
    assert len(calls) == 3 * k
    assert distill("random", mnist_slice, 1, reuse=True).report.reused_stages is None


def test_wmdd_in_class_blocks(digits, digits_teacher):
    """class_block: one block of every class is the default bit for bit; smaller blocks give
    the same barycenters and weights, other jitter draws, a falling loss."""
    kw = dict(seed=0, teacher=digits_teacher, iterations=6, progress=False)
    one = distill("wmdd", digits, 2, **kw)
    same = distill("wmdd", digits, 2, class_block=10, **kw)
    assert torch.equal(one.images, same.images) and one.report.loss_history == same.report.loss_history
    blocks = distill("wmdd", digits, 2, class_block=3, **kw)
    _check_set(blocks, 2, 10, (1, 8, 8))
    assert torch.equal(blocks.weights, one.weights) and not torch.equal(blocks.images, one.images)
    first, last = blocks.report.loss_first_last
    assert last < first


def test_features_and_bn_statistics_come_from_one_teacher_pass(digits, digits_teacher, tmp_path,
                                                               monkeypatch):
    """A class's teacher features and its BatchNorm statistics are one cached forward pass:
    once the features are there (herding, k-center, feature W2), WMDD's statistics cost no
    pass; both equal their separate computations."""
    from pqlib.methods import common, wmdd

    monkeypatch.setenv("PQLIB_CACHE", str(tmp_path))
    passes = []
    one_pass = common.teacher_pass
    monkeypatch.setattr(common, "teacher_pass",
                        lambda teacher, images, *a: passes.append(len(images)) or one_pass(teacher, images, *a))
    part = digits.subset(torch.nonzero(digits.labels == 2).flatten())
    feats = common.class_features(digits_teacher, part)
    stats = wmdd.class_bn_moments(part, 2, digits_teacher)
    assert passes == [len(part)]
    assert torch.equal(feats, common.features(digits_teacher, part.images))
    for (m, v), (m0, v0) in zip(stats, wmdd.class_bn_statistics(digits_teacher, part.images), strict=True):
        assert torch.equal(m, m0) and torch.equal(v, v0)
