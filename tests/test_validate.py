"""The argument checks every public function uses."""

import math
import re

import numpy as np
import pytest

from keras_vib import _validate


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1.0, "1", None])
def test_integer_refuses_what_is_not_an_integer(value):
    with pytest.raises(
        ValueError,
        match=rf"Expected `n` to be a positive integer\. Received: n={value!r}$",
    ):
        _validate.integer("n", value, minimum=1)


def test_integer_bounds_and_none():
    assert _validate.integer("n", np.int64(3), minimum=0) == 3
    assert type(_validate.integer("n", np.int64(3))) is int
    assert _validate.integer("n", None, optional=True) is None
    with pytest.raises(ValueError, match="an integer >= 0 or None. Received: n=-1"):
        _validate.integer("n", -1, minimum=0, optional=True)


@pytest.mark.parametrize("value", [True, math.nan, math.inf, "0.5", None, [0.5]])
def test_number_refuses_what_is_not_a_finite_number(value):
    with pytest.raises(ValueError, match=r"Received: x="):
        _validate.number("x", value)


@pytest.mark.parametrize(
    "kwargs, ok, bad, words",
    [
        ({"low": 0}, 0, -0.1, ">= 0"),
        ({"low": 0, "low_open": True}, 1e-9, 0, "> 0"),
        ({"low": 0, "high": 1, "low_open": True}, 1, 0, "in (0, 1]"),
        ({"low": 0, "high": 1}, 0, 1.5, "in [0, 1]"),
        ({"high": 1, "high_open": True}, 0.5, 1, "< 1"),
    ],
)
def test_number_intervals(kwargs, ok, bad, words):
    assert _validate.number("x", ok, **kwargs) == ok
    with pytest.raises(ValueError, match=re.escape(f"a finite number {words}. ")):
        _validate.number("x", bad, **kwargs)


def test_boolean():
    assert _validate.boolean("flag", np.bool_(False)) is False
    assert _validate.boolean("flag", None, optional=True) is None


@pytest.mark.parametrize("value", [0, 1, "yes", None])
def test_boolean_refuses_what_is_not_a_bool(value):
    with pytest.raises(ValueError, match=f"to be a bool. Received: flag={value!r}"):
        _validate.boolean("flag", value)


@pytest.mark.tensorflow
@pytest.mark.parametrize(
    "kwargs, match",
    [({"runs": True}, "runs=True"), ({"warmup": False}, "warmup=False"),
     ({"num_threads": 0}, "num_threads=0")],
)  # fmt: skip
def test_export_counts_refuse_bools(kwargs, match):
    """`True` is an int to Python, never a count to keras_vib."""
    import keras_vib as kv

    with pytest.raises(ValueError, match=match):
        kv.export.benchmark_tflite(b"", **kwargs)
