"""pqlib.quantize: Lloyd k-means, CLVQ, assignment and Voronoi weights."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pqlib.quantize import Quantizer, assign, clvq, kmeans, voronoi_weights

FOUR = [[0.0, 0.0], [0.0, 1.0], [4.0, 0.0], [4.0, 1.0]]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def blobs(gen):
    """2000 points around 5 centres in 3-D, float32."""
    centres = torch.randn(5, 3, generator=gen) * 5
    idx = torch.randint(0, 5, (2000,), generator=gen)
    return centres[idx] + torch.randn(2000, 3, generator=gen)


# ------------------------------------------------------------------------------ kmeans


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("init", ["k-means++", "random", "tensor"])
def test_four_points_by_hand(dtype, init):
    x = torch.tensor(FOUR, dtype=dtype)
    if init == "tensor":
        init = torch.tensor([[0.0, 0.0], [4.0, 1.0]])
    q = kmeans(x, 2, init=init, seed=1)  # seed 1: "random" draws rows of different pairs
    order = q.points[:, 0].argsort()
    assert torch.equal(q.points[order], torch.tensor([[0.0, 0.5], [4.0, 0.5]], dtype=dtype))
    # the pairs {0, 1} and {2, 3} share a label, and the two labels differ
    assert q.labels[0] == q.labels[1] and q.labels[2] == q.labels[3] and q.labels[0] != q.labels[2]
    assert q.distortion == pytest.approx(0.25, rel=1e-12)  # each point is 0.5 from its centre
    assert torch.equal(q.weights, torch.tensor([0.5, 0.5], dtype=dtype))
    assert q.points.dtype == dtype and q.weights.dtype == dtype and q.labels.dtype == torch.int64
    assert q.weight_source == "exact-pass" and q.converged
    assert q.history[-1] == q.distortion


def test_lloyd_stops_at_a_stationary_point():
    # both initial points in the left pair: Lloyd is stuck at (2, 0), (2, 1), distortion 4
    x = torch.tensor(FOUR, dtype=torch.float64)
    q = kmeans(x, 2, init=torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
    assert q.points.tolist() == [[2.0, 0.0], [2.0, 1.0]]
    assert q.distortion == 4.0 and q.converged
    assert q.labels.tolist() == [0, 1, 0, 1]


def test_quantizer_is_frozen():
    q = kmeans(torch.tensor(FOUR), 2)
    with pytest.raises(AttributeError):
        q.distortion = 0.0
    assert isinstance(q, Quantizer) and q.k == 2


def test_uniform_optimal_distortion(gen):
    # optimal K-quantizer of U[0, 1]: the midpoints of K equal cells, distortion 1 / (12 K²)
    x = torch.rand(200_000, 1, generator=gen)
    q = kmeans(x, 10, seed=0)
    assert q.distortion == pytest.approx(1 / 1200, rel=0.02)
    assert torch.sort(q.points.flatten()).values == pytest.approx(
        (torch.arange(10) + 0.5) / 10, abs=0.01)


def test_normal_two_points(gen):
    # N(0, 1) with K = 2: points ±√(2/π), distortion 1 − 2/π
    x = torch.randn(200_000, 1, generator=gen)
    q = kmeans(x, 2, seed=0)
    assert q.distortion == pytest.approx(1 - 2 / math.pi, rel=0.01)
    assert torch.sort(q.points.flatten()).values == pytest.approx(
        [-math.sqrt(2 / math.pi), math.sqrt(2 / math.pi)], abs=0.02)


@settings(max_examples=60, deadline=None)
@given(
    data=hnp.arrays(np.float64, st.tuples(st.integers(2, 40), st.integers(1, 4)),
                    elements=st.floats(-10, 10, allow_nan=False, width=64)),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    init=st.sampled_from(["k-means++", "random"]),
)
def test_lloyd_distortion_never_increases(data, k, seed, init):
    x = torch.from_numpy(data)
    k = min(k, x.shape[0])
    q = kmeans(x, k, iters=30, tol=None, init=init, seed=seed)
    h = np.array(q.history)
    assert np.all(np.diff(h) <= 1e-12 * max(h[0], 1.0)), h
    # the reported distortion is the mean squared distance to the nearest point
    exact = torch.cdist(x, q.points).pow(2).min(1).values.mean()
    assert q.distortion == pytest.approx(float(exact), rel=1e-9, abs=1e-9)
    assert float(q.weights.sum()) == pytest.approx(1.0)


def test_lloyd_monotone_float32(blobs):
    q = kmeans(blobs, 8, iters=50, tol=None, init="random", seed=1)
    h = np.array(q.history)
    assert np.all(np.diff(h) <= 1e-6 * h[0])
    assert h[-1] < h[0]


def test_empty_cluster_is_reseeded():
    x = torch.tensor(FOUR, dtype=torch.float64)
    init = torch.tensor([[0.0, 0.5], [4.0, 0.5], [100.0, 100.0]], dtype=torch.float64)
    q = kmeans(x, 3, init=init, iters=5)
    assert bool((q.weights > 0).all())
    assert q.distortion < 0.25  # three non-empty cells beat two
    assert q.history[0] == pytest.approx(0.25)


def test_same_seed_same_result(blobs):
    a = kmeans(blobs, 7, seed=5)
    b = kmeans(blobs, 7, seed=5)
    c = kmeans(blobs, 7, seed=6, iters=0)
    d = kmeans(blobs, 7, seed=5, iters=0)
    assert torch.equal(a.points, b.points) and torch.equal(a.labels, b.labels)
    assert a.history == b.history
    assert not torch.equal(c.points, d.points)


def lloyd_reference(x, points, iters):
    """Plain Lloyd in float64: every row against every point, every iteration. Empty cells are
    re-seeded as pqlib does, at the rows farthest from their current point."""
    x, points = x.double(), points.double()
    history = []
    for t in range(iters + 1):
        d2 = ((x[:, None, :] - points[None, :, :]) ** 2).sum(-1)
        labels = d2.argmin(1)
        history.append(float(d2.min(1).values.mean()))
        if t == iters:
            return labels, points, history
        counts = torch.bincount(labels, minlength=len(points))
        sums = torch.zeros_like(points).index_add_(0, labels, x)
        new = points.clone()
        new[counts > 0] = sums[counts > 0] / counts[counts > 0, None]
        empty = (counts == 0).nonzero().flatten()
        far = ((x - points[labels]) ** 2).sum(1)
        new[empty] = x[torch.topk(far, len(empty)).indices]
        points = new


def _far_init(x, k, gen, n_far):
    """k random rows, the last n_far of them moved far away: their cells start empty."""
    init = x[torch.randperm(len(x), generator=gen)[:k]].clone()
    init[k - n_far :] = 1e3 * (1 + torch.arange(n_far, dtype=x.dtype))[:, None]
    return init


@pytest.mark.parametrize("n, d, k", [(600, 2, 9), (1500, 8, 25), (400, 30, 40), (300, 3, 1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", ["plain", "empty-cells", "duplicates"])
def test_lloyd_equals_the_plain_reference(n, d, k, seed, case):
    gen = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(max(k // 2, 1), d, generator=gen, dtype=torch.float64)
    x = centres[torch.randint(len(centres), (n,), generator=gen)]
    x += torch.randn(n, d, generator=gen, dtype=torch.float64)
    if case == "duplicates":  # every row appears about 4 times
        x = x[torch.randint(n // 4, (n,), generator=gen)]
    n_far = 2 if case == "empty-cells" and k > 2 else 0
    init = _far_init(x, k, gen, n_far)
    q = kmeans(x, k, iters=15, tol=None, init=init)
    labels, points, history = lloyd_reference(x, init, 15)
    assert torch.equal(q.labels, labels)
    assert torch.allclose(q.points, points, rtol=0, atol=1e-12)
    assert q.history == pytest.approx(history, rel=1e-12, abs=1e-12)
    assert torch.equal(q.weights, torch.bincount(labels, minlength=k).double() / n)
    assert bool((q.points.abs() < 100).all())  # the far points were re-seeded into the data


@pytest.mark.parametrize("offset", [0.0, 30.0])
def test_lloyd_float32_labels_are_nearest(offset):
    """In float32, ‖x‖² − 2x·c + ‖c‖² is rounded: after every iteration each label is a
    nearest point up to that rounding, even with a large common offset."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3000, 12, generator=gen) + offset
    init = x[:20].clone()
    for iters in (1, 2, 4, 8):
        q = kmeans(x, 20, iters=iters, tol=None, init=init)
        x64, p64 = x.double(), q.points.double()
        d2 = ((x64[:, None, :] - p64[None]) ** 2).sum(-1)
        own = d2.gather(1, q.labels[:, None])[:, 0]
        rounding = 2 * 20 * torch.finfo(torch.float32).eps * (
            (x64 ** 2).sum(1) + (p64 ** 2).sum(1).max())
        assert bool((own <= d2.min(1).values + rounding).all()), iters


