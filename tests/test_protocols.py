"""Evaluation protocols as values, DSA augmentation, and students trained under them."""

import pytest
import torch

from pqlib.augment import dc_augment, dsa
from pqlib.protocols import PROTOCOLS, Protocol, get_protocol, protocol_from_record
from pqlib.train import evaluate, train_student


def test_named_protocols_hold_the_published_knobs():
    dc = get_protocol("dc")
    assert (dc.labels, dc.optimizer, dc.lr, dc.momentum, dc.weight_decay, dc.batch_size) == \
        ("hard", "sgd", 0.01, 0.9, 5e-4, 256)
    assert dc.total_epochs == 1001 and dc.schedule == "step-reset" and dc.standardize
    assert dc.dsa_strategy(1) == "color_crop_cutout_scale_rotate"  # no flip on digits
    assert dc.dsa_strategy(3) == "color_crop_cutout_flip_scale_rotate"
    fkd = get_protocol("fkd")
    assert (fkd.labels, fkd.optimizer, fkd.schedule, fkd.cutmix, fkd.temperature) == \
        ("soft", "adamw", "cosine", True, 20.0)
    assert fkd.replace(name="legacy-soft") == PROTOCOLS["legacy-soft"]
    assert get_protocol("dc300") == dc.replace(name="dc300", epochs=300)
    noaug = get_protocol("fkd-noaug")  # DD-Ranking's "without augmentation" evaluation
    assert noaug == fkd.replace(name="fkd-noaug", augmentation="none", cutmix=False)
    assert noaug.dsa_strategy(1) is None
    iclr = get_protocol("dc-iclr21")  # the DC paper's own evaluation, before DSA
    assert iclr == dc.replace(name="dc-iclr21", augmentation="dc:crop_scale_rotate")
    assert iclr.dsa_strategy(1) is None


def test_protocol_round_trips_through_its_dict_and_rejects_bad_values():
    for p in PROTOCOLS.values():
        assert get_protocol(p.as_dict()) == p
    with pytest.raises(ValueError, match="unknown protocol 'dcc'.*dc, dc300"):
        get_protocol("dcc")
    with pytest.raises(ValueError, match="schedule='linear'"):
        get_protocol("dc").replace(schedule="linear")
    with pytest.raises(ValueError, match="epochs=0"):
        get_protocol("dc").replace(epochs=0)
    with pytest.raises(ValueError, match="unknown key"):
        get_protocol({**get_protocol("dc").as_dict(), "lr_max": 1})


def test_records_without_a_protocol_map_to_the_legacy_ones():
    old = {"parameters": {"epochs": 100}}
    assert protocol_from_record(old, "hard") == PROTOCOLS["legacy-hard"].replace(epochs=100)
    new = {"protocol": {"soft": PROTOCOLS["fkd"].as_dict()}, "parameters": {}}
    assert protocol_from_record(new, "soft") == PROTOCOLS["fkd"]


def test_dsa_shares_one_draw_when_asked_and_draws_per_image_otherwise():
    x = torch.rand(1, 1, 16, 16).expand(32, 1, 16, 16).contiguous()
    g = torch.Generator().manual_seed(0)
    for _ in range(10):  # every op group comes up in 10 draws with high probability
        shared = dsa(x, "crop_cutout_scale_rotate", generator=g, shared=True)
        assert torch.allclose(shared, shared[:1].expand_as(shared))
    distinct = {tuple(dsa(x, op, generator=g)[:, 0].flatten(1).sum(1).round(decimals=4).tolist())
                for op in ("crop", "cutout", "scale", "rotate")}
    assert all(len(set(v)) > 1 for v in distinct)  # per-image parameters differ


def test_dsa_ops_keep_shape_are_differentiable_and_reproducible():
    x = torch.rand(4, 3, 12, 12, requires_grad=True)
    for op in ("color", "crop", "cutout", "flip", "scale", "rotate"):
        a = dsa(x, op, generator=torch.Generator().manual_seed(1))
        b = dsa(x, op, generator=torch.Generator().manual_seed(1))
        assert a.shape == x.shape and torch.equal(a, b)
        a.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        x.grad = None
    crop = dsa(x.detach(), "crop", generator=torch.Generator().manual_seed(2))
    assert set(crop.flatten().tolist()) <= set(x.detach().flatten().tolist()) | {0.0}
    with pytest.raises(ValueError, match="unknown DSA op"):
        dsa(x, "crop_blur")


