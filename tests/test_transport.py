"""pqlib.transport: W2 through POT, the DDOQ identity, and learned-weight barycenters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pqlib.quantize import kmeans, voronoi_weights
from pqlib.transport import Barycenter, barycenter, wasserstein2


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(7)


@pytest.fixture
def mixture(gen):
    """1500 points in 2-D from three unequal, anisotropic blobs (masses 0.6, 0.3, 0.1)."""
    centres = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    idx = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), 1500, replacement=True, generator=gen)
    return centres[idx] + torch.randn(1500, 2, generator=gen) * torch.tensor([1.0, 0.5])


# ------------------------------------------------------------------------------ wasserstein2


def test_two_diracs_against_one():
    x = torch.tensor([[-1.0], [1.0]])
    assert wasserstein2(x, torch.zeros(1, 1), squared=True) == 1.0
    assert wasserstein2(x, torch.zeros(1, 1)) == 1.0


def test_translation_costs_its_length(gen):
    x = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    shift = torch.tensor([3.0, 0.0, 4.0], dtype=torch.float64)
    assert wasserstein2(x, x + shift) == pytest.approx(5.0, rel=1e-12)
    assert wasserstein2(x, x, squared=True) < 1e-14  # POT's cost uses the expansion too


def test_weights_are_used():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[0.0]])
    assert wasserstein2(x, y, a=torch.tensor([0.75, 0.25]), squared=True) == pytest.approx(0.25)


@pytest.mark.parametrize("k", [2, 5, 17])
@pytest.mark.parametrize("seed", [0, 1])
def test_voronoi_weights_give_the_distortion(k, seed):
    # DDOQ identity: W2²(x, Σ w_k δ_c_k) = distortion when w are the Voronoi masses,
    # and any other weights (uniform: D4M) cost at least as much
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1200, 4, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 1.0, 0.3])
    q = kmeans(x, k, seed=seed)
    w2_voronoi = wasserstein2(x, q.points, b=q.weights, squared=True)
    assert w2_voronoi == pytest.approx(q.distortion, rel=1e-6)
    assert wasserstein2(x, q.points, squared=True) >= w2_voronoi * (1 - 1e-12)


def test_sinkhorn_bounds_exact_from_above(mixture):
    q = kmeans(mixture, 6)
    exact = wasserstein2(mixture, q.points, b=q.weights, squared=True)
    entropic = wasserstein2(mixture, q.points, b=q.weights, squared=True, method="sinkhorn")
    assert exact * (1 - 1e-9) <= entropic <= exact * 1.05
    blurred = wasserstein2(mixture, q.points, b=q.weights, squared=True, method="sinkhorn",
                           reg=1.0, max_iter=500)
    assert entropic < blurred


def test_returns_python_float():
    assert isinstance(wasserstein2(torch.ones(3, 2), torch.zeros(2, 2)), float)


@pytest.mark.parametrize("kwargs, match", [
    ({"b": torch.tensor([0.5, 0.4], dtype=torch.float64)}, r"b sums to 0.9, not 1; normalise it"),
    ({"a": torch.tensor([0.5, 0.25, 0.25, 0.25])}, r"a has shape \(4,\) but \(3,\) is needed"),
    ({"a": torch.tensor([1.2, -0.1, -0.1])}, r"a has negative masses \(min -0.1\)"),
    ({"b": torch.tensor([float("nan"), 1.0])}, r"b contains NaN/inf"),
    ({"method": "greedy"}, r"method='greedy' should be one of 'exact', 'sinkhorn'"),
    ({"reg": 0.1}, r"reg=0.1 is only used with method='sinkhorn'"),
    ({"method": "sinkhorn", "reg": -1.0}, r"reg=-1.0 should be a number > 0"),
])
def test_bad_masses_and_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wasserstein2(torch.rand(3, 2), torch.rand(2, 2), **kwargs)


def test_bad_clouds_raise():
    with pytest.raises(ValueError, match=r"dimension mismatch: x has shape \(3, 2\) but y has shape \(2, 3\)"):
        wasserstein2(torch.rand(3, 2), torch.rand(2, 3))
    x = torch.rand(3, 2)
    x[1, 0] = float("inf")
    with pytest.raises(ValueError, match=r"x contains 1 NaN/inf values \(first in row 1\)"):
        wasserstein2(x, torch.rand(2, 2))


# ------------------------------------------------------------------------------ barycenter


def test_barycenter_by_hand():
    x = torch.tensor([[0.0], [0.1], [0.2], [5.0]])
    points, weights = barycenter(x, 2, iters=5)
    order = points[:, 0].argsort()
    assert points[order, 0].tolist() == pytest.approx([0.1, 5.0], abs=1e-6)
    assert weights[order].tolist() == pytest.approx([0.75, 0.25], abs=1e-6)


def test_learned_weights_beat_uniform_on_the_same_support(mixture):
    bc = barycenter(mixture, 8, seed=0)
    assert isinstance(bc, Barycenter)
    points, weights = bc
    assert points.shape == (8, 2) and weights.shape == (8,)
    assert points.dtype == mixture.dtype and weights.dtype == mixture.dtype
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6) and bool((weights >= 0).all())
    learned = wasserstein2(mixture, points, b=weights / weights.sum(), squared=True)
    uniform = wasserstein2(mixture, points, squared=True)
    optimal = wasserstein2(mixture, points, b=voronoi_weights(mixture, points), squared=True)
    assert learned <= uniform
    assert learned < 0.9 * uniform  # the masses are unequal: learning them matters here
    assert optimal * (1 - 1e-9) <= learned <= 1.05 * optimal  # Voronoi masses are the optimum
    assert bc.history[-1] == pytest.approx(learned, rel=1e-5)
    assert np.all(np.diff(bc.history) <= 1e-9)  # each alternation can only lower W2²


def test_uniform_barycenter(mixture):
    bc = barycenter(mixture, 5, learn_weights=False, iters=6)
    assert torch.equal(bc.weights, torch.full((5,), 0.2))
    assert len(bc.history) == 6
    assert bc.history[-1] == pytest.approx(wasserstein2(mixture, bc.points, squared=True), rel=1e-9)
    assert np.all(np.diff(bc.history) <= 1e-9)


def test_barycenter_seed_and_errors(mixture):
    a = barycenter(mixture[:300], 4, iters=3, seed=1)
    b = barycenter(mixture[:300], 4, iters=3, seed=1)
    assert torch.equal(a.points, b.points) and torch.equal(a.weights, b.weights)
    with pytest.raises(ValueError, match=r"k=301 should be <= n_samples=300"):
        barycenter(mixture[:300], 301)
    with pytest.raises(ValueError, match=r"k=0 should be an integer >= 1"):
        barycenter(mixture[:300], 0)
    with pytest.raises(ValueError, match=r"a sums to 2, not 1"):
        barycenter(mixture[:2], 1, a=torch.ones(2))


def test_data_masses_move_the_barycenter():
    x = torch.tensor([[0.0], [1.0]])
    (point,), _ = barycenter(x, 1, a=torch.tensor([0.9, 0.1]), iters=2)
    assert float(point) == pytest.approx(0.1)
    assert math.isfinite(float(point))