def test_threads_and_chunks_give_the_same_result():
    """Rows spanning several chunks, with one torch thread and with two: the same labels, and
    the result of the plain reference."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(100_000, 6, generator=gen, dtype=torch.float64)  # > 40,000 rows per chunk
    init = _far_init(x, 12, gen, 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = kmeans(x, 12, iters=12, tol=None, init=init)
    finally:
        torch.set_num_threads(threads)
    torch.set_num_threads(2)
    try:
        many = kmeans(x, 12, iters=12, tol=None, init=init)
    finally:
        torch.set_num_threads(threads)
    labels, points, history = lloyd_reference(x, init, 12)
    for q in (one, many):
        assert torch.equal(q.labels, labels)
        assert torch.allclose(q.points, points, rtol=0, atol=1e-12)
        assert q.history == pytest.approx(history, rel=1e-12)


def test_tol_none_runs_all_iterations(blobs):
    q = kmeans(blobs, 5, iters=7, tol=None)
    assert q.iterations == 7 and len(q.history) == 8 and not q.converged
    q = kmeans(blobs, 5, iters=200, tol=0)
    assert q.converged and q.iterations < 200  # a fixed point on clean blobs


def test_assign_and_voronoi_weights():
    x = torch.tensor(FOUR + [[4.0, 2.0]])
    points = torch.tensor([[0.0, 0.5], [4.0, 1.0]])
    assert assign(x, points).tolist() == [0, 0, 1, 1, 1]
    assert voronoi_weights(x, points).tolist() == pytest.approx([0.4, 0.6])


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("call, match", [
    (lambda x: kmeans(x, 0), r"k=0 should be an integer >= 1"),
    (lambda x: kmeans(x, 5), r"k=5 should be <= n_samples=4"),
    (lambda x: kmeans(x, 2.5), r"k=2.5 should be an integer"),
    (lambda x: kmeans(x[0], 1), r"must be 2-D .* got shape \(2,\)"),
    (lambda x: kmeans(x.long(), 2), r"dtype torch.int64"),
    (lambda x: kmeans(x, 2, init=torch.zeros(3, 2)), r"init has shape \(3, 2\) but \(k, d\) = \(2, 2\)"),
    (lambda x: kmeans(x, 2, init="kmeans"), r"init='kmeans'"),
    (lambda x: kmeans(x, 2, tol=-1.0), r"tol=-1.0"),
    (lambda x: kmeans(x, 2, iters=-1), r"iters=-1 should be an integer >= 0"),
    (lambda x: assign(x, torch.zeros(2, 3)), r"dimension mismatch: x has shape \(4, 2\) but points has shape \(2, 3\)"),
    (lambda x: clvq(x, 5), r"k=5 should be <= n_samples=4"),
    (lambda x: clvq(x, 3, batch_size=2), r"batch_size=2 should be >= k=3"),
    (lambda x: clvq(x, 2, step_size=1.5), r"step_size=1.5"),
    (lambda x: clvq(x, 2, step_size="1/n"), r"step_size='1/n'"),
    (lambda x: clvq(x, 2, steps=0), r"steps=0 should be an integer >= 1"),
    (lambda x: clvq([x[:1]], 2), r"k=2 should be <= n_samples=1"),
    (lambda x: clvq([x, torch.zeros(3, 5)], 2, steps=5), r"dimension mismatch: batch 1 has shape \(3, 5\)"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.tensor(FOUR))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_data_raises(bad):
    x = torch.tensor(FOUR)
    x[2, 1] = bad
    with pytest.raises(ValueError, match=r"x contains 1 NaN/inf values \(first in row 2\)"):
        kmeans(x, 2)
    with pytest.raises(ValueError, match=r"batch 1 contains 1 NaN/inf values \(first in row 2\)"):
        clvq([torch.tensor(FOUR), x], 2, steps=3)
    with pytest.raises(ValueError, match=r"data contains 1 NaN/inf"):
        clvq(x, 2)


# ------------------------------------------------------------------------------ CLVQ


def test_clvq_one_point_is_the_running_mean(blobs):
    # with γ = 1/count, a single point is the running mean of every row it has seen
    q = clvq(blobs, 1, batch_size=256)  # one pass
    assert q.points[0].double() == pytest.approx(blobs.double().mean(0), abs=1e-5)
    assert q.iterations == math.ceil(2000 / 256) and len(q.history) == 1


def test_clvq_tensor_close_to_lloyd(blobs):
    lloyd = kmeans(blobs, 5, seed=0)
    q = clvq(blobs, 5, steps=80, batch_size=200, seed=0)
    assert q.weight_source == "exact-pass" and q.labels.shape == (2000,)
    assert q.distortion == pytest.approx(lloyd.distortion, rel=0.05)
    assert float(q.weights.sum()) == pytest.approx(1.0)
    assert len(q.history) == 8  # 80 steps of 200 rows = 8 passes over 2000 rows
    assert torch.equal(q.labels, assign(blobs, q.points))
    again = clvq(blobs, 5, steps=80, batch_size=200, seed=0)
    assert torch.equal(q.points, again.points)


def test_clvq_streams(blobs):
    batches = [blobs[i : i + 300] for i in range(0, 2000, 300)]
    listed = clvq(batches, 5, steps=35, batch_size=100)
    assert listed.weight_source == "exact-pass" and listed.labels is None
    assert listed.iterations == 35 and len(listed.history) == 2  # 20 pieces per pass
    # the weights of an exact pass are the Voronoi masses of all the data
    assert listed.weights == pytest.approx(voronoi_weights(blobs, listed.points), abs=1e-6)
    exact = torch.cdist(blobs.double(), listed.points.double()).pow(2).min(1).values.mean()
    assert listed.distortion == pytest.approx(float(exact), rel=1e-5)

    once = clvq((b for b in batches), 5, steps=1000, batch_size=100)
    assert once.weight_source == "win-counts" and once.labels is None
    assert once.iterations == 20  # stopped at the end of the generator
    assert float(once.weights.sum()) == pytest.approx(1.0)
    assert once.distortion == once.history[-1]


def test_clvq_step_size_rules(blobs):
    const = clvq(blobs, 4, steps=40, batch_size=100, step_size=0.1)
    sched = clvq(blobs, 4, steps=40, batch_size=100, step_size=lambda t: 1 / (t + 1))
    default = clvq(blobs, 4, steps=40, batch_size=100)
    for q in (const, sched, default):
        assert q.distortion < float(blobs.var(0).sum())  # better than one point at the mean
    assert not torch.equal(const.points, default.points)
    with pytest.raises(ValueError, match=r"step_size\(1\) = 2.0 should be in \(0, 1\]"):
        clvq(blobs, 4, steps=3, batch_size=100, step_size=lambda t: 2.0)


def test_clvq_memmap_array(tmp_path, blobs):
    arr = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                    shape=tuple(blobs.shape))
    arr[:] = blobs.numpy()
    arr.flush()
    ro = np.load(tmp_path / "x.npy", mmap_mode="r")
    q = clvq(ro, 5, steps=20, batch_size=500)
    assert q.weight_source == "exact-pass" and q.labels.shape == (2000,)
    assert q.weights == pytest.approx(voronoi_weights(blobs, q.points), abs=1e-6)


def test_clvq_stream_memory_is_bounded(tmp_path):
    """Streaming ~100 MB of batches must not hold them: peak RSS grows far less than that."""
    script = textwrap.dedent("""
        import resource, torch
        from pqlib.quantize import clvq
        torch.set_num_threads(1)
        def peak_mb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        g = torch.Generator().manual_seed(0)
        clvq([torch.randn(4000, 64, generator=g)], 16, steps=2)  # warm up allocator and kernels
        before = peak_mb()
        def stream():
            for _ in range(100):  # 100 x 4000 x 64 float32 = 102 MB in all
                yield torch.randn(4000, 64, generator=g)
        q = clvq(stream(), 16, batch_size=1000)
        assert q.iterations == 400
        print(peak_mb() - before)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    growth_mb = float(out.stdout.strip().splitlines()[-1])
    assert growth_mb < 40, f"peak RSS grew by {growth_mb:.0f} MB while streaming 102 MB"