@pytest.fixture(scope="module")
def small_set(digits):
    from pqlib.methods import distill

    return distill("random", digits, 5, seed=0)


def test_student_under_dc_is_deterministic_and_learns(small_set, digits_test):
    kw = dict(epochs=40, seed=4, compile=False, progress=False)
    a, b = train_student(small_set, "dc", **kw), train_student(small_set, "dc", **kw)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert evaluate(a, digits_test) > 50.0  # chance is 10 %
    assert torch.allclose(a.mean.flatten(), a.mean.new_tensor([small_set.images.mean()]), atol=1e-4)


def test_student_under_compile_is_deterministic(small_set, digits_test):
    kw = dict(epochs=3, seed=1, compile=True, progress=False)
    a, b = train_student(small_set, "dc", **kw), train_student(small_set, "dc", **kw)
    assert a.compiled and b.compiled
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    eager = train_student(small_set, "dc", **dict(kw, compile=False))
    assert not eager.compiled
    # same computation, different float rounding: the weights agree closely after 4 steps
    for p, q in zip(a.state_dict().values(), eager.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0.05, atol=0.02)


def test_protocol_labels_must_match_the_teacher(small_set, digits_teacher):
    with pytest.raises(ValueError, match="'fkd' trains with soft labels: pass teacher"):
        train_student(small_set, "fkd", epochs=1, progress=False)
    with pytest.raises(ValueError, match="'dc' trains with hard labels: pass teacher=None"):
        train_student(small_set, "dc", teacher=digits_teacher, epochs=1, progress=False)


def test_standardized_soft_label_student_learns_from_the_teacher(small_set, digits_teacher,
                                                                 digits_test):
    """The teacher labels raw pixels while the student trains on standardised ones."""
    p = get_protocol("fkd").replace(epochs=150, augmentation="none", standardize=True)
    model = train_student(small_set, p, teacher=digits_teacher, seed=0, compile=False,
                          progress=False)
    assert evaluate(model, digits_test) > 25.0  # chance is 10 %; measured 35 % (150 steps)


def test_custom_protocol_value(small_set):
    p = Protocol("mine", "hard", "sgd", lr=0.05, momentum=0.0, weight_decay=0.0, schedule="cosine",
                 epochs=2, extra_epoch=False, batch_size=16, augmentation="none",
                 standardize=False, cutmix=False)
    model = train_student(small_set, p, progress=False, compile=False)
    assert isinstance(model, torch.nn.Module) and not hasattr(model, "mean")


def test_a_failing_compiler_falls_back_to_eager(small_set, monkeypatch):
    """Without a working C++ compiler the student trains eagerly, with a warning, and equals
    the eager student (the random draws of the failed step are replayed)."""
    import torch._inductor.config as inductor_config

    from pqlib.distilled import DistilledSet

    # 7 images: shapes no earlier test compiled, so the compiler must run (and fail)
    d = DistilledSet(small_set.images[:7], small_set.labels[:7], torch.ones(7),
                     small_set.classes, small_set.meta)
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/c++",))
    kw = dict(epochs=2, seed=2, progress=False)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        fallback = train_student(d, "dc", compile=True, **kw)
    assert not fallback.compiled
    eager = train_student(d, "dc", compile=False, **kw)
    assert all(torch.equal(p, q) for p, q in
               zip(fallback.state_dict().values(), eager.state_dict().values()))


