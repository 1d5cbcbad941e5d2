import pytest
import torch

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
    from pqlib.train import _save_teacher

    _save_teacher(digits_teacher, tmp_path / "t.safetensors")
    back = load_teacher(tmp_path / "t.safetensors")
    assert back.id == digits_teacher.id and back.accuracy == digits_teacher.accuracy


def test_hard_label_student_beats_chance_and_is_deterministic(digits, digits_test):
    d = distill("random", digits, 10, seed=0)
    m1 = train_student(d, epochs=150, seed=3, progress=False)
    m2 = train_student(d, epochs=150, seed=3, progress=False)
    a1, a2 = evaluate(m1, digits_test), evaluate(m2, digits_test)
    assert a1 == a2 and a1 > 60.0
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)


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
