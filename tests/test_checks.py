"""pqlib.checks: declared constraints, the error types and their messages."""

import numpy as np
import pytest
import torch

from pqlib.checks import (
    CorruptFile,
    Int,
    InvalidData,
    InvalidParameter,
    OneOf,
    Real,
    Tensor,
    check_matrix,
    checked,
)


@checked(k=Int(1), seed=Int(0), init=OneOf("k-means++", "random") | Tensor,
         lr=Real(0, 1, open_low=True))
def f(x, k, *, seed=0, init="random", lr=0.5):
    return k


def test_valid_calls_pass_through():
    assert f(None, 3, seed=np.int64(2), init=torch.zeros(2, 2), lr=1) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "f: k=0 should be an integer >= 1"),
    ({"k": True}, "k=True should be an integer >= 1"),
    ({"k": 2.0}, "k=2.0 should be an integer >= 1"),
    ({"k": 2, "seed": -1}, "seed=-1 should be an integer >= 0"),
    ({"k": 2, "init": "pp"}, "init='pp' should be one of 'k-means++', 'random' or a torch.Tensor"),
    ({"k": 2, "lr": 0}, "lr=0 should be a number in (0, 1]"),
    ({"k": 2, "lr": float("nan")}, "lr=nan should be a number in (0, 1]"),
])
def test_violations_name_value_and_constraint(kwargs, message):
    with pytest.raises(InvalidParameter) as e:
        f(None, **kwargs)
    assert message in str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, TypeError)


def test_constraint_on_unknown_parameter_is_a_programming_error():
    with pytest.raises(TypeError, match="not parameters"):
        checked(nope=Int())(lambda x: x)


def test_check_matrix():
    x = torch.ones(4, 3)
    assert check_matrix(np.ones((4, 3), np.float32)).shape == (4, 3)
    x[2, 1] = float("nan")
    with pytest.raises(InvalidData, match=r"1 NaN/inf values \(first in row 2\)"):
        check_matrix(x)
    with pytest.raises(InvalidData, match="2-D"):
        check_matrix(torch.ones(3))
    with pytest.raises(InvalidData, match="dtype torch.int64"):
        check_matrix(torch.ones(3, 2, dtype=torch.int64))
    with pytest.raises(InvalidData, match="empty"):
        check_matrix(torch.ones(0, 2))
    big = torch.full((4, 2), 3e38)  # the sum overflows but every value is finite
    assert check_matrix(big) is big


def test_corrupt_file_names_the_file_and_the_fix(tmp_path):
    e = CorruptFile(tmp_path / "a.png", "image", "remove or replace the file")
    assert str(e) == f"{tmp_path / 'a.png'} is not a readable image; remove or replace the file"
    assert isinstance(e, ValueError)


def test_messages_stay_short_and_read_well():
    @checked(n=OneOf(None) | Int(1), kind=str, data=(list, tuple))
    def g(n=None, kind="a", data=()):
        return n

    with pytest.raises(InvalidParameter, match=r"n=0 should be None or an integer >= 1"):
        g(n=0)
    with pytest.raises(InvalidParameter, match=r"kind=3 should be a str$"):
        g(kind=3)
    with pytest.raises(InvalidParameter, match=r"data=<Tensor of shape \(500, 3\)> should be a "
                                               r"list or a tuple$"):
        g(data=torch.zeros(500, 3))


def test_callable_accepts_every_kind_of_callable():
    from pqlib.checks import Callable

    @checked(fn=Callable)
    def h(fn):
        return fn

    class Rate:
        def __call__(self, t):
            return 1 / (t + 1)

        def half(self, t):
            return 0.5

    for fn in (len, lambda t: 0.5, Rate(), Rate().half):
        assert h(fn) is fn
    with pytest.raises(InvalidParameter, match="fn=3 should be a callable"):
        h(3)