def test_protocol_fields_and_augmentation_arguments_are_checked():
    from pqlib.augment import cutmix
    from pqlib.checks import InvalidParameter

    dc = get_protocol("dc")
    with pytest.raises(InvalidParameter, match="protocol 'dc': lr=0 should be a number > 0"):
        dc.replace(lr=0)
    with pytest.raises(InvalidParameter, match="augmentation='dsa:crop_blur' should be"):
        dc.replace(augmentation="dsa:crop_blur")
    for bad in ("dc", "dc:crop_flip"):  # DC's ops must be named, and flip is not one of them
        with pytest.raises(InvalidParameter, match=f"augmentation='{bad}' should be"):
            dc.replace(augmentation=bad)
    with pytest.raises(InvalidParameter, match=r"unknown DC op\(s\) \['flip'\]"):
        dc_augment(torch.rand(2, 1, 8, 8), "crop_flip")
    assert dc.replace(augmentation="dsa:crop_flip").dsa_strategy(1) == "crop"
    with pytest.raises(InvalidParameter, match="dsa: generator=0 should be .*a Generator"):
        dsa(torch.rand(2, 1, 8, 8), "crop", generator=0)
    with pytest.raises(InvalidParameter, match="cutmix: beta=0 should be a number > 0"):
        cutmix(torch.rand(2, 1, 8, 8), beta=0)


def test_dc_augment_applies_one_op_per_image_as_the_original_does():
    """crop: a shift of -4..+3 pixels with the batch mean as fill; scale: the per-image
    nearest resize, centred on a zero canvas, of the original; rotate: close to scipy's."""
    from scipy.ndimage import rotate

    x = torch.zeros(40, 1, 28, 28)
    for i in range(40):  # distinct bright blocks so that each shift is recognisable
        x[i, 0, 6 + i % 9:14 + i % 9, 5 + i % 7:17 + i % 7] = 1.0 + i / 40
    g = torch.Generator().manual_seed(0)
    crops, fill = dc_augment(x, "crop", generator=g), x.mean()
    padded = torch.nn.functional.pad(x - fill, (4, 4, 4, 4)) + fill
    for i in range(40):
        shifts = [(dy, dx) for dy in range(8) for dx in range(8)
                  if torch.allclose(crops[i], padded[i, :, dy:dy + 28, dx:dx + 28])]
        assert shifts, f"image {i} is no shift of the padded original"
    assert len({tuple(c.flatten().tolist()) for c in crops}) > 30  # offsets drawn per image

    g = torch.Generator().manual_seed(1)
    state = g.get_state()
    scaled = dc_augment(x, "scale", generator=g)
    g.set_state(state)
    torch.randint(1, (40,), generator=g)  # the op choice, then the sizes
    sizes = ((torch.rand(40, 2, generator=g, dtype=torch.float64) * 0.4 + 0.8) * 28).long()
    for i in range(40):
        h, w = map(int, sizes[i])
        side = max(h, w, 28)
        canvas = torch.zeros(1, side, side)
        canvas[:, (side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = \
            torch.nn.functional.interpolate(x[i:i + 1], [h, w])[0]
        o = (side - 28) // 2
        assert torch.equal(scaled[i], canvas[:, o:o + 28, o:o + 28]), (i, h, w)

    g = torch.Generator().manual_seed(2)
    state = g.get_state()
    turned = dc_augment(x, "rotate", generator=g)
    g.set_state(state)
    torch.randint(1, (40,), generator=g)
    angles = torch.randint(-45, 45, (40,), generator=g)
    assert len(set(angles.tolist())) > 20

    def error(i, angle):  # against scipy's rotation (cubic spline) cut to the centre, as DC does
        ref = torch.as_tensor(rotate(x[i].numpy(), angle, axes=(-2, -1), cval=float(fill)))
        o = (ref.shape[-1] - 28) // 2  # odd sizes: half a pixel off centre, dc_augment too
        return float((ref[:, o:o + 28, o:o + 28] - turned[i]).abs().mean() / x[i].abs().mean())

    for i in range(40):
        a = int(angles[i])
        assert error(i, a) < 0.15, (i, a)  # measured at most 0.11: bicubic against a spline
        if abs(a) >= 5:
            assert error(i, a) < 0.5 * error(i, -a), (i, a)  # the same direction as scipy


def test_dc_iclr21_students_are_reproducible_and_learn(small_set, digits_test):
    kw = dict(epochs=30, seed=3, compile=False, progress=False)
    a, b = (train_student(small_set, "dc-iclr21", **kw) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert evaluate(a, digits_test) > 25.0  # chance is 10 %
