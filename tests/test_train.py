import pytest
import torch

from pqlib.checks import CorruptFile, InvalidParameter
from pqlib.distilled import DistilledSet
from pqlib.methods import distill
from pqlib.train import evaluate, load_teacher, train_student, train_teacher


def test_teacher_learns_digits_and_is_cached(digits_teacher):
    assert digits_teacher.accuracy > 90.0
    again = train_teacher("digits", "convnet_bn", epochs=20, progress=False)
    for a, b in zip(digits_teacher.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    assert again.accuracy == digits_teacher.accuracy


def test_teacher_round_trip(tmp_path, digits_teacher):
    digits_teacher.save(tmp_path / "t.safetensors")
    back = load_teacher(tmp_path / "t.safetensors")
    assert back.id == digits_teacher.id and back.accuracy == digits_teacher.accuracy
    assert back.image_shape == digits_teacher.image_shape == (1, 8, 8)
    for a, b in zip(digits_teacher.model.state_dict().values(), back.model.state_dict().values()):
        assert torch.equal(a, b)


def test_corrupt_teacher_file_names_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "t.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(CorruptFile, match=r"t\.safetensors is not a readable teacher weights "
                       r"file; delete it"):
        load_teacher(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_teacher(tmp_path / "missing.safetensors")


def test_hard_label_student_beats_chance_and_is_deterministic(digits, digits_test):
    d = distill("random", digits, 10, seed=0)
    m1 = train_student(d, epochs=150, seed=3, progress=False)
    m2 = train_student(d, epochs=150, seed=3, progress=False)
    a1, a2 = evaluate(m1, digits_test), evaluate(m2, digits_test)
    assert a1 == a2 and a1 > 60.0
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("soft", [False, True])
def test_student_depends_on_its_seed_only(digits, digits_teacher, soft):
    """Same seed, same student, whatever state the global RNG was left in by earlier code; the
    caller's global RNG state is left as it was (model init, kornia and CutMix draw from it)."""
    d = distill("random", digits, 3, seed=0)
    kw = dict(epochs=3, seed=7, compile=False, progress=False,
              teacher=digits_teacher if soft else None)
    first = train_student(d, **kw)
    torch.manual_seed(123)
    torch.rand(5)
    state = torch.get_rng_state()
    second = train_student(d, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    for p, q in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(p, q)


def test_teacher_depends_on_its_seed_only():
    kw = dict(epochs=1, augment=True, seed=2, cache=False, progress=False)
    first = train_teacher("digits", **kw)
    torch.manual_seed(123)
    torch.rand(5)
    state = torch.get_rng_state()
    second = train_teacher("digits", **kw)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": -1}, "train_student: seed=-1 should be an integer >= 0"),
    ({"epochs": 0}, "epochs=0 should be None or an integer >= 1"),
    ({"precision": "fp16"}, "precision='fp16' should be one of 'auto', 'bf16', 'fp32'"),
    ({"compile": "yes"}, "compile='yes' should be one of True, False, 'auto'"),
    ({"arch": "vgg"}, "arch='vgg' should be one of 'convnet', 'convnet_bn', 'resnet18'"),
])
def test_student_arguments_are_checked_before_training(digits, kwargs, message):
    d = distill("random", digits, 1, seed=0)
    with pytest.raises(InvalidParameter) as e:
        train_student(d, progress=False, **kwargs)
    assert message in str(e.value)


def test_teacher_arguments_are_checked_before_training():
    with pytest.raises(InvalidParameter, match="train_teacher: lr=0 should be a number > 0"):
        train_teacher("digits", lr=0)
    with pytest.raises(InvalidParameter, match="arch='vgg' should be one of"):
        train_teacher("digits", "vgg")


def test_soft_label_student_on_mnist():
    """Soft labels from the shipped MNIST teacher on 5 random images per class."""
    from pqlib.data import load

    train, test = load("mnist"), load("mnist", "test").subset(torch.arange(1000))
    teacher = train_teacher("mnist", progress=False)
    d = distill("random", train, 5, seed=0)
    soft = train_student(d, teacher=teacher, epochs=60, seed=0, progress=False)
    assert evaluate(soft, test) > 80.0


def _with_extra(d: DistilledSet, weight: float) -> DistilledSet:
    """``d`` plus a copy of its first image relabelled as another class, with ``weight``."""
    w = d.weights.clone()
    images = torch.cat([d.images, d.images[:1].flip(-1)])
    labels = torch.cat([d.labels, torch.tensor([int(d.labels[1])])])
    raw = torch.cat([w * 0 + 1, torch.tensor([weight])])
    return DistilledSet(images, labels, raw, d.classes)


@pytest.mark.parametrize("teacher", [False, True])
def test_zero_weight_sample_has_no_effect(digits, digits_teacher, teacher):
    from pqlib.protocols import get_protocol

    base = distill("random", digits, 3, seed=0)
    # no augmentation, no CutMix, no standardisation (the extra image would move the statistics)
    protocol = get_protocol("fkd" if teacher else "dc").replace(
        epochs=5, augmentation="none", cutmix=False, standardize=False)
    kw = dict(protocol=protocol, seed=0, progress=False, precision="fp32",
              teacher=digits_teacher if teacher else None)
    ref = train_student(base, **kw)
    zero = train_student(_with_extra(base, 0.0), **kw)
    heavy = train_student(_with_extra(base, 1.0), **kw)
    # equal up to float rounding (a batch of 31 instead of 30 may pick other conv kernels)
    zero_gap = max(float((p - q).detach().abs().max()) for p, q in zip(ref.parameters(), zero.parameters()))
    heavy_gap = max(float((p - q).detach().abs().max()) for p, q in zip(ref.parameters(), heavy.parameters()))
    assert zero_gap < 1e-4 and heavy_gap > 100 * max(zero_gap, 1e-6)


def test_student_rejects_mismatched_teacher(digits_teacher):
    d = DistilledSet(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]), torch.ones(2), ("a", "b"))
    with pytest.raises(ValueError, match="teacher .* takes images"):
        train_student(d, teacher=digits_teacher, epochs=1, progress=False)


def test_shipped_mnist_teacher_loads_without_training_and_is_accurate():
    """The ConvNet-BN MNIST teacher ships in pqlib/weights (reproduced by
    ``train_teacher("mnist", cache=False)``: 99.40 % in 7.5 min on 2 cores)."""
    from pqlib.data import load
    from pqlib.train import WEIGHTS_DIR, teacher_config

    t = train_teacher("mnist", progress=False)
    assert (WEIGHTS_DIR / f"teacher-{t.id}.safetensors").exists()
    assert t.config == teacher_config("mnist") and t.accuracy >= 99.0
    test = load("mnist", "test").subset(torch.arange(2000))
    assert evaluate(t.model, test) >= 98.5
