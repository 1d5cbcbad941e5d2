"""The selection baselines: random, herding, k-center."""

import pytest
import torch

from pqlib.methods import distill, list_methods
from pqlib.methods.herding import herd
from pqlib.methods.kcenter import greedy_kcenter


@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_selection_returns_unmodified_real_images(method, digits, digits_teacher):
    d = distill(method, digits, 4, seed=1, **({} if method == "random" else {"teacher": digits_teacher}))
    assert d.images.shape == (40, 1, 8, 8)
    assert torch.bincount(d.labels).tolist() == [4] * 10
    idx = torch.tensor(d.report.train_indices)
    assert torch.equal(d.images, digits.images[idx]) and torch.equal(d.labels, digits.labels[idx])
    assert len(set(idx.tolist())) == 40
    torch.testing.assert_close(d.weights, torch.full((40,), 0.25))
    assert d.report.method == method and d.report.ipc == 4 and d.report.wall_time_s >= 0


@pytest.mark.parametrize("method", ["random", "kcenter"])
def test_same_seed_same_set_other_seed_other_set(method, digits, digits_teacher):
    kw = {} if method == "random" else {"teacher": digits_teacher}
    a, b = distill(method, digits, 3, seed=0, **kw), distill(method, digits, 3, seed=0, **kw)
    c = distill(method, digits, 3, seed=1, **kw)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_herding_hand_example():
    # 1-D points; the mean is 0.5: first pick the point nearest 0.5, then the one that
    # brings the running mean back closest to 0.5
    x = torch.tensor([[0.0], [1.0], [0.4], [0.9], [0.2]])
    assert herd(x, 2).tolist() == [2, 3]


def test_kcenter_picks_farthest_points():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [5.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    chosen = greedy_kcenter(x, 3, generator=g).tolist()
    assert set(chosen[1:]) <= {0, 2, 3} and len(set(chosen)) == 3
    # a given first center (here herding's: the point nearest the mean, 5.0 → row 3)
    assert greedy_kcenter(x, 3, first=int(herd(x, 1)[0])).tolist() == [3, 0, 2]


def test_registry_and_errors(digits):
    assert {"random", "herding", "kcenter"} <= set(list_methods())
    with pytest.raises(ValueError, match="unknown method 'nope'; registered methods: .*random"):
        distill("nope", digits, 1)
    with pytest.raises(ValueError, match="ipc=0 must be an integer >= 1"):
        distill("random", digits, 0)
    smallest = int(digits.class_counts().min())
    with pytest.raises(ValueError, match=f"ipc={smallest + 1} is larger than class"):
        distill("random", digits, smallest + 1)
    with pytest.raises(ValueError, match=r"has no option\(s\) \['strength'\]"):
        distill("random", digits, 1, strength=0.5)


def test_teacher_for_other_data_is_refused(digits_teacher):
    from pqlib.data import ImageSet

    other = ImageSet(torch.rand(20, 1, 28, 28), torch.arange(20) % 10, tuple("0123456789"), "other")
    with pytest.raises(ValueError, match="was trained on 'digits'"):
        distill("herding", other, 1, teacher=digits_teacher)


@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_called_directly_is_reproducible_whatever_the_global_rng(method, digits, digits_teacher):
    import importlib

    fn = importlib.import_module(f"pqlib.methods.{method}").distill
    kw = {} if method == "random" else {"teacher": digits_teacher}
    torch.manual_seed(1)
    a = fn(digits, 3, seed=2, **kw)
    torch.manual_seed(2)
    b = fn(digits, 3, seed=2, **kw)
    assert a.report.train_indices == b.report.train_indices


@pytest.mark.parametrize("method", ["herding", "kcenter"])
def test_the_shared_teacher_is_left_as_found(method, digits, digits_teacher):
    """Mode of every module and requires_grad of every parameter, whatever they were."""
    from pqlib.methods.common import features

    model = digits_teacher.model
    params = list(model.parameters())
    model.train()
    params[0].requires_grad_(False)
    before = ([m.training for m in model.modules()], [p.requires_grad for p in params])
    try:
        distill(method, digits, 1, teacher=digits_teacher, progress=False)  # cached features
        features(digits_teacher, digits.images[:50])  # computed now
        assert ([m.training for m in model.modules()], [p.requires_grad for p in params]) == before
    finally:
        model.eval()
        params[0].requires_grad_(True)
